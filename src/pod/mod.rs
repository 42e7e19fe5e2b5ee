//! Pod sandbox records and what a pod owns on the host: cgroups, files, the
//! network-namespace pool. The lifecycle (RunPodSandbox...) is `node/pods.rs`.
//!
//! capcri runs no pause container: the pod's network, IPC and UTS
//! namespaces are created and pinned (bind mounts under the pod directory)
//! by the daemon (network, see `netns_pool`) and the pod's monitor (the
//! others, and all of them in a pod user namespace), and every container
//! joins them by path.

pub mod cgroups;
pub mod files;
pub mod handlers;
pub(crate) mod net_sysctls;
pub(crate) mod netns_pool;

use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use crate::state::PodState;
use crate::state::{PodOp, WrongState};

/// The persisted record of one pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodSandbox {
    pub id: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    pub created_at: i64,
    pub state: PodState,
    /// Volatile directory: monitor socket, pinned namespaces, DNS files, shm.
    pub pod_dir: PathBuf,
    /// Pod IPs from CNI, primary first; empty for host-network pods and
    /// where no CNI network is configured (loopback only).
    #[serde(default)]
    pub ips: Vec<String>,
    /// The policies' network sysctls for this pod and what became of each
    /// (written, skipped for a host-network pod, overridden by the pod).
    #[serde(default)]
    pub network_policy: crate::capabilities::policy::PodDecision,
    /// Where its cgroups are, decided at RunPodSandbox from kubelet's
    /// `cgroup_parent`. None: a record from before it was kept, whose pod
    /// is capcri's `<parent>/<id>` (see `Node::pod_cgroup`).
    #[serde(default)]
    pub cgroup: Option<crate::util::cgroup_paths::PodCgroup>,
    /// Its ListPodSandbox entry without the state: the wire encoding of
    /// fields that never change after RunPodSandbox, made on the first
    /// list (`cri::list_wire`).
    #[serde(skip)]
    pub list_entry: crate::util::memo::Memo<[u8]>,
    /// What the stats calls report of it besides its figures, made on the
    /// first stats call (`stats_facts`).
    #[serde(skip)]
    pub stats_facts: crate::util::memo::Memo<PodStatsFacts>,
}

/// What the stats calls report of a pod besides its figures and state,
/// and where its figures are found (`node::stats::PodStatsSubject`):
/// fixed at RunPodSandbox, so made once per pod and shared, as a
/// container's `StatsFacts`.
#[derive(Debug)]
pub struct PodStatsFacts {
    pub id: String,
    pub metadata: Option<k8s_cri::v1::PodSandboxMetadata>,
    /// Its `PodSandboxAttributes` (id, metadata, labels, annotations), as
    /// every stats answer about it carries them (`cri::stats_wire`).
    pub attributes: Vec<u8>,
    /// Its cgroup; its containers' are under it.
    pub cgroup: crate::util::cgroup_paths::PodCgroup,
    /// `PodSandbox::network_pin`: none for a host-network pod.
    pub network_pin: Option<PathBuf>,
}

impl PodSandbox {
    /// `Ok` when its state allows `op` (`crate::state`).
    pub fn check(&self, op: PodOp) -> Result<(), WrongState> {
        self.state.check(op, &self.id)
    }

    /// The reservation key of its metadata, unique per node (containerd's rule).
    pub fn name_key(&self) -> String {
        pod_name_key(&self.config)
    }

    /// Its `PodStatsFacts`, made on the first call and kept; `cgroup`
    /// gives its cgroup (`Node::pod_cgroup`, fixed for the pod's life).
    pub fn stats_facts(
        &self,
        cgroup: impl FnOnce() -> crate::util::cgroup_paths::PodCgroup,
    ) -> std::sync::Arc<PodStatsFacts> {
        use prost::Message;
        self.stats_facts.get_or_init_shared(|| {
            std::sync::Arc::new(PodStatsFacts {
                id: self.id.clone(),
                metadata: self.config.metadata.clone(),
                attributes: k8s_cri::v1::PodSandboxAttributes {
                    id: self.id.clone(),
                    metadata: self.config.metadata.clone(),
                    labels: self.config.labels.clone(),
                    annotations: self.config.annotations.clone(),
                }
                .encode_to_vec(),
                cgroup: cgroup(),
                network_pin: self.network_pin(),
            })
        })
    }

    fn namespace_mode(&self, pick: impl Fn(&k8s_cri::v1::NamespaceOption) -> i32) -> NamespaceMode {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(|o| NamespaceMode::try_from(pick(o)).unwrap_or(NamespaceMode::Pod))
            .unwrap_or(NamespaceMode::Pod)
    }

    pub fn host_network(&self) -> bool {
        self.namespace_mode(|o| o.network) == NamespaceMode::Node
    }
    /// Where the pod's own network namespace is pinned; None for a
    /// host-network pod, which has none.
    pub fn network_pin(&self) -> Option<PathBuf> {
        (!self.host_network()).then(|| {
            crate::host::pinned_namespace_path(
                &self.pod_dir,
                crate::monitor_api::NamespaceKind::Net,
            )
        })
    }
    pub fn host_ipc(&self) -> bool {
        self.namespace_mode(|o| o.ipc) == NamespaceMode::Node
    }
    pub fn host_pid(&self) -> bool {
        self.namespace_mode(|o| o.pid) == NamespaceMode::Node
    }
    /// The pod's pid mode is POD (CRI's zero value, what critest sends and
    /// kubelet sends for `shareProcessNamespace: true`): its containers that
    /// also ask for POD share one PID namespace, made by the monitor.
    pub fn shares_pid(&self) -> bool {
        self.namespace_mode(|o| o.pid) == NamespaceMode::Pod
    }

    /// The pod's user namespace (POD mode), validated at RunPodSandbox.
    pub fn user_namespace(&self) -> Option<crate::spec::PodUserNamespace> {
        crate::spec::pod_user_namespace(&self.config).ok().flatten()
    }

    pub fn shm_dir(&self) -> PathBuf {
        self.pod_dir.join("shm")
    }
}

pub(crate) fn pod_name_key(config: &PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("pod/{}/{}/{}/{}", m.namespace, m.name, m.uid, m.attempt)
}
