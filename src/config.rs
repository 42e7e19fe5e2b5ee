//! Daemon configuration: embedded defaults, then a TOML file, then flags.
//!
//! The defaults are those of a node runtime installed like containerd or
//! CRI-O: socket under /run, volatile state under /run (gone on reboot, as
//! are the containers), images and metadata under /var/lib.

use crate::image::RegistriesConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_SOCKET: &str = "/run/capcri/capcri.sock";
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/capcri/capcri-admin.sock";
pub const DEFAULT_STATE_DIR: &str = "/run/capcri";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/capcri";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Config {
    /// The CRI socket kubelet and crictl talk to.
    pub socket: PathBuf,
    /// capcri's admin API (explain, dry-run, policies): root only (0600,
    /// root:root), whatever `socket_gid` says.
    pub admin_socket: PathBuf,
    /// Group owning the CRI socket (mode 0660). 0 = root only. Never the
    /// admin socket's.
    pub socket_gid: u32,
    /// Volatile state: pod directories, bundles, monitor sockets.
    pub state_dir: PathBuf,
    /// Persistent data: images, layers, metadata, writable layers.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A `tracing` filter, e.g. "info" or "capcri=debug".
    pub log_level: String,
    /// Parent of every pod's cgroup, absolute (libcontainer's cgroup v1
    /// manager on a hybrid host needs absolute paths).
    pub cgroup_parent: String,
    /// Upper bound on the uncompressed size of one image layer: a gzip bomb
    /// fails the pull instead of filling the disk.
    pub max_layer_bytes: u64,
    /// Upper bound on the compressed size of one layer blob as downloaded:
    /// a descriptor declaring more is refused before any byte is fetched,
    /// and a body longer than its descriptor is cut off.
    pub max_compressed_layer_bytes: u64,
    /// Upper bound on the xattr bytes (names + values) of one layer entry:
    /// a layer with more is refused, naming the entry.
    pub max_entry_xattr_bytes: u64,
    /// Registry mirrors and plain-HTTP registries, like containerd's hosts.toml.
    pub registries: RegistriesConfig,
    /// Capability policies (YAML). Absent or empty: built-in defaults,
    /// which behave like containerd.
    pub policy_dir: PathBuf,
    /// How often the policy directory is checked for changes.
    pub policy_poll_seconds: u64,
    /// CNI network configs (the first by file name is used, as kubelet does).
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked up, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The streaming server behind Exec, Attach and PortForward. Loopback
    /// (its only authentication is the URL's token), port 0 = a free port,
    /// like containerd's default.
    pub stream_address: std::net::SocketAddr,
    /// Where `GET /metrics` (Prometheus, OpenMetrics text) is served; None
    /// (the default) serves no metrics. Any address is accepted: the
    /// endpoint has no authentication and exposes only counts and
    /// latencies, so bind loopback (127.0.0.1:9090) unless a scraper on
    /// another host needs it and the network is trusted.
    pub metrics_address: Option<std::net::SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: DEFAULT_SOCKET.into(),
            admin_socket: DEFAULT_ADMIN_SOCKET.into(),
            socket_gid: 0,
            state_dir: DEFAULT_STATE_DIR.into(),
            data_dir: DEFAULT_DATA_DIR.into(),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            cgroup_parent: "/capcri".into(),
            max_layer_bytes: 8 << 30,
            max_compressed_layer_bytes: crate::image::DEFAULT_MAX_COMPRESSED_LAYER_BYTES,
            max_entry_xattr_bytes: crate::image::unpack::DEFAULT_MAX_ENTRY_XATTR_BYTES,
            registries: RegistriesConfig::default(),
            policy_dir: crate::policy::DEFAULT_POLICY_DIR.into(),
            policy_poll_seconds: 2,
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            stream_address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_address: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

impl Config {
    /// Parses a TOML file over the embedded defaults.
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|reason| ConfigError::Parse {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn from_toml_str(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks what the types cannot: paths that must be absolute.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (setting, path) in [
            ("socket", &self.socket),
            ("admin_socket", &self.admin_socket),
            ("state_dir", &self.state_dir),
            ("data_dir", &self.data_dir),
            ("policy_dir", &self.policy_dir),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::Invalid {
                    setting: setting.into(),
                    reason: format!("{} is not an absolute path", path.display()),
                });
            }
        }
        // A pod's monitor socket is <state_dir>/pods/<64-hex id>/monitor.sock
        // and a unix socket path must fit in sun_path (108 bytes).
        let longest =
            self.state_dir.as_os_str().len() + "/pods/".len() + 64 + "/monitor.sock".len();
        if longest >= 108 {
            return Err(ConfigError::Invalid {
                setting: "state_dir".into(),
                reason: format!(
                    "{} is too long: pod monitor sockets under it would need {longest} bytes, unix sockets allow 107; use a shorter path",
                    self.state_dir.display()
                ),
            });
        }
        if !self.stream_address.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                setting: "stream_address".into(),
                reason: format!(
                    "{} is not loopback: the streaming server has no authentication but its URL tokens; use 127.0.0.1:PORT",
                    self.stream_address
                ),
            });
        }
        if !self.cgroup_parent.starts_with('/') {
            return Err(ConfigError::Invalid {
                setting: "cgroup_parent".into(),
                reason: format!(
                    "{:?} must be absolute (e.g. \"/capcri\"): libcontainer's cgroup v1 manager needs it",
                    self.cgroup_parent
                ),
            });
        }
        Ok(())
    }

    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }
    pub fn meta_dir(&self) -> PathBuf {
        self.data_dir.join("meta")
    }
    pub fn writable_layers_dir(&self) -> PathBuf {
        self.data_dir.join("containers")
    }
    pub fn cni_state_dir(&self) -> PathBuf {
        self.data_dir.join("cni")
    }
    pub fn pods_dir(&self) -> PathBuf {
        self.state_dir.join("pods")
    }
    pub fn bundles_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.state_dir.join("runtime")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        c.validate().unwrap();
    }

    #[test]
    fn mirrors_parse_like_containerd_hosts() {
        let c = Config::from_toml_str(
            r#"
            socket = "/tmp/x.sock"
            [registries]
            insecure = ["reg.local:5000"]
            [registries.mirrors]
            "registry.k8s.io" = ["127.0.0.1:5000"]
            "#,
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(
            c.registries.mirrors["registry.k8s.io"],
            vec!["127.0.0.1:5000"]
        );
        assert_eq!(c.registries.insecure, vec!["reg.local:5000"]);
    }

    #[test]
    fn stream_address_defaults_to_any_loopback_port_and_must_be_loopback() {
        let c = Config::default();
        assert_eq!(c.stream_address.to_string(), "127.0.0.1:0");
        let c = Config::from_toml_str("stream_address = \"127.0.0.1:10010\"").unwrap();
        assert_eq!(c.stream_address.port(), 10010);
        c.validate().unwrap();
        let c = Config::from_toml_str("stream_address = \"0.0.0.0:10010\"").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("stream_address")
        );
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        assert_eq!(Config::default().metrics_address, None);
        let c = Config::from_toml_str("metrics_address = \"127.0.0.1:9090\"").unwrap();
        assert_eq!(c.metrics_address, Some(([127, 0, 0, 1], 9090).into()));
        c.validate().unwrap();
        let err = Config::from_toml_str("metrics_address = \"localhost\"").unwrap_err();
        assert!(err.contains("metrics_address"), "{err}");
    }

    #[test]
    fn unknown_keys_and_relative_paths_are_refused() {
        let err = Config::from_toml_str("sockett = \"/x\"").unwrap_err();
        assert!(err.contains("sockett"), "{err}");
        let c = Config::from_toml_str("state_dir = \"run\"").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("state_dir"));
    }
}
