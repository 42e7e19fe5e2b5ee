//! How SPDY streams become a session's streams: by their `streamType`
//! header (remotecommand) or by `requestID` pairs (portforward), as in
//! kubelet's `remotecommand/httpstream.go` and `portforward/httpstream.go`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use super::Backend;
use super::session::{self, CommandProtocol, CommandStreams, CommandTarget};
use super::spdy::{IncomingStream, SpdyConnection};

/// Port-forward stream pairs a client may leave half-open at once.
const MAX_PENDING_PAIRS: usize = 128;

/// Serves one upgraded remotecommand connection: waits for the streams the
/// request needs, runs the session, closes.
pub async fn serve_command<IO>(
    io: IO,
    backend: Backend,
    target: CommandTarget,
    protocol: CommandProtocol,
    creation_timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let label = format!("container {}", target.container_id);
    let (conn, mut incoming) = SpdyConnection::start(io, label);
    let expected = target.expected_streams(protocol);
    let mut streams = CommandStreams::default();
    // Our sending halves of client-to-server streams (stdin, resize): kubelet
    // keeps them open for the whole session (only v1 closes stdin's at once),
    // so the client never sees an early FIN on a stream it still writes.
    let mut held = Vec::new();
    let mut received = 0;
    let deadline = tokio::time::sleep(creation_timeout);
    tokio::pin!(deadline);
    while received < expected {
        tokio::select! {
            next = incoming.recv() => {
                let Some(stream) = next else {
                    tracing::warn!(container_id = %target.container_id, received, expected, "client left before opening all streams");
                    drop((streams, held));
                    conn.close().await;
                    return;
                };
                let IncomingStream { headers, reader, writer, id } = stream;
                match headers.get("streamtype").unwrap_or("") {
                    "error" => streams.error = Some(Box::new(writer)),
                    "stdin" => {
                        streams.stdin = Some(Box::new(reader));
                        if protocol != CommandProtocol::V1 {
                            held.push(writer);
                        }
                    }
                    "stdout" => streams.stdout = Some(Box::new(writer)),
                    "stderr" => streams.stderr = Some(Box::new(writer)),
                    "resize" => {
                        streams.resize = Some(Box::new(reader));
                        held.push(writer);
                    }
                    other => {
                        tracing::warn!(container_id = %target.container_id, stream_id = id, stream_type = other, "unexpected stream type");
                        continue;
                    }
                }
                received += 1;
            }
            _ = &mut deadline => {
                tracing::warn!(container_id = %target.container_id, received, expected, "timed out waiting for client to create streams");
                drop((streams, held));
                conn.close().await;
                return;
            }
        }
    }
    // Later streams (none are expected) are refused by dropping them.
    let container_id = target.container_id.clone();
    let session = session::run_command(backend, target, streams, protocol.status_format());
    let gone = async { while incoming.recv().await.is_some() {} };
    session::until_client_gone(session, gone, &container_id).await;
    drop(held);
    conn.close().await;
}

#[derive(Default)]
struct PendingPair {
    data: Option<IncomingStream>,
    error: Option<IncomingStream>,
}

/// Serves one upgraded port-forward connection: every (data, error) stream
/// pair with the same `requestID` is one forwarded connection.
pub async fn serve_port_forward<IO>(
    io: IO,
    backend: Backend,
    pod_id: String,
    creation_timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (conn, mut incoming) = SpdyConnection::start(io, format!("pod {pod_id}"));
    let mut pending: HashMap<String, (tokio::time::Instant, PendingPair)> = HashMap::new();
    let mut forwards = JoinSet::new();
    while let Some(stream) = incoming.recv().await {
        let now = tokio::time::Instant::now();
        pending.retain(|id, (since, _)| {
            let keep = now.duration_since(*since) < creation_timeout;
            if !keep {
                tracing::warn!(pod_id = %pod_id, request_id = %id, "timed out waiting for the other stream of a port-forward pair");
            }
            keep
        });
        let stream_type = stream.headers.get("streamtype").unwrap_or("").to_string();
        // Clients older than requestID pair streams by id: error first,
        // data two ids later (kubelet's `requestID`).
        let request_id = match stream.headers.get("requestid") {
            Some(id) => id.to_string(),
            None if stream_type == "data" => stream.id.saturating_sub(2).to_string(),
            None => stream.id.to_string(),
        };
        if !pending.contains_key(&request_id) && pending.len() >= MAX_PENDING_PAIRS {
            tracing::warn!(pod_id = %pod_id, "too many half-open port-forward pairs; dropping stream");
            continue;
        }
        let pair = &mut pending
            .entry(request_id.clone())
            .or_insert_with(|| (now, PendingPair::default()))
            .1;
        match stream_type.as_str() {
            "data" => pair.data = Some(stream),
            "error" => pair.error = Some(stream),
            other => {
                tracing::warn!(pod_id = %pod_id, stream_type = other, "unexpected port-forward stream type");
                continue;
            }
        }
        if pair.data.is_some() && pair.error.is_some() {
            let Some((
                _,
                PendingPair {
                    data: Some(data),
                    error: Some(error),
                },
            )) = pending.remove(&request_id)
            else {
                continue;
            };
            let backend = backend.clone();
            let pod_id = pod_id.clone();
            forwards.spawn(forward_pair(backend, pod_id, data, error));
        }
    }
    // The client hung up: its streams are at EOF; let forwards finish briefly.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while forwards.join_next().await.is_some() {}
    })
    .await;
    forwards.shutdown().await;
    drop(pending);
    conn.close().await;
}

async fn forward_pair(
    backend: Backend,
    pod_id: String,
    data: IncomingStream,
    error: IncomingStream,
) {
    let port_header = data.headers.get("port").unwrap_or("").to_string();
    let mut error_writer = error.writer;
    match port_header.parse::<u16>() {
        Ok(port) if port > 0 => {
            session::forward_port(
                backend,
                pod_id,
                port,
                Box::new(data.reader),
                Box::new(data.writer),
                Box::new(error_writer),
            )
            .await
        }
        _ => {
            let message = format!(
                "error forwarding port {port_header:?} to pod {pod_id}: invalid port header"
            );
            tracing::warn!(pod_id = %pod_id, port = %port_header, "invalid port header in port-forward stream");
            let _ = error_writer.write_all(message.as_bytes()).await;
            let _ = error_writer.shutdown().await;
        }
    }
}
