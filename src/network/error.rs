//! Errors of the CNI attachment code.
//!
//! Every message names the object (network config file, plugin, pod), the
//! cause and what an operator can do about it, because these strings end up
//! in the CRI `Status` RPC's NetworkReady reason and in RunPodSandbox errors
//! that kubelet shows as pod events.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while reading CNI configs or running plugins.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable network config: the NetworkReady condition is false.
    #[error("CNI network not ready: {reason}")]
    NotReady { reason: String },

    /// A plugin named by a config's `type` is not an executable in any bin dir.
    #[error(
        "CNI plugin {plugin:?} not found in {searched:?}: install it (Debian: package containernetworking-plugins) or add its directory to the CNI bin dirs"
    )]
    PluginNotFound {
        plugin: String,
        searched: Vec<PathBuf>,
    },

    /// The plugin reported an error with the CNI error JSON (`code`, `msg`, `details`).
    #[error(
        "CNI plugin {plugin} {command} failed with code {code}: {msg}{}",
        details_suffix(details)
    )]
    Plugin {
        plugin: String,
        command: String,
        code: u64,
        msg: String,
        details: String,
    },

    /// The plugin exited non-zero without a parsable CNI error on stdout.
    #[error(
        "CNI plugin {plugin} {command} exited with {status} and no CNI error JSON; its output: {output}"
    )]
    PluginFailed {
        plugin: String,
        command: String,
        status: String,
        output: String,
    },

    /// The plugin ran longer than the configured timeout and was killed.
    #[error(
        "CNI plugin {plugin} {command} did not finish within {timeout:?} and was killed; check the plugin (IPAM daemon, locks) or raise the CNI plugin timeout"
    )]
    PluginTimeout {
        plugin: String,
        command: String,
        timeout: Duration,
    },

    /// The plugin succeeded but printed something that is not a CNI result.
    #[error("CNI plugin {plugin} {command} returned an invalid result: {reason}")]
    InvalidResult {
        plugin: String,
        command: String,
        reason: String,
    },

    /// A network config file that cannot be used.
    #[error("invalid CNI network config {file}: {reason}")]
    InvalidConfig { file: PathBuf, reason: String },

    /// The pod request cannot be passed to plugins (e.g. a field breaks CNI_ARGS).
    #[error("invalid pod network request for pod {pod_id:?}: {reason}")]
    InvalidRequest { pod_id: String, reason: String },

    /// A file system operation on configs, state or plugins failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

impl CniError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        CniError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
