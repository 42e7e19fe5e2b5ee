//! The label values of capcri's metrics, as pure functions of what was
//! observed: a gRPC path and code, a capability decision, a container state.
//! Every label here has a small fixed set of values, so no request can grow
//! the number of series a scraper has to store.

use crate::capabilities::policy::{Decision, ExecPath, PreflightMode};
use crate::container::ContainerState;
use crate::pod::PodState;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use std::fmt::Write;

/// Every method of `runtime.v1` RuntimeService and ImageService (the CRI
/// proto shipped in `k8s-cri`).
pub const CRI_METHODS: &[&str] = &[
    // RuntimeService
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "RuntimeConfig",
    // ImageService
    "ListImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
];

/// The method label for anything outside the CRI (a client probing paths):
/// one series for all of them instead of one per made-up name.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The CRI method of a gRPC request path such as
/// `/runtime.v1.RuntimeService/RunPodSandbox`.
pub fn cri_method(path: &str) -> &'static str {
    let method = path
        .strip_prefix("/runtime.v1.RuntimeService/")
        .or_else(|| path.strip_prefix("/runtime.v1.ImageService/"));
    method
        .and_then(|m| CRI_METHODS.iter().copied().find(|known| *known == m))
        .unwrap_or(UNKNOWN_METHOD)
}

/// The name of a gRPC code as tonic spells it, with the protocol's "OK".
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CriCallLabels {
    pub method: &'static str,
    pub code: &'static str,
}

/// What a capability decision did, for `capcri_policy_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionOutcome {
    /// Capabilities were raised to the ambient set (KEP-2763 promotion).
    Promoted,
    /// A policy or the request itself refused the container.
    Denied,
    /// The container was allowed and starts through the dmz trampoline.
    Dmz,
    /// The container was allowed and its binary is exec'd directly.
    Direct,
    /// The file-capability preflight refused the container.
    PreflightFailed,
}

impl DecisionOutcome {
    pub const ALL: [DecisionOutcome; 5] = [
        DecisionOutcome::Promoted,
        DecisionOutcome::Denied,
        DecisionOutcome::Dmz,
        DecisionOutcome::Direct,
        DecisionOutcome::PreflightFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionOutcome::Promoted => "promoted",
            DecisionOutcome::Denied => "denied",
            DecisionOutcome::Dmz => "dmz",
            DecisionOutcome::Direct => "direct",
            DecisionOutcome::PreflightFailed => "preflight-failed",
        }
    }

    /// The outcomes one decision counts under. A refused container counts
    /// once, under `preflight-failed` when the enforced preflight was a
    /// cause, else `denied`. An allowed one counts once under its exec path
    /// and once more under `promoted` when its ambient set is not empty, so
    /// `direct + dmz + denied + preflight-failed` is the number of decisions
    /// and `promoted` the share of them that got ambient capabilities.
    pub fn of(decision: &Decision) -> Vec<DecisionOutcome> {
        if !decision.allowed {
            let by_preflight =
                decision.preflight_failed && decision.preflight == PreflightMode::Enforce;
            return vec![if by_preflight {
                DecisionOutcome::PreflightFailed
            } else {
                DecisionOutcome::Denied
            }];
        }
        let mut out = vec![match decision.exec_path {
            ExecPath::Direct => DecisionOutcome::Direct,
            ExecPath::Dmz => DecisionOutcome::Dmz,
        }];
        if !decision.caps.ambient.is_empty() {
            out.push(DecisionOutcome::Promoted);
        }
        out
    }
}

impl EncodeLabelValue for DecisionOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DecisionLabels {
    pub outcome: DecisionOutcome,
}

/// A policy network sysctl: its key and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SysctlLabels {
    pub key: String,
    pub outcome: &'static str,
}

/// Success or failure of a pull or a policy reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Failure,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

/// A state label value (`capcri_pods`, `capcri_containers`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

pub const POD_STATES: [&str; 2] = ["ready", "notready"];

pub fn pod_state(state: PodState) -> &'static str {
    match state {
        PodState::Ready => "ready",
        PodState::NotReady => "notready",
    }
}

pub const CONTAINER_STATES: [&str; 4] = ["created", "running", "exited", "unknown"];

pub fn container_state(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::kernel::{CapSet, Capability, ThreadCaps};

    #[test]
    fn methods_come_from_cri_paths_only() {
        assert_eq!(
            cri_method("/runtime.v1.RuntimeService/RunPodSandbox"),
            "RunPodSandbox"
        );
        assert_eq!(
            cri_method("/runtime.v1.ImageService/PullImage"),
            "PullImage"
        );
        assert_eq!(
            cri_method("/runtime.v1.ImageService/RunPodSandbox"),
            "RunPodSandbox"
        );
        assert_eq!(
            cri_method("/runtime.v1.RuntimeService/MadeUp"),
            UNKNOWN_METHOD
        );
        assert_eq!(cri_method("/other.Service/Version"), UNKNOWN_METHOD);
        assert_eq!(cri_method(""), UNKNOWN_METHOD);
    }

    #[test]
    fn codes_are_named_like_tonic_with_ok_in_capitals() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::NotFound), "NotFound");
        for code in 0..=16 {
            let c = tonic::Code::from_i32(code);
            if c != tonic::Code::Ok {
                assert_eq!(code_name(c), format!("{c:?}"));
            }
        }
    }

    fn decision(allowed: bool, exec_path: ExecPath, ambient: &[Capability]) -> Decision {
        let base: CapSet = [Capability::Chown, Capability::NetBindService]
            .into_iter()
            .collect();
        let ambient: CapSet = ambient.iter().copied().collect();
        Decision {
            allowed,
            deny_message: (!allowed).then(|| "no".into()),
            caps: ThreadCaps {
                bounding: base,
                effective: base,
                permitted: base,
                inheritable: ambient,
                ambient,
            },
            exec_path,
            preflight: PreflightMode::Enforce,
            preflight_failed: false,
            warnings: vec![],
            reasons: vec![],
            prediction: None,
            sysctls: Vec::new(),
        }
    }

    #[test]
    fn decisions_count_under_their_outcomes() {
        use DecisionOutcome::*;
        let cases = [
            (decision(true, ExecPath::Direct, &[]), vec![Direct]),
            (decision(true, ExecPath::Dmz, &[]), vec![Dmz]),
            (
                decision(true, ExecPath::Direct, &[Capability::NetBindService]),
                vec![Direct, Promoted],
            ),
            (decision(false, ExecPath::Direct, &[]), vec![Denied]),
            (
                Decision {
                    preflight_failed: true,
                    ..decision(false, ExecPath::Direct, &[])
                },
                vec![PreflightFailed],
            ),
            (
                // Warned, not refused: the decision stands.
                Decision {
                    preflight_failed: true,
                    preflight: PreflightMode::Warn,
                    ..decision(true, ExecPath::Direct, &[])
                },
                vec![Direct],
            ),
        ];
        for (d, want) in cases {
            assert_eq!(DecisionOutcome::of(&d), want, "{d:?}");
        }
        let names: Vec<&str> = DecisionOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            names,
            ["promoted", "denied", "dmz", "direct", "preflight-failed"]
        );
    }
}
