//! Server side of one SPDY/3.1 connection.
//!
//! Flow control: Go's spdystream (kubelet, kubectl, crictl) neither sends
//! WINDOW_UPDATE nor waits for one, and relies on TCP backpressure. So this
//! side never stalls its sends on the SPDY window (a 64 KiB stall would hang
//! every Go client after 64 KiB of output); it bounds what it buffers instead:
//! each stream's inbound pipe holds at most [`STREAM_WINDOW`] bytes, the
//! reader stops reading the socket while a pipe is full, and a WINDOW_UPDATE
//! is returned for every byte moved into a pipe, so peers that do honour the
//! window keep at most one window in flight per stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use super::frame::{FLAG_FIN, Frame, RST_INVALID_STREAM, RST_REFUSED_STREAM};
use super::{HeaderCodec, Headers, SpdyError};

/// SPDY/3 default initial window, and the inbound buffer of every stream.
pub const STREAM_WINDOW: usize = 64 * 1024;
/// Largest frame accepted from a client (Go writes stdin in 32 KiB chunks).
pub const MAX_INBOUND_FRAME: usize = 1024 * 1024;
/// Largest DATA frame this side sends.
const MAX_OUTBOUND_DATA: usize = 32 * 1024;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Streams the client may have open at once on one connection.
const MAX_STREAMS: usize = 256;

/// A stream the client opened, already answered with SYN_REPLY.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// Data the client sends; EOF at its FIN or RST_STREAM.
    pub reader: DuplexStream,
    /// Bytes written here reach the client as DATA; shutdown or drop sends FIN.
    pub writer: DuplexStream,
}

enum Outgoing {
    Frame(Frame),
    Reply { stream_id: u32 },
    GoAway { status: u32 },
}

/// A running server-side SPDY connection.
pub struct SpdyConnection {
    outgoing: mpsc::Sender<Outgoing>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl SpdyConnection {
    /// Starts serving `io`; new client streams arrive on the returned
    /// receiver, which ends when the client goes away.
    pub fn start<IO>(io: IO, label: String) -> (SpdyConnection, mpsc::Receiver<IncomingStream>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (stream_tx, stream_rx) = mpsc::channel(16);
        let pumps = Arc::new(Mutex::new(Vec::new()));
        let writer = tokio::spawn(write_loop(write_half, out_rx, label.clone()));
        let reader = tokio::spawn(read_loop(
            read_half,
            out_tx.clone(),
            stream_tx,
            pumps.clone(),
            label,
        ));
        (
            SpdyConnection {
                outgoing: out_tx,
                pumps,
                reader,
                writer,
            },
            stream_rx,
        )
    }

    /// Ends the connection the way kubelet does: every stream's pending
    /// output and FIN first, then GOAWAY, then the socket is closed.
    pub async fn close(self) {
        let pumps: Vec<JoinHandle<()>> = std::mem::take(&mut *self.pumps.lock().await);
        let aborts: Vec<_> = pumps.iter().map(JoinHandle::abort_handle).collect();
        // A pump whose writer is still held elsewhere cannot finish; do not
        // let it keep the connection open forever.
        let all_flushed = async {
            for pump in pumps {
                let _ = pump.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), all_flushed)
            .await
            .is_err()
        {
            aborts.iter().for_each(|a| a.abort());
        }
        let _ = self.outgoing.send(Outgoing::GoAway { status: 0 }).await;
        drop(self.outgoing);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.writer).await;
        // Give the client a moment to see GOAWAY and hang up, then drop it.
        let abort = self.reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite>(
    mut sink: tokio::io::WriteHalf<W>,
    mut rx: mpsc::Receiver<Outgoing>,
    label: String,
) {
    let mut codec = match HeaderCodec::new(MAX_HEADER_BLOCK) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(conn = %label, error = %e, "SPDY header compressor failed to start");
            return;
        }
    };
    let mut buf = Vec::with_capacity(MAX_OUTBOUND_DATA + 64);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut closing = false;
        // Batch what is queued into one write.
        while let Some(item) = next.take() {
            let frame = match item {
                Outgoing::Frame(f) => f,
                Outgoing::Reply { stream_id } => match codec.compress(&Headers::default()) {
                    Ok(header_block) => Frame::SynReply {
                        stream_id,
                        flags: 0,
                        header_block,
                    },
                    Err(e) => {
                        tracing::error!(conn = %label, error = %e, "SPDY header compression failed");
                        return;
                    }
                },
                Outgoing::GoAway { status } => {
                    closing = true;
                    Frame::GoAway {
                        last_good_stream_id: 0,
                        status,
                    }
                }
            };
            if let Err(e) = frame.encode(&mut buf) {
                tracing::warn!(conn = %label, error = %e, "dropping unencodable SPDY frame");
            }
            if closing || buf.len() > MAX_OUTBOUND_DATA {
                break;
            }
            next = rx.try_recv().ok();
        }
        if sink.write_all(&buf).await.is_err() || sink.flush().await.is_err() {
            tracing::debug!(conn = %label, "SPDY client went away while sending");
            return;
        }
        buf.clear();
        if closing {
            let _ = sink.shutdown().await;
            return;
        }
    }
    let _ = sink.shutdown().await;
}

struct StreamState {
    /// Our end of the inbound pipe; `None` after the client's FIN.
    inbound: Option<DuplexStream>,
}

async fn read_loop<R: AsyncRead>(
    mut source: tokio::io::ReadHalf<R>,
    out: mpsc::Sender<Outgoing>,
    streams_tx: mpsc::Sender<IncomingStream>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
    label: String,
) {
    let result = read_frames(&mut source, &out, &streams_tx, &pumps, &label).await;
    match result {
        Ok(()) => tracing::debug!(conn = %label, "SPDY client closed the connection"),
        Err(e) => {
            tracing::warn!(conn = %label, error = %e, "closing SPDY connection on protocol error");
            // Status 1 is PROTOCOL_ERROR (spec section 2.6.6).
            let _ = out.send(Outgoing::GoAway { status: 1 }).await;
        }
    }
}

async fn read_frames<R: AsyncRead>(
    source: &mut tokio::io::ReadHalf<R>,
    out: &mpsc::Sender<Outgoing>,
    streams_tx: &mpsc::Sender<IncomingStream>,
    pumps: &Arc<Mutex<Vec<JoinHandle<()>>>>,
    label: &str,
) -> Result<(), SpdyError> {
    let mut codec = HeaderCodec::new(MAX_HEADER_BLOCK)?;
    let mut streams: HashMap<u32, StreamState> = HashMap::new();
    let mut last_stream_id = 0u32;
    let mut going_away = false;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        while let Some((frame, used)) = Frame::decode(&buf, MAX_INBOUND_FRAME)? {
            buf.drain(..used);
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    header_block,
                    ..
                } => {
                    // Decompress first: the zlib stream must see every block.
                    let headers = codec.decompress(&header_block)?;
                    if stream_id == 0 || stream_id % 2 == 0 || stream_id <= last_stream_id {
                        return Err(SpdyError::InvalidStreamId(stream_id));
                    }
                    last_stream_id = stream_id;
                    if going_away || streams.len() >= MAX_STREAMS {
                        send(
                            out,
                            Frame::RstStream {
                                stream_id,
                                status: RST_REFUSED_STREAM,
                            },
                        )
                        .await;
                        continue;
                    }
                    let (inbound_ours, inbound_theirs) = tokio::io::duplex(STREAM_WINDOW);
                    let (outbound_theirs, outbound_ours) = tokio::io::duplex(STREAM_WINDOW);
                    if out.send(Outgoing::Reply { stream_id }).await.is_err() {
                        return Ok(());
                    }
                    let pump = tokio::spawn(pump_outbound(stream_id, outbound_ours, out.clone()));
                    {
                        let mut pumps = pumps.lock().await;
                        pumps.retain(|p| !p.is_finished());
                        pumps.push(pump);
                    }
                    let fin = flags & FLAG_FIN != 0;
                    streams.insert(
                        stream_id,
                        StreamState {
                            inbound: if fin { None } else { Some(inbound_ours) },
                        },
                    );
                    tracing::debug!(conn = %label, stream_id, ?headers, "SPDY stream opened");
                    let incoming = IncomingStream {
                        id: stream_id,
                        headers,
                        reader: inbound_theirs,
                        writer: outbound_theirs,
                    };
                    if streams_tx.send(incoming).await.is_err() {
                        // Nobody takes streams any more: refuse it.
                        streams.remove(&stream_id);
                        send(
                            out,
                            Frame::RstStream {
                                stream_id,
                                status: RST_REFUSED_STREAM,
                            },
                        )
                        .await;
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let Some(state) = streams.get_mut(&stream_id) else {
                        send(
                            out,
                            Frame::RstStream {
                                stream_id,
                                status: RST_INVALID_STREAM,
                            },
                        )
                        .await;
                        continue;
                    };
                    if let Some(pipe) = state.inbound.as_mut()
                        && !data.is_empty()
                    {
                        if pipe.write_all(&data).await.is_err() {
                            // The session dropped its reader: discard.
                            state.inbound = None;
                        } else {
                            send(
                                out,
                                Frame::WindowUpdate {
                                    stream_id,
                                    delta: data.len() as u32,
                                },
                            )
                            .await;
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        state.inbound = None;
                    }
                }
                Frame::RstStream { stream_id, status } => {
                    tracing::debug!(conn = %label, stream_id, status, "SPDY stream reset by client");
                    streams.remove(&stream_id);
                }
                Frame::Headers {
                    stream_id,
                    flags,
                    header_block,
                } => {
                    codec.decompress(&header_block)?;
                    if flags & FLAG_FIN != 0
                        && let Some(state) = streams.get_mut(&stream_id)
                    {
                        state.inbound = None;
                    }
                }
                Frame::SynReply { header_block, .. } => {
                    codec.decompress(&header_block)?;
                }
                Frame::Ping { id } => {
                    // Client pings are odd; answer them, ignore echoes of ours.
                    if id % 2 == 1 {
                        send(out, Frame::Ping { id }).await;
                    }
                }
                Frame::GoAway { .. } => going_away = true,
                Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
            }
        }
        let n = source.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(())
            } else {
                Err(SpdyError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame",
                )))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn send(out: &mpsc::Sender<Outgoing>, frame: Frame) {
    let _ = out.send(Outgoing::Frame(frame)).await;
}

/// Moves what the session writes on one stream into DATA frames, then FIN.
async fn pump_outbound(stream_id: u32, mut pipe: DuplexStream, out: mpsc::Sender<Outgoing>) {
    let mut chunk = vec![0u8; MAX_OUTBOUND_DATA];
    loop {
        // A read error ends the stream like EOF does.
        let n: usize = pipe.read(&mut chunk).await.unwrap_or_default();
        let frame = Frame::Data {
            stream_id,
            flags: if n == 0 { FLAG_FIN } else { 0 },
            data: chunk[..n].to_vec(),
        };
        if out.send(Outgoing::Frame(frame)).await.is_err() || n == 0 {
            return;
        }
    }
}
