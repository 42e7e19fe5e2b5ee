//! The daemon's side of the monitor template (the fork server,
//! `crate::monitor::template`, says why it exists): start it from the
//! sealed copy of the binary, send it a monitor's argv, receive the new
//! monitor's pidfd. The request packet and its framing are here, used by
//! both ends.
//!
//! Wire: the daemon's end of a `SOCK_SEQPACKET` pair is the template's
//! stdin. A request is one packet, the monitor's argv as JSON, carrying the
//! monitor's stdout (the daemon's readiness pipe) and stderr (the pod's
//! monitor.log) as SCM_RIGHTS. The reply is one packet, `ok` with a pidfd
//! of the new monitor, or `error: <text>`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use super::error::RuntimeError;
use crate::host::sealed_exe::sealed_copy;

/// The template's argv\[1\]; hidden subcommand of the `capcri` binary.
pub(crate) const SUBCOMMAND: &str = "monitor-template";
/// Bytes of the template's argv area that each monitor rewrites into its
/// own command line (`capcri monitor --pod-id ... --pod-dir ...`), so `ps`
/// and everything that finds a pod's monitor by its command line still do.
pub(crate) const CMDLINE_ROOM: usize = 2048;
/// Largest request: a monitor argv is a few hundred bytes.
pub(crate) const MAX_REQUEST: usize = 64 * 1024;
/// A fork takes milliseconds; a template that does not answer in this time
/// is stuck and is replaced.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The monitor argv as the request packet.
fn encode_request(argv: &[String]) -> Result<Vec<u8>, RuntimeError> {
    serde_json::to_vec(argv).map_err(|e| RuntimeError::Protocol(format!("encoding argv: {e}")))
}

/// The request packet back to the argv; only a monitor argv is accepted.
pub(crate) fn decode_request(packet: &[u8]) -> Result<Vec<String>, String> {
    let argv: Vec<String> =
        serde_json::from_slice(packet).map_err(|e| format!("request is not an argv: {e}"))?;
    if argv.first().map(String::as_str) != Some("monitor") {
        return Err(format!("request is not a monitor argv: {argv:?}"));
    }
    Ok(argv)
}

pub(crate) fn send_packet(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> nix::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    if fds.is_empty() {
        sendmsg::<()>(fd, &iov, &[], MsgFlags::empty(), None)
    } else {
        sendmsg::<()>(
            fd,
            &iov,
            &[ControlMessage::ScmRights(fds)],
            MsgFlags::empty(),
            None,
        )
    }
}

/// One packet (at most `max` bytes; empty = the peer closed) and the
/// descriptors it carried, close-on-exec (those that fit: a request with
/// more than 2 is refused for its count).
pub(crate) fn recv_packet(
    fd: RawFd,
    max: usize,
    flags: MsgFlags,
) -> nix::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; max];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = msg.bytes;
    buf.truncate(n);
    Ok((buf, fds))
}

/// A running template and the daemon's end of its request channel.
struct Template {
    control: OwnedFd,
    process: Child,
}

impl Drop for Template {
    fn drop(&mut self) {
        // Closing `control` makes it exit; reap it so no zombie is left.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One template per program path (tests run monitors from the capcri
/// binary, not from the test binary they are in).
type Templates = Mutex<Vec<(PathBuf, Template)>>;
static TEMPLATES: OnceLock<Templates> = OnceLock::new();

/// Fork a monitor with `argv`, `stdout` and `stderr` from the template for
/// `program` (started on first use, and again if it died); returns the
/// monitor's pidfd. Blocking: call from a blocking thread.
pub(crate) fn fork_monitor(
    program: &Path,
    argv: &[String],
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<OwnedFd, RuntimeError> {
    let request = encode_request(argv)?;
    let templates = TEMPLATES.get_or_init(Default::default);
    let mut guard = templates
        .lock()
        .map_err(|_| RuntimeError::Protocol("monitor template registry poisoned".into()))?;
    let fds = [stdout.as_raw_fd(), stderr.as_raw_fd()];
    // A template that died (killed, or out of memory) is noticed when the
    // request cannot be sent; one fresh template gets the request again.
    let mut pos = template_for(&mut guard, program)?;
    if let Err(e) = send_packet(guard[pos].1.control.as_raw_fd(), &request, &fds) {
        tracing::warn!(error = %e, "monitor template gone; starting a new one");
        guard.remove(pos);
        pos = template_for(&mut guard, program)?;
        if let Err(e) = send_packet(guard[pos].1.control.as_raw_fd(), &request, &fds) {
            guard.remove(pos);
            return Err(RuntimeError::io(
                "sending a fork request to the monitor template",
                e.into(),
            ));
        }
    }
    let reply = receive_reply(guard[pos].1.control.as_raw_fd());
    // No answer: whatever state it is in, it is not trusted again.
    if matches!(reply, Err(RuntimeError::Io { .. })) {
        guard.remove(pos);
    }
    reply
}

/// The index of `program`'s running template, started if there is none.
fn template_for(
    templates: &mut Vec<(PathBuf, Template)>,
    program: &Path,
) -> Result<usize, RuntimeError> {
    if let Some(pos) = templates.iter().position(|(p, _)| p == program) {
        return Ok(pos);
    }
    templates.push((program.to_path_buf(), start_template(program)?));
    Ok(templates.len() - 1)
}

fn receive_reply(control: RawFd) -> Result<OwnedFd, RuntimeError> {
    let (packet, mut fds) = loop {
        match recv_packet(control, 4096, MsgFlags::empty()) {
            Ok(got) => break got,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(RuntimeError::io(
                    "waiting for the monitor template's reply",
                    e.into(),
                ));
            }
        }
    };
    if packet.is_empty() {
        return Err(RuntimeError::io(
            "waiting for the monitor template's reply",
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the template exited"),
        ));
    }
    let text = String::from_utf8_lossy(&packet);
    match (text.as_ref(), fds.pop()) {
        ("ok", Some(pidfd)) => Ok(pidfd),
        (other, _) => Err(RuntimeError::Protocol(format!(
            "the monitor template could not fork a monitor: {}",
            other.strip_prefix("error: ").unwrap_or(other)
        ))),
    }
}

/// Exec the template from the sealed copy of `program`, in its own session.
fn start_template(program: &Path) -> Result<Template, RuntimeError> {
    let sealed = sealed_copy(program)?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::io("socketpair for the monitor template", e.into()))?;
    let timeout = libc::timeval {
        tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a timeval of the right size.
    unsafe {
        libc::setsockopt(
            ours.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let fd = sealed.as_raw_fd();
    let mut cmd = Command::new(format!("/proc/self/fd/{fd}"));
    cmd.arg0("capcri")
        .arg(SUBCOMMAND)
        .arg(" ".repeat(CMDLINE_ROOM))
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    // SAFETY: only async-signal-safe calls (fcntl, setsid) between fork and
    // exec.
    unsafe {
        cmd.pre_exec(move || {
            // Exec of /proc/self/fd/N needs N open across the exec.
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let process = cmd
        .spawn()
        .map_err(|e| RuntimeError::io("starting the monitor template", e))?;
    Ok(Template {
        control: ours,
        process,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_roundtrip_and_only_monitor_argvs_pass() {
        let argv: Vec<String> = ["monitor", "--pod-id", "p 1", "--hostname", "ünï"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            decode_request(&encode_request(&argv).unwrap()).unwrap(),
            argv
        );
        assert!(decode_request(br#"["serve","--listen","/x"]"#).is_err());
        assert!(decode_request(b"[]").is_err());
        assert!(decode_request(b"not json").is_err());
        assert!(decode_request(br#"{"monitor":1}"#).is_err());
    }
}
