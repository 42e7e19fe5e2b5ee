//! Unmounting where "not mounted" is success, and a private mount
//! namespace of one's own.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use std::path::Path;

/// umount2(2) that treats a target that is not a mount point (EINVAL) or
/// does not exist (ENOENT) as already unmounted: every teardown path of
/// capcri is retried after a crash, and the second run finds half of it
/// done. Any other error (EBUSY, EPERM) is the caller's to handle.
pub fn unmount_if_mounted(target: &Path, flags: MntFlags) -> Result<(), Errno> {
    match umount2(target, flags) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Which step of [`unshare_private_mounts`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivateMountsError {
    #[error("unshare(CLONE_NEWNS): {0}")]
    Unshare(Errno),
    #[error("making every mount private: {0}")]
    MakePrivate(Errno),
}

/// Puts the calling process (single-threaded: a pod init's parent, or a
/// child between fork and exec) in a mount namespace of its own, a copy
/// of the one it was in with every mount made private, so nothing
/// mounted in it propagates back. Allocates nothing (nix passes "/" from
/// a stack buffer): safe between fork and exec.
pub fn unshare_private_mounts() -> Result<(), PrivateMountsError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(PrivateMountsError::Unshare)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(PrivateMountsError::MakePrivate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_and_unmounted_targets_are_success() {
        let dir = tempfile::tempdir().unwrap();
        // Not a mount point: EINVAL as root, EPERM without privileges.
        let r = unmount_if_mounted(dir.path(), MntFlags::MNT_DETACH);
        assert!(matches!(r, Ok(()) | Err(Errno::EPERM)), "{r:?}");
        let r = unmount_if_mounted(&dir.path().join("absent"), MntFlags::empty());
        assert!(matches!(r, Ok(()) | Err(Errno::EPERM)), "{r:?}");
    }
}
