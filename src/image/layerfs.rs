//! Directory-fd file operations for the layer unpacker.
//!
//! A layer is hostile: an entry may replace a directory written earlier by a
//! symlink to a host path (`x/`, `x/victim/`, then `x -> /etc`), so any
//! later operation by path string (`chmod dest/x/victim`) would follow it
//! onto the host. Here every operation is made relative to a directory fd:
//! directories are opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` (a symlink anywhere on the
//! way, or `..` out of the layer, is an error, not a jump), and the final
//! component is created, changed or removed with the `*at` calls and their
//! no-follow flags. nix (already a dependency) wraps every call needed;
//! cap-std has no mknod, chown or xattrs, and pathrs resolves symlinks inside
//! a root (RESOLVE_IN_ROOT) where the unpacker must refuse them.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

/// The flags every directory open of the unpacker uses: never a symlink,
/// never above the layer root, never a /proc magic link.
fn no_follow_beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens the directory `rel` (relative, may be empty for `dir` itself)
/// beneath `dir` without following any symlink on the way.
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &Path) -> nix::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(no_follow_beneath());
    openat2(dir.as_raw_fd(), rel, how).map(owned)
}

/// Opens a directory by path (the layer root, which capcri itself created).
pub fn open_dir_path(path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(owned)
}

/// `lstat` of `name` in `dir`; None when absent.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<Option<FileStat>> {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// (device, inode) of an open fd.
pub fn identity(fd: BorrowedFd<'_>) -> nix::Result<(u64, u64)> {
    fstat(fd.as_raw_fd()).map(|st| (st.st_dev, st.st_ino))
}

/// Opens the directory `name` of `dir`; ELOOP/ENOTDIR when it is not one.
pub fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(owned)
}

/// Removes `name` from `dir`, a whole tree if it is a directory; absent is
/// fine. The tree is walked by fds: a symlink inside is unlinked, never
/// followed.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        let child = open_child_dir(dir, name)?;
        empty_dir(child.as_fd())?;
        nix::unistd::unlinkat(
            Some(dir.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::RemoveDir,
        )
    } else {
        nix::unistd::unlinkat(
            Some(dir.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
    }
}

fn empty_dir(dir: BorrowedFd<'_>) -> nix::Result<()> {
    // Names first, then removal: unlinking while reading a directory stream
    // may skip entries.
    let names: Vec<CString> = {
        let dup = nix::unistd::dup(dir.as_raw_fd())?;
        let mut d = nix::dir::Dir::from_fd(dup)?;
        d.iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect()
    };
    for n in names {
        remove_at(dir, OsStr::from_bytes(n.as_bytes()))?;
    }
    Ok(())
}

/// The `/proc/self/fd/<dir>/<name>` path of an entry: the kernel resolves
/// the fd's magic link to exactly that directory and the `l*xattr` calls do
/// not follow the final component. Used for entries capcri cannot open
/// (symlinks, device nodes, fifos): `fsetxattr` needs a real open fd.
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    CString::new(p).map_err(|_| io::Error::other("NUL byte in a name"))
}

fn xattr_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::other("NUL byte in an xattr name"))
}

/// `fsetxattr` on an open fd.
pub fn fset_xattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let n = xattr_name(name)?;
    // SAFETY: valid fd, NUL-terminated name and a buffer of the given length.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `lsetxattr` of `name` in `dir`, never following a symlink.
pub fn set_xattr_at(dir: BorrowedFd<'_>, name: &OsStr, key: &str, value: &[u8]) -> io::Result<()> {
    let p = proc_path(dir, name)?;
    let n = xattr_name(key)?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `lgetxattr` of `name` in `dir`; None when absent or unreadable.
pub fn get_xattr_at(dir: BorrowedFd<'_>, name: &OsStr, key: &str) -> Option<Vec<u8>> {
    let p = proc_path(dir, name).ok()?;
    let n = xattr_name(key).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return None;
    }
    buf.truncate(rc as usize);
    Some(buf)
}
