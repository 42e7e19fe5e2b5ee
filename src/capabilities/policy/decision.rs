//! The decision record: what the engine decided and why. It is stored with
//! the container and shown by `capcri explain`, so it is serializable.

use serde::{Deserialize, Serialize};

use super::document::PreflightMode;
use crate::capabilities::kernel::ThreadCaps;

/// How the container's process is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecPath {
    /// The runtime's init execs the user binary: one execve.
    Direct,
    /// A trampoline execs the user binary: two execve calls.
    Dmz,
}

impl std::fmt::Display for ExecPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExecPath::Direct => "direct",
            ExecPath::Dmz => "dmz",
        })
    }
}

/// Why one set member, or the exec path, is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// `"<set>:<CAP_X>"` (set: bounding, ambient, inheritable), `"drop:<CAP_X>"`,
    /// `"exec_path"`, `"preflight"`, `"deny"` or `"prediction"`.
    pub subject: String,
    /// `"policy <name> rule <n>"`, `"container securityContext"` or
    /// `"built-in default"`.
    pub source: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    /// Every deny, joined; None when allowed.
    pub deny_message: Option<String>,
    /// The sets the runtime gives the container's first process.
    pub caps: ThreadCaps,
    pub exec_path: ExecPath,
    pub preflight: PreflightMode,
    /// The entrypoint's file capabilities failed the preflight check:
    /// refused under `enforce`, a warning under `warn`. Kept apart from the
    /// deny message so the outcome is counted without parsing text.
    #[serde(default)]
    pub preflight_failed: bool,
    pub warnings: Vec<String>,
    pub reasons: Vec<Reason>,
    /// The predicted sets of the user process after its execve along the
    /// chosen exec path; None when the entrypoint could not be resolved or
    /// its execve is predicted to fail.
    pub prediction: Option<ThreadCaps>,
    /// The network sysctls policies set in the pod's network namespace,
    /// with the rule and the outcome of each: at CreateContainer, what
    /// the pod got at RunPodSandbox; in `policy eval`/`policy test`, what
    /// the policies decide for the pod.
    #[serde(default)]
    pub sysctls: Vec<super::sysctls::SysctlSetting>,
}
