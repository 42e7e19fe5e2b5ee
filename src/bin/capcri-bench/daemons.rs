//! The two runtimes under test, started by the bench in one temporary
//! directory, and the cleanup that leaves nothing behind.
//!
//! Everything lives under `/tmp/cb-XXXXXX`: a unix socket path must fit
//! `sun_path` (108 bytes with its NUL), so the directory names are short.
//! Each runtime's state directory there is a tmpfs, as /run is on a node
//! (`mount_volatile`); their data directories stay on the disk.

use super::BenchError;
use super::procfs;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// containerd 1.6's CRI wants an `eth0` with an address in the CNI result
/// ("failed to find network info" with a loopback-only list), so it gets a
/// bridge of its own: no gateway address and no masquerading, so the host's
/// addresses and routes stay as they are; the pods' veths go with the pods
/// and the bench deletes the bridge. capcri gets the same kind of bridge,
/// its own (another name and /24), so both pay for a veth, an address and
/// the bridge in RunPodSandbox and StopPodSandbox.
pub fn bridge_conflist(bridge: &str, subnet: &str, ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": bridge,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": false,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "dataDir": ipam_dir.display().to_string(),
                }
            },
            {"type": "loopback"}
        ]
    })
    .to_string()
}

/// A /24 in 10.254.0.0/16 picked from the bench directory's name, so two
/// benches at once (unlikely) most probably differ.
pub fn bridge_subnet(seed: &str) -> String {
    let n = seed
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    format!("10.254.{}.0/24", n % 250 + 1)
}

/// Paths of one containerd instance, all under the bench directory.
#[derive(Debug, Clone)]
pub struct ContainerdPaths {
    pub base: PathBuf,
}

impl ContainerdPaths {
    pub fn socket(&self) -> PathBuf {
        self.base.join("s")
    }
    pub fn config(&self) -> PathBuf {
        self.base.join("config.toml")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.base.join("cni")
    }
    pub fn certs_dir(&self) -> PathBuf {
        self.base.join("certs.d")
    }
}

/// Paths of one capcri instance.
#[derive(Debug, Clone)]
pub struct CapcriPaths {
    pub base: PathBuf,
}

impl CapcriPaths {
    pub fn socket(&self) -> PathBuf {
        self.base.join("s")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.base.join("run")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.base.join("lib")
    }
    pub fn policy_dir(&self) -> PathBuf {
        self.base.join("pol")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.base.join("cni")
    }
}

/// Puts the bench's containers named [`DMZ_CONTAINER`] on the dmz exec
/// path, so one run measures StartContainer on both paths.
const DMZ_POLICY: &str = r#"apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata:
  name: 90-bench-dmz
spec:
  match: "container.name == 'c-dmz'"
  rules:
    - name: bench-dmz-path
      execPath: dmz
"#;

/// The container name [`DMZ_POLICY`] matches.
pub const DMZ_CONTAINER: &str = "c-dmz";

fn toml_str(p: &Path) -> String {
    // Debug formatting of a str is a valid TOML basic string for the plain
    // paths used here (no control characters).
    format!("{:?}", p.display().to_string())
}

/// containerd 1.6 configuration (version 2) for a private instance.
///
/// - `restrict_oom_score_adj`: the host lacks CAP_SYS_RESOURCE, so the
///   shim's negative oom_score_adj would fail.
/// - `netns_mounts_under_state_dir` and the runc `Root`: keep netns pins and
///   runc state out of the host's /run.
/// - the `opt` plugin would create /opt/containerd: disabled.
pub fn containerd_config(p: &ContainerdPaths, registry: &str) -> String {
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry}/pause:3.9"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {runc_root}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = {cni}
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = {certs}
"#,
        root = toml_str(&p.base.join("root")),
        state = toml_str(&p.base.join("state")),
        socket = toml_str(&p.socket()),
        ttrpc = toml_str(&p.base.join("t")),
        runc_root = toml_str(&p.base.join("runc")),
        cni = toml_str(&p.cni_conf_dir()),
        certs = toml_str(&p.certs_dir()),
    )
}

/// containerd 2.x configuration (version 3: the CRI plugin split into
/// `io.containerd.cri.v1.images` and `io.containerd.cri.v1.runtime`, the
/// sandbox image a pinned image), with the same private paths and the same
/// choices as [`containerd_config`]. `runc` is the one beside the
/// containerd binary when there is one (a hand-built pair), else PATH's.
pub fn containerd_config_v3(p: &ContainerdPaths, registry: &str, runc: Option<&Path>) -> String {
    let binary_name = runc
        .map(|r| format!("\n        BinaryName = {}", toml_str(r)))
        .unwrap_or_default();
    format!(
        r#"version = 3
root = {root}
state = {state}
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{registry}/pause:3.9"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = {certs}

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {runc_root}{binary_name}
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = {cni}

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        root = toml_str(&p.base.join("root")),
        state = toml_str(&p.base.join("state")),
        socket = toml_str(&p.socket()),
        ttrpc = toml_str(&p.base.join("t")),
        runc_root = toml_str(&p.base.join("runc")),
        cni = toml_str(&p.cni_conf_dir()),
        certs = toml_str(&p.certs_dir()),
    )
}

/// The major version in `containerd --version` output: `containerd
/// github.com/containerd/containerd/v2 v2.3.4 <commit>` (a build from the
/// tag) or `containerd github.com/containerd/containerd 1.6.20~ds1 ...`
/// (Debian's 1.6).
pub fn containerd_major(version_output: &str) -> Option<u32> {
    version_output.split_whitespace().skip(2).find_map(|w| {
        let w = w.strip_prefix('v').unwrap_or(w);
        let (major, rest) = w.split_once('.')?;
        rest.starts_with(|c: char| c.is_ascii_digit())
            .then(|| major.parse().ok())
            .flatten()
    })
}

/// `certs.d/<registry>/hosts.toml`: the local registry speaks plain HTTP.
pub fn hosts_toml(registry: &str) -> String {
    format!(
        "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// The report note saying where the runtimes' files are.
pub const STATE_NOTE: &str = "state: each runtime's state directory (capcri's state_dir, containerd's state and runc's root) is a tmpfs, as /run is on a node; their data directories are on the disk; each daemon runs in a mount namespace of its own, so neither runtime's creates see the other's mounts";

/// Mounts a tmpfs at `dir`. A node keeps each runtime's state directory
/// (capcri's `state_dir` /run/capcri, containerd's /run/containerd and
/// runc's root under it) in /run, a tmpfs; the bench's workspace is in
/// /tmp on the disk, where every fsync of a state file (a bundle's
/// config.json, a container's state) waits for the disk as it never does
/// on a node. Unmounted by [`Workspace`]'s drop with every other mount
/// under the workspace.
fn mount_volatile(dir: &Path) -> Result<(), BenchError> {
    use nix::mount::{MsFlags, mount};
    fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| BenchError::Io {
        what: format!("mount a tmpfs at {} (as /run is on a node)", dir.display()),
        source: e.into(),
    })
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
    }
    fs::write(path, text).map_err(io_err(format!("write {}", path.display())))
}

/// One started daemon: our child, in its own process group so a Ctrl-C at
/// the terminal reaches the bench (which cleans up) and not the daemon.
pub struct Daemon {
    pub name: &'static str,
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Fails when the daemon has already exited, quoting its log's tail.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(BenchError::DaemonExited {
                name: self.name,
                status: status.to_string(),
                log_tail: log_tail(&self.log),
            }),
            _ => Ok(()),
        }
    }

    /// Waits for the socket file; the RPC readiness check is the caller's.
    pub fn wait_for_socket(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        while !self.socket.exists() {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(BenchError::NotReady {
                    name: self.name,
                    secs: timeout.as_secs(),
                    log_tail: log_tail(&self.log),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a daemon log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn spawn(
    name: &'static str,
    mut cmd: Command,
    socket: PathBuf,
    log: PathBuf,
) -> Result<Daemon, BenchError> {
    let out = fs::File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io_err(format!("dup {}", log.display())))?;
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    // SAFETY: between fork and exec the closure makes two system calls
    // and allocates nothing (`unshare_private_mounts`, errors as errnos):
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(own_mount_namespace);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| BenchError::Spawn { program, source })?;
    Ok(Daemon {
        name,
        socket,
        log,
        child,
    })
}

/// Puts the daemon about to be executed in a mount namespace of its own, a
/// private copy of the bench's: what it mounts (rootfs overlays, pod
/// /dev/shm, namespace pins, containerd's netns files) only it and its
/// per-pod processes see, as on a node that runs one runtime.
///
/// Why: in one shared namespace each runtime's creates paid for the other
/// one's mounts. A container's create reads `/proc/self/mountinfo` (whole,
/// for the controllers this host enables but does not mount) and copies
/// every mount into the container's new mount namespace, in libcontainer
/// and in runc alike, and at 250 pods each the namespace held both
/// runtimes' ~2,300 mounts instead of one runtime's ~1,270: capcri's
/// StartContainer of one more pod took 88.6 ms there (2026-12-07 12:04,
/// `--scale 10,100,250`) against 42 ms with capcri alone.
///
/// The mounts the bench makes before the spawn (the state tmpfs) are in
/// the copy; the copy is made private so nothing the daemon mounts reaches
/// the bench's namespace, even when the bench was started without
/// `unshare --propagation private`. The namespace goes with the last of
/// the runtime's processes, and its mounts with it.
fn own_mount_namespace() -> std::io::Result<()> {
    use capcri::util::mount::{PrivateMountsError, unshare_private_mounts};
    // The errno alone: std reports it to the parent, and an error that
    // carried text would allocate in the child.
    unshare_private_mounts().map_err(|e| match e {
        PrivateMountsError::Unshare(e) | PrivateMountsError::MakePrivate(e) => e.into(),
    })
}

/// The bench's temporary directory and everything started in it. Dropping
/// it stops the daemons, kills what they left, unmounts, removes the
/// cgroups and the directory, in that order, also after a failure.
pub struct Workspace {
    pub daemons: Vec<Daemon>,
    cgroup_parents: Vec<String>,
    /// The daemons' CNI bridges, deleted at the end.
    bridges: Vec<String>,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Workspace {
    pub fn new() -> Result<Workspace, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("cb-")
            .tempdir_in("/tmp")
            .map_err(io_err("create a temporary directory in /tmp"))?;
        let path = dir.path().to_path_buf();
        Ok(Workspace {
            daemons: Vec::new(),
            cgroup_parents: Vec::new(),
            bridges: Vec::new(),
            dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A cgroup parent unique to this run, removed at the end.
    pub fn cgroup_parent(&mut self, suffix: &str) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cb".into());
        let parent = format!("/{name}-{suffix}");
        self.cgroup_parents.push(parent.clone());
        parent
    }

    pub fn start_capcri(
        &mut self,
        bin: &Path,
        log_level: &str,
        cgroup_parent: &str,
    ) -> Result<(CapcriPaths, usize), BenchError> {
        let p = CapcriPaths {
            base: self.path.join("c"),
        };
        fs::create_dir_all(&p.base).map_err(io_err(format!("create {}", p.base.display())))?;
        mount_volatile(&p.state_dir())?;
        write(&p.policy_dir().join("90-bench-dmz.yaml"), DMZ_POLICY)?;
        let bridge = self.bridge_name("c");
        write(
            &p.cni_conf_dir().join("10-bench.conflist"),
            &bridge_conflist(&bridge, &bridge_subnet(&bridge), &p.base.join("ipam")),
        )?;
        self.bridges.push(bridge);
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--socket")
            .arg(p.socket())
            .arg("--state-dir")
            .arg(p.state_dir())
            .arg("--data-dir")
            .arg(p.data_dir())
            .arg("--policy-dir")
            .arg(p.policy_dir())
            .arg("--cni-conf-dir")
            .arg(p.cni_conf_dir())
            .arg("--cni-bin-dir")
            .arg("/usr/lib/cni")
            // The bench's own cgroup tree, which it removes: cgroupfs.
            .arg("--cgroup-driver")
            .arg("cgroupfs")
            .arg("--cgroup-parent")
            .arg(cgroup_parent)
            .arg("--log-level")
            .arg(log_level);
        let d = spawn("capcri", cmd, p.socket(), self.path.join("capcri.log"))?;
        self.daemons.push(d);
        Ok((p, self.daemons.len() - 1))
    }

    /// A bridge name per daemon (`tag`), from the bench directory's name:
    /// at most 15 bytes, as Linux wants.
    fn bridge_name(&self, tag: &str) -> String {
        let base = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cb-bench".into());
        format!("{}{tag}", &base[..base.len().min(14)])
    }

    pub fn start_containerd(
        &mut self,
        bin: &Path,
        registry: &str,
    ) -> Result<(ContainerdPaths, usize), BenchError> {
        let p = ContainerdPaths {
            base: self.path.join("k"),
        };
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .map_err(|source| BenchError::Spawn {
                program: bin.display().to_string(),
                source,
            })?;
        let version = String::from_utf8_lossy(&out.stdout).into_owned();
        // A hand-built containerd 2.x keeps its shim and runc beside it:
        // the daemon finds the shim on PATH, the shim runs `BinaryName`.
        let bin_dir = bin
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && d.join("containerd-shim-runc-v2").exists());
        let config = match containerd_major(&version) {
            Some(2..) => containerd_config_v3(
                &p,
                registry,
                bin_dir
                    .map(|d| d.join("runc"))
                    .filter(|r| r.exists())
                    .as_deref(),
            ),
            Some(_) => containerd_config(&p, registry),
            None => {
                return Err(BenchError::Usage(format!(
                    "{} --version printed {:?}: not a containerd version; pass --containerd-bin",
                    bin.display(),
                    version.trim()
                )));
            }
        };
        write(&p.config(), &config)?;
        // `state` and runc's `Root`, /run/containerd and /run/containerd/runc
        // on a node (see `mount_volatile`).
        mount_volatile(&p.base.join("state"))?;
        mount_volatile(&p.base.join("runc"))?;
        let bridge = self.bridge_name("k");
        write(
            &p.cni_conf_dir().join("10-bench.conflist"),
            &bridge_conflist(&bridge, &bridge_subnet(&bridge), &p.base.join("ipam")),
        )?;
        self.bridges.push(bridge);
        write(
            &p.certs_dir().join(registry).join("hosts.toml"),
            &hosts_toml(registry),
        )?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(p.config());
        if let Some(dir) = bin_dir {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![dir.to_path_buf()];
            dirs.extend(std::env::split_paths(&path));
            if let Ok(joined) = std::env::join_paths(dirs) {
                cmd.env("PATH", joined);
            }
        }
        let d = spawn(
            "containerd",
            cmd,
            p.socket(),
            self.path.join("containerd.log"),
        )?;
        self.daemons.push(d);
        Ok((p, self.daemons.len() - 1))
    }

    /// Copies the daemons' logs to `dest` (for `--logs-dir`).
    pub fn copy_logs(&self, dest: &Path) -> Result<(), BenchError> {
        fs::create_dir_all(dest).map_err(io_err(format!("create {}", dest.display())))?;
        for d in &self.daemons {
            let to = dest.join(format!("{}.log", d.name));
            fs::copy(&d.log, &to).map_err(io_err(format!(
                "copy {} to {}",
                d.log.display(),
                to.display()
            )))?;
        }
        Ok(())
    }

    fn kill_leftovers(&self) {
        for _ in 0..5 {
            let mut pids = procfs::pids_mentioning(&self.path);
            for parent in &self.cgroup_parents {
                pids.extend(cgroup_pids(parent));
            }
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill(2) of a process this run started (its command
                // line names our directory, or it is in our cgroup).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Pids in any hierarchy's cgroup tree `parent`.
fn cgroup_pids(parent: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for h in capcri::util::cgroupfs::hierarchies() {
        for d in dirs_bottom_up(&h.join(parent.trim_start_matches('/'))) {
            let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `d` and its subdirectories, children before parents (rmdir order).
fn dirs_bottom_up(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if !d.is_dir() {
        return out;
    }
    for e in fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(dirs_bottom_up(&e.path()));
        }
    }
    out.push(d.to_path_buf());
    out
}

/// Mount points at or below `dir`, deepest (latest) first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut v: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    v.reverse();
    v
}

impl Drop for Workspace {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            d.stop(Duration::from_secs(5));
        }
        self.kill_leftovers();
        for m in mounts_under(&self.path) {
            if let Ok(c) = std::ffi::CString::new(m) {
                // SAFETY: umount2 with a valid C string; MNT_DETACH so a busy
                // mount still leaves the namespace.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        for parent in &self.cgroup_parents {
            for h in capcri::util::cgroupfs::hierarchies() {
                for d in dirs_bottom_up(&h.join(parent.trim_start_matches('/'))) {
                    let _ = fs::remove_dir(d);
                }
            }
        }
        for bridge in &self.bridges {
            // Absent when the daemon never ran a pod: ip's error is expected.
            let _ = Command::new("ip")
                .args(["link", "del", bridge])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(dir) = self.dir.take()
            && let Err(e) = dir.close()
        {
            eprintln!(
                "capcri bench: could not remove {}: {e}; remove it by hand",
                self.path.display()
            );
        }
    }
}

/// The other runtimes' processes, stopped (`SIGSTOP`) while one runtime's
/// calls are timed and continued (`SIGCONT`) when this is dropped. A node
/// runs one runtime; on the bench's machine the other one's background
/// work (containerd's garbage collector after its half-second stats
/// calls, its collectors) took the cores from the runtime being timed and
/// set the p99 of calls whose median is a tenth of it, and capcri's
/// cgroup lock warm-up (`host::cgroup_lock`, node-wide) spared
/// containerd's `runc create` its grace-period wait in the pod cycles
/// that followed capcri's. The pod cycles stop the other daemon
/// ([`Paused::all_but`]); `--scale`'s sampling stops its per-pod processes
/// too (`scale::others_of`). The containers run on.
pub struct Paused(Vec<i32>);

impl Paused {
    /// Stops `pids`: processes the bench started, or their runtimes did.
    pub fn these(pids: impl IntoIterator<Item = i32>) -> Paused {
        let stopped = pids
            .into_iter()
            .filter(|&pid| pid > 0)
            .filter(|&pid| {
                // SAFETY: kill only sends a signal to a process of a
                // runtime the bench started.
                unsafe { libc::kill(pid, libc::SIGSTOP) == 0 }
            })
            .collect();
        Paused(stopped)
    }

    /// Stops the daemons `pids` but the `keep`th.
    pub fn all_but(pids: impl Iterator<Item = i32>, keep: usize) -> Paused {
        Paused::these(
            pids.enumerate()
                .filter(|&(j, _)| j != keep)
                .map(|(_, pid)| pid),
        )
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: as in `these`.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_config_is_valid_toml_with_private_paths() {
        let p = ContainerdPaths {
            base: PathBuf::from("/tmp/cb-abc/k"),
        };
        let text = containerd_config(&p, "127.0.0.1:5055");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(v["version"].as_integer(), Some(2));
        assert_eq!(v["root"].as_str(), Some("/tmp/cb-abc/k/root"));
        assert_eq!(v["grpc"]["address"].as_str(), Some("/tmp/cb-abc/k/s"));
        let cri = &v["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("127.0.0.1:5055/pause:3.9")
        );
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(cri["disable_apparmor"].as_bool(), Some(true));
        assert_eq!(cri["containerd"]["snapshotter"].as_str(), Some("overlayfs"));
        let opts = &cri["containerd"]["runtimes"]["runc"]["options"];
        assert_eq!(opts["SystemdCgroup"].as_bool(), Some(false));
        assert_eq!(opts["Root"].as_str(), Some("/tmp/cb-abc/k/runc"));
        assert_eq!(cri["cni"]["conf_dir"].as_str(), Some("/tmp/cb-abc/k/cni"));
        assert_eq!(
            cri["registry"]["config_path"].as_str(),
            Some("/tmp/cb-abc/k/certs.d")
        );
    }

    #[test]
    fn containerd_2_gets_the_version_3_config() {
        let p = ContainerdPaths {
            base: PathBuf::from("/tmp/cb-abc/k"),
        };
        let text = containerd_config_v3(&p, "127.0.0.1:5057", Some(Path::new("/var/tmp/x/runc")));
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(v["version"].as_integer(), Some(3));
        assert_eq!(v["state"].as_str(), Some("/tmp/cb-abc/k/state"));
        let images = &v["plugins"]["io.containerd.cri.v1.images"];
        assert_eq!(
            images["pinned_images"]["sandbox"].as_str(),
            Some("127.0.0.1:5057/pause:3.9")
        );
        assert_eq!(
            images["registry"]["config_path"].as_str(),
            Some("/tmp/cb-abc/k/certs.d")
        );
        let rt = &v["plugins"]["io.containerd.cri.v1.runtime"];
        assert_eq!(rt["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(rt["netns_mounts_under_state_dir"].as_bool(), Some(true));
        let opts = &rt["containerd"]["runtimes"]["runc"]["options"];
        assert_eq!(opts["Root"].as_str(), Some("/tmp/cb-abc/k/runc"));
        assert_eq!(opts["BinaryName"].as_str(), Some("/var/tmp/x/runc"));
        assert_eq!(rt["cni"]["conf_dir"].as_str(), Some("/tmp/cb-abc/k/cni"));
        let no_runc: toml::Value =
            toml::from_str(&containerd_config_v3(&p, "r:1", None)).expect("TOML");
        assert!(
            no_runc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
                ["options"]
                .get("BinaryName")
                .is_none()
        );
    }

    #[test]
    fn containerd_versions() {
        for (out, major) in [
            (
                "containerd github.com/containerd/containerd/v2 v2.3.4 2d5a8f3\n",
                Some(2),
            ),
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n",
                Some(1),
            ),
            ("containerd containerd.io 1.7.27 05044ec0a9a7\n", Some(1)),
            ("", None),
            ("containerd: command not found", None),
        ] {
            assert_eq!(containerd_major(out), major, "{out:?}");
        }
    }

    #[test]
    fn hosts_toml_is_plain_http() {
        let v: toml::Value = toml::from_str(&hosts_toml("127.0.0.1:5000")).expect("TOML");
        assert_eq!(v["server"].as_str(), Some("http://127.0.0.1:5000"));
        assert!(v["host"]["http://127.0.0.1:5000"]["capabilities"].is_array());
    }

    #[test]
    fn bridge_conflist_has_no_gateway_and_private_ipam() {
        let text = bridge_conflist(
            "cb-x1",
            &bridge_subnet("cb-x1"),
            Path::new("/tmp/cb-x1/k/ipam"),
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let b = &v["plugins"][0];
        assert_eq!(b["type"], "bridge");
        assert_eq!(b["bridge"], "cb-x1");
        assert_eq!(b["isGateway"], false);
        assert_eq!(b["ipMasq"], false);
        assert_eq!(b["ipam"]["dataDir"], "/tmp/cb-x1/k/ipam");
        let subnet = b["ipam"]["ranges"][0][0]["subnet"]
            .as_str()
            .expect("subnet");
        assert!(
            subnet.starts_with("10.254.") && subnet.ends_with(".0/24"),
            "{subnet}"
        );
        assert_eq!(v["plugins"][1]["type"], "loopback");
    }

    #[test]
    fn socket_paths_fit_sun_path() {
        // /tmp/cb- plus tempfile's 6 random characters.
        let base = PathBuf::from("/tmp/cb-XXXXXX");
        for s in [
            ContainerdPaths {
                base: base.join("k"),
            }
            .socket(),
            CapcriPaths {
                base: base.join("c"),
            }
            .socket(),
        ] {
            assert!(s.as_os_str().len() < 100, "{}", s.display());
        }
    }

    /// A daemon's mounts stay in its own namespace: the bench's neither
    /// sees them nor has them to clean up. Needs root (CLONE_NEWNS, mount).
    #[test]
    fn a_daemon_mounts_in_a_namespace_of_its_own() {
        if std::env::var_os("CAPCRI_PRIVILEGED_TESTS").is_none() {
            eprintln!("skipped: needs CAPCRI_PRIVILEGED_TESTS=1 and root");
            return;
        }
        let _alone = crate::CHILD_PROCESSES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("mnt");
        let log = dir.path().join("log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "mkdir -p {t} && mount -t tmpfs bench-test {t} && readlink /proc/self/ns/mnt && grep -c ' {t} ' /proc/self/mountinfo",
            t = target.display()
        ));
        let mut d = spawn("test", cmd, dir.path().join("sock"), log.clone()).expect("spawn");
        let status = d.child.wait().expect("wait");
        let out = fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "{out}");
        let mut lines = out.lines();
        let theirs = lines.next().unwrap_or_default();
        let ours = fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        assert_ne!(
            theirs,
            ours.to_string_lossy(),
            "the daemon shared the bench's namespace"
        );
        assert_eq!(
            lines.next(),
            Some("1"),
            "the daemon did not see its own mount: {out}"
        );
        assert_eq!(
            mounts_under(&target),
            Vec::<String>::new(),
            "the daemon's mount reached the bench's namespace"
        );
    }
}
