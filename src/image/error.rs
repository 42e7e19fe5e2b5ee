//! Errors of the image subsystem. Every message names the image, layer or
//! entry concerned, the cause and what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image {image} not found: {reason}; check the repository name and tag (or the registry mirror configuration)"
    )]
    NotFound { image: String, reason: String },

    #[error(
        "invalid image reference {reference:?}: {reason}; use the form [host[:port]/]path[:tag][@sha256:<64 hex>]"
    )]
    InvalidReference { reference: String, reason: String },

    #[error(
        "registry {registry} refused access to {image}: {reason}; pass valid credentials (CRI AuthConfig / imagePullSecrets)"
    )]
    Unauthorized {
        image: String,
        registry: String,
        reason: String,
    },

    #[error(
        "registry {registry} failed for {image}: {reason}; check that the registry is reachable, or configure a mirror / the insecure list for plain-HTTP registries"
    )]
    Registry {
        image: String,
        registry: String,
        reason: String,
    },

    #[error(
        "digest mismatch for {object}: expected {expected}, got {actual}; the registry or the network served corrupt or tampered content, pull again or fix the registry"
    )]
    DigestMismatch {
        object: String,
        expected: String,
        actual: String,
    },

    #[error(
        "layer {layer} refused: entry {entry:?} {reason}; this layer tries to write outside its own directory or is malformed, rebuild the image"
    )]
    HostileLayer {
        layer: String,
        entry: String,
        reason: String,
    },

    /// A char or block device entry where capcri lacks CAP_MKNOD (a user
    /// namespace, a dropped capability): refused rather than skipped, so the
    /// layer on disk is never silently different from the image.
    #[error(
        "layer {layer} refused: entry {entry:?} is a {kind} device node ({major}:{minor}) and capcri cannot create device nodes here ({cause}: no CAP_MKNOD, e.g. in a user namespace or with the capability dropped); containers get their devices from the runtime spec, not from image layers: rebuild the image without device nodes, or run capcri with CAP_MKNOD"
    )]
    DeviceNodeNotPermitted {
        layer: String,
        entry: String,
        kind: &'static str,
        major: u32,
        minor: u32,
        cause: String,
    },

    /// The image config USER is numeric-looking but not a valid id ("-1",
    /// "+5", "4294967296", " 7", "0x10"), or otherwise unparseable.
    #[error(
        "image {image} refused: its config USER {user:?} is invalid: {reason}; a USER that is not a plain name or a decimal id would run as a different user than the one reported to kubelet (CVE-2024-40635 class), rebuild the image with a valid USER"
    )]
    InvalidUser {
        image: String,
        user: String,
        reason: String,
    },

    #[error(
        "{object} is too large: more than {limit} bytes; raise max_layer_bytes if the image is trusted"
    )]
    TooLarge { object: String, limit: u64 },

    /// A descriptor declares more bytes than the cap allows: refused
    /// before any byte is downloaded.
    #[error(
        "{object} is too large: its descriptor ({media_type}, {digest}) declares {size} bytes, above the limit of {limit} bytes; raise {setting} if the image is trusted"
    )]
    BlobTooLarge {
        object: String,
        digest: String,
        media_type: String,
        size: i64,
        limit: u64,
        setting: &'static str,
    },

    /// A manifest or index over containerd's 4 MiB bound: declared so by
    /// its index entry or Content-Length, or streamed past it.
    #[error(
        "manifest {reference} of {image} is larger than {limit} bytes ({size} bytes {how}): real manifests are a few KiB, so the registry is broken or hostile; the pull was stopped"
    )]
    ManifestTooLarge {
        image: String,
        reference: String,
        size: u64,
        /// "declared", "received so far"
        how: &'static str,
        limit: u64,
    },

    /// The registry sent more than the descriptor declared: cut off.
    #[error(
        "{object} ({digest}): the registry sent more than the {declared} bytes its descriptor declares; the download was cut off: the registry is broken or hostile"
    )]
    BodyOverDeclared {
        object: String,
        digest: String,
        declared: u64,
    },

    #[error("{object} is not supported: {reason}")]
    Unsupported { object: String, reason: String },

    #[error("{op} {path}: {source}")]
    Io {
        op: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "image store entry {path} is corrupt: {reason}; remove it (the image is pulled again on demand)"
    )]
    Corrupt { path: PathBuf, reason: String },

    #[error("overlay mount on {target} failed: {reason}")]
    Mount { target: PathBuf, reason: String },
}

impl ImageError {
    pub(crate) fn io(
        op: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ImageError::Io {
            op: op.into(),
            path: path.into(),
            source,
        }
    }
}
