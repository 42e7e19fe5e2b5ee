//! Unmounting where "not mounted" is success.

use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};
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
