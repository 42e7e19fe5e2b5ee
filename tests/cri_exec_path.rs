//! The exec path through the CRI socket (issue 12 item 7): a process the
//! monitor starts inside a running container gets the container's
//! oom_score_adj and a session keyring of its own, no fd of the monitor's,
//! the namespaces the container was created with (not what its init's
//! /proc entry names later), and a working directory that cannot leave the
//! container's root (CVE-2024-21626). On both exec paths, direct and dmz.

mod common;

use common::{
    TestDaemon, container_config, create, exec, pull, run_pod, start, stop_and_remove_pod,
    verbose_info, wait_exited,
};
use k8s_cri::v1 as cri;
use std::time::{Duration, Instant};

/// Forces the dmz exec path on containers whose name starts with `dmz-`.
const FORCE_DMZ: &str = r#"apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata:
  name: 30-force-dmz
spec:
  match: "container.name.startsWith('dmz-')"
  rules:
    - name: trampoline
      execPath: dmz
"#;

fn with_oom(mut c: cri::ContainerConfig, oom: i64) -> cri::ContainerConfig {
    c.linux.get_or_insert_with(Default::default).resources = Some(cri::LinuxContainerResources {
        oom_score_adj: oom,
        ..Default::default()
    });
    c
}

fn security(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn unconfined(mut c: cri::ContainerConfig) -> cri::ContainerConfig {
    security(&mut c).seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// ExecSync with a short timeout: Ok(response) or the gRPC error. A hang
/// is a failure of its own.
async fn try_exec(
    d: &TestDaemon,
    id: &str,
    cmd: &[&str],
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    let started = Instant::now();
    let r = d
        .runtime()
        .await
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .map(|r| r.into_inner());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "exec {cmd:?} took {:?}",
        started.elapsed()
    );
    r
}

/// oom_score_adj and descriptors, on both exec paths: two containers of
/// one pod with different scores (libcontainer writes each container's
/// score into the monitor while creating it, so the second create used to
/// decide what an exec into the first got), and one without a score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_gets_the_containers_oom_score_and_only_stdio() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_policies(&[("30-force-dmz.yaml", FORCE_DMZ)], &[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "oomfd").await;
    let sleep = ["sleep", "600"];
    let mut ids = Vec::new();
    for (name, oom) in [
        ("direct-a", 900),
        ("dmz-b", 300),
        ("direct-c", 700),
        ("dmz-d", 100),
    ] {
        let id = create(
            &d,
            &pod,
            with_oom(container_config(name, &busybox, &sleep), oom),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        start(&d, &id).await;
        ids.push((name, oom, id));
    }
    for (name, oom, id) in &ids {
        let out = exec(&d, id, &["cat", "/proc/self/oom_score_adj"]).await;
        assert_eq!(out.exit_code, 0, "{name}: {out:?}");
        assert_eq!(text(&out.stdout), oom.to_string(), "{name}: exec's score");
        // The shell's own descriptors, listed by a child so the listing's
        // own directory fd is not among them: stdin, stdout, stderr only.
        // (No pipeline: its pipes would be the shell's fds meanwhile; a
        // second command: without it the shell would exec ls itself.)
        let out = exec(&d, id, &["sh", "-c", "ls /proc/$$/fd; :"]).await;
        assert_eq!(out.exit_code, 0, "{name}: {out:?}");
        let fds = text(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        // And what they are: /dev/null and the two output pipes, nothing
        // of the monitor's.
        let listing = text(
            &exec(&d, id, &["sh", "-c", "ls -l /proc/$$/fd; :"])
                .await
                .stdout,
        );
        assert_eq!(fds, "0 1 2", "{name}: fds of an exec'd process: {listing}");
        for bad in [
            "socket:",
            "memfd",
            "/run/",
            "/var/",
            "/tmp/",
            "anon_inode",
            "ns:",
        ] {
            assert!(!listing.contains(bad), "{name}: {listing}");
        }
    }
    // No score in the spec: the exec gets what the container's init has.
    let plain = create(&d, &pod, container_config("direct-plain", &busybox, &sleep))
        .await
        .unwrap();
    start(&d, &plain).await;
    let out = exec(
        &d,
        &plain,
        &[
            "sh",
            "-c",
            "cat /proc/1/oom_score_adj /proc/self/oom_score_adj",
        ],
    )
    .await;
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0], lines[1], "init and exec scores differ: {out:?}");
    stop_and_remove_pod(&d, &pod).await;
}

/// A static probe printing the caller's session keyring serial
/// (keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)). Built with
/// the host's C compiler; None (the test says why and skips) without one.
fn keyring_probe(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let src = dir.join("ring.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\n#include <sys/syscall.h>\n\
         int main(void){long r=syscall(SYS_keyctl,0,-3,0);printf(\"%ld\\n\",r);return r<0;}\n",
    )
    .unwrap();
    let bin = dir.join("ring");
    let built = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .ok()?;
    built.success().then_some(bin)
}

fn own_session_keyring() -> i64 {
    // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0).
    unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i64, 0) }
}

/// Every exec'd process gets a session keyring of its own: not the one of
/// the daemon and its monitor (inherited from this test process), not the
/// container init's, not another exec's. Needs keyctl, so the containers
/// run without a seccomp filter (where the keyring is reachable at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_gets_a_session_keyring_of_its_own() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_policies(&[("30-force-dmz.yaml", FORCE_DMZ)], &[]);
    let probe_dir = d.dir.path().join("probe");
    std::fs::create_dir_all(&probe_dir).unwrap();
    let Some(_) = keyring_probe(&probe_dir) else {
        eprintln!("skipped: no C compiler (cc -static) to build the keyctl probe");
        return;
    };
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "keys").await;
    let host = own_session_keyring();
    assert!(host > 0, "this test process has no session keyring: {host}");
    for name in ["direct-keys", "dmz-keys"] {
        let mut c = unconfined(container_config(
            name,
            &busybox,
            &["sh", "-c", "/probe/ring; exec sleep 600"],
        ));
        c.mounts = vec![cri::Mount {
            container_path: "/probe".into(),
            host_path: probe_dir.display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        let id = create(&d, &pod, c).await.unwrap();
        start(&d, &id).await;
        let init: i64 = common::wait_for("the init's keyring", Duration::from_secs(10), || async {
            text(common::log_of(&d, name).as_bytes())
                .split_whitespace()
                .last()
                .and_then(|s| s.parse().ok())
        })
        .await;
        let mut seen = vec![host, init];
        for _ in 0..2 {
            let out = exec(&d, &id, &["/probe/ring"]).await;
            assert_eq!(out.exit_code, 0, "{name}: {out:?}");
            let ring: i64 = text(&out.stdout).parse().unwrap();
            assert!(
                !seen.contains(&ring),
                "{name}: exec's session keyring {ring} is shared (host {host}, init {init}, seen {seen:?})"
            );
            seen.push(ring);
        }
        assert_ne!(init, host, "{name}: the init shares the daemon's keyring");
    }
    stop_and_remove_pod(&d, &pod).await;
}

/// The container changes what its init's /proc/<pid>/ns entries name
/// (its init unshares a mount and a UTS namespace in place); an exec still
/// joins the namespaces the container was created with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_joins_the_namespaces_pinned_at_create() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "pinned").await;
    let mut c = container_config(
        "swapper",
        &busybox,
        &[
            "unshare",
            "-m",
            "-u",
            "sh",
            "-c",
            "mkdir -p /m && mount -t tmpfs tmpfs /m && touch /m/swapped && hostname swapped && touch /tmp/ready && exec sleep 600",
        ],
    );
    security(&mut c).capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    let c = unconfined(c);
    let id = create(&d, &pod, c).await.unwrap();
    start(&d, &id).await;
    let pid = verbose_info(&d, &id).await["pid"].as_i64().unwrap();
    let ready = std::path::PathBuf::from(format!("/proc/{pid}/root/tmp/ready"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(
            Instant::now() < deadline,
            "the init did not unshare: {:?} {}",
            common::container_state(&d, &id).await,
            common::log_of(&d, "swapper")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The init is in new namespaces now ...
    let init_mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let out = exec(
        &d,
        &id,
        &["sh", "-c", "hostname; ls /m; readlink /proc/self/ns/mnt"],
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    // ... the exec is not: the pod's hostname, no tmpfs on /mnt.
    assert_eq!(lines[0], "pinned-host", "{out:?}");
    assert!(!lines.iter().any(|l| l == "swapped"), "{out:?}");
    assert_ne!(
        lines.last().unwrap(),
        &init_mnt.display().to_string(),
        "exec joined the mount namespace the container made"
    );
    stop_and_remove_pod(&d, &pod).await;
}

/// Once the container's init has exited, exec is refused by name and at
/// once: the monitor, the init's parent, has reaped it and dropped the
/// namespaces it kept, so no pid (reused or not) is ever looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_after_the_init_exited_is_refused_cleanly() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "gone").await;
    // A sibling keeps the pod's pid namespace busy, so the dead init's pid
    // number can be handed out again while the test runs.
    let sibling = create(
        &d,
        &pod,
        container_config("busy", &busybox, &["sleep", "600"]),
    )
    .await
    .unwrap();
    start(&d, &sibling).await;
    let id = create(
        &d,
        &pod,
        container_config("short", &busybox, &["sleep", "1"]),
    )
    .await
    .unwrap();
    start(&d, &id).await;
    wait_exited(&d, &id).await;
    // Churn pids on the host so the old number is likely reused.
    for _ in 0..50 {
        let _ = std::process::Command::new("true").status();
    }
    for _ in 0..3 {
        let err = try_exec(&d, &id, &["true"])
            .await
            .expect_err("exec into an exited container");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
        assert!(err.message().contains("not running"), "{err}");
    }
    // The sibling is unaffected.
    assert_eq!(exec(&d, &sibling, &["true"]).await.exit_code, 0);
    stop_and_remove_pod(&d, &pod).await;
}

/// CVE-2024-21626 class: the container swaps its working directory for a
/// symlink to /proc/self/fd/N (or to another process's cwd); an exec must
/// fail or land inside the container, never in a directory of the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_directory_swapped_for_a_magic_link_stays_inside() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_policies(&[("30-force-dmz.yaml", FORCE_DMZ)], &[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "cwd").await;
    let check = "pwd; [ \"$(stat -c %d:%i .)\" = \"$(stat -c %d:%i \"$(pwd)\")\" ] && echo inside";
    for name in ["direct-cwd", "dmz-cwd"] {
        let mut c = container_config(name, &busybox, &["sleep", "600"]);
        // An exec runs in the container's working directory (CRI ExecSync
        // has none of its own).
        c.working_dir = "/tmp".into();
        let id = create(&d, &pod, c).await.unwrap();
        start(&d, &id).await;
        let pid = verbose_info(&d, &id).await["pid"].as_i64().unwrap();
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        std::fs::create_dir_all(root.join("tmp.real")).unwrap();
        let swap = |target: &str| {
            // The container controls its rootfs: its (empty) /tmp becomes
            // a symlink.
            let w = root.join("tmp");
            let _ = std::fs::remove_dir(&w);
            let _ = std::fs::remove_file(&w);
            std::os::unix::fs::symlink(target, &w).unwrap();
        };
        // A harmless symlink still works.
        swap("/tmp.real");
        let out = exec(&d, &id, &["sh", "-c", check]).await;
        assert_eq!(text(&out.stdout), "/tmp.real\ninside", "{name}: {out:?}");
        let mut targets: Vec<String> = (3..=40).map(|n| format!("/proc/self/fd/{n}")).collect();
        targets.extend(
            [
                "/proc/self/cwd",
                "/proc/1/cwd",
                "/proc/self/root/..",
                "/proc/thread-self/fd/3",
            ]
            .map(String::from),
        );
        let mut refused = 0;
        for target in &targets {
            swap(target);
            match try_exec(&d, &id, &["sh", "-c", check]).await {
                Ok(out) if out.exit_code == 0 => {
                    let s = text(&out.stdout);
                    assert!(
                        s.ends_with("inside") && !s.contains("unreachable"),
                        "{name}: cwd via {target} left the container: {s}"
                    );
                }
                Ok(out) => {
                    refused += 1;
                    assert!(!text(&out.stdout).ends_with("inside"), "{out:?}");
                }
                Err(e) => {
                    refused += 1;
                    assert!(
                        e.message().contains("working directory"),
                        "{name} via {target}: {e}"
                    );
                }
            }
        }
        // Every /proc/self/fd/N above 2 names nothing in the exec child.
        assert!(refused >= 38, "{name}: only {refused} refused");
    }
    stop_and_remove_pod(&d, &pod).await;
}
