//! The pod-level cgroup directories.
//!
//! Containers get `<parent>/<pod>/<container>`; libcontainer removes the
//! container's leaf on delete, the pod level is ours to remove, in every
//! hierarchy of this host (v1 controllers, the named systemd one, and the
//! unified cgroup2 mount of a hybrid host).

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Every mounted hierarchy directory under /sys/fs/cgroup (or the root
/// itself on a pure cgroup2 host).
pub fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Removes `<parent>/<pod_id>` where it exists; a non-empty one is left
/// (it still holds a live container) and reported.
pub fn remove_pod_cgroups(parent: &str, pod_id: &str) -> Vec<String> {
    let rel = format!("{}/{}", parent.trim_matches('/'), pod_id);
    let mut failures = Vec::new();
    for h in hierarchies() {
        let dir = h.join(&rel);
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    failures
}
