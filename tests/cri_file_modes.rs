//! File modes of capcri's state and data trees (issue 12 item 4) and the
//! fresh-node start (issue 13 item 1).

mod common;

use common::{TestDaemon, container_config, pull};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// What a walk found that a local user other than root could abuse.
#[derive(Default, Debug)]
struct Findings {
    /// Files holding the secret that group or others may read.
    readable_secrets: Vec<String>,
    /// Files holding the secret (so the check is not vacuous).
    secret_files: Vec<String>,
    /// Group- or world-writable entries others can reach.
    writable: Vec<String>,
    /// setuid/setgid files others can reach (CVE-2021-41091).
    setid: Vec<String>,
}

/// Walks `dir` without following symlinks or crossing into other
/// filesystems (container rootfs overlays, tmpfs, nsfs pins: their
/// mount points are checked for reachability, their content is the
/// container's). `reachable`: every directory above lets others through.
fn walk(dir: &Path, dev: u64, reachable: bool, secret: &[u8], out: &mut Findings) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = m.mode() & 0o7777;
        let shown = format!("{} ({mode:o})", p.display());
        if reachable && mode & 0o022 != 0 && !(m.gid() == 0 && mode & 0o002 == 0) {
            out.writable.push(shown.clone());
        }
        if m.is_file() {
            if reachable && mode & 0o6000 != 0 {
                out.setid.push(shown.clone());
            }
            if m.dev() == dev
                && m.len() < (16 << 20)
                && let Ok(data) = std::fs::read(&p)
                && data.windows(secret.len()).any(|w| w == secret)
            {
                out.secret_files.push(shown.clone());
                if mode & 0o044 != 0 {
                    out.readable_secrets.push(shown);
                }
            }
        } else if m.is_dir() && m.dev() == dev {
            let through = reachable && mode & 0o001 != 0;
            walk(&p, dev, through, secret, out);
        }
    }
}

/// A realistic workload (pull, pod, container with a secret in its env,
/// exec, stop), then both trees are walked: no file holding the secret is
/// readable by group or others, nothing others can reach is group- or
/// world-writable, and no setuid binary of the image is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_data_trees_keep_a_containers_env_private() {
    let registry = require_privileged!();
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    let d = TestDaemon::start(&[]);
    pull(&d, &busybox).await;
    let pod = common::run_pod(&d, "modes").await;
    let secret = format!("s3cr3t-{}", std::process::id());
    let mut cfg = container_config("c", &busybox, &["sleep", "3600"]);
    cfg.envs = vec![cri::KeyValue {
        key: "SECRET".into(),
        value: secret.clone(),
    }];
    cfg.annotations = HashMap::from([("note".into(), secret.clone())]);
    let id = common::create(&d, &pod, cfg).await.expect("create");
    common::start(&d, &id).await;
    let r = common::exec(&d, &id, &["sh", "-c", "echo $SECRET"]).await;
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), secret);

    let state = d.state_dir();
    let data = d.data_dir();
    assert_eq!(mode(&state), 0o711, "state dir: traverse only");
    assert_eq!(mode(&data), 0o700, "data dir: root only (CVE-2021-41091)");
    let mut f = Findings::default();
    for root in [&state, &data] {
        let dev = std::fs::metadata(root).unwrap().dev();
        // The trees' own parent (the test's temp dir) is 0700; judge the
        // trees as if it were /run or /var/lib (0755).
        let reachable = mode(root) & 0o001 != 0;
        walk(root, dev, reachable, secret.as_bytes(), &mut f);
    }
    assert!(
        f.secret_files.iter().any(|p| p.contains("config.json")),
        "the walk must see the bundle's config.json: {f:?}"
    );
    assert!(f.readable_secrets.is_empty(), "{:#?}", f.readable_secrets);
    assert!(f.writable.is_empty(), "{:#?}", f.writable);
    assert!(f.setid.is_empty(), "{:#?}", f.setid);

    // Stopped, the records stay: walk again.
    d.runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .expect("stop");
    let mut f = Findings::default();
    for root in [&state, &data] {
        let dev = std::fs::metadata(root).unwrap().dev();
        walk(
            root,
            dev,
            mode(root) & 0o001 != 0,
            secret.as_bytes(),
            &mut f,
        );
    }
    assert!(!f.secret_files.is_empty());
    assert!(f.readable_secrets.is_empty(), "{:#?}", f.readable_secrets);
    assert!(f.writable.is_empty(), "{:#?}", f.writable);
    common::stop_and_remove_pod(&d, &pod).await;
}

/// `capcri serve` on a fresh node: state, data and socket directories whose
/// parents do not exist are created (parents 0711), with their modes
/// whatever the umask (the daemon is started with umask 000), the daemon
/// says what it created, and it serves. A second start over the same tree
/// with loosened modes tightens them and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_creates_its_directories_on_a_fresh_node() {
    let _registry = require_privileged!();
    let tmp = tempfile::Builder::new()
        .prefix("cf")
        .tempdir_in("/tmp")
        .unwrap();
    let t = tmp.path();
    // Short: pod monitor sockets under the state dir must fit sun_path.
    let state = t.join("a/b/r");
    let data = t.join("c/d/lib");
    let socket = t.join("e/f/capcri.sock");
    let cgroup_parent = format!("/capcri-test-{}", t.file_name().unwrap().to_string_lossy());
    let start = |log: &Path| {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(log).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_capcri"));
        cmd.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--admin-socket")
            .arg(t.join("e/f/admin.sock"))
            .arg("--state-dir")
            .arg(&state)
            .arg("--data-dir")
            .arg(&data)
            .arg("--cgroup-driver")
            .arg("cgroupfs")
            .arg("--cgroup-parent")
            .arg(&cgroup_parent)
            .arg("--policy-dir")
            .arg(t.join("policies"))
            .arg("--cni-conf-dir")
            .arg(t.join("cni"))
            .arg("--log-level")
            .arg("info")
            .stdin(std::process::Stdio::null())
            .stderr(log);
        // SAFETY: umask is async-signal-safe; a loose umask must not matter.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        cmd.spawn().expect("spawn capcri serve")
    };
    let stop = |mut child: std::process::Child| {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    };
    let wait_serving = |child: &mut std::process::Child, log: &Path| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "capcri serve exited: {status}\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "no socket in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let log1 = t.join("serve1.log");
    let mut child = start(&log1);
    wait_serving(&mut child, &log1);
    let mut rt = k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(
        common::connect_unix(&socket).await,
    );
    rt.version(cri::VersionRequest::default())
        .await
        .expect("serves");
    stop(child);
    let expect: Vec<(PathBuf, u32)> = vec![
        (t.join("a"), 0o711),
        (t.join("a/b"), 0o711),
        (state.clone(), 0o711),
        (state.join("pods"), 0o711),
        (state.join("containers"), 0o711),
        (state.join("runtime"), 0o700),
        (t.join("c"), 0o711),
        (t.join("c/d"), 0o711),
        (data.clone(), 0o700),
        (data.join("images"), 0o700),
        (data.join("containers"), 0o700),
        (t.join("e/f"), 0o700),
    ];
    for (p, m) in &expect {
        assert_eq!(mode(p), *m, "{}", p.display());
    }
    let log = std::fs::read_to_string(&log1).unwrap();
    for p in [&state, &data, &t.join("e/f"), &t.join("a")] {
        assert!(
            log.lines()
                .any(|l| l.contains("created directory") && l.contains(&*p.to_string_lossy())),
            "the daemon says it created {}:\n{log}",
            p.display()
        );
    }
    // Files under the state tree are 0600 even though the umask was 000.
    let lock = socket.with_extension("lock");
    assert_eq!(mode(&lock), 0o600);

    // Loosened by hand (or by an older capcri): tightened at the next start.
    for p in [&state, &data] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let log2 = t.join("serve2.log");
    let mut child = start(&log2);
    wait_serving(&mut child, &log2);
    stop(child);
    assert_eq!(mode(&state), 0o711);
    assert_eq!(mode(&data), 0o700);
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(
        log.contains("directory mode changed") && log.contains(&*data.to_string_lossy()),
        "{log}"
    );
    let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/unified{cgroup_parent}"));
}
