//! Network config files: which one is in force and what it says.
//!
//! kubelet's dockershim, containerd and CRI-O all use the lexically first
//! `*.conflist`, `*.conf` or `*.json` file of the config dir; a `.conf` holds
//! one plugin config and is run as a list of one. Parsing is pure (bytes in,
//! [`NetworkList`] out); only [`load_conf_dir`] touches the file system.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::CniError;

/// File name endings that are network configs, as in libcni's `ConfFiles`.
pub const CONF_EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// A network config list, normalised from a `.conflist` or a single `.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    /// `disableCheck`: the runtime must not call CHECK for this list.
    pub disable_check: bool,
    /// Each plugin's config object as written, `type` checked to be a plain file name.
    pub plugins: Vec<Map<String, Value>>,
    pub file: PathBuf,
}

impl NetworkList {
    /// The `type` of each plugin, in ADD order.
    pub fn plugin_types(&self) -> Vec<String> {
        self.plugins
            .iter()
            .map(|p| plugin_type(p).to_string())
            .collect()
    }

    /// The list as one JSON document, so it can be stored with a pod's
    /// attachment and the same plugins get DEL after the config dir changes.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        obj.insert("name".into(), Value::String(self.name.clone()));
        obj.insert("disableCheck".into(), Value::Bool(self.disable_check));
        obj.insert(
            "plugins".into(),
            Value::Array(self.plugins.iter().cloned().map(Value::Object).collect()),
        );
        Value::Object(obj)
    }
}

/// The validated `type` of a plugin config (empty only if never validated).
pub fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Whether `file_name` is a network config file by its ending.
pub fn is_conf_file_name(file_name: &str) -> bool {
    !file_name.starts_with('.')
        && Path::new(file_name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| CONF_EXTENSIONS.contains(&e))
}

/// The config file that is in force among `file_names`: the first in byte order.
pub fn select_conf_file<'a>(file_names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    file_names
        .into_iter()
        .filter(|n| is_conf_file_name(n))
        .min()
}

/// Parse a config file's bytes. A document with a `plugins` array is a list
/// whatever its file ending (CRI-O accepts that too); otherwise it must be a
/// single plugin config with a `type`.
pub fn parse_network_config(file: &Path, bytes: &[u8]) -> Result<NetworkList, CniError> {
    let invalid = |reason: String| CniError::InvalidConfig {
        file: file.to_path_buf(),
        reason,
    };
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = doc else {
        return Err(invalid("the document is not a JSON object".into()));
    };
    let name = required_string(&obj, "name").map_err(&invalid)?;
    validate_network_name(&name).map_err(&invalid)?;
    let cni_version = required_string(&obj, "cniVersion").map_err(&invalid)?;
    parse_version(&cni_version).ok_or_else(|| {
        invalid(format!(
            "cniVersion {cni_version:?} is not a version like \"1.0.0\""
        ))
    })?;

    let (plugins, disable_check) = match obj.get("plugins") {
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(invalid("the \"plugins\" list is empty".into()));
            }
            let mut plugins = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Value::Object(p) = item else {
                    return Err(invalid(format!("plugins[{i}] is not a JSON object")));
                };
                validate_plugin_type(p).map_err(|r| invalid(format!("plugins[{i}]: {r}")))?;
                plugins.push(p.clone());
            }
            let disable_check = match obj.get("disableCheck") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                // The spec writes it as a string "true"/"false"; libcni accepts both.
                Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
                Some(other) => {
                    return Err(invalid(format!(
                        "disableCheck must be true or false, not {other}"
                    )));
                }
            };
            (plugins, disable_check)
        }
        Some(_) => return Err(invalid("\"plugins\" is not a list".into())),
        None => {
            validate_plugin_type(&obj).map_err(&invalid)?;
            (vec![obj.clone()], false)
        }
    };
    Ok(NetworkList {
        name,
        cni_version,
        disable_check,
        plugins,
        file: file.to_path_buf(),
    })
}

fn required_string(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None => Err(format!("\"{key}\" is missing or empty")),
        Some(other) => Err(format!("\"{key}\" must be a string, not {other}")),
    }
}

/// SPEC.md: a network name starts with an alphanumeric character, followed
/// by alphanumerics, `_`, `.` or `-`.
fn validate_network_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(())
    } else {
        Err(format!(
            "network name {name:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-'"
        ))
    }
}

/// `type` names a file inside the bin dirs; a path there would let a config
/// run any executable on the host, so only plain file names are accepted.
fn validate_plugin_type(plugin: &Map<String, Value>) -> Result<(), String> {
    let ty = required_string(plugin, "type")?;
    if ty.contains('/') || ty == "." || ty == ".." {
        return Err(format!(
            "plugin type {ty:?} must be a file name in the CNI bin dirs, not a path"
        ));
    }
    Ok(())
}

/// `major.minor.patch` of a CNI version; a missing patch counts as 0.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// Whether `v` is at least `min`; unparsable versions count as old.
pub fn version_at_least(v: &str, min: (u64, u64, u64)) -> bool {
    parse_version(v).is_some_and(|p| p >= min)
}

/// Read the config dir and parse the file in force.
///
/// A missing dir, no config file or an invalid first file all mean the
/// network is not ready; the reason names the dir or file so an operator
/// knows what to fix.
pub fn load_conf_dir(dir: &Path) -> Result<NetworkList, CniError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CniError::NotReady {
                reason: format!(
                    "CNI config dir {} does not exist; install a network plugin that writes a *.conflist there",
                    dir.display()
                ),
            });
        }
        Err(e) => {
            return Err(CniError::NotReady {
                reason: format!("cannot read CNI config dir {}: {e}", dir.display()),
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CniError::NotReady {
            reason: format!("cannot read CNI config dir {}: {e}", dir.display()),
        })?;
        // Directories and sockets named *.conf are not configs; symlinks to files are.
        let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
            names.push(name.to_string());
        }
    }
    let Some(chosen) = select_conf_file(names.iter().map(String::as_str)) else {
        return Err(CniError::NotReady {
            reason: format!(
                "no network config (*.conflist, *.conf, *.json) in {}; install a network plugin",
                dir.display()
            ),
        });
    };
    let file = dir.join(chosen);
    let bytes = std::fs::read(&file).map_err(|e| CniError::NotReady {
        reason: format!("cannot read CNI network config {}: {e}", file.display()),
    })?;
    parse_network_config(&file, &bytes).map_err(|e| CniError::NotReady {
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selection_takes_lexically_first_config_file() {
        let names = [
            "99-late.conflist",
            "10-a.conf",
            "05-b.json",
            "01-readme.txt",
            ".00-hidden.conf",
        ];
        assert_eq!(select_conf_file(names), Some("05-b.json"));
        assert_eq!(select_conf_file(["x.yaml", "y"]), None);
    }

    #[test]
    fn single_conf_becomes_list_of_one() {
        let bytes = serde_json::to_vec(&json!({
            "cniVersion": "0.4.0", "name": "net1", "type": "bridge", "bridge": "cni0"
        }))
        .unwrap();
        let list = parse_network_config(Path::new("/x/10.conf"), &bytes).unwrap();
        assert_eq!(list.name, "net1");
        assert_eq!(list.plugin_types(), vec!["bridge"]);
        assert_eq!(list.plugins[0]["bridge"], "cni0");
    }

    #[test]
    fn invalid_configs_are_rejected_with_reason() {
        let cases = [
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}),
                "empty",
            ),
            (
                json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}),
                "\"name\"",
            ),
            (
                json!({"name": "n", "plugins": [{"type": "bridge"}]}),
                "cniVersion",
            ),
            (
                json!({"cniVersion": "x", "name": "n", "type": "bridge"}),
                "not a version",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../sh"}]}),
                "not a path",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "-n", "type": "bridge"}),
                "must start",
            ),
            (json!({"cniVersion": "1.0.0", "name": "n"}), "\"type\""),
            (json!([1]), "not a JSON object"),
        ];
        for (doc, want) in cases {
            let bytes = serde_json::to_vec(&doc).unwrap();
            let err = parse_network_config(Path::new("/x/a.conflist"), &bytes).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{doc}: {msg}");
            assert!(msg.contains("/x/a.conflist"), "{msg}");
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(version_at_least("0.10.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
        assert!(!version_at_least("garbage", (0, 4, 0)));
        assert_eq!(parse_version("0.3"), Some((0, 3, 0)));
    }
}
