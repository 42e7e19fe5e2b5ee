//! The walking skeleton through the CRI socket, with real containers:
//! pull, pod, container, logs, exec, stop, remove, and nothing left behind.

mod common;

use common::{
    TestDaemon, cgroups_left, container_config, container_state, mounts_under, pod_config,
    processes_mentioning, pull, wait_for,
};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_through_the_cri_socket() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&["--registry-mirror", &format!("registry.k8s.io={registry}")]);
    let mut rt = d.runtime().await;
    let mut img = d.images().await;

    let v = rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "capcri");
    assert_eq!(v.runtime_api_version, "v1");
    let status = rt
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.r#type == "RuntimeReady" && c.status)
    );
    assert!(
        conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && !c.status && !c.message.is_empty())
    );
    let rc = rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );

    // Pull through the mirror: the name asked for is the name kept.
    let busybox = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
    let image_id = pull(&d, busybox).await;
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let listed = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let listed = listed
        .iter()
        .find(|i| i.id == image_id)
        .expect("pulled image listed");
    assert_eq!(listed.repo_tags, vec![busybox.to_string()]);
    assert!(listed.repo_digests[0].starts_with("registry.k8s.io/e2e-test-images/busybox@sha256:"));
    assert!(listed.size > 0);
    let by_id = img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image_id.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.image.unwrap().id, image_id);
    let fs = img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);

    // A pod and a container writing to stdout and stderr.
    let log_dir = d.dir.path().join("logs");
    let pod_id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("web", &log_dir)),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    let pod = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(pod.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(pod.annotations["note"], "kept exactly");
    assert_eq!(pod.labels["app"], "web");

    let script = "trap 'echo bye; printf last-words; exit 3' TERM; echo hello; echo oops >&2; hostname; \
                  grep nameserver /etc/resolv.conf; while true; do sleep 0.1; done";
    let ctr_id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config("main", busybox, &["sh", "-c", script])),
            sandbox_config: Some(pod_config("web", &log_dir)),
        })
        .await
        .expect("create container")
        .into_inner()
        .container_id;
    assert_eq!(
        container_state(&d, &ctr_id).await.state,
        cri::ContainerState::ContainerCreated as i32
    );
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr_id.clone(),
    })
    .await
    .expect("start");

    let log_file = log_dir.join("main/0.log");
    let log = wait_for("container log lines", Duration::from_secs(10), || {
        let log_file = log_file.clone();
        async move {
            let s = std::fs::read_to_string(&log_file).ok()?;
            s.contains("nameserver 10.96.0.10").then_some(s)
        }
    })
    .await;
    let lines: Vec<&str> = log.lines().collect();
    let stream_and_text: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                "timestamp of {l:?}"
            );
            let stream = parts.next().unwrap().to_string();
            assert_eq!(parts.next(), Some("F"), "{l:?}");
            (stream, parts.next().unwrap_or("").to_string())
        })
        .collect();
    assert!(
        stream_and_text.contains(&("stdout".into(), "hello".into())),
        "{log}"
    );
    assert!(
        stream_and_text.contains(&("stderr".into(), "oops".into())),
        "{log}"
    );
    assert!(
        stream_and_text.contains(&("stdout".into(), "web-host".into())),
        "{log}"
    );

    let running = container_state(&d, &ctr_id).await;
    assert_eq!(running.state, cri::ContainerState::ContainerRunning as i32);
    assert!(running.started_at > 0);
    assert_eq!(running.image_id, image_id);

    // ExecSync, and its timeout.
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr_id.clone(),
            cmd: vec!["id".into(), "-u".into()],
            timeout: 10,
        })
        .await
        .expect("exec sync")
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert_eq!(out.exit_code, 0);
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr_id.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo err >&2; exit 7".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "err");
    let timed_out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr_id.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .expect_err("exec past its timeout fails");
    assert_eq!(
        timed_out.code(),
        tonic::Code::DeadlineExceeded,
        "{timed_out}"
    );

    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].state,
        cri::ContainerState::ContainerRunning as i32
    );

    // Stop: SIGTERM, which the script traps and turns into exit 3.
    rt.stop_container(cri::StopContainerRequest {
        container_id: ctr_id.clone(),
        timeout: 10,
    })
    .await
    .expect("stop");
    let exited = container_state(&d, &ctr_id).await;
    assert_eq!(exited.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(exited.exit_code, 3);
    assert_eq!(exited.reason, "Error");
    assert!(exited.finished_at >= exited.started_at);
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains(" stdout F bye\n"), "{log}");
    // The last line ends without a newline: a partial record, as
    // containerd writes it, which kubelet reads back without one (Node
    // Conformance: termination message FallbackToLogsOnError).
    assert!(log.ends_with(" stdout P last-words\n"), "{log}");

    rt.remove_container(cri::RemoveContainerRequest {
        container_id: ctr_id.clone(),
    })
    .await
    .expect("remove");
    let gone = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: ctr_id.clone(),
            verbose: false,
        })
        .await
        .expect_err("removed container is gone");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stopp");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("rmp");

    // Idempotence (critest): stopping and removing unknown objects succeeds.
    rt.stop_container(cri::StopContainerRequest {
        container_id: ctr_id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: ctr_id.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();

    img.remove_image(cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: busybox.into(),
            ..Default::default()
        }),
    })
    .await
    .expect("rmi");
    assert!(
        img.list_images(cri::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images
            .is_empty()
    );

    // Nothing left: mounts, monitor processes, cgroups.
    assert_eq!(mounts_under(d.dir.path()), Vec::<String>::new());
    assert_eq!(
        processes_mentioning(&d.state_dir().join("pods")),
        Vec::<i32>::new()
    );
    assert_eq!(
        cgroups_left(&d.cgroup_parent),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_capabilities_survive_pull_and_unpack() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let mut rt = d.runtime().await;
    let image = format!("{registry}/cri-lab/filecaps:latest");
    pull(&d, &image).await;
    let log_dir = d.dir.path().join("logs");
    let pod_id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("caps", &log_dir)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let ctr_id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config("pinger", &image, &["sleep", "1000"])),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr_id.clone(),
    })
    .await
    .unwrap();
    let status = container_state(&d, &ctr_id).await;
    assert_eq!(
        status.user.unwrap().linux.unwrap().uid,
        1000,
        "the image's USER 1000 is used"
    );

    let getcap = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr_id.clone(),
            cmd: vec!["getcap".into(), "/usr/local/bin/ping".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&getcap.stdout).trim(),
        "/usr/local/bin/ping cap_net_raw=ep"
    );
    let ping = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr_id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "id -u; ping -c 1 127.0.0.1".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let stdout = String::from_utf8_lossy(&ping.stdout);
    assert_eq!(
        ping.exit_code,
        0,
        "ping as uid 1000 with its file capability: {stdout} {}",
        String::from_utf8_lossy(&ping.stderr)
    );
    assert!(stdout.starts_with("1000\n"), "{stdout}");

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    assert_eq!(mounts_under(d.dir.path()), Vec::<String>::new());
    assert_eq!(
        cgroups_left(&d.cgroup_parent),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let mut rt = d.runtime().await;
    let mut img = d.images().await;

    let err = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: String::new(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let err = img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: format!("{registry}/no/such-image:1"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("no/such-image"), "{err}");

    let log_dir = d.dir.path().join("logs");
    let pod_id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("bad", &log_dir)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let dup = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("bad", &log_dir)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists, "{dup}");

    let missing = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config("x", "never-pulled:1", &["true"])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("pull"), "{missing}");

    let mut escaping = container_config("esc", "never-pulled:1", &["true"]);
    escaping.log_path = "../../etc/evil.log".into();
    pull(&d, &format!("{registry}/cri-lab/busybox:latest")).await;
    escaping.image.as_mut().unwrap().image = format!("{registry}/cri-lab/busybox:latest");
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(escaping),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    let listed = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(
        listed.is_empty(),
        "failed creates leave no container: {listed:?}"
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    assert_eq!(mounts_under(d.dir.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_socket_refuses() {
    let _registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capcri"))
        .args(["serve", "--socket"])
        .arg(&d.socket)
        .arg("--state-dir")
        .arg(d.dir.path().join("run2"))
        .arg("--data-dir")
        .arg(d.dir.path().join("lib2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another capcri serve"), "{stderr}");
    // The first one still answers.
    d.runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .expect("first daemon still serves");
}

/// StartContainer on a container that is not in the created state changes
/// nothing and says why (FailedPrecondition, naming the state): once
/// running, once exited, and concurrently with another start of the same
/// container, where exactly one start wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_starts_once_and_later_starts_say_why_not() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = common::run_pod(&d, "once").await;
    let start = |id: String| {
        let d = &d;
        async move {
            d.runtime()
                .await
                .start_container(cri::StartContainerRequest { container_id: id })
                .await
        }
    };

    // Two starts at once: one runs it, the other is refused.
    let long = common::create(
        &d,
        &pod,
        container_config("long", &busybox, &["sleep", "1000"]),
    )
    .await
    .expect("create long");
    let (a, b) = tokio::join!(start(long.clone()), start(long.clone()));
    let refused: Vec<tonic::Status> = [a, b].into_iter().filter_map(Result::err).collect();
    assert_eq!(
        refused.len(),
        1,
        "exactly one start is refused: {refused:?}"
    );
    assert_eq!(
        refused[0].code(),
        tonic::Code::FailedPrecondition,
        "{}",
        refused[0]
    );
    let running = container_state(&d, &long).await;
    assert_eq!(running.state, cri::ContainerState::ContainerRunning as i32);

    // Running: refused, and the running container is untouched.
    let err = start(long.clone())
        .await
        .expect_err("start of a running container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("running"), "{err}");
    assert!(
        err.message().contains("created"),
        "says what start needs: {err}"
    );
    let again = container_state(&d, &long).await;
    assert_eq!(again.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(again.started_at, running.started_at, "not started twice");

    // Exited: refused; the exit stays as it was.
    let short = common::create(&d, &pod, container_config("short", &busybox, &["true"]))
        .await
        .expect("create short");
    start(short.clone()).await.expect("start short");
    let exited = common::wait_exited(&d, &short).await;
    let err = start(short.clone())
        .await
        .expect_err("start of an exited container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("exited"), "{err}");
    let after = container_state(&d, &short).await;
    assert_eq!(after.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(
        (after.started_at, after.finished_at, after.exit_code),
        (exited.started_at, exited.finished_at, exited.exit_code)
    );

    common::stop_and_remove_pod(&d, &pod).await;
    assert_eq!(mounts_under(d.dir.path()), Vec::<String>::new());
}

/// kubelet's relist (ListContainers with an empty filter, every second)
/// is answered from a kept answer while nothing changed: every change
/// shows in the next relist, whichever way the list is asked for (no
/// filter, an empty one, a state filter), and a relist with nothing
/// changed answers the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_shows_in_the_next_relist() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = common::run_pod(&d, "relist").await;
    let relist = |filter: Option<cri::ContainerFilter>| {
        let d = &d;
        async move {
            let mut items: Vec<(String, i32)> = d
                .runtime()
                .await
                .list_containers(cri::ListContainersRequest { filter })
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| (c.metadata.unwrap().name, c.state))
                .collect();
            items.sort();
            items
        }
    };
    let all = || Some(cri::ContainerFilter::default());
    let running = || {
        Some(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        })
    };
    let (created, run, exited) = (
        cri::ContainerState::ContainerCreated as i32,
        cri::ContainerState::ContainerRunning as i32,
        cri::ContainerState::ContainerExited as i32,
    );
    assert_eq!(relist(all()).await, vec![]);

    let a = common::create(
        &d,
        &pod,
        container_config("a", &busybox, &["sleep", "3600"]),
    )
    .await
    .expect("create a");
    assert_eq!(relist(all()).await, vec![("a".into(), created)]);
    common::start(&d, &a).await;
    // Twice with nothing in between: the second is the kept answer.
    for _ in 0..2 {
        assert_eq!(relist(all()).await, vec![("a".into(), run)]);
        assert_eq!(relist(None).await, vec![("a".into(), run)]);
    }
    let b = common::create(
        &d,
        &pod,
        container_config("b", &busybox, &["sh", "-c", "sleep 1; exit 3"]),
    )
    .await
    .expect("create b");
    assert_eq!(
        relist(all()).await,
        vec![("a".into(), run), ("b".into(), created)]
    );
    assert_eq!(relist(running()).await, vec![("a".into(), run)]);
    common::start(&d, &b).await;
    assert_eq!(
        relist(all()).await,
        vec![("a".into(), run), ("b".into(), run)]
    );
    // b exits by itself: its pod monitor pushes the exit, and the next
    // relist after it shows it, with no status call in between.
    wait_for(
        "b's exit in the relist",
        Duration::from_secs(10),
        || async {
            (relist(all()).await == vec![("a".into(), run), ("b".into(), exited)]).then_some(())
        },
    )
    .await;
    assert_eq!(relist(running()).await, vec![("a".into(), run)]);
    d.runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: a.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        relist(all()).await,
        vec![("a".into(), exited), ("b".into(), exited)]
    );
    d.runtime()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: b.clone(),
        })
        .await
        .unwrap();
    assert_eq!(relist(all()).await, vec![("a".into(), exited)]);
    assert_eq!(relist(None).await, vec![("a".into(), exited)]);
    common::stop_and_remove_pod(&d, &pod).await;
    assert_eq!(relist(all()).await, vec![]);
}

/// kubelet's pod relist (ListPodSandbox, every second) is answered from a
/// kept answer while the pod table is unchanged: every pod change shows
/// in the next list, asked with no filter or an empty one, and the
/// filtered lists (state, id, labels), which are never kept, agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_change_shows_in_the_next_pod_list() {
    let _registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let list = |filter: Option<cri::PodSandboxFilter>| {
        let d = &d;
        async move {
            let mut items: Vec<(String, i32)> = d
                .runtime()
                .await
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
                .await
                .unwrap()
                .into_inner()
                .items
                .into_iter()
                .map(|p| (p.metadata.unwrap().name, p.state))
                .collect();
            items.sort();
            items
        }
    };
    let all = || Some(cri::PodSandboxFilter::default());
    let in_state = |state: cri::PodSandboxState| {
        Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: state as i32,
            }),
            ..Default::default()
        })
    };
    let labelled = |app: &str| {
        Some(cri::PodSandboxFilter {
            label_selector: HashMap::from([("app".into(), app.into())]),
            ..Default::default()
        })
    };
    let (ready, not_ready) = (
        cri::PodSandboxState::SandboxReady as i32,
        cri::PodSandboxState::SandboxNotready as i32,
    );
    assert_eq!(list(all()).await, vec![]);
    assert_eq!(list(None).await, vec![]);

    let a = common::run_pod(&d, "pod-a").await;
    // Twice with nothing in between: the second is the kept answer.
    for _ in 0..2 {
        assert_eq!(list(all()).await, vec![("pod-a".into(), ready)]);
        assert_eq!(list(None).await, vec![("pod-a".into(), ready)]);
    }
    let b = common::run_pod(&d, "pod-b").await;
    assert_eq!(
        list(all()).await,
        vec![("pod-a".into(), ready), ("pod-b".into(), ready)]
    );
    assert_eq!(list(labelled("pod-b")).await, vec![("pod-b".into(), ready)]);
    let by_id = Some(cri::PodSandboxFilter {
        id: a.clone(),
        ..Default::default()
    });
    assert_eq!(list(by_id).await, vec![("pod-a".into(), ready)]);

    d.runtime()
        .await
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        list(all()).await,
        vec![("pod-a".into(), not_ready), ("pod-b".into(), ready)]
    );
    assert_eq!(
        list(in_state(cri::PodSandboxState::SandboxReady)).await,
        vec![("pod-b".into(), ready)]
    );
    assert_eq!(
        list(in_state(cri::PodSandboxState::SandboxNotready)).await,
        vec![("pod-a".into(), not_ready)]
    );
    assert_eq!(
        list(None).await,
        vec![("pod-a".into(), not_ready), ("pod-b".into(), ready)]
    );
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .unwrap();
    assert_eq!(list(all()).await, vec![("pod-b".into(), ready)]);
    // A refused RunPodSandbox (a name taken) changes nothing in the list.
    let refused = d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(common::pod_config("pod-b", &d.dir.path().join("logs"))),
            runtime_handler: String::new(),
        })
        .await;
    assert!(refused.is_err(), "a second pod-b was accepted");
    assert_eq!(list(all()).await, vec![("pod-b".into(), ready)]);
    common::stop_and_remove_pod(&d, &b).await;
    assert_eq!(list(all()).await, vec![]);
    assert_eq!(list(None).await, vec![]);
}
