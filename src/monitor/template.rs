//! The monitor template: one idle, single-threaded process per daemon that
//! forks every pod's monitor.
//!
//! Why: a monitor exec'd from the 29 MB sealed binary paid, per pod, the
//! exec, the dynamic loader's ~90 000 relative relocations of a PIE binary
//! (about 2 MiB of `.data.rel.ro` made private to each process) and Rust's
//! start-up, before it pinned the pod's namespaces: most of a pod's memory
//! and a third of RunPodSandbox (docs/PERFORMANCE.md). The template is
//! exec'd once from the same sealed memfd (so every monitor's
//! `/proc/<pid>/exe` still is the sealed copy, never the host binary:
//! CVE-2019-5736), relocates once, and then forks: the children share the
//! relocated pages copy-on-write and are running `monitor_main` a fork
//! later.
//!
//! The daemon cannot fork monitors itself: it is multi-threaded (tokio),
//! and a child of a multi-threaded process may only make async-signal-safe
//! calls, which a monitor does not.
//!
//! Wire: the daemon's end of a `SOCK_SEQPACKET` pair is the template's
//! stdin. A request is one packet, the monitor's argv as JSON, carrying the
//! monitor's stdout (the daemon's readiness pipe) and stderr (the pod's
//! monitor.log) as SCM_RIGHTS. The reply is one packet, `ok` with a pidfd
//! of the new monitor, or `error: <text>`. The template exits when the
//! daemon's end closes (daemon exit or crash); the monitors it forked live
//! on, re-parented, as they did when the daemon spawned them.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use crate::monitor_api::template_client::{MAX_REQUEST, decode_request, recv_packet, send_packet};

/// The bytes a monitor writes over the template's argv area (`room` bytes):
/// its argv, NUL-separated, cut at the room (the last byte stays NUL, so
/// the kernel shows the area as plain arguments), NUL-padded.
fn cmdline_image(argv: &[&str], room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(room);
    for a in argv {
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    out.truncate(room.saturating_sub(1));
    out.resize(room, 0);
    out
}

/// `arg_start` and `arg_end` (fields 48 and 49) of `/proc/self/stat`.
fn arg_area(stat: &str) -> Option<(usize, usize)> {
    // Fields after the command name, which may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// Rewrite this process's command line in place (the argv strings the
/// kernel placed at the top of the stack; nothing else points into them
/// once `main` has parsed its arguments).
fn set_cmdline(argv: &[String]) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some((start, end)) = arg_area(&stat) else {
        return;
    };
    let words: Vec<&str> = std::iter::once("capcri")
        .chain(argv.iter().map(String::as_str))
        .collect();
    let image = cmdline_image(&words, end - start);
    // SAFETY: [start, end) is this process's own argv area, mapped and
    // writable (it is on the initial stack); `image` is exactly that long.
    unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), start as *mut u8, image.len()) };
}

/// Names this process (its `comm`: `ps`, `top`, `pgrep`). The template is
/// exec'd from a memfd through `/proc/self/fd/N`, so the kernel names it
/// (and every monitor it forks) "N", a number that tells an operator
/// nothing and that `pgrep capcri` does not find; a pod's init, forked
/// from its monitor, names itself too.
pub(super) fn set_comm(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME copies at most 16 bytes of a NUL-terminated
    // string; `name` is one.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// The `comm` of the monitor template (15 bytes, the kernel's limit).
const TEMPLATE_COMM: &std::ffi::CStr = c"capcri-template";
/// The `comm` of a pod monitor.
const MONITOR_COMM: &std::ffi::CStr = c"capcri-monitor";

// ---------------------------------------------------------------------------
// The template process.
// ---------------------------------------------------------------------------

/// Entry of the hidden `capcri monitor-template` subcommand: serve fork
/// requests on stdin until the daemon closes it.
pub fn template_main() -> i32 {
    // The sealed memfd this was exec'd from, and anything else inherited,
    // must not reach the monitors.
    // SAFETY: close_range on descriptors this process does not use.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    set_comm(TEMPLATE_COMM);
    // Exited monitors are reaped here, when a signalfd says so, not by
    // ignoring SIGCHLD: a child that cannot be reaped behind our back keeps
    // its pid until we have its pidfd, so the pidfd is always of our child.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if mask.thread_block().is_err() {
        return 1;
    }
    let Ok(sigfd) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        return 1;
    };
    // The oom_score_adj floor is a property of this process's lineage
    // (oom_score_adj_min is inherited over fork): probed here once (about
    // ten writes to /proc/self/oom_score_adj), every monitor forked after
    // inherits the answer instead of probing again.
    crate::host::oom_score::floor();
    let control: RawFd = 0;
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: control,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two valid pollfd entries.
        if unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if pfds[1].revents != 0 {
            while let Ok(Some(_)) = sigfd.read_signal() {}
            while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                if status == WaitStatus::StillAlive {
                    break;
                }
            }
        }
        if pfds[0].revents == 0 {
            continue;
        }
        match serve_one(control, sigfd.as_raw_fd()) {
            Served::Yes => {}
            Served::ChannelClosed => return 0,
        }
    }
}

enum Served {
    Yes,
    ChannelClosed,
}

/// Read one request, fork its monitor, answer.
fn serve_one(control: RawFd, sigfd: RawFd) -> Served {
    let (packet, fds) = match recv_packet(control, MAX_REQUEST, MsgFlags::MSG_DONTWAIT) {
        Ok((packet, _)) if packet.is_empty() => return Served::ChannelClosed,
        Ok(got) => got,
        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return Served::Yes,
        Err(_) => return Served::ChannelClosed,
    };
    let reply = match (decode_request(&packet), <[OwnedFd; 2]>::try_from(fds)) {
        (Ok(argv), Ok([stdout, stderr])) => fork_one(&argv, stdout, stderr, sigfd),
        (Err(e), _) => Err(e),
        (_, Err(_)) => Err("a request carries exactly 2 descriptors (stdout, stderr)".into()),
    };
    let sent = match &reply {
        Ok(pidfd) => send_packet(control, b"ok", &[pidfd.as_raw_fd()]),
        Err(e) => send_packet(control, format!("error: {e}").as_bytes(), &[]),
    };
    match sent {
        Ok(_) => Served::Yes,
        Err(_) => Served::ChannelClosed,
    }
}

/// Fork one monitor; the parent's side returns its pidfd.
fn fork_one(
    argv: &[String],
    stdout: OwnedFd,
    stderr: OwnedFd,
    sigfd: RawFd,
) -> Result<OwnedFd, String> {
    // SAFETY: the template is single-threaded, so the child may do anything.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: closing the template's own descriptors in the child.
            unsafe {
                libc::close(sigfd);
            }
            let _ = SigSet::empty().thread_set_mask();
            let code = become_monitor(argv, stdout, stderr);
            std::process::exit(code)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // Not yet reaped (only this loop reaps), so the pid is still
            // the child's even if it has already exited.
            // SAFETY: pidfd_open with a pid and no flags.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
            if fd < 0 {
                return Err(format!(
                    "pidfd_open of monitor {child}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: a fresh descriptor owned from here on.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        }
    }
}

/// In the forked child: stdio, session, name, then the monitor itself.
fn become_monitor(argv: &[String], stdout: OwnedFd, stderr: OwnedFd) -> i32 {
    let null = match File::open("/dev/null") {
        Ok(f) => f,
        Err(_) => return 1,
    };
    // SAFETY: dup2 onto the standard descriptors of this fresh process; the
    // control socket (fd 0) is replaced, so the monitor cannot hold the
    // template's request channel open.
    let dup_ok = unsafe {
        libc::dup2(null.as_raw_fd(), 0) >= 0
            && libc::dup2(stdout.as_raw_fd(), 1) >= 0
            && libc::dup2(stderr.as_raw_fd(), 2) >= 0
    };
    drop((null, stdout, stderr));
    if !dup_ok {
        return 1;
    }
    // Own session and process group: a signal to the daemon's group or the
    // end of its session does not reach the pod.
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe {
        libc::setsid();
    }
    set_cmdline(argv);
    set_comm(MONITOR_COMM);
    super::monitor_main(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_image_fills_the_room_and_ends_with_nul() {
        let img = cmdline_image(&["capcri", "monitor", "--pod-id", "p1"], 32);
        assert_eq!(img.len(), 32);
        assert!(img.starts_with(b"capcri\0monitor\0--pod-id\0p1\0"));
        assert!(img[26..].iter().all(|&b| b == 0));
        let cut = cmdline_image(&["capcri", "a-very-long-argument"], 10);
        assert_eq!(cut, b"capcri\0a-\0");
        assert_eq!(cmdline_image(&["x"], 0), Vec::<u8>::new());
    }

    #[test]
    fn arg_area_is_read_past_a_tricky_command_name() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[48 - 3] = "140000".into();
        fields[49 - 3] = "142048".into();
        let stat = format!("1234 (a) b) (c) {}", fields.join(" "));
        assert_eq!(arg_area(&stat), Some((140000, 142048)));
        assert_eq!(arg_area("1234 (x) S 1"), None);
        let mine = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (s, e) = arg_area(&mine).unwrap();
        assert!(e > s);
    }
}
