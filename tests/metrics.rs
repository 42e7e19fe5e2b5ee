//! `capcri serve --metrics-address`: a real daemon, real containers through
//! the CRI socket, and the OpenMetrics text scraped from `GET /metrics`.

mod common;

use common::{TestDaemon, container_config, create, pull, run_pod, start, wait_for};
use k8s_cri::v1 as cri;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port free right now on loopback, for the daemon to bind.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One scrape: the families (`# TYPE` lines) and every sample by its
/// series as printed (`name{labels}`).
#[derive(Debug)]
struct Scrape {
    content_type: String,
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    fn parse(content_type: String, text: String) -> Scrape {
        let mut types = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|e| panic!("{line:?}: value: {e}"));
                assert!(
                    samples.insert(series.to_string(), value).is_none(),
                    "series {series} twice"
                );
            }
        }
        Scrape {
            content_type,
            types,
            samples,
            text,
        }
    }

    /// The value of `series`; a missing series fails the test.
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }
}

async fn try_scrape(addr: SocketAddr) -> Option<Scrape> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: capcri\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    Some(Scrape::parse(content_type, body.to_string()))
}

async fn scrape(addr: SocketAddr) -> Scrape {
    try_scrape(addr).await.expect("scrape GET /metrics")
}

fn cri_calls(method: &str, code: &str) -> String {
    format!("capcri_cri_request_duration_seconds_count{{method=\"{method}\",code=\"{code}\"}}")
}

fn decisions(outcome: &str) -> String {
    format!("capcri_policy_decisions_total{{outcome=\"{outcome}\"}}")
}

fn containers(state: &str) -> String {
    format!("capcri_containers{{state=\"{state}\"}}")
}

/// A uid-1000 container adding NET_BIND_SERVICE: the recommended policies
/// promote it to ambient.
fn bind80(registry: &str) -> cri::ContainerConfig {
    let mut c = container_config(
        "web",
        &format!("{registry}/cri-lab/bind80:latest"),
        &["sh", "-c", "exec nc -ll -p 80 -e echo hello"],
    );
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: vec!["NET_BIND_SERVICE".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_counts_cri_calls_decisions_containers_pulls_and_reloads() {
    let registry = require_privileged!();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut d =
        TestDaemon::start_with_recommended_policies(&["--metrics-address", &addr.to_string()]);
    // A family without series is left out of the text: one call first.
    d.runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .expect("version");
    let first = wait_for("the metrics endpoint", Duration::from_secs(10), || {
        try_scrape(addr)
    })
    .await;
    let ports = listening_tcp_ports(d.pid().expect("daemon pid"));
    assert!(ports.contains(&addr.port()), "{ports:?}");
    assert_eq!(
        first.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(first.text.ends_with("# EOF\n"), "{}", first.text);
    let families: BTreeMap<&str, &str> = first
        .types
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        families,
        BTreeMap::from([
            ("capcri_containers", "gauge"),
            ("capcri_cri_request_duration_seconds", "histogram"),
            ("capcri_image_pull_bytes", "counter"),
            ("capcri_image_pull_duration_seconds", "histogram"),
            ("capcri_pods", "gauge"),
            ("capcri_policy_decisions", "counter"),
            ("capcri_policy_reloads", "counter"),
        ])
    );
    assert_eq!(first.get(&cri_calls("Version", "OK")), 1.0);
    assert_eq!(first.get("capcri_image_pull_bytes_total"), 0.0);
    assert_eq!(first.get(&containers("running")), 0.0);
    assert_eq!(first.get("capcri_pods{state=\"ready\"}"), 0.0);
    for outcome in ["promoted", "denied", "dmz", "direct", "preflight-failed"] {
        assert_eq!(first.get(&decisions(outcome)), 0.0, "{outcome}");
    }

    let netadmin = format!("{registry}/cri-lab/filecaps-netadmin:latest");
    pull(&d, &format!("{registry}/cri-lab/bind80:latest")).await;
    pull(&d, &netadmin).await;
    let missing = d
        .images()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: format!("{registry}/cri-lab/no-such-image:latest"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("an image the registry lacks");
    // A stream kept open for the whole test: counted once, when it is set up.
    let events = d
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest::default())
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let pod = run_pod(&d, "metrics").await;

    let web = create(&d, &pod, bind80(&registry))
        .await
        .expect("create web");
    start(&d, &web).await;
    // ping with cap_net_admin+ep outside the bounding set: the preflight refuses it.
    let refused = create(
        &d,
        &pod,
        container_config("ping", &netadmin, &["ping", "-c", "1", "127.0.0.1"]),
    )
    .await
    .expect_err("preflight refuses");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    let unknown = d
        .runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: "0123456789abcdef-not-a-container".into(),
            verbose: false,
        })
        .await
        .expect_err("unknown container");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let info = common::verbose_info(&d, &web).await;
    let exec_path = info["capabilityDecision"]["exec_path"]
        .as_str()
        .expect("the decision's exec path")
        .to_string();

    let s = scrape(addr).await;
    assert_eq!(s.get(&cri_calls("ContainerStatus", "NotFound")), 1.0);
    assert_eq!(s.get(&cri_calls("ContainerStatus", "OK")), 1.0);
    assert_eq!(s.get(&cri_calls("CreateContainer", "OK")), 1.0);
    assert_eq!(
        s.get(&cri_calls("CreateContainer", "FailedPrecondition")),
        1.0
    );
    assert_eq!(s.get(&cri_calls("RunPodSandbox", "OK")), 1.0);
    assert_eq!(s.get(&cri_calls("StartContainer", "OK")), 1.0);
    assert_eq!(s.get(&cri_calls("PullImage", "OK")), 2.0);
    assert_eq!(s.get(&cri_calls("GetContainerEvents", "OK")), 1.0);
    let pull_failed = format!("{:?}", missing.code());
    assert_eq!(
        s.get(&cri_calls("PullImage", &pull_failed)),
        1.0,
        "{missing}"
    );
    // Each histogram's +Inf bucket holds every call of its series.
    assert_eq!(
        s.get("capcri_cri_request_duration_seconds_bucket{le=\"+Inf\",method=\"ContainerStatus\",code=\"NotFound\"}"),
        1.0
    );

    assert_eq!(s.get(&decisions("promoted")), 1.0);
    assert_eq!(s.get(&decisions("preflight-failed")), 1.0);
    assert_eq!(s.get(&decisions("denied")), 0.0);
    assert_eq!(s.get(&decisions(&exec_path)), 1.0, "{exec_path}");
    let other = if exec_path == "direct" {
        "dmz"
    } else {
        "direct"
    };
    assert_eq!(s.get(&decisions(other)), 0.0);

    assert_eq!(s.get("capcri_pods{state=\"ready\"}"), 1.0);
    assert_eq!(s.get(&containers("running")), 1.0);
    assert_eq!(s.get(&containers("exited")), 0.0);
    assert!(s.get("capcri_image_pull_bytes_total") > 0.0, "{}", s.text);
    assert_eq!(
        s.get("capcri_image_pull_duration_seconds_count{outcome=\"success\"}"),
        2.0
    );
    assert_eq!(
        s.get("capcri_image_pull_duration_seconds_count{outcome=\"failure\"}"),
        1.0
    );

    // A second pull of a stored image fetches nothing new.
    let bytes = s.get("capcri_image_pull_bytes_total");
    pull(&d, &netadmin).await;
    assert_eq!(
        scrape(addr).await.get("capcri_image_pull_bytes_total"),
        bytes
    );

    d.runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: web.clone(),
            timeout: 5,
        })
        .await
        .expect("stop web");
    let s = scrape(addr).await;
    assert_eq!(s.get(&containers("running")), 0.0);
    assert_eq!(s.get(&containers("exited")), 1.0);

    // A broken policy file is rejected whole; removing it reloads the set.
    let broken = d.policy_dir().join("99-broken.yaml");
    std::fs::write(&broken, "apiVersion: capcri.dev/v1alpha1\nkind: [\n").unwrap();
    wait_for(
        "a failed policy reload",
        Duration::from_secs(20),
        || async {
            let s = scrape(addr).await;
            (s.get("capcri_policy_reloads_total{outcome=\"failure\"}") == 1.0).then_some(())
        },
    )
    .await;
    std::fs::remove_file(&broken).unwrap();
    wait_for(
        "a successful policy reload",
        Duration::from_secs(20),
        || async {
            let s = scrape(addr).await;
            (s.get("capcri_policy_reloads_total{outcome=\"success\"}") == 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        scrape(addr)
            .await
            .get("capcri_policy_reloads_total{outcome=\"failure\"}"),
        1.0
    );

    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .expect("remove pod");
    let s = scrape(addr).await;
    assert_eq!(s.get("capcri_pods{state=\"ready\"}"), 0.0);
    assert_eq!(s.get(&containers("exited")), 0.0);

    drop(events);
    d.terminate();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the metrics endpoint stops with the daemon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_nothing_listens_for_metrics() {
    let _registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    d.runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .expect("the daemon answers");
    let ports = listening_tcp_ports(d.pid().expect("daemon pid"));
    assert_eq!(
        ports.len(),
        1,
        "only the streaming server listens: {ports:?}"
    );
}

/// TCP ports the process `pid` listens on (from /proc/net/tcp{,6}: sockets
/// in state LISTEN whose inode is one of its descriptors).
fn listening_tcp_ports(pid: u32) -> Vec<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's fds")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|p| {
            p.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit_once(':').map(|(_, p)| p).unwrap_or("0");
                ports.push(u16::from_str_radix(port, 16).expect("hex port"));
            }
        }
    }
    ports
}
