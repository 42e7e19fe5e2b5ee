//! capcri where node agents run: inside a container's PID namespace (a kind
//! node, a node agent in a container). The daemon runs under `unshare --pid
//! --fork --mount-proc --mount --net --ipc`, so it is pid 1 of a PID
//! namespace that is not the initial one and sees only that namespace's
//! /proc; every pod mode must work there as it does on a host.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{TestDaemon, container_config, create, exec, pod_config, pull, start, with_pid_mode};
use k8s_cri::v1 as cri;

fn monitor_log(d: &TestDaemon, pod: &str) -> String {
    std::fs::read_to_string(d.state_dir().join("pods").join(pod).join("monitor.log"))
        .unwrap_or_default()
}

async fn run(d: &TestDaemon, config: cri::PodSandboxConfig) -> String {
    common::run_pod_with_config(d, config).await
}

/// Create and start, with the monitor's log in the panic message.
async fn run_container(d: &TestDaemon, pod: &str, config: cri::ContainerConfig) -> String {
    let id = match create(d, pod, config).await {
        Ok(id) => id,
        Err(e) => panic!("create: {e}\nmonitor log:\n{}", monitor_log(d, pod)),
    };
    start(d, &id).await;
    id
}

fn stdout(r: &cri::ExecSyncResponse) -> String {
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// A daemon whose temp dir is 0711 (a user-namespace pod's root must reach
/// its rootfs), with busybox pulled, restarted inside the namespaces.
async fn nested_daemon(busybox: &str) -> TestDaemon {
    let mut d = TestDaemon::start_in_with(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    });
    pull(&d, busybox).await;
    d.respawn_nested(&[]);
    // The daemon really is pid 1 of a PID namespace of its own.
    let pid = d.pid().expect("nested daemon pid");
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_ne!(ns(&pid.to_string()), ns("self"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap()
        .to_string();
    assert!(nspid.ends_with("\t1"), "{nspid}");
    d
}

/// critest NamespaceOption "should support ContainerPID" / "PodPID": two
/// containers of a shared-PID pod see each other, a CONTAINER-mode one sees
/// only itself, all with the daemon in a nested PID namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_daemon_runs_shared_and_private_pid_pods() {
    let registry = require_privileged!();
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    let d = nested_daemon(&busybox).await;
    let pod = run(&d, pod_config("nested", &d.dir.path().join("logs"))).await;
    let a = run_container(
        &d,
        &pod,
        with_pid_mode(
            container_config("a", &busybox, &["sleep", "4242"]),
            cri::NamespaceMode::Pod,
        ),
    )
    .await;
    let b = run_container(
        &d,
        &pod,
        with_pid_mode(
            container_config("b", &busybox, &["sleep", "4343"]),
            cri::NamespaceMode::Pod,
        ),
    )
    .await;
    let own = run_container(
        &d,
        &pod,
        with_pid_mode(
            container_config("own", &busybox, &["sleep", "4444"]),
            cri::NamespaceMode::Container,
        ),
    )
    .await;
    for (who, id) in [("a", &a), ("b", &b)] {
        let ps = stdout(&exec(&d, id, &["ps", "-o", "pid,args"]).await);
        assert!(ps.contains("sleep 4242"), "{who}: {ps}");
        assert!(ps.contains("sleep 4343"), "{who}: {ps}");
        assert!(!ps.contains("sleep 4444"), "{who}: {ps}");
    }
    let comm = exec(&d, &a, &["cat", "/proc/1/comm"]).await;
    assert_eq!(stdout(&comm).trim(), "pod-init", "{comm:?}");
    let ps = stdout(&exec(&d, &own, &["ps", "-o", "pid,args"]).await);
    assert!(ps.contains("sleep 4444"), "{ps}");
    assert!(!ps.contains("sleep 4242"), "{ps}");
    let pid1 = exec(&d, &own, &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(stdout(&pid1), "sleep\u{0}4444\u{0}", "{pid1:?}");
    // On a cgroup v1 host each container's /sys/fs/cgroup/<controller> is
    // its own cgroup, read-only (libcontainer's v1 emulation read another
    // process's cgroups here, see spec::cgroup_v1).
    if std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
        for (who, id) in [("a", &a), ("own", &own)] {
            let script = "grep -qx $$ /sys/fs/cgroup/memory/cgroup.procs && echo own-cgroup; \
                          grep -qx $$ /sys/fs/cgroup/cpu/cgroup.procs && echo own-cpu; \
                          mkdir /sys/fs/cgroup/memory/x 2>&1";
            let r = exec(&d, id, &["sh", "-c", script]).await;
            let out = stdout(&r);
            assert!(
                out.contains("own-cgroup") && out.contains("own-cpu"),
                "{who}: {out}"
            );
            assert!(out.contains("Read-only file system"), "{who}: {out}");
        }
    }
    common::stop_and_remove_pod(&d, &pod).await;
}

/// critest UserNamespaces "should succeed to run pod with user namespaces
/// enabled", nested: a POD user namespace with a shared PID namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_daemon_runs_a_user_namespace_pod() {
    let registry = require_privileged!();
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    let d = nested_daemon(&busybox).await;
    let ns = cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![cri::IdMapping {
                container_id: 0,
                host_id: 65536,
                length: 65536,
            }],
            gids: vec![cri::IdMapping {
                container_id: 0,
                host_id: 65536,
                length: 65536,
            }],
        }),
        ..Default::default()
    };
    let mut config = pod_config("nested-userns", &d.dir.path().join("logs"));
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(ns.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run(&d, config).await;
    let mut c = container_config("app", &busybox, &["sleep", "1000"]);
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_container(&d, &pod, c).await;
    let maps = exec(&d, &id, &["cat", "/proc/self/uid_map", "/proc/1/comm"]).await;
    let text = stdout(&maps);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields, ["0", "65536", "65536", "pod-init"], "{maps:?}");
    common::stop_and_remove_pod(&d, &pod).await;
}

/// A libcontainer failure says which step failed, on which path, with which
/// errno (libcontainer's own error text is only the step): a directory
/// bind-mounted onto a file of the image cannot be mounted. capcri answers
/// CreateContainer before libcontainer's build, as containerd leaves runc's
/// create to StartContainer. The monitor reports the failed build as an
/// exit, so the list shows the container exited without anyone asking
/// (kubelet's relist does not wait on builds: created containers are
/// answered from the cache), and it reads as containerd's whose task could
/// not be created: exited, 128, StartError, libcontainer's report of the
/// mount, its destination and ENOTDIR as its message. Every StartContainer
/// of it fails with that report. RemoveContainer frees it like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libcontainer_failure_names_the_step_the_path_and_the_errno() {
    let registry = require_privileged!();
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    let d = TestDaemon::start(&[]);
    pull(&d, &busybox).await;
    let pod = run(&d, pod_config("lcerr", &d.dir.path().join("logs"))).await;
    let dir = d.dir.path().join("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = container_config("bad", &busybox, &["sleep", "100"]);
    c.mounts = vec![cri::Mount {
        container_path: "/bin/sh".into(),
        host_path: dir.display().to_string(),
        ..Default::default()
    }];
    let id = create(&d, &pod, c)
        .await
        .expect("create answers before the build");
    let names_everything = |msg: &str| {
        assert!(msg.contains("failed to prepare rootfs"), "no step: {msg}");
        assert!(msg.contains("/bin/sh"), "no path: {msg}");
        assert!(
            msg.contains("ENOTDIR") || msg.contains("Not a directory"),
            "no errno: {msg}"
        );
    };
    // Listed as exited once the build has failed, before any start.
    common::wait_for(
        "the failed build listed as exited",
        Duration::from_secs(20),
        || async {
            let listed = common::list_containers(&d).await;
            (listed.len() == 1 && listed[0].state() == cri::ContainerState::ContainerExited)
                .then_some(())
        },
    )
    .await;
    let status = common::container_state(&d, &id).await;
    assert_eq!(status.state(), cri::ContainerState::ContainerExited);
    assert_eq!(status.reason, "StartError", "{status:?}");
    assert_eq!(status.exit_code, 128, "{status:?}");
    assert_eq!(status.started_at, 0, "{status:?}");
    names_everything(&status.message);
    // The monitor log has the same report.
    let log = monitor_log(&d, &pod);
    assert!(
        log.contains("failed to prepare rootfs"),
        "monitor log: {log}"
    );
    // Every start of it gives the report, not a new attempt.
    for attempt in ["first", "second"] {
        let err = d
            .runtime()
            .await
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect_err("a directory onto /bin/sh");
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{attempt}: {}",
            err.message()
        );
        names_everything(err.message());
    }
    // Stop is a no-op on it; remove takes everything: nothing listed,
    // nothing on disk for a restart to load, and the name is free for
    // kubelet's next try.
    d.runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .expect("stop of a container that never ran");
    d.runtime()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("remove");
    let listed = common::list_containers(&d).await;
    assert!(listed.is_empty(), "{listed:?}");
    let records: Vec<_> = std::fs::read_dir(d.data_dir().join("meta").join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(records.is_empty(), "container records left: {records:?}");
    let id = run_container(
        &d,
        &pod,
        container_config("bad", &busybox, &["sleep", "100"]),
    )
    .await;
    assert_eq!(
        common::container_state(&d, &id).await.state(),
        cri::ContainerState::ContainerRunning
    );
    common::stop_and_remove_pod(&d, &pod).await;
}
