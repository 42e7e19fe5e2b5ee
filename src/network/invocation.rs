//! What a plugin is given: its stdin config and its environment (SPEC.md
//! "Parameters" and "Network Configuration Lists"). Pure functions, so the
//! exact bytes a plugin sees are unit tested without running anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::conf::{NetworkList, version_at_least};

/// The CNI commands capcri issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

/// A port mapping as the `portMappings` capability of CONVENTIONS.md spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniPortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// Traffic shaping for the `bandwidth` capability (bits per second, bits), as
/// set by the kubernetes.io/{ingress,egress}-bandwidth pod annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniBandwidth {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_burst: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_burst: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The `dns` capability (servers, searches, options) from the pod's DNSConfig.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniDns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Values offered to plugins through `runtimeConfig`, keyed by capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeCapabilities {
    #[serde(default)]
    pub port_mappings: Vec<CniPortMapping>,
    #[serde(default)]
    pub bandwidth: Option<CniBandwidth>,
    #[serde(default)]
    pub dns: Option<CniDns>,
}

impl RuntimeCapabilities {
    /// The value for one capability name, or None when capcri has nothing for it.
    fn value_for(&self, capability: &str) -> Option<Value> {
        match capability {
            "portMappings" if !self.port_mappings.is_empty() => {
                serde_json::to_value(&self.port_mappings).ok()
            }
            "bandwidth" => self
                .bandwidth
                .as_ref()
                .and_then(|b| serde_json::to_value(b).ok()),
            "dns" => self.dns.as_ref().and_then(|d| serde_json::to_value(d).ok()),
            _ => None,
        }
    }
}

/// Convert CRI port mappings: entries without a host port publish nothing
/// (containerd skips them too), protocols become the lower-case names the
/// portmap plugin expects.
pub fn cni_port_mappings(mappings: &[k8s_cri::v1::PortMapping]) -> Vec<CniPortMapping> {
    mappings
        .iter()
        .filter(|m| m.host_port > 0 && m.container_port > 0)
        .map(|m| CniPortMapping {
            host_port: m.host_port,
            container_port: m.container_port,
            protocol: match k8s_cri::v1::Protocol::try_from(m.protocol) {
                Ok(k8s_cri::v1::Protocol::Udp) => "udp",
                Ok(k8s_cri::v1::Protocol::Sctp) => "sctp",
                _ => "tcp",
            }
            .to_string(),
            host_ip: m.host_ip.clone(),
        })
        .collect()
}

/// The pod identity passed in CNI_ARGS, in the keys kubelet has always used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIdentity {
    pub pod_id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl PodIdentity {
    /// `IgnoreUnknown=1` first, so plugins that do not know the K8S_ keys
    /// accept them (libcni's `args` convention).
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.pod_id, self.uid
        )
    }

    /// CNI_ARGS is `;`-separated `K=V`, and SPEC.md limits container IDs to
    /// alphanumerics plus `_.-`: reject what would corrupt either.
    pub fn validate(&self) -> Result<(), String> {
        let id = &self.pod_id;
        let id_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !id_ok {
            return Err(format!(
                "pod id {id:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-'"
            ));
        }
        for (field, value) in [
            ("name", &self.name),
            ("namespace", &self.namespace),
            ("uid", &self.uid),
        ] {
            if value.contains([';', '=', '\0']) {
                return Err(format!(
                    "pod {field} {value:?} contains ';', '=' or NUL, which CNI_ARGS cannot carry"
                ));
            }
        }
        Ok(())
    }
}

/// The stdin config of the plugin at `index` of `list`.
///
/// SPEC.md: `name` and `cniVersion` come from the list; `prevResult` is
/// the previous plugin's result on ADD and the ADD result on DEL/CHECK;
/// `runtimeConfig` carries only the capabilities the plugin declares with
/// `"capabilities": {"<name>": true}`.
pub fn plugin_stdin(
    list: &NetworkList,
    index: usize,
    prev_result: Option<&Value>,
    caps: &RuntimeCapabilities,
) -> Value {
    let mut conf = list.plugins.get(index).cloned().unwrap_or_default();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    } else {
        conf.remove("prevResult");
    }

    let declared: Vec<String> = match conf.get("capabilities") {
        Some(Value::Object(c)) => c
            .iter()
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    };
    let mut runtime = match conf.remove("runtimeConfig") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for cap in declared {
        if let Some(v) = caps.value_for(&cap) {
            runtime.insert(cap, v);
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

/// Whether DEL and CHECK get the stored ADD result as `prevResult`: the field
/// exists for them only from spec 0.4.0 on (libcni omits it before), and a
/// 0.3.x plugin may reject a field it does not know.
pub fn passes_prev_result_on_del(cni_version: &str) -> bool {
    version_at_least(cni_version, (0, 4, 0))
}

/// The CNI_* environment of one plugin run. `netns` is None on DEL when the
/// namespace is already gone: SPEC.md makes CNI_NETNS optional for DEL and
/// plugins then release what they hold outside it (IPAM, iptables).
pub fn plugin_env(
    command: CniCommand,
    container_id: &str,
    netns: Option<&Path>,
    ifname: &str,
    cni_args: &str,
    bin_dirs: &[PathBuf],
) -> Vec<(String, String)> {
    let path = bin_dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let mut env = vec![
        ("CNI_COMMAND".to_string(), command.as_str().to_string()),
        ("CNI_CONTAINERID".to_string(), container_id.to_string()),
    ];
    if let Some(ns) = netns {
        env.push(("CNI_NETNS".to_string(), ns.to_string_lossy().into_owned()));
    }
    env.push(("CNI_IFNAME".to_string(), ifname.to_string()));
    env.push(("CNI_ARGS".to_string(), cni_args.to_string()));
    env.push(("CNI_PATH".to_string(), path));
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> NetworkList {
        let doc = json!({
            "cniVersion": "1.0.0", "name": "podnet",
            "plugins": [
                {"type": "bridge", "name": "ignored", "cniVersion": "0.1.0", "bridge": "cni0"},
                {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}, "runtimeConfig": {"keep": 1}}
            ]
        });
        super::super::conf::parse_network_config(
            Path::new("/x/a.conflist"),
            &serde_json::to_vec(&doc).unwrap(),
        )
        .unwrap()
    }

    fn caps() -> RuntimeCapabilities {
        RuntimeCapabilities {
            port_mappings: vec![CniPortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            bandwidth: Some(CniBandwidth {
                ingress_rate: 1000,
                ..Default::default()
            }),
            dns: None,
        }
    }

    #[test]
    fn first_plugin_gets_list_name_and_version_without_prev_result() {
        let s = plugin_stdin(&list(), 0, None, &caps());
        assert_eq!(s["name"], "podnet");
        assert_eq!(s["cniVersion"], "1.0.0");
        assert_eq!(s["bridge"], "cni0");
        assert!(s.get("prevResult").is_none());
        assert!(
            s.get("runtimeConfig").is_none(),
            "bridge declares no capability"
        );
    }

    #[test]
    fn capable_plugins_get_only_their_runtime_config() {
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let s = plugin_stdin(&list(), 1, Some(&prev), &caps());
        assert_eq!(s["prevResult"], prev);
        assert_eq!(
            s["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        let s = plugin_stdin(&list(), 2, Some(&prev), &caps());
        assert_eq!(
            s["runtimeConfig"],
            json!({"keep": 1, "bandwidth": {"ingressRate": 1000}})
        );
    }

    #[test]
    fn empty_port_mappings_are_not_offered() {
        let s = plugin_stdin(&list(), 1, None, &RuntimeCapabilities::default());
        assert!(s.get("runtimeConfig").is_none());
    }

    #[test]
    fn cri_port_mappings_translate() {
        use k8s_cri::v1::{PortMapping, Protocol};
        let m = [
            PortMapping {
                protocol: Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            },
            PortMapping {
                protocol: Protocol::Tcp as i32,
                container_port: 80,
                host_port: 0,
                host_ip: String::new(),
            },
            PortMapping {
                protocol: Protocol::Sctp as i32,
                container_port: 9,
                host_port: 9,
                host_ip: String::new(),
            },
        ];
        let got = serde_json::to_value(cni_port_mappings(&m)).unwrap();
        assert_eq!(
            got,
            json!([
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
                {"hostPort": 9, "containerPort": 9, "protocol": "sctp"}
            ])
        );
    }

    #[test]
    fn cni_args_carry_kubelet_keys() {
        let id = PodIdentity {
            pod_id: "abc123".into(),
            name: "web-0".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
        };
        assert_eq!(
            id.cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
        assert!(id.validate().is_ok());
        let bad = PodIdentity {
            name: "a;b".into(),
            ..id.clone()
        };
        assert!(bad.validate().unwrap_err().contains("name"));
        let bad = PodIdentity {
            pod_id: "../x".into(),
            ..id
        };
        assert!(bad.validate().unwrap_err().contains("pod id"));
    }

    #[test]
    fn env_omits_netns_when_gone() {
        let dirs = [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")];
        let env = plugin_env(
            CniCommand::Del,
            "p1",
            None,
            "eth0",
            "IgnoreUnknown=1",
            &dirs,
        );
        assert!(env.iter().all(|(k, _)| k != "CNI_NETNS"));
        assert!(env.contains(&("CNI_PATH".into(), "/opt/cni/bin:/usr/lib/cni".into())));
        assert!(env.contains(&("CNI_COMMAND".into(), "DEL".into())));
        let env = plugin_env(
            CniCommand::Add,
            "p1",
            Some(Path::new("/run/netns/x")),
            "eth0",
            "",
            &dirs,
        );
        assert!(env.contains(&("CNI_NETNS".into(), "/run/netns/x".into())));
    }

    #[test]
    fn prev_result_on_del_only_from_0_4_0() {
        assert!(!passes_prev_result_on_del("0.3.1"));
        assert!(passes_prev_result_on_del("0.4.0"));
        assert!(passes_prev_result_on_del("1.0.0"));
    }
}
