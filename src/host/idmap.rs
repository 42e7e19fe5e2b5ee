//! User-namespace plumbing done as host root: writing a namespace's id
//! maps, and idmapped mounts (mount_setattr(2) with MOUNT_ATTR_IDMAP).
//!
//! An idmapped mount shows a file owned by on-disk id `k` as owned by the
//! host id that container id `k` maps to in the given user namespace. So an
//! image layer unpacked as root appears owned by the pod's root, without a
//! chown of the shared layer (which other pods use with other mappings) and
//! without copying it. The kernel has supported idmapped mounts since 5.12
//! and overlayfs on idmapped layers since 5.19.
//!
//! The new mount API syscalls are called through `libc::syscall`: nix 0.29
//! has no wrapper for open_tree/move_mount/mount_setattr, and libcontainer
//! keeps its own private. Each is one call with plain integer arguments.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::error::HostError;
use crate::spec::PodUserNamespace;

/// Writes `/proc/<pid>/uid_map` and `gid_map`. The caller is host root, so
/// any range may be mapped and `setgroups` stays allowed (the container's
/// supplementary groups need it).
pub(crate) fn write_id_maps(pid: i32, userns: &PodUserNamespace) -> Result<(), HostError> {
    for (file, range) in [("uid_map", &userns.uids), ("gid_map", &userns.gids)] {
        let path = format!("/proc/{pid}/{file}");
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(range.map_line().as_bytes()))
            .map_err(|e| HostError::io(format!("writing {:?} to {path}", range.map_line()), e))?;
    }
    Ok(())
}

fn cpath(p: &Path) -> Result<CString, HostError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        HostError::io(
            format!("path {} contains a NUL byte", p.display()),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })
}

/// Binds `source` (a directory or a file) onto `target` (which must exist
/// and be of the same kind) as an idmapped mount for `userns`. With
/// `recursive`, the submounts of `source` come along, each idmapped (the
/// call fails if one of their filesystems cannot be idmapped).
pub fn idmapped_bind(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> Result<(), HostError> {
    let tree = open_idmapped_tree(source, userns, recursive)?;
    let dst = cpath(target)?;
    // SAFETY: move_mount(2) with a valid mount fd, an empty "from" path and
    // a NUL-terminated "to" path relative to the cwd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(HostError::io(
            format!(
                "attaching the idmapped mount of {} at {}",
                source.display(),
                target.display()
            ),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A detached clone of the mount at `source`, idmapped. Dropping the fd
/// unmounts it.
fn open_idmapped_tree(
    source: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> Result<OwnedFd, HostError> {
    let src = cpath(source)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree(2) with a NUL-terminated path; the result is a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, src.as_ptr(), flags) };
    if fd < 0 {
        return Err(HostError::io(
            format!("cloning the mount of {}", source.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open_tree returned a fresh descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut at = libc::AT_EMPTY_PATH;
    if recursive {
        at |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr(2) on the detached tree with a mount_attr of the
    // size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(HostError::io(
            format!(
                "idmapping the mount of {} (mount_setattr MOUNT_ATTR_IDMAP: the filesystem must support idmapped mounts, kernel 5.12+; \
                 ext4, xfs, btrfs and tmpfs (6.3+) do; use hostUsers: true for volumes on other filesystems)",
                source.display()
            ),
            e,
        ));
    }
    Ok(tree)
}

/// A throwaway user namespace with `userns`'s mappings, as an fd, for the
/// idmap probe. The process that made it is gone when this returns: the fd
/// alone keeps the namespace alive.
///
/// Safe to call from the multi-threaded daemon: the forked child makes only
/// raw syscalls (unshare, read, write, _exit), all async-signal-safe.
pub fn throwaway_user_namespace(userns: &PodUserNamespace) -> Result<OwnedFd, HostError> {
    let (ready_r, ready_w) =
        nix::unistd::pipe().map_err(|e| HostError::io("creating pipe", e.into()))?;
    let (done_r, done_w) =
        nix::unistd::pipe().map_err(|e| HostError::io("creating pipe", e.into()))?;
    // SAFETY: the child only makes async-signal-safe syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HostError::io(
            "forking the user namespace holder",
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        // SAFETY: raw syscalls on fds this process owns; no allocation.
        unsafe {
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                b'1'
            } else {
                b'0'
            };
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            libc::close(done_w.as_raw_fd());
            let mut b = 0u8;
            libc::read(done_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(done_r);
    let mut ok = [0u8; 1];
    let read = fs::File::from(ready_r).read_exact(&mut ok);
    let result = match read {
        Ok(()) if ok[0] == b'1' => write_id_maps(pid, userns).and_then(|()| {
            fs::File::open(format!("/proc/{pid}/ns/user"))
                .map(OwnedFd::from)
                .map_err(|e| HostError::io("opening the new user namespace", e))
        }),
        Ok(()) => Err(HostError::io(
            "unshare(CLONE_NEWUSER) in the probe child",
            std::io::ErrorKind::PermissionDenied.into(),
        )),
        Err(e) => Err(HostError::io("reading the probe child's status", e)),
    };
    drop(done_w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}

/// Whether this kernel and the filesystems under `scratch` (the data
/// directory) and `state_file` (the state directory) can do what a POD user
/// namespace needs: an idmapped bind of a pod file, an idmapped bind of a
/// layer, and a writable overlay on it whose upper directory belongs to the
/// mapped root. Run once at startup; the answer is `Status`'s
/// `user_namespaces` feature. `scratch` and `state_file` are created and
/// removed.
pub fn probe_idmapped_overlay(scratch: &Path, state_file: &Path) -> Result<(), HostError> {
    let userns = throwaway_user_namespace(&PodUserNamespace {
        uids: crate::spec::IdRange {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        },
        gids: crate::spec::IdRange {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        },
    })?;
    // The pod files (hosts, hostname, resolv.conf) live in the state
    // directory, often a tmpfs, which takes idmapped mounts from 6.3 only.
    fs::write(state_file, b"")
        .map_err(|e| HostError::io(format!("writing {}", state_file.display()), e))?;
    let state_fs = open_idmapped_tree(state_file, userns.as_fd(), false);
    let _ = fs::remove_file(state_file);
    drop(state_fs?);

    let _ = fs::remove_dir_all(scratch);
    let layers = scratch.join("layers");
    let mapped = scratch.join("mapped");
    let merged = scratch.join("merged");
    for d in ["lower", "upper", "work"]
        .map(|d| layers.join(d))
        .iter()
        .chain([&mapped, &merged])
    {
        fs::create_dir_all(d).map_err(|e| HostError::io(format!("creating {}", d.display()), e))?;
    }
    fs::write(layers.join("lower/probe"), b"")
        .map_err(|e| HostError::io("writing the probe file", e))?;
    let result = (|| {
        idmapped_bind(&layers.join("lower"), &mapped, userns.as_fd(), false)?;
        nix::unistd::chown(
            &layers.join("upper"),
            Some(nix::unistd::Uid::from_raw(65536)),
            Some(nix::unistd::Gid::from_raw(65536)),
        )
        .map_err(|e| HostError::io("chown of the probe's upper directory", e.into()))?;
        let options = format!(
            "lowerdir={},upperdir={1}/upper,workdir={1}/work",
            mapped.display(),
            layers.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| {
            HostError::io(
                "mounting overlay on idmapped layers (overlayfs supports them since 5.19)",
                e.into(),
            )
        })?;
        use std::os::unix::fs::MetadataExt;
        let uid = fs::metadata(merged.join("probe"))
            .map_err(|e| HostError::io("stat of the probe file", e))?
            .uid();
        if uid != 65536 {
            return Err(HostError::io(
                format!("the idmapped overlay shows a root-owned file as uid {uid}, not 65536"),
                std::io::ErrorKind::Unsupported.into(),
            ));
        }
        // A read-only fallback (the kernel's answer to an unusable upper)
        // would only show at the container's first write.
        fs::write(merged.join("probe"), b"w")
            .map_err(|e| HostError::io("writing through the overlay on an idmapped layer", e))?;
        Ok(())
    })();
    let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    let _ = nix::mount::umount2(&mapped, nix::mount::MntFlags::MNT_DETACH);
    // rmdir, not remove_dir_all: a mount point still attached fails with
    // EBUSY instead of being deleted through.
    if fs::remove_dir(&merged).is_ok() && fs::remove_dir(&mapped).is_ok() {
        let _ = fs::remove_dir_all(&layers);
        let _ = fs::remove_dir(scratch);
    }
    result
}
