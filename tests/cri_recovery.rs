//! Containers outlive the daemon: kill -9 of `capcri serve`, restart, and
//! every pod and container is still there, with the same PIDs, the exit
//! code of one that exited while the daemon was down, and every log line.

mod common;

use common::{
    TestDaemon, container_config, container_state, create, pod_config, pull, run_pod,
    running_sleeper, start, stop_and_remove_pod, wait_for,
};
use k8s_cri::v1 as cri;
use std::time::{Duration, Instant};

fn pid_of(status: &cri::ContainerStatusResponse) -> i64 {
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    info["pid"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_daemon_crash() {
    let registry = require_privileged!();
    let mut d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let log_dir = d.dir.path().join("logs");
    let mut rt = d.runtime().await;
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("crash", &log_dir)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    // One that keeps running and logging, one that exits while the daemon is down.
    let ticker = [
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    ];
    let short = ["sh", "-c", "sleep 2; echo last words; exit 7"];
    let mut ids = Vec::new();
    for (name, cmd) in [("ticker", &ticker[..]), ("short", &short[..])] {
        let id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(name, &busybox, cmd)),
                sandbox_config: None,
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        ids.push(id);
    }
    let before = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: ids[0].clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let pid_before = pid_of(&before);
    assert!(
        pid_before > 0,
        "verbose status carries the pid: {:?}",
        before.info
    );

    d.kill9();
    let down_since = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticker_log = std::fs::read_to_string(log_dir.join("ticker/0.log")).unwrap();
    let lines_while_down = ticker_log.lines().count();
    d.spawn(&[]);
    let mut rt = d.runtime().await;

    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);
    // The first call after the restart is kubelet's relist: the running
    // container is listed running although its start was never written
    // to disk (its monitor answers for it).
    let listed = common::list_containers(&d).await;
    let ticker_listed = listed.iter().find(|c| c.id == ids[0]).expect("listed");
    assert_eq!(
        ticker_listed.state,
        cri::ContainerState::ContainerRunning as i32,
        "{listed:?}"
    );
    let after = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: ids[0].clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.status.as_ref().unwrap().state,
        cri::ContainerState::ContainerRunning as i32
    );
    assert_eq!(pid_of(&after), pid_before, "same process after the restart");
    assert_eq!(
        after.status.as_ref().unwrap().started_at,
        before.status.as_ref().unwrap().started_at,
        "the start time is the monitor's, kept across the restart"
    );
    let short = container_state(&d, &ids[1]).await;
    assert_eq!(short.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(short.exit_code, 7);
    let finished = std::time::UNIX_EPOCH + Duration::from_nanos(short.finished_at as u64);
    let down_at = std::time::SystemTime::now() - down_since.elapsed();
    assert!(
        finished > down_at,
        "it exited while the daemon was down, and the time says so"
    );
    let short_log = std::fs::read_to_string(log_dir.join("short/0.log")).unwrap();
    assert!(short_log.contains(" stdout F last words\n"), "{short_log}");
    // Lines written while the daemon was down are in the log, in order.
    let ticks: Vec<u64> = ticker_log
        .lines()
        .filter_map(|l| l.rsplit(' ').next().and_then(|n| n.parse().ok()))
        .collect();
    assert!(lines_while_down >= 10, "{ticker_log}");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost: {ticks:?}"
    );

    // The recovered container still takes Exec, Stop and Remove.
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ids[0].clone(),
            cmd: vec!["echo".into(), "alive".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n");
    rt.stop_container(cri::StopContainerRequest {
        container_id: ids[0].clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    assert!(common::mounts_under(d.dir.path()).is_empty());
    assert!(common::processes_mentioning(&d.state_dir().join("pods")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_containers_running_and_exits_quickly() {
    let registry = require_privileged!();
    let mut d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "term").await;
    let sleeper = container_config("sleeper", &busybox, &["sleep", "1000"]);
    let id = create(&d, &pod, sleeper).await.expect("create");
    start(&d, &id).await;
    assert!(
        !common::netns_pool_mounts(d.dir.path()).is_empty(),
        "namespaces are made ahead of pods"
    );
    let elapsed = d.terminate();
    assert!(
        elapsed < Duration::from_secs(1),
        "SIGTERM shutdown took {elapsed:?}"
    );
    assert_eq!(
        common::netns_pool_mounts(d.dir.path()),
        Vec::<String>::new(),
        "a graceful shutdown destroys the namespaces made ahead"
    );
    d.spawn(&[]);
    let status = wait_for("status after restart", Duration::from_secs(5), || async {
        Some(container_state(&d, &id).await)
    })
    .await;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

/// Running containers are answered from the daemon's records once their
/// monitor's exit watch is live (kubelet lists every second); an exit the
/// daemon did not cause (the OOM killer, a kill from the host) must still
/// show in ContainerStatus and in ListContainers, unfiltered and filtered
/// by state, through the monitor's pushed exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_from_outside_shows_in_status_and_lists_of_a_cached_container() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let mut rt = d.runtime().await;
    let pod = run_pod(&d, "outside-kill").await;
    let id = running_sleeper(&d, &pod, "victim", &busybox).await;
    let keeper = running_sleeper(&d, &pod, "keeper", &busybox).await;
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let pid = pid_of(&status);
    // Several rounds of what kubelet sends, so both records are cached as
    // running under a live watch.
    for _ in 0..3 {
        let listed = rt
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(
            listed
                .iter()
                .all(|c| c.state == cri::ContainerState::ContainerRunning as i32),
            "{listed:?}"
        );
        assert_eq!(
            container_state(&d, &id).await.state,
            cri::ContainerState::ContainerRunning as i32
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: kill(2) of the test's own container process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);

    let exited = wait_for(
        "the killed container listed as exited",
        Duration::from_secs(10),
        || {
            let mut rt = rt.clone();
            let id = id.clone();
            async move {
                let listed = rt
                    .list_containers(cri::ListContainersRequest { filter: None })
                    .await
                    .ok()?
                    .into_inner()
                    .containers;
                listed
                    .into_iter()
                    .find(|c| c.id == id && c.state == cri::ContainerState::ContainerExited as i32)
            }
        },
    )
    .await;
    assert_eq!(exited.id, id);
    let s = container_state(&d, &id).await;
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137, "SIGKILL: 128 + 9");
    let running = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        running.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![keeper.as_str()],
        "only the untouched container still runs"
    );
    stop_and_remove_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_monitor_leaves_containers_unknown_and_remove_cleans_up() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let mut rt = d.runtime().await;
    let pod = run_pod(&d, "orphan").await;
    let sleeper = container_config("sleeper", &busybox, &["sleep", "1000"]);
    let id = create(&d, &pod, sleeper).await.expect("create");
    start(&d, &id).await;
    // Created, never started: its init waits in the monitor's pod.
    let waiting = create(&d, &pod, container_config("waiting", &busybox, &["true"]))
        .await
        .expect("create waiting");
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let pid = pid_of(&status);
    // The monitor, not the pod init it forked nor the created container's
    // init waiting for its start (same command line; comm "pod-init" and
    // libcontainer's "youki:[2:INIT]"). CreateContainer answers before the
    // build, so the monitor may still be building `waiting`: a process it
    // has just forked may not have renamed itself yet, and is told apart
    // by its parent, the monitor.
    let same_cmdline = common::processes_mentioning(&d.state_dir().join("pods"));
    let monitors: Vec<i32> = same_cmdline
        .iter()
        .copied()
        .filter(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            let comm = comm.trim();
            comm != "pod-init"
                && !comm.starts_with("youki:")
                && !parent_of(*p as u32).is_some_and(|pp| same_cmdline.contains(&(pp as i32)))
        })
        .collect();
    assert_eq!(monitors.len(), 1, "one monitor per pod");
    // SAFETY: kill(2) of the test's own monitor process.
    unsafe { libc::kill(monitors[0], libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let s = container_state(&d, &id).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerUnknown as i32,
        "never silently running"
    );
    assert!(!s.message.is_empty());
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container itself outlived its monitor"
    );
    // Neither can be started without its monitor: an error, never a
    // container run unsupervised, and both stay unknown.
    for c in [&waiting, &id] {
        assert_eq!(
            container_state(&d, c).await.state,
            cri::ContainerState::ContainerUnknown as i32
        );
        let err = rt
            .start_container(cri::StartContainerRequest {
                container_id: c.to_string(),
            })
            .await
            .expect_err("start without a monitor");
        eprintln!("start of an unknown container: {err}");
        assert_ne!(err.code(), tonic::Code::Ok);
        assert_eq!(
            container_state(&d, c).await.state,
            cri::ContainerState::ContainerUnknown as i32,
            "{err}"
        );
    }

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("stop");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("remove");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "remove killed the orphan"
    );
    assert!(
        common::mounts_under(d.dir.path()).is_empty(),
        "{:?}",
        common::mounts_under(d.dir.path())
    );
    assert!(
        common::cgroups_left(&d.cgroup_parent).is_empty(),
        "{:?}",
        common::cgroups_left(&d.cgroup_parent)
    );
}

/// Pids of `parent`'s children whose command line starts with `prefix`.
fn children_of(parent: u32, prefix: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            parent_of(*pid) == Some(parent) && cmd.starts_with(prefix.as_bytes())
        })
        .collect()
}

/// The parent pid of `pid`, from /proc (None once it is gone).
fn parent_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && (l.contains('Z') || l.contains('X')))
        })
        .unwrap_or(false)
}

/// The context switches `pid` made by waiting (`voluntary_ctxt_switches`):
/// each is a sleep it was woken from.
fn voluntary_switches(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// A monitor with nothing to do sleeps until something happens: no turn
/// on a clock (it used to go round once a second, a wakeup per pod per
/// second on an idle node). Its container and the daemon's exit watch
/// are there, idle, while it is watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_monitor_is_never_woken() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "idle").await;
    running_sleeper(&d, &pod, "sleeper", &busybox).await;
    let template = children_of(d.pid().unwrap(), "capcri\0monitor-template\0")[0];
    let monitor = children_of(template, "capcri\0monitor\0--pod-id\0")[0];
    // The start's own traffic (its answer, the first status) settles.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = voluntary_switches(monitor);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = voluntary_switches(monitor);
    // Removed before the verdict: a failed assertion leaves nothing behind.
    stop_and_remove_pod(&d, &pod).await;
    assert_eq!(
        after - before,
        0,
        "an idle monitor was woken {} times in 2.5 s",
        after - before
    );
}

/// Monitors are forks of one monitor template per daemon (exec'd from the
/// sealed memfd). Killing it costs nothing running: its monitors live on,
/// and the next RunPodSandbox starts a new one. It exits with its daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_monitor_template_is_replaced_and_its_monitors_live_on() {
    let registry = require_privileged!();
    let mut d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let daemon = d.pid().unwrap();
    let first = run_pod(&d, "before").await;
    let id = running_sleeper(&d, &first, "sleeper", &busybox).await;

    let templates = children_of(daemon, "capcri\0monitor-template\0");
    assert_eq!(templates.len(), 1, "one template per daemon");
    let template = templates[0];
    let exe = std::fs::read_link(format!("/proc/{template}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().starts_with("/memfd:capcri"),
        "the template runs from the sealed memfd, not {exe:?}"
    );
    let monitors = children_of(template, "capcri\0monitor\0--pod-id\0");
    assert_eq!(
        monitors.len(),
        1,
        "the pod's monitor is the template's child"
    );
    let monitor = monitors[0];
    let cmdline = std::fs::read(format!("/proc/{monitor}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&first),
        "the monitor's command line names its pod"
    );
    // Named for ps, top and pgrep, not for the memfd's descriptor number
    // the kernel takes from the exec'd /proc/self/fd/N.
    let comm = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(comm(template), "capcri-template");
    assert_eq!(comm(monitor), "capcri-monitor");

    // SAFETY: kill(2) of the test daemon's own helper process.
    unsafe { libc::kill(template as i32, libc::SIGKILL) };
    wait_for(
        "the template to die",
        Duration::from_secs(5),
        || async move { (!alive(template)).then_some(()) },
    )
    .await;
    assert!(alive(monitor), "the monitor outlives its template");
    assert_eq!(
        container_state(&d, &id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );

    let second = run_pod(&d, "after").await;
    let replacement = children_of(daemon, "capcri\0monitor-template\0");
    assert_eq!(replacement.len(), 1, "a new template");
    assert_ne!(replacement[0], template);

    for pod in [&first, &second] {
        common::stop_and_remove_pod(&d, pod).await;
    }
    assert!(!alive(monitor), "removal ended the first monitor");
    assert!(
        common::mounts_under(d.dir.path()).is_empty(),
        "{:?}",
        common::mounts_under(d.dir.path())
    );

    // The template ends with its daemon (its request channel closes).
    d.kill9();
    let replacement = replacement[0];
    wait_for(
        "the template to exit",
        Duration::from_secs(5),
        || async move { (!alive(replacement)).then_some(()) },
    )
    .await;
}
