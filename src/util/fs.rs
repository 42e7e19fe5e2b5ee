//! Crash-consistent file replacement and directory fsync.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Owner read/write only: the files written here hold specs (with the
/// container's env), records and state.
pub const PRIVATE_FILE: u32 = 0o600;

/// A failed step of [`replace_file`]: which one (`create`, `write`,
/// `fsync`, `rename into place`, `fsync directory`), on which path.
#[derive(Debug)]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl FsError {
    fn new(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        FsError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Whether a replacement survives a machine crash, not only a crash of
/// capcri.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync of the file before the rename and of the directory after it:
    /// a power loss leaves the old or the new content.
    Durable,
    /// fsync of the file before the rename, not of the directory after it:
    /// a power loss leaves the old or the new content, each whole (never
    /// the empty or cut file an unsynced rename can leave on XFS), but may
    /// lose the newest. For a replacement whose loss a machine crash makes
    /// moot (see `Node::start_container`).
    Whole,
    /// No fsync: a crash of capcri leaves the old or the new content, a
    /// crash of the machine may leave neither (for files on tmpfs, or
    /// rewritten from a durable record anyway).
    CrashOfProcess,
}

/// Writes `bytes` to `path` through `tmp` (a fresh name in the same
/// directory, which the caller's startup sweep recognises): write, fsync,
/// rename over `path`, fsync the directory. On failure `tmp` is removed and
/// `path` keeps its old content. The file is 0600 whatever the umask.
pub fn replace_file(
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), FsError> {
    let sync_file = durability != Durability::CrashOfProcess;
    let sync_dir_after = durability == Durability::Durable;
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE)
            .open(tmp)
            .map_err(|e| FsError::new("create", tmp, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(|e| FsError::new("chmod", tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| FsError::new("write", tmp, e))?;
        if sync_file {
            f.sync_all().map_err(|e| FsError::new("fsync", tmp, e))?;
        }
        std::fs::rename(tmp, path).map_err(|e| FsError::new("rename into place", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result?;
    if sync_dir_after {
        let dir = path.parent().unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| FsError::new("fsync directory", dir, e))?;
    }
    Ok(())
}

/// A rename or an unlink is durable only once the directory entry is on
/// disk: fsync of the directory.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_whole_and_private_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.json");
        std::fs::write(&path, b"old").unwrap();
        for d in [Durability::Durable, Durability::CrashOfProcess] {
            let tmp = dir.path().join(".tmp-rec");
            replace_file(&tmp, &path, b"new", d).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"new");
            assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
            assert!(!tmp.exists());
        }
    }

    #[test]
    fn a_failed_rename_keeps_the_old_content_and_removes_the_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"").unwrap();
        let tmp = dir.path().join(".tmp-sub");
        let err = replace_file(&tmp, &path, b"new", Durability::Durable).unwrap_err();
        assert_eq!(err.op, "rename into place");
        assert!(!tmp.exists());
        assert!(path.is_dir());
    }
}
