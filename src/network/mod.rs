//! CNI networking of pods: attach a pod's pinned network namespace to the
//! network configured in the CNI config dir, and detach it again.
//!
//! Behaviour follows what kubelet users know from containerd and CRI-O:
//! the lexically first config file in the config dir is in force and is
//! re-read on every call (a network plugin's DaemonSet drops it in after
//! the node starts); plugins run as SPEC.md describes (env, stdin, chained
//! `prevResult`, reverse-order DEL, `runtimeConfig` capabilities); a failed
//! ADD is undone with DEL; what was attached is recorded under the state dir
//! so teardown after a daemon restart deletes exactly that.
//!
//! Layout: [`conf`] picks and parses configs, [`invocation`] builds each
//! plugin's stdin and environment, [`result`] reads plugin output (all pure);
//! [`exec`] runs a plugin and [`state`] keeps attachment records.

pub mod bandwidth;
pub mod conf;
pub mod error;
pub mod exec;
pub mod invocation;
pub mod result;
pub mod state;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

pub use bandwidth::bandwidth_from_annotations;
pub use conf::NetworkList;
pub use error::CniError;
pub use invocation::{
    CniBandwidth, CniCommand, CniDns, CniPortMapping, PodIdentity, RuntimeCapabilities,
};
use state::{AttachmentRecord, AttachmentStore};

/// Where configs, plugins and attachment records live.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// Network config dir, `/etc/cni/net.d` by kubelet convention.
    pub conf_dir: PathBuf,
    /// Plugin dirs, searched in order: `/opt/cni/bin` (upstream releases,
    /// network DaemonSets) before `/usr/lib/cni` (Debian's package).
    pub bin_dirs: Vec<PathBuf>,
    /// Where ADD results are kept for DEL.
    pub state_dir: PathBuf,
    /// A plugin running longer than this is killed (containerd: none, CRI-O
    /// and kubelet: minutes); a hung IPAM must not hang RunPodSandbox forever.
    pub plugin_timeout: Duration,
    /// The pod's interface name (CNI_IFNAME).
    pub ifname: String,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            state_dir: PathBuf::from("/var/lib/capcri/cni"),
            plugin_timeout: Duration::from_secs(60),
            ifname: "eth0".to_string(),
        }
    }
}

/// The network config in force, for the Status RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSummary {
    pub name: String,
    pub cni_version: String,
    pub file: PathBuf,
    /// Plugin types in ADD order.
    pub plugins: Vec<String>,
}

/// One pod's attach or detach request.
///
/// Callers do not call setup/teardown for host-network pods: teardown of an
/// unknown pod still runs DEL with the config in force, to release what a
/// crashed ADD may have taken.
#[derive(Debug, Clone, Default)]
pub struct PodNetworkRequest {
    /// The sandbox id (CNI_CONTAINERID, K8S_POD_INFRA_CONTAINER_ID).
    pub pod_id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pinned network namespace (a bind mount of /proc/<pid>/ns/net).
    pub netns: PathBuf,
    /// For plugins with the `portMappings` capability (portmap).
    pub port_mappings: Vec<k8s_cri::v1::PortMapping>,
    /// For plugins with the `dns` capability.
    pub dns: Option<k8s_cri::v1::DnsConfig>,
    /// For plugins with the `bandwidth` capability, from the
    /// kubernetes.io/{ingress,egress}-bandwidth annotations (see
    /// [`bandwidth_from_annotations`]).
    pub bandwidth: Option<CniBandwidth>,
}

impl PodNetworkRequest {
    /// The pod's identity, checked before any plugin sees it.
    fn valid_identity(&self) -> Result<PodIdentity, CniError> {
        let identity = self.identity();
        identity
            .validate()
            .map_err(|reason| CniError::InvalidRequest {
                pod_id: self.pod_id.clone(),
                reason,
            })?;
        Ok(identity)
    }

    fn identity(&self) -> PodIdentity {
        PodIdentity {
            pod_id: self.pod_id.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            uid: self.uid.clone(),
        }
    }

    fn capabilities(&self) -> RuntimeCapabilities {
        RuntimeCapabilities {
            port_mappings: invocation::cni_port_mappings(&self.port_mappings),
            bandwidth: self.bandwidth.clone(),
            dns: self.dns.as_ref().map(|d| CniDns {
                servers: d.servers.clone(),
                searches: d.searches.clone(),
                options: d.options.clone(),
            }),
        }
    }
}

/// The pod's network after setup.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNetworkStatus {
    /// First = primary pod IP; IPv4 before IPv6.
    pub ips: Vec<IpAddr>,
    /// The pod's interface (eth0 unless the result says otherwise).
    pub interface: String,
    /// The final ADD result as the last plugin printed it.
    pub raw_result: Value,
}

/// Attaches and detaches pod network namespaces with CNI plugins.
#[derive(Debug)]
pub struct CniNetwork {
    cfg: CniConfig,
    store: AttachmentStore,
    /// One lock per pod id: kubelet may retry StopPodSandbox while a
    /// RunPodSandbox for the same pod is still in ADD.
    pod_locks: crate::util::sync::KeyedLocks,
}

impl CniNetwork {
    pub fn new(cfg: CniConfig) -> CniNetwork {
        let store = AttachmentStore::new(cfg.state_dir.clone());
        CniNetwork {
            cfg,
            store,
            pod_locks: Default::default(),
        }
    }

    pub fn config(&self) -> &CniConfig {
        &self.cfg
    }

    /// The network config in force, re-read now. Err(NotReady) names the
    /// missing dir, file or plugin binary, for the NetworkReady condition.
    pub fn status(&self) -> Result<NetworkSummary, CniError> {
        let list = conf::load_conf_dir(&self.cfg.conf_dir)?;
        self.resolve_plugins(&list)
            .map_err(|e| CniError::NotReady {
                reason: format!("network config {}: {e}", list.file.display()),
            })?;
        for plugin in &list.plugins {
            // The IPAM plugin is run by the main plugin through CNI_PATH;
            // a missing one only shows at the first pod otherwise.
            if let Some(ipam) = plugin
                .get("ipam")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str)
            {
                exec::find_plugin(ipam, &self.cfg.bin_dirs).map_err(|e| CniError::NotReady {
                    reason: format!("network config {}: IPAM {e}", list.file.display()),
                })?;
            }
        }
        Ok(NetworkSummary {
            name: list.name.clone(),
            cni_version: list.cni_version.clone(),
            file: list.file.clone(),
            plugins: list.plugin_types(),
        })
    }

    /// ADD the pod to the network in force. On failure everything added is
    /// deleted again (SPEC.md: DEL all plugins in reverse order, as containerd does).
    pub async fn setup(&self, pod: &PodNetworkRequest) -> Result<PodNetworkStatus, CniError> {
        let step = crate::util::time::StepTimer::new("cni_add", &pod.pod_id);
        let identity = pod.valid_identity()?;
        if !is_netns(&pod.netns) {
            return Err(CniError::InvalidRequest {
                pod_id: pod.pod_id.clone(),
                reason: format!(
                    "{} is not a pinned network namespace (expected a bind mount of /proc/<pid>/ns/net)",
                    pod.netns.display()
                ),
            });
        }
        let list = conf::load_conf_dir(&self.cfg.conf_dir)?;
        let binaries = self.resolve_plugins(&list)?;

        let _guard = self.pod_locks.lock(&pod.pod_id).await;

        let caps = pod.capabilities();
        let mut record = AttachmentRecord {
            pod: identity.clone(),
            netns: pod.netns.clone(),
            ifname: self.cfg.ifname.clone(),
            network: list.to_json(),
            network_file: list.file.clone(),
            capabilities: caps.clone(),
            result: None,
        };
        self.store.save(&record)?;

        let cni_args = identity.cni_args();
        let env = invocation::plugin_env(
            CniCommand::Add,
            &pod.pod_id,
            Some(&pod.netns),
            &self.cfg.ifname,
            &cni_args,
            &self.cfg.bin_dirs,
        );
        step.done("conf+record");
        let mut prev: Option<Value> = None;
        for (i, binary) in binaries.iter().enumerate() {
            let stdin = invocation::plugin_stdin(&list, i, prev.as_ref(), &caps);
            let outcome = exec::run_plugin(
                binary,
                CniCommand::Add,
                &env,
                &stdin,
                self.cfg.plugin_timeout,
            )
            .await;
            match outcome {
                Ok(Value::Null) => {
                    let err = CniError::InvalidResult {
                        plugin: conf::plugin_type(&list.plugins[i]).to_string(),
                        command: "ADD".into(),
                        reason: "empty stdout; ADD must print a result".into(),
                    };
                    self.rollback(&record, &list, prev.as_ref()).await;
                    return Err(err);
                }
                Ok(result) => prev = Some(result),
                Err(err) => {
                    self.rollback(&record, &list, prev.as_ref()).await;
                    return Err(err);
                }
            }
            step.done("plugin");
        }
        let result = prev.unwrap_or(Value::Null);
        let addresses = match result::pod_addresses(&result, &self.cfg.ifname) {
            Ok(a) => a,
            Err(reason) => {
                self.rollback(&record, &list, Some(&result)).await;
                return Err(CniError::InvalidResult {
                    plugin: list.plugin_types().last().cloned().unwrap_or_default(),
                    command: "ADD".into(),
                    reason,
                });
            }
        };
        record.result = Some(result.clone());
        let saved = crate::util::task::blocking(|| self.store.save(&record));
        step.done("result record");
        if let Err(err) = saved {
            // Without the record a restarted daemon could not DEL with the
            // right prevResult: better fail the pod now than leak it later.
            self.rollback(&record, &list, Some(&result)).await;
            return Err(err);
        }
        Ok(PodNetworkStatus {
            ips: addresses.ips,
            interface: addresses
                .interface
                .unwrap_or_else(|| self.cfg.ifname.clone()),
            raw_result: result,
        })
    }

    /// DEL the pod from the network it was added to. Idempotent: an unknown
    /// pod, a netns that is gone and a plugin answering "unknown container"
    /// (code 3) are all success, so StopPodSandbox and RemovePodSandbox can
    /// both call it, also after a daemon restart.
    /// DEL of a pod known only by its attachment record (startup
    /// reconciliation of a pod whose RunPodSandbox never finished); no
    /// record: nothing was added, nothing to delete.
    pub async fn teardown_recorded(&self, pod_id: &str) -> Result<(), CniError> {
        let Some(record) = self.store.load(pod_id)? else {
            return Ok(());
        };
        self.teardown(&PodNetworkRequest {
            pod_id: record.pod.pod_id.clone(),
            name: record.pod.name.clone(),
            namespace: record.pod.namespace.clone(),
            uid: record.pod.uid.clone(),
            netns: record.netns.clone(),
            port_mappings: Vec::new(),
            dns: None,
            bandwidth: None,
        })
        .await
    }

    pub async fn teardown(&self, pod: &PodNetworkRequest) -> Result<(), CniError> {
        let identity = pod.valid_identity()?;
        let guard = self.pod_locks.lock(&pod.pod_id).await;

        let record = match self.store.load(&pod.pod_id) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(pod_id = %pod.pod_id, error = %e, "unreadable CNI attachment record; deleting with the config in force");
                None
            }
        };
        let record = match record {
            Some(r) => r,
            None => {
                let list = match conf::load_conf_dir(&self.cfg.conf_dir) {
                    Ok(list) => list,
                    // No record and no network: nothing of ours to delete.
                    Err(CniError::NotReady { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
                AttachmentRecord {
                    pod: identity,
                    netns: pod.netns.clone(),
                    ifname: self.cfg.ifname.clone(),
                    network: list.to_json(),
                    network_file: list.file.clone(),
                    capabilities: pod.capabilities(),
                    result: None,
                }
            }
        };
        let list = record_network(&record)?;
        let netns = [pod.netns.as_path(), record.netns.as_path()]
            .into_iter()
            .find(|p| is_netns(p));
        self.delete_all(&record, &list, record.result.as_ref(), netns)
            .await?;
        self.store.remove(&pod.pod_id)?;
        drop(guard);
        self.pod_locks.forget(&pod.pod_id);
        Ok(())
    }

    /// Undo a failed ADD; failures are logged and the record kept, so a
    /// later teardown of the pod retries.
    async fn rollback(
        &self,
        record: &AttachmentRecord,
        list: &NetworkList,
        last_result: Option<&Value>,
    ) {
        let netns = Some(record.netns.as_path()).filter(|p| is_netns(p));
        match self.delete_all(record, list, last_result, netns).await {
            Ok(()) => {
                if let Err(e) = self.store.remove(&record.pod.pod_id) {
                    tracing::warn!(pod_id = %record.pod.pod_id, error = %e, "removing CNI attachment record after rollback");
                }
            }
            Err(e) => {
                tracing::warn!(pod_id = %record.pod.pod_id, error = %e, "CNI DEL after failed ADD failed; teardown of the pod will retry");
            }
        }
    }

    /// DEL every plugin of `list`, last first; stop at the first real error
    /// (SPEC.md: the runtime must stop executing the list on an error).
    async fn delete_all(
        &self,
        record: &AttachmentRecord,
        list: &NetworkList,
        prev: Option<&Value>,
        netns: Option<&Path>,
    ) -> Result<(), CniError> {
        let prev = prev.filter(|_| invocation::passes_prev_result_on_del(&list.cni_version));
        let env = invocation::plugin_env(
            CniCommand::Del,
            &record.pod.pod_id,
            netns,
            &record.ifname,
            &record.pod.cni_args(),
            &self.cfg.bin_dirs,
        );
        for i in (0..list.plugins.len()).rev() {
            let binary =
                exec::find_plugin(conf::plugin_type(&list.plugins[i]), &self.cfg.bin_dirs)?;
            let stdin = invocation::plugin_stdin(list, i, prev, &record.capabilities);
            match exec::run_plugin(
                &binary,
                CniCommand::Del,
                &env,
                &stdin,
                self.cfg.plugin_timeout,
            )
            .await
            {
                Ok(_) => {}
                Err(CniError::Plugin { code, .. }) if code == result::ERR_UNKNOWN_CONTAINER => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn resolve_plugins(&self, list: &NetworkList) -> Result<Vec<PathBuf>, CniError> {
        list.plugins
            .iter()
            .map(|p| exec::find_plugin(conf::plugin_type(p), &self.cfg.bin_dirs))
            .collect()
    }
}

/// The network list stored in a record.
fn record_network(record: &AttachmentRecord) -> Result<NetworkList, CniError> {
    let bytes = serde_json::to_vec(&record.network).map_err(|e| CniError::InvalidConfig {
        file: record.network_file.clone(),
        reason: format!("stored copy cannot be encoded: {e}"),
    })?;
    conf::parse_network_config(&record.network_file, &bytes)
}

/// Whether `path` is a network namespace handle (nsfs, kernel >= 3.19). An
/// unmounted pin leaves an empty regular file behind, which plugins would
/// reject as "not a network namespace".
pub fn is_netns(path: &Path) -> bool {
    use nix::sys::statfs::{NSFS_MAGIC, statfs};
    if path.as_os_str().is_empty() {
        return false;
    }
    match statfs(path) {
        Ok(fs) => fs.filesystem_type() == NSFS_MAGIC,
        Err(_) => false,
    }
}
