//! A hostile registry (issue 12 item 9), written here: a loopback HTTP/1.1
//! server that declares huge blobs, lies about sizes and streams endless
//! bodies. PullImage fails promptly with an error naming the descriptor and
//! the setting, the daemon's memory stays bounded, and nothing half-stored
//! remains.

mod common;

use common::TestDaemon;
use k8s_cri::v1 as cri;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// What the server answers for one repository.
#[derive(Clone)]
struct Scenario {
    /// `None`: a manifest whose body never ends (no Content-Length).
    manifest: Option<Vec<u8>>,
    /// digest -> body; `None`: an endless body of zeros.
    blobs: Vec<(String, Option<Vec<u8>>)>,
}

struct HostileRegistry {
    addr: String,
    /// Every request line seen.
    seen: Arc<Mutex<Vec<String>>>,
}

impl HostileRegistry {
    fn start(scenarios: Vec<(&'static str, Scenario)>) -> HostileRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let scenarios = Arc::new(scenarios);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let scenarios = scenarios.clone();
                let seen = seen2.clone();
                std::thread::spawn(move || serve(conn, &scenarios, &seen));
            }
        });
        HostileRegistry { addr, seen }
    }

    fn blob_requests(&self, digest: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("/blobs/") && l.contains(digest))
            .count()
    }
}

fn serve(conn: TcpStream, scenarios: &[(&'static str, Scenario)], seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        seen.lock().unwrap().push(line.trim().to_string());
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let head = line.starts_with("HEAD");
        let respond = |out: &mut TcpStream, status: &str, ctype: &str, body: &[u8]| {
            let _ = write!(
                out,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            if !head {
                let _ = out.write_all(body);
            }
        };
        if path == "/v2/" {
            respond(&mut out, "200 OK", "application/json", b"{}");
            continue;
        }
        let scenario = scenarios
            .iter()
            .find(|(repo, _)| path.starts_with(&format!("/v2/hostile/{repo}/")))
            .map(|(_, s)| s.clone());
        let Some(s) = scenario else {
            respond(&mut out, "404 Not Found", "application/json", b"{}");
            continue;
        };
        if path.contains("/manifests/") {
            match &s.manifest {
                Some(m) => respond(
                    &mut out,
                    "200 OK",
                    "application/vnd.oci.image.manifest.v1+json",
                    m,
                ),
                None => {
                    // No length, a JSON start, then spaces until the client
                    // hangs up.
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n{{\"schemaVersion\": 2, \"x\": \""
                    );
                    let chunk = vec![b' '; 64 * 1024];
                    while out.write_all(&chunk).is_ok() {}
                    return;
                }
            }
            continue;
        }
        let wanted = path.rsplit('/').next().unwrap_or("");
        match s.blobs.iter().find(|(d, _)| d == wanted) {
            Some((_, Some(body))) => respond(&mut out, "200 OK", "application/octet-stream", body),
            Some((_, None)) => {
                // Announces a terabyte and streams zeros until the client
                // hangs up.
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    1u64 << 40
                );
                let chunk = vec![0u8; 64 * 1024];
                while out.write_all(&chunk).is_ok() {}
                return;
            }
            None => respond(&mut out, "404 Not Found", "application/json", b"{}"),
        }
    }
}

fn manifest(config: (&str, i64), layers: &[(&str, i64)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.0,
            "size": config.1,
        },
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d,
            "size": s,
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Files under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_registry_cannot_fill_memory_or_disk() {
    let _registry = require_privileged!();
    let fake = |n: u8| format!("sha256:{}", hex::encode([n; 32]));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [fake(9)]},
    }))
    .unwrap();
    let config_digest = digest(&config);
    let big = 100i64 << 20;
    let scenarios = vec![
        (
            // A 100 MiB config: refused from its descriptor, never fetched.
            "bigconfig",
            Scenario {
                manifest: Some(manifest((&fake(1), big), &[(&fake(2), 10)])),
                blobs: vec![(fake(1), None)],
            },
        ),
        (
            // The descriptor says 300 bytes; the body never ends.
            "liarconfig",
            Scenario {
                manifest: Some(manifest((&fake(3), 300), &[(&fake(2), 10)])),
                blobs: vec![(fake(3), None)],
            },
        ),
        (
            // A 20 GiB layer: above max_compressed_layer_bytes (8 GiB).
            "biglayer",
            Scenario {
                manifest: Some(manifest(
                    (&config_digest, config.len() as i64),
                    &[(&fake(4), 20i64 << 30)],
                )),
                blobs: vec![
                    (config_digest.clone(), Some(config.clone())),
                    (fake(4), None),
                ],
            },
        ),
        (
            // A layer declared at 1 MiB whose body never ends.
            "liarlayer",
            Scenario {
                manifest: Some(manifest(
                    (&config_digest, config.len() as i64),
                    &[(&fake(5), 1 << 20)],
                )),
                blobs: vec![
                    (config_digest.clone(), Some(config.clone())),
                    (fake(5), None),
                ],
            },
        ),
        (
            // A manifest that never ends: bounded while it streams.
            "endlessmanifest",
            Scenario {
                manifest: None,
                blobs: vec![],
            },
        ),
    ];
    let server = HostileRegistry::start(scenarios);
    let d = TestDaemon::start(&[]);
    let pid = d.pid().expect("daemon pid");
    let mut images = d.images().await;
    images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap();
    let rss_before = vm_rss_kib(pid);

    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "bigconfig",
            vec![
                fake(1),
                "application/vnd.oci.image.config.v1+json".into(),
                format!("declares {big} bytes"),
                "above the limit of 8388608 bytes".into(),
            ],
        ),
        (
            "liarconfig",
            vec![
                fake(3),
                "sent more than the 300 bytes its descriptor declares".into(),
            ],
        ),
        (
            "biglayer",
            vec![
                fake(4),
                "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                format!("declares {} bytes", 20i64 << 30),
                "raise max_compressed_layer_bytes".into(),
            ],
        ),
        (
            "liarlayer",
            vec![
                fake(5),
                "sent more than the 1048576 bytes its descriptor declares".into(),
            ],
        ),
        (
            "endlessmanifest",
            vec![
                "manifest latest of".into(),
                "larger than 4194304 bytes".into(),
                "received so far".into(),
            ],
        ),
    ];
    for (repo, want) in cases {
        let image = format!("{}/hostile/{repo}:latest", server.addr);
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            images.pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("{repo}: PullImage hung"));
        let err = r.expect_err(&format!("{repo}: must fail"));
        assert!(t.elapsed() < Duration::from_secs(20), "{repo}: prompt");
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{repo}: {err:?}"
        );
        for w in &want {
            assert!(
                err.message().contains(w.as_str()),
                "{repo}: {w:?} in {}",
                err.message()
            );
        }
    }
    assert_eq!(
        server.blob_requests(&fake(1)),
        0,
        "a too-large config is never fetched"
    );
    assert_eq!(
        server.blob_requests(&fake(4)),
        0,
        "a too-large layer is never fetched"
    );

    let rss_after = vm_rss_kib(pid);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "daemon RSS grew from {rss_before} to {rss_after} KiB"
    );
    // Nothing half-stored: only the one good config blob may remain.
    let blobs = files_under(&d.data_dir().join("images/blobs"));
    assert!(
        blobs
            .iter()
            .all(|b| b.ends_with(config_digest.trim_start_matches("sha256:"))),
        "{blobs:?}"
    );
    let layers = files_under(&d.data_dir().join("images/layers"));
    assert!(layers.is_empty(), "{layers:?}");
}
