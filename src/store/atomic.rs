//! Crash-consistent file replacement.

use super::StoreError;
use crate::util::fs::{Durability, replace_file, sync_dir};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

pub(super) const TMP_PREFIX: &str = ".tmp-";

/// Writes `bytes` to `path` so that a crash leaves either the old or the new
/// content: temp file in the same directory, fsync, rename, fsync directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace(path, bytes, Durability::Durable)
}

/// Like [`write_atomic`] without the directory's fsync: a power loss
/// leaves the old or the new content, each whole, but may lose the new.
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace(path, bytes, Durability::Whole)
}

/// Like [`write_atomic`] without the two fsyncs: a crash of capcri leaves
/// the old or the new content, a crash of the machine may leave neither.
/// For files under the state dir (tmpfs `/run` on a node, emptied by a
/// reboot anyway, where every container it describes is gone too), such
/// as a bundle's config.json: its fsyncs cost CreateContainer several ms
/// on a busy disk and protected nothing.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace(path, bytes, Durability::CrashOfProcess)
}

fn replace(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TMP_PREFIX}{name}.{}.{seq}", std::process::id()));
    replace_file(&tmp, path, bytes, durability).map_err(|e| StoreError::io(path, e.source))
}

pub(super) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    sync_dir(dir).map_err(|e| StoreError::io(dir, e))
}
