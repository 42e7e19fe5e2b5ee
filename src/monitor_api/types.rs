//! Plain data shared by the daemon-side client, the wire protocol and the
//! monitor.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::capabilities::policy::ExecPath;
pub use crate::host::NamespaceKind;

/// Which pod-level namespaces the monitor creates and pins. `false` means
/// the containers stay in the host's namespace of that kind (e.g.
/// `hostNetwork: true` leaves `net` false).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaceSet {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    /// A PID namespace shared by the pod's containers (the pod's pid mode is
    /// POD). Unlike the others it needs a live init: the kernel refuses to
    /// add processes to a PID namespace whose pid 1 has exited.
    #[serde(default)]
    pub pid: bool,
}

/// What the daemon needs to start a pod's monitor.
#[derive(Debug, Clone)]
pub struct MonitorSpawn {
    pub pod_id: String,
    /// e.g. `/run/capcri/pods/<pod-id>`: the monitor's socket, the pinned
    /// namespaces and the per-container runtime files live here.
    pub pod_dir: PathBuf,
    /// libcontainer's state root (`ContainerBuilder::with_root_path`).
    pub runtime_root: PathBuf,
    pub new_namespaces: PodNamespaceSet,
    /// Set in the new UTS namespace (ignored when `new_namespaces.uts` is
    /// false: the host's hostname is never changed).
    pub hostname: Option<String>,
    /// POD user-namespace mode: the monitor creates the pod's user namespace
    /// with these mappings first, and the other pod namespaces inside it.
    pub user_namespace: Option<crate::spec::PodUserNamespace>,
    /// With a new PID namespace: the cgroup (relative to each hierarchy's
    /// root) the pod's init is moved into; None leaves it in the monitor's.
    pub init_cgroup: Option<String>,
    /// The capcri binary to run as the monitor. `None` = `/proc/self/exe`
    /// (the daemon itself). Tests set it because they run from a test binary.
    pub program: Option<PathBuf>,
}

/// One container to create inside the pod's monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateContainer {
    pub id: String,
    /// Directory with `config.json` and the (already mounted) rootfs.
    pub bundle: PathBuf,
    /// CRI log file; `None` discards the container's output.
    pub log_path: Option<PathBuf>,
    /// Keep stdin open (a pipe nobody writes to yet) instead of /dev/null.
    pub stdin: bool,
    /// CRI stdin_once: the first attached client's stdin, once closed,
    /// closes the container's stdin (kubectl run -i semantics).
    #[serde(default)]
    pub stdin_once: bool,
    /// Not supported yet: a request with `tty: true` is refused.
    pub tty: bool,
    /// How the container's init starts the user's process: its own execve
    /// (`direct`) or through the sealed `capcri-dmz` trampoline (`dmz`, two
    /// execve calls). Requests without the field (older daemons) mean
    /// `direct`, the behaviour before the field existed.
    #[serde(default = "direct_exec_path")]
    pub exec_path: ExecPath,
    /// Answer [`Response::Accepted`](super::protocol::Response::Accepted)
    /// once the request itself is checked (the id, the log file, the
    /// bundle's spec), and build the container (libcontainer's two
    /// processes, most of a create) right after the answer is sent, as
    /// containerd leaves runc's create to StartContainer: CreateContainer
    /// does not wait for it, and a build that fails leaves the container
    /// exited with reason `StartError`, its Start answered with the build's
    /// error. The monitor handles one request at a time, so every later
    /// request on the container sees the build finished. Absent (false) in
    /// older requests: the answer, `Created`, then comes after the build.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub build_after_answer: bool,
}

fn direct_exec_path() -> ExecPath {
    ExecPath::Direct
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuntimeStatus {
    Created,
    Running,
    Exited,
}

/// What the monitor knows about a container; persisted in
/// `pod_dir/containers/<id>/state.json` at every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRuntimeState {
    pub status: RuntimeStatus,
    pub pid: Option<u32>,
    /// Exit code, or 128 + signal number when killed by a signal.
    pub exit_code: Option<i32>,
    /// Unix nanoseconds.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// CRI-style reason: `Completed`, `Error`, `StartError`.
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// A synchronous exec (CRI ExecSync) into a running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub args: Vec<String>,
    /// `KEY=value` entries added to (and overriding) the container's env.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub timeout: Option<Duration>,
}

/// Most output kept per stream of an exec; the rest is read and dropped
/// (kubelet itself caps ExecSync output at 16 MiB in total).
pub const MAX_EXEC_OUTPUT: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// At most [`MAX_EXEC_OUTPUT`] bytes.
    #[serde(with = "hex_bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub timed_out: bool,
}

/// Raw output bytes travel as hex: JSON has no byte strings, and an array of
/// numbers would take up to four bytes per byte.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
