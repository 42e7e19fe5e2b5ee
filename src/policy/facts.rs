//! The facts a decision is made from, and their CEL form.
//!
//! CEL sees four variables: `pod`, `container`, `image`, `node`, with the
//! camelCase field names documented on each struct. Numbers are CEL `int`,
//! so `container.user.uid == 0` works without `u` suffixes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::Value;
use cel::objects::{Key, Map};
use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};

use crate::caps::FileCaps;

/// The uid/gid the container process will run as, resolved by the caller
/// from `run_as_user`/`run_as_username` and the image's `/etc/passwd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResolvedIdentity {
    pub uid: u32,
    pub gid: u32,
}

/// `pod.*`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runtime_handler: String,
    pub host_network: bool,
    #[serde(rename = "hostPID")]
    pub host_pid: bool,
    #[serde(rename = "hostIPC")]
    pub host_ipc: bool,
}

/// `container.user.*`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserFacts {
    pub uid: u32,
    pub gid: u32,
    pub non_root: bool,
}

/// `container.capabilities.*`: the names exactly as the pod spec wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CapabilityRequest {
    pub add: Vec<String>,
    pub drop: Vec<String>,
    /// CRI `add_ambient_capabilities` (KEP-2763).
    pub add_ambient: Vec<String>,
}

/// `container.*`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerFacts {
    pub name: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    /// The container's own environment (CRI `envs`), before merging with
    /// the image's.
    pub env: Vec<(String, String)>,
    pub user: UserFacts,
    pub capabilities: CapabilityRequest,
    pub privileged: bool,
    /// `allowPrivilegeEscalation: false` in Kubernetes terms.
    pub no_new_privs: bool,
    pub read_only_rootfs: bool,
    /// `RuntimeDefault`, `Unconfined` or `Localhost/<ref>`.
    pub seccomp: String,
}

/// `image.*`, filled by the caller from the image config and its
/// file-capability index.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageFacts {
    pub name: String,
    pub digest: String,
    /// Config `User`, as written.
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Config `Env`, `KEY=value` strings.
    pub env: Vec<String>,
    pub working_dir: String,
    /// Every file with a `security.capability` xattr. CEL sees a map from
    /// path to the list of permitted capability names.
    pub file_caps: BTreeMap<String, FileCaps>,
}

/// `node.*`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeFacts {
    pub kernel_version: String,
}

/// Everything the policy engine knows about one CreateContainer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Facts {
    pub pod: PodFacts,
    pub container: ContainerFacts,
    pub image: ImageFacts,
    pub node: NodeFacts,
}

/// CRI `NamespaceMode.NODE`: the host's namespace.
const NAMESPACE_MODE_NODE: i32 = 2;

impl Facts {
    /// Gathers facts from the CRI request. The identity is resolved by the
    /// caller (it needs the image's passwd file); the runtime handler comes
    /// from RunPodSandboxRequest, not from the config.
    pub fn from_cri(
        pod: &PodSandboxConfig,
        container: &ContainerConfig,
        image: ImageFacts,
        node: NodeFacts,
        identity: ResolvedIdentity,
        runtime_handler: &str,
    ) -> Facts {
        let meta = pod.metadata.clone().unwrap_or_default();
        let pod_ns = pod
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let pod_facts = PodFacts {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            labels: pod.labels.clone().into_iter().collect(),
            annotations: pod.annotations.clone().into_iter().collect(),
            runtime_handler: runtime_handler.to_string(),
            host_network: pod_ns.is_some_and(|n| n.network == NAMESPACE_MODE_NODE),
            host_pid: pod_ns.is_some_and(|n| n.pid == NAMESPACE_MODE_NODE),
            host_ipc: pod_ns.is_some_and(|n| n.ipc == NAMESPACE_MODE_NODE),
        };
        let sc = container
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let caps = sc.capabilities.unwrap_or_default();
        let seccomp = match sc.seccomp {
            Some(p) => match p.profile_type {
                0 => "RuntimeDefault".to_string(),
                1 => "Unconfined".to_string(),
                _ => format!("Localhost/{}", p.localhost_ref),
            },
            // The deprecated string field is still sent by older kubelets.
            #[allow(deprecated)]
            None if !sc.seccomp_profile_path.is_empty() => sc.seccomp_profile_path,
            None => "Unconfined".to_string(),
        };
        let container_facts = ContainerFacts {
            name: container
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            command: container.command.clone(),
            args: container.args.clone(),
            working_dir: container.working_dir.clone(),
            env: container
                .envs
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            user: UserFacts {
                uid: identity.uid,
                gid: identity.gid,
                non_root: identity.uid != 0,
            },
            capabilities: CapabilityRequest {
                add: caps.add_capabilities,
                drop: caps.drop_capabilities,
                add_ambient: caps.add_ambient_capabilities,
            },
            privileged: sc.privileged,
            no_new_privs: sc.no_new_privs,
            read_only_rootfs: sc.readonly_rootfs,
            seccomp,
        };
        Facts {
            pod: pod_facts,
            container: container_facts,
            image,
            node,
        }
    }

    /// argv as the runtime will exec it: CRI command overrides the image
    /// entrypoint, CRI args override the image cmd (the Kubernetes rule).
    pub fn argv(&self) -> Vec<String> {
        let c = &self.container;
        let i = &self.image;
        let mut argv = if c.command.is_empty() {
            i.entrypoint.clone()
        } else {
            c.command.clone()
        };
        if !c.args.is_empty() {
            argv.extend(c.args.iter().cloned());
        } else if c.command.is_empty() {
            argv.extend(i.cmd.iter().cloned());
        }
        argv
    }

    /// `PATH` of the merged environment (container env over image env),
    /// with the default a runtime uses when neither sets one.
    pub fn path_env(&self) -> String {
        if let Some((_, v)) = self.container.env.iter().rev().find(|(k, _)| k == "PATH") {
            return v.clone();
        }
        if let Some(v) = self
            .image
            .env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
        {
            return v.to_string();
        }
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()
    }

    /// The four CEL variables.
    pub(crate) fn cel_values(&self) -> [(&'static str, Value); 4] {
        [
            ("pod", self.pod.to_cel()),
            ("container", self.container.to_cel()),
            ("image", self.image.to_cel()),
            (
                "node",
                map([("kernelVersion", s(&self.node.kernel_version))]),
            ),
        ]
    }
}

fn s(v: &str) -> Value {
    Value::String(Arc::new(v.to_string()))
}

fn list(v: &[String]) -> Value {
    Value::List(Arc::new(v.iter().map(|x| s(x)).collect()))
}

fn str_map(m: &BTreeMap<String, String>) -> Value {
    let inner: HashMap<Key, Value> = m
        .iter()
        .map(|(k, v)| (Key::from(k.as_str()), s(v)))
        .collect();
    Value::Map(Map {
        map: Arc::new(inner),
    })
}

fn map<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let inner: HashMap<Key, Value> = fields.into_iter().map(|(k, v)| (Key::from(k), v)).collect();
    Value::Map(Map {
        map: Arc::new(inner),
    })
}

impl PodFacts {
    fn to_cel(&self) -> Value {
        map([
            ("name", s(&self.name)),
            ("namespace", s(&self.namespace)),
            ("uid", s(&self.uid)),
            ("labels", str_map(&self.labels)),
            ("annotations", str_map(&self.annotations)),
            ("runtimeHandler", s(&self.runtime_handler)),
            ("hostNetwork", Value::Bool(self.host_network)),
            ("hostPID", Value::Bool(self.host_pid)),
            ("hostIPC", Value::Bool(self.host_ipc)),
        ])
    }
}

impl ContainerFacts {
    fn to_cel(&self) -> Value {
        let env: BTreeMap<String, String> = self.env.iter().cloned().collect();
        map([
            ("name", s(&self.name)),
            ("command", list(&self.command)),
            ("args", list(&self.args)),
            ("workingDir", s(&self.working_dir)),
            ("env", str_map(&env)),
            (
                "user",
                map([
                    ("uid", Value::Int(i64::from(self.user.uid))),
                    ("gid", Value::Int(i64::from(self.user.gid))),
                    ("nonRoot", Value::Bool(self.user.non_root)),
                ]),
            ),
            (
                "capabilities",
                map([
                    ("add", list(&self.capabilities.add)),
                    ("drop", list(&self.capabilities.drop)),
                    ("addAmbient", list(&self.capabilities.add_ambient)),
                ]),
            ),
            ("privileged", Value::Bool(self.privileged)),
            ("noNewPrivs", Value::Bool(self.no_new_privs)),
            ("readOnlyRootfs", Value::Bool(self.read_only_rootfs)),
            ("seccomp", s(&self.seccomp)),
        ])
    }
}

impl ImageFacts {
    fn to_cel(&self) -> Value {
        let file_caps: HashMap<Key, Value> = self
            .file_caps
            .iter()
            .map(|(path, fc)| (Key::from(path.as_str()), list(&fc.permitted.names())))
            .collect();
        map([
            ("name", s(&self.name)),
            ("digest", s(&self.digest)),
            ("user", s(&self.user)),
            ("entrypoint", list(&self.entrypoint)),
            ("cmd", list(&self.cmd)),
            ("env", list(&self.env)),
            ("workingDir", s(&self.working_dir)),
            (
                "fileCaps",
                Value::Map(Map {
                    map: Arc::new(file_caps),
                }),
            ),
        ])
    }
}
