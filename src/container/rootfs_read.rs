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

/// openat2(2) of `path` with every component, symlinks included,
/// resolved inside `root`.
fn openat2_in_root(root: &Path, path: &str, flags: i32) -> std::io::Result<std::fs::File> {
    let root_fd = std::fs::File::open(root)?;
    let rel = CString::new(path.trim_start_matches('/'))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
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
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(std::fs::File::from(unsafe {
        OwnedFd::from_raw_fd(fd as i32)
    }))
}

/// The content of `path` inside `root`, or None if it does not exist.
pub fn read_in_root(root: &Path, path: &str) -> std::io::Result<Option<String>> {
    let file = match openat2_in_root(root, path, libc::O_RDONLY | libc::O_NOCTTY) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
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

/// Opens `path` inside `root` (every component resolved in the root) as an
/// O_PATH handle; `follow_last` decides whether a final symlink is followed.
pub fn open_in_root(root: &Path, path: &str, follow_last: bool) -> Option<std::fs::File> {
    let mut flags = libc::O_PATH;
    if !follow_last {
        flags |= libc::O_NOFOLLOW;
    }
    openat2_in_root(root, path, flags).ok()
}

/// The target of the symlink at `path` inside `root`, None if it is not one.
pub fn read_link_in_root(root: &Path, path: &str) -> Option<String> {
    let handle = open_in_root(root, path, false)?;
    if !handle.metadata().ok()?.file_type().is_symlink() {
        return None;
    }
    // An O_PATH|O_NOFOLLOW fd of a symlink: readlinkat with an empty path
    // reads the link itself.
    let mut buf = vec![0u8; 4096];
    let empty = CString::default();
    // SAFETY: valid fd and buffer of the given length.
    let n = unsafe {
        libc::readlinkat(
            std::os::fd::AsRawFd::as_raw_fd(&handle),
            empty.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn links_and_files_are_seen_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("bin/busybox"), b"x").unwrap();
        std::os::unix::fs::symlink("/bin/busybox", root.path().join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/", root.path().join("up")).unwrap();
        assert_eq!(
            read_link_in_root(root.path(), "/bin/sh").as_deref(),
            Some("/bin/busybox")
        );
        assert_eq!(read_link_in_root(root.path(), "/bin/busybox"), None);
        assert!(open_in_root(root.path(), "/up/bin/busybox", false).is_some());
        assert!(open_in_root(root.path(), "/up/../../etc/hostname", false).is_none());
    }
}
