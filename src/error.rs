//! The domain error every lifecycle operation returns. Module errors are
//! aggregated here with `#[from]`; `cri::status` maps them to gRPC codes at
//! exactly one place.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error(
        "name {name:?} is already reserved by another object; remove it first or use another attempt number"
    )]
    AlreadyExists { name: String },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A valid request this node, as it is, cannot carry out: no idmapped
    /// mounts for a user-namespaced pod, a volume source that is not a
    /// shared mount, a cgroup or sysctl the kernel refuses, a cgroup driver
    /// the host cannot run. The message names what and the fix.
    #[error("{0}")]
    Unsatisfiable(String),
    /// A file of the image (its `/etc/passwd`, `/etc/group`...) that the
    /// container cannot be built from.
    #[error("container {container:?} (image {image}): {reason}")]
    BadImageContent {
        container: String,
        image: String,
        reason: String,
    },
    /// The container's process failed before it ran (its `execve` or an
    /// earlier step of the monitor's start).
    #[error("container {container} failed to start: {message}")]
    StartFailed { container: String, message: String },
    /// A pod or container in a state that does not allow the operation.
    #[error(transparent)]
    WrongState(#[from] crate::state::WrongState),
    /// The capability policy refused the container; the message names the
    /// policy or the preflight check and the fix.
    #[error("capability policy refused container {container:?}: {message}")]
    PolicyDenied { container: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Runtime(#[from] crate::monitor_api::RuntimeError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("pod network: {0}")]
    Network(#[from] crate::network::CniError),
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        NodeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn not_found(kind: &'static str, id: &str) -> Self {
        NodeError::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}
