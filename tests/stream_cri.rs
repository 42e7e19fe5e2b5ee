//! Exec and port forward end to end: CRI socket -> streaming URL -> SPDY or
//! WebSocket client -> pod monitor -> a process in a real container; and
//! the container's seccomp filter applying to exec'd processes (critest
//! "should support seccomp default which is runtime/default on the
//! container" and "... localhost/profile").

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use capcri::stream::spdy::frame::FLAG_FIN;
use capcri::stream::spdy::{Frame, HeaderCodec, Headers};
use common::{TestDaemon, container_config, pod_config, pull, wait_for};
use futures_util::{SinkExt, StreamExt};
use k8s_cri::v1 as cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

struct Spdy {
    tcp: TcpStream,
    codec: HeaderCodec,
    buf: Vec<u8>,
    next_id: u32,
    data: HashMap<u32, Vec<u8>>,
    fin: HashSet<u32>,
}

impl Spdy {
    async fn connect(url: &str, protocol: &str) -> Spdy {
        let rest = url.strip_prefix("http://").unwrap();
        let (addr, path) = rest.split_at(rest.find('/').unwrap());
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(tcp.read(&mut byte).await.unwrap(), 1);
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Spdy {
            tcp,
            codec: HeaderCodec::new(1 << 20).unwrap(),
            buf: Vec::new(),
            next_id: 1,
            data: HashMap::new(),
            fin: HashSet::new(),
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

    async fn run_until(&mut self, done: impl Fn(&Spdy) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            while let Some((frame, used)) = Frame::decode(&self.buf, 1 << 24).unwrap() {
                self.buf.drain(..used);
                match frame {
                    Frame::SynReply { header_block, .. } => {
                        self.codec.decompress(&header_block).unwrap();
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
                    _ => {}
                }
            }
            if done(self) {
                return;
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .expect("streaming server did not finish in time")
                .unwrap_or(0);
            assert!(n > 0, "connection closed early: {:?}", self.data);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(&self.data.get(&id).cloned().unwrap_or_default()).into_owned()
    }
}

async fn run_pod(d: &TestDaemon, name: &str) -> (String, cri::PodSandboxConfig) {
    let logs = d.dir.path().join(format!("logs-{name}"));
    let cfg = pod_config(name, &logs);
    let pod = d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    (pod, cfg)
}

async fn run_container(
    d: &TestDaemon,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
    cfg: cri::ContainerConfig,
) -> String {
    let mut rt = d.runtime().await;
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(cfg),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .expect("create container")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start container");
    id
}

/// Attach with stdin and stdout (and stderr unless `tty`, which has one
/// output stream), connected over SPDY v4.
async fn attach(d: &TestDaemon, id: &str, tty: bool) -> Spdy {
    let url = d
        .runtime()
        .await
        .attach(cri::AttachRequest {
            container_id: id.to_string(),
            stdin: true,
            tty,
            stdout: true,
            stderr: !tty,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    Spdy::connect(&url, "v4.channel.k8s.io").await
}

async fn exec_sync(d: &TestDaemon, id: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
    d.runtime()
        .await
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .expect("exec sync")
        .into_inner()
}

fn with_seccomp(
    mut cfg: cri::ContainerConfig,
    profile: cri::SecurityProfile,
) -> cri::ContainerConfig {
    let linux = cfg.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    sc.seccomp = Some(profile);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_keeps_the_containers_seccomp_filter() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&["--registry-mirror", &format!("registry.k8s.io={registry}")]);
    pull(&d, BUSYBOX).await;
    let (pod, pod_cfg) = run_pod(&d, "seccomp").await;

    let default = with_seccomp(
        container_config("rtdefault", BUSYBOX, &["sleep", "3600"]),
        cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
    );
    let id = run_container(&d, &pod, &pod_cfg, default).await;
    let out = exec_sync(&d, &id, &["grep", "Seccomp:", "/proc/self/status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Seccomp:\t2"),
        "exec'd process is not filtered: {text}"
    );
    let out = exec_sync(&d, &id, &["hostname", "ANewHostName"]).await;
    assert_ne!(
        out.exit_code, 0,
        "sethostname succeeded under runtime/default"
    );

    let profile = d.dir.path().join("no-chmod.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmod","fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let local = with_seccomp(
        container_config("localhost", BUSYBOX, &["sleep", "3600"]),
        cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: profile.display().to_string(),
        },
    );
    let id = run_container(&d, &pod, &pod_cfg, local).await;
    let out = exec_sync(&d, &id, &["chmod", "400", "/tmp"]).await;
    assert_ne!(out.exit_code, 0, "chmod was not blocked in exec");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    let out = exec_sync(&d, &id, &["grep", "Seccomp:", "/proc/self/status"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Seccomp:\t2"));
    common::stop_and_remove_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_port_forward_through_the_streaming_server() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[
        "--registry-mirror",
        &format!("registry.k8s.io={registry}"),
        "--stream-address",
        "127.0.0.1:0",
    ]);
    pull(&d, BUSYBOX).await;
    let (pod, pod_cfg) = run_pod(&d, "streams").await;
    let id = run_container(
        &d,
        &pod,
        &pod_cfg,
        container_config(
            "server",
            BUSYBOX,
            &["nc", "-ll", "-p", "8080", "-e", "echo", "pong"],
        ),
    )
    .await;
    let mut rt = d.runtime().await;
    let exec_url = |cmd: &[&str], tty: bool| cri::ExecRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin: true,
        stdout: true,
        stderr: !tty,
    };

    // (a) SPDY, v4: stdin in, stdout and stderr out, exit code 3.
    let url = rt
        .exec(exec_url(&["sh", "-c", "cat; echo done >&2; exit 3"], false))
        .await
        .expect("Exec")
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let mut c = Spdy::connect(&url, "v4.channel.k8s.io").await;
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let stderr = c.open(&[("streamType", "stderr")]).await;
    c.write(stdin, b"hello", true).await;
    c.run_until(|c| c.fin.contains(&error)).await;
    assert_eq!(c.text(stdout), "hello");
    assert_eq!(c.text(stderr).trim(), "done");
    let status: serde_json::Value = serde_json::from_str(&c.text(error)).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");

    // A tty, resized before the command asks for its size.
    let url = rt
        .exec(exec_url(&["sh", "-c", "sleep 1; stty size"], true))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut c = Spdy::connect(&url, "v4.channel.k8s.io").await;
    let error = c.open(&[("streamType", "error")]).await;
    let _stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let resize = c.open(&[("streamType", "resize")]).await;
    c.write(resize, br#"{"Width":100,"Height":40}"#, false)
        .await;
    c.run_until(|c| c.fin.contains(&error)).await;
    assert_eq!(c.text(stdout).trim(), "40 100");
    assert_eq!(c.text(error), r#"{"metadata":{},"status":"Success"}"#);

    // (b) WebSocket, v5 with the stdin close signal.
    let url = rt
        .exec(exec_url(&["sh", "-c", "cat; echo done >&2; exit 3"], false))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x00hello ws")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\xff\x00")))
        .await
        .unwrap();
    let mut all: HashMap<u8, Vec<u8>> = HashMap::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        match msg {
            Message::Binary(data) => {
                let (ch, payload) = data.split_first().unwrap();
                all.entry(*ch).or_default().extend_from_slice(payload);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let text =
        |ch: u8| String::from_utf8_lossy(&all.get(&ch).cloned().unwrap_or_default()).into_owned();
    assert_eq!(text(1), "hello ws");
    assert_eq!(text(2).trim(), "done");
    let status: serde_json::Value = serde_json::from_str(&text(3)).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");

    // Port forward into the pod's network namespace.
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let mut c = Spdy::connect(&url, "portforward.k8s.io").await;
    let err = c
        .open(&[
            ("streamType", "error"),
            ("port", "8080"),
            ("requestID", "0"),
        ])
        .await;
    let data = c
        .open(&[("streamType", "data"), ("port", "8080"), ("requestID", "0")])
        .await;
    c.write(data, b"ping\n", false).await;
    c.run_until(|c| c.text(data).contains("pong")).await;
    assert_eq!(c.text(err), "");

    // Exec needs a running container; an unknown one is NotFound.
    let missing = rt
        .exec(cri::ExecRequest {
            container_id: "no-such-container".into(),
            ..exec_url(&["true"], false)
        })
        .await
        .expect_err("exec into a missing container");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing}");
    common::stop_and_remove_pod(&d, &pod).await;
}

/// critest "should support attach": a container started with stdin and
/// stdin_once running `sh`; the attached client's stdin drives it, its
/// output comes back, and closing stdin ends the container and the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_drives_a_containers_stdin_and_reads_its_output() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[
        "--registry-mirror",
        &format!("registry.k8s.io={registry}"),
        "--stream-address",
        "127.0.0.1:0",
    ]);
    pull(&d, BUSYBOX).await;
    let (pod, pod_cfg) = run_pod(&d, "attach").await;
    let mut cfg = container_config("shell", BUSYBOX, &["sh"]);
    cfg.stdin = true;
    cfg.stdin_once = true;
    let id = run_container(&d, &pod, &pod_cfg, cfg).await;
    let mut c = attach(&d, &id, false).await;
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let _stderr = c.open(&[("streamType", "stderr")]).await;
    c.write(stdin, b"echo hello\n", false).await;
    c.run_until(|c| c.text(stdout).contains("hello")).await;
    assert_eq!(c.text(stdout), "hello\n");
    // Closing stdin (stdin_once) is the shell's EOF: the container exits
    // and the session ends.
    c.write(stdin, b"", true).await;
    c.run_until(|c| c.fin.contains(&error)).await;
    let status = wait_for("the shell to exit", Duration::from_secs(10), || async {
        let s = d
            .runtime()
            .await
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
    })
    .await;
    assert_eq!(status.exit_code, 0);
    common::stop_and_remove_pod(&d, &pod).await;
}

/// `kubectl run -it`: a container created with `tty` and `stdin` runs on a
/// terminal of its own; its output reaches the CRI log as stdout; an
/// attached client types into it, resizes it and reads the echo; and the
/// container keeps running when the client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_container_is_attached_typed_into_and_resized() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[
        "--registry-mirror",
        &format!("registry.k8s.io={registry}"),
        "--stream-address",
        "127.0.0.1:0",
    ]);
    pull(&d, BUSYBOX).await;
    let (pod, pod_cfg) = run_pod(&d, "tty").await;
    let mut cfg = container_config("term", BUSYBOX, &["sh", "-c", "tty; exec sh"]);
    cfg.stdin = true;
    cfg.tty = true;
    let id = run_container(&d, &pod, &pod_cfg, cfg).await;
    let log = d.dir.path().join("logs-tty").join("term").join("0.log");
    let first = wait_for(
        "the tty line in the log",
        Duration::from_secs(10),
        || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("/dev/pts/"))
        },
    )
    .await;
    assert!(
        first.contains(" stdout "),
        "a terminal's output is stdout: {first}"
    );

    let mut c = attach(&d, &id, true).await;
    let _error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let resize = c.open(&[("streamType", "resize")]).await;
    c.write(resize, br#"{"Width":90,"Height":33}"#, false).await;
    c.write(stdin, b"echo $((6*7)); stty size\n", false).await;
    c.run_until(|c| c.text(stdout).contains("33 90")).await;
    assert!(c.text(stdout).contains("42"), "{}", c.text(stdout));
    drop(c);

    // The client left; the shell still runs and still logs.
    let state = common::container_state(&d, &id).await;
    assert_eq!(state.state, cri::ContainerState::ContainerRunning as i32);
    wait_for("the echo in the log", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("42"))
    })
    .await;
    // Attaching with tty to a container without one is refused.
    let (plain_pod, plain_cfg) = (pod.clone(), pod_cfg.clone());
    let plain = run_container(
        &d,
        &plain_pod,
        &plain_cfg,
        container_config("plain", BUSYBOX, &["sleep", "1000"]),
    )
    .await;
    let err = d
        .runtime()
        .await
        .attach(cri::AttachRequest {
            container_id: plain,
            stdin: false,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    common::stop_and_remove_pod(&d, &pod).await;
}
