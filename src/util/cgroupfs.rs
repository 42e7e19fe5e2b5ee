//! Where this host's cgroup hierarchies are: the one cgroup2 tree of a
//! unified host, or each v1 controller mount (and the named systemd and
//! the `unified` cgroup2 mount of a hybrid host) under /sys/fs/cgroup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A pure cgroup v2 host: `cgroup.controllers` exists only at a cgroup2
/// root, and on a v1 or hybrid host /sys/fs/cgroup is a tmpfs. Looked at
/// once: a host does not change its cgroup layout under a running daemon,
/// and the stats calls asked for every group of every call (a `stat` each,
/// 3% of the daemon's CPU in back-to-back list stats calls at 250 pods).
pub fn is_unified() -> bool {
    static UNIFIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNIFIED.get_or_init(|| Path::new(CGROUP_ROOT).join("cgroup.controllers").exists())
}

/// Every mounted hierarchy directory under /sys/fs/cgroup (or the root
/// itself on a pure cgroup2 host). The cpu/cpuacct-style aliases are
/// symlinks to one hierarchy and are not listed again.
pub fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if is_unified() {
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

/// The group `rel` (e.g. `/capcri/<pod>`, leading slash or not) in every
/// hierarchy, whether or not it exists there.
pub fn dirs_of(rel: &Path) -> Vec<PathBuf> {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    hierarchies().into_iter().map(|h| h.join(rel)).collect()
}

/// `dir` and every directory under it, parents before children (a
/// cgroup's children are directories; it can only go after them).
pub fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let children: Vec<PathBuf> = std::fs::read_dir(&out[i])
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        out.extend(children);
        i += 1;
    }
    out
}

/// Removes `dir` and every group under it, deepest first. A directory
/// still busy (its killed processes are exiting) is tried again every
/// 10 ms until `deadline`; a missing one is gone already. Error: the first
/// directory that would not go, and why; the others are still tried.
pub fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), (PathBuf, std::io::Error)> {
    let mut first = None;
    for d in subtree(dir).iter().rev() {
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() >= deadline => {
                    first.get_or_insert((d.clone(), e));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_lists_parents_before_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        std::fs::write(root.join("a/cgroup.procs"), "").expect("write");
        let got = subtree(root);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], root);
        let at = |p: &str| got.iter().position(|g| g == &root.join(p)).expect(p);
        assert!(at("a") < at("a/b") && at("a/b") < at("a/b/c"));
        assert!(got.iter().all(|g| g.is_dir()));
        assert_eq!(subtree(&root.join("missing")), [root.join("missing")]);
    }

    #[test]
    fn a_tree_goes_deepest_first_and_a_missing_one_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("group");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::create_dir_all(root.join("c")).expect("mkdir");
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(remove_tree(&root, soon).is_ok());
        assert!(!root.exists());
        assert!(remove_tree(&root, soon).is_ok(), "already gone");
        // A directory that cannot go (a file in it, as a busy cgroup) is
        // named once the deadline has passed; its sibling still goes.
        std::fs::create_dir_all(root.join("full")).expect("mkdir");
        std::fs::create_dir_all(root.join("empty")).expect("mkdir");
        std::fs::write(root.join("full/file"), "").expect("write");
        let (left, _) = remove_tree(&root, Instant::now()).expect_err("a directory stays");
        assert_eq!(left, root.join("full"));
        assert!(!root.join("empty").exists());
    }

    #[test]
    fn every_group_dir_is_under_a_hierarchy() {
        let dirs = dirs_of(Path::new("/capcri/pod"));
        assert_eq!(dirs.len(), hierarchies().len());
        for d in dirs {
            assert!(
                d.starts_with(CGROUP_ROOT) && d.ends_with("capcri/pod"),
                "{d:?}"
            );
        }
    }
}
