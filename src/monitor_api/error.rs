//! The monitor's errors, as the daemon sees them (rebuilt from their wire
//! form, `WireError`).

use std::path::PathBuf;

use super::protocol::{WireError, WireErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "container {container:?} is not known to the pod monitor; create it first or check the id"
    )]
    NotFound { container: String },
    #[error(
        "container {container:?} already exists in the pod monitor; delete it first or use another id"
    )]
    AlreadyExists { container: String },
    #[error(
        "pod monitor at {socket} is unreachable ({source}); the monitor has exited or the pod directory was removed, recreate the pod"
    )]
    MonitorUnreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod monitor of pod {pod:?} failed to start: {message}")]
    MonitorStartup { pod: String, message: String },
    #[error("libcontainer failed for container {container:?}: {message}")]
    Libcontainer { container: String, message: String },
    #[error("exec in container {container:?} failed: {message}")]
    ExecFailed { container: String, message: String },
    #[error("invalid request to the pod monitor: {0}")]
    InvalidRequest(String),
    #[error(
        "pod monitor protocol error: {0}; daemon and monitor binaries may differ, recreate the pod"
    )]
    Protocol(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }

    /// Map a monitor-side error onto the wire. The container id travels in
    /// the message so the client can rebuild the typed error.
    pub(crate) fn to_wire(&self) -> WireError {
        let (kind, container) = match self {
            RuntimeError::NotFound { container } => (WireErrorKind::NotFound, container.clone()),
            RuntimeError::AlreadyExists { container } => {
                (WireErrorKind::AlreadyExists, container.clone())
            }
            RuntimeError::Libcontainer { container, .. } => {
                (WireErrorKind::Libcontainer, container.clone())
            }
            RuntimeError::ExecFailed { container, .. } => {
                (WireErrorKind::ExecFailed, container.clone())
            }
            RuntimeError::InvalidRequest(_) | RuntimeError::Protocol(_) => {
                (WireErrorKind::InvalidRequest, String::new())
            }
            _ => (WireErrorKind::Io, String::new()),
        };
        let message = match self {
            RuntimeError::Libcontainer { message, .. }
            | RuntimeError::ExecFailed { message, .. } => message.clone(),
            RuntimeError::InvalidRequest(m) | RuntimeError::Protocol(m) => m.clone(),
            other => other.to_string(),
        };
        WireError {
            kind,
            container,
            message,
        }
    }

    pub(crate) fn from_wire(err: WireError) -> Self {
        let WireError {
            kind,
            container,
            message,
        } = err;
        match kind {
            WireErrorKind::NotFound => RuntimeError::NotFound { container },
            WireErrorKind::AlreadyExists => RuntimeError::AlreadyExists { container },
            WireErrorKind::Libcontainer => RuntimeError::Libcontainer { container, message },
            WireErrorKind::ExecFailed => RuntimeError::ExecFailed { container, message },
            WireErrorKind::InvalidRequest => RuntimeError::InvalidRequest(message),
            WireErrorKind::Io => RuntimeError::Io {
                context: "pod monitor".into(),
                source: std::io::Error::other(message),
            },
        }
    }
}

/// The kernel plumbing's failures keep their context and cause.
impl From<crate::host::HostError> for RuntimeError {
    fn from(e: crate::host::HostError) -> Self {
        match e {
            crate::host::HostError::Io { context, source } => RuntimeError::Io { context, source },
        }
    }
}
