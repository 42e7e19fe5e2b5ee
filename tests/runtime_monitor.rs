//! Privileged end-to-end test of the per-pod monitor: real namespaces,
//! cgroups and containers through libcontainer. Skips unless
//! CAPCRI_PRIVILEGED_TESTS is set (needs root and `umoci`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use capcri::host::pinned_namespace_path;
use capcri::monitor_api::{
    CreateContainer, ExecPath, MonitorClient, MonitorSpawn, NamespaceKind, PodNamespaceSet,
    RuntimeError, RuntimeStatus, StartOutcome, spawn_monitor,
};

const HOSTNAME: &str = "capcri-test-pod";

mod runtime_support;
use runtime_support::*;

/// A create request with no stdin and no terminal, on the direct exec path.
fn direct_create(id: &str, bundle: PathBuf, log_path: Option<PathBuf>) -> CreateContainer {
    CreateContainer {
        id: id.into(),
        bundle,
        log_path,
        stdin: false,
        stdin_once: false,
        tty: false,
        exec_path: ExecPath::Direct,
        build_after_answer: false,
    }
}

/// A pod monitor for one test (its own network, IPC and UTS namespaces, the
/// capcri binary of this build), under a fresh directory whose name is also
/// the test's cgroup name. The cleanup kills the monitor and whatever is in
/// those cgroups, unmounts and removes the directory.
async fn test_monitor(tag: &str, pod_id: &str) -> (MonitorClient, Cleanup, String) {
    let uniq = format!(
        "capcri-test-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let base = std::env::temp_dir().join(&uniq);
    std::fs::create_dir_all(&base).unwrap();
    let mut cleanup = Cleanup {
        base: base.clone(),
        cgroup_name: uniq.clone(),
        monitor_pid: None,
    };
    let client = spawn_monitor(MonitorSpawn {
        pod_id: pod_id.into(),
        pod_dir: base.join("pod"),
        runtime_root: base.join("runtime"),
        new_namespaces: PodNamespaceSet {
            net: true,
            ipc: true,
            uts: true,
            pid: false,
        },
        hostname: Some(HOSTNAME.into()),
        user_namespace: None,
        init_cgroup: None,
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_capcri"))),
    })
    .await
    .expect("monitor starts");
    cleanup.monitor_pid = Some(client.pid().expect("monitor reports its pid") as i32);
    (client, cleanup, uniq)
}

#[tokio::test]
async fn monitor_runs_a_pod_end_to_end() {
    if !privileged() {
        return;
    }
    let (client, cleanup, uniq) = test_monitor("e2e", "pod-1").await;
    let base = cleanup.base.clone();
    let pod_dir = base.join("pod");
    let runtime_root = base.join("runtime");
    let monitor_pid = client.pid().expect("monitor reports its pid") as i32;

    // Own session: the daemon's process group and session end do not reach it.
    // SAFETY: getsid/getpgid of a pid have no memory effects.
    let (sid, pgid) = unsafe { (libc::getsid(monitor_pid), libc::getpgid(monitor_pid)) };
    assert_eq!(sid, monitor_pid);
    assert_eq!(pgid, monitor_pid);

    // Pins exist and are mount points.
    let mounts = mounts_under(&base);
    for kind in [NamespaceKind::Net, NamespaceKind::Ipc, NamespaceKind::Uts] {
        let pin = pinned_namespace_path(&pod_dir, kind);
        assert!(pin.exists(), "{} missing", pin.display());
        assert!(
            mounts.contains(&pin.display().to_string()),
            "{} not mounted",
            pin.display()
        );
    }

    // CVE-2019-5736: the monitor (whose image every container init runs
    // until its execve) is a sealed memfd, not the capcri file on disk.
    let exe = std::fs::read_link(format!("/proc/{monitor_pid}/exe")).unwrap();
    assert!(
        exe.display().to_string().starts_with("/memfd:"),
        "monitor exe is {}",
        exe.display()
    );
    let write_attempt = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{monitor_pid}/exe"));
    let err = write_attempt.expect_err("the sealed monitor binary must not open for writing");
    assert!(
        matches!(err.raw_os_error(), Some(libc::ETXTBSY) | Some(libc::EPERM)),
        "unexpected error opening the monitor exe for writing: {err}"
    );

    // A reconnecting client (daemon restart) reaches the same monitor.
    let again = MonitorClient::connect(&pod_dir).await.expect("reconnect");
    assert_eq!(again.pid(), Some(monitor_pid as u32));

    // A malformed request gets an error response, and the monitor lives on.
    {
        use std::io::{Read, Write};
        let mut raw =
            std::os::unix::net::UnixStream::connect(pod_dir.join("monitor.sock")).unwrap();
        let body = b"{not json";
        raw.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        raw.write_all(body).unwrap();
        let mut len = [0u8; 4];
        raw.read_exact(&mut len).unwrap();
        let mut resp = vec![0u8; u32::from_be_bytes(len) as usize];
        raw.read_exact(&mut resp).unwrap();
        let resp = String::from_utf8_lossy(&resp);
        assert!(
            resp.contains("\"error\"") && resp.contains("malformed"),
            "{resp}"
        );
    }
    MonitorClient::connect(&pod_dir)
        .await
        .expect("monitor survives a malformed request");

    // Container 1: output to the CRI log, then it sleeps.
    let bundle1 = base.join("bundle1");
    unpack("registry.k8s.io/e2e-test-images/busybox:1.29-2", &bundle1);
    write_config(
        &bundle1,
        &pod_dir,
        &format!("/{uniq}/c1"),
        &["sh", "-c", "echo out; echo err >&2; sleep 1000"],
        0,
    );
    let log1 = base.join("logs/c1.log");
    let pid = client
        .create(direct_create("c1", bundle1.clone(), Some(log1.clone())))
        .await
        .expect("create c1");
    assert!(pid > 1);
    assert_eq!(
        client.state("c1").await.unwrap().status,
        RuntimeStatus::Created
    );
    // The answer carries the state after the start: StartContainer needs
    // no State round trip before or after.
    let started = match client.start("c1").await.expect("start c1") {
        StartOutcome::Started(st) => st,
        other => panic!("start of a created container answered {other:?}"),
    };
    let st = client.state("c1").await.unwrap();
    assert_eq!(st.status, RuntimeStatus::Running);
    assert!(st.started_at.is_some());
    assert_eq!(started.status, RuntimeStatus::Running);
    assert_eq!(started.started_at, st.started_at);
    assert_eq!(started.pid, st.pid);
    // A second start does nothing and says what the container is.
    match client.start("c1").await.expect("second start of c1") {
        StartOutcome::NotCreated(again) => {
            assert_eq!(again.status, RuntimeStatus::Running);
            assert_eq!(again.started_at, st.started_at, "not started twice");
        }
        other => panic!("second start answered {other:?}"),
    }

    let log = wait_for_log(&log1, &[" stdout F out\n", " stderr F err\n"]).await;
    assert!(
        log.contains(" stdout F out\n") && log.contains(" stderr F err\n"),
        "log was {log:?}"
    );
    for line in log.lines() {
        let ts = line.split(' ').next().unwrap();
        chrono::DateTime::parse_from_rfc3339(ts)
            .unwrap_or_else(|e| panic!("bad timestamp in {line:?}: {e}"));
    }

    // Pod namespaces are the container's.
    let out = client
        .exec_sync("c1", exec_spec(&["hostname"], 0, None))
        .await
        .expect("exec hostname");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), HOSTNAME);
    let out = client
        .exec_sync(
            "c1",
            exec_spec(&["cat", "/sys/class/net/lo/operstate"], 0, None),
        )
        .await
        .unwrap();
    assert_ne!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "down",
        "lo is down in the pod netns"
    );

    // The monitor ignores SIGPIPE; container processes must not inherit that.
    let out = client
        .exec_sync(
            "c1",
            exec_spec(&["grep", "SigIgn", "/proc/self/status"], 0, None),
        )
        .await
        .unwrap();
    let sigign = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(sigign.trim().ends_with("0000000000000000"), "{sigign}");

    // exec as a given user.
    let out = client
        .exec_sync("c1", exec_spec(&["id", "-u"], 1000, None))
        .await
        .expect("exec id");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000");
    assert_eq!(out.exit_code, 0);
    assert!(!out.timed_out);

    // exec timeout: killed, reported, and the monitor stays responsive
    // meanwhile (a state call while the exec runs).
    let started = Instant::now();
    let slow = {
        let c = client.clone();
        tokio::spawn(async move {
            c.exec_sync(
                "c1",
                exec_spec(&["sleep", "10"], 0, Some(Duration::from_secs(1))),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = client.state("c1").await.expect("state while an exec runs");
    assert_eq!(during.status, RuntimeStatus::Running);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "monitor blocked during exec"
    );
    let out = slow.await.unwrap().expect("exec with timeout");
    assert!(out.timed_out, "exec was not reported as timed out: {out:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Stop: sh as pid 1 ignores SIGTERM, so SIGKILL after the timeout.
    client
        .stop("c1", Duration::from_secs(1), libc::SIGTERM)
        .await
        .expect("stop c1");
    let st = client.state("c1").await.unwrap();
    assert_eq!(st.status, RuntimeStatus::Exited);
    assert!(
        matches!(st.exit_code, Some(143) | Some(137)),
        "exit code {:?}",
        st.exit_code
    );
    assert!(st.finished_at.is_some());
    // The exit is on disk for a restarted daemon.
    let persisted = capcri::monitor_api::read_persisted_state(&pod_dir, "c1").unwrap();
    assert_eq!(persisted, st);
    client
        .stop("c1", Duration::from_secs(1), libc::SIGTERM)
        .await
        .expect("stop is idempotent");

    // Container 4 exits on its own: the exit is on disk without anyone
    // asking (a daemon that is down meanwhile finds it there), and its
    // unterminated last line is in the log as a partial (P) record, as
    // containerd writes it: kubelet joins it with nothing and reads "last".
    let bundle4 = base.join("bundle4");
    unpack("registry.k8s.io/e2e-test-images/busybox:1.29-2", &bundle4);
    write_config(
        &bundle4,
        &pod_dir,
        &format!("/{uniq}/c4"),
        &["sh", "-c", "echo first; printf last; exit 3"],
        0,
    );
    let log4 = base.join("logs/c4.log");
    client
        .create(direct_create("c4", bundle4.clone(), Some(log4.clone())))
        .await
        .expect("create c4");
    client.start("c4").await.expect("start c4");
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = capcri::monitor_api::read_persisted_state(&pod_dir, "c4").unwrap();
        if st.status == RuntimeStatus::Exited || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(st.status, RuntimeStatus::Exited);
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.reason.as_deref(), Some("Error"));
    let log = wait_for_log(&log4, &[" stdout F first\n", " stdout P last\n"]).await;
    assert!(
        log.contains(" stdout F first\n") && log.contains(" stdout P last\n"),
        "log was {log:?}"
    );
    client.delete("c4").await.expect("delete c4");

    // Container 2: the command does not exist: create names the cause.
    let bundle2 = base.join("bundle2");
    unpack("registry.k8s.io/e2e-test-images/busybox:1.29-2", &bundle2);
    write_config(
        &bundle2,
        &pod_dir,
        &format!("/{uniq}/c2"),
        &["/no/such/command"],
        0,
    );
    let err = client
        .create(direct_create("c2", bundle2.clone(), None))
        .await
        .expect_err("create of a missing command fails");
    eprintln!("create of a missing command: {err}");
    assert!(
        matches!(&err, RuntimeError::Libcontainer { message, .. } if message.contains("/no/such/command")),
        "unexpected error {err}"
    );

    // Container 3: execve fails with EPERM (file capability cap_net_admin
    // outside the bounding set): start fails and the state says why.
    let bundle3 = base.join("bundle3");
    unpack("cri-lab/filecaps-netadmin:latest", &bundle3);
    write_config(
        &bundle3,
        &pod_dir,
        &format!("/{uniq}/c3"),
        &["/usr/local/bin/ip", "link"],
        1000,
    );
    client
        .create(direct_create("c3", bundle3.clone(), None))
        .await
        .expect("create c3 (execve happens at start)");
    let err = client
        .start("c3")
        .await
        .expect_err("start of an EPERM binary fails");
    assert!(
        err.to_string().contains("Operation not permitted") || err.to_string().contains("EPERM"),
        "{err}"
    );
    eprintln!("start of an EPERM binary: {err}");
    let st = client.state("c3").await.unwrap();
    eprintln!("state after EPERM: {st:?}");
    assert_eq!(st.status, RuntimeStatus::Exited);
    assert_eq!(st.reason.as_deref(), Some("StartError"));
    assert!(
        st.message.as_deref().unwrap_or_default().contains("EPERM"),
        "{st:?}"
    );
    assert!(st.finished_at.is_some());

    // Delete, idempotently.
    client.delete("c1").await.expect("delete c1");
    client.delete("c1").await.expect("delete twice");
    assert!(matches!(
        client.state("c1").await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(!runtime_root.join("c1").exists());

    // Shutdown removes c3, the pins, the socket, and the monitor exits.
    client.shutdown().await.expect("shutdown");
    // Exited when shutdown returns; its parent, the monitor template, reaps
    // it a moment later, so a zombie (Z) or a task being torn down (X) may
    // still be listed. Only a live state is a failure.
    let state = std::fs::read_to_string(format!("/proc/{monitor_pid}/status")).unwrap_or_default();
    assert!(
        state.is_empty()
            || state
                .lines()
                .any(|l| l.starts_with("State:") && (l.contains('Z') || l.contains('X'))),
        "monitor still running: {state}"
    );
    assert!(!pod_dir.join("monitor.sock").exists());
    assert!(
        mounts_under(&base).is_empty(),
        "mounts left: {:?}",
        mounts_under(&base)
    );
    // The pod level and the parent are the daemon's to remove (the
    // monitor removes only its containers' leaves): remove them as the
    // daemon would. A container leaf the monitor left keeps its pod's
    // directory busy, so the parent stays and the check below fails.
    for parent in cgroup_dirs(&uniq) {
        for pod in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if pod.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(pod.path());
            }
        }
        let _ = std::fs::remove_dir(&parent);
    }
    assert!(
        cgroup_dirs(&uniq).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(&uniq)
    );
    assert!(!runtime_root.join("c3").exists());
}

/// A create asking for the answer before the build (as CreateContainer
/// does): answered at once, and no later request sees the container half
/// made: the state right after is created, with the init's pid. A build
/// that fails after the answer leaves the container exited (`StartError`,
/// 128, never started) with libcontainer's report, which is also the
/// answer to its Start; delete removes it like any other.
#[tokio::test]
async fn a_create_answered_before_its_build() {
    if !privileged() {
        return;
    }
    let (client, cleanup, uniq) = test_monitor("early", "pod-early").await;
    let base = cleanup.base.clone();
    let pod_dir = base.join("pod");
    let runtime_root = base.join("runtime");
    let early = |id: &str, bundle: PathBuf| CreateContainer {
        build_after_answer: true,
        ..direct_create(id, bundle, None)
    };

    let good = base.join("good");
    unpack("registry.k8s.io/e2e-test-images/busybox:1.29-2", &good);
    write_config(
        &good,
        &pod_dir,
        &format!("/{uniq}/good"),
        &["sleep", "1000"],
        0,
    );
    let answered = client
        .create(early("good", good.clone()))
        .await
        .expect("create answered");
    assert_eq!(answered, 0, "no pid before the build");
    let st = client.state("good").await.expect("state after the answer");
    assert_eq!(st.status, RuntimeStatus::Created, "{st:?}");
    assert!(st.pid.is_some_and(|p| p > 1), "{st:?}");
    match client.start("good").await.expect("start") {
        StartOutcome::Started(st) => assert_eq!(st.status, RuntimeStatus::Running),
        other => panic!("start answered {other:?}"),
    }

    // The same name again is refused before any answer, as before.
    let err = client
        .create(early("good", good.clone()))
        .await
        .expect_err("a second create of the same id");
    assert!(matches!(err, RuntimeError::AlreadyExists { .. }), "{err}");

    // The daemon follows exits on a watch of its own; a failed build is
    // told there too, as the exit of a container that never ran.
    let mut exits = client.watch_exits().await.expect("watch exits");
    let bad = base.join("bad");
    unpack("registry.k8s.io/e2e-test-images/busybox:1.29-2", &bad);
    write_config(
        &bad,
        &pod_dir,
        &format!("/{uniq}/bad"),
        &["/no/such/command"],
        0,
    );
    assert_eq!(
        client
            .create(early("bad", bad.clone()))
            .await
            .expect("a missing command is the build's to find"),
        0
    );
    let told = tokio::time::timeout(Duration::from_secs(30), exits.next())
        .await
        .expect("the failed build is told within 30 s");
    assert_eq!(told, Some(("bad".to_string(), 128)));
    let st = client
        .state("bad")
        .await
        .expect("state of the failed build");
    assert_eq!(st.status, RuntimeStatus::Exited, "{st:?}");
    assert_eq!(st.reason.as_deref(), Some("StartError"), "{st:?}");
    assert_eq!(st.exit_code, Some(128), "{st:?}");
    assert_eq!(st.started_at, None, "{st:?}");
    assert!(st.finished_at.is_some(), "{st:?}");
    let message = st.message.clone().unwrap_or_default();
    assert!(message.contains("/no/such/command"), "{st:?}");
    let err = client
        .start("bad")
        .await
        .expect_err("start of a failed build");
    assert!(
        matches!(&err, RuntimeError::Libcontainer { message: m, .. } if *m == message),
        "{err}"
    );
    // Signals are no-ops on a container that never had a process.
    client.kill("bad", libc::SIGKILL).await.expect("kill");
    client
        .stop("bad", Duration::from_secs(1), 0)
        .await
        .expect("stop");
    assert!(!runtime_root.join("bad").exists());
    client.delete("bad").await.expect("delete the failed build");
    assert!(matches!(
        client.state("bad").await,
        Err(RuntimeError::NotFound { .. })
    ));
    // The name is free again.
    write_config(&bad, &pod_dir, &format!("/{uniq}/bad"), &["true"], 0);
    client
        .create(early("bad", bad.clone()))
        .await
        .expect("the same id after the delete");
    assert_eq!(
        client.state("bad").await.unwrap().status,
        RuntimeStatus::Created
    );

    // The good one is still running through all this.
    assert_eq!(
        client.state("good").await.unwrap().status,
        RuntimeStatus::Running
    );
    client.shutdown().await.expect("shutdown");
    drop(cleanup);
}

/// A monitor killed while one of its containers is created but not
/// started: that container's init (a clone of the monitor, waiting for its
/// start) keeps the monitor's sockets open, so nothing ends by EOF. Every
/// wait on the monitor must still end: a call, the exit watch, and an
/// interactive exec's wait for its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_monitor_ends_every_wait_on_it() {
    if !privileged() {
        return;
    }
    let (client, cleanup, uniq) = test_monitor("kill", "pod-kill").await;
    let base = cleanup.base.clone();
    let pod_dir = base.join("pod");
    let monitor_pid = client.pid().expect("monitor reports its pid") as i32;
    // Before the containers, as the daemon does when it first meets the
    // pod: the created container's init then holds this connection too.
    let mut watch = client.watch_exits().await.expect("watch exits");
    for (id, start) in [("running", true), ("created", false)] {
        let bundle = base.join(id);
        unpack("registry.k8s.io/e2e-test-images/busybox:1.29-2", &bundle);
        write_config(
            &bundle,
            &pod_dir,
            &format!("/{uniq}/{id}"),
            &["sleep", "1000"],
            0,
        );
        client
            .create(direct_create(id, bundle, None))
            .await
            .expect("create");
        if start {
            client.start(id).await.expect("start");
        }
    }
    let (_stdio, exec_exit) = client
        .exec_stream(
            "running",
            exec_spec(&["sleep", "1000"], 0, None),
            false,
            false,
        )
        .await
        .expect("interactive exec");

    // SAFETY: kill(2) of the monitor this test spawned.
    unsafe { libc::kill(monitor_pid, libc::SIGKILL) };
    let patience = Duration::from_secs(10);
    let exit = tokio::time::timeout(patience, exec_exit.wait())
        .await
        .expect("the exec's wait ends");
    // EOF or the monitor's exit, whichever the kernel shows first: a
    // connection made after the created container's init was cloned is
    // the monitor's alone.
    let err = exit.expect_err("no exit code from a dead monitor");
    eprintln!("exec wait after the monitor's death: {err}");
    let ended = tokio::time::timeout(patience, watch.next())
        .await
        .expect("the exit watch ends");
    assert_eq!(ended, None);
    for id in ["running", "created"] {
        let err = tokio::time::timeout(patience, client.state(id))
            .await
            .expect("a call to the dead monitor ends")
            .expect_err("no state from a dead monitor");
        assert!(
            matches!(err, RuntimeError::MonitorUnreachable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&monitor_pid.to_string()), "{err}");
    }
    let err = tokio::time::timeout(patience, client.start("created"))
        .await
        .expect("a start on the dead monitor ends")
        .expect_err("no start without a monitor");
    assert!(
        matches!(err, RuntimeError::MonitorUnreachable { .. }),
        "{err}"
    );
    let err = tokio::time::timeout(
        patience,
        client.exec_stream("running", exec_spec(&["true"], 0, None), false, false),
    )
    .await
    .expect("an exec on the dead monitor ends")
    .expect_err("no exec without a monitor");
    assert!(
        matches!(err, RuntimeError::MonitorUnreachable { .. }),
        "{err}"
    );
    // Reconnecting after a daemon restart fails too, at once.
    let err = tokio::time::timeout(patience, MonitorClient::connect(&pod_dir))
        .await
        .expect("a reconnect ends")
        .expect_err("no reconnect to a dead monitor");
    assert!(
        matches!(err, RuntimeError::MonitorUnreachable { .. }),
        "{err}"
    );
    drop(cleanup);
    assert!(cgroup_dirs(&uniq).is_empty(), "{:?}", cgroup_dirs(&uniq));
}

/// Needs no privileges: the monitor refuses a bad hostname before it
/// creates anything, and spawn_monitor returns its startup error text.
#[tokio::test]
async fn monitor_startup_error_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = spawn_monitor(MonitorSpawn {
        pod_id: "pod-bad".into(),
        pod_dir: dir.path().join("pod"),
        runtime_root: dir.path().join("runtime"),
        new_namespaces: PodNamespaceSet {
            net: false,
            ipc: false,
            uts: true,
            pid: false,
        },
        hostname: Some("x".repeat(100)),
        user_namespace: None,
        init_cgroup: None,
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_capcri"))),
    })
    .await
    .expect_err("a 100-byte hostname is refused");
    match err {
        RuntimeError::MonitorStartup { pod, message } => {
            assert_eq!(pod, "pod-bad");
            assert!(message.contains("hostname"), "{message}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(!dir.path().join("pod/monitor.sock").exists());
}
