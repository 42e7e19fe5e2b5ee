//! The streaming server over WebSocket (kubelet's wsstream channel framing),
//! with tokio-tungstenite as the client.

mod stream_support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use k8s_cri::v1::{ExecRequest, PortForwardRequest};
use stream_support::server;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str, protocol: &str) -> Ws {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    ws
}

async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
    let mut frame = vec![channel];
    frame.extend_from_slice(data);
    ws.send(Message::Binary(Bytes::from(frame))).await.unwrap();
}

/// Collects bytes per channel until the server closes; also returns the
/// first message of each channel separately.
async fn drain(ws: &mut Ws) -> (HashMap<u8, Vec<u8>>, HashMap<u8, Vec<u8>>) {
    let mut all: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut first: HashMap<u8, Vec<u8>> = HashMap::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("server did not close in time");
        match msg {
            Some(Ok(Message::Binary(data))) => {
                let (channel, payload) = data.split_first().unwrap();
                first.entry(*channel).or_insert_with(|| payload.to_vec());
                all.entry(*channel).or_default().extend_from_slice(payload);
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    (all, first)
}

fn text(map: &HashMap<u8, Vec<u8>>, channel: u8) -> String {
    String::from_utf8(map.get(&channel).cloned().unwrap_or_default()).unwrap()
}

#[tokio::test]
async fn exec_v5_with_stdin_close_signal() {
    let server = server().await;
    let url = server
        .exec_url(ExecRequest {
            container_id: "ctr-ws".into(),
            cmd: vec!["echo".into(), "3".into()],
            tty: false,
            stdin: true,
            stdout: true,
            stderr: true,
        })
        .unwrap();
    let mut ws = connect(&url, "v5.channel.k8s.io").await;
    send(&mut ws, 0, b"hello over websocket").await;
    // v5 CLOSE signal for stdin: the command sees EOF and exits.
    send(&mut ws, 255, &[0]).await;
    let (all, first) = drain(&mut ws).await;
    // The empty "ready" message on stdout comes first.
    assert_eq!(first[&1], b"");
    assert_eq!(text(&all, 1), "hello over websocket");
    assert_eq!(text(&all, 2), "to-stderr");
    let status: serde_json::Value = serde_json::from_slice(&all[&3]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn exec_v4_tty_resize_channel() {
    let server = server().await;
    let url = server
        .exec_url(ExecRequest {
            container_id: "ctr-ws".into(),
            cmd: vec!["resize".into()],
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await;
    send(&mut ws, 4, br#"{"Width":80,"Height":24}"#).await;
    let (all, _) = drain(&mut ws).await;
    assert_eq!(text(&all, 1), "80x24");
    assert_eq!(text(&all, 3), r#"{"metadata":{},"status":"Success"}"#);
    assert!(!all.contains_key(&2));
}

#[tokio::test]
async fn port_forward_channels_start_with_the_port() {
    let server = server().await;
    let url = server
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod-ws".into(),
            port: vec![],
        })
        .unwrap();
    let mut ws = connect(&format!("{url}?port=8080&port=1"), "v4.channel.k8s.io").await;
    send(&mut ws, 0, b"echo me").await;
    // Half-close the data channel with the v5-style signal so the echo ends.
    send(&mut ws, 255, &[0]).await;
    let (all, first) = drain(&mut ws).await;
    let p8080 = 8080u16.to_le_bytes().to_vec();
    let p1 = 1u16.to_le_bytes().to_vec();
    assert_eq!(first[&0], p8080);
    assert_eq!(first[&1], p8080);
    assert_eq!(first[&2], p1);
    assert_eq!(first[&3], p1);
    assert_eq!(&all[&0][2..], b"echo me");
    assert_eq!(all[&1].len(), 2, "no error for the working port");
    let refused = String::from_utf8(all[&3][2..].to_vec()).unwrap();
    assert!(refused.contains("error forwarding port 1"), "{refused}");
}

#[tokio::test]
async fn unsupported_subprotocol_is_refused() {
    let server = server().await;
    let url = server
        .exec_url(ExecRequest {
            container_id: "ctr-ws".into(),
            cmd: vec!["echo".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v9.channel.k8s.io".parse().unwrap(),
    );
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

#[tokio::test]
async fn exec_over_base64_subprotocol() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let server = server().await;
    let url = server
        .exec_url(ExecRequest {
            container_id: "ctr-b64".into(),
            cmd: vec!["echo".into(), "0".into()],
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let mut ws = connect(&url, "v4.base64.channel.k8s.io").await;
    ws.send(Message::Text(format!("0{}", b64.encode("browser")).into()))
        .await
        .unwrap();
    // base64 protocols have no close signal: read the echo while stdin is
    // still open.
    let mut stdout = Vec::new();
    while stdout.len() < 7 {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = msg {
            let (channel, payload) = text.split_at(1);
            if channel == "1" {
                stdout.extend(b64.decode(payload).unwrap());
            }
        }
    }
    assert_eq!(stdout, b"browser");
}
