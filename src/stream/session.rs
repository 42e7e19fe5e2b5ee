//! Transport-independent session logic of exec, attach and port forward:
//! which streams a request needs, how the exit status is reported, how
//! resize events are decoded. SPDY and WebSocket both end up here.

use std::sync::Arc;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{StreamBackend, StreamIo, TerminalSize};

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// How the exit status travels on the error stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// channel.k8s.io, v2, v3: nothing on success, the error text on failure.
    Text,
    /// v4 and v5: a JSON `metav1.Status`, also on success, so the client can
    /// read the exit code.
    Json,
}

/// remotecommand protocol versions (k8s.io/apimachinery/pkg/util/remotecommand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandProtocol {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl CommandProtocol {
    /// Protocol names in kubelet's order of preference.
    pub const SPDY_NAMES: [&'static str; 5] = [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ];

    pub fn from_name(name: &str) -> Option<CommandProtocol> {
        match name {
            "v5.channel.k8s.io" => Some(CommandProtocol::V5),
            "v4.channel.k8s.io" | "v4.base64.channel.k8s.io" => Some(CommandProtocol::V4),
            "v3.channel.k8s.io" => Some(CommandProtocol::V3),
            "v2.channel.k8s.io" => Some(CommandProtocol::V2),
            // An empty name is a client that did not negotiate: kubelet falls
            // back to the first protocol.
            "channel.k8s.io" | "base64.channel.k8s.io" | "" => Some(CommandProtocol::V1),
            _ => None,
        }
    }

    pub fn status_format(self) -> StatusFormat {
        match self {
            CommandProtocol::V4 | CommandProtocol::V5 => StatusFormat::Json,
            _ => StatusFormat::Text,
        }
    }

    /// Resize streams exist from v3 on.
    pub fn supports_resize(self) -> bool {
        matches!(
            self,
            CommandProtocol::V3 | CommandProtocol::V4 | CommandProtocol::V5
        )
    }
}

/// Picks the first protocol the client offers that the server supports, as
/// `httpstream.Handshake` does. `None` when there is no overlap.
pub fn negotiate<'a>(client: &[&'a str], server: &[&str]) -> Option<&'a str> {
    client.iter().copied().find(|c| server.contains(c))
}

/// What a remotecommand session runs.
#[derive(Debug, Clone)]
pub enum CommandKind {
    Exec { cmd: Vec<String> },
    Attach,
}

/// The parts of an ExecRequest / AttachRequest the session needs.
#[derive(Debug, Clone)]
pub struct CommandTarget {
    pub container_id: String,
    pub kind: CommandKind,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl CommandTarget {
    /// Number of streams the client must open before the command starts
    /// (kubelet's `createHTTPStreamStreams`): error, one per requested std
    /// stream, and resize for a tty on protocols that have it.
    pub fn expected_streams(&self, protocol: CommandProtocol) -> usize {
        1 + usize::from(self.stdin)
            + usize::from(self.stdout)
            + usize::from(self.stderr && !self.tty)
            + usize::from(self.tty && protocol.supports_resize())
    }
}

/// The transport's streams of one remotecommand session.
#[derive(Default)]
pub struct CommandStreams {
    pub stdin: Option<BoxRead>,
    pub stdout: Option<BoxWrite>,
    pub stderr: Option<BoxWrite>,
    pub error: Option<BoxWrite>,
    pub resize: Option<BoxRead>,
}

/// Outcome of a session, rendered on the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Success,
    ExitCode { cmd: Vec<String>, code: i32 },
    Failed(String),
}

impl CommandOutcome {
    /// The bytes for the error stream, `None` when nothing is written.
    pub fn render(&self, format: StatusFormat) -> Option<Vec<u8>> {
        let value = match self {
            CommandOutcome::Success => {
                if format == StatusFormat::Text {
                    return None;
                }
                serde_json::json!({"metadata": {}, "status": "Success"})
            }
            CommandOutcome::ExitCode { cmd, code } => {
                // The wording of containerd's exec error, which kubectl shows.
                let message = format!(
                    "command terminated with non-zero exit code: error executing command {}, exit code {code}",
                    go_list(cmd)
                );
                if format == StatusFormat::Text {
                    return Some(message.into_bytes());
                }
                serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": message,
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                })
            }
            CommandOutcome::Failed(error) => {
                let message = format!("Internal error occurred: {error}");
                if format == StatusFormat::Text {
                    return Some(message.into_bytes());
                }
                serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": message,
                    "reason": "InternalError",
                    "details": {"causes": [{"message": error}]},
                    "code": 500,
                })
            }
        };
        Some(value.to_string().into_bytes())
    }
}

/// Formats a command like Go's `%v` of a `[]string`: `[sh -c exit 3]`.
fn go_list(cmd: &[String]) -> String {
    format!("[{}]", cmd.join(" "))
}

#[derive(Deserialize)]
struct WireSize {
    // Go's encoding/json matches field names case-insensitively; kubectl
    // sends "Width"/"Height".
    #[serde(alias = "width")]
    #[serde(rename = "Width")]
    width: u16,
    #[serde(alias = "height")]
    #[serde(rename = "Height")]
    height: u16,
}

/// Incremental decoder of the resize stream: a sequence of JSON objects
/// `{"Width":80,"Height":24}` that may arrive split across frames.
#[derive(Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

/// A resize stream that does not hold JSON sizes.
#[derive(Debug, thiserror::Error)]
#[error("resize stream holds invalid JSON: {0}")]
pub struct ResizeError(String);

impl ResizeDecoder {
    const MAX_PENDING: usize = 4096;

    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<TerminalSize>, ResizeError> {
        self.pending.extend_from_slice(bytes);
        let mut sizes = Vec::new();
        let mut iter = serde_json::Deserializer::from_slice(&self.pending).into_iter::<WireSize>();
        let mut used = 0;
        loop {
            match iter.next() {
                Some(Ok(size)) => {
                    used = iter.byte_offset();
                    sizes.push(TerminalSize {
                        width: size.width,
                        height: size.height,
                    });
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(ResizeError(e.to_string())),
                None => {
                    used = self.pending.len();
                    break;
                }
            }
        }
        self.pending.drain(..used);
        if self.pending.len() > Self::MAX_PENDING {
            return Err(ResizeError("object larger than 4 KiB".into()));
        }
        Ok(sizes)
    }
}

/// Reads resize events until the stream ends or the receiver goes away.
async fn forward_resizes(
    mut stream: BoxRead,
    tx: mpsc::Sender<TerminalSize>,
    container_id: String,
) {
    let mut decoder = ResizeDecoder::default();
    let mut chunk = [0u8; 512];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match decoder.push(&chunk[..n]) {
            Ok(sizes) => {
                for size in sizes {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(container_id = %container_id, error = %e, "ignoring the rest of the resize stream");
                return;
            }
        }
    }
}

/// Runs one exec or attach session on `streams` and reports its outcome on
/// the error stream, which is then closed.
pub async fn run_command(
    backend: Arc<dyn StreamBackend>,
    target: CommandTarget,
    mut streams: CommandStreams,
    format: StatusFormat,
) {
    let resize = match streams.resize.take() {
        Some(stream) if target.tty => {
            let (tx, rx) = mpsc::channel(8);
            tokio::spawn(forward_resizes(stream, tx, target.container_id.clone()));
            Some(rx)
        }
        _ => None,
    };
    let io = StreamIo {
        stdin: if target.stdin {
            streams.stdin.take()
        } else {
            None
        },
        stdout: if target.stdout {
            streams.stdout.take()
        } else {
            None
        },
        stderr: if target.stderr && !target.tty {
            streams.stderr.take()
        } else {
            None
        },
        resize,
    };
    tracing::info!(container_id = %target.container_id, kind = ?target.kind, tty = target.tty, "stream session started");
    let outcome = match &target.kind {
        CommandKind::Exec { cmd } => {
            match backend
                .exec(&target.container_id, cmd.clone(), target.tty, io)
                .await
            {
                Ok(0) => CommandOutcome::Success,
                Ok(code) => CommandOutcome::ExitCode {
                    cmd: cmd.clone(),
                    code,
                },
                Err(e) => CommandOutcome::Failed(format!(
                    "error executing command in container {}: {e}",
                    target.container_id
                )),
            }
        }
        CommandKind::Attach => match backend.attach(&target.container_id, target.tty, io).await {
            Ok(()) => CommandOutcome::Success,
            Err(e) => CommandOutcome::Failed(format!(
                "error attaching to container {}: {e}",
                target.container_id
            )),
        },
    };
    tracing::info!(container_id = %target.container_id, outcome = ?outcome, "stream session ended");
    if let Some(mut error) = streams.error.take() {
        if let Some(bytes) = outcome.render(format) {
            let _ = error.write_all(&bytes).await;
        }
        let _ = error.shutdown().await;
    }
    for mut w in [streams.stdout.take(), streams.stderr.take()]
        .into_iter()
        .flatten()
    {
        let _ = w.shutdown().await;
    }
}

/// How long a session may go on after its client disconnected, to finish on
/// its own (stdin EOF, failed writes) before it is dropped.
pub const CLIENT_GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `session` until it ends, or until [`CLIENT_GONE_GRACE`] after
/// `gone` resolves; then the session (and the backend call in it) is
/// dropped, so an attach whose client left does not run forever.
pub async fn until_client_gone(
    session: impl std::future::Future<Output = ()>,
    gone: impl std::future::Future<Output = ()>,
    container_id: &str,
) {
    let gone_then_grace = async {
        gone.await;
        tokio::time::sleep(CLIENT_GONE_GRACE).await;
    };
    tokio::select! {
        _ = session => {}
        _ = gone_then_grace => {
            tracing::warn!(container_id = %container_id, "client disconnected; ending the session");
        }
    }
}

/// Connects one forwarded connection: client bytes on `data_in`/`data_out`,
/// the backend on the other end of an in-memory pipe; a backend error is
/// written on `error` as kubelet words it.
pub async fn forward_port(
    backend: Arc<dyn StreamBackend>,
    pod_id: String,
    port: u16,
    mut data_in: BoxRead,
    mut data_out: BoxWrite,
    mut error: BoxWrite,
) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut our_read, mut our_write) = tokio::io::split(ours);
    let inbound = async {
        let _ = tokio::io::copy(&mut data_in, &mut our_write).await;
        let _ = our_write.shutdown().await;
    };
    let outbound = async {
        let _ = tokio::io::copy(&mut our_read, &mut data_out).await;
        let _ = data_out.shutdown().await;
    };
    let copy = async {
        tokio::pin!(inbound);
        tokio::pin!(outbound);
        let mut inbound_done = false;
        loop {
            tokio::select! {
                _ = &mut inbound, if !inbound_done => inbound_done = true,
                _ = &mut outbound => break,
            }
        }
    };
    tracing::info!(pod_id = %pod_id, port, "port forward started");
    let (result, ()) = tokio::join!(backend.port_forward(&pod_id, port, theirs), copy);
    if let Err(e) = result {
        tracing::warn!(pod_id = %pod_id, port, error = %e, "port forward failed");
        let message = format!("error forwarding port {port} to pod {pod_id}, uid : {e}");
        let _ = error.write_all(message.as_bytes()).await;
    } else {
        tracing::info!(pod_id = %pod_id, port, "port forward ended");
    }
    let _ = error.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_kubelet() {
        assert_eq!(
            CommandOutcome::Success.render(StatusFormat::Json).unwrap(),
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(CommandOutcome::Success.render(StatusFormat::Text), None);
        let fail = CommandOutcome::ExitCode {
            cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
            code: 3,
        };
        let json: serde_json::Value =
            serde_json::from_slice(&fail.render(StatusFormat::Json).unwrap()).unwrap();
        assert_eq!(json["status"], "Failure");
        assert_eq!(json["reason"], "NonZeroExitCode");
        assert_eq!(json["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(json["details"]["causes"][0]["message"], "3");
        assert_eq!(
            json["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
    }

    #[test]
    fn resize_objects_split_across_reads() {
        let mut d = ResizeDecoder::default();
        assert!(d.push(br#"{"Width":80,"#).unwrap().is_empty());
        let sizes = d.push(br#""Height":24}{"width":100,"height":50}"#).unwrap();
        assert_eq!(
            sizes,
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert!(d.push(b"nonsense").is_err());
    }

    #[test]
    fn negotiation_prefers_client_order() {
        let server = CommandProtocol::SPDY_NAMES;
        assert_eq!(
            negotiate(&["v4.channel.k8s.io", "v3.channel.k8s.io"], &server),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(&["v9.channel.k8s.io"], &server), None);
    }

    #[test]
    fn expected_streams_per_protocol() {
        let t = CommandTarget {
            container_id: "c".into(),
            kind: CommandKind::Attach,
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        };
        assert_eq!(t.expected_streams(CommandProtocol::V4), 4);
        assert_eq!(t.expected_streams(CommandProtocol::V2), 3);
    }
}
