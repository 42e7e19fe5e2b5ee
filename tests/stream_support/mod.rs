//! Shared pieces of the streaming server tests: a backend that needs no
//! containers, and raw HTTP helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use capcri::stream::{StreamBackend, StreamIo, StreamServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Behaviour picked by the command:
/// - `["echo", N]`: stdin to stdout until EOF, "to-stderr" on stderr, exit N;
/// - `["resize"]`: waits for one resize event, prints "WxH" on stdout, exit 0;
/// - `["fail"]`: the runtime fails ("boom").
///
/// Attach echoes stdin to stdout. Port forward echoes, except port 1 which
/// is "refused".
pub struct EchoBackend;

#[async_trait::async_trait]
impl StreamBackend for EchoBackend {
    async fn exec(
        &self,
        _container_id: &str,
        cmd: Vec<String>,
        _tty: bool,
        mut io: StreamIo,
    ) -> Result<i32, String> {
        match cmd.first().map(String::as_str) {
            Some("echo") => {
                if let (Some(stdin), Some(stdout)) = (io.stdin.as_mut(), io.stdout.as_mut()) {
                    tokio::io::copy(stdin, stdout)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if let Some(stderr) = io.stderr.as_mut() {
                    stderr
                        .write_all(b"to-stderr")
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(cmd.get(1).and_then(|c| c.parse().ok()).unwrap_or(0))
            }
            Some("resize") => {
                let mut rx = io.resize.take().ok_or("no resize channel")?;
                let size = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .map_err(|_| "no resize event")?
                    .ok_or("resize channel closed")?;
                let stdout = io.stdout.as_mut().ok_or("no stdout")?;
                stdout
                    .write_all(format!("{}x{}", size.width, size.height).as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(0)
            }
            _ => Err("boom".to_string()),
        }
    }

    async fn attach(&self, container_id: &str, _tty: bool, io: StreamIo) -> Result<(), String> {
        if container_id == "forever" {
            // A container that never ends: only the client leaving stops it.
            let _guard = DropFlag;
            std::future::pending::<()>().await;
        }
        if let (Some(mut stdin), Some(mut stdout)) = (io.stdin, io.stdout) {
            tokio::io::copy(&mut stdin, &mut stdout)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn port_forward(
        &self,
        _pod_id: &str,
        port: u16,
        stream: tokio::io::DuplexStream,
    ) -> Result<(), String> {
        if port == 1 {
            return Err("connection refused".to_string());
        }
        let (mut r, mut w) = tokio::io::split(stream);
        tokio::io::copy(&mut r, &mut w)
            .await
            .map_err(|e| e.to_string())?;
        w.shutdown().await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Counts attach calls dropped before they finished.
pub static ATTACH_DROPPED: AtomicUsize = AtomicUsize::new(0);

struct DropFlag;

impl Drop for DropFlag {
    fn drop(&mut self) {
        ATTACH_DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

pub async fn server() -> StreamServer {
    StreamServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(EchoBackend))
        .await
        .unwrap()
}

/// The path of a streaming URL ("/exec/<token>").
pub fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_string()
}

/// Sends a raw HTTP/1.1 request; returns the connection positioned after
/// the response head, the status code and the head text.
pub async fn raw_request(
    server: &StreamServer,
    path: &str,
    extra_headers: &[(&str, &str)],
) -> (TcpStream, u16, String) {
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "connection closed inside the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (tcp, status, head)
}
