//! Everything about Linux capabilities, in one place:
//!
//! - `kernel`: the capability model and the kernel's rules (names, sets,
//!   the execve transformation, file-capability xattrs), Docker's default
//!   set, `ALL` and containerd's add/drop algorithm: written once, used by
//!   the spec builder, the policy engine, `explain` and the tests;
//! - `policy`: the CEL capability policies (load, compile, evaluate,
//!   explain, the `capcri policy` CLI and its test kit);
//! - `policy_store`: the policy set in force in the daemon (reloaded on
//!   change);
//! - `oci`: the OCI form of the sets and the CRI request read into lists.
//!
//! All pure but `policy_store` (which reads the policy directory) and the
//! policy CLI: facts in, decision out.

pub mod kernel;
pub mod oci;
pub mod policy;
pub mod policy_store;
