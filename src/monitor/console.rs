//! The console socket of a `tty: true` container: libcontainer's init makes
//! the pseudo-terminal inside the container and hands its master side back
//! over a unix socket (the OCI `--console-socket` contract). The monitor
//! keeps the master: it reads the container's output from it into the CRI
//! log (as stdout, like containerd), writes stdin into it and lends it to
//! attach clients for input and window resizes.

use super::RuntimeError;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the init may take to send the master after `build` returned
/// (it sends it before reporting ready, so this is only a safety net).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listening socket for one create; removed when dropped. Creates are
/// sequential in the single-threaded monitor, so one name per pod is enough.
pub(super) struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    pub(super) fn bind(pod_dir: &Path) -> Result<ConsoleSocket, RuntimeError> {
        let path = pod_dir.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| {
            RuntimeError::io(format!("binding the console socket {}", path.display()), e)
        })?;
        // Only root (the monitor and the container's init before it drops
        // privileges) may hand us a terminal.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| RuntimeError::io(format!("chmod {}", path.display()), e))?;
        Ok(ConsoleSocket { listener, path })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The terminal's master side, close-on-exec and non-blocking.
    pub(super) fn receive_master(&self) -> Result<OwnedFd, RuntimeError> {
        let fail = |what: &str| {
            RuntimeError::io(
                "receiving the container's terminal",
                std::io::Error::other(what.to_string()),
            )
        };
        wait_readable(self.listener.as_raw_fd(), RECEIVE_TIMEOUT)
            .map_err(|_| fail("the container's init never connected to the console socket"))?;
        let (conn, _) = self
            .listener
            .accept()
            .map_err(|e| RuntimeError::io("accepting on the console socket", e))?;
        wait_readable(conn.as_raw_fd(), RECEIVE_TIMEOUT)
            .map_err(|_| fail("the container's init sent no terminal"))?;
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| RuntimeError::io("reading the console socket", e.into()))?;
        let mut master = None;
        for c in msg
            .cmsgs()
            .map_err(|e| RuntimeError::io("console message", e.into()))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS just installed this descriptor in
                    // our table; nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if master.is_none() {
                        master = Some(owned);
                    }
                }
            }
        }
        let master = master.ok_or_else(|| fail("the console message carried no descriptor"))?;
        super::set_nonblocking(master.as_raw_fd());
        Ok(master)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) -> Result<(), ()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // SAFETY: poll on one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if n > 0 {
            return Ok(());
        }
        if n == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(());
        }
    }
}
