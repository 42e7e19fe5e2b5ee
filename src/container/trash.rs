//! Deferred deletion of what a removed container leaves on disk: its
//! bundle (with the overlay rootfs still mounted in it) and its writable
//! layer.
//!
//! Unmounting an overlay waits for an RCU grace period and deleting a
//! writable layer walks every file the container wrote: 40+ ms on a busy
//! 2-core node, which RemoveContainer used to spend before answering (the
//! bench's RemoveContainer was 0.13× containerd's, which deletes its
//! snapshots in a background GC too). Now RemoveContainer only renames
//! both directories into a trash directory on the same filesystem (two
//! `rename(2)`s: a directory holding a mount point may move, only the
//! mount point itself may not) and a blocking task unmounts and deletes
//! them after the call is answered.
//!
//! Crash safety: the trash is emptied again at every start, and at start a
//! bundle or writable layer whose container has no record (a crash between
//! the record's deletion and the renames, or inside CreateContainer) is
//! moved to the trash too. Nothing is deleted through a mount: an entry
//! whose rootfs is still a mount point after the unmount is left alone.

use crate::image::rootfs::unmount;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{debug, warn};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The trash directories: one per filesystem that holds container data.
#[derive(Debug, Clone)]
pub struct Trash {
    /// Under the state dir, for bundles.
    state: PathBuf,
    /// Under the data dir, for writable layers.
    data: PathBuf,
}

impl Trash {
    pub fn open(state_dir: &Path, data_dir: &Path) -> std::io::Result<Trash> {
        let t = Trash {
            state: state_dir.join("trash"),
            data: data_dir.join("trash"),
        };
        std::fs::create_dir_all(&t.state)?;
        std::fs::create_dir_all(&t.data)?;
        Ok(t)
    }

    /// Moves a removed container's bundle and writable layer into the
    /// trash; returns the new paths for [`delete_entry`]. A directory that
    /// does not exist is skipped (RemoveContainer is idempotent). Err means
    /// a rename failed (e.g. another filesystem): the caller deletes in
    /// place instead.
    pub fn discard(
        &self,
        id: &str,
        bundle: &Path,
        writable_dir: &Path,
    ) -> std::io::Result<Vec<PathBuf>> {
        let mut moved = Vec::new();
        for (dir, trash, kind) in [
            (bundle, &self.state, "bundle"),
            (writable_dir, &self.data, "layer"),
        ] {
            let to = trash.join(entry_name(id, kind));
            match std::fs::rename(dir, &to) {
                Ok(()) => moved.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// Moves every entry of `dir` whose name is not in `known` into the
    /// trash of `kind` ("bundle" or "layer"): what a crash left behind.
    pub fn sweep_orphans(&self, dir: &Path, known: &HashSet<String>, kind: &str) {
        let trash = if kind == "bundle" {
            &self.state
        } else {
            &self.data
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            let to = trash.join(entry_name(&name, kind));
            match std::fs::rename(e.path(), &to) {
                Ok(()) => {
                    debug!(path = %e.path().display(), "orphaned container directory moved to the trash")
                }
                Err(err) => {
                    warn!(path = %e.path().display(), error = %err, "orphaned container directory not moved to the trash")
                }
            }
        }
    }

    /// Every entry now in the trash (at start: what the last run left).
    pub fn entries(&self) -> Vec<PathBuf> {
        [&self.state, &self.data]
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .collect()
    }
}

/// A unique name in the trash: a container id may be discarded twice
/// (a crash between the rename and the record's deletion).
fn entry_name(id: &str, kind: &str) -> String {
    format!(
        "{id}.{kind}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Unmounts the entry's rootfs if it is still mounted, then deletes the
/// entry. Blocking; best effort, failures are logged and the entry stays
/// for the next start.
pub fn delete_entry(path: &Path) {
    let rootfs = path.join("rootfs");
    if is_mount_point(&rootfs) {
        if let Err(e) = unmount(&rootfs) {
            warn!(path = %rootfs.display(), error = %e, "trash: rootfs unmount failed");
        }
        if is_mount_point(&rootfs) {
            warn!(path = %rootfs.display(), "trash: rootfs still mounted; not deleting through it");
            return;
        }
    }
    // A user-namespace container's bundle holds idmapped binds of its
    // volumes: deleting recursively through one would delete the volume's
    // data on the host. They go first, or nothing is deleted.
    if !super::idmapped::unstage(path) || !super::image_volumes::unmount_all(path) {
        warn!(path = %path.display(), "trash: idmapped mounts still attached; not deleting through them");
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "trash: delete failed");
    }
}

/// A directory on another device than its parent is a mount point (the
/// overlay rootfs reports the overlay's device for directories).
fn is_mount_point(path: &Path) -> bool {
    let (Ok(m), Some(parent)) = (std::fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    std::fs::symlink_metadata(parent).is_ok_and(|p| p.dev() != m.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_moves_both_dirs_and_delete_empties_them() {
        let tmp = tempfile::tempdir().unwrap();
        let trash = Trash::open(&tmp.path().join("run"), &tmp.path().join("lib")).unwrap();
        let bundle = tmp.path().join("run/containers/c1");
        let layer = tmp.path().join("lib/containers/c1");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::create_dir_all(layer.join("upper/etc")).unwrap();
        std::fs::write(layer.join("upper/etc/f"), b"x").unwrap();
        let moved = trash.discard("c1", &bundle, &layer).unwrap();
        assert_eq!(moved.len(), 2);
        assert!(!bundle.exists() && !layer.exists());
        assert_eq!(trash.entries().len(), 2);
        for m in &moved {
            delete_entry(m);
        }
        assert!(trash.entries().is_empty());
        // Idempotent: nothing left to move.
        assert!(trash.discard("c1", &bundle, &layer).unwrap().is_empty());
    }

    #[test]
    fn orphans_without_records_go_to_the_trash() {
        let tmp = tempfile::tempdir().unwrap();
        let trash = Trash::open(&tmp.path().join("run"), &tmp.path().join("lib")).unwrap();
        let bundles = tmp.path().join("run/containers");
        for id in ["kept", "orphan"] {
            std::fs::create_dir_all(bundles.join(id)).unwrap();
        }
        let known = HashSet::from(["kept".to_string()]);
        trash.sweep_orphans(&bundles, &known, "bundle");
        assert!(bundles.join("kept").exists());
        assert!(!bundles.join("orphan").exists());
        let entries = trash.entries();
        assert_eq!(entries.len(), 1);
        assert!(
            entries[0]
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("orphan.bundle.")
        );
    }
}
