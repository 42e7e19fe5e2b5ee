//! Errors of policy loading and of the CLI helpers.

use std::path::PathBuf;

use thiserror::Error;

/// Where a load error is, for `file:line:column` messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem in one policy file. A policy with any such problem is not
/// loaded: no rule is ever silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{location}: {kind}")]
pub struct LoadError {
    pub location: Location,
    pub kind: LoadErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoadErrorKind {
    #[error("cannot read policy file: {0}; check the path and its permissions")]
    Io(String),
    #[error("invalid policy YAML: {0}; fix the document (unknown keys are rejected)")]
    Yaml(String),
    #[error(
        "unsupported {field} {got:?}: expected {expected:?}; this capcri reads only that schema"
    )]
    Header {
        field: &'static str,
        got: String,
        expected: &'static str,
    },
    #[error("policy {policy:?}: {message}")]
    Schema { policy: String, message: String },
    /// The same wording as the CRI path's InvalidArgument
    /// ([`crate::capabilities::kernel::CapParseError`]).
    #[error("policy {policy:?} rule {rule} {field}: {error}")]
    UnknownCapability {
        policy: String,
        rule: usize,
        field: &'static str,
        name: String,
        error: crate::capabilities::kernel::CapParseError,
    },
    #[error("policy {policy:?} {field}: CEL expression `{expression}` does not compile: {message}")]
    CelCompile {
        policy: String,
        field: String,
        expression: String,
        message: String,
    },
    #[error(
        "policy {policy:?} {field}: CEL expression `{expression}` returns {got}, expected {expected}; change the expression"
    )]
    CelType {
        policy: String,
        field: String,
        expression: String,
        expected: &'static str,
        got: String,
    },
    #[error(
        "policy {policy:?} {field}: CEL expression `{expression}` refers to unknown variable {name:?}; {hint}"
    )]
    CelUnknownVariable {
        policy: String,
        field: String,
        expression: String,
        name: String,
        /// The nearest variable and the list of them.
        hint: String,
    },
    /// The static checker's finding: an unknown field (with the valid
    /// ones), a type mismatch, a capability name that does not exist.
    #[error("policy {policy:?} {field}: CEL expression `{expression}`: {message}")]
    CelCheck {
        policy: String,
        field: String,
        expression: String,
        message: String,
    },
    /// `granted` (the computed sets) is known only after every add, drop
    /// and promotion, so only a deny condition may read it.
    #[error(
        "policy {policy:?} {field}: CEL expression `{expression}` reads `granted`, which exists only after the capability sets are computed; use it in a deny condition, or read container.capabilities here"
    )]
    GrantedOutsideDeny {
        policy: String,
        field: String,
        expression: String,
    },
    #[error("policy name {policy:?} is used twice (also in {other}); names must be unique")]
    DuplicateName { policy: String, other: String },
}

/// Errors of the CLI helpers (`capcri policy eval`).
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("policy directory {dir} has invalid policies:\n{report}")]
    Load { dir: PathBuf, report: String },
    #[error("pod config JSON is invalid: {0}; expected crictl's pod-config.json form")]
    PodJson(serde_json::Error),
    #[error("container config JSON is invalid: {0}; expected crictl's container-config.json form")]
    ContainerJson(serde_json::Error),
    #[error("container config: {0}")]
    Capability(#[from] super::facts::CapRequestError),
    #[error("cannot render decision as JSON: {0}")]
    Render(#[from] serde_json::Error),
}
