//! The per-pod monitor process (`capcri monitor ...`), and the only place
//! that calls libcontainer. The daemon talks to it through the typed
//! protocol of `crate::monitor_api` over a unix socket.
//!
//! Why a separate process: libcontainer clones children from the calling
//! process; in a multi-threaded process (the tokio daemon) the clone can
//! inherit a held glibc malloc lock and deadlock, and libcontainer marks its
//! caller non-dumpable. The monitor (see [`monitor_main`]) is
//! single-threaded, is the parent and subreaper of the pod's containers,
//! holds their stdio, writes their CRI logs and records exit codes, so it
//! keeps working while the daemon is down. Every monitor is forked by the
//! template (`template`), a fork server exec'd once per daemon.
//!
//! Single-threaded on purpose: no tokio, one `poll(2)` loop over the
//! listening socket, client connections, the containers' stdout/stderr and
//! exec-status pipes, exec output pipes and a self-pipe written by the
//! SIGCHLD handler; timers are the poll timeout, and an idle monitor has
//! none (it sleeps until something happens). It is
//! PR_SET_CHILD_SUBREAPER and, because containers are built with
//! `as_sibling(false)` (libcontainer clones the init with CLONE_PARENT from
//! its intermediate process), the direct parent of every container init and
//! exec process, so it alone reaps them and records their exit.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{Spec, UserBuilder};
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

mod console;
mod container_ops;
mod cri_log;
mod dmz;
mod exec;
mod executor;
mod libcontainer_log;
mod pod_init;
mod pod_namespaces;
mod propagation;
mod template;
mod tenant;

pub use cri_log::{
    CriLogLine, CriLogParseError, CriLogStream, LineSplitter, MAX_LOG_LINE, format_cri_log_line,
    parse_cri_log_line,
};
pub use template::template_main;

use container_ops::{ContainerRecord, PendingStop};
use exec::ExecJob;

use dmz::sealed_trampoline;
use executor::{ReportingExecutor, join_new_session_keyring};
use pod_namespaces::{create_and_pin, start_pod_init, validate_hostname};

use crate::host::unpin_namespaces;
use crate::monitor_api::RuntimeError;
use crate::monitor_api::persist::{remove_container_dir, write_state};
use crate::monitor_api::protocol::{
    Decoded, Request, Response, SOCKET_NAME, decode_frame, encode_frame,
};
use crate::monitor_api::{
    ContainerRuntimeState, CreateContainer, ExecOutput, ExecPath, ExecSpec, MAX_EXEC_OUTPUT,
    PodNamespaceSet, RuntimeStatus,
};
use crate::util::time::now_nanos;

/// How long `start` waits for the container's `execve` to succeed or fail.
const EXEC_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// After an exec'd process exited, how long its output pipes may stay open
/// (held by a background child) before the result is sent anyway.
const EXEC_DRAIN_GRACE: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

static SIGCHLD_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGCHLD_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) is async-signal-safe; EAGAIN on a full pipe is fine.
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

#[derive(Debug, Default)]
struct MonitorArgs {
    pod_id: String,
    pod_dir: PathBuf,
    runtime_root: PathBuf,
    namespaces: PodNamespaceSet,
    hostname: Option<String>,
    user_namespace: Option<crate::spec::PodUserNamespace>,
    init_cgroup: Option<String>,
}

fn parse_args(args: &[String]) -> Result<MonitorArgs, String> {
    let mut out = MonitorArgs::default();
    let start = args
        .iter()
        .position(|a| a == "monitor")
        .map_or(0, |i| i + 1);
    let mut it = args[start..].iter();
    let (mut uids, mut gids) = (None, None);
    fn value<'a>(name: &str, it: &mut impl Iterator<Item = &'a String>) -> Result<String, String> {
        it.next()
            .cloned()
            .ok_or_else(|| format!("{name} needs a value"))
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pod-id" => out.pod_id = value(a, &mut it)?,
            "--pod-dir" => out.pod_dir = PathBuf::from(value(a, &mut it)?),
            "--runtime-root" => out.runtime_root = PathBuf::from(value(a, &mut it)?),
            "--hostname" => out.hostname = Some(value(a, &mut it)?),
            "--init-cgroup" => out.init_cgroup = Some(value(a, &mut it)?),
            "--net" => out.namespaces.net = true,
            "--ipc" => out.namespaces.ipc = true,
            "--uts" => out.namespaces.uts = true,
            "--pid" => out.namespaces.pid = true,
            "--userns-uids" => uids = Some(value(a, &mut it)?.parse()?),
            "--userns-gids" => gids = Some(value(a, &mut it)?.parse()?),
            other => return Err(format!("unknown monitor argument {other:?}")),
        }
    }
    if out.pod_id.is_empty() || !out.pod_dir.is_absolute() || !out.runtime_root.is_absolute() {
        return Err(
            "monitor needs --pod-id, an absolute --pod-dir and an absolute --runtime-root".into(),
        );
    }
    if let Some(h) = &out.hostname {
        validate_hostname(h)?;
    }
    out.user_namespace = match (uids, gids) {
        (Some(uids), Some(gids)) => Some(crate::spec::PodUserNamespace { uids, gids }),
        (None, None) => None,
        _ => return Err("--userns-uids and --userns-gids go together".into()),
    };
    Ok(out)
}

/// Entry of the hidden `capcri monitor` subcommand. Writes `ready <pid>` or
/// `error: <text>` as one line on stdout (a pipe read by the daemon), then
/// detaches stdout; returns the process exit code.
pub fn monitor_main(args: &[String]) -> i32 {
    let parsed = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            report_startup(&format!("error: {e}"));
            return 2;
        }
    };
    // The pod's own processes, this monitor and the pod init it forks, get
    // containerd's sandbox score (its shim's and pause's), where the kernel
    // allows: their death takes every container of the pod.
    if let (_, Some(w)) = crate::host::oom_score::set_own(crate::spec::SANDBOX_OOM_SCORE_ADJ) {
        eprintln!("capcri monitor: pod {}: {w}", parsed.pod_id);
    }
    let mut monitor = match Monitor::start(parsed) {
        Ok(m) => m,
        Err(e) => {
            report_startup(&format!("error: {e}"));
            return 1;
        }
    };
    report_startup(&format!("ready {}", std::process::id()));
    detach_stdout();
    monitor.place_pod_init();
    std::hint::black_box(warm_up());
    monitor.run();
    0
}

/// Runs once what the pod's first CreateContainer runs first, before any
/// request: parsing a bundle's spec. This monitor is a fresh fork of the
/// template, and a fork does not copy the page-table entries of the
/// binary's code, so the first parse faulted in every page of serde's and
/// oci-spec's code it ran and grew the heap: 220 µs of the monitor's
/// check of the first create, against 85 µs for a second parse of the
/// same 10 KB spec (2026-12-07, capcri-bench pod cycles, medians of 44).
/// Here it runs while the daemon waits for the pod's CNI plugins.
fn warm_up() -> bool {
    let sample = oci_spec::runtime::Spec::default();
    serde_json::to_vec(&sample)
        .is_ok_and(|bytes| serde_json::from_slice::<oci_spec::runtime::Spec>(&bytes).is_ok())
}

fn report_startup(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.replace('\n', " "));
    let _ = out.flush();
}

/// After readiness the daemon stops reading; stdout must not tie the
/// monitor's life to the daemon (a write to a closed pipe would fail).
fn detach_stdout() {
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1, which we own as the process's stdout.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::io("creating a pipe", e.into()))
}

fn dev_null() -> Result<OwnedFd, RuntimeError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| RuntimeError::io("opening /dev/null", e))
}

/// Most bytes taken from one descriptor per loop turn, so a container
/// writing without pause cannot starve the other descriptors.
const READ_BUDGET: usize = 1 << 20;

/// Read what is available now (up to [`READ_BUDGET`]). `true` = EOF.
fn read_available(fd: RawFd, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 65536];
    let mut taken = 0;
    while taken < READ_BUDGET {
        // SAFETY: read(2) into a stack buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            into.extend_from_slice(&buf[..n as usize]);
            taken += n as usize;
            continue;
        }
        if n == 0 {
            return true;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return false,
            _ => return true,
        }
    }
    false
}

fn exit_code_of(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as i32)),
        _ => None,
    }
}

struct Connection {
    id: u64,
    stream: UnixStream,
    buf: Vec<u8>,
    /// A request of this connection awaits a deferred answer (stop, exec).
    waiting: bool,
}

enum Token {
    Listener,
    Sigchld,
    Conn(usize),
    CtrPipe(String),
    CtrStatus(String),
    ExecOut(usize, bool),
}

/// What a handler decided about the reply.
enum Reply {
    Now(Response),
    Deferred,
}

struct Monitor {
    args: MonitorArgs,
    listener: UnixListener,
    sigchld_r: OwnedFd,
    _sigchld_w: OwnedFd,
    conns: Vec<Connection>,
    next_conn: u64,
    containers: HashMap<String, ContainerRecord>,
    execs: Vec<ExecJob>,
    stops: Vec<PendingStop>,
    /// Connections subscribed to container exits (`WatchExits`).
    watchers: Vec<u64>,
    /// The sealed `capcri-dmz` memfd, made at the first `dmz` container and
    /// shared by all later ones (see `dmz.rs`).
    dmz_memfd: Option<OwnedFd>,
    /// Pid 1 of the pod's PID namespace (see `start_pod_init`), killed at
    /// pod shutdown.
    pod_init: Option<i32>,
    /// A create answered before its build (`build_after_answer`), built as
    /// soon as the answer is sent.
    build_next: Option<container_ops::AcceptedCreate>,
    shutdown: bool,
}

impl Monitor {
    fn start(args: MonitorArgs) -> Result<Monitor, RuntimeError> {
        // The daemon may have leaked descriptors (including the sealed memfd
        // this process was executed from); none belong in containers.
        // SAFETY: close_range on fds this process does not use.
        unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        }
        libcontainer_log::install();
        // libpathrs (in libcontainer and libcgroups) mounts a private procfs
        // instance (fsopen, fsmount and a dozen checks) the first time a
        // process asks for one and keeps it for the process's life. Made
        // here, once per pod, every container's libcontainer intermediate
        // and init processes inherit it instead of each mounting their own
        // (and unmounting it at the container's execve). It is a
        // `subset=pid`, close-on-exec descriptor: nothing a container runs
        // gets it. On failure libcontainer makes its own, as before.
        if let Err(e) = pathrs::procfs::ProcfsHandle::new() {
            tracing::debug!(error = %e, "no cached procfs handle for libcontainer");
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(RuntimeError::io(
                "PR_SET_CHILD_SUBREAPER",
                std::io::Error::last_os_error(),
            ));
        }
        // The daemon runs with umask 077 (its state is root-only); the
        // containers and exec'd processes this monitor starts inherit its
        // umask, and they get the OCI runtimes' default (runc: 0022), as
        // under containerd. The monitor's own files set their modes.
        // SAFETY: umask has no failure mode.
        unsafe { libc::umask(0o022) };
        // A session keyring of the pod's own (KEYCTL_JOIN_SESSION_KEYRING,
        // anonymous): containers and execs that cannot make their own (a
        // seccomp profile without keyctl) must not share the daemon's or
        // the host login's, as runc gives each container its own.
        if let Err(e) = join_new_session_keyring() {
            eprintln!("capcri monitor: a new session keyring: {e}");
        }
        fs::create_dir_all(&args.pod_dir).map_err(|e| {
            RuntimeError::io(
                format!("creating pod directory {}", args.pod_dir.display()),
                e,
            )
        })?;
        fs::create_dir_all(&args.runtime_root).map_err(|e| {
            RuntimeError::io(
                format!("creating runtime root {}", args.runtime_root.display()),
                e,
            )
        })?;
        let sock = args.pod_dir.join(SOCKET_NAME);
        // Checked before anything is pinned: a second monitor must not
        // replace the namespaces the first one's containers live in.
        if UnixStream::connect(&sock).is_ok() {
            return Err(RuntimeError::InvalidRequest(format!(
                "a monitor already serves {}; connect to it instead of starting another",
                sock.display()
            )));
        }
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| RuntimeError::io("creating the SIGCHLD pipe", e.into()))?;
        SIGCHLD_PIPE.store(w.as_raw_fd(), Ordering::Relaxed);
        // SAFETY: installing a handler that only calls write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigchld as *const () as usize;
            sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
        }

        // A socket file nobody listens on is left from a dead monitor.
        let _ = fs::remove_file(&sock);
        // The socket is created 0600 from the start (umask), not chmod'ed
        // after: nobody but root may drive the pod's containers.
        // SAFETY: umask has no failure mode.
        let old = unsafe { libc::umask(0o077) };
        let listener = UnixListener::bind(&sock);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let listener =
            listener.map_err(|e| RuntimeError::io(format!("binding {}", sock.display()), e))?;
        let _ = fs::set_permissions(&sock, fs::Permissions::from_mode(0o600));
        listener
            .set_nonblocking(true)
            .map_err(|e| RuntimeError::io("setting the monitor socket non-blocking", e))?;
        // Pinned last: every later step that could fail is behind us, and a
        // failure here leaves no socket (create_and_pin undoes its pins).
        if let Err(e) = create_and_pin(
            &args.pod_dir,
            args.namespaces,
            args.hostname.as_deref(),
            args.user_namespace.as_ref(),
        ) {
            let _ = fs::remove_file(&sock);
            return Err(e);
        }
        let pod_init = if args.namespaces.pid {
            match start_pod_init(&args.pod_dir, args.user_namespace.as_ref()) {
                Ok(pid) => Some(pid),
                Err(e) => {
                    let _ = unpin_namespaces(&args.pod_dir);
                    let _ = fs::remove_file(&sock);
                    return Err(e);
                }
            }
        } else {
            None
        };
        Ok(Monitor {
            args,
            listener,
            sigchld_r: r,
            _sigchld_w: w,
            conns: Vec::new(),
            next_conn: 1,
            containers: HashMap::new(),
            execs: Vec::new(),
            stops: Vec::new(),
            watchers: Vec::new(),
            dmz_memfd: None,
            pod_init,
            build_next: None,
            shutdown: false,
        })
    }

    /// Moves the pod init into its cgroup leaf, after `ready`: on a cgroup
    /// v1 node that is a mkdir and a `cgroup.procs` write in every
    /// hierarchy (each write takes the kernel's threadgroup rwsem; 2-3 ms
    /// of RunPodSandbox measured), which the daemon need not wait for. No
    /// request is served before it, so no container starts before the init
    /// is placed. A failure leaves the init, still powerless, in the
    /// monitor's cgroup: logged, since the pod itself works.
    fn place_pod_init(&self) {
        if let (Some(pid), Some(rel)) = (self.pod_init, self.args.init_cgroup.as_deref())
            && let Err(e) = pod_init::join_cgroup(pid, rel)
        {
            eprintln!("capcri monitor: placing the pod init {pid} in its cgroup {rel}: {e}");
        }
    }

    fn run(&mut self) {
        while !self.shutdown {
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut tokens: Vec<Token> = Vec::new();
            let mut add = |fd: RawFd, t: Token, fds: &mut Vec<libc::pollfd>| {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                tokens.push(t);
            };
            add(self.listener.as_raw_fd(), Token::Listener, &mut fds);
            add(self.sigchld_r.as_raw_fd(), Token::Sigchld, &mut fds);
            for (i, c) in self.conns.iter().enumerate() {
                if !c.waiting {
                    add(c.stream.as_raw_fd(), Token::Conn(i), &mut fds);
                }
            }
            for (id, c) in &self.containers {
                for p in &c.pipes {
                    add(p.fd.as_raw_fd(), Token::CtrPipe(id.clone()), &mut fds);
                }
                if let Some(s) = &c.exec_status {
                    add(s.as_raw_fd(), Token::CtrStatus(id.clone()), &mut fds);
                }
            }
            for (i, e) in self.execs.iter().enumerate() {
                if let Some(f) = &e.stdout {
                    add(f.as_raw_fd(), Token::ExecOut(i, false), &mut fds);
                }
                if let Some(f) = &e.stderr {
                    add(f.as_raw_fd(), Token::ExecOut(i, true), &mut fds);
                }
            }
            let timeout = self.poll_timeout();
            // SAFETY: poll over a vector of pollfd we own.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                // EINTR from SIGCHLD: just go around.
                continue;
            }
            let mut conn_ready = Vec::new();
            let mut accept = false;
            for (pfd, tok) in fds.iter().zip(tokens) {
                if pfd.revents == 0 {
                    continue;
                }
                match tok {
                    Token::Listener => accept = true,
                    Token::Sigchld => {
                        let mut sink = Vec::new();
                        read_available(self.sigchld_r.as_raw_fd(), &mut sink);
                    }
                    Token::Conn(i) => conn_ready.push(i),
                    Token::CtrPipe(id) | Token::CtrStatus(id) => {
                        if let Some(c) = self.containers.get_mut(&id) {
                            c.drain(false);
                        }
                    }
                    Token::ExecOut(i, is_err) => {
                        if let Some(e) = self.execs.get_mut(i) {
                            let (slot, buf) = if is_err {
                                (&mut e.stderr, &mut e.err)
                            } else {
                                (&mut e.stdout, &mut e.out)
                            };
                            if let Some(fd) = slot
                                && read_available(fd.as_raw_fd(), buf)
                            {
                                *slot = None;
                            }
                            buf.truncate(MAX_EXEC_OUTPUT);
                        }
                    }
                }
            }
            self.reap();
            self.handle_timers();
            self.finish_execs();
            // Connections: handle readable ones (indices are stable until
            // closed connections are removed below).
            for i in conn_ready {
                self.serve_connection(i);
            }
            self.conns.retain(|c| c.id != 0);
            if accept {
                self.accept();
            }
        }
        self.conns.clear();
    }

    /// Milliseconds until the next timer (a stop's kill, a dropped stop
    /// signal's re-check, an exec's deadline or drain grace), or -1: with
    /// none pending the monitor sleeps until a descriptor or SIGCHLD wakes
    /// it. Every other event reaches it through the poll set (requests,
    /// container output, exec status, the SIGCHLD self-pipe), so there is
    /// nothing to look at on a clock; a once-a-second turn cost a wakeup
    /// per pod per second, 250 a second at 250 pods, in a sleeping
    /// node's CPU (`voluntary_ctxt_switches` of idle monitors: 1.0 per
    /// monitor per second before, 0 after).
    fn poll_timeout(&self) -> i32 {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for s in &self.stops {
            consider(s.kill_at);
            // A dropped stop signal is re-checked (see recheck_interval).
            consider(s.redeliver.map(|_| s.next_check));
        }
        for e in &self.execs {
            consider(e.deadline.filter(|_| !e.timed_out && e.exit.is_none()));
            consider(e.exited_at.map(|t| t + EXEC_DRAIN_GRACE));
        }
        match next {
            None => -1,
            Some(t) => t.saturating_duration_since(now).as_millis().min(1000) as i32 + 1,
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let id = self.next_conn;
                    self.next_conn += 1;
                    self.conns.push(Connection {
                        id,
                        stream,
                        buf: Vec::new(),
                        waiting: false,
                    });
                }
                Err(_) => return,
            }
        }
    }

    fn serve_connection(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx) else {
            return;
        };
        let eof = read_available(conn.stream.as_raw_fd(), &mut conn.buf);
        loop {
            let Some(conn) = self.conns.get_mut(idx) else {
                return;
            };
            if conn.waiting {
                break;
            }
            match decode_frame::<Request>(&conn.buf) {
                Decoded::Incomplete => break,
                Decoded::Fatal(msg) => {
                    let id = conn.id;
                    self.send(id, &Response::Error(RuntimeError::Protocol(msg).to_wire()));
                    self.close_conn(id);
                    return;
                }
                Decoded::Frame { consumed, message } => {
                    conn.buf.drain(..consumed);
                    let id = conn.id;
                    let reply = match message {
                        Ok(req) => self.handle(id, req),
                        Err(msg) => {
                            Reply::Now(Response::Error(RuntimeError::InvalidRequest(msg).to_wire()))
                        }
                    };
                    match reply {
                        Reply::Now(resp) => self.send(id, &resp),
                        Reply::Deferred => {
                            if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
                                c.waiting = true;
                            }
                        }
                    }
                    // A create answered before its build: built now, before
                    // any other request is read, so none sees it half made.
                    if let Some(accepted) = self.build_next.take() {
                        self.build_answered(accepted);
                    }
                    if self.shutdown {
                        return;
                    }
                }
            }
        }
        if eof && let Some(conn) = self.conns.get(idx) {
            let id = conn.id;
            if !conn.waiting {
                self.close_conn(id);
            }
        }
    }

    /// Marks the connection for removal (id 0) at the end of the iteration.
    fn close_conn(&mut self, id: u64) {
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
            c.id = 0;
        }
    }

    /// Send `resp` with `fds` attached to its first byte (SCM_RIGHTS); the
    /// frame is small, so one blocking sendmsg carries it whole.
    fn send_with_fds(&mut self, conn_id: u64, resp: &Response, fds: &[RawFd]) -> bool {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let Some(conn) = self.conns.iter_mut().find(|c| c.id == conn_id) else {
            return false;
        };
        let Ok(frame) = encode_frame(resp) else {
            return false;
        };
        let ok = conn.stream.set_nonblocking(false).is_ok()
            && conn.stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok();
        let iov = [std::io::IoSlice::new(&frame)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let sent = ok
            && match sendmsg::<()>(
                conn.stream.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::empty(),
                None,
            ) {
                Ok(n) => n == frame.len() || conn.stream.write_all(&frame[n..]).is_ok(),
                Err(_) => false,
            };
        let sent = sent && conn.stream.set_nonblocking(true).is_ok();
        if !sent {
            conn.id = 0;
        }
        sent
    }

    fn send(&mut self, conn_id: u64, resp: &Response) {
        let Some(conn) = self.conns.iter_mut().find(|c| c.id == conn_id) else {
            return;
        };
        conn.waiting = false;
        let frame = match encode_frame(resp) {
            Ok(f) => f,
            Err(e) => match encode_frame(&Response::Error(RuntimeError::Protocol(e).to_wire())) {
                Ok(f) => f,
                Err(_) => return,
            },
        };
        // A short blocking write with a timeout: a client that stops reading
        // cannot stall the monitor for more than WRITE_TIMEOUT.
        let ok = conn.stream.set_nonblocking(false).is_ok()
            && conn.stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok()
            && conn.stream.write_all(&frame).is_ok()
            && conn.stream.set_nonblocking(true).is_ok();
        if !ok {
            conn.id = 0;
        }
    }

    fn handle(&mut self, conn: u64, req: Request) -> Reply {
        let result = match req {
            Request::Ping => Ok(Reply::Now(Response::Pong {
                pid: std::process::id(),
            })),
            Request::Create(c) if c.build_after_answer => self.accept_create(c).map(|accepted| {
                self.build_next = Some(accepted);
                Reply::Now(Response::Accepted)
            }),
            Request::Create(c) => self
                .accept_create(c)
                .and_then(|accepted| self.build(accepted))
                .map(|pid| Reply::Now(Response::Created { pid })),
            Request::Start { id, reply_state } => {
                self.start_answering(&id, reply_state).map(Reply::Now)
            }
            Request::Stop {
                id,
                timeout,
                signal,
            } => self.stop(conn, &id, timeout, signal),
            Request::Kill { id, signal } => {
                self.kill(&id, signal).map(|_| Reply::Now(Response::Ok))
            }
            Request::Delete { id } => self.delete(&id).map(|_| Reply::Now(Response::Ok)),
            Request::State { id } => self.state(&id).map(|s| Reply::Now(Response::State(s))),
            Request::ReopenLog { id } => self.reopen_log(&id).map(|_| Reply::Now(Response::Ok)),
            Request::ExecSync { id, spec } => self.exec_sync(conn, &id, spec),
            Request::ExecStream {
                id,
                spec,
                stdin,
                tty,
            } => self.exec_stream(conn, &id, spec, stdin, tty),
            Request::Attach { id, stdin } => self.attach(conn, &id, stdin),
            Request::WatchExits => {
                self.watchers.push(conn);
                Ok(Reply::Now(Response::Watching))
            }
            Request::Shutdown => {
                self.shutdown_pod();
                Ok(Reply::Now(Response::Ok))
            }
        };
        match result {
            Ok(r) => r,
            Err(e) => Reply::Now(Response::Error(e.to_wire())),
        }
    }

    /// Reap every exited child; record container exits the moment they are
    /// known. Unknown pids (libcontainer helpers, orphans re-parented to us
    /// as subreaper) are just reaped.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some((pid, code)) = exit_code_of(status) else {
                continue;
            };
            let pod_dir = self.args.pod_dir.clone();
            let mut finished: Option<String> = None;
            for (id, rec) in self.containers.iter_mut() {
                if rec.pid == pid && !rec.exited() {
                    rec.drain(false);
                    rec.record_exit(code);
                    if let Err(e) = write_state(&pod_dir, id, &rec.state) {
                        eprintln!("capcri monitor: recording exit of container {id:?}: {e}");
                    }
                    finished = Some(id.clone());
                }
            }
            if let Some(id) = finished {
                self.notify_exit(&id, code);
                self.answer_stops(&id);
            }
            for job in self.execs.iter_mut() {
                if job.pid == pid && job.exit.is_none() {
                    job.exit = Some(code);
                    job.exited_at = Some(Instant::now());
                }
            }
        }
    }

    /// Answers every StopContainer waiting for `id` (it exited or was
    /// deleted) and forgets them.
    pub(super) fn answer_stops(&mut self, id: &str) {
        let done: Vec<u64> = self
            .stops
            .iter()
            .filter(|s| s.container == id)
            .map(|s| s.conn)
            .collect();
        self.stops.retain(|s| s.container != id);
        for c in done {
            self.send(c, &Response::Ok);
        }
    }

    /// Tells every watcher (the daemon's event stream) that `id` exited;
    /// watchers whose connection is gone are forgotten.
    pub(super) fn notify_exit(&mut self, id: &str, exit_code: i32) {
        let event = Response::Exited {
            id: id.to_string(),
            exit_code,
        };
        for w in self.watchers.clone() {
            self.send(w, &event);
        }
        let live: std::collections::HashSet<u64> = self.conns.iter().map(|c| c.id).collect();
        self.watchers.retain(|w| live.contains(w));
    }

    fn handle_timers(&mut self) {
        let now = Instant::now();
        // A dropped stop signal first: its kill may be due in this turn too.
        if self.stops.iter().any(|s| s.redeliver.is_some()) {
            self.redeliver_stop_signals();
        }
        let mut to_kill = Vec::new();
        for s in self.stops.iter_mut() {
            if s.kill_at.is_some_and(|t| t <= now) {
                s.kill_at = None;
                to_kill.push(s.container.clone());
            }
        }
        for id in to_kill {
            if let Some(rec) = self.containers.get(&id)
                && !rec.exited()
            {
                eprintln!(
                    "capcri monitor: container {id:?} (pod {}) did not stop within its stop timeout; sending SIGKILL",
                    self.args.pod_id
                );
                let _ = Self::signal(rec.pid, libc::SIGKILL);
            }
        }
        for job in self.execs.iter_mut() {
            if job.exit.is_none() && !job.timed_out && job.deadline.is_some_and(|t| t <= now) {
                job.timed_out = true;
                let _ = Self::signal(job.pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warm-up parses for real: a sample that failed to parse would
    /// stop at its first field and warm nothing.
    #[test]
    fn the_warm_up_parses_a_whole_spec() {
        assert!(warm_up());
    }

    #[test]
    fn argv_roundtrips_through_the_parser() {
        let spawn = crate::monitor_api::MonitorSpawn {
            pod_id: "p1".into(),
            pod_dir: "/run/capcri/pods/p1".into(),
            runtime_root: "/run/capcri/runtime".into(),
            new_namespaces: PodNamespaceSet {
                net: true,
                ipc: false,
                uts: true,
                pid: true,
            },
            hostname: Some("web-0".into()),
            user_namespace: Some(crate::spec::PodUserNamespace {
                uids: "0:65536:65536".parse().unwrap(),
                gids: "0:131072:65536".parse().unwrap(),
            }),
            init_cgroup: Some("/capcri/p1/pod-init".into()),
            program: None,
        };
        let argv = crate::monitor_api::client::monitor_argv(&spawn);
        let parsed = parse_args(&argv).unwrap();
        assert_eq!(parsed.user_namespace, spawn.user_namespace);
        assert_eq!(parsed.pod_id, "p1");
        assert_eq!(parsed.pod_dir, PathBuf::from("/run/capcri/pods/p1"));
        assert_eq!(parsed.namespaces, spawn.new_namespaces);
        assert_eq!(parsed.hostname.as_deref(), Some("web-0"));
        assert_eq!(parsed.init_cgroup, spawn.init_cgroup);
    }

    #[test]
    fn bad_arguments_are_rejected() {
        assert!(parse_args(&["monitor".into(), "--bogus".into()]).is_err());
        assert!(parse_args(&["monitor".into(), "--pod-id".into()]).is_err());
        assert!(parse_args(&["monitor".into(), "--pod-id".into(), "p".into()]).is_err());
        let base = || {
            [
                "monitor",
                "--pod-id",
                "p",
                "--pod-dir",
                "/p",
                "--runtime-root",
                "/r",
            ]
            .map(String::from)
            .to_vec()
        };
        let mut only_uids = base();
        only_uids.extend(["--userns-uids".into(), "0:1000:10".into()]);
        assert!(parse_args(&only_uids).is_err());
        let mut bad = base();
        bad.extend(["--userns-uids".into(), "0:1000".into()]);
        assert!(parse_args(&bad).is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(
            exit_code_of(WaitStatus::Exited(Pid::from_raw(5), 3)),
            Some((5, 3))
        );
        assert_eq!(
            exit_code_of(WaitStatus::Signaled(
                Pid::from_raw(5),
                Signal::SIGTERM,
                false
            )),
            Some((5, 143))
        );
        assert_eq!(
            exit_code_of(WaitStatus::Signaled(
                Pid::from_raw(5),
                Signal::SIGKILL,
                false
            )),
            Some((5, 137))
        );
    }
}
