//! The workload executor given to libcontainer. It wraps the default one
//! to report *why* the container's process could not start.
//!
//! When `execve` of the container's command fails (ENOENT, EACCES, or EPERM
//! from file capabilities outside the bounding set), libcontainer's
//! `build()`/`start()` still succeed and the init just exits 255, the reason
//! only in a log line of the child. So the monitor hands the init the write
//! end of an `O_CLOEXEC` pipe: a successful `execve` closes it (EOF without
//! data), a failure writes the error text first. libcontainer only marks fds
//! from 3 + preserved_fds close-on-exec (`close_range(.., CLOSE_RANGE_CLOEXEC)`),
//! it does not close them, so the pipe is still open when the executor runs.
//!
//! On the `dmz` exec path (see `dmz.rs`) the executor execs the trampoline
//! from its sealed memfd instead, and the status pipe stays open across that
//! first exec so the trampoline reports the second one the same way.

use std::os::fd::RawFd;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::dmz;

#[derive(Clone)]
pub(crate) struct ReportingExecutor {
    /// Write end of the exec status pipe, or -1 when nobody listens (exec:
    /// the tenant builder reports its own exec errors).
    status_fd: RawFd,
    /// The sealed trampoline memfd for the `dmz` exec path; None = `direct`.
    dmz_memfd: Option<RawFd>,
}

impl ReportingExecutor {
    pub(crate) fn new(status_fd: RawFd) -> Self {
        ReportingExecutor {
            status_fd,
            dmz_memfd: None,
        }
    }

    /// The container's process is started through the trampoline in
    /// `memfd`, which must stay open in the monitor until the container's
    /// init has been cloned (`build()`).
    pub(crate) fn through_trampoline(mut self, memfd: RawFd) -> Self {
        self.dmz_memfd = Some(memfd);
        self
    }

    fn report(&self, msg: &str) {
        if self.status_fd < 0 {
            return;
        }
        let bytes = msg.as_bytes();
        // SAFETY: write(2) of a valid buffer to an fd this process inherited.
        unsafe {
            libc::write(self.status_fd, bytes.as_ptr().cast(), bytes.len());
        }
    }
}

/// The kernel's `struct sigaction` for rt_sigaction(2) (x86_64 and aarch64
/// layout); used directly because glibc refuses to touch its reserved
/// real-time signals 32 and 33.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// The monitor ignores SIGPIPE (Rust's runtime does so at start), has a
/// SIGCHLD handler, and may have inherited other ignored signals from the
/// daemon; an ignored signal and the blocked mask survive execve. The
/// container's process must start with default dispositions, as it would
/// under runc.
fn reset_signals() {
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid struct and an 8-byte sigset size.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
    // SAFETY: an empty mask (8 bytes of zero) passed to rt_sigprocmask.
    unsafe {
        let empty: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

/// Whether the spec's seccomp profile (if any) lets keyctl(2) through
/// unconditionally: no profile, an allowing default action, or an allow
/// rule naming keyctl without argument conditions.
fn seccomp_allows_keyctl(spec: &Spec) -> bool {
    use libcontainer::oci_spec::runtime::LinuxSeccompAction;
    let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return true;
    };
    let allow = |a: LinuxSeccompAction| matches!(a, LinuxSeccompAction::ScmpActAllow);
    let named = profile.syscalls().iter().flatten().find(|r| {
        r.names().iter().any(|n| n == "keyctl") && r.args().as_ref().is_none_or(|a| a.is_empty())
    });
    match named {
        Some(rule) => allow(rule.action()),
        None => allow(profile.default_action()),
    }
}

impl Executor for ReportingExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        // A session keyring of the container's own, as runc gives its init
        // (libcontainer 0.7 does not). The filter is already installed
        // here, and a profile may kill on keyctl: only where it lets keyctl
        // through. Elsewhere the init keeps the pod monitor's own keyring,
        // which it cannot reach without keyctl anyway.
        if seccomp_allows_keyctl(spec) {
            let _ = join_new_session_keyring();
        }
        if let Some(memfd) = self.dmz_memfd {
            let args = spec
                .process()
                .as_ref()
                .and_then(|p| p.args().as_deref())
                .unwrap_or_default();
            // Returns only on failure.
            let detail = dmz::exec_trampoline(memfd, self.status_fd, args);
            self.report(&detail);
            return Err(ExecutorError::Other(detail));
        }
        let result = DefaultExecutor {}.exec(spec);
        if let Err(e) = &result {
            let detail = match e {
                ExecutorError::Execution(inner) => inner.to_string(),
                other => other.to_string(),
            };
            self.report(&detail);
        }
        result
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let result = DefaultExecutor {}.validate(spec);
        if let Err(e) = &result {
            self.report(&e.to_string());
        }
        result
    }
}

/// KEYCTL_JOIN_SESSION_KEYRING with no name: a new anonymous session
/// keyring for the calling process. A kernel without keyrings (ENOSYS) has
/// nothing to share, so that is no error.
pub(crate) fn join_new_session_keyring() -> std::io::Result<()> {
    /// `KEYCTL_JOIN_SESSION_KEYRING` from <linux/keyctl.h>.
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with an integer command and a NULL name.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
    }
    Ok(())
}
