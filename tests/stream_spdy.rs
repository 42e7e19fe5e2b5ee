//! The streaming server against a minimal SPDY/3.1 client built from the
//! crate's own frame and header codecs, speaking as kubelet/crictl do.

mod stream_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use capcri::stream::spdy::frame::FLAG_FIN;
use capcri::stream::spdy::{Frame, HeaderCodec, Headers};
use capcri::stream::{StreamConfig, StreamServer};
use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use std::sync::Arc;
use stream_support::{path_of, raw_request, server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct SpdyClient {
    tcp: TcpStream,
    codec: HeaderCodec,
    buf: Vec<u8>,
    next_id: u32,
    data: HashMap<u32, Vec<u8>>,
    fin: HashSet<u32>,
    replied: HashSet<u32>,
    goaway: bool,
    closed: bool,
}

impl SpdyClient {
    async fn connect(url: &str, protocol: &str) -> SpdyClient {
        let offer = format!(
            "X-Stream-Protocol-Version: {protocol}\r\nX-Stream-Protocol-Version: v2.channel.k8s.io\r\n"
        );
        SpdyClient::connect_with(url, &offer, protocol).await
    }

    /// `offer` is the raw protocol header lines; `expect` the answer ("" for none).
    async fn connect_with(url: &str, offer: &str, expect: &str) -> SpdyClient {
        let server_path = path_of(url);
        let addr = url
            .strip_prefix("http://")
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST {server_path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n{offer}Content-Length: 0\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(tcp.read(&mut byte).await.unwrap(), 1);
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: spdy/3.1"), "{head}");
        if expect.is_empty() {
            assert!(!head.contains("x-stream-protocol-version"), "{head}");
        } else {
            assert!(
                head.contains(&format!("x-stream-protocol-version: {expect}")),
                "{head}"
            );
        }
        SpdyClient {
            tcp,
            codec: HeaderCodec::new(1 << 20).unwrap(),
            buf: Vec::new(),
            next_id: 1,
            data: HashMap::new(),
            fin: HashSet::new(),
            replied: HashSet::new(),
            goaway: false,
            closed: false,
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut wire = Vec::new();
        frame.encode(&mut wire).unwrap();
        self.tcp.write_all(&wire).await.unwrap();
    }

    async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let header_block = self.codec.compress(&Headers::from_pairs(headers)).unwrap();
        self.send(Frame::SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            flags: 0,
            header_block,
        })
        .await;
        id
    }

    async fn write(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: data.to_vec(),
        })
        .await;
    }

    /// Reads frames until `done` holds or the connection ends.
    async fn run_until(&mut self, done: impl Fn(&SpdyClient) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(self) && !self.closed {
            while let Some((frame, used)) = Frame::decode(&self.buf, 1 << 24).unwrap() {
                self.buf.drain(..used);
                match frame {
                    Frame::SynReply {
                        stream_id,
                        header_block,
                        ..
                    } => {
                        self.codec.decompress(&header_block).unwrap();
                        self.replied.insert(stream_id);
                    }
                    Frame::Data {
                        stream_id,
                        flags,
                        data,
                    } => {
                        self.data.entry(stream_id).or_default().extend(data);
                        if flags & FLAG_FIN != 0 {
                            self.fin.insert(stream_id);
                        }
                    }
                    Frame::GoAway { .. } => self.goaway = true,
                    _ => {}
                }
            }
            if done(self) {
                return;
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .expect("server did not finish in time")
                .unwrap_or(0);
            if n == 0 {
                self.closed = true;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn text(&self, id: u32) -> String {
        String::from_utf8(self.data.get(&id).cloned().unwrap_or_default()).unwrap()
    }
}

fn exec_request(cmd: &[&str], tty: bool, stderr: bool) -> ExecRequest {
    ExecRequest {
        container_id: "ctr-1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin: true,
        stdout: true,
        stderr,
    }
}

#[tokio::test]
async fn exec_v4_streams_and_success_status() {
    let server = server().await;
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let stderr = c.open(&[("streamType", "stderr")]).await;
    // More than one window of stdin, in several frames.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in payload.chunks(32 * 1024) {
        c.write(stdin, chunk, false).await;
    }
    c.write(stdin, b"", true).await;
    c.run_until(|c| c.fin.contains(&error) && c.fin.contains(&stdout) && c.fin.contains(&stderr))
        .await;
    assert!(c.replied.contains(&stdin));
    assert_eq!(c.data.get(&stdout).cloned().unwrap_or_default(), payload);
    assert_eq!(c.text(stderr), "to-stderr");
    assert_eq!(c.text(error), r#"{"metadata":{},"status":"Success"}"#);
    c.run_until(|c| c.goaway).await;
    assert!(c.goaway || c.closed);
}

#[tokio::test]
async fn exec_v4_nonzero_exit_code() {
    let server = server().await;
    let url = server
        .exec_url(exec_request(&["echo", "7"], false, true))
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let _stderr = c.open(&[("streamType", "stderr")]).await;
    c.write(stdin, b"hi", true).await;
    c.run_until(|c| c.fin.contains(&error) && c.fin.contains(&stdout))
        .await;
    assert_eq!(c.text(stdout), "hi");
    let status: serde_json::Value = serde_json::from_str(&c.text(error)).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("command terminated with non-zero exit code: ")
    );
}

#[tokio::test]
async fn exec_v2_failure_is_plain_text() {
    let server = server().await;
    let url = server
        .exec_url(exec_request(&["fail"], false, true))
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v2.channel.k8s.io").await;
    let error = c.open(&[("streamType", "error")]).await;
    c.open(&[("streamType", "stdin")]).await;
    c.open(&[("streamType", "stdout")]).await;
    c.open(&[("streamType", "stderr")]).await;
    c.run_until(|c| c.fin.contains(&error)).await;
    let text = c.text(error);
    assert!(text.contains("boom"), "{text}");
    assert!(!text.starts_with('{'), "{text}");
}

#[tokio::test]
async fn exec_tty_reports_resize() {
    let server = server().await;
    let url = server
        .exec_url(exec_request(&["resize"], true, false))
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    let error = c.open(&[("streamType", "error")]).await;
    let _stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let resize = c.open(&[("streamType", "resize")]).await;
    // Split across two frames, as a slow writer could.
    c.write(resize, br#"{"Width":120,"#, false).await;
    c.write(resize, br#""Height":40}"#, false).await;
    c.run_until(|c| c.fin.contains(&error) && c.fin.contains(&stdout))
        .await;
    assert_eq!(c.text(stdout), "120x40");
    assert_eq!(c.text(error), r#"{"metadata":{},"status":"Success"}"#);
}

#[tokio::test]
async fn attach_echoes_stdin() {
    let server = server().await;
    let url = server
        .attach_url(AttachRequest {
            container_id: "ctr-1".into(),
            stdin: true,
            stdout: true,
            stderr: false,
            tty: false,
        })
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    c.write(stdin, b"attached\n", true).await;
    c.run_until(|c| c.fin.contains(&error) && c.fin.contains(&stdout))
        .await;
    assert_eq!(c.text(stdout), "attached\n");
    assert_eq!(c.text(error), r#"{"metadata":{},"status":"Success"}"#);
}

#[tokio::test]
async fn port_forward_pairs_streams_by_request_id() {
    let server = server().await;
    let url = server
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod-1".into(),
            port: vec![8080],
        })
        .unwrap();
    let mut c = SpdyClient::connect(&url, "portforward.k8s.io").await;
    // Two forwarded connections on one SPDY connection, one refused.
    let err0 = c
        .open(&[
            ("streamType", "error"),
            ("port", "8080"),
            ("requestID", "0"),
        ])
        .await;
    let err1 = c
        .open(&[("streamType", "error"), ("port", "1"), ("requestID", "1")])
        .await;
    let data0 = c
        .open(&[("streamType", "data"), ("port", "8080"), ("requestID", "0")])
        .await;
    let _data1 = c
        .open(&[("streamType", "data"), ("port", "1"), ("requestID", "1")])
        .await;
    c.write(data0, b"ping through the pod", true).await;
    c.run_until(|c| c.fin.contains(&data0) && c.fin.contains(&err0) && c.fin.contains(&err1))
        .await;
    assert_eq!(c.text(data0), "ping through the pod");
    assert_eq!(c.text(err0), "");
    let refused = c.text(err1);
    assert!(
        refused.contains("error forwarding port 1 to pod pod-1") && refused.contains("refused"),
        "{refused}"
    );
}

#[tokio::test]
async fn tokens_are_single_use() {
    let server = server().await;
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    c.open(&[("streamType", "error")]).await;
    let (_tcp, status, _) = raw_request(
        &server,
        &path_of(&url),
        &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")],
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unknown_token_and_wrong_kind_are_404() {
    let server = server().await;
    let (_tcp, status, _) = raw_request(&server, "/exec/0123456789abcdef", &[]).await;
    assert_eq!(status, 404);
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    let attach_path = path_of(&url).replace("/exec/", "/attach/");
    let (_tcp, status, _) = raw_request(&server, &attach_path, &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_upgrade_is_400_and_unknown_protocol_403() {
    let server = server().await;
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    let (_tcp, status, _) = raw_request(&server, &path_of(&url), &[]).await;
    assert_eq!(status, 400);
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    let (_tcp, status, head) = raw_request(
        &server,
        &path_of(&url),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v9.channel.k8s.io"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        head.to_ascii_lowercase()
            .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{head}"
    );
}

#[tokio::test]
async fn malformed_frames_close_the_connection_not_the_server() {
    let server = server().await;
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    // A SYN_STREAM whose header block is not zlib.
    c.send(Frame::SynStream {
        stream_id: 1,
        associated_id: 0,
        priority: 0,
        flags: 0,
        header_block: vec![0xde, 0xad, 0xbe, 0xef],
    })
    .await;
    c.run_until(|c| c.goaway).await;
    assert!(c.goaway || c.closed);
    // The server still serves new sessions.
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    c.open(&[("streamType", "stdout")]).await;
    c.open(&[("streamType", "stderr")]).await;
    c.write(stdin, b"", true).await;
    c.run_until(|c| c.fin.contains(&error)).await;
    assert_eq!(c.text(error), r#"{"metadata":{},"status":"Success"}"#);
}

#[tokio::test]
async fn requests_are_validated_and_non_loopback_refused() {
    let server = server().await;
    assert!(server.exec_url(exec_request(&["x"], true, true)).is_err());
    assert!(server.exec_url(exec_request(&[], false, true)).is_err());
    let err = capcri::stream::StreamServer::bind(
        "0.0.0.0:0".parse().unwrap(),
        std::sync::Arc::new(stream_support::EchoBackend),
    )
    .await;
    assert!(matches!(
        err,
        Err(capcri::stream::StreamError::NotLoopback(_))
    ));
}

#[tokio::test]
async fn no_negotiation_falls_back_to_v1() {
    let server = server().await;
    let url = server
        .exec_url(exec_request(&["echo", "4"], false, false))
        .unwrap();
    let mut c = SpdyClient::connect_with(&url, "", "").await;
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    c.write(stdin, b"v1", true).await;
    c.run_until(|c| c.fin.contains(&error) && c.fin.contains(&stdout))
        .await;
    assert_eq!(c.text(stdout), "v1");
    // v1 reports failures as text, not JSON.
    let text = c.text(error);
    assert!(text.contains("exit code 4"), "{text}");
    assert!(!text.starts_with('{'), "{text}");
}

#[tokio::test]
async fn expired_tokens_are_404() {
    let mut config = StreamConfig::new("127.0.0.1:0".parse().unwrap());
    config.token_ttl = Duration::from_millis(50);
    let server = StreamServer::bind_with(config, Arc::new(stream_support::EchoBackend))
        .await
        .unwrap();
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_tcp, status, _) = raw_request(
        &server,
        &path_of(&url),
        &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")],
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn missing_streams_time_out_and_close() {
    let mut config = StreamConfig::new("127.0.0.1:0".parse().unwrap());
    config.stream_creation_timeout = Duration::from_millis(200);
    let server = StreamServer::bind_with(config, Arc::new(stream_support::EchoBackend))
        .await
        .unwrap();
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    c.open(&[("streamType", "error")]).await;
    // stdin, stdout and stderr never come: the server gives up.
    c.run_until(|c| c.goaway).await;
    assert!(c.goaway || c.closed);
}

#[tokio::test]
async fn pings_are_answered() {
    let server = server().await;
    let url = server
        .exec_url(exec_request(&["echo", "0"], false, true))
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    c.send(Frame::Ping { id: 1 }).await;
    let mut wire = Vec::new();
    Frame::Ping { id: 1 }.encode(&mut wire).unwrap();
    let mut got = vec![0u8; wire.len()];
    tokio::time::timeout(Duration::from_secs(5), c.tcp.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, wire);
}

#[tokio::test]
async fn attach_ends_when_the_client_leaves() {
    let server = server().await;
    let before = stream_support::ATTACH_DROPPED.load(std::sync::atomic::Ordering::SeqCst);
    let url = server
        .attach_url(AttachRequest {
            container_id: "forever".into(),
            stdin: false,
            stdout: true,
            stderr: false,
            tty: false,
        })
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    c.open(&[("streamType", "error")]).await;
    c.open(&[("streamType", "stdout")]).await;
    c.run_until(|c| c.replied.len() == 2).await;
    drop(c);
    let deadline = tokio::time::Instant::now()
        + capcri::stream::session::CLIENT_GONE_GRACE
        + Duration::from_secs(5);
    while stream_support::ATTACH_DROPPED.load(std::sync::atomic::Ordering::SeqCst) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "attach kept running after the client left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
