//! Kernel plumbing both processes use: the daemon (pods' network
//! namespaces, cgroup reads and writes, the idmapped-mount probe, the
//! sealed copy the monitor template runs from) and the monitor (pinning
//! the pod's namespaces, id maps). Thin I/O over `util`; the pure parsing
//! and formatting rules beside it (`cgroup_files`) are tested without root.
//! Nothing here imports the daemon's or the monitor's modules.

mod cgroup_files;
mod cgroup_io;
pub mod cgroup_lock;
mod error;
pub(crate) mod idmap;
pub(crate) mod namespaces;
pub mod oom_score;
pub(crate) mod sealed_exe;

pub use cgroup_files::{MemoryUsage, ResourceUpdate};
pub use cgroup_io::CgroupPath;
pub(crate) use cgroup_io::create_cgroup;
pub use error::HostError;
pub use idmap::{idmapped_bind, probe_idmapped_overlay};
pub use namespaces::{
    NamespaceKind, create_netns_at, pin_namespace, pinned_namespace_path, unpin, unpin_namespaces,
};
