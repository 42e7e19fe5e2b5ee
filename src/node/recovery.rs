//! Startup reconciliation: what a daemon killed in the middle of
//! RunPodSandbox, CreateContainer, RemoveContainer or RemovePodSandbox left
//! behind is finished or undone before the first CRI call is served.
//!
//! The metadata record of a pod or container is written last when it is
//! created and deleted last when it is removed, so the record is the commit
//! point: an object with a record is kept (and must stay removable), every
//! on-disk or kernel object without one is half-made or half-removed and is
//! torn down here. The sweep looks at every place capcri creates something:
//! pod directories (monitor, pinned namespaces, shm), the monitors' container
//! state, bundles with their rootfs mounts, writable layers, libcontainer
//! state, cgroups and CNI attachments.

use crate::node::{Node, NodeError};
use crate::pod::PodState;
use std::collections::HashSet;
use std::path::Path;
use tracing::{info, warn};

/// What the sweep removed, for the startup log and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Pod directories without a pod record (monitor, namespaces, shm).
    pub orphan_pods: usize,
    /// Containers a monitor holds that have no container record.
    pub orphan_monitor_containers: usize,
    /// libcontainer state dirs without a record (bundles and writable
    /// layers without one go to the trash when the node opens).
    pub orphan_container_dirs: usize,
    /// cgroup directories of unknown pods or containers.
    pub orphan_cgroups: usize,
    /// Pods with a record whose monitor is gone, now reported NotReady.
    pub pods_marked_not_ready: usize,
}

impl ReconcileReport {
    pub fn is_empty(&self) -> bool {
        *self == ReconcileReport::default()
    }
}

/// Names of the entries of `dir` (absent dir: none).
fn entry_names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

impl Node {
    /// Finishes or undoes what an interrupted run left; see the module doc.
    /// Runs once in `serve`, before the socket accepts calls.
    pub async fn reconcile(&self) -> Result<ReconcileReport, NodeError> {
        let mut report = ReconcileReport::default();
        let pods: Vec<crate::pod::PodSandbox> = self.pods.lock().values().cloned().collect();
        let pod_ids: HashSet<String> = pods.iter().map(|p| p.id.clone()).collect();
        let container_ids: HashSet<String> = self.containers.lock().keys().cloned().collect();

        // Pods first: shutting an orphan pod's monitor down also deletes
        // the containers it held.
        for name in entry_names(&self.config.pods_dir()) {
            if pod_ids.contains(&name) {
                continue;
            }
            warn!(pod.id = %name, "tearing down a pod that a crash left half-created or half-removed");
            let pod_dir = self.config.pods_dir().join(&name);
            if let Err(e) = self.network.teardown_recorded(&name).await {
                warn!(pod.id = %name, error = %e, "CNI teardown of the orphan pod failed");
            }
            self.tear_down_pod_dir(&name, &pod_dir).await;
            report.orphan_pods += 1;
        }

        for pod in &pods {
            // Connect first: the monitor serves one request at a time, so
            // its answer to the ping comes after a create the dead daemon
            // had sent, and that container's state dir is there to list.
            let monitor = self.monitor(pod).await;
            let held = entry_names(&pod.pod_dir.join("containers"));
            let orphans: Vec<&String> = held
                .iter()
                .filter(|id| !container_ids.contains(*id))
                .collect();
            if monitor.is_err() && pod.state == PodState::Ready {
                // Its monitor (and so every container it held) is gone: the
                // pod cannot run containers; kubelet recreates NotReady pods.
                warn!(pod.id = %pod.id, "pod monitor gone at startup: the pod is NotReady");
                let mut p = pod.clone();
                p.state = PodState::NotReady;
                self.pods.put(p)?;
                report.pods_marked_not_ready += 1;
            }
            for id in orphans {
                warn!(pod.id = %pod.id, container.id = %id, "deleting a container that a crash left without a record");
                let deleted = match &monitor {
                    Ok(m) => m.delete(id).await.is_ok(),
                    Err(_) => false,
                };
                if !deleted {
                    self.kill_orphan(pod, id).await;
                    let dir = pod.pod_dir.join("containers").join(id);
                    if let Err(e) = crate::util::task::blocking(|| std::fs::remove_dir_all(&dir)) {
                        warn!(path = %dir.display(), error = %e, "removing orphan container state failed");
                    }
                }
                report.orphan_monitor_containers += 1;
            }
        }

        // Bundles and writable layers without a record were already moved
        // to the trash by `Node::open` (`Trash::sweep_orphans`), whose
        // deletion unmounts, detaches idmapped binds and deletes off the
        // start path; what is left here is libcontainer's state.
        let runtime_root = self.config.runtime_root();
        for id in entry_names(&runtime_root) {
            if container_ids.contains(&id) {
                continue;
            }
            let path = runtime_root.join(&id);
            warn!(path = %path.display(), "removing a container directory without a record");
            if let Err(e) = crate::util::task::blocking(|| std::fs::remove_dir_all(&path)) {
                warn!(path = %path.display(), error = %e, "removing an orphan container directory failed");
            }
            report.orphan_container_dirs += 1;
        }

        let parent = self.cgroups.default_parent.clone();
        let cgroupfs = self.cgroups.driver == crate::config::CgroupDriver::Cgroupfs;
        let pod_ids: HashSet<String> = self.pods.lock().keys().cloned().collect();
        // Known pods whose cgroup is elsewhere (kubelet's
        // /kubepods/.../pod<uid>): their unknown containers' leaves.
        let elsewhere: Vec<String> = self
            .pods
            .lock()
            .values()
            .map(|p| self.pod_cgroup(p))
            .filter(|c| c.driver == crate::config::CgroupDriver::Cgroupfs)
            .map(|c| c.dir)
            .filter(|d| Path::new(d).parent() != Some(Path::new(&parent)))
            .collect();
        // Blocking: it waits for killed processes to leave their cgroups.
        // Under systemd the scopes of dead processes are gone by themselves.
        report.orphan_cgroups = tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            if cgroupfs {
                removed += remove_unknown_cgroups(&parent, &pod_ids, &container_ids);
                for dir in &elsewhere {
                    removed += remove_unknown_container_cgroups(dir, &container_ids);
                }
            }
            removed
        })
        .await
        .map_err(|e| NodeError::Internal(format!("cgroup sweep failed: {e}")))?;

        if report.is_empty() {
            info!("startup reconciliation: nothing left over");
        } else {
            warn!(?report, "startup reconciliation cleaned what a crash left");
        }
        Ok(report)
    }
}

/// Removes `<parent>/<pod>` for unknown pods and `<parent>/<pod>/<ctr>` for
/// unknown containers in every hierarchy, SIGKILLing what is still in them
/// (a container whose monitor died with the daemon's half-made pod).
fn remove_unknown_cgroups(
    parent: &str,
    pods: &HashSet<String>,
    containers: &HashSet<String>,
) -> usize {
    let mut removed = 0;
    for h in crate::util::cgroupfs::hierarchies() {
        let root = h.join(parent.trim_matches('/'));
        for pod in entry_names(&root) {
            let pod_dir = root.join(&pod);
            if !pod_dir.is_dir() {
                continue;
            }
            if !pods.contains(&pod) {
                removed += remove_cgroup_tree(&pod_dir);
                continue;
            }
            for ctr in entry_names(&pod_dir) {
                // A known pod's init (shared PID namespace) has a leaf of
                // its own there; it lives as long as the pod's monitor.
                if ctr == crate::pod::cgroups::POD_INIT_CGROUP {
                    continue;
                }
                let dir = pod_dir.join(&ctr);
                if dir.is_dir() && !containers.contains(&ctr) {
                    removed += remove_cgroup_tree(&dir);
                }
            }
        }
    }
    removed
}

/// The leaves of unknown containers under a known pod's cgroup that is not
/// under capcri's parent (kubelet's), in every hierarchy; the pod init's
/// leaf is the pod's.
fn remove_unknown_container_cgroups(pod_dir: &str, containers: &HashSet<String>) -> usize {
    let mut removed = 0;
    for h in crate::util::cgroupfs::hierarchies() {
        let dir = h.join(pod_dir.trim_start_matches('/'));
        for ctr in entry_names(&dir) {
            // Only what capcri names: 64-hex container ids, never another
            // runtime's or kubelet's own directories.
            let ours = ctr.len() == 64 && ctr.bytes().all(|b| b.is_ascii_hexdigit());
            let d = dir.join(&ctr);
            if ours && d.is_dir() && !containers.contains(&ctr) {
                removed += remove_cgroup_tree(&d);
            }
        }
    }
    removed
}

/// Kills every process of a cgroup subtree and removes its directories,
/// deepest first; returns how many directories went.
fn remove_cgroup_tree(dir: &Path) -> usize {
    let dirs = crate::util::cgroupfs::subtree(dir);
    let mut removed = 0;
    for d in dirs.iter().rev() {
        kill_cgroup_procs(d);
        for _ in 0..100 {
            match std::fs::remove_dir(d) {
                Ok(()) => {
                    removed += 1;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                // EBUSY while the killed processes are still exiting.
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        if d.exists() {
            warn!(path = %d.display(), "orphan cgroup could not be removed");
        }
    }
    removed
}

fn kill_cgroup_procs(dir: &Path) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        warn!(pid, cgroup = %dir.display(), "killing a process left in an orphan cgroup");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
