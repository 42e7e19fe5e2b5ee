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

use std::os::fd::RawFd;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

#[derive(Clone)]
pub(crate) struct ReportingExecutor {
    /// Write end of the exec status pipe, or -1 when nobody listens (exec:
    /// the tenant builder reports its own exec errors).
    status_fd: RawFd,
}

impl ReportingExecutor {
    pub(crate) fn new(status_fd: RawFd) -> Self {
        ReportingExecutor { status_fd }
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

/// The monitor ignores SIGPIPE (Rust's runtime does so at start) and may
/// have handlers installed; both survive clone and an ignored signal even
/// survives execve. The container's process must start with defaults.
fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition is always valid.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    // SAFETY: an empty set built by sigemptyset, passed to sigprocmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

impl Executor for ReportingExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
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
