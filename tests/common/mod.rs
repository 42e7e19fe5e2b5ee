//! Test harness: a real `capcri serve` on a temporary socket, driven through
//! the CRI with a `k8s-cri` client, and leftover checks.
#![allow(dead_code)]

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// Skips (returns from) a test that needs root, real containers and the
/// local registry unless the environment says they are there.
#[macro_export]
macro_rules! require_privileged {
    () => {
        match $crate::common::privileged_registry() {
            Some(r) => r,
            None => {
                eprintln!(
                    "skipped: set CAPCRI_PRIVILEGED_TESTS=1 and CAPCRI_TEST_REGISTRY=127.0.0.1:5000 (as root, registry running) to run"
                );
                return;
            }
        }
    };
}

pub fn privileged_registry() -> Option<String> {
    if std::env::var_os("CAPCRI_PRIVILEGED_TESTS").is_none() || !nix_is_root() {
        return None;
    }
    std::env::var("CAPCRI_TEST_REGISTRY")
        .ok()
        .filter(|r| !r.is_empty())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    child: Option<Child>,
}

impl TestDaemon {
    pub fn start(extra_args: &[&str]) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("cc")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let socket = dir.path().join("capcri.sock");
        let cgroup_parent = format!(
            "/capcri-test-{}",
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let mut d = TestDaemon {
            socket,
            cgroup_parent,
            child: None,
            dir,
        };
        d.spawn(extra_args);
        d
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("lib")
    }

    pub fn spawn(&mut self, extra_args: &[&str]) {
        let child = Command::new(env!("CARGO_BIN_EXE_capcri"))
            .arg("serve")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--log-level")
            .arg("capcri=debug,info")
            .args(extra_args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn capcri serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "capcri serve did not create its socket in 20s"
            );
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("capcri serve exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn channel(&self) -> Channel {
        let path = self.socket.clone();
        Endpoint::try_from("http://[::]:50051")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .expect("connect to capcri")
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        // Whatever a failed test left behind: monitors, mounts, cgroups.
        kill_processes_mentioning(self.dir.path());
        for m in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

/// Mount points below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Pids whose command line mentions `dir` (the monitors get the pod dir).
pub fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            out.push(pid);
        }
    }
    out
}

fn kill_processes_mentioning(dir: &Path) {
    for pid in processes_mentioning(dir) {
        // SAFETY: kill(2) of a test leftover.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// cgroup directories of `parent` left in any hierarchy.
pub fn cgroups_left(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in capcri::sandbox::cgroups::hierarchies() {
        let d = h.join(parent.trim_start_matches('/'));
        if d.exists() {
            for e in walk_dirs(&d) {
                out.push(e);
            }
        }
    }
    out
}

fn walk_dirs(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk_dirs(&e.path()));
            out.push(e.path());
        }
    }
    out
}

fn remove_cgroup_tree(parent: &str) {
    for h in capcri::sandbox::cgroups::hierarchies() {
        let d = h.join(parent.trim_start_matches('/'));
        for sub in walk_dirs(&d) {
            let _ = std::fs::remove_dir(sub);
        }
        let _ = std::fs::remove_dir(&d);
    }
}

/// Polls `f` until it returns Some or the deadline passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
