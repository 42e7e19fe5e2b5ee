//! Pid 1 of a shared-PID pod (`shareProcessNamespace`) holds nothing of the
//! host: a container with CAP_SYS_PTRACE, which may look at (and ptrace)
//! it, finds an empty read-only root, no capabilities, no_new_privs, an
//! unprivileged uid, no descriptors, no environment, the pod's own
//! network, IPC and UTS namespaces and the pod's cgroup; and it still
//! reaps the pod's orphans.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TestDaemon, container_config, create, exec, pod_config, pull, start};
use k8s_cri::v1 as cri;
use std::time::Duration;

fn ptrace_container(name: &str, image: &str, ns: cri::NamespaceOption) -> cri::ContainerConfig {
    let mut c = container_config(name, image, &["sleep", "1000"]);
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(ns),
            capabilities: Some(cri::Capability {
                add_capabilities: vec!["SYS_PTRACE".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

async fn run(d: &TestDaemon, name: &str, ns: cri::NamespaceOption) -> String {
    let mut config = pod_config(name, &d.dir.path().join("logs"));
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        }),
        ..Default::default()
    });
    common::run_pod_with_config(d, config).await
}

/// `sh -c script` in the container: (exit code, stdout, stderr).
async fn sh(d: &TestDaemon, id: &str, script: &str) -> (i32, String, String) {
    let r = exec(d, id, &["sh", "-c", script]).await;
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("{name} missing in {status}"))
        .trim()
}

/// Everything a SYS_PTRACE container can read of pid 1; `id` is the pod
/// init's uid and gid as the container sees them. `traceable`: the
/// container's CAP_SYS_PTRACE is in the user namespace of the init's
/// memory, so the ptrace access check lets it into /proc/1/root, cwd, fd
/// and environ (the host's user namespace); in a pod user namespace it is
/// not, and those are refused outright.
async fn check_pod_init_is_powerless(
    d: &TestDaemon,
    ctr: &str,
    pod: &str,
    id: &str,
    traceable: bool,
) {
    // The container really has CAP_SYS_PTRACE (bit 19) in its bounding set.
    let (_, own, _) = sh(d, ctr, "cat /proc/self/status").await;
    let bnd = u64::from_str_radix(status_field(&own, "CapEff"), 16).unwrap();
    assert_ne!(bnd & (1 << 19), 0, "{own}");
    assert_eq!(sh(d, ctr, "cat /proc/1/comm").await.1.trim(), "pod-init");

    if traceable {
        check_what_ptrace_reaches(d, ctr).await;
    } else {
        for script in [
            "ls -a /proc/1/root/",
            "ls -a /proc/1/cwd/",
            "ls -a /proc/1/fd/",
            "cat /proc/1/environ",
        ] {
            let (code, out, err) = sh(d, ctr, script).await;
            assert_ne!(code, 0, "{script}: {out}");
            assert!(err.contains("Permission denied"), "{script}: {err}");
        }
    }
    let (_, out, _) = sh(d, ctr, "tr '\\000' ' ' < /proc/1/cmdline").await;
    assert!(!out.contains('/') && !out.contains(pod), "{out}");

    // No capabilities anywhere, no_new_privs, the unprivileged id.
    let (_, status, _) = sh(d, ctr, "cat /proc/1/status").await;
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(&status, set),
            "0000000000000000",
            "{set}: {status}"
        );
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{status}");
    let ids = format!("{id}\t{id}\t{id}\t{id}");
    assert_eq!(status_field(&status, "Uid"), ids, "{status}");
    assert_eq!(status_field(&status, "Gid"), ids, "{status}");
    assert_eq!(status_field(&status, "Groups"), "", "{status}");
    // Not dumpable: its /proc files belong to host root (unmapped, so the
    // overflow uid, in a pod user namespace), not to its uid.
    let (_, owner, _) = sh(d, ctr, "stat -c %u /proc/1/status").await;
    let root = if traceable { "0" } else { "65534" };
    assert_eq!(owner.trim(), root, "pod init is dumpable");

    // The pod's namespaces, not the host's (readable only when traceable).
    if traceable {
        for ns in ["net", "ipc", "uts"] {
            let script = format!("readlink /proc/1/ns/{ns}; readlink /proc/self/ns/{ns}");
            let (_, out, _) = sh(d, ctr, &script).await;
            let links: Vec<&str> = out.lines().collect();
            assert_eq!(links.len(), 2, "{out}");
            assert_eq!(
                links[0], links[1],
                "pod init not in the pod's {ns} namespace"
            );
        }
    }
    // In the pod's cgroup: a leaf of its own under the pod's. On cgroup v2
    // the container has its own cgroup namespace rooted at its cgroup
    // (`<pod>/<container>`), so the init's leaf is its sibling `/../pod-init`.
    let (_, cgroups, _) = sh(d, ctr, "cat /proc/1/cgroup").await;
    for line in cgroups.lines() {
        assert!(
            line.ends_with(&format!("/{pod}/pod-init")) || line == "0::/../pod-init",
            "pod init outside the pod's cgroup: {cgroups}"
        );
    }
}

/// What the ptrace access check lets a SYS_PTRACE container see.
async fn check_what_ptrace_reaches(d: &TestDaemon, ctr: &str) {
    // An empty root, read-only, and the cwd is that root.
    let (code, out, err) = sh(d, ctr, "ls -a /proc/1/root/").await;
    assert_eq!(
        (code, out.split_whitespace().collect::<Vec<_>>()),
        (0, vec![".", ".."]),
        "{err}"
    );
    let (code, out, err) = sh(d, ctr, "cat /proc/1/root/etc/hostname").await;
    assert_ne!(code, 0, "host file read through /proc/1/root: {out}");
    assert!(err.contains("No such file"), "{err}");
    let (code, _, err) = sh(d, ctr, "touch /proc/1/root/x").await;
    assert_ne!(code, 0, "wrote into the pod init's root");
    assert!(
        err.contains("Read-only") || err.contains("Permission"),
        "{err}"
    );
    let (_, out, _) = sh(d, ctr, "readlink /proc/1/cwd; ls -a /proc/1/cwd/").await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["/", ".", ".."]);
    // The mount table it sees: one mount, its own root.
    let (_, out, _) = sh(d, ctr, "cat /proc/1/mountinfo").await;
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(" / / ro,") && out.contains(" - tmpfs "),
        "{out}"
    );

    // No descriptors, no environment, no command line from the monitor.
    let (code, out, err) = sh(d, ctr, "ls /proc/1/fd/ | wc -l").await;
    assert_eq!((code, out.trim()), (0, "0"), "{err}");
    let (code, out, err) = sh(d, ctr, "tr -d '\\000' < /proc/1/environ | wc -c").await;
    assert_eq!((code, out.trim()), (0, "0"), "{err}");
}

/// Orphans re-parented to pid 1 are reaped: a `sleep` left behind by an
/// exec'd shell has ppid 1 and, once it exits, no zombie remains.
async fn check_orphans_are_reaped(d: &TestDaemon, ctr: &str) {
    let (_, pid, _) = sh(d, ctr, "sleep 2 >/dev/null 2>&1 </dev/null & echo $!").await;
    let pid = pid.trim().to_string();
    assert!(!pid.is_empty());
    let (_, ppid, _) = sh(d, ctr, &format!("grep PPid /proc/{pid}/status")).await;
    assert_eq!(ppid.split_whitespace().collect::<Vec<_>>(), ["PPid:", "1"]);
    common::wait_for(
        "the orphan to be reaped",
        Duration::from_secs(10),
        || async {
            let (code, out, _) = sh(d, ctr, &format!("cat /proc/{pid}/stat 2>/dev/null")).await;
            (code != 0 && out.is_empty()).then_some(())
        },
    )
    .await;
}

/// A container whose init has a child: once the init is killed the child
/// lives on (re-parented to the pod's init, in the container's cgroup);
/// RemoveContainer must end it too and succeed (critest "PodPID" with
/// nginx's workers).
async fn check_removal_ends_a_containers_orphans(
    d: &TestDaemon,
    pod: &str,
    image: &str,
    witness: &str,
) {
    let mut c = container_config(
        "parent",
        image,
        &["sh", "-c", "sleep 1001 & exec sleep 1002"],
    );
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(shared_pid()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(d, pod, c).await.expect("create parent");
    start(d, &id).await;
    let seen = |ps: &str| ps.contains("sleep 1001");
    common::wait_for("the child", Duration::from_secs(10), || async {
        seen(&sh(d, witness, "ps -o pid,args").await.1).then_some(())
    })
    .await;
    common::stop_and_remove_container(d, &id).await;
    let (_, ps, _) = sh(d, witness, "ps -o pid,stat,args").await;
    assert!(!seen(&ps), "the removed container's child lives on: {ps}");
}

fn shared_pid() -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_pid_pods_init_gives_a_ptrace_container_nothing_of_the_host() {
    let registry = require_privileged!();
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    let d = TestDaemon::start(&[]);
    pull(&d, &busybox).await;
    let pod = run(&d, "podinit", shared_pid()).await;
    let ctr = create(&d, &pod, ptrace_container("tracer", &busybox, shared_pid()))
        .await
        .expect("create");
    start(&d, &ctr).await;
    check_pod_init_is_powerless(&d, &ctr, &pod, "65535", true).await;
    check_orphans_are_reaped(&d, &ctr).await;
    check_removal_ends_a_containers_orphans(&d, &pod, &busybox, &ctr).await;
    common::stop_and_remove_pod(&d, &pod).await;
    // The init's cgroup leaf went with the pod.
    assert_eq!(
        common::cgroups_left(&d.cgroup_parent),
        Vec::<std::path::PathBuf>::new()
    );
}

/// In a pod user namespace the init is the namespace's 65535, with no
/// capabilities there either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_namespace_pods_init_is_as_powerless() {
    let registry = require_privileged!();
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    let d = TestDaemon::start_in_with(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    });
    pull(&d, &busybox).await;
    let map = cri::IdMapping {
        container_id: 0,
        host_id: 65536,
        length: 65536,
    };
    let ns = cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![map],
            gids: vec![map],
        }),
        ..Default::default()
    };
    let pod = run(&d, "podinit-userns", ns.clone()).await;
    let ctr = create(&d, &pod, ptrace_container("tracer", &busybox, ns))
        .await
        .expect("create");
    start(&d, &ctr).await;
    check_pod_init_is_powerless(&d, &ctr, &pod, "65535", false).await;
    check_orphans_are_reaped(&d, &ctr).await;
    common::stop_and_remove_pod(&d, &pod).await;
}
