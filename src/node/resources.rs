//! UpdateContainerResources and ReopenContainerLog: changes to a container
//! that already runs.

use crate::state::ContainerOp;
use std::path::PathBuf;

use k8s_cri::v1::LinuxContainerResources;

use crate::host::{CgroupPath, ResourceUpdate};
use crate::node::{Node, NodeError};

/// The CRI request as cgroup changes. Zero means "leave as is", as
/// containerd reads it (the CRI has no optional scalars); a quota of -1
/// lifts the CPU limit.
pub fn resource_update(r: &LinuxContainerResources) -> Result<ResourceUpdate, NodeError> {
    let positive = |v: i64, field: &str| -> Result<Option<u64>, NodeError> {
        match v {
            0 => Ok(None),
            v if v > 0 => Ok(Some(v as u64)),
            v => Err(NodeError::InvalidArgument(format!(
                "resources.{field} is {v}: use a positive value, or 0 to keep the current one"
            ))),
        }
    };
    if r.cpu_quota < -1 {
        return Err(NodeError::InvalidArgument(format!(
            "resources.cpu_quota is {}: use a positive value, -1 for no limit, or 0 to keep the current one",
            r.cpu_quota
        )));
    }
    if r.memory_limit_in_bytes < 0 {
        return Err(NodeError::InvalidArgument(format!(
            "resources.memory_limit_in_bytes is {}: use a positive value, or 0 to keep the current one",
            r.memory_limit_in_bytes
        )));
    }
    for key in r.unified.keys() {
        crate::util::cgroup_paths::validate_unified_key(key)
            .map_err(|e| NodeError::InvalidArgument(format!("resources.{e}")))?;
    }
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(ResourceUpdate {
        cpu_shares: positive(r.cpu_shares, "cpu_shares")?,
        cpu_quota: (r.cpu_quota != 0).then_some(r.cpu_quota),
        cpu_period: positive(r.cpu_period, "cpu_period")?,
        cpuset_cpus: text(&r.cpuset_cpus),
        cpuset_mems: text(&r.cpuset_mems),
        memory_limit: (r.memory_limit_in_bytes != 0).then_some(r.memory_limit_in_bytes),
        unified: r
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// The stored resources with the update's non-zero fields applied, so
/// ContainerStatus reports what the container now runs with.
fn merged(
    old: Option<&LinuxContainerResources>,
    new: &LinuxContainerResources,
) -> LinuxContainerResources {
    let mut out = old.cloned().unwrap_or_default();
    if new.cpu_shares != 0 {
        out.cpu_shares = new.cpu_shares;
    }
    if new.cpu_quota != 0 {
        out.cpu_quota = new.cpu_quota;
    }
    if new.cpu_period != 0 {
        out.cpu_period = new.cpu_period;
    }
    if !new.cpuset_cpus.is_empty() {
        out.cpuset_cpus = new.cpuset_cpus.clone();
    }
    if !new.cpuset_mems.is_empty() {
        out.cpuset_mems = new.cpuset_mems.clone();
    }
    if new.memory_limit_in_bytes != 0 {
        out.memory_limit_in_bytes = new.memory_limit_in_bytes;
    }
    out.unified.extend(new.unified.clone());
    out
}

impl Node {
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: &LinuxContainerResources,
    ) -> Result<(), NodeError> {
        let update = resource_update(resources)?;
        if !update.unified.is_empty() && !crate::util::cgroupfs::is_unified() {
            return Err(NodeError::InvalidArgument(
                "resources.unified names cgroup v2 files but this node runs cgroup v1: use the typed fields (cpu_*, memory_limit_in_bytes) here".into(),
            ));
        }
        let record = self.container_status(id).await?;
        let _guard = self.container_locks.lock(&record.id).await;
        record.check(ContainerOp::UpdateResources)?;
        let pod = self.pod(&record.pod_id)?;
        let cgroup = CgroupPath::new(&PathBuf::from(
            self.pod_cgroup(&pod).container_dir(&record.id),
        ));
        cgroup.apply(&update).map_err(|e| {
            NodeError::Unsatisfiable(format!(
                "cannot update the resources of container {}: {e}",
                record.id
            ))
        })?;
        let mut record = record;
        let linux = record.config.linux.get_or_insert_with(Default::default);
        linux.resources = Some(merged(linux.resources.as_ref(), resources));
        self.containers.put(record)?;
        Ok(())
    }

    /// kubelet renamed the log file to rotate it; the monitor creates the
    /// path anew. containerd refuses a container that is not running.
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), NodeError> {
        let record = self.container_status(id).await?;
        record.check(ContainerOp::ReopenLog)?;
        let pod = self.pod(&record.pod_id)?;
        self.monitor(&pod).await?.reopen_log(&record.id).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fields_are_left_alone() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let u = resource_update(&r).unwrap();
        assert_eq!(
            u,
            ResourceUpdate {
                cpu_shares: Some(512),
                memory_limit: Some(64 << 20),
                ..Default::default()
            }
        );
        let old = LinuxContainerResources {
            cpu_quota: 50_000,
            cpu_shares: 2,
            ..Default::default()
        };
        let m = merged(Some(&old), &r);
        assert_eq!(
            (m.cpu_shares, m.cpu_quota, m.memory_limit_in_bytes),
            (512, 50_000, 64 << 20)
        );
    }

    #[test]
    fn unified_keys_are_checked() {
        let r = |key: &str| LinuxContainerResources {
            unified: [(key.to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(
            resource_update(&r("memory.high")).unwrap().unified["memory.high"],
            "1"
        );
        for bad in ["cgroup.procs", "../../memory.max", "memory.max/../x"] {
            assert!(
                matches!(resource_update(&r(bad)), Err(NodeError::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn negative_values_are_refused_except_unlimited_quota() {
        let bad = LinuxContainerResources {
            cpu_shares: -1,
            ..Default::default()
        };
        assert!(matches!(
            resource_update(&bad),
            Err(NodeError::InvalidArgument(_))
        ));
        let unlimited = LinuxContainerResources {
            cpu_quota: -1,
            ..Default::default()
        };
        assert_eq!(resource_update(&unlimited).unwrap().cpu_quota, Some(-1));
        let bad_quota = LinuxContainerResources {
            cpu_quota: -5,
            ..Default::default()
        };
        assert!(resource_update(&bad_quota).is_err());
    }
}
