//! The monitor runs from a sealed, anonymous copy of the capcri binary.
//!
//! CVE-2019-5736: a container process that can see a runtime process of the
//! host (libcontainer's init and tenant processes are clones of the monitor
//! until their `execve`, and the monitor is visible through
//! `/proc/<pid>/exe` to anything that can reach it) could open that
//! `/proc/<pid>/exe` and write through it into the host's capcri binary,
//! which root then executes next time. Here that link points to a memfd:
//! it is not the file on disk, so a write could not reach the host binary,
//! and the memfd carries `F_SEAL_WRITE|F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL`,
//! so the kernel refuses every write and the seals cannot be removed. The
//! copy is made once per daemon; the monitor template is exec'd from it and
//! every monitor is a fork of the template (see `monitor::template`).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use super::error::HostError;

/// Sealed copies made by this process, by source program path.
type SealedCopies = std::sync::Mutex<Vec<(std::path::PathBuf, std::sync::Arc<OwnedFd>)>>;

/// One sealed copy per (daemon process, program path).
static SEALED: OnceLock<SealedCopies> = OnceLock::new();

pub(crate) fn sealed_copy(program: &Path) -> Result<std::sync::Arc<OwnedFd>, HostError> {
    let cache = SEALED.get_or_init(Default::default);
    let mut guard = cache
        .lock()
        .map_err(|_| HostError::io("sealed binary cache", std::io::Error::other("poisoned")))?;
    if let Some((_, fd)) = guard.iter().find(|(p, _)| p == program) {
        return Ok(fd.clone());
    }
    let fd = std::sync::Arc::new(make_sealed_copy(program)?);
    guard.push((program.to_path_buf(), fd.clone()));
    Ok(fd)
}

fn make_sealed_copy(program: &Path) -> Result<OwnedFd, HostError> {
    let mut src = File::open(program)
        .map_err(|e| HostError::io(format!("opening {}", program.display()), e))?;
    sealed_memfd("capcri", &mut src, &program.display().to_string())
}

/// The four seals that make a memfd immutable for good: no write, no size
/// change, and no way to remove them (F_SEAL_SEAL).
pub(crate) const IMMUTABLE_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// A close-on-exec memfd named `name` holding everything read from `src`,
/// sealed with [`IMMUTABLE_SEALS`]. `what` names the content in errors.
///
/// F_SEAL_WRITE is refused while a writable mapping exists; the content is
/// written with write(2) only, so sealing cannot fail for that reason.
pub(crate) fn sealed_memfd(
    name: &str,
    src: &mut impl std::io::Read,
    what: &str,
) -> Result<OwnedFd, HostError> {
    let cname =
        CString::new(name).map_err(|e| HostError::io("memfd name", std::io::Error::other(e)))?;
    // SAFETY: memfd_create with a valid C string; the fd is owned below.
    let raw =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(HostError::io(
            format!("memfd_create for the sealed copy of {what}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut dst = File::from(
        fd.try_clone()
            .map_err(|e| HostError::io("dup of memfd", e))?,
    );
    std::io::copy(src, &mut dst)
        .map_err(|e| HostError::io(format!("copying {what} into the sealed memfd"), e))?;
    drop(dst);
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, IMMUTABLE_SEALS) } < 0 {
        return Err(HostError::io(
            format!("sealing the memfd of {what}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}
