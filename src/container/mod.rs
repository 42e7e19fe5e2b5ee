//! Container records and their states (created, running, exited, unknown),
//! and what a container owns on the host: capability decision, rootfs
//! reads, idmapped volumes, mount propagation, the trash. The lifecycle
//! (CreateContainer...) is `node/containers.rs`.

pub mod capabilities;
pub(crate) mod cdi;
pub mod devices;
pub(crate) mod idmapped;
pub mod image_volumes;
pub(crate) mod layer_usage;
pub mod paths;
pub mod pod_network;
pub mod propagation;
pub mod rootfs_read;
pub mod trash;

use k8s_cri::v1::ContainerConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::monitor_api::RuntimeStatus;
pub use crate::state::ContainerState;
use crate::state::{ContainerOp, WrongState};

/// The monitor's view of a container (it knows no `Unknown`: a container
/// it does not hold is not found).
impl From<RuntimeStatus> for ContainerState {
    fn from(s: RuntimeStatus) -> Self {
        match s {
            RuntimeStatus::Created => ContainerState::Created,
            RuntimeStatus::Running => ContainerState::Running,
            RuntimeStatus::Exited => ContainerState::Exited,
        }
    }
}

/// The persisted record of one container. Runtime facts (pid, exit code)
/// come from the pod monitor, which records them the moment they happen;
/// this record caches the last known values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: ContainerConfig,
    /// The image as the user named it in the request.
    pub image_ref: String,
    /// The image id ("sha256:<config digest>").
    pub image_id: String,
    /// A repo digest of the image, or its id when it has none.
    pub image_digest_ref: String,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub state: ContainerState,
    pub reason: String,
    pub message: String,
    /// Absolute path of the CRI log file, empty when kubelet asked for none.
    pub log_path: PathBuf,
    /// Bundle directory: config.json and the rootfs mount point.
    pub bundle: PathBuf,
    /// Writable layer: overlay upper and work dirs.
    pub writable_dir: PathBuf,
    /// The init pid while it runs (0 before start or when unknown).
    #[serde(default)]
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The capability decision it was created with, with its reasons
    /// (`capcri explain`, ContainerStatus verbose info).
    #[serde(default)]
    pub decision: Option<crate::capabilities::policy::Decision>,
    /// Its ListContainers entry without the state and the image (which
    /// follows the image store's tags): the wire encoding of fields that
    /// never change after CreateContainer, made on the first list
    /// (`cri::list_wire`).
    #[serde(skip)]
    pub list_entry: crate::util::memo::Memo<[u8]>,
    /// A keyed hash of what its ListContainers image field is made from
    /// (`cri::list_wire::image_key`), made on the first list.
    #[serde(skip)]
    pub image_key: crate::util::memo::Memo<u64>,
    /// What the stats calls report of it besides its figures, made on the
    /// first stats call (`stats_facts`).
    #[serde(skip)]
    pub stats_facts: crate::util::memo::Memo<StatsFacts>,
}

/// What the stats calls report of a container besides its figures and its
/// start time (`node::stats::StatsSubject`). All of it is fixed at
/// CreateContainer, so it is made once per record and shared by every
/// call: copying these strings and the label and annotation maps out of
/// each record on each call, to build and encode the same attributes
/// again, led the list stats calls' profile at 250 pods (allocation and
/// freeing).
#[derive(Debug)]
pub struct StatsFacts {
    pub id: String,
    pub pod_id: String,
    pub created_at: i64,
    pub metadata: Option<k8s_cri::v1::ContainerMetadata>,
    /// Its `ContainerAttributes` (id, metadata, labels, annotations), as
    /// every stats answer about it carries them (`cri::stats_wire`).
    pub attributes: Vec<u8>,
    pub image_id: String,
    /// `ContainerRecord::asked_image`.
    pub asked_image: [String; 2],
    /// Its writable layer's upper directory (`layer_usage`).
    pub upper: PathBuf,
}

impl ContainerRecord {
    /// `Ok` when its state allows `op`; the error names it, its state and
    /// the fix (`crate::state`).
    pub fn check(&self, op: ContainerOp) -> Result<(), WrongState> {
        self.state.check(op, &self.id)
    }

    pub fn name_key(&self) -> String {
        container_name_key(&self.pod_id, &self.config)
    }

    /// Its `StatsFacts`, made on the first call and kept.
    pub fn stats_facts(&self) -> std::sync::Arc<StatsFacts> {
        use prost::Message;
        self.stats_facts.get_or_init_shared(|| {
            std::sync::Arc::new(StatsFacts {
                id: self.id.clone(),
                pod_id: self.pod_id.clone(),
                created_at: self.created_at,
                metadata: self.config.metadata.clone(),
                attributes: k8s_cri::v1::ContainerAttributes {
                    id: self.id.clone(),
                    metadata: self.config.metadata.clone(),
                    labels: self.config.labels.clone(),
                    annotations: self.config.annotations.clone(),
                }
                .encode_to_vec(),
                image_id: self.image_id.clone(),
                asked_image: self.asked_image().map(str::to_string),
                upper: self.writable_dir.join("upper"),
            })
        })
    }
    /// The image as the CreateContainer request named it, most specific
    /// first: kubelet's `user_specified_image` (the pod spec's reference),
    /// then `image.image` (kubelet: the image id). For
    /// `ImageStore::reported_name`.
    pub fn asked_image(&self) -> [&str; 2] {
        let user_specified = self
            .config
            .image
            .as_ref()
            .map(|i| i.user_specified_image.as_str())
            .unwrap_or("");
        [user_specified, self.image_ref.as_str()]
    }
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
    pub fn name(&self) -> &str {
        self.config
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or("")
    }
}

pub(crate) fn container_name_key(pod_id: &str, config: &ContainerConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("container/{pod_id}/{}/{}", m.name, m.attempt)
}

pub fn cri_state(s: ContainerState) -> k8s_cri::v1::ContainerState {
    match s {
        ContainerState::Created => k8s_cri::v1::ContainerState::ContainerCreated,
        ContainerState::Running => k8s_cri::v1::ContainerState::ContainerRunning,
        ContainerState::Exited => k8s_cri::v1::ContainerState::ContainerExited,
        ContainerState::Unknown => k8s_cri::v1::ContainerState::ContainerUnknown,
    }
}
