//! The capability model: names, sets, the kernel's execve transformation
//! rules, file-capability xattr parsing, the default sets and the add/drop
//! algorithm.
//!
//! Everything here is pure: the policy engine, `explain` and the tests use
//! [`predict_execve`] so that a decision can be predicted (and checked by the
//! real-container tests) before any container runs.

mod execve;
mod filecaps;
mod names;
mod request;
mod set;

pub use execve::{ExecIdentity, ExecveError, predict_execve};
pub use filecaps::{FileCaps, FileCapsError, parse_file_caps};
pub use names::{CapName, CapParseError, Capability};
pub use request::{
    CapList, all_capabilities, canonical_names, container_bounding, docker_default_capabilities,
};
pub use set::{CapSet, ThreadCaps};
