//! Everything this node runs: pods, containers and images, and the per-pod
//! monitors that hold the containers. The CRI layer calls into this; the
//! records they keep live in `pod/` and `container/`.

use crate::capabilities::policy_store::PolicyStore;
use crate::config::Config;
use crate::container::ContainerRecord;
use crate::image::{ImageRecord, ImageStore, ImageStoreConfig, RegistryAuth};
use crate::metrics::Metrics;
use crate::metrics::labels::Outcome;
use crate::monitor_api::MonitorClient;
use crate::pod::PodSandbox;
use crate::store::RecordDir;
use crate::util::sync::{KeyedLocks, lock};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tables::{Names, Table};

mod containers;
pub use containers::ContainerListVersion;
pub use pods::PodListVersion;
mod devices;
pub mod exec;
mod exit_tracking;
mod image_volumes;
mod metrics_snapshot;
mod pid_target;
mod pod_cgroups;
mod pods;
pub mod recovery;
mod resources;
pub mod stats;
pub(crate) mod tables;

pub use crate::error::NodeError;

pub struct Node {
    pub(crate) config: Config,
    pub(crate) images: ImageStore,
    pub(crate) policies: Arc<PolicyStore>,
    pub(crate) network: crate::network::CniNetwork,
    /// Pods and containers: each map with its record directory, and the
    /// names both reserve (`tables`).
    pub(crate) pods: Table<PodSandbox>,
    pub(crate) containers: Table<ContainerRecord>,
    pub(crate) names: Names,
    pub(crate) monitors: Mutex<HashMap<String, MonitorClient>>,
    pub(crate) pod_locks: KeyedLocks,
    pub(crate) container_locks: KeyedLocks,
    /// Why POD user namespaces cannot be offered here (probed once at
    /// startup); `None`: they can, and Status advertises them.
    pub(crate) userns_unsupported: Option<String>,
    /// Lifecycle events for `GetContainerEvents`.
    pub(crate) events: crate::events::EventBus,
    /// Which running containers' records are current without asking their
    /// monitor (the monitors push exits).
    pub(crate) exit_tracking: Arc<exit_tracking::ExitTracking>,
    pub(crate) metrics: Metrics,
    /// Where removed containers' directories wait for deletion.
    pub(crate) trash: crate::container::trash::Trash,
    /// Network namespaces made ahead of RunPodSandbox.
    pub(crate) netns_pool: crate::pod::netns_pool::NetnsPool,
    /// The cgroup driver and default pod parent, resolved at startup.
    pub(crate) cgroups: crate::pod::cgroups::CgroupSetup,
}

impl Node {
    /// Opens the stores and loads what a previous run left.
    pub fn open(config: Config) -> Result<Arc<Node>, NodeError> {
        // First: a driver this host cannot run changes nothing.
        let cgroups = crate::pod::cgroups::CgroupSetup::resolve(&config)
            .map_err(|e| NodeError::Unsatisfiable(e.to_string()))?;
        for dir in [
            config.state_dir.clone(),
            config.pods_dir(),
            config.bundles_dir(),
            config.runtime_root(),
            config.data_dir.clone(),
            config.writable_layers_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| NodeError::io(&dir, e))?;
        }
        let images = ImageStore::open(ImageStoreConfig {
            root: config.images_dir(),
            registries: config.registries.clone(),
            max_layer_bytes: config.max_layer_bytes,
            max_compressed_layer_bytes: config.max_compressed_layer_bytes,
            max_entry_xattr_bytes: config.max_entry_xattr_bytes,
        })?;
        let policies = PolicyStore::open(&config.policy_dir).map_err(|errors| {
            NodeError::InvalidArgument(format!(
                "the capability policies in {} are invalid; fix them (capcri policy check {}) or move them away:\n{}",
                config.policy_dir.display(),
                config.policy_dir.display(),
                errors.join("\n")
            ))
        })?;
        let network = crate::network::CniNetwork::new(crate::network::CniConfig {
            conf_dir: config.cni_conf_dir.clone(),
            bin_dirs: config.cni_bin_dirs.clone(),
            state_dir: config.cni_state_dir(),
            ..Default::default()
        });
        let pods = Table::<PodSandbox>::load(RecordDir::open(config.meta_dir().join("pods"))?)?;
        let containers =
            Table::<ContainerRecord>::load(RecordDir::open(config.meta_dir().join("containers"))?)?;
        let names = Names::new(
            (pods.lock().values().map(PodSandbox::name_key))
                .chain(containers.lock().values().map(ContainerRecord::name_key))
                .collect::<Vec<_>>(),
        );
        images.reconcile_leases(&crate::container::image_volumes::images_in_use(
            containers.lock().values(),
        ));
        let userns_unsupported = probe_user_namespaces(&config);
        let trash = crate::container::trash::Trash::open(&config.state_dir, &config.data_dir)
            .map_err(|e| NodeError::io(&config.state_dir.join("trash"), e))?;
        let known: HashSet<String> = containers.lock().keys().cloned().collect();
        trash.sweep_orphans(&config.bundles_dir(), &known, "bundle");
        trash.sweep_orphans(&config.writable_layers_dir(), &known, "layer");
        let leftovers = trash.entries();
        if !leftovers.is_empty() {
            // What the last run did not finish deleting; nothing waits on it.
            std::thread::spawn(move || {
                for e in leftovers {
                    crate::container::trash::delete_entry(&e);
                }
            });
        }
        let pool_dir = config.state_dir.join("netns-pool");
        let netns_pool = crate::pod::netns_pool::NetnsPool::open(
            pool_dir.clone(),
            crate::pod::netns_pool::POOL_SIZE,
        )
        .map_err(|e| NodeError::io(&pool_dir, e))?;
        Ok(Arc::new(Node {
            cgroups,
            netns_pool,
            userns_unsupported,
            config,
            images,
            policies: Arc::new(policies),
            network,
            pods,
            containers,
            names,
            monitors: Mutex::new(HashMap::new()),
            pod_locks: KeyedLocks::default(),
            container_locks: KeyedLocks::default(),
            events: crate::events::EventBus::default(),
            exit_tracking: Arc::default(),
            metrics: Metrics::new(),
            trash,
        }))
    }

    /// Whether POD user namespaces work on this node; Status's feature.
    pub fn supports_user_namespaces(&self) -> bool {
        self.userns_unsupported.is_none()
    }

    /// The cgroup driver this daemon runs (RuntimeConfig, Status).
    pub fn cgroup_setup(&self) -> &crate::pod::cgroups::CgroupSetup {
        &self.cgroups
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    pub fn network(&self) -> &crate::network::CniNetwork {
        &self.network
    }

    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// The metric families this node records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Pulls an image into the store, timing the pull for the metrics.
    pub async fn pull_image(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageRecord, NodeError> {
        let start = std::time::Instant::now();
        let result = self.images.pull(reference, auth).await;
        let outcome = match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        };
        self.metrics.observe_pull(outcome, start.elapsed());
        Ok(result?)
    }

    /// Asks the pod monitors for the state of every container not known to
    /// have exited, so a scrape counts containers that exited on their own.
    pub async fn refresh_container_states(&self) {
        if let Err(e) = self.list_containers(None).await {
            tracing::debug!(error = %e, "refreshing container states for metrics");
        }
    }

    /// The pod's monitor client, reconnecting after a daemon restart.
    pub(crate) async fn monitor(&self, pod: &PodSandbox) -> Result<MonitorClient, NodeError> {
        if let Some(m) = lock(&self.monitors).get(&pod.id) {
            return Ok(m.clone());
        }
        let client = MonitorClient::connect(&pod.pod_dir).await?;
        self.remember_monitor(&pod.id, client.clone());
        Ok(client)
    }

    /// Keeps the pod's monitor client and, the first time, follows its
    /// container exits into the event stream (the monitor pushes them; the
    /// daemon never polls).
    pub(crate) fn remember_monitor(&self, pod_id: &str, client: MonitorClient) {
        let known = lock(&self.monitors).insert(pod_id.to_string(), client.clone());
        if known.is_some() {
            return;
        }
        let events = self.events.clone();
        let tracking = self.exit_tracking.clone();
        let pod_id = pod_id.to_string();
        tokio::spawn(async move {
            let mut watch = match client.watch_exits().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(pod.id = %pod_id, error = %e, "cannot follow the pod's container exits");
                    return;
                }
            };
            tracking.watch_started(&pod_id);
            while let Some((id, exit_code)) = watch.next().await {
                tracing::debug!(pod.id = %pod_id, container.id = %id, exit_code, "container exited");
                tracking.exited(&id);
                events.emit(crate::events::EventKind::Stopped, &id, &pod_id);
            }
            tracking.watch_ended(&pod_id);
        });
    }

    /// After a restart: reconnect to every live pod's monitor so exits that
    /// happen from now on reach the event stream without waiting for the
    /// first call on that pod.
    pub async fn follow_live_monitors(&self) {
        let pods: Vec<PodSandbox> = self.pods.lock().values().cloned().collect();
        for pod in pods {
            if pod
                .pod_dir
                .join(crate::monitor_api::MONITOR_SOCKET)
                .exists()
            {
                let _ = self.monitor(&pod).await;
            }
        }
    }
}

/// The value under `id`, or under the one key `id` is a prefix of (crictl
/// passes unique prefixes, like containerd's truncindex); None when empty,
/// absent or ambiguous.
pub(crate) fn find_by_id_or_prefix<T: Clone>(map: &HashMap<String, T>, id: &str) -> Option<T> {
    find_ref_by_id_or_prefix(map, id).cloned()
}

/// The record of full id `id`, or of the one id `id` is a prefix of.
pub(crate) fn find_ref_by_id_or_prefix<'a, T>(
    map: &'a HashMap<String, T>,
    id: &str,
) -> Option<&'a T> {
    if id.is_empty() {
        return None;
    }
    if let Some(v) = map.get(id) {
        return Some(v);
    }
    let mut matches = map.iter().filter(|(k, _)| k.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}

/// Matches a CRI label selector: every pair must be present.
pub(crate) fn labels_match(
    labels: &HashMap<String, String>,
    selector: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// POD user namespaces need idmapped mounts of the layer store and an
/// overlay on idmapped layers; try exactly that once, on the filesystem of
/// the writable layers.
fn probe_user_namespaces(config: &Config) -> Option<String> {
    let scratch = config.writable_layers_dir().join(".idmap-probe");
    let state_file = config.state_dir.join(".idmap-probe");
    match crate::host::probe_idmapped_overlay(&scratch, &state_file) {
        Ok(()) => {
            tracing::info!("user namespaces supported: idmapped overlay layers work");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "user namespaces (hostUsers: false) not offered");
            Some(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_by_unique_prefix_only() {
        let map: HashMap<String, u32> =
            [("abc123".to_string(), 1), ("abd456".to_string(), 2)].into();
        assert_eq!(find_by_id_or_prefix(&map, "abc123"), Some(1));
        assert_eq!(find_by_id_or_prefix(&map, "abd"), Some(2));
        assert_eq!(find_by_id_or_prefix(&map, "ab"), None, "ambiguous");
        assert_eq!(find_by_id_or_prefix(&map, ""), None);
        assert_eq!(find_by_id_or_prefix(&map, "x"), None);
    }
}
