//! The streaming server behind the CRI Exec, Attach and PortForward RPCs.
//!
//! The CRI RPCs do not stream themselves: they return a URL on this server
//! (kubelet's `k8s.io/kubelet/pkg/cri/streaming` protocol, also used by
//! containerd and CRI-O), and kubelet or crictl then connect to it with
//! SPDY/3.1 (their default) or WebSocket. The URL holds a single-use token
//! that maps back to the CRI request, valid for one minute.
//!
//! Layout: `token` (the request cache), `session` (what exec, attach and
//! port forward do with their streams, transport-free), `spdy` (framing,
//! header compression, connection), `spdy_transport` and `ws` (how each
//! transport finds a session's streams), `server` (HTTP routing and upgrade), `http` (the plain answers both
//! upgrade paths give).

mod http;
pub mod server;
pub mod session;
pub mod spdy;
pub mod spdy_transport;
pub mod token;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

pub use server::{StreamConfig, StreamServer};

/// A terminal size, as carried by the resize stream and channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// The streams handed to a backend for exec or attach.
///
/// Writers are closed (EOF to the client) when the backend drops them;
/// `stdin` ends when the client closes it or goes away.
pub struct StreamIo {
    pub stdin: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    /// `None` when `tty`: a terminal has a single output stream.
    pub stderr: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    /// Terminal size changes, for `tty` sessions whose client sends them.
    pub resize: Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
}

/// What the streaming server needs from the runtime.
///
/// A call's future is dropped [`session::CLIENT_GONE_GRACE`] after its
/// client disconnects if it has not ended by then (a client leaving an
/// attach to a long-running container must not pin it forever), so
/// implementations release what they hold on drop.
#[async_trait::async_trait]
pub trait StreamBackend: Send + Sync + 'static {
    /// Runs cmd in the container with the given streams; returns the exit code.
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: StreamIo,
    ) -> Result<i32, String>;
    /// Attaches to the container's live stdio (held by the pod monitor)
    /// until it ends or the client leaves.
    async fn attach(&self, container_id: &str, tty: bool, io: StreamIo) -> Result<(), String>;
    /// Connects `stream` to `port` inside the pod's network namespace.
    async fn port_forward(
        &self,
        pod_id: &str,
        port: u16,
        stream: tokio::io::DuplexStream,
    ) -> Result<(), String>;
}

/// Errors of the streaming server's API (what the CRI handlers see).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "streaming server address {0} is not loopback; kubelet reaches it locally, so bind 127.0.0.1 or ::1, or set allow_non_loopback"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot bind the streaming server to {addr}: {source}; pick a free port")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid {rpc} request: {reason}")]
    InvalidRequest { rpc: &'static str, reason: String },
    #[error(
        "too many streaming requests in flight ({}); wait for some URLs to be used or to expire",
        token::MAX_IN_FLIGHT
    )]
    TooManyInFlight,
}

/// Shorthand used by the transports.
pub(crate) type Backend = Arc<dyn StreamBackend>;
