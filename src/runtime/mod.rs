//! The only place that calls libcontainer. Everything runs inside the
//! single-threaded per-pod monitor process; the daemon talks to it through
//! a typed protocol over a unix socket.
//!
//! Why a separate process: libcontainer clones children from the calling
//! process; in a multi-threaded process (the tokio daemon) the clone can
//! inherit a held glibc malloc lock and deadlock, and libcontainer marks its
//! caller non-dumpable. The monitor (`capcri monitor`, see [`monitor_main`])
//! is single-threaded, is the parent and subreaper of the pod's containers,
//! holds their stdio, writes their CRI logs and records exit codes, so it
//! keeps working while the daemon is down.

mod cgroup_files;
mod cgroup_io;
mod client;
mod cri_log;
mod dmz;
mod error;
mod executor;
mod idmap;
mod monitor;
mod namespaces;
pub mod oom_score;
mod persist;
mod pod_init;
mod propagation;
mod protocol;
mod sealed_exe;
mod template;
mod types;

pub use cgroup_files::{MemoryUsage, ResourceUpdate};
pub use cgroup_io::CgroupPath;
pub use client::{ExecExit, ExecStdio, ExitWatch, MonitorClient, spawn_monitor};
pub use cri_log::{
    CriLogLine, CriLogParseError, CriLogStream, LineSplitter, MAX_LOG_LINE, format_cri_log_line,
    parse_cri_log_line,
};
pub use error::RuntimeError;
pub use idmap::{idmapped_bind, probe_idmapped_overlay};
pub(crate) use monitor::SOCKET_NAME as MONITOR_SOCKET;
pub use monitor::monitor_main;
pub use namespaces::{
    create_netns_at, pin_namespace, pinned_namespace_path, unpin, unpin_namespaces,
};
pub use persist::read_persisted_state;
pub(crate) use pod_init::create_cgroup;
pub use protocol::{
    Decoded, MAX_FRAME_LEN, Request, Response, WireError, WireErrorKind, decode_frame, encode_frame,
};
pub use template::template_main;
pub use types::{
    ContainerRuntimeState, CreateContainer, ExecOutput, ExecPath, ExecSpec, MAX_EXEC_OUTPUT,
    MonitorSpawn, NamespaceKind, PodNamespaceSet, RuntimeStatus,
};
