//! CEL capability policies: loading, validation, evaluation, merging, and
//! the decision record with its reasons.
//!
//! Pure: the only file reading is in [`PolicySet::load_dir`] and the CLI
//! helpers; evaluation sees the image through [`RootfsView`].

mod check;
mod cli;
mod compile;
mod decision;
mod document;
mod error;
mod evaluate;
mod explain;
mod facts;
mod load;
mod pod_decision;
mod preflight;
mod schema;
pub mod sysctls;
mod testkit;

pub use cli::{cli_check, cli_eval};
pub use decision::{Decision, ExecPath, Reason};
pub use document::{
    API_VERSION, AmbientRequests, DenySpec, ExecPathMode, KIND, Metadata, PolicyDocument,
    PolicySpec, PreflightMode, RuleSpec, SysctlValue,
};
pub use error::{LoadError, LoadErrorKind, Location, PolicyError};
pub use evaluate::{PathPredictions, auto_allows_dmz, predict_paths, predict_paths_as};
pub use explain::{render_json, render_table};
pub use facts::{
    CapabilityRequest, ContainerFacts, EntrypointFacts, Facts, ImageFacts, NodeFacts, PodFacts,
    ResolvedIdentity, UserFacts,
};
pub use load::{DEFAULT_POLICY_DIR, MAX_POLICY_FILE_BYTES, PolicySet};
pub(crate) use load::{DirSnapshot, snapshot_dir};
pub use pod_decision::{PodDecision, render_pod_table};
pub use preflight::{
    MemoryRootfs, ResolvedBinary, RootfsView, SetIdBits, resolve_entrypoint, resolve_symlinks,
};
pub use testkit::{TEST_KIND, TestReport, cli_test, run_cases};
