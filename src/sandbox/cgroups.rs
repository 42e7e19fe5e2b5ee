//! The pod-level cgroup directories.
//!
//! Containers get `<parent>/<pod>/<container>`; libcontainer removes the
//! container's leaf on delete, the pod level is ours to remove, in every
//! hierarchy of this host (v1 controllers, the named systemd one, and the
//! unified cgroup2 mount of a hybrid host).

use crate::util::cgroupfs::hierarchies;

/// This host's cgroup v1 hierarchies (empty on a cgroup2 host), read once
/// from the daemon's mountinfo: the monitors and the containers' inits
/// start from the daemon's mount namespace, so they see the same ones.
pub fn v1_hierarchies() -> &'static [crate::spec::cgroup_v1::V1Hierarchy] {
    static HIERARCHIES: std::sync::OnceLock<Vec<crate::spec::cgroup_v1::V1Hierarchy>> =
        std::sync::OnceLock::new();
    HIERARCHIES.get_or_init(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        crate::spec::cgroup_v1::v1_hierarchies(&mountinfo)
    })
}

/// The leaf cgroup of a shared-PID pod's init, under the pod's own.
pub const POD_INIT_CGROUP: &str = "pod-init";

/// The pod init's cgroup, relative to each hierarchy's root.
pub fn pod_init_cgroup(parent: &str, pod_id: &str) -> String {
    format!("/{}/{pod_id}/{POD_INIT_CGROUP}", parent.trim_matches('/'))
}

/// Removes `<parent>/<pod_id>` (and its pod init's leaf) where it exists;
/// a non-empty one is left (it still holds a live process) and reported.
pub fn remove_pod_cgroups(parent: &str, pod_id: &str) -> Vec<String> {
    let rel = format!("{}/{}", parent.trim_matches('/'), pod_id);
    let mut failures = Vec::new();
    for h in hierarchies() {
        let dir = h.join(&rel);
        let _ = std::fs::remove_dir(dir.join(POD_INIT_CGROUP));
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    failures
}
