//! The daemon's side: start a pod's monitor and talk to it (async, tokio).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use super::error::RuntimeError;
use super::protocol::{MAX_FRAME_LEN, Request, Response, SOCKET_NAME, encode_frame};
use super::template_client::fork_monitor;
use super::types::{ContainerRuntimeState, CreateContainer, ExecOutput, ExecSpec, MonitorSpawn};

/// How long a monitor may take to pin namespaces and open its socket.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Handle on one pod's monitor. Cheap to clone; every call opens its own
/// connection, so calls never wait behind a long stop or exec of another.
#[derive(Clone, Debug)]
pub struct MonitorClient {
    socket: PathBuf,
    /// A pidfd of the monitor when this daemon started it, so `shutdown`
    /// can wait for its exit; `None` after `connect`.
    exit: Arc<Mutex<Option<OwnedFd>>>,
    pid: Option<u32>,
}

/// Start the pod's monitor (forked by the monitor template, see
/// [`super::template`]) and wait until it reports ready (or its startup
/// error).
pub async fn spawn_monitor(req: MonitorSpawn) -> Result<MonitorClient, RuntimeError> {
    let program = req
        .program
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    tokio::fs::create_dir_all(&req.pod_dir).await.map_err(|e| {
        RuntimeError::io(
            format!("creating pod directory {}", req.pod_dir.display()),
            e,
        )
    })?;
    let log_path = req.pod_dir.join("monitor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| RuntimeError::io(format!("opening {}", log_path.display()), e))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::io("creating the monitor's readiness pipe", e.into()))?;
    let argv = monitor_argv(&req);
    // The write end goes to the monitor only: once the template has it,
    // ours is dropped, so a monitor that dies unannounced reads as EOF.
    let pidfd = tokio::task::spawn_blocking(move || {
        fork_monitor(&program, &argv, ready_w, OwnedFd::from(log))
    })
    .await
    .map_err(|e| RuntimeError::Protocol(format!("monitor fork task failed: {e}")))??;
    let ready = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_r)
        .map_err(|e| RuntimeError::io("reading the monitor's readiness pipe", e))?;
    let mut line = String::new();
    let read =
        tokio::time::timeout(STARTUP_TIMEOUT, BufReader::new(ready).read_line(&mut line)).await;
    let startup_failed = |message: String| RuntimeError::MonitorStartup {
        pod: req.pod_id.clone(),
        message,
    };
    match read {
        Err(_) => {
            signal_pidfd(&pidfd, libc::SIGKILL);
            return Err(startup_failed(format!(
                "not ready after {STARTUP_TIMEOUT:?}; see {}",
                log_path.display()
            )));
        }
        Ok(Err(e)) => return Err(RuntimeError::io("reading the monitor's readiness line", e)),
        Ok(Ok(_)) => {}
    }
    let line = line.trim();
    let Some(pid) = line.strip_prefix("ready ") else {
        let msg = line.strip_prefix("error: ").unwrap_or(line);
        let msg = if msg.is_empty() {
            format!("exited without a word; see {}", log_path.display())
        } else {
            msg.to_string()
        };
        return Err(startup_failed(msg));
    };
    let pid = pid.parse::<u32>().ok();
    Ok(MonitorClient {
        socket: req.pod_dir.join(SOCKET_NAME),
        exit: Arc::new(Mutex::new(Some(pidfd))),
        pid,
    })
}

/// The argv the daemon passes (after the `monitor` subcommand).
pub(crate) fn monitor_argv(spawn: &MonitorSpawn) -> Vec<String> {
    let mut v = vec![
        "monitor".to_string(),
        "--pod-id".into(),
        spawn.pod_id.clone(),
        "--pod-dir".into(),
        spawn.pod_dir.display().to_string(),
        "--runtime-root".into(),
        spawn.runtime_root.display().to_string(),
    ];
    if spawn.new_namespaces.net {
        v.push("--net".into());
    }
    if spawn.new_namespaces.ipc {
        v.push("--ipc".into());
    }
    if spawn.new_namespaces.uts {
        v.push("--uts".into());
    }
    if spawn.new_namespaces.pid {
        v.push("--pid".into());
    }
    if let Some(h) = &spawn.hostname {
        v.push("--hostname".into());
        v.push(h.clone());
    }
    if let Some(c) = &spawn.init_cgroup {
        v.push("--init-cgroup".into());
        v.push(c.clone());
    }
    if let Some(u) = &spawn.user_namespace {
        v.push("--userns-uids".into());
        v.push(u.uids.to_string());
        v.push("--userns-gids".into());
        v.push(u.gids.to_string());
    }
    v
}

/// Send `signal` to the process behind `pidfd` (no pid reuse race).
fn signal_pidfd(pidfd: &OwnedFd, signal: libc::c_int) {
    // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        );
    }
}

/// Wait until the process behind `pidfd` has exited (the pidfd polls
/// readable), at most `timeout`.
async fn wait_pidfd(pidfd: OwnedFd, timeout: Duration) {
    let Ok(fd) = watch_pidfd(pidfd) else {
        return;
    };
    let _ = tokio::time::timeout(timeout, fd.readable()).await;
}

/// `pidfd` registered with the runtime: it polls readable once its
/// process has exited.
fn watch_pidfd(pidfd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the pidfd for as long as it is registered;
    // nothing else can close or replace the descriptor.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(std::io::Error::from)
}

impl MonitorClient {
    /// Reconnect to a running monitor (after a daemon restart).
    pub async fn connect(pod_dir: &Path) -> Result<MonitorClient, RuntimeError> {
        let client = MonitorClient {
            socket: pod_dir.join(SOCKET_NAME),
            exit: Arc::new(Mutex::new(None)),
            pid: None,
        };
        match client.call(&Request::Ping).await? {
            Response::Pong { pid } => Ok(MonitorClient {
                pid: Some(pid),
                ..client
            }),
            other => Err(unexpected(other)),
        }
    }

    /// The monitor's pid, as it reported it.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` on a new connection and reads the first response; the
    /// connection is returned for requests answered more than once.
    async fn request(&self, req: &Request) -> Result<(Response, UnixStream), RuntimeError> {
        self.request_watched(req)
            .await
            .map(|(resp, stream, _)| (resp, stream))
    }

    /// [`Self::request`], with the monitor's liveness for the connection's
    /// later answers. The answer is awaited against the monitor's exit: a
    /// created container's init (a clone of the monitor, waiting for its
    /// start) holds copies of the monitor's sockets, so a killed monitor's
    /// socket still accepts and never answers, and its connections never
    /// end.
    async fn request_watched(
        &self,
        req: &Request,
    ) -> Result<(Response, UnixStream, Option<MonitorLife>), RuntimeError> {
        let unreachable = |source| RuntimeError::MonitorUnreachable {
            socket: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .map_err(unreachable)?;
        let life = MonitorLife::of(&stream, &self.socket).map_err(unreachable)?;
        let frame = encode_frame(req).map_err(RuntimeError::Protocol)?;
        let exchange = async {
            stream.write_all(&frame).await.map_err(FrameError::Io)?;
            read_response(&mut stream).await
        };
        let answer = match &life {
            // An answer already in wins over an exit right after it (the
            // monitor exits once it has answered Shutdown).
            Some(life) => tokio::select! {
                biased;
                answer = exchange => answer,
                () = life.exited() => Err(FrameError::Io(life.exit_error())),
            },
            None => exchange.await,
        };
        match answer {
            Ok(resp) => Ok((resp, stream, life)),
            Err(FrameError::Io(source)) => Err(unreachable(source)),
            Err(FrameError::Runtime(e)) => Err(e),
        }
    }

    async fn call(&self, req: &Request) -> Result<Response, RuntimeError> {
        self.request(req).await.map(|(resp, _)| resp)
    }

    /// Subscribes to the pod's container exits on a connection of its own.
    pub async fn watch_exits(&self) -> Result<ExitWatch, RuntimeError> {
        match self.request_watched(&Request::WatchExits).await? {
            (Response::Watching, stream, life) => Ok(ExitWatch { stream, life }),
            (other, _, _) => Err(unexpected(other)),
        }
    }

    async fn call_ok(&self, req: &Request) -> Result<(), RuntimeError> {
        match self.call(req).await? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Create the container (libcontainer build); returns the init's pid
    /// once built, or 0 when the request asked for the answer before the
    /// build (`build_after_answer`) and got it.
    pub async fn create(&self, req: CreateContainer) -> Result<u32, RuntimeError> {
        let early = req.build_after_answer;
        match self.call(&Request::Create(req)).await? {
            Response::Created { pid } => Ok(pid),
            Response::Accepted if early => Ok(0),
            other => Err(unexpected(other)),
        }
    }

    /// Start; fails (and the state says `StartError`) if the container's
    /// command cannot be executed.
    ///
    /// The answer: `Started` with the state right after the start; `NotCreated`
    /// with the state the container is in when it was not in the created
    /// state (nothing done); `Unknown` from a monitor older than the
    /// state-carrying answer, which started it and said only `Ok`.
    pub async fn start(&self, id: &str) -> Result<StartOutcome, RuntimeError> {
        match self
            .call(&Request::Start {
                id: id.into(),
                reply_state: true,
            })
            .await?
        {
            Response::Started(s) => Ok(StartOutcome::Started(s)),
            Response::State(s) => Ok(StartOutcome::NotCreated(s)),
            Response::Ok => Ok(StartOutcome::Unknown),
            other => Err(unexpected(other)),
        }
    }

    /// `signal` (SIGTERM when 0), then SIGKILL after `timeout`; returns once
    /// the container has exited.
    pub async fn stop(&self, id: &str, timeout: Duration, signal: i32) -> Result<(), RuntimeError> {
        self.call_ok(&Request::Stop {
            id: id.into(),
            timeout,
            signal,
        })
        .await
    }

    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.call_ok(&Request::Kill {
            id: id.into(),
            signal,
        })
        .await
    }

    /// Kill if running, remove libcontainer state and cgroups; idempotent.
    pub async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.call_ok(&Request::Delete { id: id.into() }).await
    }

    pub async fn state(&self, id: &str) -> Result<ContainerRuntimeState, RuntimeError> {
        match self.call(&Request::State { id: id.into() }).await? {
            Response::State(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Reopen the container's log file at its path (after kubelet renamed
    /// it); fails unless the container is running.
    pub async fn reopen_log(&self, id: &str) -> Result<(), RuntimeError> {
        self.call_ok(&Request::ReopenLog { id: id.into() }).await
    }

    pub async fn exec_sync(&self, id: &str, spec: ExecSpec) -> Result<ExecOutput, RuntimeError> {
        match self
            .call(&Request::ExecSync {
                id: id.into(),
                spec,
            })
            .await?
        {
            Response::Exec(out) => Ok(out),
            other => Err(unexpected(other)),
        }
    }

    /// Starts an interactive exec; its descriptors come back over the
    /// socket, and [`ExecExit::wait`] later gives the exit code.
    /// Attaches to a running container: its live stdout and stderr from now
    /// on, and its stdin when it has one and `stdin` is asked.
    pub async fn attach(&self, id: &str, stdin: bool) -> Result<ExecStdio, RuntimeError> {
        let req = Request::Attach {
            id: id.into(),
            stdin,
        };
        let socket = self.socket.clone();
        let FdAnswer {
            response: resp,
            fds,
            stream: _stream,
            ..
        } = tokio::task::spawn_blocking(move || call_receiving_fds(&socket, &req))
            .await
            .map_err(|e| RuntimeError::Protocol(format!("attach task failed: {e}")))??;
        let (tty, with_stdin) = match resp {
            Response::Streams { tty, stdin, .. } => (tty, stdin),
            Response::Error(e) => return Err(RuntimeError::from_wire(e)),
            other => return Err(unexpected(other)),
        };
        stdio_from_fds(fds, tty, with_stdin)
    }

    pub async fn exec_stream(
        &self,
        id: &str,
        spec: ExecSpec,
        stdin: bool,
        tty: bool,
    ) -> Result<(ExecStdio, ExecExit), RuntimeError> {
        let req = Request::ExecStream {
            id: id.into(),
            spec,
            stdin,
            tty,
        };
        let socket = self.socket.clone();
        let FdAnswer {
            response: resp,
            fds,
            stream,
            life,
        } = tokio::task::spawn_blocking(move || call_receiving_fds(&socket, &req))
            .await
            .map_err(|e| RuntimeError::Protocol(format!("exec task failed: {e}")))??;
        let (tty, want_stdin) = match resp {
            Response::Streams { tty, stdin, .. } => (tty, stdin),
            Response::Error(e) => return Err(RuntimeError::from_wire(e)),
            other => return Err(unexpected(other)),
        };
        let stdio = stdio_from_fds(fds, tty, want_stdin)?;
        stream
            .set_nonblocking(true)
            .map_err(|e| RuntimeError::io("setting the exec connection non-blocking", e))?;
        let stream = UnixStream::from_std(stream)
            .map_err(|e| RuntimeError::io("registering the exec connection", e))?;
        let life = life
            .map(|(fd, pid)| MonitorLife::register(fd, pid))
            .transpose()
            .map_err(|e| RuntimeError::io("watching the monitor during the exec", e))?;
        Ok((stdio, ExecExit { stream, life }))
    }

    /// Pod removal: the monitor deletes what is left, unpins the pod's
    /// namespaces, removes its socket and exits.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        self.call_ok(&Request::Shutdown).await?;
        if let Some(pidfd) = self.exit.lock().await.take() {
            wait_pidfd(pidfd, Duration::from_secs(10)).await;
        }
        Ok(())
    }
}

/// What a monitor answered to a start (see [`MonitorClient::start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    Started(ContainerRuntimeState),
    NotCreated(ContainerRuntimeState),
    Unknown,
}

/// The descriptors of an interactive exec: the terminal's master side
/// (with a tty: read = output, write = input, ioctl = resize), or pipes.
#[derive(Debug)]
pub struct ExecStdio {
    pub terminal: Option<std::os::fd::OwnedFd>,
    pub stdin: Option<std::os::fd::OwnedFd>,
    pub stdout: Option<std::os::fd::OwnedFd>,
    pub stderr: Option<std::os::fd::OwnedFd>,
}

/// The pending end of an interactive exec.
#[derive(Debug)]
pub struct ExecExit {
    stream: UnixStream,
    life: Option<MonitorLife>,
}

impl ExecExit {
    /// Waits for the process to end; returns its exit code (128 + signal
    /// when killed), or an error once the monitor has exited.
    pub async fn wait(mut self) -> Result<i32, RuntimeError> {
        let mut len = [0u8; 4];
        let lost = |e| RuntimeError::io("waiting for the exec to end", e);
        match &self.life {
            Some(life) => tokio::select! {
                biased;
                read = self.stream.read_exact(&mut len) => read.map(|_| ()),
                () = life.exited() => Err(life.exit_error()),
            },
            None => self.stream.read_exact(&mut len).await.map(|_| ()),
        }
        .map_err(lost)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME_LEN {
            return Err(RuntimeError::Protocol(format!(
                "response of {len} bytes exceeds the frame limit"
            )));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await.map_err(lost)?;
        match serde_json::from_slice::<Response>(&body) {
            Ok(Response::Exec(out)) => Ok(out.exit_code),
            Ok(Response::Error(e)) => Err(RuntimeError::from_wire(e)),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(RuntimeError::Protocol(format!(
                "malformed response from the monitor: {e}"
            ))),
        }
    }
}

/// The answer of [`call_receiving_fds`]: the response, the descriptors it
/// carried, the connection (for answers still to come) and the monitor's
/// pidfd and pid when the kernel gives them.
struct FdAnswer {
    response: Response,
    fds: Vec<OwnedFd>,
    stream: std::os::unix::net::UnixStream,
    life: Option<(OwnedFd, i32)>,
}

/// Blocking request whose response frame may carry descriptors
/// (SCM_RIGHTS arrive with the frame's first bytes).
fn call_receiving_fds(socket: &Path, req: &Request) -> Result<FdAnswer, RuntimeError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let unreachable = |source| RuntimeError::MonitorUnreachable {
        socket: socket.to_path_buf(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(unreachable)?;
    let life = peer_monitor(&stream, socket).map_err(unreachable)?;
    let frame = encode_frame(req).map_err(RuntimeError::Protocol)?;
    stream.write_all(&frame).map_err(unreachable)?;
    if let Some((pidfd, pid)) = &life {
        wait_answer_or_exit(&stream, pidfd, *pid).map_err(unreachable)?;
    }
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut fds = Vec::new();
    let n = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| unreachable(e.into()))?;
        for c in msg.cmsgs().map_err(|e| unreachable(e.into()))? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just installed these descriptors.
                    fds.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        msg.bytes
    };
    let mut got = buf[..n].to_vec();
    while got.len() < 4 {
        let mut b = [0u8; 4];
        let k = stream.read(&mut b).map_err(unreachable)?;
        if k == 0 {
            return Err(RuntimeError::Protocol(
                "the monitor closed the connection".into(),
            ));
        }
        got.extend_from_slice(&b[..k]);
    }
    let len = u32::from_be_bytes([got[0], got[1], got[2], got[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(RuntimeError::Protocol(format!(
            "response of {len} bytes exceeds the frame limit"
        )));
    }
    if got.len() < 4 + len {
        let mut rest = vec![0u8; 4 + len - got.len()];
        stream.read_exact(&mut rest).map_err(unreachable)?;
        got.extend_from_slice(&rest);
    }
    let resp: Response = serde_json::from_slice(&got[4..4 + len])
        .map_err(|e| RuntimeError::Protocol(format!("malformed response from the monitor: {e}")))?;
    Ok(FdAnswer {
        response: resp,
        fds,
        stream,
        life,
    })
}

/// Blocks until the answer can be read from `stream` or the monitor
/// behind `pidfd` has exited (then an error naming it): a dead monitor's
/// socket may be held open by a created container's init and never answer.
fn wait_answer_or_exit(
    stream: &std::os::unix::net::UnixStream,
    pidfd: &OwnedFd,
    pid: i32,
) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        // The answer first: a monitor may answer and exit right after.
        if fds[0].any().unwrap_or(false) {
            return Ok(());
        }
        if fds[1].any().unwrap_or(false) {
            return Err(monitor_exited(pid));
        }
    }
}

/// A subscription to one monitor's container exits (see
/// [`MonitorClient::watch_exits`]).
#[derive(Debug)]
pub struct ExitWatch {
    stream: UnixStream,
    life: Option<MonitorLife>,
}

impl ExitWatch {
    /// The next exit as (container id, exit code); `None` once the monitor
    /// is gone (pod stopped, or the monitor was killed: its exit ends the
    /// watch even while a created container's init keeps the connection
    /// open).
    pub async fn next(&mut self) -> Option<(String, i32)> {
        loop {
            let frame = match &self.life {
                Some(life) => tokio::select! {
                    biased;
                    frame = read_response(&mut self.stream) => frame,
                    () = life.exited() => return None,
                },
                None => read_response(&mut self.stream).await,
            };
            match frame {
                Ok(Response::Exited { id, exit_code }) => return Some((id, exit_code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// The monitor behind one connection, as a pidfd that polls readable once
/// it has exited. Its pid is the socket's peer (the process that listens:
/// the monitor itself), checked against the monitor's command line, which
/// names its pod directory, so a reused pid is not taken for it.
#[derive(Debug)]
struct MonitorLife {
    pidfd: tokio::io::unix::AsyncFd<OwnedFd>,
    pid: i32,
}

impl MonitorLife {
    /// `Ok(None)` when the kernel cannot say (no peer pid, no pidfds):
    /// calls then wait as they did before pidfds.
    fn of(stream: &UnixStream, socket: &Path) -> std::io::Result<Option<MonitorLife>> {
        peer_monitor(stream, socket)?
            .map(|(fd, pid)| MonitorLife::register(fd, pid))
            .transpose()
    }

    fn register(pidfd: OwnedFd, pid: i32) -> std::io::Result<MonitorLife> {
        Ok(MonitorLife {
            pidfd: watch_pidfd(pidfd)?,
            pid,
        })
    }

    /// Returns once the monitor has exited.
    async fn exited(&self) {
        let _ = self.pidfd.readable().await;
    }

    fn exit_error(&self) -> std::io::Error {
        monitor_exited(self.pid)
    }
}

fn monitor_exited(pid: i32) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        format!("the pod's monitor (pid {pid}) has exited"),
    )
}

/// The monitor at the other end of `stream`, a connection to the monitor
/// socket `socket`: its pidfd and pid (see [`monitor_pidfd`]). `Ok(None)`
/// when the kernel cannot say (no peer credentials, no pidfds).
fn peer_monitor(
    stream: &impl std::os::fd::AsFd,
    socket: &Path,
) -> std::io::Result<Option<(OwnedFd, i32)>> {
    let Ok(cred) = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
    else {
        return Ok(None);
    };
    let pid = cred.pid();
    Ok(monitor_pidfd(pid, socket)?.map(|fd| (fd, pid)))
}

/// A pidfd of `pid`, the peer of a connection to the monitor socket
/// `socket`, once its command line shows it is that pod's monitor (a
/// reused pid is taken for an exited monitor). `Ok(None)` without pidfds.
fn monitor_pidfd(pid: i32, socket: &Path) -> std::io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open with a pid and no flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            // Gone: ESRCH, or EINVAL (Linux 6.1) for a pid whose process
            // was reaped while the socket still refers to it; the peer is
            // always a thread-group leader and the flags are none.
            Some(libc::ESRCH) | Some(libc::EINVAL) => Err(monitor_exited(pid)),
            _ => Ok(None),
        };
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let pod_dir = socket.parent().unwrap_or(socket);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let names_pod = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == pod_dir.as_os_str().as_encoded_bytes());
    if !names_pod {
        return Err(monitor_exited(pid));
    }
    Ok(Some(pidfd))
}

enum FrameError {
    Io(std::io::Error),
    Runtime(RuntimeError),
}

/// Reads one response frame; a monitor-side error becomes `Runtime`.
async fn read_response(stream: &mut UnixStream) -> Result<Response, FrameError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(FrameError::Io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::Runtime(RuntimeError::Protocol(format!(
            "response of {len} bytes exceeds the frame limit"
        ))));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(FrameError::Io)?;
    let resp: Response = serde_json::from_slice(&body).map_err(|e| {
        FrameError::Runtime(RuntimeError::Protocol(format!(
            "malformed response from the monitor: {e}"
        )))
    })?;
    match resp {
        Response::Error(e) => Err(FrameError::Runtime(RuntimeError::from_wire(e))),
        other => Ok(other),
    }
}

fn unexpected(resp: Response) -> RuntimeError {
    RuntimeError::Protocol(format!("unexpected response {resp:?}"))
}

/// The descriptors of a `Streams` reply in the order the monitor sends
/// them: the terminal alone, or [stdin], stdout, stderr.
fn stdio_from_fds(
    fds: Vec<std::os::fd::OwnedFd>,
    tty: bool,
    with_stdin: bool,
) -> Result<ExecStdio, RuntimeError> {
    let mut fds = fds.into_iter();
    let mut next = |what: &str| {
        fds.next()
            .ok_or_else(|| RuntimeError::Protocol(format!("the monitor sent no {what} descriptor")))
    };
    if tty {
        let terminal = Some(next("terminal")?);
        return Ok(ExecStdio {
            terminal,
            stdin: None,
            // Attach to a tty container: its output, fanned out by the monitor.
            stdout: fds.next(),
            stderr: None,
        });
    }
    Ok(ExecStdio {
        terminal: None,
        stdin: if with_stdin {
            Some(next("stdin")?)
        } else {
            None
        },
        stdout: Some(next("stdout")?),
        stderr: Some(next("stderr")?),
    })
}
