//! What the daemon and a pod's monitor share: the wire protocol
//! (`protocol`, length-prefixed JSON frames), its plain data (`types`), the
//! monitor's error and its wire form (`error`), the container state files
//! the monitor writes and the daemon reads after a restart (`persist`), and
//! the daemon's side of it all: the client of a monitor's socket (`client`)
//! and of the monitor template that forks monitors (`template_client`).
//! The monitor itself is `crate::monitor`; nothing here imports it.

pub(crate) mod client;
mod error;
pub(crate) mod persist;
pub(crate) mod protocol;
pub(crate) mod template_client;
mod types;

pub use client::{ExecExit, ExecStdio, ExitWatch, MonitorClient, StartOutcome, spawn_monitor};
pub use error::RuntimeError;
pub use persist::read_persisted_state;
pub(crate) use protocol::SOCKET_NAME as MONITOR_SOCKET;
pub use protocol::{
    Decoded, MAX_FRAME_LEN, Request, Response, WireError, WireErrorKind, decode_frame, encode_frame,
};
pub use types::{
    ContainerRuntimeState, CreateContainer, ExecOutput, ExecPath, ExecSpec, MAX_EXEC_OUTPUT,
    MonitorSpawn, NamespaceKind, PodNamespaceSet, RuntimeStatus,
};
