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
/// written with write(2) only, so no mapping of ours is in the way, and a
/// short hold of a page by the kernel is waited out ([`seal_immutable`]).
pub(crate) fn sealed_memfd(
    name: &str,
    src: &mut impl std::io::Read,
    what: &str,
) -> Result<OwnedFd, HostError> {
    let cname =
        CString::new(name).map_err(|e| HostError::io("memfd name", std::io::Error::other(e)))?;
    let fd = sealable_memfd(&cname)
        .map_err(|e| HostError::io(format!("memfd_create for the sealed copy of {what}"), e))?;
    let mut dst = File::from(
        fd.try_clone()
            .map_err(|e| HostError::io("dup of memfd", e))?,
    );
    std::io::copy(src, &mut dst)
        .map_err(|e| HostError::io(format!("copying {what} into the sealed memfd"), e))?;
    drop(dst);
    seal_immutable(&fd).map_err(|e| {
        HostError::io(
            format!(
                "sealing the memfd of {what} ({SEAL_ATTEMPTS} attempts, {} ms apart)",
                SEAL_RETRY_PAUSE.as_millis()
            ),
            e,
        )
    })?;
    Ok(fd)
}

/// A new, empty close-on-exec memfd that allows seals.
fn sealable_memfd(name: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create with a valid C string; the fd is owned below.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// How many times [`seal_immutable`] asks, and the pause between asks.
const SEAL_ATTEMPTS: u32 = 4;
const SEAL_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Adds [`IMMUTABLE_SEALS`] to `fd`, asking again when the kernel answers
/// EBUSY. It refuses F_SEAL_WRITE with EBUSY while a page of the file is
/// referenced from outside its page cache (a writable mapping, or a short
/// hold by the kernel itself: reclaim, migration, compaction) and waits
/// only about 150 ms for such holds to end. CI met it once (2026-12-07,
/// a 93 MB debug binary just copied, on a loaded 2-core machine: the
/// test's RunPodSandbox failed with "Device or resource busy"); the same
/// test passed in every other run. Any other error is returned at once.
fn seal_immutable(fd: &OwnedFd) -> std::io::Result<()> {
    let mut attempt = 1;
    loop {
        // SAFETY: fcntl on an fd we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, IMMUTABLE_SEALS) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) || attempt == SEAL_ATTEMPTS {
            return Err(err);
        }
        attempt += 1;
        std::thread::sleep(SEAL_RETRY_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd_with(bytes: &[u8]) -> OwnedFd {
        let fd = sealable_memfd(c"seal-test").unwrap();
        std::io::Write::write_all(&mut File::from(fd.try_clone().unwrap()), bytes).unwrap();
        fd
    }

    /// A writable shared mapping of 4 KiB of `fd`, as a raw address.
    fn map_writable(fd: &OwnedFd) -> usize {
        // SAFETY: a new shared mapping of a file we own; unmapped by the caller.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        addr as usize
    }

    fn seals(fd: &OwnedFd) -> libc::c_int {
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) }
    }

    /// A hold that ends while the seal is being asked for: sealed on a
    /// later attempt, every seal in place.
    #[test]
    fn a_seal_refused_while_busy_is_asked_again() {
        let fd = memfd_with(&[7u8; 4096]);
        let addr = map_writable(&fd);
        let release = std::thread::spawn(move || {
            std::thread::sleep(SEAL_RETRY_PAUSE / 2);
            // SAFETY: the mapping made above, unmapped once.
            unsafe { libc::munmap(addr as *mut libc::c_void, 4096) };
        });
        seal_immutable(&fd).unwrap();
        release.join().unwrap();
        assert_eq!(seals(&fd) & IMMUTABLE_SEALS, IMMUTABLE_SEALS);
    }

    /// A hold that outlasts every attempt: EBUSY, the file unsealed.
    #[test]
    fn a_seal_refused_at_every_attempt_fails_with_ebusy() {
        let fd = memfd_with(&[7u8; 4096]);
        let addr = map_writable(&fd);
        let err = seal_immutable(&fd).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        assert_eq!(seals(&fd) & libc::F_SEAL_WRITE, 0);
        // SAFETY: the mapping made above, unmapped once.
        unsafe { libc::munmap(addr as *mut libc::c_void, 4096) };
        seal_immutable(&fd).unwrap();
    }
}
