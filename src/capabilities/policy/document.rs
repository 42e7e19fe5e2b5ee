//! The YAML schema of a `CapabilityPolicy` file.
//!
//! Parsed with `serde_norway`: `serde_yaml` is archived and `serde_yml` has
//! unsoundness reports and an unclear maintenance story; `serde_norway` is a
//! maintained fork of serde_yaml with the same API and precise error
//! locations. Every struct denies unknown fields, so a misspelt key is an
//! error instead of a silently ignored rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "capcri.dev/v1alpha1";
pub const KIND: &str = "CapabilityPolicy";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// CEL, must return bool: whether this policy applies to the container.
    #[serde(rename = "match")]
    pub match_expression: String,
    pub rules: Vec<RuleSpec>,
}

/// One rule; it must set at least one action.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuleSpec {
    /// Optional label shown in reasons.
    pub name: Option<String>,
    /// CEL returning bool; the rule applies only when true.
    pub when: Option<String>,
    /// Capabilities added to the bounding/effective/permitted sets.
    pub add: Vec<String>,
    /// Capabilities removed from every set (drop wins over add).
    pub drop: Vec<String>,
    /// Capabilities promoted to ambient (and inheritable).
    pub ambient: Vec<String>,
    /// CEL returning a list of capability names to promote.
    pub ambient_expression: Option<String>,
    /// Whether the CRI `add_ambient_capabilities` request is honoured.
    pub ambient_requests: Option<AmbientRequests>,
    pub exec_path: Option<ExecPathMode>,
    pub preflight: Option<PreflightMode>,
    pub deny: Option<DenySpec>,
    /// `net.ipv4.ip_unprivileged_port_start` in the pod's network
    /// namespace: the first port a process without NET_BIND_SERVICE cannot
    /// bind (0: none is privileged, containerd 2's default; 1024: the
    /// kernel's).
    pub unprivileged_ports: Option<u32>,
    /// `net.ipv4.ping_group_range` in the pod's network namespace: true
    /// lets every group open ICMP echo sockets ("0 2147483647",
    /// containerd 2's default), false writes the kernel's default ("1 0").
    #[serde(rename = "unprivilegedICMP")]
    pub unprivileged_icmp: Option<bool>,
    /// Other namespaced, pod-safe network sysctls (`policy check` lists
    /// them), written into the pod's network namespace at RunPodSandbox.
    pub sysctls: BTreeMap<String, SysctlValue>,
}

/// A sysctl value: YAML lets it be written as a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SysctlValue {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for SysctlValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SysctlValue::Int(i) => write!(f, "{i}"),
            SysctlValue::Text(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenySpec {
    /// CEL returning bool; true denies the container.
    pub condition: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmbientRequests {
    Allow,
    Refuse,
}

/// How the container's process is started: `direct` (the runtime's init
/// execs the user binary) or `dmz` (a tiny trampoline execs it, one extra
/// execve); `auto` lets the engine pick dmz only when the execve predictor
/// shows it cannot change the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecPathMode {
    Auto,
    Direct,
    Dmz,
}

/// What a file capability the bounding set cannot serve leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreflightMode {
    Enforce,
    Warn,
    Off,
}
