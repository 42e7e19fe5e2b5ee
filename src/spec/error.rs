//! Errors of the CRI -> OCI translation. Each names the field or object at
//! fault, the cause and what to change, because kubelet shows the message
//! verbatim in the pod's events.

/// Why a CRI container config could not be turned into an OCI runtime spec.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// A CRI field holds a value the kernel or the OCI spec cannot express.
    #[error("invalid container config: {field}: {reason}")]
    InvalidConfig { field: String, reason: String },

    /// A pod sandbox field holds a value capcri cannot honour.
    #[error("invalid pod sandbox config: {field}: {reason}")]
    InvalidPodConfig { field: String, reason: String },

    /// Neither the CRI config nor the image says what to run.
    #[error(
        "container {container:?} has no command: the CRI config sets neither command nor args \
         and the image has no Entrypoint or Cmd; set `command` in the container spec"
    )]
    NoCommand { container: String },

    /// A user name (CRI run_as_username or image USER) is not in the image.
    #[error(
        "user {user:?} (from {source_field}) is not in the image's /etc/passwd{detail}; \
         use a numeric uid or add the user to the image"
    )]
    UnknownUser {
        user: String,
        source_field: String,
        detail: String,
    },

    /// A group name of the image USER ("user:group") is not in the image.
    #[error(
        "group {group:?} (from {source_field}) is not in the image's /etc/group{detail}; \
         use a numeric gid or add the group to the image"
    )]
    UnknownGroup {
        group: String,
        source_field: String,
        detail: String,
    },

    /// The Localhost seccomp profile is not a valid OCI/Docker profile.
    #[error(
        "seccomp profile {profile:?} is not a valid OCI seccomp profile: {reason}; \
         fix the JSON of the profile on the node or use RuntimeDefault"
    )]
    InvalidSeccompProfile { profile: String, reason: String },
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_pod(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::InvalidPodConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
