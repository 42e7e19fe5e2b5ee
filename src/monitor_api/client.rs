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
    // SAFETY: the AsyncFd owns the pidfd for as long as it is registered;
    // nothing else can close or replace the descriptor.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    };
    let Ok(fd) = registered else {
        return;
    };
    let _ = tokio::time::timeout(timeout, fd.readable()).await;
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
        let unreachable = |source| RuntimeError::MonitorUnreachable {
            socket: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .map_err(unreachable)?;
        let frame = encode_frame(req).map_err(RuntimeError::Protocol)?;
        stream.write_all(&frame).await.map_err(unreachable)?;
        match read_response(&mut stream).await {
            Ok(resp) => Ok((resp, stream)),
            Err(FrameError::Io(source)) => Err(unreachable(source)),
            Err(FrameError::Runtime(e)) => Err(e),
        }
    }

    async fn call(&self, req: &Request) -> Result<Response, RuntimeError> {
        self.request(req).await.map(|(resp, _)| resp)
    }

    /// Subscribes to the pod's container exits on a connection of its own.
    pub async fn watch_exits(&self) -> Result<ExitWatch, RuntimeError> {
        match self.request(&Request::WatchExits).await? {
            (Response::Watching, stream) => Ok(ExitWatch { stream }),
            (other, _) => Err(unexpected(other)),
        }
    }

    async fn call_ok(&self, req: &Request) -> Result<(), RuntimeError> {
        match self.call(req).await? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Create the container (libcontainer build); returns the init's pid.
    pub async fn create(&self, req: CreateContainer) -> Result<u32, RuntimeError> {
        match self.call(&Request::Create(req)).await? {
            Response::Created { pid } => Ok(pid),
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
        let (resp, fds, _stream) =
            tokio::task::spawn_blocking(move || call_receiving_fds(&socket, &req))
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
        let (resp, fds, stream) =
            tokio::task::spawn_blocking(move || call_receiving_fds(&socket, &req))
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
        Ok((stdio, ExecExit { stream }))
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
}

impl ExecExit {
    /// Waits for the process to end; returns its exit code (128 + signal
    /// when killed).
    pub async fn wait(mut self) -> Result<i32, RuntimeError> {
        let mut len = [0u8; 4];
        let lost = |e| RuntimeError::io("waiting for the exec to end", e);
        self.stream.read_exact(&mut len).await.map_err(lost)?;
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

/// Blocking request whose response frame may carry descriptors
/// (SCM_RIGHTS arrive with the frame's first bytes).
fn call_receiving_fds(
    socket: &Path,
    req: &Request,
) -> Result<
    (
        Response,
        Vec<std::os::fd::OwnedFd>,
        std::os::unix::net::UnixStream,
    ),
    RuntimeError,
> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let unreachable = |source| RuntimeError::MonitorUnreachable {
        socket: socket.to_path_buf(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(unreachable)?;
    let frame = encode_frame(req).map_err(RuntimeError::Protocol)?;
    stream.write_all(&frame).map_err(unreachable)?;
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
    Ok((resp, fds, stream))
}

/// A subscription to one monitor's container exits (see
/// [`MonitorClient::watch_exits`]).
#[derive(Debug)]
pub struct ExitWatch {
    stream: UnixStream,
}

impl ExitWatch {
    /// The next exit as (container id, exit code); `None` once the monitor
    /// is gone (pod stopped, or the monitor was killed).
    pub async fn next(&mut self) -> Option<(String, i32)> {
        loop {
            match read_response(&mut self.stream).await {
                Ok(Response::Exited { id, exit_code }) => return Some((id, exit_code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
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
