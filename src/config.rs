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

pub use crate::util::cgroup_paths::CgroupDriver;

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
    /// The cgroup driver; None (the default): systemd when PID 1 is
    /// systemd and /sys/fs/cgroup is cgroup2 (as on kubeadm nodes), else
    /// cgroupfs. Resolved at startup (`pod::cgroups::CgroupSetup`).
    pub cgroup_driver: Option<CgroupDriver>,
    /// Parent of the cgroup of every pod kubelet gives no `cgroup_parent`:
    /// an absolute path for cgroupfs (libcontainer's cgroup v1 manager
    /// needs absolute paths), a slice for systemd. Empty (the default):
    /// "/capcri" or "capcri.slice".
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
    /// Runtime handlers (RuntimeClass `handler`) RunPodSandbox accepts
    /// besides the default "", each reported by Status with its features.
    /// All run pods the same way; the names exist so RuntimeClasses made
    /// for other runtimes keep working.
    pub runtime_handlers: Vec<String>,
    /// Directories of CDI spec files (`CDI_devices`, DRA), in increasing
    /// priority: a device defined in a later directory wins, as in the CDI
    /// library.
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Device nodes owned by the container's run_as_user/run_as_group
    /// instead of the host node's owner (containerd's setting of the same
    /// name; off by default, as there).
    pub device_ownership_from_security_context: bool,
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
            cgroup_driver: None,
            cgroup_parent: String::new(),
            max_layer_bytes: 8 << 30,
            max_compressed_layer_bytes: crate::image::DEFAULT_MAX_COMPRESSED_LAYER_BYTES,
            max_entry_xattr_bytes: crate::image::unpack::DEFAULT_MAX_ENTRY_XATTR_BYTES,
            registries: RegistriesConfig::default(),
            policy_dir: crate::capabilities::policy::DEFAULT_POLICY_DIR.into(),
            policy_poll_seconds: 2,
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            stream_address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_address: None,
            runtime_handlers: vec!["capcri".into(), "runc".into()],
            cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
            device_ownership_from_security_context: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source}; fix the path given to --config (or CAPCRI_CONFIG)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file that is not valid TOML, has an unknown key, a value
    /// of the wrong type or a value a setting cannot take; rendered like a
    /// compiler error, `file:line:column: key `k`: what was expected`.
    #[error(
        "{}:{line}:{column}: {}{reason}",
        path.display(),
        key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default()
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        /// The dotted key the error is about (`registries.insecure`);
        /// None for a TOML syntax error outside any key.
        key: Option<String>,
        reason: String,
    },
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

/// unix(7): sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

impl Config {
    /// Reads and parses a TOML file over the embedded defaults and checks
    /// its values, so a mistake is reported with its file, line and key.
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_toml(path, &text)
    }

    /// Parses and checks `text`, the contents of the config file `path`
    /// (used only in messages). Every key is optional (`#[serde(default)]`
    /// on every table, the defaults being `Config::default()`), unknown
    /// keys are refused with the valid ones listed.
    pub fn parse_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let located = |span: std::ops::Range<usize>, key: Option<String>, reason: String| {
            let (line, column) = line_column(text, span.start);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                key,
                reason,
            }
        };
        // Syntax first: a document that does not parse has no keys to name.
        let doc = toml::de::DeTable::parse(text)
            .map_err(|e| located(e.span().unwrap_or(0..0), None, e.message().to_string()))?;
        let config: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let key = key_at(doc.get_ref(), &span, "");
            let mut reason = e.message().replacen("unknown field", "unknown key", 1);
            if !reason.starts_with("unknown key")
                && let Some(example) = key.as_deref().and_then(example_of)
            {
                reason.push_str(&format!("; for example {example}"));
            }
            located(span, key, reason)
        })?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { setting, reason } => {
                match doc
                    .get_ref()
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == setting.as_str())
                {
                    Some((_, value)) => located(value.span(), Some(setting), reason),
                    None => ConfigError::Invalid { setting, reason },
                }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// [`Config::parse_toml`] for text with no file behind it.
    pub fn from_toml_str(text: &str) -> Result<Config, String> {
        Self::parse_toml(Path::new("<config>"), text).map_err(|e| e.to_string())
    }

    /// Checks what the types cannot (absolute paths, lengths, loopback);
    /// each error names the setting and the form it expects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &str, reason: String| {
            Err(ConfigError::Invalid {
                setting: setting.into(),
                reason,
            })
        };
        for (setting, path, example) in [
            ("socket", &self.socket, DEFAULT_SOCKET),
            ("admin_socket", &self.admin_socket, DEFAULT_ADMIN_SOCKET),
            ("state_dir", &self.state_dir, DEFAULT_STATE_DIR),
            ("data_dir", &self.data_dir, DEFAULT_DATA_DIR),
            (
                "policy_dir",
                &self.policy_dir,
                crate::capabilities::policy::DEFAULT_POLICY_DIR,
            ),
            ("cni_conf_dir", &self.cni_conf_dir, "/etc/cni/net.d"),
        ] {
            if !path.is_absolute() {
                return invalid(
                    setting,
                    format!(
                        "{:?} is not an absolute path; expected an absolute path such as {example:?}",
                        path.display().to_string()
                    ),
                );
            }
        }
        if let Some(dir) = self.cni_bin_dirs.iter().find(|d| !d.is_absolute()) {
            return invalid(
                "cni_bin_dirs",
                format!(
                    "{:?} is not an absolute path; expected absolute directories such as [\"/opt/cni/bin\"]",
                    dir.display().to_string()
                ),
            );
        }
        for (setting, path) in [
            ("socket", &self.socket),
            ("admin_socket", &self.admin_socket),
        ] {
            let len = path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return invalid(
                    setting,
                    format!(
                        "{} is {len} bytes long; expected a path of at most {MAX_SOCKET_PATH} bytes (a unix socket's limit)",
                        path.display()
                    ),
                );
            }
        }
        if self.socket == self.admin_socket {
            return invalid(
                "admin_socket",
                format!(
                    "{} is also the CRI socket; expected a path of its own, such as {DEFAULT_ADMIN_SOCKET:?}",
                    self.admin_socket.display()
                ),
            );
        }
        // A pod's monitor socket is <state_dir>/pods/<64-hex id>/monitor.sock
        // and a unix socket path must fit in sun_path (108 bytes).
        let longest =
            self.state_dir.as_os_str().len() + "/pods/".len() + 64 + "/monitor.sock".len();
        if longest > MAX_SOCKET_PATH {
            return invalid(
                "state_dir",
                format!(
                    "{} is too long: pod monitor sockets under it would need {longest} bytes, unix sockets allow {MAX_SOCKET_PATH}; expected a path of at most {} bytes, such as {DEFAULT_STATE_DIR:?}",
                    self.state_dir.display(),
                    self.state_dir.as_os_str().len() - (longest - MAX_SOCKET_PATH)
                ),
            );
        }
        if !self.stream_address.ip().is_loopback() {
            return invalid(
                "stream_address",
                format!(
                    "{} is not loopback: the streaming server has no authentication but its URL tokens; expected a loopback address such as \"127.0.0.1:0\"",
                    self.stream_address
                ),
            );
        }
        if let Some(dir) = self.cdi_spec_dirs.iter().find(|d| !d.is_absolute()) {
            return invalid(
                "cdi_spec_dirs",
                format!(
                    "{:?} is not an absolute path; expected absolute directories such as [\"/etc/cdi\", \"/var/run/cdi\"]",
                    dir.display().to_string()
                ),
            );
        }
        if let Some(h) = self
            .runtime_handlers
            .iter()
            .find(|h| !valid_handler_name(h))
        {
            return invalid(
                "runtime_handlers",
                format!(
                    "{h:?} is not a handler name; expected DNS labels such as [\"capcri\", \"runc\"] (\"\" is always served)"
                ),
            );
        }
        if !self.cgroup_parent.is_empty() {
            use crate::util::cgroup_paths::{validate_cgroupfs_path, validate_slice};
            let checked = match self.cgroup_driver {
                Some(CgroupDriver::Cgroupfs) => validate_cgroupfs_path(&self.cgroup_parent),
                Some(CgroupDriver::Systemd) => validate_slice(&self.cgroup_parent),
                None if self.cgroup_parent.starts_with('/') => {
                    validate_cgroupfs_path(&self.cgroup_parent)
                }
                None => validate_slice(&self.cgroup_parent),
            };
            if let Err(e) = checked {
                return invalid(
                    "cgroup_parent",
                    format!(
                        "{e}; expected an absolute cgroup path such as \"/capcri\" (cgroupfs driver) or a slice such as \"capcri.slice\" (systemd driver)"
                    ),
                );
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log_level) {
            return invalid(
                "log_level",
                format!(
                    "{:?} is not a tracing filter ({e}); expected a level or directives such as \"info\" or \"info,capcri=debug\"",
                    self.log_level
                ),
            );
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

/// A valid line for `key` (a dotted path), shown after a type error so
/// the message says the expected form, not only serde's type name.
fn example_of(key: &str) -> Option<&'static str> {
    const EXAMPLES: &[(&str, &str)] = &[
        ("socket", r#"socket = "/run/capcri/capcri.sock""#),
        (
            "admin_socket",
            r#"admin_socket = "/run/capcri/capcri-admin.sock""#,
        ),
        ("socket_gid", "socket_gid = 0"),
        ("state_dir", r#"state_dir = "/run/capcri""#),
        ("data_dir", r#"data_dir = "/var/lib/capcri""#),
        ("log_format", r#"log_format = "json""#),
        ("log_level", r#"log_level = "info""#),
        ("cgroup_parent", r#"cgroup_parent = "/capcri""#),
        ("cgroup_driver", r#"cgroup_driver = "systemd""#),
        ("max_layer_bytes", "max_layer_bytes = 8589934592"),
        ("max_entry_xattr_bytes", "max_entry_xattr_bytes = 262144"),
        ("policy_dir", r#"policy_dir = "/etc/capcri/policies""#),
        ("policy_poll_seconds", "policy_poll_seconds = 2"),
        ("cni_conf_dir", r#"cni_conf_dir = "/etc/cni/net.d""#),
        ("cni_bin_dirs", r#"cni_bin_dirs = ["/opt/cni/bin"]"#),
        ("stream_address", r#"stream_address = "127.0.0.1:10010""#),
        ("metrics_address", r#"metrics_address = "127.0.0.1:9090""#),
        (
            "runtime_handlers",
            r#"runtime_handlers = ["capcri", "runc"]"#,
        ),
        (
            "cdi_spec_dirs",
            r#"cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]"#,
        ),
        (
            "device_ownership_from_security_context",
            "device_ownership_from_security_context = false",
        ),
        (
            "registries",
            r#"[registries] with insecure = ["registry.lan:5000"]"#,
        ),
        ("registries.insecure", r#"insecure = ["registry.lan:5000"]"#),
        (
            "registries.mirrors",
            r#"[registries.mirrors] with "docker.io" = ["http://127.0.0.1:5000"]"#,
        ),
    ];
    if key.starts_with("registries.mirrors.") {
        // One upstream host's endpoint list.
        return Some(r#""docker.io" = ["http://127.0.0.1:5000"] under [registries.mirrors]"#);
    }
    EXAMPLES.iter().find(|(k, _)| *k == key).map(|(_, e)| *e)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The dotted key (`registries.mirrors."docker.io"`) whose key or value
/// holds the error span, the deepest one: toml's error spans point at an
/// unknown key itself or at the value of the wrong type.
fn key_at(
    table: &toml::de::DeTable<'_>,
    span: &std::ops::Range<usize>,
    prefix: &str,
) -> Option<String> {
    let holds =
        |outer: std::ops::Range<usize>| outer.contains(&span.start) || outer.start == span.start;
    let path_of = |name: &str| {
        let bare = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let segment = if bare {
            name.to_string()
        } else {
            format!("{name:?}")
        };
        if prefix.is_empty() {
            segment
        } else {
            format!("{prefix}.{segment}")
        }
    };
    // Tables first, whatever their own span: a `[header]` table's keys lie
    // outside the span of the header.
    for (key, value) in table.iter() {
        if let toml::de::DeValue::Table(inner) = value.get_ref()
            && let Some(found) = key_at(inner, span, &path_of(key.get_ref()))
        {
            return Some(found);
        }
    }
    table
        .iter()
        .find(|(key, value)| holds(key.span()) || holds(value.span()))
        .map(|(key, _)| path_of(key.get_ref()))
}

/// A RuntimeClass handler is a DNS label (Kubernetes validates it so);
/// `runtime_handlers` is checked with it at load, RunPodSandbox too.
pub fn valid_handler_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_toml(Path::new("/etc/capcri/config.toml"), text)
    }

    /// The rendered error for `text`, which must be refused.
    fn refused(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("{text:?} was accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Every setting, as `Config` serializes it: the keys a config file
    /// may hold. The table of `each_top_level_key_alone` must cover them.
    fn top_level_keys() -> Vec<String> {
        let c = Config {
            metrics_address: Some(([127, 0, 0, 1], 9090).into()),
            cgroup_driver: Some(CgroupDriver::Systemd),
            ..Config::default()
        };
        let toml::Value::Table(t) = toml::Value::try_from(&c).unwrap() else {
            panic!("Config serializes to a table")
        };
        t.keys().cloned().collect()
    }

    #[test]
    fn empty_file_gives_defaults() {
        for text in ["", "\n\n", "# only a comment\n"] {
            let c = parse(text).unwrap();
            assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
            assert_eq!(c.admin_socket, PathBuf::from(DEFAULT_ADMIN_SOCKET));
            assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
            assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
            assert!(c.registries.mirrors.is_empty() && c.registries.insecure.is_empty());
            assert_eq!(c.metrics_address, None);
            c.validate().unwrap();
        }
    }

    #[test]
    fn only_mirrors_keeps_every_other_default() {
        for text in [
            "[registries.mirrors]\n\"registry.k8s.io\" = [\"127.0.0.1:5000\"]\n",
            "[registries]\nmirrors = { \"registry.k8s.io\" = [\"127.0.0.1:5000\"] }\n",
            "registries.mirrors.\"registry.k8s.io\" = [\"127.0.0.1:5000\"]\n",
        ] {
            let c = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(
                c.registries.mirrors["registry.k8s.io"],
                vec!["127.0.0.1:5000"]
            );
            assert!(c.registries.insecure.is_empty(), "{text:?}");
            assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        }
    }

    #[test]
    fn only_insecure_or_an_empty_registries_table() {
        let c = parse("[registries]\ninsecure = [\"reg.lan:5000\"]\n").unwrap();
        assert_eq!(c.registries.insecure, vec!["reg.lan:5000"]);
        assert!(c.registries.mirrors.is_empty());
        let c = parse("[registries]\n").unwrap();
        assert!(c.registries.mirrors.is_empty() && c.registries.insecure.is_empty());
        let c = parse("[registries.mirrors]\n").unwrap();
        assert!(c.registries.mirrors.is_empty());
    }

    #[test]
    fn mirrors_parse_like_containerd_hosts() {
        let c = parse(
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
    fn each_top_level_key_alone() {
        type Check = fn(&Config) -> bool;
        let cases: &[(&str, &str, Check)] = &[
            ("socket", "\"/run/x/cri.sock\"", |c| {
                c.socket == Path::new("/run/x/cri.sock")
            }),
            ("admin_socket", "\"/run/x/admin.sock\"", |c| {
                c.admin_socket == Path::new("/run/x/admin.sock")
            }),
            ("socket_gid", "1000", |c| c.socket_gid == 1000),
            ("state_dir", "\"/run/x\"", |c| {
                c.state_dir == Path::new("/run/x")
            }),
            ("data_dir", "\"/srv/capcri\"", |c| {
                c.data_dir == Path::new("/srv/capcri")
            }),
            ("log_format", "\"json\"", |c| {
                c.log_format == LogFormat::Json
            }),
            ("log_level", "\"info,capcri=debug\"", |c| {
                c.log_level == "info,capcri=debug"
            }),
            ("cgroup_parent", "\"/kubepods/capcri\"", |c| {
                c.cgroup_parent == "/kubepods/capcri"
            }),
            ("cgroup_driver", "\"systemd\"", |c| {
                c.cgroup_driver == Some(CgroupDriver::Systemd)
            }),
            ("max_layer_bytes", "1024", |c| c.max_layer_bytes == 1024),
            ("max_entry_xattr_bytes", "4096", |c| {
                c.max_entry_xattr_bytes == 4096
            }),
            ("max_compressed_layer_bytes", "2048", |c| {
                c.max_compressed_layer_bytes == 2048
            }),
            ("registries", "{ insecure = [\"r:1\"] }", |c| {
                c.registries.insecure == ["r:1"]
            }),
            ("policy_dir", "\"/srv/policies\"", |c| {
                c.policy_dir == Path::new("/srv/policies")
            }),
            ("policy_poll_seconds", "30", |c| c.policy_poll_seconds == 30),
            ("cni_conf_dir", "\"/srv/cni\"", |c| {
                c.cni_conf_dir == Path::new("/srv/cni")
            }),
            ("cni_bin_dirs", "[\"/srv/cni/bin\"]", |c| {
                c.cni_bin_dirs == [PathBuf::from("/srv/cni/bin")]
            }),
            ("stream_address", "\"127.0.0.1:10010\"", |c| {
                c.stream_address.port() == 10010
            }),
            ("metrics_address", "\"127.0.0.1:9090\"", |c| {
                c.metrics_address == Some(([127, 0, 0, 1], 9090).into())
            }),
            ("runtime_handlers", "[\"kata\", \"capcri\"]", |c| {
                c.runtime_handlers == ["kata", "capcri"]
            }),
            ("cdi_spec_dirs", "[\"/srv/cdi\"]", |c| {
                c.cdi_spec_dirs == [PathBuf::from("/srv/cdi")]
            }),
            ("device_ownership_from_security_context", "true", |c| {
                c.device_ownership_from_security_context
            }),
        ];
        let mut covered: Vec<String> = cases.iter().map(|(k, _, _)| k.to_string()).collect();
        covered.sort();
        let mut keys = top_level_keys();
        keys.sort();
        assert_eq!(covered, keys, "every setting needs a case here");
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        for (key, value, check) in cases {
            let c = parse(&format!("{key} = {value}\n"))
                .unwrap_or_else(|e| panic!("{key} alone is refused: {e}"));
            assert!(check(&c), "{key} = {value} not applied: {c:?}");
            // Everything else keeps its default.
            let mut got = toml::Value::try_from(&c).unwrap();
            let mut want = defaults.clone();
            got.as_table_mut().unwrap().remove(*key);
            want.as_table_mut().unwrap().remove(*key);
            assert_eq!(got, want, "{key} alone changed another setting");
        }
    }

    #[test]
    fn errors_name_file_line_column_key_and_expected_form() {
        // (config, line:col, key, what the message must say)
        let cases: &[(&str, &str, &str, &str)] = &[
            // Wrong types, at the top level and in nested tables.
            ("socket = 5\n", "1:10", "socket", "expected"),
            ("\nsocket_gid = \"root\"\n", "2:14", "socket_gid", "u32"),
            ("socket_gid = -1\n", "1:14", "socket_gid", "u32"),
            ("max_layer_bytes = 1.5\n", "1:19", "max_layer_bytes", "u64"),
            ("log_format = \"xml\"\n", "1:14", "log_format", "`human`"),
            (
                "cni_bin_dirs = \"/opt/cni/bin\"\n",
                "1:16",
                "cni_bin_dirs",
                "sequence",
            ),
            ("cni_bin_dirs = [1]\n", "1:17", "cni_bin_dirs", "expected"),
            (
                "stream_address = \"localhost\"\n",
                "1:18",
                "stream_address",
                "for example stream_address = \"127.0.0.1:10010\"",
            ),
            (
                "metrics_address = 9090\n",
                "1:19",
                "metrics_address",
                "expected",
            ),
            (
                "registries = \"docker.io\"\n",
                "1:14",
                "registries",
                "mirrors",
            ),
            (
                "[registries]\ninsecure = \"reg.lan:5000\"\n",
                "2:12",
                "registries.insecure",
                "sequence",
            ),
            (
                "[registries.mirrors]\n\"docker.io\" = \"127.0.0.1:5000\"\n",
                "2:15",
                "registries.mirrors.\"docker.io\"",
                "sequence",
            ),
            (
                "[registries]\nmirrors = [\"127.0.0.1:5000\"]\n",
                "2:11",
                "registries.mirrors",
                "map",
            ),
            // Unknown keys: refused, the valid ones listed.
            (
                "sockett = \"/x\"\n",
                "1:1",
                "sockett",
                "`socket`, `admin_socket`",
            ),
            (
                "socket = \"/x.sock\"\n[registry]\n",
                "2:2",
                "registry",
                "`registries`",
            ),
            (
                "[registries]\ninsecure = []\nmirror = {}\n",
                "3:1",
                "registries.mirror",
                "expected `mirrors` or `insecure`",
            ),
            // Values a setting cannot take.
            (
                "socket = \"capcri.sock\"\n",
                "1:10",
                "socket",
                "absolute path",
            ),
            (
                "admin_socket = \"\"\n",
                "1:16",
                "admin_socket",
                "absolute path",
            ),
            (
                "state_dir = \"run\"\n",
                "1:13",
                "state_dir",
                "absolute path",
            ),
            (
                "data_dir = \"./data\"\n",
                "1:12",
                "data_dir",
                "absolute path",
            ),
            (
                "policy_dir = \"p\"\n",
                "1:14",
                "policy_dir",
                "absolute path",
            ),
            (
                "cni_conf_dir = \"net.d\"\n",
                "1:16",
                "cni_conf_dir",
                "absolute path",
            ),
            (
                "cni_bin_dirs = [\"bin\"]\n",
                "1:16",
                "cni_bin_dirs",
                "absolute",
            ),
            (
                "cgroup_parent = \"capcri\"\n",
                "1:17",
                "cgroup_parent",
                "absolute",
            ),
            (
                "cgroup_parent = \"/capcri/../etc\"\n",
                "1:17",
                "cgroup_parent",
                "\"..\" component",
            ),
            (
                "cgroup_driver = \"systemd\"\ncgroup_parent = \"/capcri\"\n",
                "2:17",
                "cgroup_parent",
                "systemd cgroup driver",
            ),
            (
                "cgroup_driver = \"cgroupfs\"\ncgroup_parent = \"capcri.slice\"\n",
                "2:17",
                "cgroup_parent",
                "cgroupfs driver",
            ),
            (
                "cgroup_driver = \"lxc\"\n",
                "1:17",
                "cgroup_driver",
                "cgroupfs",
            ),
            (
                "stream_address = \"0.0.0.0:10010\"\n",
                "1:18",
                "stream_address",
                "loopback",
            ),
            (
                "log_level = \"capcri=loud\"\n",
                "1:13",
                "log_level",
                "tracing filter",
            ),
            (
                "admin_socket = \"/run/capcri/capcri.sock\"\n",
                "1:16",
                "admin_socket",
                "of its own",
            ),
        ];
        for (text, at, key, says) in cases {
            let err = refused(text);
            let prefix = format!("/etc/capcri/config.toml:{at}: key `{key}`: ");
            assert!(
                err.starts_with(&prefix),
                "{text:?}: {err}\n  wanted {prefix}"
            );
            assert!(err.contains(says), "{text:?}: {err}\n  wanted {says:?}");
        }
    }

    #[test]
    fn socket_paths_must_fit_a_unix_socket() {
        let long = format!("/run/{}/capcri.sock", "d".repeat(100));
        for key in ["socket", "admin_socket"] {
            let err = refused(&format!("{key} = {long:?}\n"));
            assert!(
                err.starts_with("/etc/capcri/config.toml:1:") && err.contains(key),
                "{err}"
            );
            assert!(err.contains("at most 107 bytes"), "{err}");
        }
        // Exactly 107 bytes is accepted.
        let fits = format!("/{}", "s".repeat(106));
        parse(&format!("socket = {fits:?}\n")).unwrap();
        let err = refused(&format!("state_dir = \"/{}\"\n", "s".repeat(40)));
        assert!(
            err.contains("key `state_dir`") && err.contains("too long"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (text, at) in [
            ("socket = \"/x\n", "1:"),
            ("socket = /x\n", "1:10"),
            ("[registries\n", "1:"),
            ("socket = \"/a\"\nsocket = \"/b\"\n", "2:"),
        ] {
            let err = refused(text);
            let prefix = format!("/etc/capcri/config.toml:{at}");
            assert!(err.starts_with(&prefix), "{text:?}: {err}");
        }
    }

    #[test]
    fn stream_address_defaults_to_any_loopback_port_and_must_be_loopback() {
        let c = Config::default();
        assert_eq!(c.stream_address.to_string(), "127.0.0.1:0");
        let c = Config::from_toml_str("stream_address = \"127.0.0.1:10010\"").unwrap();
        assert_eq!(c.stream_address.port(), 10010);
        c.validate().unwrap();
        let err = Config::from_toml_str("stream_address = \"0.0.0.0:10010\"").unwrap_err();
        assert!(err.contains("stream_address"), "{err}");
        // A flag's value is checked by validate(), naming the setting.
        let c = Config {
            stream_address: ([0, 0, 0, 0], 1).into(),
            ..Config::default()
        };
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
    fn positions_count_characters() {
        assert_eq!(line_column("", 0), (1, 1));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(line_column("é = 1", 3), (1, 3));
        assert_eq!(line_column("x", 99), (1, 2));
    }
}
