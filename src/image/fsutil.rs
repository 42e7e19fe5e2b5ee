//! Small filesystem helpers: crash-safe writes and unique temp names.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::fs::{Durability, replace_file};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ImageError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique in this process and across restarts (pid + counter + time),
/// prefixed with `tmp-` so `ImageStore::open` can delete leftovers.
pub fn temp_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "tmp-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Writes `data` so that after a crash the file holds either the old or the
/// new content: temp file, fsync, rename, fsync of the directory. Image
/// records and layer metadata are root only, whatever the umask.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    replace_with(path, data, Durability::Durable)
}

/// Like [`write_atomic`] without its two fsyncs: a crash of capcri leaves
/// the old or the new content, a crash of the machine may leave an empty
/// or cut file. Only for files the daemon can rebuild from records that
/// are written durably (see `ImageStore::persist_lease`).
pub fn write_replace(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    replace_with(path, data, Durability::CrashOfProcess)
}

/// A temp file beside `path`, renamed over it, synced as `durability` asks.
fn replace_with(path: &Path, data: &[u8], durability: Durability) -> Result<(), ImageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    replace_file(&dir.join(temp_name()), path, data, durability)
        .map_err(|e| ImageError::io(e.op, &e.path, e.source))
}

pub fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    crate::util::fs::sync_dir(dir).map_err(|e| ImageError::io("fsync directory", dir, e))
}

pub fn create_dir_all(dir: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(dir).map_err(|e| ImageError::io("create directory", dir, e))
}

/// Removes a file or a whole tree; absent is fine.
pub fn remove_any(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| ImageError::io("remove", path, e))
}

/// Entries of `dir` (absent dir = none).
pub fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, ImageError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ImageError::io("read directory", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| ImageError::io("read directory", dir, e))?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    Ok(out)
}
