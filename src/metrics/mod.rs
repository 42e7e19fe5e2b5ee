//! Prometheus metrics: the metric families, the node collector that reads
//! pod and container counts at scrape time, the CRI latency layer and the
//! `GET /metrics` endpoint.
//!
//! The families live in one [`Metrics`] value owned by the [`Node`] (an
//! `Arc`), not in a process-wide static: a test or a second daemon in one
//! process gets its own counters, and every place that records something
//! reaches it through the node it already holds. The registry that encodes
//! them is built once by `capcri serve` ([`Metrics::registry`]).
//!
//! `prometheus-client` is the Prometheus project's own Rust client: typed
//! label sets, OpenMetrics text encoding, collectors for values computed at
//! scrape time; no globals of its own.
//!
//! [`Node`]: crate::node::Node

mod cri_layer;
mod http;
pub mod labels;
mod node_collector;

pub use cri_layer::CriMetricsLayer;
pub use http::{MetricsError, MetricsServer, OPENMETRICS_CONTENT_TYPE, Refresh};
pub use node_collector::{NodeCollector, NodeSnapshot, SnapshotSource};

use labels::{
    CriCallLabels, DecisionLabels, DecisionOutcome, Outcome, OutcomeLabels, SysctlLabels,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Latency buckets in seconds: from a ListContainers answered from memory
/// (about a millisecond) to a PullImage of a large image (minutes).
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metric families capcri records into as things happen. Values
/// computed from the node's state at scrape time (pod and container counts,
/// policy reloads, bytes fetched) are in [`NodeCollector`] instead.
#[derive(Debug, Clone)]
pub struct Metrics {
    cri_requests: HistogramFamily<CriCallLabels>,
    policy_decisions: Family<DecisionLabels, Counter>,
    policy_sysctls: Family<SysctlLabels, Counter>,
    image_pulls: HistogramFamily<OutcomeLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            cri_requests: Family::new_with_constructor(latency_histogram),
            policy_decisions: Family::default(),
            policy_sysctls: Family::default(),
            image_pulls: Family::new_with_constructor(latency_histogram),
        };
        // Every outcome is present from the start, at 0: a rate() over a
        // series that appears only at its first event misses that event.
        for outcome in DecisionOutcome::ALL {
            let _ = m
                .policy_decisions
                .get_or_create(&DecisionLabels { outcome });
        }
        for outcome in [Outcome::Success, Outcome::Failure] {
            let _ = m.image_pulls.get_or_create(&OutcomeLabels { outcome });
        }
        m
    }

    /// One finished CRI call (`code` "OK" on success).
    pub fn observe_cri_call(&self, method: &'static str, code: tonic::Code, took: Duration) {
        self.cri_requests
            .get_or_create(&CriCallLabels {
                method,
                code: labels::code_name(code),
            })
            .observe(took.as_secs_f64());
    }

    /// One capability decision of a CreateContainer, allowed or refused.
    pub fn count_decision(&self, decision: &crate::capabilities::policy::Decision) {
        for outcome in DecisionOutcome::of(decision) {
            self.policy_decisions
                .get_or_create(&DecisionLabels { outcome })
                .inc();
        }
    }

    /// One network sysctl a policy set for a pod at RunPodSandbox, by key
    /// and outcome (applied, skipped_host_network, overridden_by_pod,
    /// failed). Keys come from the loader's fixed pod-safe list, so the
    /// label set is bounded.
    pub fn count_sysctl(
        &self,
        key: &str,
        outcome: crate::capabilities::policy::sysctls::SysctlOutcome,
    ) {
        self.policy_sysctls
            .get_or_create(&SysctlLabels {
                key: key.to_string(),
                outcome: outcome.label(),
            })
            .inc();
    }

    /// One image pull, from its start to the image recorded (or the error).
    pub fn observe_pull(&self, outcome: Outcome, took: Duration) {
        self.image_pulls
            .get_or_create(&OutcomeLabels { outcome })
            .observe(took.as_secs_f64());
    }

    /// A registry holding these families and `collector`, every name under
    /// the `capcri_` prefix.
    pub fn registry(&self, collector: NodeCollector) -> Registry {
        let mut r = Registry::with_prefix("capcri");
        r.register(
            "cri_request_duration_seconds",
            "CRI calls by method and gRPC code: time from request to response (GetContainerEvents: to the stream's start)",
            self.cri_requests.clone(),
        );
        r.register(
            "policy_decisions",
            "Capability decisions of CreateContainer by outcome: each decision counts once under direct, dmz, denied or preflight-failed, and allowed ones with ambient capabilities once more under promoted",
            self.policy_decisions.clone(),
        );
        r.register(
            "policy_sysctls",
            "Network sysctls set by policies at RunPodSandbox, by key and outcome: applied to the pod's network namespace, skipped_host_network, overridden_by_pod (the pod's own sysctls win), failed",
            self.policy_sysctls.clone(),
        );
        r.register(
            "image_pull_duration_seconds",
            "PullImage durations by outcome (success or failure)",
            self.image_pulls.clone(),
        );
        r.register_collector(Box::new(collector));
        r
    }
}

/// The OpenMetrics text of `registry`, ending with `# EOF`.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn snapshot() -> NodeSnapshot {
        NodeSnapshot {
            pods: [("ready", 2), ("notready", 1)].into(),
            containers: [
                ("created", 0),
                ("running", 3),
                ("exited", 1),
                ("unknown", 0),
            ]
            .into(),
            policy_reloads_ok: 4,
            policy_reloads_failed: 1,
            image_pull_bytes: 12345,
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn every_family_encodes_as_openmetrics_text() {
        let m = Metrics::new();
        m.observe_cri_call("RunPodSandbox", tonic::Code::Ok, Duration::from_millis(3));
        m.observe_cri_call(
            "ContainerStatus",
            tonic::Code::NotFound,
            Duration::from_micros(200),
        );
        m.observe_pull(Outcome::Success, Duration::from_secs(2));
        let registry = m.registry(NodeCollector::new(Arc::new(snapshot())));
        let text = encode(&registry).unwrap();
        let l = lines(&text);
        for want in [
            "# TYPE capcri_cri_request_duration_seconds histogram",
            "capcri_cri_request_duration_seconds_count{method=\"RunPodSandbox\",code=\"OK\"} 1",
            "capcri_cri_request_duration_seconds_bucket{le=\"0.005\",method=\"RunPodSandbox\",code=\"OK\"} 1",
            "capcri_cri_request_duration_seconds_bucket{le=\"0.0025\",method=\"RunPodSandbox\",code=\"OK\"} 0",
            "capcri_cri_request_duration_seconds_count{method=\"ContainerStatus\",code=\"NotFound\"} 1",
            "# TYPE capcri_policy_decisions counter",
            "capcri_policy_decisions_total{outcome=\"preflight-failed\"} 0",
            "capcri_policy_decisions_total{outcome=\"promoted\"} 0",
            "# TYPE capcri_image_pull_duration_seconds histogram",
            "capcri_image_pull_duration_seconds_count{outcome=\"success\"} 1",
            "capcri_image_pull_duration_seconds_count{outcome=\"failure\"} 0",
            "capcri_image_pull_duration_seconds_sum{outcome=\"success\"} 2.0",
            "# TYPE capcri_pods gauge",
            "capcri_pods{state=\"ready\"} 2",
            "capcri_pods{state=\"notready\"} 1",
            "# TYPE capcri_containers gauge",
            "capcri_containers{state=\"running\"} 3",
            "capcri_containers{state=\"exited\"} 1",
            "capcri_containers{state=\"created\"} 0",
            "# TYPE capcri_policy_reloads counter",
            "capcri_policy_reloads_total{outcome=\"success\"} 4",
            "capcri_policy_reloads_total{outcome=\"failure\"} 1",
            "# TYPE capcri_image_pull_bytes counter",
            "capcri_image_pull_bytes_total 12345",
        ] {
            assert!(l.contains(&want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(l.last(), Some(&"# EOF"));
    }

    #[test]
    fn policy_sysctls_count_by_key_and_outcome() {
        use crate::capabilities::policy::sysctls::SysctlOutcome;
        let m = Metrics::new();
        let key = "net.ipv4.ip_unprivileged_port_start";
        m.count_sysctl(key, SysctlOutcome::Applied);
        m.count_sysctl(key, SysctlOutcome::Applied);
        m.count_sysctl(key, SysctlOutcome::SkippedHostNetwork);
        m.count_sysctl("net.ipv4.ping_group_range", SysctlOutcome::OverriddenByPod);
        let text = encode(&m.registry(NodeCollector::new(Arc::new(snapshot())))).unwrap();
        let l = lines(&text);
        for want in [
            "# TYPE capcri_policy_sysctls counter",
            "capcri_policy_sysctls_total{key=\"net.ipv4.ip_unprivileged_port_start\",outcome=\"applied\"} 2",
            "capcri_policy_sysctls_total{key=\"net.ipv4.ip_unprivileged_port_start\",outcome=\"skipped_host_network\"} 1",
            "capcri_policy_sysctls_total{key=\"net.ipv4.ping_group_range\",outcome=\"overridden_by_pod\"} 1",
        ] {
            assert!(l.contains(&want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn decisions_count_each_outcome() {
        use crate::capabilities::kernel::{CapSet, Capability, ThreadCaps};
        let m = Metrics::new();
        let caps: CapSet = [Capability::NetBindService].into_iter().collect();
        let mut d = crate::capabilities::policy::Decision {
            allowed: true,
            deny_message: None,
            caps: ThreadCaps {
                bounding: caps,
                effective: caps,
                permitted: caps,
                inheritable: caps,
                ambient: caps,
            },
            exec_path: crate::capabilities::policy::ExecPath::Dmz,
            preflight: crate::capabilities::policy::PreflightMode::Enforce,
            preflight_failed: false,
            warnings: vec![],
            reasons: vec![],
            prediction: None,
            sysctls: Vec::new(),
        };
        m.count_decision(&d);
        d.allowed = false;
        d.preflight_failed = true;
        m.count_decision(&d);
        let text = encode(&m.registry(NodeCollector::new(Arc::new(snapshot())))).unwrap();
        let l = lines(&text);
        for want in [
            "capcri_policy_decisions_total{outcome=\"dmz\"} 1",
            "capcri_policy_decisions_total{outcome=\"promoted\"} 1",
            "capcri_policy_decisions_total{outcome=\"preflight-failed\"} 1",
            "capcri_policy_decisions_total{outcome=\"direct\"} 0",
            "capcri_policy_decisions_total{outcome=\"denied\"} 0",
        ] {
            assert!(l.contains(&want), "missing {want:?} in:\n{text}");
        }
    }

    async fn http_get(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoint_serves_metrics_refreshed_and_404_elsewhere() {
        let m = Metrics::new();
        let registry = m.registry(NodeCollector::new(Arc::new(snapshot())));
        let refreshed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = refreshed.clone();
        let refresh: Refresh = Arc::new(move || {
            let r = r.clone();
            Box::pin(async move {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        });
        let server = MetricsServer::bind(([127, 0, 0, 1], 0).into(), registry, refresh)
            .await
            .unwrap();
        let addr = server.local_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async move {
            let _ = stop_rx.await;
        }));

        let ok = http_get(addr, "GET", "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.to_lowercase().contains(&format!(
                "content-type: {}",
                OPENMETRICS_CONTENT_TYPE.to_lowercase()
            )),
            "{ok}"
        );
        assert!(ok.contains("capcri_pods{state=\"ready\"} 2"), "{ok}");
        assert!(ok.trim_end().ends_with("# EOF"), "{ok}");
        assert_eq!(refreshed.load(std::sync::atomic::Ordering::SeqCst), 1);

        let missing = http_get(addr, "GET", "/").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert!(missing.contains("GET /metrics"), "{missing}");
        let post = http_get(addr, "POST", "/metrics").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        stop_tx.send(()).unwrap();
        serving.await.unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener closes when the daemon stops"
        );
    }

    #[tokio::test]
    async fn a_busy_address_names_the_setting() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let refresh: Refresh = Arc::new(|| Box::pin(async {}));
        let registry = Metrics::new().registry(NodeCollector::new(Arc::new(snapshot())));
        let Err(err) = MetricsServer::bind(addr, registry, refresh).await else {
            panic!("binding a taken port must fail");
        };
        assert!(err.to_string().contains("--metrics-address"), "{err}");
    }
}
