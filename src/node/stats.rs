//! ContainerStats, ListContainerStats, PodSandboxStats and
//! ListPodSandboxStats: CPU and memory from where the processes are, the
//! pod's cgroup (kubelet's or capcri's, see `util::cgroup_paths`) and each
//! container's in it, and the size of each container's writable layer (its
//! overlay upper dir).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use k8s_cri::v1::{ContainerStatsFilter, PodSandboxStatsFilter};

use crate::container::{ContainerRecord, ContainerState};
use crate::node::{Node, NodeError, labels_match};
use crate::runtime::{CgroupPath, MemoryUsage};
use crate::sandbox::PodSandbox;
use crate::util::sync::lock;
use crate::util::time::now_nanos;

/// CPU and memory of one cgroup at `timestamp` (unix nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub timestamp: i64,
    /// Cumulative CPU time.
    pub cpu_ns: Option<u64>,
    /// CPU use since the previous sample of the same group, in billionths
    /// of a core; `None` on the first sample (kubelet tolerates that).
    pub nano_cores: Option<u64>,
    pub memory: Option<MemoryUsage>,
}

/// Size of a container's writable layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerUsage {
    /// Allocated bytes (blocks × 512, as `du` counts them).
    pub bytes: u64,
    pub inodes: u64,
}

#[derive(Debug, Clone)]
pub struct ContainerUsage {
    pub record: ContainerRecord,
    pub usage: CgroupUsage,
    pub writable_layer: Option<LayerUsage>,
    /// The filesystem holding the writable layers (CRI `fs_id.mountpoint`).
    pub layer_mountpoint: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PodUsage {
    pub pod: PodSandbox,
    pub usage: CgroupUsage,
    pub containers: Vec<ContainerUsage>,
}

/// The previous (timestamp, cpu_ns) per cgroup, for `nano_cores`.
fn cpu_samples() -> &'static Mutex<HashMap<PathBuf, (i64, u64)>> {
    static SAMPLES: OnceLock<Mutex<HashMap<PathBuf, (i64, u64)>>> = OnceLock::new();
    SAMPLES.get_or_init(Default::default)
}

/// Billionths of a core used between two samples.
pub fn nano_cores(prev: (i64, u64), now: (i64, u64)) -> Option<u64> {
    let dt = now.0.checked_sub(prev.0).filter(|d| *d > 0)?;
    let used = now.1.checked_sub(prev.1)?;
    Some(((used as u128) * 1_000_000_000 / dt as u128) as u64)
}

fn sample(cgroups_path: &Path) -> CgroupUsage {
    let group = CgroupPath::new(cgroups_path);
    let timestamp = now_nanos();
    if !group.exists() {
        return CgroupUsage {
            timestamp,
            ..Default::default()
        };
    }
    let cpu_ns = group.cpu_usage_ns();
    let nano = cpu_ns.and_then(|cpu| {
        let mut samples = lock(cpu_samples());
        let prev = samples.insert(cgroups_path.to_path_buf(), (timestamp, cpu));
        prev.and_then(|p| nano_cores(p, (timestamp, cpu)))
    });
    CgroupUsage {
        timestamp,
        cpu_ns,
        nano_cores: nano,
        memory: group.memory(),
    }
}

/// Walk the upper dir without following symlinks; each inode once per
/// hard-link group is not tracked (the upper dir of a container rarely
/// holds hard links, and `du` without -l counts them once: close enough).
fn layer_usage(dir: &Path) -> Option<LayerUsage> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let mut total = LayerUsage {
        bytes: meta.blocks() * 512,
        inodes: 1,
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total.bytes += m.blocks() * 512;
            total.inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Some(total)
}

impl Node {
    /// The container's cgroup directory; a container whose pod is gone
    /// has none.
    fn container_cgroup(&self, record: &ContainerRecord) -> Option<PathBuf> {
        let pod = self.find_pod(&record.pod_id)?;
        Some(PathBuf::from(
            self.pod_cgroup(&pod).container_dir(&record.id),
        ))
    }

    async fn container_usage(&self, record: ContainerRecord) -> ContainerUsage {
        let cgroup = self.container_cgroup(&record);
        let upper = record.writable_dir.join("upper");
        let layer_mountpoint = self.config.writable_layers_dir();
        let (usage, writable_layer) = tokio::task::spawn_blocking(move || {
            let usage = match cgroup {
                Some(c) => sample(&c),
                None => CgroupUsage {
                    timestamp: now_nanos(),
                    ..Default::default()
                },
            };
            (usage, layer_usage(&upper))
        })
        .await
        .unwrap_or_default();
        ContainerUsage {
            record,
            usage,
            writable_layer,
            layer_mountpoint,
        }
    }

    pub async fn container_stats(&self, id: &str) -> Result<ContainerUsage, NodeError> {
        let record = self.container(id)?;
        Ok(self.container_usage(record).await)
    }

    /// Stats of the containers that exist now and match the filter; exited
    /// containers have no cgroup any more and report their layer only.
    pub async fn list_container_stats(
        &self,
        filter: Option<&ContainerStatsFilter>,
    ) -> Vec<ContainerUsage> {
        let mut records: Vec<ContainerRecord> = lock(&self.containers)
            .values()
            .filter(|c| {
                let Some(f) = filter else { return true };
                (f.id.is_empty() || c.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
                    && labels_match(&c.config.labels, &f.label_selector)
            })
            .cloned()
            .collect();
        records.sort_by_key(|c| c.created_at);
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(self.container_usage(r).await);
        }
        out
    }

    async fn pod_usage(&self, pod: PodSandbox) -> PodUsage {
        let cgroup = PathBuf::from(self.pod_cgroup(&pod).dir);
        let usage = tokio::task::spawn_blocking(move || sample(&cgroup))
            .await
            .unwrap_or_default();
        let mut records: Vec<ContainerRecord> = self
            .containers_of(&pod.id)
            .into_iter()
            .filter(|c| matches!(c.state, ContainerState::Created | ContainerState::Running))
            .collect();
        records.sort_by_key(|c| c.created_at);
        let mut containers = Vec::with_capacity(records.len());
        for r in records {
            containers.push(self.container_usage(r).await);
        }
        PodUsage {
            pod,
            usage,
            containers,
        }
    }

    pub async fn pod_sandbox_stats(&self, id: &str) -> Result<PodUsage, NodeError> {
        let pod = self.pod(id)?;
        Ok(self.pod_usage(pod).await)
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        filter: Option<&PodSandboxStatsFilter>,
    ) -> Vec<PodUsage> {
        let mut pods: Vec<PodSandbox> = lock(&self.pods)
            .values()
            .filter(|p| {
                let Some(f) = filter else { return true };
                (f.id.is_empty() || p.id.starts_with(&f.id))
                    && labels_match(&p.config.labels, &f.label_selector)
            })
            .cloned()
            .collect();
        pods.sort_by_key(|p| p.created_at);
        let mut out = Vec::with_capacity(pods.len());
        for p in pods {
            out.push(self.pod_usage(p).await);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_cores_from_two_samples() {
        // Half a core: 0.5 s of CPU in 1 s.
        assert_eq!(
            nano_cores((1_000_000_000, 0), (2_000_000_000, 500_000_000)),
            Some(500_000_000)
        );
        // Same timestamp, clock going back or a counter reset: unknown.
        assert_eq!(nano_cores((5, 10), (5, 20)), None);
        assert_eq!(nano_cores((6, 10), (5, 20)), None);
        assert_eq!(nano_cores((1, 30), (2, 20)), None);
    }

    #[test]
    fn layer_usage_counts_every_inode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), vec![1u8; 10_000]).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("l")).unwrap();
        let u = layer_usage(dir.path()).unwrap();
        assert_eq!(u.inodes, 4);
        assert!(u.bytes >= 10_000, "{u:?}");
        assert_eq!(layer_usage(&dir.path().join("missing")), None);
    }
}
