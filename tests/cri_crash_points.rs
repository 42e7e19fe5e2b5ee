//! kill -9 of `capcri serve` in the middle of RunPodSandbox,
//! CreateContainer, RemoveContainer and RemovePodSandbox, at every named
//! crash point (`capcri::crash_point`): after the restart every call that
//! returned OK is reflected in the listings, every call that was in flight
//! either completed or left nothing behind, and everything left can be
//! stopped and removed to zero leftovers.

mod common;

use capcri::crash_point::{CRASH_AT_ENV, CRASH_POINTS};
use common::{TestDaemon, container_config, pod_config, pull};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

/// What the CRI acknowledged to one client before the daemon died.
#[derive(Debug, Default)]
struct Acked {
    pod: Option<String>,
    /// Created and not (acknowledged as) removed: (id, started).
    containers: Vec<(String, bool)>,
    removed_containers: Vec<String>,
    /// A RemoveContainer or RemovePodSandbox was sent and got no answer.
    removal_in_flight: bool,
    pod_removed: bool,
}

/// One client's lifecycle on its own connection `rt`: a pod, a running
/// container, a second container created and removed, and (for
/// `remove_pod`) the pod removed. Stops at the first error: the daemon is
/// gone. Every call goes over `rt`, made before any client began: a
/// connection opened after another client's call crashed the daemon would
/// be refused.
async fn lifecycle(
    d: &TestDaemon,
    mut rt: RuntimeServiceClient<Channel>,
    name: String,
    image: String,
    remove_pod: bool,
) -> Acked {
    let mut acked = Acked::default();
    let Ok(pod) = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(&name, &d.dir.path().join("logs"))),
            runtime_handler: String::new(),
        })
        .await
    else {
        return acked;
    };
    let pod = pod.into_inner().pod_sandbox_id;
    acked.pod = Some(pod.clone());
    for (i, cname) in ["keep", "gone"].into_iter().enumerate() {
        let config = container_config(cname, &image, &["sleep", "1000"]);
        let Ok(id) = common::create_on(&mut rt, &pod, config).await else {
            return acked;
        };
        acked.containers.push((id.clone(), false));
        if i == 0 {
            if rt
                .start_container(cri::StartContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .is_err()
            {
                return acked;
            }
            acked.containers[0].1 = true;
            continue;
        }
        acked.removal_in_flight = true;
        if rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .is_err()
        {
            return acked;
        }
        acked.removal_in_flight = false;
        acked.containers.pop();
        acked.removed_containers.push(id);
    }
    if remove_pod {
        acked.removal_in_flight = true;
        let stopped = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await;
        if stopped.is_err()
            || rt
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
                .is_err()
        {
            return acked;
        }
        acked.removal_in_flight = false;
        acked.pod_removed = true;
        acked.containers.clear();
    }
    acked
}

/// Three clients' lifecycles at once, named `{prefix}-p0` to `-p2`: the
/// first removes its pod, the other two keep theirs. Their connections are
/// made here, before any of them starts (see `lifecycle`).
async fn three_clients<'a>(
    d: &'a TestDaemon,
    prefix: &str,
    image: &str,
) -> impl std::future::Future<Output = Vec<Acked>> + 'a {
    let mut clients = Vec::new();
    for i in 0..3 {
        let rt = d.runtime().await;
        clients.push(lifecycle(
            d,
            rt,
            format!("{prefix}-p{i}"),
            image.to_string(),
            i == 0,
        ));
    }
    futures_util::future::join_all(clients)
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Everything capcri made on disk and in the kernel belongs to a listed
/// pod or container.
fn assert_nothing_unlisted(
    d: &TestDaemon,
    point: &str,
    pods: &BTreeSet<String>,
    containers: &BTreeSet<String>,
) {
    let run = d.state_dir();
    let lib = d.data_dir();
    // A pod whose removal was cut short may be listed without its dir.
    let pod_dirs = names_in(&run.join("pods"));
    assert!(
        pod_dirs.is_subset(pods),
        "{point}: unlisted pod dirs {pod_dirs:?}"
    );
    for pod in pods {
        let held = names_in(&run.join("pods").join(pod).join("containers"));
        assert!(
            held.is_subset(containers),
            "{point}: monitor of {pod} holds unlisted containers {held:?}"
        );
    }
    for dir in [
        run.join("containers"),
        run.join("runtime"),
        lib.join("containers"),
    ] {
        let found = names_in(&dir);
        assert!(
            found.is_subset(containers),
            "{point}: {} has unlisted entries {:?}",
            dir.display(),
            found.difference(containers).collect::<Vec<_>>()
        );
    }
    let records = names_in(&lib.join("meta/pods"));
    assert_eq!(
        records.len(),
        pods.len(),
        "{point}: pod records {records:?}"
    );
    // The namespaces a daemon makes ahead of pods: a previous daemon's are
    // destroyed at start, so they never pile up across crashes (ready ones
    // plus at most one per concurrent client being unmounted).
    let pool = common::netns_pool_mounts(d.dir.path());
    assert!(pool.len() <= 2 + 3, "{point}: netns pool {pool:?}");
    for m in common::mounts_under(d.dir.path()) {
        assert!(
            pods.iter().any(|p| m.contains(p.as_str()))
                || containers.iter().any(|c| m.contains(c.as_str())),
            "{point}: mount {m} belongs to nothing listed"
        );
    }
    for pid in common::processes_mentioning(&run.join("pods")) {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).into_owned();
        assert!(
            pods.iter().any(|p| cmd.contains(p.as_str())),
            "{point}: monitor process {pid} ({cmd:?}) of no listed pod"
        );
    }
    for cg in common::cgroups_left(&d.cgroup_parent) {
        let name = cg.file_name().unwrap().to_string_lossy().into_owned();
        let parent = cg
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A pod's cgroup holds its containers' and its pod init's leaf.
        let of_listed_pod = pods.contains(&parent)
            && (containers.contains(&name) || name == capcri::pod::cgroups::POD_INIT_CGROUP);
        assert!(
            pods.contains(&name) || of_listed_pod,
            "{point}: cgroup {} of nothing listed",
            cg.display()
        );
    }
}

fn assert_zero_leftovers(d: &TestDaemon, point: &str) {
    assert_nothing_unlisted(d, point, &BTreeSet::new(), &BTreeSet::new());
    assert!(names_in(&d.state_dir().join("pods")).is_empty());
    assert!(
        common::mounts_under(d.dir.path()).is_empty(),
        "{point}: {:?}",
        common::mounts_under(d.dir.path())
    );
    assert!(
        common::cgroups_left(&d.cgroup_parent).is_empty(),
        "{point}: {:?}",
        common::cgroups_left(&d.cgroup_parent)
    );
    assert!(names_in(&d.data_dir().join("meta/containers")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_every_crash_point_leaves_listed_objects_or_nothing() {
    let registry = require_privileged!();
    let mut d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    d.kill9();
    let mut reached = 0;
    for (round, point) in CRASH_POINTS.iter().enumerate() {
        d.spawn_env(&[], &[(CRASH_AT_ENV, point)]);
        let acked = three_clients(&d, &format!("r{round}"), &busybox)
            .await
            .await;
        let crashed = d.wait_for_exit(Duration::from_secs(30));
        assert!(
            crashed,
            "{point}: the crash point was never reached: {acked:?}"
        );
        reached += 1;

        restart_verify_and_clean(&mut d, point, &acked).await;
        d.kill9();
    }
    eprintln!("crash points exercised: {reached}; leftovers after cleanup: 0");
}

/// Restarts the daemon after a crash at `point`, checks the listings
/// against what was acknowledged and that nothing unlisted is left, then
/// removes everything and checks for zero leftovers.
async fn restart_verify_and_clean(d: &mut TestDaemon, point: &str, acked: &[Acked]) {
    d.spawn(&[]);
    let mut rt = d.runtime().await;
    let pods: BTreeSet<String> = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    let listed = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    let containers: BTreeSet<String> = listed.iter().map(|c| c.id.clone()).collect();
    for a in acked {
        if let Some(pod) = &a.pod {
            if a.pod_removed {
                assert!(!pods.contains(pod), "{point}: removed pod {pod} is listed");
            } else if !a.removal_in_flight {
                assert!(
                    pods.contains(pod),
                    "{point}: acknowledged pod {pod} is missing"
                );
            }
        }
        for id in &a.removed_containers {
            assert!(
                !containers.contains(id),
                "{point}: removed container {id} is listed"
            );
        }
        if a.removal_in_flight {
            continue;
        }
        for (id, started) in &a.containers {
            let c = listed.iter().find(|c| &c.id == id);
            let c = c.unwrap_or_else(|| panic!("{point}: acknowledged container {id} is missing"));
            let running = cri::ContainerState::ContainerRunning as i32;
            let created = cri::ContainerState::ContainerCreated as i32;
            // A start sent but unanswered may have happened or not.
            let ok = c.state == running || (!*started && c.state == created);
            assert!(
                ok,
                "{point}: {id} (started: {started}) is in state {}",
                c.state
            );
        }
    }
    assert_nothing_unlisted(d, point, &pods, &containers);
    eprintln!(
        "{point}: after restart {} pods, {} containers listed; acked {acked:?}",
        pods.len(),
        containers.len()
    );

    // What is left stops and removes cleanly.
    for pod in &pods {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{point}: stop {pod}: {e}"));
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{point}: remove {pod}: {e}"));
    }
    assert_zero_leftovers(d, point);
}

/// kill -9 from outside at varied moments of the same churn: the windows
/// between the named points are covered too (no timing is asserted, the
/// delays only spread the kills over the lifecycle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_from_outside_at_varied_moments() {
    let registry = require_privileged!();
    let mut d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let delays_ms = [5u64, 40, 90, 150, 260, 400];
    for (round, delay) in delays_ms.iter().enumerate() {
        let point = format!("external kill after {delay} ms");
        let pid = d.pid().expect("daemon running") as i32;
        let clients = three_clients(&d, &format!("j{round}"), &busybox).await;
        let killer = async move {
            tokio::time::sleep(Duration::from_millis(*delay)).await;
            // SAFETY: kill(2) of the test's own daemon child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        };
        let (acked, ()) = tokio::join!(clients, killer);
        d.wait_for_exit(Duration::from_secs(30));
        restart_verify_and_clean(&mut d, &point, &acked).await;
    }
    eprintln!(
        "external kills: {}; leftovers after cleanup: 0",
        delays_ms.len()
    );
}

/// kill -9 after the monitor started a container and before the daemon
/// wrote it down: the record still says created, the monitor knows it
/// runs. After the restart the container is listed running, and the start
/// kubelet retries is refused as for any running container
/// (FailedPrecondition) instead of starting it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_retried_after_a_crash_past_the_monitor_is_refused_as_running() {
    let point = "container.start.after-monitor";
    let registry = require_privileged!();
    let mut d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    d.kill9();
    d.spawn_env(&[], &[(CRASH_AT_ENV, point)]);
    let pod = common::run_pod(&d, "retried").await;
    let id = common::create(
        &d,
        &pod,
        container_config("c", &busybox, &["sleep", "1000"]),
    )
    .await
    .expect("create");
    let req = || cri::StartContainerRequest {
        container_id: id.clone(),
    };
    let lost = d.runtime().await.start_container(req()).await;
    assert!(lost.is_err(), "{point}: the daemon answered: {lost:?}");
    assert!(
        d.wait_for_exit(Duration::from_secs(30)),
        "{point}: not reached"
    );

    d.spawn(&[]);
    let status = common::container_state(&d, &id).await;
    assert_eq!(
        status.state,
        cri::ContainerState::ContainerRunning as i32,
        "{point}: {status:?}"
    );
    let err = d
        .runtime()
        .await
        .start_container(req())
        .await
        .expect_err("the retried start");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("running"), "{err}");
    let after = common::container_state(&d, &id).await;
    assert_eq!(after.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(after.started_at, status.started_at, "not started twice");

    common::stop_and_remove_pod(&d, &pod).await;
    assert_zero_leftovers(&d, point);
}
