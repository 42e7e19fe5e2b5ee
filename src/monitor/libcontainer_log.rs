//! What libcontainer says when it fails, kept and returned.
//!
//! libcontainer tells *why* a container could not be made only in `tracing`
//! events ("failed to mount Mount { destination: \"/proc\" .. }: ..", then
//! `err = RootFS(Mount(Syscall(Nix(EPERM))))`), emitted in whichever process
//! failed: the monitor, or its intermediate or init process, both forks of
//! the monitor (clone without exec). What crosses from the init back to the
//! monitor is one top-level string ("failed to prepare rootfs"): the step,
//! without the path or the errno. So a layer installed once in the monitor,
//! and therefore present in every fork, writes each warning or error event
//! as one line
//! - to the monitor log (a close-on-exec duplicate of the monitor's stderr:
//!   the init has replaced its own fd 2 by the container's stderr by the
//!   time it prepares the rootfs), and
//! - while a create or start is in flight, errors only, to a capture socket
//!   whose other end the monitor reads when the call fails, to put in the
//!   CRI error.
//!
//! Writes are single `write`/`send` calls with no lock, safe in a fork of
//! the single-threaded monitor, and never block: the capture socket is
//! non-blocking and written with MSG_NOSIGNAL, so an init whose monitor has
//! stopped listening neither stalls nor dies of SIGPIPE.

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The monitor log, or -1 before `install`.
static LOG_FD: AtomicI32 = AtomicI32::new(-1);
/// The write end of the capture in flight, or -1.
static CAPTURE_FD: AtomicI32 = AtomicI32::new(-1);

/// Most bytes of libcontainer's report kept for one CRI error.
const MAX_REPORT: usize = 8 << 10;

/// Installs the layer as the monitor's global subscriber. Call after the
/// monitor has closed the descriptors it inherited (its fd 2 is then the
/// monitor log the daemon opened).
pub(super) fn install() {
    // SAFETY: F_DUPFD_CLOEXEC of fd 2; a failure leaves -1 (no log copy).
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    LOG_FD.store(fd, Ordering::Relaxed);
    let subscriber = tracing_subscriber::registry().with(EventLines.with_filter(LevelFilter::WARN));
    // A second install (tests) keeps the first subscriber: harmless.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// One event as one line: level, target, message and fields, in the order
/// libcontainer wrote them.
struct EventLines;

impl<S: Subscriber> Layer<S> for EventLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = FieldText::default();
        event.record(&mut fields);
        let level = *event.metadata().level();
        let body = format!(
            "{} [pid {}]: {}\n",
            event.metadata().target(),
            std::process::id(),
            fields.0
        );
        let line = format!(
            "{} {level} {body}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ")
        );
        write_all_fd(LOG_FD.load(Ordering::Relaxed), line.as_bytes());
        // Only errors go into the CRI error: libcontainer's warnings (a
        // cgroup controller this host lacks) are noise there.
        let capture = CAPTURE_FD.load(Ordering::Relaxed);
        if capture >= 0 && level == Level::ERROR {
            let text = body;
            // SAFETY: send(2) of a valid buffer; the fd is the capture
            // socket this process inherited or opened.
            unsafe {
                libc::send(
                    capture,
                    text.as_ptr().cast(),
                    text.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                );
            }
        }
    }
}

#[derive(Default)]
struct FieldText(String);

impl Visit for FieldText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

fn write_all_fd(fd: RawFd, mut bytes: &[u8]) {
    while fd >= 0 && !bytes.is_empty() {
        // SAFETY: write(2) of a valid buffer to a descriptor we own.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// libcontainer's events for the duration of one call (see the module
/// docs). Ends when `finish` is called or the value is dropped.
pub(super) struct Capture {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl Capture {
    /// Starts capturing; without a socket (fd exhaustion) the call just
    /// proceeds uncaptured.
    pub(super) fn start() -> Option<Capture> {
        let mut fds = [-1; 2];
        // SAFETY: socketpair(2) fills the two-element array.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: both descriptors are fresh and owned from here on.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        CAPTURE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        Some(Capture {
            read,
            write: Some(write),
        })
    }

    /// Stops capturing and returns what was reported, at most
    /// [`MAX_REPORT`] bytes (the last ones: the outermost errors come last).
    /// A fork that fails reports before the monitor learns of the failure,
    /// so everything it wrote is already in the socket.
    pub(super) fn finish(mut self) -> String {
        self.stop();
        let mut out = Vec::new();
        super::read_available(self.read.as_raw_fd(), &mut out);
        let start = out.len().saturating_sub(MAX_REPORT);
        String::from_utf8_lossy(&out[start..]).trim().to_string()
    }

    fn stop(&mut self) {
        CAPTURE_FD.store(-1, Ordering::Relaxed);
        self.write = None;
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An error and its sources, each once: libcontainer's outer errors often
/// repeat their source's text ("..: {source}"), so a source already in the
/// text is not appended again.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The CRI error text of a failed libcontainer call: the error chain, then
/// (when there is one) what libcontainer reported on the way.
pub(super) fn failure_message(step: &str, err: &dyn std::error::Error, report: &str) -> String {
    let chain = error_chain(err);
    if report.is_empty() {
        format!("{step}: {chain}")
    } else {
        format!(
            "{step}: {chain}; libcontainer reported: {}",
            report.lines().collect::<Vec<_>>().join(" | ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("mounting /proc: {0}")]
        Mount(#[source] std::io::Error),
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("failed to prepare rootfs")]
        RootFs(#[source] Inner),
        #[error("wrapped: {0}")]
        Repeats(#[source] Inner),
    }

    #[test]
    fn the_chain_names_every_source_once() {
        let eperm = || std::io::Error::from_raw_os_error(libc::EPERM);
        let e = Outer::RootFs(Inner::Mount(eperm()));
        assert_eq!(
            error_chain(&e),
            "failed to prepare rootfs: mounting /proc: Operation not permitted (os error 1)"
        );
        let e = Outer::Repeats(Inner::Mount(eperm()));
        assert_eq!(
            error_chain(&e),
            "wrapped: mounting /proc: Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn a_report_is_joined_on_one_line() {
        let e = Outer::RootFs(Inner::Mount(std::io::Error::from_raw_os_error(
            libc::ENOENT,
        )));
        let msg = failure_message("creating the container failed", &e, "a\nb");
        assert!(msg.starts_with("creating the container failed: failed to prepare rootfs"));
        assert!(msg.ends_with("; libcontainer reported: a | b"), "{msg}");
        assert!(!failure_message("x", &e, "").contains("reported"));
    }

    /// One test: the capture socket is process-global.
    #[test]
    fn a_capture_returns_the_events_sent_while_it_ran() {
        let subscriber = tracing_subscriber::registry().with(EventLines);
        let capture = Capture::start().expect("socketpair");
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                err = ?Outer::RootFs(Inner::Mount(std::io::Error::from_raw_os_error(libc::EPERM))),
                "failed to prepare rootfs"
            );
            tracing::warn!("failed to mount {:?}: {}", "/proc", "syscall");
        });
        let report = capture.finish();
        let lines: Vec<&str> = report.lines().collect();
        // The warning is left out.
        assert_eq!(lines.len(), 1, "{report}");
        assert!(
            lines[0].starts_with("capcri::monitor::libcontainer_log"),
            "{report}"
        );
        assert!(
            lines[0].ends_with(
                "]: failed to prepare rootfs err=RootFs(Mount(Os { code: 1, kind: PermissionDenied, message: \"Operation not permitted\" }))"
            ),
            "{report}"
        );
        assert_eq!(CAPTURE_FD.load(Ordering::Relaxed), -1);
        // Events after the capture ended go nowhere.
        tracing::subscriber::with_default(tracing_subscriber::registry().with(EventLines), || {
            tracing::error!("late");
        });
    }
}
