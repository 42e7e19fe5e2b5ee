//! Crash-consistent file replacement.

use super::StoreError;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

pub(super) const TMP_PREFIX: &str = ".tmp-";

/// Writes `bytes` to `path` so that a crash leaves either the old or the new
/// content: temp file in the same directory, fsync, rename, fsync directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace(path, bytes, true)
}

/// Like [`write_atomic`] without the two fsyncs: a crash of capcri leaves
/// the old or the new content, a crash of the machine may leave neither.
/// For files under the state dir (tmpfs `/run` on a node, emptied by a
/// reboot anyway, where every container it describes is gone too), such
/// as a bundle's config.json: its fsyncs cost CreateContainer several ms
/// on a busy disk and protected nothing.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TMP_PREFIX}{name}.{}.{seq}", std::process::id()));
    let result = (|| {
        // 0600 whatever the umask: these files hold specs (with the
        // container's env), records and state.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(super::perms::PRIVATE_FILE)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(super::perms::PRIVATE_FILE))?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::io(path, e));
    }
    if durable { fsync_dir(dir) } else { Ok(()) }
}

pub(super) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}
