//! The facts a decision is made from, and their CEL form.
//!
//! CEL sees four variables: `pod`, `container`, `image`, `node`, with the
//! camelCase field names documented on each struct. Numbers are CEL `int`,
//! so `container.user.uid == 0` works without `u` suffixes.
//!
//! Capability names are canonical everywhere CEL sees them: `SYS_ADMIN`
//! (trimmed, upper-case, no `CAP_` prefix, kernel bit order), with `ALL`
//! expanded: `container.capabilities.{add,drop,addAmbient}` plus the
//! `addAll`/`dropAll` flags. Deny conditions also see a fifth variable,
//! `granted.{bounding,effective,permitted,inheritable,ambient}`: the sets
//! the runtime gives the container's first process once every add, drop
//! and promotion is applied. A deny on `'X' in granted.bounding` holds
//! whatever spelling or route (ALL, another policy, privileged) put X there.

use std::collections::{BTreeMap, HashMap};

use cel::common::types::{CelBool, CelInt, CelList, CelMap, CelMapKey, CelString};
use cel::{Context, Program};
use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};

use crate::capabilities::kernel::{CapList, CapParseError, CapSet, FileCaps, ThreadCaps};

/// The uid/gid the container process will run as, resolved by the caller
/// from `run_as_user`/`run_as_username` and the image's `/etc/passwd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResolvedIdentity {
    pub uid: u32,
    pub gid: u32,
}

/// `pod.*`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
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
    /// The pod's own `sysctls` (CRI `linux.sysctls`), keys as written.
    pub sysctls: BTreeMap<String, String>,
}

/// `container.user.*`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct UserFacts {
    pub uid: u32,
    pub gid: u32,
    pub non_root: bool,
}

/// `container.capabilities.*`. The struct holds the names as the pod spec
/// wrote them; CEL never sees those: the engine normalises them once
/// ([`CapabilityRequest::lists`], the parser the kernel's sets come from)
/// and CEL sees canonical names (`SYS_ADMIN`: trimmed, upper-case, no
/// `CAP_` prefix, kernel bit order) with `ALL` expanded to every
/// capability, plus `addAll`/`dropAll` saying whether `ALL` was written.
/// Issue 12 item 5: comparing raw strings let "sys_admin", " SYS_ADMIN"
/// and "ALL" past a deny on 'SYS_ADMIN'.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CapabilityRequest {
    pub add: Vec<String>,
    pub drop: Vec<String>,
    /// CRI `add_ambient_capabilities` (KEP-2763).
    pub add_ambient: Vec<String>,
}

/// The three lists of a [`CapabilityRequest`], normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestedCaps {
    pub add: CapList,
    pub drop: CapList,
    pub add_ambient: CapList,
}

/// An unknown name in one of the container's lists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("securityContext capabilities.{list}: {error}; fix the pod spec")]
pub struct CapRequestError {
    pub list: &'static str,
    pub error: CapParseError,
}

impl CapabilityRequest {
    /// Normalises the three lists; the first unknown name is the error.
    pub fn lists(&self) -> Result<RequestedCaps, CapRequestError> {
        let parse = |list: &'static str, names: &[String]| {
            CapList::parse(names).map_err(|error| CapRequestError { list, error })
        };
        Ok(RequestedCaps {
            add: parse("add", &self.add)?,
            drop: parse("drop", &self.drop)?,
            add_ambient: parse("addAmbient", &self.add_ambient)?,
        })
    }
}

/// `container.*`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ImageFacts {
    /// The name the image is known by, the one ContainerStatus reports
    /// (`image::names::reported_name`): the reference the pod spec gave
    /// when kubelet sent it, else the image's first tag; never the bare id
    /// kubelet puts in CreateContainer when the image has a name.
    pub name: String,
    /// Every name of the image: its repo tags, then its repo digests.
    pub names: Vec<String>,
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

/// `container.entrypoint.*`: the binary execve will load, resolved by the
/// engine in the image (PATH search, symlinks followed inside the rootfs,
/// the file's own mode read without following a link out of it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct EntrypointFacts {
    /// The path found (after the PATH search), before symlinks.
    pub path: String,
    /// Whether a regular file was found there.
    pub found: bool,
    /// Mode bit 04000: execve changes the effective uid to the owner's
    /// (ignored under no_new_privs, as the kernel does).
    pub setuid: bool,
    /// Mode bit 02000 with group-execute: the effective gid changes.
    pub setgid: bool,
    /// The file's permitted capabilities (`security.capability`).
    pub file_caps: CapSet,
}

/// `node.*`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
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

impl PodFacts {
    /// The pod facts of a CRI pod config; the runtime handler comes from
    /// RunPodSandboxRequest, not from the config.
    pub fn from_cri(pod: &PodSandboxConfig, runtime_handler: &str) -> PodFacts {
        let meta = pod.metadata.clone().unwrap_or_default();
        let pod_ns = pod
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        PodFacts {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            labels: pod.labels.clone().into_iter().collect(),
            annotations: pod.annotations.clone().into_iter().collect(),
            runtime_handler: runtime_handler.to_string(),
            host_network: pod_ns.is_some_and(|n| n.network == NAMESPACE_MODE_NODE),
            host_pid: pod_ns.is_some_and(|n| n.pid == NAMESPACE_MODE_NODE),
            host_ipc: pod_ns.is_some_and(|n| n.ipc == NAMESPACE_MODE_NODE),
            sysctls: pod
                .linux
                .as_ref()
                .map(|l| l.sysctls.clone().into_iter().collect())
                .unwrap_or_default(),
        }
    }
}

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
        let pod_facts = PodFacts::from_cri(pod, runtime_handler);
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

    /// Binds the CEL variables that `needed` names to `ctx`. The values
    /// borrow the facts instead of copying them: a decision sits on the
    /// CreateContainer path, and deep-copying every fact into CEL values for
    /// variables no expression reads was most of its cost.
    ///
    /// `requested` is the normalised form of `container.capabilities`
    /// ([`CapabilityRequest::lists`]): CEL sees it, never the raw names.
    pub(crate) fn bind<'a>(
        &'a self,
        ctx: &mut Context<'_, 'a>,
        needed: CelVars,
        requested: RequestedCaps,
        entrypoint: &'a EntrypointFacts,
    ) {
        if needed.contains(CelVars::POD) {
            ctx.add_variable_as_val("pod", self.pod.to_val());
        }
        if needed.contains(CelVars::CONTAINER) {
            ctx.add_variable_as_val("container", self.container.to_val(requested, entrypoint));
        }
        if needed.contains(CelVars::IMAGE) {
            ctx.add_variable_as_val("image", self.image.to_val());
        }
        if needed.contains(CelVars::NODE) {
            ctx.add_variable_as_val(
                "node",
                val_map([("kernelVersion", val_str(&self.node.kernel_version))]),
            );
        }
    }
}

/// Which of the CEL variables a set of expressions reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CelVars(u8);

impl CelVars {
    pub const POD: CelVars = CelVars(1);
    pub const CONTAINER: CelVars = CelVars(2);
    pub const IMAGE: CelVars = CelVars(4);
    pub const NODE: CelVars = CelVars(8);
    /// `granted`: bound only for deny conditions, after the sets exist.
    pub const GRANTED: CelVars = CelVars(16);
    pub const ALL: CelVars = CelVars(31);

    pub fn contains(self, other: CelVars) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: CelVars) -> CelVars {
        CelVars(self.0 | other.0)
    }

    /// The variables `program` names. A leading dot (an absolute name)
    /// still names the same variable.
    pub fn of(program: &Program) -> CelVars {
        let refs = program.references();
        let mut vars = CelVars::default();
        for (name, bit) in [
            ("pod", CelVars::POD),
            ("container", CelVars::CONTAINER),
            ("image", CelVars::IMAGE),
            ("node", CelVars::NODE),
            ("granted", CelVars::GRANTED),
        ] {
            if refs.has_variable(name) || refs.has_variable(format!(".{name}")) {
                vars = vars.union(bit);
            }
        }
        vars
    }
}

/// Binds `granted`: the five sets the runtime gives the container's first
/// process, after the base set, the container's and the policies' adds and
/// drops, and ambient promotion. A deny on `granted.bounding` holds
/// whatever spelling or route (`ALL`, a policy add) put the capability
/// there. Canonical names, kernel bit order.
pub(crate) fn bind_granted(ctx: &mut Context<'_, '_>, caps: &ThreadCaps) {
    ctx.add_variable_as_val(
        "granted",
        val_map([
            ("bounding", val_caps(caps.bounding)),
            ("effective", val_caps(caps.effective)),
            ("permitted", val_caps(caps.permitted)),
            ("inheritable", val_caps(caps.inheritable)),
            ("ambient", val_caps(caps.ambient)),
        ]),
    );
}

type Val<'a> = Box<dyn cel::common::value::Val + 'a>;

/// Canonical names of `set`; `short_name` is `'static`, so nothing is copied.
fn val_caps(set: CapSet) -> Val<'static> {
    Box::new(CelList::from(
        set.iter()
            .map(|c| Box::new(CelString::from(c.short_name())) as Val<'static>)
            .collect::<Vec<_>>(),
    ))
}

fn val_str(v: &str) -> Val<'_> {
    Box::new(CelString::from(v))
}

fn val_bool<'a>(v: bool) -> Val<'a> {
    Box::new(CelBool::from(v))
}

fn val_int<'a>(v: u32) -> Val<'a> {
    Box::new(CelInt::from(i64::from(v)))
}

fn val_list<'a>(v: &'a [String]) -> Val<'a> {
    Box::new(CelList::from(
        v.iter().map(|x| val_str(x)).collect::<Vec<_>>(),
    ))
}

fn val_str_map<'a>(m: impl Iterator<Item = (&'a str, &'a str)>) -> Val<'a> {
    let inner: HashMap<CelMapKey<'a>, Val<'a>> =
        m.map(|(k, v)| (CelMapKey::from(k), val_str(v))).collect();
    Box::new(CelMap::from(inner))
}

fn val_map<'a, const N: usize>(fields: [(&'static str, Val<'a>); N]) -> Val<'a> {
    let inner: HashMap<CelMapKey<'a>, Val<'a>> = fields
        .into_iter()
        .map(|(k, v)| (CelMapKey::from(k), v))
        .collect();
    Box::new(CelMap::from(inner))
}

impl PodFacts {
    fn to_val(&self) -> Val<'_> {
        val_map([
            ("name", val_str(&self.name)),
            ("namespace", val_str(&self.namespace)),
            ("uid", val_str(&self.uid)),
            (
                "labels",
                val_str_map(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ),
            (
                "annotations",
                val_str_map(
                    self.annotations
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                ),
            ),
            ("runtimeHandler", val_str(&self.runtime_handler)),
            ("hostNetwork", val_bool(self.host_network)),
            ("hostPID", val_bool(self.host_pid)),
            ("hostIPC", val_bool(self.host_ipc)),
            (
                "sysctls",
                val_str_map(self.sysctls.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ),
        ])
    }
}

impl ContainerFacts {
    fn to_val<'a>(&'a self, requested: RequestedCaps, entry: &'a EntrypointFacts) -> Val<'a> {
        // Later entries win, as in the runtime's environment.
        let env: BTreeMap<&str, &str> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        val_map([
            ("name", val_str(&self.name)),
            ("command", val_list(&self.command)),
            ("args", val_list(&self.args)),
            ("workingDir", val_str(&self.working_dir)),
            ("env", val_str_map(env.into_iter())),
            (
                "user",
                val_map([
                    ("uid", val_int(self.user.uid)),
                    ("gid", val_int(self.user.gid)),
                    ("nonRoot", val_bool(self.user.non_root)),
                ]),
            ),
            (
                "capabilities",
                val_map([
                    ("add", val_caps(requested.add.expanded())),
                    ("drop", val_caps(requested.drop.expanded())),
                    ("addAmbient", val_caps(requested.add_ambient.expanded())),
                    ("addAll", val_bool(requested.add.all)),
                    ("dropAll", val_bool(requested.drop.all)),
                ]),
            ),
            (
                "entrypoint",
                val_map([
                    ("path", val_str(&entry.path)),
                    ("found", val_bool(entry.found)),
                    ("setuid", val_bool(entry.setuid)),
                    ("setgid", val_bool(entry.setgid)),
                    ("fileCaps", val_caps(entry.file_caps)),
                ]),
            ),
            ("privileged", val_bool(self.privileged)),
            ("noNewPrivs", val_bool(self.no_new_privs)),
            ("readOnlyRootfs", val_bool(self.read_only_rootfs)),
            ("seccomp", val_str(&self.seccomp)),
        ])
    }
}

impl ImageFacts {
    fn to_val(&self) -> Val<'_> {
        let file_caps: HashMap<CelMapKey<'_>, Val<'_>> = self
            .file_caps
            .iter()
            // Canonical names like every other capability list CEL sees
            // (they were `CAP_X` here, so `'NET_RAW' in ...` never matched).
            .map(|(path, fc)| (CelMapKey::from(path.as_str()), val_caps(fc.permitted)))
            .collect();
        val_map([
            ("name", val_str(&self.name)),
            ("names", val_list(&self.names)),
            ("digest", val_str(&self.digest)),
            ("user", val_str(&self.user)),
            ("entrypoint", val_list(&self.entrypoint)),
            ("cmd", val_list(&self.cmd)),
            ("env", val_list(&self.env)),
            ("workingDir", val_str(&self.working_dir)),
            ("fileCaps", Box::new(CelMap::from(file_caps))),
        ])
    }
}
