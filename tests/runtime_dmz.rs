//! Privileged tests of the two exec paths (`direct`, `dmz`) with real
//! containers in a real pod monitor. Skip unless CAPCRI_PRIVILEGED_TESTS is
//! set (needs root, umoci and the test OCI layout).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capcri::capabilities::kernel::{
    CapSet, Capability, ExecIdentity, FileCaps, ThreadCaps, parse_file_caps, predict_execve,
};
use capcri::monitor_api::{
    ContainerRuntimeState, CreateContainer, ExecPath, MonitorClient, MonitorSpawn, PodNamespaceSet,
    RuntimeError, RuntimeStatus, spawn_monitor,
};

mod runtime_support;
use runtime_support::*;

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const FILECAPS: &str = "cri-lab/filecaps:latest";
const FILECAPS_NETADMIN: &str = "cri-lab/filecaps-netadmin:latest";

struct TestPod {
    client: MonitorClient,
    base: PathBuf,
    pod_dir: PathBuf,
    uniq: String,
    monitor_pid: i32,
    // Last: dropped after everything above.
    _cleanup: Cleanup,
}

impl TestPod {
    async fn start(tag: &str) -> TestPod {
        let uniq = format!(
            "capcri-{tag}-{}-{}",
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
        let pod_dir = base.join("pod");
        let client = spawn_monitor(MonitorSpawn {
            pod_id: uniq.clone(),
            pod_dir: pod_dir.clone(),
            runtime_root: base.join("runtime"),
            new_namespaces: PodNamespaceSet {
                net: true,
                ipc: true,
                uts: true,
                pid: false,
            },
            hostname: Some("dmz-test".into()),
            user_namespace: None,
            init_cgroup: None,
            program: Some(PathBuf::from(env!("CARGO_BIN_EXE_capcri"))),
        })
        .await
        .expect("monitor starts");
        let monitor_pid = client.pid().expect("monitor pid") as i32;
        cleanup.monitor_pid = Some(monitor_pid);
        TestPod {
            client,
            base,
            pod_dir,
            uniq,
            monitor_pid,
            _cleanup: cleanup,
        }
    }

    /// Unpacks `image` into a fresh bundle and writes its config.json.
    fn bundle(
        &self,
        name: &str,
        image: &str,
        args: &[&str],
        uid: u32,
        no_new_privileges: Option<bool>,
    ) -> PathBuf {
        let bundle = self.base.join(name);
        unpack(image, &bundle);
        self.config(&bundle, name, args, uid, no_new_privileges);
        bundle
    }

    fn config(
        &self,
        bundle: &Path,
        name: &str,
        args: &[&str],
        uid: u32,
        no_new_privileges: Option<bool>,
    ) {
        write_config_with(
            bundle,
            &self.pod_dir,
            &format!("/{}/{name}", self.uniq),
            args,
            uid,
            &DEFAULT_CAPS,
            no_new_privileges,
        );
    }

    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        exec_path: ExecPath,
    ) -> Result<u32, RuntimeError> {
        self.client
            .create(CreateContainer {
                id: id.into(),
                bundle: bundle.to_path_buf(),
                log_path: Some(self.log(id)),
                stdin: false,
                stdin_once: false,
                tty: false,
                exec_path,
                build_after_answer: false,
            })
            .await
    }

    fn log(&self, id: &str) -> PathBuf {
        self.base.join("logs").join(format!("{id}.log"))
    }

    async fn wait_exit(&self, id: &str) -> ContainerRuntimeState {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.client.state(id).await.expect("state");
            if st.status == RuntimeStatus::Exited || Instant::now() > deadline {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn default_caps() -> CapSet {
    CapSet::parse_names(DEFAULT_CAPS).unwrap()
}

/// The five sets of a live process, from /proc/<pid>/status.
fn proc_caps(pid: u32) -> ThreadCaps {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing in status of {pid}"));
        let hex = line.split_whitespace().nth(1).unwrap();
        CapSet::from_bits_truncate(u64::from_str_radix(hex, 16).unwrap())
    };
    ThreadCaps {
        bounding: field("CapBnd:"),
        effective: field("CapEff:"),
        permitted: field("CapPrm:"),
        inheritable: field("CapInh:"),
        ambient: field("CapAmb:"),
    }
}

/// The file capabilities of a file in an unpacked rootfs, as the kernel
/// will see them (and proof that umoci kept the xattr).
fn file_caps(path: &Path) -> FileCaps {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: getxattr into a stack buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(
        n > 0,
        "{} has no security.capability: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    parse_file_caps(&buf[..n as usize]).unwrap()
}

/// The sealed trampoline memfd of the monitor, found among its fds.
fn trampoline_fd(monitor_pid: i32) -> Option<PathBuf> {
    std::fs::read_dir(format!("/proc/{monitor_pid}/fd"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read_link(p)
                .map(|l| l.display().to_string().starts_with("/memfd:capcri-dmz"))
                .unwrap_or(false)
        })
}

/// Waits (up to 10 s) until `pid` is blocked in nanosleep or
/// clock_nanosleep, i.e. `sleep` has started and its loader is done.
fn wait_until_sleeping(pid: u32) {
    #[cfg(target_arch = "x86_64")]
    const SLEEPS: [&str; 2] = ["35", "230"];
    #[cfg(target_arch = "aarch64")]
    const SLEEPS: [&str; 2] = ["101", "115"];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let nr = syscall.split_whitespace().next().unwrap_or("");
        if SLEEPS.contains(&nr) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "container {pid} never reached its sleep: /proc/{pid}/syscall = {syscall:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn dmz_runs_the_users_program_through_a_sealed_trampoline() {
    if !privileged() {
        return;
    }
    let pod = TestPod::start("dmz").await;
    assert!(
        trampoline_fd(pod.monitor_pid).is_none(),
        "the memfd is made at the first dmz container, not before"
    );
    let bundle = pod.bundle("d1", BUSYBOX, &["sleep", "1000"], 0, None);
    let pid = pod
        .create("d1", &bundle, ExecPath::Dmz)
        .await
        .expect("create d1");
    pod.client.start("d1").await.expect("start d1");
    let st = pod.client.state("d1").await.unwrap();
    assert_eq!(st.status, RuntimeStatus::Running);

    // After both execs, pid 1 of the container is the user's binary (the
    // same inode as in the rootfs), with the argv[0] execvp would give it.
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).unwrap();
    let sleep = std::fs::metadata(bundle.join("rootfs/bin/sleep")).unwrap();
    assert_eq!((exe.dev(), exe.ino()), (sleep.dev(), sleep.ino()));
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(!link.display().to_string().contains("memfd"), "{link:?}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sleep\x001000\x00");
    // Neither the memfd nor the status pipe leaked into the container.
    // Checked once the process sleeps: the image's busybox is dynamically
    // linked, and right after the execve its loader briefly holds
    // ld.so.cache or libc.so.6 open as fd 3 (a CI run once caught it there).
    wait_until_sleeping(pid);
    let fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    assert!(
        fds.iter()
            .all(|(f, _)| ["0", "1", "2"].contains(&f.as_str())),
        "{fds:?}"
    );

    // The trampoline memfd held by the monitor is sealed for good.
    let memfd = trampoline_fd(pod.monitor_pid).expect("the monitor holds the trampoline memfd");
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&memfd)
    {
        Ok(f) => {
            use std::io::Write;
            use std::os::fd::AsRawFd;
            // SAFETY: fcntl(F_GET_SEALS) on an fd we own.
            let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
            let all =
                libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
            assert_eq!(seals & all, all, "seals are {seals:#x}");
            let err = (&f)
                .write_all(b"\x7fELF")
                .expect_err("write to a sealed memfd");
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
            let err = f.set_len(0).expect_err("truncate of a sealed memfd");
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
            // SAFETY: fcntl(F_ADD_SEALS) on an fd we own.
            let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, 0) };
            assert_eq!(r, -1, "F_SEAL_SEAL must refuse any further seal change");
        }
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ETXTBSY)),
            "{e}"
        ),
    }

    // The dmz path reports a failing second execve like the direct path
    // reports its only one: EPERM from file capabilities (cap_net_admin)
    // outside the bounding set. The trampoline itself starts (no file
    // caps), so the reason comes from the trampoline through the status
    // pipe, and the exit code is the shell's 126.
    let bundle = pod.bundle("d2", FILECAPS_NETADMIN, &["ip", "link"], 1000, None);
    pod.create("d2", &bundle, ExecPath::Dmz)
        .await
        .expect("create d2");
    let err = pod
        .client
        .start("d2")
        .await
        .expect_err("the second execve fails with EPERM");
    eprintln!("dmz start of an EPERM binary: {err}");
    assert!(
        err.to_string().contains("Operation not permitted")
            && err.to_string().contains("/usr/local/bin/ip"),
        "{err}"
    );
    let st = pod.wait_exit("d2").await;
    assert_eq!(st.status, RuntimeStatus::Exited);
    assert_eq!(st.exit_code, Some(126));
    assert_eq!(st.reason.as_deref(), Some("StartError"));
    assert!(st.message.unwrap_or_default().contains("EPERM"));
    let log = wait_for_log(&pod.log("d2"), &["capcri-dmz: exec /usr/local/bin/ip"]).await;
    assert!(
        log.contains(" stderr F capcri-dmz: exec /usr/local/bin/ip failed: EPERM"),
        "{log}"
    );

    // A second dmz container reuses the same memfd.
    let bundle = pod.bundle("d3", BUSYBOX, &["true"], 0, None);
    pod.create("d3", &bundle, ExecPath::Dmz)
        .await
        .expect("create d3");
    pod.client.start("d3").await.expect("start d3");
    assert_eq!(pod.wait_exit("d3").await.exit_code, Some(0));
    let memfds = std::fs::read_dir(format!("/proc/{}/fd", pod.monitor_pid))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|l| l.display().to_string().starts_with("/memfd:capcri-dmz"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(memfds, 1);

    // Under seccomp: a profile that allows execveat (capcri's RuntimeDefault
    // denies neither execve nor execveat) runs the dmz path; one that denies
    // execveat stops it at the trampoline, and the error says what to do.
    let with_seccomp = |bundle: &Path, denied: &str| {
        let path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": [denied], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }]
        });
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    };
    let bundle = pod.bundle("d4", BUSYBOX, &["true"], 0, None);
    with_seccomp(&bundle, "keyctl");
    pod.create("d4", &bundle, ExecPath::Dmz)
        .await
        .expect("create d4");
    pod.client
        .start("d4")
        .await
        .expect("start d4 under seccomp");
    assert_eq!(pod.wait_exit("d4").await.exit_code, Some(0));
    let bundle = pod.bundle("d5", BUSYBOX, &["true"], 0, None);
    with_seccomp(&bundle, "execveat");
    pod.create("d5", &bundle, ExecPath::Dmz)
        .await
        .expect("create d5");
    let err = pod
        .client
        .start("d5")
        .await
        .expect_err("a profile denying execveat stops the dmz path");
    eprintln!("dmz under a profile denying execveat: {err}");
    assert!(
        err.to_string().contains("execveat") && err.to_string().contains("direct exec path"),
        "{err}"
    );
    assert_eq!(
        pod.wait_exit("d5").await.reason.as_deref(),
        Some("StartError")
    );

    pod.client.shutdown().await.expect("shutdown");
}

/// runc-dmz's regression ("Inheritable capabilities are dropped when they
/// previously weren't"), with ping instead of CoreDNS: a non-root container
/// under no_new_privs whose program gets CAP_NET_RAW from file capabilities
/// works on the direct path and fails on the dmz path, exactly as
/// `caps::predict_execve` applied once or twice says.
#[tokio::test]
async fn dmz_loses_file_capabilities_under_no_new_privs() {
    if !privileged() {
        return;
    }
    let pod = TestPod::start("nnp").await;
    let uid = 1000;

    // Direct: long enough (3 pings, ~2 s) to read the live sets.
    let direct = pod.bundle(
        "p-direct",
        FILECAPS,
        &["ping", "-c", "3", "127.0.0.1"],
        uid,
        Some(true),
    );
    let dmz = pod.bundle(
        "p-dmz",
        FILECAPS,
        &["ping", "-c", "3", "127.0.0.1"],
        uid,
        Some(true),
    );
    let ping_caps = file_caps(&direct.join("rootfs/usr/local/bin/ping"));
    assert!(ping_caps.permitted.contains(Capability::NetRaw) && ping_caps.effective);

    // The prediction: the init's sets after libcontainer (all of the
    // default set in bounding/effective/permitted, uid 1000, NNP).
    let before = ThreadCaps::runtime_default(default_caps());
    let who = ExecIdentity::uid(uid);
    let once = predict_execve(&before, Some(&ping_caps), who, true).unwrap();
    let trampoline = predict_execve(&before, None, who, true).unwrap();
    let twice = predict_execve(&trampoline, Some(&ping_caps), who, true).unwrap();
    assert!(once.effective.contains(Capability::NetRaw));
    assert!(trampoline.permitted.is_empty(), "{trampoline:?}");
    assert!(!twice.effective.contains(Capability::NetRaw), "{twice:?}");
    assert!(twice.permitted.is_empty(), "{twice:?}");

    let pid = pod
        .create("p-direct", &direct, ExecPath::Direct)
        .await
        .expect("create p-direct");
    pod.client.start("p-direct").await.expect("start p-direct");
    let live = proc_caps(pid);
    assert_eq!(live, once, "direct: the live sets are the prediction");
    let st = pod.wait_exit("p-direct").await;
    let log = std::fs::read_to_string(pod.log("p-direct")).unwrap_or_default();
    assert_eq!(st.exit_code, Some(0), "direct ping failed: {log}");
    assert!(log.contains("3 packets received"), "{log}");

    pod.create("p-dmz", &dmz, ExecPath::Dmz)
        .await
        .expect("create p-dmz");
    // Both execs succeed: the kernel does not refuse the file caps under
    // no_new_privs, it silently grants nothing.
    pod.client.start("p-dmz").await.expect("start p-dmz");
    let st = pod.wait_exit("p-dmz").await;
    let log = wait_for_log(&pod.log("p-dmz"), &["permission denied"]).await;
    eprintln!("dmz ping: {st:?}\n{log}");
    assert_eq!(st.status, RuntimeStatus::Exited);
    assert_ne!(st.exit_code, Some(0), "dmz ping must fail: {log}");
    assert_eq!(st.reason.as_deref(), Some("Error"));
    assert!(log.contains("permission denied"), "{log}");

    // The first step of the chain on the real kernel: a dmz container as
    // uid 1000 with NNP whose program has no file caps keeps nothing.
    let bundle = pod.bundle("s-dmz", BUSYBOX, &["sleep", "1000"], uid, Some(true));
    let pid = pod
        .create("s-dmz", &bundle, ExecPath::Dmz)
        .await
        .expect("create s-dmz");
    pod.client.start("s-dmz").await.expect("start s-dmz");
    let chained = predict_execve(&trampoline, None, who, true).unwrap();
    assert_eq!(proc_caps(pid), chained);

    pod.client.shutdown().await.expect("shutdown");
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Start-time cost of each exec path: create + start until the user's
/// program runs (start returns after the final execve's verdict), median of
/// 20 runs each, interleaved. Prints the figures; asserts no timing.
/// `CAPCRI_PRIVILEGED_TESTS=1 cargo test --test runtime_dmz -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn exec_path_start_cost() {
    if !privileged() {
        return;
    }
    const RUNS: usize = 20;
    let pod = TestPod::start("cost").await;
    let bundle = pod.bundle("b", BUSYBOX, &["sleep", "1000"], 0, None);
    // Per path: create+start, and start alone (where the execs happen).
    let mut times: [(ExecPath, Vec<Duration>, Vec<Duration>); 2] = [
        (ExecPath::Direct, Vec::new(), Vec::new()),
        (ExecPath::Dmz, Vec::new(), Vec::new()),
    ];
    // One warm-up of each (page cache, first memfd).
    for i in 0..=RUNS {
        for (path, total, start) in times.iter_mut() {
            let id = format!("{path}-{i}");
            pod.config(&bundle, &id, &["sleep", "1000"], 0, None);
            let t = Instant::now();
            pod.create(&id, &bundle, *path).await.expect("create");
            let s = Instant::now();
            pod.client.start(&id).await.expect("start");
            if i > 0 {
                total.push(t.elapsed());
                start.push(s.elapsed());
            }
            pod.client.delete(&id).await.expect("delete");
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (path, total, start) in times.iter_mut() {
        for (what, samples) in [("create+start", total), ("start", start)] {
            let min = *samples.iter().min().unwrap();
            let max = *samples.iter().max().unwrap();
            let med = median(samples);
            eprintln!(
                "exec path {path}: {what} median {:.2} ms (min {:.2}, max {:.2}, n={})",
                ms(med),
                ms(min),
                ms(max),
                samples.len()
            );
        }
    }
    pod.client.shutdown().await.expect("shutdown");
}
