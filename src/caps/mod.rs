//! The capability model: names, sets, the kernel's execve transformation
//! rules, file-capability xattr parsing and the default sets.
//!
//! Everything here is pure: the policy engine, `explain` and the tests use
//! [`predict_execve`] so that a decision can be predicted (and checked by the
//! real-container tests) before any container runs.

mod execve;
mod filecaps;
mod names;
mod set;

pub use execve::{ExecIdentity, ExecveError, predict_execve};
pub use filecaps::{FileCaps, FileCapsError, parse_file_caps};
pub use names::{CapParseError, Capability};
pub use set::{CapSet, ThreadCaps};

/// Docker's (and containerd's CRI plugin's) default capability set. It keeps
/// `CAP_AUDIT_WRITE` so that `su`/`login` can write their audit record:
/// without it PAM fails with "System error" (DESIGN.md, failure 5).
pub fn docker_default_capabilities() -> CapSet {
    use Capability::*;
    CapSet::from_iter([
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ])
}

/// Every capability this model knows (0..=CAP_LAST_CAP); what `privileged`
/// and `ALL` mean.
pub fn all_capabilities() -> CapSet {
    CapSet::all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_has_fourteen_including_audit_write() {
        let set = docker_default_capabilities();
        assert_eq!(set.len(), 14);
        assert!(set.contains(Capability::AuditWrite));
        assert!(!set.contains(Capability::SysAdmin));
        assert_eq!(all_capabilities().len(), 41);
    }
}
