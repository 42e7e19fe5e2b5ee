//! The runtime side of the streaming server (`stream::StreamBackend`):
//! interactive exec through the pod monitor, and port forwarding into the
//! pod's network namespace.

use crate::state::{ContainerOp, PodOp};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::monitor_api::ExecStdio;
use crate::node::{Node, NodeError};
use crate::stream::{StreamBackend, StreamIo, TerminalSize};

/// After the exec'd process ended, how long its output may keep flowing
/// (a background child can hold the pipes open) before the session ends.
const OUTPUT_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Streams for exec and port forward, backed by the node's pods.
pub struct NodeStreams {
    node: Arc<Node>,
}

impl NodeStreams {
    pub fn new(node: Arc<Node>) -> NodeStreams {
        NodeStreams { node }
    }
}

fn nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A read end for tokio. A pty master is no FIFO, hence `unchecked`; epoll
/// works on it all the same.
fn reader(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    nonblocking(&fd)?;
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

fn writer(fd: OwnedFd) -> std::io::Result<pipe::Sender> {
    nonblocking(&fd)?;
    pipe::Sender::from_owned_fd_unchecked(fd)
}

/// Copies until EOF or an error: a pty master reads EIO once the last
/// slave descriptor is closed, which is its end of file.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let _ = to.flush().await;
            }
        }
    }
    let _ = to.shutdown().await;
}

fn set_window(fd: &OwnedFd, size: TerminalSize) {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize on the terminal master.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

type Tasks = Vec<tokio::task::JoinHandle<()>>;

/// Wires the exec's descriptors to the client's streams; returns the
/// tasks copying the output (awaited after the exit) and the one copying
/// input (aborted then).
fn wire(stdio: ExecStdio, io: StreamIo) -> std::io::Result<(Tasks, Tasks)> {
    let mut outputs = Vec::new();
    let mut inputs = Vec::new();
    let StreamIo {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    if let Some(master) = stdio.terminal {
        let control = master.try_clone()?;
        let input = master.try_clone()?;
        if let Some(mut resize) = resize {
            inputs.push(tokio::spawn(async move {
                while let Some(size) = resize.recv().await {
                    set_window(&control, size);
                }
            }));
        }
        if let Some(stdin) = stdin {
            let to = writer(input)?;
            inputs.push(tokio::spawn(async move {
                let mut to = to;
                let mut from = stdin;
                let mut buf = vec![0u8; 32 << 10];
                // A terminal has no end of input of its own: the client
                // closing stdin leaves the process running, as kubectl does.
                while let Ok(n) = from.read(&mut buf).await {
                    if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }));
        }
        // Exec reads the master itself; attach gets the monitor's copy of
        // the container's output (the master's one reader is the log).
        let from = match stdio.stdout {
            Some(fd) => reader(fd)?,
            None => reader(master)?,
        };
        if let Some(out) = stdout {
            outputs.push(tokio::spawn(pump(from, out)));
        }
        return Ok((outputs, inputs));
    }
    if let (Some(fd), Some(stdin)) = (stdio.stdin, stdin) {
        let to = writer(fd)?;
        inputs.push(tokio::spawn(pump(stdin, to)));
    }
    for (fd, client) in [(stdio.stdout, stdout), (stdio.stderr, stderr)] {
        if let Some(fd) = fd {
            let from = reader(fd)?;
            match client {
                Some(out) => outputs.push(tokio::spawn(pump(from, out))),
                None => outputs.push(tokio::spawn(pump(from, tokio::io::sink()))),
            }
        }
    }
    Ok((outputs, inputs))
}

impl Node {
    /// The container, if it exists and its state allows `op` (Exec and
    /// Attach need a live process).
    pub async fn running_container(
        &self,
        id: &str,
        op: ContainerOp,
    ) -> Result<crate::container::ContainerRecord, NodeError> {
        let record = self.container_status(id).await?;
        record.check(op)?;
        Ok(record)
    }

    /// The pod, if it exists and is ready (its network namespace is up).
    pub fn ready_pod(&self, id: &str) -> Result<crate::pod::PodSandbox, NodeError> {
        let pod = self.pod(id)?;
        pod.check(PodOp::PortForward)?;
        Ok(pod)
    }
}

#[async_trait::async_trait]
impl StreamBackend for NodeStreams {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: StreamIo,
    ) -> Result<i32, String> {
        let (monitor, id, spec) = self
            .node
            .exec_target(container_id, cmd)
            .await
            .map_err(|e| e.to_string())?;
        let (stdio, exit) = monitor
            .exec_stream(&id, spec, io.stdin.is_some(), tty)
            .await
            .map_err(|e| e.to_string())?;
        let (outputs, inputs) = wire(stdio, io)
            .map_err(|e| format!("cannot relay the exec's streams of container {id}: {e}"))?;
        let code = exit.wait().await.map_err(|e| e.to_string());
        let drained = async {
            for t in outputs {
                let _ = t.await;
            }
        };
        let _ = tokio::time::timeout(OUTPUT_DRAIN_GRACE, drained).await;
        for t in inputs {
            t.abort();
        }
        code
    }

    async fn attach(&self, container_id: &str, _tty: bool, io: StreamIo) -> Result<(), String> {
        let record = self
            .node
            .running_container(container_id, ContainerOp::Attach)
            .await
            .map_err(|e| e.to_string())?;
        let pod = self.node.pod(&record.pod_id).map_err(|e| e.to_string())?;
        let monitor = self.node.monitor(&pod).await.map_err(|e| e.to_string())?;
        let stdio = monitor
            .attach(&record.id, io.stdin.is_some())
            .await
            .map_err(|e| e.to_string())?;
        let (outputs, inputs) = wire(stdio, io)
            .map_err(|e| format!("cannot relay the streams of container {}: {e}", record.id))?;
        // Output ends when the container exits (the monitor closes the
        // pipes) or the client leaves (the stream server drops this future).
        for t in outputs {
            let _ = t.await;
        }
        for t in inputs {
            t.abort();
        }
        Ok(())
    }

    async fn port_forward(
        &self,
        pod_id: &str,
        port: u16,
        mut stream: tokio::io::DuplexStream,
    ) -> Result<(), String> {
        let pod = self.node.ready_pod(pod_id).map_err(|e| e.to_string())?;
        let netns = pod.network_pin();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // setns changes the calling thread only, and a socket stays in the
        // namespace it was created in: a thread of its own makes the
        // connection, so no tokio worker ever changes namespace.
        std::thread::Builder::new()
            .name("capcri-portfwd".into())
            .spawn(move || {
                let _ = tx.send(connect_in(netns.as_deref(), port));
            })
            .map_err(|e| format!("cannot start the port-forward thread: {e}"))?;
        let conn = rx
            .await
            .map_err(|_| "the port-forward thread died".to_string())?
            .map_err(|e| format!("cannot connect to port {port} in pod {pod_id}: {e}"))?;
        conn.set_nonblocking(true)
            .map_err(|e| format!("port forward to pod {pod_id}: {e}"))?;
        let mut conn = tokio::net::TcpStream::from_std(conn)
            .map_err(|e| format!("port forward to pod {pod_id}: {e}"))?;
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut conn).await;
        Ok(())
    }
}

fn connect_in(netns: Option<&std::path::Path>, port: u16) -> std::io::Result<std::net::TcpStream> {
    if let Some(path) = netns {
        let ns = std::fs::File::open(path)?;
        // SAFETY: setns of this thread into a network namespace file.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )
}
