//! Helpers shared by the privileged runtime tests (`runtime_*.rs`): gating,
//! image unpacking, hand-written OCI configs, and a cleanup guard.
#![allow(dead_code)]

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capcri::host::{pinned_namespace_path, unpin_namespaces};
use capcri::monitor_api::{ExecSpec, NamespaceKind};

/// The OCI layout `tests/images/build.py --out` wrote; hack/test.sh sets it.
pub fn oci_layout() -> String {
    std::env::var("CAPCRI_TEST_OCI_LAYOUT").unwrap_or_else(|_| "/var/tmp/testimages-oci".into())
}

/// The one gate (`tests/support`): root and CAPCRI_PRIVILEGED_TESTS.
pub fn privileged() -> bool {
    support::privileged(&format!("umoci and the OCI layout {}", oci_layout()))
}

/// Undoes everything the test may have left behind, also when it panics.
pub struct Cleanup {
    pub base: PathBuf,
    pub cgroup_name: String,
    pub monitor_pid: Option<i32>,
}

pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path().join(name);
        if p.exists() {
            out.push(p);
        }
    }
    out
}

pub fn mounts_under(base: &Path) -> Vec<String> {
    let base = base.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&base))
        .collect()
}

pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
            // SAFETY: kill(2) of a pid found in the test's own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.monitor_pid
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            // SAFETY: kill(2) of the monitor this test spawned.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for dir in cgroup_dirs(&self.cgroup_name) {
            remove_cgroup_tree(&dir);
        }
        let _ = unpin_namespaces(&self.base.join("pod"));
        let mut mounts = mounts_under(&self.base);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

pub fn unpack(image: &str, dir: &Path) {
    let status = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:{image}", oci_layout())])
        .arg(dir)
        .status()
        .expect("umoci runs");
    assert!(status.success(), "umoci unpack of {image} failed");
}

/// The capabilities of the monitor test's containers (Docker's defaults).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub fn write_config(bundle: &Path, pod_dir: &Path, cgroups_path: &str, args: &[&str], uid: u32) {
    write_config_with(
        bundle,
        pod_dir,
        cgroups_path,
        args,
        uid,
        &DEFAULT_CAPS,
        None,
    );
}

/// A config.json with explicit capability sets (bounding, effective and
/// permitted all `caps`, nothing inheritable or ambient, as CRI runtimes
/// do) and `noNewPrivileges` (None leaves the field out: an explicit false
/// plus seccomp breaks libcontainer, see docs/DESIGN.md).
pub fn write_config_with(
    bundle: &Path,
    pod_dir: &Path,
    cgroups_path: &str,
    args: &[&str],
    uid: u32,
    caps: &[&str],
    no_new_privileges: Option<bool>,
) {
    let ns = |kind| pinned_namespace_path(pod_dir, kind).display().to_string();
    let mut config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": uid },
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps }
        },
        "root": { "path": "rootfs", "readonly": false },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "namespaces": [
                { "type": "pid" },
                { "type": "mount" },
                { "type": "network", "path": ns(NamespaceKind::Net) },
                { "type": "ipc", "path": ns(NamespaceKind::Ipc) },
                { "type": "uts", "path": ns(NamespaceKind::Uts) }
            ]
        }
    });
    if let Some(nnp) = no_new_privileges {
        config["process"]["noNewPrivileges"] = serde_json::Value::Bool(nnp);
    }
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
}

pub fn exec_spec(args: &[&str], uid: u32, timeout: Option<Duration>) -> ExecSpec {
    ExecSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        cwd: None,
        uid,
        gid: uid,
        additional_gids: vec![],
        timeout,
    }
}

pub async fn wait_for_log(path: &Path, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
