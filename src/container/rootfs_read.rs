//! Reads small files of a container's rootfs (its /etc/passwd and
//! /etc/group) as the container would see them.
//!
//! The rootfs is hostile: /etc/passwd may be a symlink to /etc/shadow.
//! openat2(RESOLVE_IN_ROOT) resolves every component, symlinks included,
//! inside the rootfs, so a host file is never read.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
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

/// A container's mounted rootfs, opened once (an `O_PATH` directory fd):
/// every lookup below resolves from this fd, inside it. CreateContainer
/// makes a few dozen of them (the user databases, each PATH directory and
/// candidate of the entrypoint, each mount destination), and opening the
/// rootfs by its path for each one was half of their system calls.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
}

impl RootDir {
    /// Opens the rootfs at `root` (capcri's own mount point, not image
    /// content: a path of the runtime's state directory).
    pub fn open(root: &Path) -> std::io::Result<RootDir> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(root)?;
        Ok(RootDir { fd: dir.into() })
    }

    /// openat2(2) of `path` with every component, symlinks included,
    /// resolved inside the root.
    fn openat2(&self, path: &str, flags: i32) -> std::io::Result<std::fs::File> {
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
                self.fd.as_raw_fd(),
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

    /// The content of `path` inside the root (symlinks resolved inside it,
    /// as the container would see them), or None if it does not exist.
    ///
    /// The file is first opened as an O_PATH handle, which never runs a
    /// driver's open or waits for a FIFO writer; only a regular file of at
    /// most [`MAX_BYTES`] is then reopened for reading (through the
    /// handle's /proc/self/fd link, O_NONBLOCK|O_NOCTTY) and checked to be
    /// the same inode.
    pub fn read(&self, path: &str) -> Result<Option<String>, RootfsReadError> {
        let io_err = |source| RootfsReadError::Io {
            path: path.to_string(),
            source,
        };
        let handle = match self.openat2(path, libc::O_PATH) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let meta = handle.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(RootfsReadError::NotRegular {
                path: path.to_string(),
                kind: kind_of(std::os::unix::fs::MetadataExt::mode(&meta)),
            });
        }
        let too_large = |size| RootfsReadError::TooLarge {
            path: path.to_string(),
            size,
            limit: MAX_BYTES,
        };
        if meta.len() > MAX_BYTES {
            return Err(too_large(meta.len()));
        }
        let reopen = format!("/proc/self/fd/{}", handle.as_raw_fd());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&reopen)
            .map_err(io_err)?;
        let reopened = file.metadata().map_err(io_err)?;
        {
            use std::os::unix::fs::MetadataExt;
            if (reopened.dev(), reopened.ino()) != (meta.dev(), meta.ino()) || !reopened.is_file() {
                return Err(io_err(std::io::Error::other(
                    "the file changed while it was being opened",
                )));
            }
        }
        let mut buf = Vec::new();
        file.take(MAX_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        if buf.len() as u64 > MAX_BYTES {
            return Err(too_large(buf.len() as u64));
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Opens `path` inside the root (every component resolved in it) as an
    /// O_PATH handle; `follow_last` decides whether a final symlink is
    /// followed.
    pub fn open_handle(&self, path: &str, follow_last: bool) -> Option<std::fs::File> {
        let mut flags = libc::O_PATH;
        if !follow_last {
            flags |= libc::O_NOFOLLOW;
        }
        self.openat2(path, flags).ok()
    }
}

/// The target of the symlink behind `handle` (an O_PATH|O_NOFOLLOW handle
/// of it): readlinkat with an empty path reads the link itself.
pub fn read_link_of(handle: &std::fs::File) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let empty = CString::default();
    // SAFETY: valid fd and buffer of the given length.
    let n = unsafe {
        libc::readlinkat(
            handle.as_raw_fd(),
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

/// Why a file of the image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RootfsReadError {
    #[error(
        "{path} in the image is a {kind}, not a regular file; capcri reads it only as a regular file (a FIFO would block CreateContainer, a device would be opened by host root): fix the image"
    )]
    NotRegular { path: String, kind: &'static str },
    #[error(
        "{path} in the image is larger than {limit} bytes ({size}); a user database is a few KiB: fix the image"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("cannot read {path} in the image: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFIFO => "FIFO",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFSOCK => "socket",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        _ => "special file",
    }
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
        let dir = RootDir::open(root.path()).unwrap();
        assert_eq!(
            dir.read("/etc/group").unwrap().as_deref(),
            Some("root:x:0:\n")
        );
        assert_eq!(dir.read("/etc/passwd").unwrap(), None);
        let escaped = dir.read(&format!(
            "/etc/up{}",
            outside.path().join("secret").display()
        ));
        assert!(matches!(escaped, Ok(None)), "{escaped:?}");
        // Not regular: refused without opening (a FIFO open would block).
        nix::unistd::mkfifo(
            &root.path().join("etc/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/fifo", root.path().join("etc/to-fifo")).unwrap();
        std::fs::create_dir(root.path().join("etc/dir")).unwrap();
        for (p, kind) in [
            ("/etc/fifo", "FIFO"),
            ("/etc/to-fifo", "FIFO"),
            ("/etc/dir", "directory"),
        ] {
            let t = std::time::Instant::now();
            let err = dir.read(p).unwrap_err().to_string();
            assert!(t.elapsed() < std::time::Duration::from_secs(1));
            assert!(
                err.contains(p) && err.contains(kind) && err.contains("not a regular file"),
                "{err}"
            );
        }
        // Too large: refused, not truncated (a cut line would change who a user is).
        std::fs::write(
            root.path().join("etc/big"),
            vec![b'x'; MAX_BYTES as usize + 1],
        )
        .unwrap();
        let err = dir.read("/etc/big").unwrap_err().to_string();
        assert!(err.contains("larger than 1048576 bytes"), "{err}");
        std::fs::write(root.path().join("etc/max"), vec![b'x'; MAX_BYTES as usize]).unwrap();
        assert_eq!(
            dir.read("/etc/max").unwrap().unwrap().len(),
            MAX_BYTES as usize
        );
        assert_eq!(dir.read("/etc/missing").unwrap(), None);
    }
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
        let dir = RootDir::open(root.path()).unwrap();
        let link = |p| dir.open_handle(p, false).and_then(|h| read_link_of(&h));
        assert_eq!(link("/bin/sh").as_deref(), Some("/bin/busybox"));
        assert_eq!(link("/bin/busybox"), None);
        assert!(dir.open_handle("/up/bin/busybox", false).is_some());
        assert!(dir.open_handle("/up/../../etc/hostname", false).is_none());
        // The last component is not followed unless asked: the link itself.
        let sh = dir.open_handle("/bin/sh", false).unwrap();
        assert!(sh.metadata().unwrap().file_type().is_symlink());
        let followed = dir.open_handle("/bin/sh", true).unwrap();
        assert!(followed.metadata().unwrap().is_file());
    }
}
