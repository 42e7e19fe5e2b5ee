//! A pod's cgroup, decided at RunPodSandbox from kubelet's
//! `cgroup_parent` (`util::cgroup_paths`), made and limited when capcri
//! owns it (`pod::cgroups`), and read back from the pod record by every
//! later operation.

use super::{Node, NodeError};
use crate::pod::PodSandbox;
use crate::pod::cgroups::pod_limits;
use crate::util::cgroup_paths::{CgroupDriver, PodCgroup};

impl Node {
    /// Where a pod's cgroups are: its record's, or for a record from
    /// before they were kept, capcri's `<parent>/<id>`.
    pub(crate) fn pod_cgroup(&self, pod: &PodSandbox) -> PodCgroup {
        pod.cgroup.clone().unwrap_or_else(|| PodCgroup {
            driver: CgroupDriver::Cgroupfs,
            dir: format!(
                "{}/{}",
                self.cgroups.default_parent.trim_end_matches('/'),
                pod.id
            ),
            slice: None,
            owned: true,
            pod_id: pod.id.clone(),
        })
    }

    /// Decides the pod's cgroup (checked already at RunPodSandbox's start),
    /// finds whether kubelet made it, applies the pod-level limits to one
    /// capcri makes, and records it in the pod before its record is written.
    pub(crate) fn place_pod_cgroup(
        &self,
        pod: &mut PodSandbox,
    ) -> Result<PodCgroup, crate::node::NodeError> {
        let linux = pod.config.linux.clone().unwrap_or_default();
        let mut cgroup = PodCgroup::resolve(
            self.cgroups.driver,
            &linux.cgroup_parent,
            &self.cgroups.default_parent,
            &pod.id,
        )
        .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        if !cgroup.owned {
            cgroup.owned =
                !crate::util::task::blocking(|| crate::pod::cgroups::cgroup_exists(&cgroup.dir));
        }
        // Kept before anything is made, so a failure below tears down what
        // this pod owns and nothing of kubelet's.
        pod.cgroup = Some(cgroup.clone());
        let limits = pod_limits(linux.resources.as_ref(), linux.overhead.as_ref());
        crate::util::task::blocking(|| crate::pod::cgroups::apply_pod_limits(&cgroup, &limits))
            .map_err(|e| {
                NodeError::Unsatisfiable(format!(
                    "cannot apply the pod-level resources of pod {} to its cgroup {}: {e}",
                    pod.id, cgroup.dir
                ))
            })?;
        tracing::debug!(pod.id = %pod.id, cgroup = %cgroup.dir, owned = cgroup.owned, driver = cgroup.driver.as_str(), "pod cgroup");
        Ok(cgroup)
    }
}
