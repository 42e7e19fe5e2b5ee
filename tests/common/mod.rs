//! Test harness: a real `capcri serve` on a temporary socket, driven through
//! the CRI with a `k8s-cri` client, and leftover checks.
#![allow(dead_code)]

pub mod crafted;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

#[path = "../support/mod.rs"]
pub mod support;

/// Skips (returns from) a test that needs root, real containers and the
/// local registry unless the environment says they are there (the one
/// gate, `tests/support`, says which is missing); evaluates to the
/// registry.
#[macro_export]
macro_rules! require_privileged {
    () => {
        match $crate::common::support::privileged_registry() {
            Some(r) => r,
            None => return,
        }
    };
}

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    child: Option<Child>,
    /// Spawn the daemon as a node agent in a container runs: inside new
    /// PID (with its own /proc), mount, network and IPC namespaces, by
    /// `unshare --pid --fork --mount-proc --mount --net --ipc`. `child` is
    /// then the unshare process and the daemon is its only child.
    nested: bool,
}

impl TestDaemon {
    pub fn start(extra_args: &[&str]) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("cc")
            .tempdir_in("/tmp")
            .expect("tempdir");
        Self::start_in(dir, extra_args)
    }

    fn start_in(dir: tempfile::TempDir, extra_args: &[&str]) -> TestDaemon {
        let socket = dir.path().join("capcri.sock");
        let cgroup_parent = format!(
            "/capcri-test-{}",
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let mut d = TestDaemon {
            socket,
            cgroup_parent,
            child: None,
            nested: false,
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
    /// Empty unless a test writes a network config there: loopback-only pods.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("cni")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Absent unless a test writes policies there: the built-in defaults.
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// A daemon whose temp dir `prepare` fills first (e.g. a CNI config in
    /// `<dir>/cni`).
    pub fn start_in_with(prepare: impl FnOnce(&Path)) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("cc")
            .tempdir_in("/tmp")
            .expect("tempdir");
        prepare(dir.path());
        Self::start_in(dir, &[])
    }

    /// A daemon whose policy directory holds the repository's recommended
    /// set (policy/*.yaml) before it starts.
    pub fn start_with_recommended_policies(extra_args: &[&str]) -> TestDaemon {
        Self::start_with_policies(&[], extra_args)
    }

    /// The recommended set plus `extra` (file name, YAML) policies.
    pub fn start_with_policies(extra: &[(&str, &str)], extra_args: &[&str]) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("cc")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).expect("policy dir");
        let repo_policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy");
        for e in std::fs::read_dir(&repo_policies)
            .expect("policy/ in the repo")
            .flatten()
        {
            std::fs::copy(e.path(), policies.join(e.file_name())).expect("copy policy");
        }
        for (name, yaml) in extra {
            std::fs::write(policies.join(name), yaml).expect("write policy");
        }
        Self::start_in(dir, extra_args)
    }

    pub fn spawn(&mut self, extra_args: &[&str]) {
        self.spawn_env(extra_args, &[]);
    }

    /// `spawn` with extra environment (e.g. `CAPCRI_CRASH_AT`).
    pub fn spawn_env(&mut self, extra_args: &[&str], env: &[(&str, &str)]) {
        // A daemon killed with -9 leaves its socket file; wait for the new one.
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = if self.nested {
            // --kill-child: if the test dies, so does the daemon (pid 1 of
            // its namespace, whose death ends every process in it).
            let mut c = Command::new("unshare");
            c.args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--mount",
                "--net",
                "--ipc",
                "--kill-child",
                "--",
                env!("CARGO_BIN_EXE_capcri"),
            ]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_capcri"))
        };
        cmd.envs(env.iter().copied())
            .arg("serve")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--data-dir")
            .arg(self.data_dir());
        // The harness's own cgroup tree, cleaned at drop, with the cgroupfs
        // driver (a systemd node would otherwise pick systemd); a test of
        // the systemd driver passes both flags itself.
        if !extra_args.contains(&"--cgroup-driver") {
            cmd.args(["--cgroup-driver", "cgroupfs"]);
        }
        if !extra_args.contains(&"--cgroup-parent") {
            cmd.arg("--cgroup-parent").arg(&self.cgroup_parent);
        }
        let child = cmd
            .arg("--admin-socket")
            .arg(self.admin_socket())
            .arg("--policy-dir")
            .arg(self.policy_dir())
            .arg("--cni-conf-dir")
            .arg(self.cni_conf_dir())
            .arg("--log-level")
            .arg("capcri=debug,info")
            .args(extra_args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn capcri serve");
        self.child = Some(child);
        // 60 s: the cgroup-v2 node (hack/vm) is an emulated machine, and
        // several daemons start at once there.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "capcri serve did not create its socket in 60s"
            );
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("capcri serve exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's pid (in the test's PID namespace).
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.as_ref()?.id();
        if self.nested {
            children_of(child).first().copied()
        } else {
            Some(child)
        }
    }

    /// Restart the daemon (same directories) inside its own PID, mount,
    /// network and IPC namespaces (see `nested`). Images it pulled before
    /// stay: the new network namespace cannot reach the test registry.
    pub fn respawn_nested(&mut self, extra_args: &[&str]) {
        self.terminate();
        self.nested = true;
        self.spawn(extra_args);
    }

    /// SIGTERM and wait; returns how long the daemon took to exit.
    pub fn terminate(&mut self) -> Duration {
        let start = Instant::now();
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) of our own child (or, nested, of the
            // daemon under unshare, which blocks SIGTERM itself).
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        start.elapsed()
    }

    /// Waits up to `timeout` for the daemon to exit on its own (a crash
    /// point); returns whether it did. The child is reaped either way.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Some(c) = self.child.as_mut() else {
            return true;
        };
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn channel(&self) -> Channel {
        connect_unix(&self.socket).await
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
        self.terminate();
        // Whatever a failed test left behind: monitors, mounts, cgroups.
        kill_processes_mentioning(self.dir.path());
        // A shared-PID pod's init has no command line to find it by (it
        // scrubs it); it is in the pod's cgroup.
        kill_processes_in_cgroups(&self.cgroup_parent);
        for m in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

/// Mount points below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    all_mounts_under(dir)
        .into_iter()
        .filter(|m| !m.contains(NETNS_POOL))
        .collect()
}

/// The daemon's pool of network namespaces made ahead of pods (a fixed
/// few, under the state dir): not a pod's or a container's, so
/// `mounts_under` leaves them out and tests bound them apart.
pub const NETNS_POOL: &str = "/netns-pool/";

pub fn netns_pool_mounts(dir: &Path) -> Vec<String> {
    all_mounts_under(dir)
        .into_iter()
        .filter(|m| m.contains(NETNS_POOL))
        .collect()
}

fn all_mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Pids whose parent is `pid`, from /proc/<pid>/stat (field 4).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // The command name (field 2) is in parentheses and may hold spaces.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
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

fn kill_processes_in_cgroups(parent: &str) {
    for h in capcri::util::cgroupfs::hierarchies() {
        let d = h.join(parent.trim_start_matches('/'));
        for dir in capcri::util::cgroupfs::subtree(&d) {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: kill(2) of a test leftover.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
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
    for h in capcri::util::cgroupfs::hierarchies() {
        let d = h.join(parent.trim_start_matches('/'));
        if d.exists() {
            // Its groups, not the parent itself.
            out.extend(capcri::util::cgroupfs::subtree(&d).into_iter().skip(1));
        }
    }
    out
}

/// Removes `parent`'s tree from every hierarchy, deepest first. A group
/// whose processes were just killed stays busy until they have exited:
/// each directory is tried again for a while (a single try left a
/// shared-PID pod's group behind about once per full run).
fn remove_cgroup_tree(parent: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for h in capcri::util::cgroupfs::hierarchies() {
        let d = h.join(parent.trim_start_matches('/'));
        let _ = capcri::util::cgroupfs::remove_tree(&d, deadline);
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

// CRI request builders shared by the tests.

use k8s_cri::v1 as cri;
use std::collections::HashMap;

pub fn pod_config(name: &str, log_dir: &std::path::Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".into(), name.into())]),
        annotations: HashMap::from([("note".into(), "kept exactly".into())]),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

pub fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("container".into(), name.into())]),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

pub async fn pull(d: &TestDaemon, image: &str) -> String {
    d.images()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull {image}: {e}"))
        .into_inner()
        .image_ref
}

pub async fn container_state(d: &TestDaemon, id: &str) -> cri::ContainerStatus {
    d.runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("container status")
        .into_inner()
        .status
        .expect("status present")
}

/// Every container the daemon lists (no filter).
pub async fn list_containers(d: &TestDaemon) -> Vec<cri::Container> {
    d.runtime()
        .await
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// The verbose ContainerStatus's `info["info"]`, parsed: the pid, the
/// capability decision and the rest of what `crictl inspect` shows.
pub async fn verbose_info(d: &TestDaemon, id: &str) -> serde_json::Value {
    let status = d
        .runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("verbose container status")
        .into_inner();
    serde_json::from_str(&status.info["info"]).expect("verbose info is JSON")
}

/// A pod named `name` logging under `<dir>/logs`.
pub async fn run_pod(d: &TestDaemon, name: &str) -> String {
    run_pod_with_config(d, pod_config(name, &d.dir.path().join("logs"))).await
}

/// RunPodSandbox with `config` as it is; the pod's id.
pub async fn run_pod_with_config(d: &TestDaemon, config: cri::PodSandboxConfig) -> String {
    d.runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id
}

/// `c` with the given PID namespace mode.
pub fn with_pid_mode(
    mut c: cri::ContainerConfig,
    mode: cri::NamespaceMode,
) -> cri::ContainerConfig {
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: mode as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// `p` with the given namespace options for the pod (the rest of its
/// sandbox security context left at the defaults).
pub fn with_pod_namespaces(
    mut p: cri::PodSandboxConfig,
    namespaces: cri::NamespaceOption,
) -> cri::PodSandboxConfig {
    p.linux
        .get_or_insert_with(Default::default)
        .security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespaces),
        ..Default::default()
    });
    p
}

/// A pod with a privileged sandbox: privileged containers need one.
pub async fn run_privileged_pod(d: &TestDaemon, name: &str) -> String {
    let mut config = pod_config(name, &d.dir.path().join("logs"));
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    run_pod_with_config(d, config).await
}

/// StopPodSandbox, then RemovePodSandbox: what kubelet does at the end.
pub async fn stop_and_remove_pod(d: &TestDaemon, pod: &str) {
    let mut rt = d.runtime().await;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .expect("stop pod");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .expect("remove pod");
}

/// StopContainer (no grace period), then RemoveContainer.
pub async fn stop_and_remove_container(d: &TestDaemon, id: &str) {
    let mut rt = d.runtime().await;
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.into(),
        timeout: 0,
    })
    .await
    .expect("stop container");
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .expect("remove container");
}

pub async fn create(
    d: &TestDaemon,
    pod: &str,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    create_on(&mut d.runtime().await, pod, config).await
}

/// [`create`] over a connection the caller already has (a test that must
/// not connect again, e.g. after its daemon may have crashed).
pub async fn create_on(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().container_id)
}

pub async fn start(d: &TestDaemon, id: &str) {
    d.runtime()
        .await
        .start_container(cri::StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .expect("start");
}

/// Creates and starts a container named `name` in `pod` that sleeps for
/// 1000 s (long past any test), from `image`.
pub async fn running_sleeper(d: &TestDaemon, pod: &str, name: &str, image: &str) -> String {
    let id = create(d, pod, container_config(name, image, &["sleep", "1000"]))
        .await
        .expect("create");
    start(d, &id).await;
    id
}

pub async fn exec(d: &TestDaemon, id: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
    d.runtime()
        .await
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .expect("exec")
        .into_inner()
}

pub async fn wait_exited(d: &TestDaemon, id: &str) -> cri::ContainerStatus {
    wait_for(
        "container exit",
        std::time::Duration::from_secs(15),
        || async {
            let s = container_state(d, id).await;
            (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
        },
    )
    .await
}

pub fn log_of(d: &TestDaemon, name: &str) -> String {
    std::fs::read_to_string(d.dir.path().join("logs").join(name).join("0.log")).unwrap_or_default()
}

/// A gRPC channel over the unix socket at `socket`. The socket file appears
/// at bind(2), a moment before listen(2): a connect in between is refused,
/// so refusals are retried for up to 5 s.
pub async fn connect_unix(socket: &Path) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let path = socket.to_path_buf();
        let connected = Endpoint::try_from("http://[::]:50051")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await;
        match connected {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connect to {}: {e:?}", socket.display()),
        }
    }
}
