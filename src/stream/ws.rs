//! WebSocket transport (kubelet's `wsstream`): one message per write, its
//! first byte the channel number. remotecommand: 0 stdin, 1 stdout,
//! 2 stderr, 3 error, 4 resize; v5 adds 255 = "close the channel in the next
//! byte". portforward: per requested port a data channel 2i and an error
//! channel 2i+1, each opened by the port as 2 bytes little endian.
//! The `base64.` subprotocols (for browsers) send text messages instead:
//! the channel as an ASCII digit, then the payload in standard base64.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::PortForwardRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::Backend;
use super::http::{HttpResponse, header_list, plain};
use super::session::{self, CommandProtocol, CommandStreams, CommandTarget};

const PIPE: usize = 64 * 1024;
/// remotecommand subprotocols offered, in preference order; "" is a client
/// that names none (binary channel.k8s.io).
const COMMAND_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
const PORT_FORWARD_PROTOCOLS: [&str; 5] = [
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "portforward.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
const CLOSE_CHANNEL: u8 = 255;

/// `Upgrade: websocket` plus a `Connection` header naming upgrade.
pub fn is_websocket(req: &Request<Incoming>) -> bool {
    let upgrade = header_list(req, "upgrade")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = header_list(req, "connection")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

/// How channel messages are framed on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelCodec {
    Binary,
    Base64,
}

impl ChannelCodec {
    pub fn for_protocol(protocol: &str) -> ChannelCodec {
        if protocol.contains("base64.") {
            ChannelCodec::Base64
        } else {
            ChannelCodec::Binary
        }
    }

    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            ChannelCodec::Binary => {
                let mut frame = Vec::with_capacity(data.len() + 1);
                frame.push(channel);
                frame.extend_from_slice(data);
                Message::Binary(Bytes::from(frame))
            }
            ChannelCodec::Base64 => {
                let mut text = String::with_capacity(data.len() * 4 / 3 + 5);
                text.push(char::from(b'0'.wrapping_add(channel)));
                text.push_str(&BASE64.encode(data));
                Message::Text(text.into())
            }
        }
    }

    /// Channel and payload of a client message; `None` for messages that
    /// carry no channel data (pings, empty or undecodable messages).
    pub fn decode(self, msg: &Message) -> Option<(u8, Vec<u8>)> {
        match (self, msg) {
            (ChannelCodec::Binary, Message::Binary(data)) => {
                let (&channel, payload) = data.split_first()?;
                Some((channel, payload.to_vec()))
            }
            (ChannelCodec::Base64, Message::Text(text)) => {
                let bytes = text.as_bytes();
                let (&digit, payload) = bytes.split_first()?;
                let channel = digit.checked_sub(b'0')?;
                Some((channel, BASE64.decode(payload).ok()?))
            }
            _ => None,
        }
    }
}

fn reject(status: StatusCode, message: impl Into<String>) -> Box<HttpResponse> {
    Box::new(plain(status, message))
}

/// Validates the RFC 6455 handshake and picks a subprotocol; on success
/// returns the 101 response, the chosen protocol and the upgrade future.
fn upgrade(
    mut req: Request<Incoming>,
    supported: &[&str],
) -> Result<(HttpResponse, String, hyper::upgrade::OnUpgrade), Box<HttpResponse>> {
    let key = match req.headers().get("sec-websocket-key") {
        Some(k) => k.as_bytes().to_vec(),
        None => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "missing Sec-WebSocket-Key\n",
            ));
        }
    };
    let version_ok = header_list(&req, "sec-websocket-version")
        .iter()
        .any(|v| v == "13");
    if !version_ok {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "only WebSocket version 13 is supported\n",
        ));
    }
    let offered = header_list(&req, "sec-websocket-protocol");
    let chosen = if offered.is_empty() {
        String::new()
    } else {
        match offered.iter().find(|p| supported.contains(&p.as_str())) {
            Some(p) => p.clone(),
            None => {
                return Err(reject(
                    StatusCode::FORBIDDEN,
                    format!(
                        "requested protocol(s) are not supported: {offered:?}; supports {supported:?}\n"
                    ),
                ));
            }
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut resp: Response<Full<Bytes>> = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert("sec-websocket-accept", v);
    }
    if let Ok(v) = HeaderValue::from_str(&chosen)
        && !chosen.is_empty()
    {
        h.insert("sec-websocket-protocol", v);
    }
    Ok((resp, chosen, on_upgrade))
}

/// Channels of one multiplexed WebSocket: our write ends of input pipes,
/// our read ends of output pipes with the bytes that open each channel.
#[derive(Default)]
struct Channels {
    inputs: HashMap<u8, DuplexStream>,
    outputs: Vec<(u8, DuplexStream, Option<Vec<u8>>)>,
}

impl Channels {
    fn input(&mut self, channel: u8) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        self.inputs.insert(channel, ours);
        theirs
    }

    fn output(&mut self, channel: u8, opening: Option<Vec<u8>>) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        self.outputs.push((channel, ours, opening));
        theirs
    }
}

/// Moves bytes between the socket and the channels until every output
/// channel has ended, then closes the socket.
async fn multiplex<S>(
    ws: WebSocketStream<S>,
    mut channels: Channels,
    label: String,
    codec: ChannelCodec,
    gone: tokio::sync::oneshot::Sender<()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    let mut outputs = tokio::task::JoinSet::new();
    for (channel, mut pipe, opening) in std::mem::take(&mut channels.outputs) {
        let tx = tx.clone();
        outputs.spawn(async move {
            if let Some(opening) = opening
                && tx.send((channel, opening)).await.is_err()
            {
                return;
            }
            let mut chunk = vec![0u8; 32 * 1024];
            loop {
                let n = match pipe.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if tx.send((channel, chunk[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let writer_label = label.clone();
    let writer = tokio::spawn(async move {
        while let Some((channel, data)) = rx.recv().await {
            if sink.send(codec.encode(channel, &data)).await.is_err() {
                tracing::debug!(conn = %writer_label, "WebSocket client went away while sending");
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    });
    let mut inputs = std::mem::take(&mut channels.inputs);
    let reader = tokio::spawn(async move {
        while let Some(msg) = source.next().await {
            let msg = match msg {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(msg) => msg,
            };
            let Some((channel, payload)) = codec.decode(&msg) else {
                continue;
            };
            if channel == CLOSE_CHANNEL && codec == ChannelCodec::Binary {
                if let Some(target) = payload.first() {
                    inputs.remove(target);
                }
                continue;
            }
            if let Some(pipe) = inputs.get_mut(&channel)
                && pipe.write_all(&payload).await.is_err()
            {
                inputs.remove(&channel);
            }
        }
        tracing::debug!(conn = %label, "WebSocket client stopped sending");
        let _ = gone.send(());
    });
    while outputs.join_next().await.is_some() {}
    let _ = writer.await;
    reader.abort();
}

/// Exec or attach over WebSocket.
pub fn serve_command(
    req: Request<Incoming>,
    backend: Backend,
    target: CommandTarget,
) -> HttpResponse {
    let (resp, protocol, on_upgrade) = match upgrade(req, &COMMAND_PROTOCOLS) {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    let codec = ChannelCodec::for_protocol(&protocol);
    let Some(protocol) = CommandProtocol::from_name(&protocol) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "negotiated unknown protocol\n",
        );
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(container_id = %target.container_id, error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let mut channels = Channels::default();
        let mut streams = CommandStreams::default();
        if target.stdin {
            streams.stdin = Some(Box::new(channels.input(0)));
        }
        // Like kubelet, an empty message on the lowest output channel tells
        // the client that the session is set up.
        let stderr = target.stderr && !target.tty;
        let hello = |wanted: bool| wanted.then(Vec::new);
        if target.stdout {
            streams.stdout = Some(Box::new(channels.output(1, hello(true))));
        }
        if stderr {
            streams.stderr = Some(Box::new(channels.output(2, hello(!target.stdout))));
        }
        streams.error = Some(Box::new(
            channels.output(3, hello(!target.stdout && !stderr)),
        ));
        if target.tty {
            streams.resize = Some(Box::new(channels.input(4)));
        }
        let label = format!("container {}", target.container_id);
        let container_id = target.container_id.clone();
        let session = session::run_command(backend, target, streams, protocol.status_format());
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
        let gone = async {
            let _ = gone_rx.await;
        };
        tokio::join!(
            session::until_client_gone(session, gone, &container_id),
            multiplex(ws, channels, label, codec, gone_tx)
        );
    });
    resp
}

/// Port forward over WebSocket: ports come from the `port` query
/// parameters as kubectl sends them, else from the CRI request.
pub fn serve_port_forward(
    req: Request<Incoming>,
    backend: Backend,
    pf: PortForwardRequest,
) -> HttpResponse {
    let mut ports: Vec<u16> = Vec::new();
    for pair in req.uri().query().unwrap_or("").split('&') {
        if let Some(value) = pair.strip_prefix("port=") {
            match value.parse::<u16>() {
                Ok(p) if p > 0 => ports.push(p),
                _ => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        format!("unable to parse {value:?} as a port\n"),
                    );
                }
            }
        }
    }
    if ports.is_empty() {
        ports = pf
            .port
            .iter()
            .filter_map(|p| u16::try_from(*p).ok())
            .filter(|p| *p > 0)
            .collect();
    }
    if ports.is_empty() || ports.len() > 64 {
        return plain(
            StatusCode::BAD_REQUEST,
            "query parameter \"port\" is required (1 to 64 ports)\n",
        );
    }
    let (resp, protocol, on_upgrade) = match upgrade(req, &PORT_FORWARD_PROTOCOLS) {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    let codec = ChannelCodec::for_protocol(&protocol);
    let pod_id = pf.pod_sandbox_id;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(pod_id = %pod_id, error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let mut channels = Channels::default();
        let mut forwards = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let data = (2 * i) as u8;
            let opening = port.to_le_bytes().to_vec();
            let data_in = channels.input(data);
            let data_out = channels.output(data, Some(opening.clone()));
            let error = channels.output(data + 1, Some(opening));
            forwards.push(session::forward_port(
                backend.clone(),
                pod_id.clone(),
                *port,
                Box::new(data_in),
                Box::new(data_out),
                Box::new(error),
            ));
        }
        let label = format!("pod {pod_id}");
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
        let gone = async {
            let _ = gone_rx.await;
        };
        let all_forwards = async {
            futures_util::future::join_all(forwards).await;
        };
        tokio::join!(
            session::until_client_gone(all_forwards, gone, &pod_id),
            multiplex(ws, channels, label, codec, gone_tx)
        );
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_round_trip_and_reject_garbage() {
        for codec in [ChannelCodec::Binary, ChannelCodec::Base64] {
            let msg = codec.encode(3, b"\x00status\xff");
            assert_eq!(codec.decode(&msg), Some((3, b"\x00status\xff".to_vec())));
        }
        assert_eq!(
            ChannelCodec::Base64.encode(1, b"hi"),
            Message::Text("1aGk=".into())
        );
        assert_eq!(
            ChannelCodec::Base64.decode(&Message::Text("1!!".into())),
            None
        );
        assert_eq!(
            ChannelCodec::Binary.decode(&Message::Binary(Bytes::new())),
            None
        );
        assert_eq!(
            ChannelCodec::for_protocol("v4.base64.channel.k8s.io"),
            ChannelCodec::Base64
        );
    }
}
