//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, status and list.

use crate::crash_point::crash_point;
use crate::events::EventKind;
use crate::host::pinned_namespace_path;
use crate::monitor_api::{MonitorSpawn, NamespaceKind, PodNamespaceSet, spawn_monitor};
use crate::network::{CniError, PodNetworkRequest, bandwidth_from_annotations};
use crate::node::{Node, NodeError, find_by_id_or_prefix, labels_match};
use crate::pod::files::{render_hosts, render_resolv_conf, write_pod_file};
use crate::pod::{PodSandbox, PodState, pod_name_key};
use crate::util::sync::lock;
use crate::util::time::now_nanos;
use k8s_cri::v1::{PodSandboxConfig, PodSandboxFilter};
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;
use std::time::Duration;
use tracing::{info, warn};

/// Size of the pod's /dev/shm, as containerd's default.
const SHM_SIZE: &str = "size=65536k";

impl Node {
    pub async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String, NodeError> {
        let meta = config.metadata.as_ref().ok_or_else(|| {
            NodeError::InvalidArgument(
                "pod config has no metadata: set metadata.name and metadata.namespace".into(),
            )
        })?;
        if meta.name.is_empty() {
            return Err(NodeError::InvalidArgument(
                "pod metadata.name is empty: give the pod a name".into(),
            ));
        }
        crate::pod::handlers::check_handler(&runtime_handler, &self.config.runtime_handlers)
            .map_err(NodeError::InvalidArgument)?;
        let userns = crate::spec::pod_user_namespace(&config)?;
        // Before anything is made: a hostile cgroup_parent changes nothing.
        let requested_cgroup = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        crate::util::cgroup_paths::PodCgroup::resolve(
            self.cgroups.driver,
            &requested_cgroup,
            &self.cgroups.default_parent,
            "validate",
        )
        .map_err(|e| NodeError::InvalidArgument(format!("pod {:?}: {e}", meta.name)))?;
        if userns.is_some()
            && let Some(why) = &self.userns_unsupported
        {
            return Err(NodeError::Unsatisfiable(format!(
                "pod {:?} asks for its own user namespace (hostUsers: false) but this node cannot idmap the layer store: {why}; \
                 run the pod with hostUsers: true or move capcri's data directory to a filesystem with idmapped mounts on kernel 5.19+",
                meta.name
            )));
        }
        // The pod's init joins its cgroups in a few ms, and its containers'
        // builds follow: the kernel's lock wait starts now and the lock is
        // kept warm until they are likely in (`host::cgroup_lock`).
        crate::host::cgroup_lock::warm_for(crate::host::cgroup_lock::AFTER_POD);
        let key = pod_name_key(&config);
        let id = self.names.reserve_new(key.clone())?;
        // The policies' network sysctls, decided before anything is made.
        let network_policy = self.policies.current().evaluate_pod(
            &crate::capabilities::policy::PodFacts::from_cri(&config, &runtime_handler),
            &crate::container::capabilities::node_facts(),
        );
        let pod = PodSandbox {
            pod_dir: self.config.pods_dir().join(&id),
            id: id.clone(),
            config,
            runtime_handler,
            created_at: now_nanos(),
            state: PodState::Ready,
            ips: Vec::new(),
            network_policy,
            cgroup: None,
            list_entry: Default::default(),
            stats_facts: Default::default(),
        };
        let _guard = self.pod_locks.lock(&id).await;
        let mut pod = pod;
        match self.set_up_pod(&mut pod).await {
            Ok(()) => {
                self.pods.publish(pod);
                self.events.emit(EventKind::Created, &id, &id);
                self.events.emit(EventKind::Started, &id, &id);
                info!(pod.id = %id, "pod sandbox ready");
                Ok(id)
            }
            Err(e) => {
                self.tear_down_pod(&pod).await;
                self.names.release(&key);
                Err(e)
            }
        }
    }

    async fn set_up_pod(&self, pod: &mut PodSandbox) -> Result<(), NodeError> {
        let step = crate::util::time::StepTimer::new("run_pod_sandbox", &pod.id);
        let cgroup = self.place_pod_cgroup(pod)?;
        step.done("cgroup");
        let dir = &pod.pod_dir;
        std::fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
        // Root only: it holds the pod's /dev/shm (a 1777 tmpfs) and the
        // monitor's state. A user-namespaced container's init bind-mounts
        // hosts/resolv.conf/hostname from here before pivot_root, so for
        // such a pod the group of the pod's root may traverse (0710).
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = match pod.user_namespace().and_then(|u| u.gids.to_host(0)) {
                Some(gid) => {
                    std::os::unix::fs::chown(dir, None, Some(gid))
                        .map_err(|e| NodeError::io(dir, e))?;
                    0o710
                }
                None => 0o700,
            };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(|e| NodeError::io(dir, e))?;
        }
        let hostname = if pod.host_network() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            pod.config.hostname.clone()
        };
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for (name, content) in [
            ("hostname", format!("{hostname}\n")),
            (
                "resolv.conf",
                render_resolv_conf(pod.config.dns_config.as_ref(), &host_resolv),
            ),
            ("hosts", render_hosts(&hostname)),
        ] {
            let path = dir.join(name);
            write_pod_file(&path, &content).map_err(|e| NodeError::io(&path, e))?;
        }
        if !pod.host_ipc() {
            let shm = pod.shm_dir();
            std::fs::create_dir_all(&shm).map_err(|e| NodeError::io(&shm, e))?;
            // In a POD user namespace the fresh tmpfs belongs to the pod's
            // root from the start (no idmapped tmpfs before kernel 6.3).
            let options = match pod
                .user_namespace()
                .and_then(|u| Some((u.uids.to_host(0)?, u.gids.to_host(0)?)))
            {
                Some((uid, gid)) => format!("{SHM_SIZE},uid={uid},gid={gid}"),
                None => SHM_SIZE.to_string(),
            };
            nix::mount::mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(options.as_str()),
            )
            .map_err(|e| NodeError::io(&shm, e.into()))?;
        }
        step.done("files");
        crash_point("pod.run.after-files");
        // The network namespace is made here, before the monitor, so that
        // CNI ADD (Go plugins: most of this call) runs while the monitor
        // starts. A pod with its own user namespace is the exception: its
        // network namespace must be created inside it, by the monitor.
        let netns_first = !pod.host_network() && pod.user_namespace().is_none();
        if netns_first {
            let ns_dir = dir.join("ns");
            std::fs::create_dir_all(&ns_dir).map_err(|e| NodeError::io(&ns_dir, e))?;
            let target = pinned_namespace_path(dir, NamespaceKind::Net);
            if !self.netns_pool.take_into(&target) {
                crate::util::task::blocking(|| crate::host::create_netns_at(&target))?;
            }
            self.netns_pool.fill();
            step.done("netns");
        }
        let spawn = spawn_monitor(MonitorSpawn {
            pod_id: pod.id.clone(),
            pod_dir: dir.clone(),
            runtime_root: self.config.runtime_root(),
            new_namespaces: PodNamespaceSet {
                net: !pod.host_network() && !netns_first,
                ipc: !pod.host_ipc(),
                uts: !pod.host_network(),
                pid: pod.shares_pid(),
            },
            hostname: (!pod.host_network() && !hostname.is_empty()).then(|| hostname.clone()),
            user_namespace: pod.user_namespace(),
            init_cgroup: pod.shares_pid().then(|| cgroup.init_cgroup()),
            program: None,
        });
        // Its own task, so the blocking steps of either side (record
        // writes, the fork request) never hold the other up.
        let started = std::time::Instant::now();
        let pod_id = pod.id.clone();
        let monitor = tokio::spawn(async move {
            let client = spawn.await?;
            tracing::debug!(pod.id = %pod_id, elapsed_us = started.elapsed().as_micros() as u64, "monitor ready");
            crash_point("pod.run.after-monitor");
            Ok::<_, NodeError>(client)
        });
        let network = async {
            if netns_first {
                self.attach_network(pod).await
            } else {
                Ok(Vec::new())
            }
        };
        // Both run to the end, whatever the other does: a dropped CNI ADD
        // would leave its plugin's work half done. On any error the caller
        // tears down both (CNI DEL is idempotent).
        let (monitor, network) = tokio::join!(monitor, network);
        let monitor =
            monitor.map_err(|e| NodeError::Internal(format!("monitor start task failed: {e}")))?;
        self.remember_monitor(&pod.id, monitor?);
        pod.ips = network?;
        step.done("monitor+network");
        self.write_network_sysctls(pod)?;
        if !pod.host_network() && !netns_first {
            pod.ips = self.attach_network(pod).await?;
        }
        step.done("network");
        crash_point("pod.run.after-network");
        self.pods.write(pod)?;
        step.done("record");
        crash_point("pod.run.after-record");
        Ok(())
    }

    /// Writes the policies' network sysctls into the pod's network
    /// namespace (none for a host-network pod: `resolve` skipped them) and
    /// counts each outcome. A failed write fails RunPodSandbox naming the
    /// key and the rule.
    fn write_network_sysctls(&self, pod: &mut PodSandbox) -> Result<(), NodeError> {
        let result = if pod.host_network() {
            Ok(())
        } else {
            let netns = pinned_namespace_path(&pod.pod_dir, NamespaceKind::Net);
            crate::util::task::blocking(|| {
                crate::pod::net_sysctls::write_in_netns(&netns, &mut pod.network_policy)
            })
        };
        for s in &pod.network_policy.sysctls {
            self.metrics.count_sysctl(&s.key, s.outcome);
            info!(pod.id = %pod.id, key = %s.key, value = %s.value, outcome = s.outcome.label(), rule = %s.source, "policy network sysctl");
        }
        for w in &pod.network_policy.warnings {
            warn!(pod.id = %pod.id, warning = %w, "policy network sysctl warning");
        }
        result.map_err(|e| {
            let name = pod.config.metadata.as_ref().map(|m| m.name.as_str());
            NodeError::Unsatisfiable(format!("pod {:?}: {e}", name.unwrap_or_default()))
        })
    }

    fn network_request(&self, pod: &PodSandbox) -> PodNetworkRequest {
        let meta = pod.config.metadata.clone().unwrap_or_default();
        PodNetworkRequest {
            pod_id: pod.id.clone(),
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            netns: pinned_namespace_path(&pod.pod_dir, NamespaceKind::Net),
            port_mappings: pod.config.port_mappings.clone(),
            dns: pod.config.dns_config.clone(),
            bandwidth: bandwidth_from_annotations(&pod.config.annotations).unwrap_or(None),
        }
    }

    /// CNI ADD in the pod's pinned network namespace. Without any CNI
    /// config the pod keeps a loopback-only namespace (Status says so).
    async fn attach_network(&self, pod: &PodSandbox) -> Result<Vec<String>, NodeError> {
        if let Err(CniError::NotReady { reason }) = self.network.status() {
            warn!(pod.id = %pod.id, %reason, "no CNI network: the pod gets loopback only");
            return Ok(Vec::new());
        }
        let status = self.network.setup(&self.network_request(pod)).await?;
        info!(pod.id = %pod.id, ips = ?status.ips, "pod network attached");
        Ok(status.ips.iter().map(|ip| ip.to_string()).collect())
    }

    /// CNI DEL; idempotent, and works after a daemon restart from the
    /// stored result.
    async fn detach_network(&self, pod: &PodSandbox) -> Result<(), NodeError> {
        if pod.host_network() {
            return Ok(());
        }
        self.network.teardown(&self.network_request(pod)).await?;
        Ok(())
    }

    /// Best effort: used on a failed RunPodSandbox and by RemovePodSandbox.
    async fn tear_down_pod(&self, pod: &PodSandbox) {
        if let Err(e) = self.detach_network(pod).await {
            warn!(pod.id = %pod.id, error = %e, "CNI teardown failed");
        }
        self.tear_down_pod_dir(&pod.id, &pod.pod_dir).await;
        let cgroup = self.pod_cgroup(pod);
        crate::util::task::blocking(|| {
            for failure in crate::pod::cgroups::remove_pod_cgroup(&cgroup) {
                warn!(pod.id = %pod.id, %failure, "pod cgroup not removed");
            }
        });
    }

    /// Everything of a pod but its network and its cgroup elsewhere than
    /// capcri's parent: monitor, pod init, pinned namespaces, shm, the
    /// `<parent>/<id>` cgroup, the pod directory. Needs no record, so
    /// startup reconciliation uses it for pods a crash left half-made.
    pub(crate) async fn tear_down_pod_dir(&self, pod_id: &str, pod_dir: &Path) {
        let client = lock(&self.monitors).remove(pod_id);
        let client = match client {
            Some(c) => Some(c),
            None => crate::monitor_api::MonitorClient::connect(pod_dir)
                .await
                .ok(),
        };
        if let Some(c) = client
            && let Err(e) = c.shutdown().await
        {
            warn!(pod.id = %pod_id, error = %e, "monitor shutdown failed");
        }
        // If the monitor died, its pod init (pid 1 of the pod's pid
        // namespace) and any process left in that namespace outlived it.
        kill_pid_namespace(pod_dir);
        if let Err(e) = crate::host::unpin_namespaces(pod_dir) {
            warn!(pod.id = %pod_id, error = %e, "unpinning namespaces failed");
        }
        // The stats calls' open view of the namespace holds it too.
        crate::container::pod_network::forget(&pinned_namespace_path(pod_dir, NamespaceKind::Net));
        unmount_if_mounted(&pod_dir.join("shm"));
        let own = crate::util::cgroup_paths::PodCgroup::resolve(
            self.cgroups.driver,
            "",
            &self.cgroups.default_parent,
            pod_id,
        );
        if let Ok(own) = own
            && own.driver == crate::util::cgroup_paths::CgroupDriver::Cgroupfs
        {
            for failure in crate::pod::cgroups::remove_pod_cgroup(&own) {
                warn!(pod.id = %pod_id, %failure, "pod cgroup not removed");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(pod_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(pod.id = %pod_id, error = %e, "removing pod dir failed");
        }
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), NodeError> {
        let Some(pod) = self.find_pod(id) else {
            // CRI: stopping an unknown pod succeeds (kubelet retries after a restart).
            return Ok(());
        };
        let _guard = self.pod_locks.lock(&pod.id).await;
        for c in self.containers_of(&pod.id) {
            self.stop_container(&c.id, Duration::ZERO).await?;
        }
        // CRI: the network is released at stop (kubelet may never remove).
        self.detach_network(&pod).await?;
        let mut pod = pod;
        if pod.state != PodState::NotReady {
            pod.state = PodState::NotReady;
            self.pods.put(pod.clone())?;
            self.events.emit(EventKind::Stopped, &pod.id, &pod.id);
        }
        info!(pod.id = %pod.id, "pod sandbox stopped");
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), NodeError> {
        let Some(pod) = self.find_pod(id) else {
            return Ok(());
        };
        let guard = self.pod_locks.lock(&pod.id).await;
        for c in self.containers_of(&pod.id) {
            self.remove_container(&c.id).await?;
        }
        crash_point("pod.remove.after-containers");
        self.tear_down_pod(&pod).await;
        crash_point("pod.remove.after-teardown");
        self.pods.delete(&pod.id)?;
        self.pods.forget(&pod.id);
        self.names.release(&pod.name_key());
        self.events.emit(EventKind::Deleted, &pod.id, &pod.id);
        drop(guard);
        self.pod_locks.forget(&pod.id);
        info!(pod.id = %pod.id, "pod sandbox removed");
        Ok(())
    }

    /// A pod by full id or unique prefix (crictl passes prefixes).
    pub fn find_pod(&self, id: &str) -> Option<PodSandbox> {
        find_by_id_or_prefix(&self.pods.lock(), id)
    }

    pub fn pod(&self, id: &str) -> Result<PodSandbox, NodeError> {
        self.map_pod(id, PodSandbox::clone)
    }

    /// `f` of the pod with this id or unique prefix, under the pod
    /// table's lock: PodSandboxStatus (kubelet asks it of every pod as it
    /// syncs them) converts the record to its CRI form directly, without
    /// a deep copy of it (pod config, policy decision) first.
    pub fn map_pod<T>(&self, id: &str, f: impl FnOnce(&PodSandbox) -> T) -> Result<T, NodeError> {
        super::find_ref_by_id_or_prefix(&self.pods.lock(), id)
            .map(f)
            .ok_or_else(|| NodeError::not_found("pod sandbox", id))
    }

    pub fn list_pod_sandboxes(&self, filter: Option<&PodSandboxFilter>) -> Vec<PodSandbox> {
        self.map_pod_sandboxes(filter, PodSandbox::clone)
    }

    /// What ListPodSandbox's answer is made from, as a number that
    /// changes with it: the pod records (each answered from its record
    /// alone). Equal versions before and after
    /// [`Self::map_pod_sandboxes`] mean its answer holds until the
    /// version changes (`cri::list_cache`).
    pub fn pod_list_version(&self) -> PodListVersion {
        PodListVersion(self.pods.version())
    }

    /// `f` of every pod the filter matches, oldest first, under the pod
    /// table's lock: ListPodSandbox (every second from kubelet) converts
    /// each record to its CRI form directly instead of deep-copying the
    /// whole record (pod config, policy decision) first.
    pub fn map_pod_sandboxes<T>(
        &self,
        filter: Option<&PodSandboxFilter>,
        f: impl FnMut(&PodSandbox) -> T,
    ) -> Vec<T> {
        let pods = self.pods.lock();
        let mut out: Vec<&PodSandbox> = pods
            .values()
            .filter(|p| {
                let Some(f) = filter else { return true };
                if !f.id.is_empty() && !p.id.starts_with(&f.id) {
                    return false;
                }
                if let Some(s) = &f.state {
                    let ready = s.state == k8s_cri::v1::PodSandboxState::SandboxReady as i32;
                    if ready != (p.state == PodState::Ready) {
                        return false;
                    }
                }
                labels_match(&p.config.labels, &f.label_selector)
            })
            .collect();
        out.sort_by_key(|p| p.created_at);
        out.into_iter().map(f).collect()
    }
}

pub(crate) fn unmount_if_mounted(path: &Path) {
    if let Err(e) = crate::util::mount::unmount_if_mounted(path, MntFlags::MNT_DETACH) {
        warn!(path = %path.display(), error = %e, "unmount failed");
    }
}

/// SIGKILLs every process in the pod's pinned pid namespace, found by the
/// namespace's inode in /proc/<pid>/ns/pid. A no-op when the pod has none
/// or the monitor already shut it down.
fn kill_pid_namespace(pod_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let pin = pinned_namespace_path(pod_dir, NamespaceKind::Pid);
    let Ok(meta) = std::fs::metadata(&pin) else {
        return;
    };
    let wanted = format!("pid:[{}]", meta.ino());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let same = std::fs::read_link(entry.path().join("ns/pid"))
            .map(|l| l.to_string_lossy() == wanted)
            .unwrap_or(false);
        if same {
            warn!(pid, "killing a process left in the pod's pid namespace");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// See [`Node::pod_list_version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodListVersion(u64);
