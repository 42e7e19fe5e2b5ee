//! Reads small files of a container's rootfs (its /etc/passwd and
//! /etc/group) as the container would see them.
//!
//! The rootfs is hostile: /etc/passwd may be a symlink to /etc/shadow.
//! openat2(RESOLVE_IN_ROOT) resolves every component, symlinks included,
//! inside the rootfs, so a host file is never read.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

/// At most this much is read: user databases are small, and a huge file
/// must not exhaust the daemon's memory.
const MAX_BYTES: u64 = 1 << 20;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_IN_ROOT: u64 = 0x10;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

/// The content of `path` inside `root`, or None if it does not exist.
pub fn read_in_root(root: &Path, path: &str) -> std::io::Result<Option<String>> {
    let root_fd = std::fs::File::open(root)?;
    let rel = CString::new(path.trim_start_matches('/'))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid fd, NUL-terminated path, properly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(&root_fd),
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(err);
    }
    // SAFETY: the kernel just returned this fd to us.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    file.take(MAX_BYTES).read_to_end(&mut buf)?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host secret").unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/group"), "root:x:0:\n").unwrap();
        // An absolute symlink: on the host it points at the secret; inside the root it dangles.
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            root.path().join("etc/passwd"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../../../../../..", root.path().join("etc/up")).unwrap();
        assert_eq!(
            read_in_root(root.path(), "/etc/group").unwrap().as_deref(),
            Some("root:x:0:\n")
        );
        assert_eq!(read_in_root(root.path(), "/etc/passwd").unwrap(), None);
        let escaped = read_in_root(
            root.path(),
            &format!("/etc/up{}", outside.path().join("secret").display()),
        );
        assert!(matches!(escaped, Ok(None)), "{escaped:?}");
        assert_eq!(read_in_root(root.path(), "/etc/missing").unwrap(), None);
    }
}
