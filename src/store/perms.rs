//! Modes of capcri's own directories and files.
//!
//! Bundles (config.json with the container's env, i.e. its Secrets), pod
//! and container records, CNI results and monitor state are readable by
//! root only, whatever the umask: files are created 0600 explicitly, and
//! the daemon also runs with umask 077 so nothing is created looser by
//! accident. Directories are 0700, or 0711 (traverse, not list) where a
//! process that is not host root must walk through them: a user-namespaced
//! container's init resolves its bundle's rootfs and its pod's
//! hosts/resolv.conf through the state dir before pivot_root, and socket
//! group members reach the CRI socket through its directory.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Root only.
pub const PRIVATE_DIR: u32 = 0o700;
/// Traversable by anyone who knows a name inside, listable by root only.
pub const TRAVERSE_DIR: u32 = 0o711;
/// Files holding specs, records, env, state.
pub use crate::util::fs::PRIVATE_FILE;

/// What [`ensure_dir`] did to one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirChange {
    Created {
        path: PathBuf,
        mode: u32,
    },
    /// An existing directory whose mode was not the wanted one.
    Changed {
        path: PathBuf,
        from: u32,
        to: u32,
    },
}

/// Makes `path` a directory of exactly `mode` (creating it and any missing
/// parent; parents get [`TRAVERSE_DIR`], since something else may live
/// next to capcri's directory). Modes are set with chmod after mkdir, so
/// the umask does not shape them. An existing `path` is set to `mode` only
/// when `own` (capcri's own directory); a directory that may be shared
/// (the parent of a configured socket, e.g. /run) is never changed.
/// Returns what was created or changed.
pub fn ensure_dir(path: &Path, mode: u32, own: bool) -> io::Result<Vec<DirChange>> {
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        match std::fs::metadata(cur) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", cur.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur.to_path_buf());
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut changes = Vec::new();
    for dir in missing.iter().rev() {
        let want = if dir == path { mode } else { TRAVERSE_DIR };
        match std::fs::DirBuilder::new().mode(want).create(dir) {
            Ok(()) => {}
            // Another process made it meanwhile: its mode is checked below
            // for `path`, and a parent made by someone else is theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(want))?;
        changes.push(DirChange::Created {
            path: dir.clone(),
            mode: want,
        });
    }
    let have = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if own && have != mode && !missing.iter().any(|d| d == path) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        changes.push(DirChange::Changed {
            path: path.to_path_buf(),
            from: have,
            to: mode,
        });
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_parents_and_sets_modes_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("a/b/state");
        // SAFETY: umask has no failure mode; a loose one must not matter.
        let old = unsafe { libc::umask(0o000) };
        let changes = ensure_dir(&target, PRIVATE_DIR, true).unwrap();
        unsafe { libc::umask(old) };
        assert_eq!(mode(&target), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o711);
        assert_eq!(mode(&tmp.path().join("a/b")), 0o711);
        assert_eq!(changes.len(), 3, "{changes:?}");
        // Existing and loose: tightened, and reported.
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let changes = ensure_dir(&target, PRIVATE_DIR, true).unwrap();
        assert_eq!(
            changes,
            vec![DirChange::Changed {
                path: target.clone(),
                from: 0o755,
                to: 0o700
            }]
        );
        assert_eq!(mode(&target), 0o700);
        assert!(ensure_dir(&target, PRIVATE_DIR, true).unwrap().is_empty());
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        assert!(ensure_dir(&tmp.path().join("file"), PRIVATE_DIR, true).is_err());
        // A shared directory (a socket's parent) is created if missing,
        // never changed if it exists.
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ensure_dir(&target, PRIVATE_DIR, false).unwrap().is_empty());
        assert_eq!(mode(&target), 0o755);
    }
}
