//! PID namespace TARGET (ephemeral containers, `kubectl debug --target`):
//! the container joins the PID namespace of another container of its pod,
//! found by `target_id`.

use crate::state::{ContainerOp, WrongState};
use std::path::PathBuf;

use k8s_cri::v1::{ContainerConfig, NamespaceMode};

use crate::node::{Node, NodeError};
use crate::pod::PodSandbox;

impl Node {
    /// `/proc/<target init>/ns/pid` when the container asks for TARGET mode;
    /// None otherwise. The target must be a running container of the same
    /// pod: another pod's would let a pod reach processes it does not own.
    pub(super) fn pid_target_namespace(
        &self,
        pod: &PodSandbox,
        config: &ContainerConfig,
    ) -> Result<Option<PathBuf>, NodeError> {
        let Some(opts) = crate::spec::security_context(config)
            .and_then(|sc| sc.namespace_options.as_ref())
            .filter(|o| o.pid() == NamespaceMode::Target)
        else {
            return Ok(None);
        };
        let target_id = opts.target_id.as_str();
        if target_id.is_empty() {
            return Err(NodeError::InvalidArgument(
                "namespace_options.pid is TARGET but target_id is empty: give the id of a running container of the same pod".into(),
            ));
        }
        let target = self.find_container(target_id).ok_or_else(|| NodeError::NotFound {
            kind: "target container",
            id: format!(
                "{target_id} (namespace_options.target_id of pid mode TARGET names no container; give a running container of pod {})",
                pod.id
            ),
        })?;
        if target.pod_id != pod.id {
            return Err(NodeError::InvalidArgument(format!(
                "namespace_options.target_id {target_id:?} is a container of pod {}, not of pod {}: a container can only share the PID namespace of a container of its own pod",
                target.pod_id, pod.id
            )));
        }
        target.check(ContainerOp::SharePidNamespace)?;
        if target.pid == 0 {
            return Err(WrongState {
                kind: "container",
                id: target.id.clone(),
                state: "without a process",
                wanted: "running",
                action: "sharing its PID namespace (namespace_options.target_id)",
                fix: "its PID namespace is gone; start it, or target a running container",
            }
            .into());
        }
        let path = PathBuf::from(format!("/proc/{}/ns/pid", target.pid));
        // The recorded pid may be stale (the target exited, its pid reused):
        // the process must still sit in the target's cgroup, and its PID
        // namespace must not be the runtime's own (joining that would give
        // the container the host's processes).
        let in_target = std::fs::read_to_string(format!("/proc/{}/cgroup", target.pid))
            .is_ok_and(|c| c.lines().any(|l| l.contains(&target.id)));
        let ns_inode = |p: &str| {
            std::fs::metadata(p)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .ok()
        };
        let own = ns_inode("/proc/self/ns/pid");
        let theirs = ns_inode(&path.to_string_lossy());
        if in_target && theirs.is_some() && theirs == own {
            return Err(NodeError::InvalidArgument(format!(
                "namespace_options.target_id {target_id:?} ({}) runs in the host's PID namespace (pid mode NODE); a TARGET container would get the host's processes: ask for pid mode NODE instead, in a pod allowed hostPID",
                target.name()
            )));
        }
        if !in_target || theirs.is_none() {
            return Err(WrongState {
                kind: "container",
                id: target.id.clone(),
                state: "exited since its last status",
                wanted: "running",
                action: "sharing its PID namespace (namespace_options.target_id)",
                fix: "its PID namespace is gone; target a running container",
            }
            .into());
        }
        Ok(Some(path))
    }
}
