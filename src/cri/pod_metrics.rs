//! ListMetricDescriptors and ListPodSandboxMetrics: the stats capcri
//! already reads (`node::stats`) as cAdvisor-named metrics, for kubelet's
//! `/metrics/cadvisor` when it takes them from the runtime
//! (`PodAndContainerStatsFromCRI`). Pure translation: the names, types and
//! label keys of containerd 2's implementation, so dashboards written for
//! cAdvisor or containerd read capcri's unchanged.
//!
//! Only what capcri measures is described, and every metric sent has a
//! descriptor with as many label keys as it has label values (kubelet's
//! collector drops a metric whose labels do not match its descriptor).

use k8s_cri::v1 as cri;

use crate::container::pod_network::InterfaceUsage;
use crate::node::stats::{ContainerUsage, PodUsage};

/// The labels of every metric, in this order: the pod's name and
/// namespace, the container's name, its id (the pod's for a pod-level
/// metric) and image (empty for a pod-level metric).
const BASE_LABELS: [&str; 5] = ["pod", "namespace", "container", "id", "image"];
/// Network metrics add the interface.
const NETWORK_LABELS: [&str; 6] = ["pod", "namespace", "container", "id", "image", "interface"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Labels {
    Base,
    Network,
}

struct Descriptor {
    name: &'static str,
    help: &'static str,
    labels: Labels,
}

const fn base(name: &'static str, help: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        labels: Labels::Base,
    }
}

const fn network(name: &'static str, help: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        labels: Labels::Network,
    }
}

const CPU_USAGE: Descriptor = base(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
);
const MEMORY_USAGE: Descriptor = base(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed",
);
const MEMORY_WORKING_SET: Descriptor = base(
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
);
const MEMORY_RSS: Descriptor = base("container_memory_rss", "Size of RSS in bytes.");
const FS_USAGE: Descriptor = base(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
);
const FS_INODES: Descriptor = base(
    "container_fs_inodes_total",
    "Number of inodes used by the container's writable layer.",
);
const LAST_SEEN: Descriptor = base(
    "container_last_seen",
    "Last time a container was seen by the exporter",
);
const START_TIME: Descriptor = base(
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds.",
);
const PROCESSES: Descriptor = base(
    "container_processes",
    "Number of processes running inside the container.",
);
const RX_BYTES: Descriptor = network(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received",
);
const RX_PACKETS: Descriptor = network(
    "container_network_receive_packets_total",
    "Cumulative count of packets received",
);
const RX_DROPPED: Descriptor = network(
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving",
);
const RX_ERRORS: Descriptor = network(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving",
);
const TX_BYTES: Descriptor = network(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted",
);
const TX_PACKETS: Descriptor = network(
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted",
);
const TX_DROPPED: Descriptor = network(
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting",
);
const TX_ERRORS: Descriptor = network(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting",
);

const ALL: [&Descriptor; 17] = [
    &CPU_USAGE,
    &MEMORY_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &FS_USAGE,
    &FS_INODES,
    &LAST_SEEN,
    &START_TIME,
    &PROCESSES,
    &RX_BYTES,
    &RX_PACKETS,
    &RX_DROPPED,
    &RX_ERRORS,
    &TX_BYTES,
    &TX_PACKETS,
    &TX_DROPPED,
    &TX_ERRORS,
];

/// Every metric ListPodSandboxMetrics can send.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    ALL.iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: match d.labels {
                Labels::Base => BASE_LABELS.iter().map(|s| s.to_string()).collect(),
                Labels::Network => NETWORK_LABELS.iter().map(|s| s.to_string()).collect(),
            },
        })
        .collect()
}

/// Collects one object's metrics, all with the same labels and timestamp.
struct Sink<'a> {
    labels: &'a [String],
    timestamp: i64,
    out: Vec<cri::Metric>,
}

impl Sink<'_> {
    fn push(&mut self, d: &Descriptor, kind: cri::MetricType, value: u64) {
        debug_assert_eq!(d.labels, Labels::Base);
        self.out
            .push(metric(d, kind, self.labels.to_vec(), self.timestamp, value));
    }
}

fn metric(
    d: &Descriptor,
    kind: cri::MetricType,
    label_values: Vec<String>,
    timestamp: i64,
    value: u64,
) -> cri::Metric {
    cri::Metric {
        name: d.name.to_string(),
        timestamp,
        metric_type: kind as i32,
        label_values,
        value: Some(cri::UInt64Value { value }),
    }
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

fn container_metrics(
    c: &ContainerUsage,
    pod_labels: [&str; 2],
    image: &str,
    now: i64,
) -> cri::ContainerMetrics {
    use cri::MetricType::{Counter, Gauge};
    let r = &c.container;
    let labels = [pod_labels[0], pod_labels[1], r.name(), &r.id, image].map(str::to_string);
    let timestamp = sampled_at(&c.usage, now);
    let mut sink = Sink {
        labels: &labels,
        timestamp,
        out: Vec::new(),
    };
    sink.push(&LAST_SEEN, Gauge, seconds(now));
    if r.started_at > 0 {
        sink.push(&START_TIME, Gauge, seconds(r.started_at));
    }
    if let Some(ns) = c.usage.cpu_ns {
        // Whole seconds: the CRI carries integers (containerd truncates the
        // same way).
        sink.push(&CPU_USAGE, Counter, ns / NANOS_PER_SECOND);
    }
    if let Some(m) = c.usage.memory {
        sink.push(&MEMORY_USAGE, Gauge, m.usage_bytes);
        sink.push(&MEMORY_WORKING_SET, Gauge, m.working_set_bytes);
        sink.push(&MEMORY_RSS, Gauge, m.rss_bytes);
    }
    if let Some(l) = c.writable_layer {
        sink.push(&FS_USAGE, Gauge, l.bytes);
        sink.push(&FS_INODES, Gauge, l.inodes);
    }
    cri::ContainerMetrics {
        container_id: r.id.clone(),
        metrics: sink.out,
    }
}

fn interface_metrics(
    i: &InterfaceUsage,
    labels: &[String; 5],
    timestamp: i64,
    out: &mut Vec<cri::Metric>,
) {
    let label_values = || {
        let mut v = labels.to_vec();
        v.push(i.name.clone());
        v
    };
    for (d, value) in [
        (&RX_BYTES, i.rx_bytes),
        (&RX_PACKETS, i.rx_packets),
        (&RX_DROPPED, i.rx_dropped),
        (&RX_ERRORS, i.rx_errors),
        (&TX_BYTES, i.tx_bytes),
        (&TX_PACKETS, i.tx_packets),
        (&TX_DROPPED, i.tx_dropped),
        (&TX_ERRORS, i.tx_errors),
    ] {
        out.push(metric(
            d,
            cri::MetricType::Counter,
            label_values(),
            timestamp,
            value,
        ));
    }
}

/// One pod's metrics: its network interfaces and process count at pod
/// level, then each live container's. `image_name` gives the name a
/// container's image is reported under (`ImageStore::reported_name`);
/// `now` is unix nanoseconds.
pub fn pod_sandbox_metrics(
    p: &PodUsage,
    image_name: &mut dyn FnMut(&crate::node::stats::StatsSubject) -> String,
    now: i64,
) -> cri::PodSandboxMetrics {
    let meta = p.pod.metadata.clone().unwrap_or_default();
    let pod_labels = [meta.name.as_str(), meta.namespace.as_str()];
    let labels = [pod_labels[0], pod_labels[1], "", &p.pod.id, ""].map(str::to_string);
    let mut metrics = Vec::new();
    if let Some(n) = &p.network {
        for i in n.default_interface.iter().chain(&n.interfaces) {
            interface_metrics(i, &labels, n.timestamp, &mut metrics);
        }
    }
    if let Some(count) = p.process_count {
        let timestamp = sampled_at(&p.usage, now);
        metrics.push(metric(
            &PROCESSES,
            cri::MetricType::Gauge,
            labels.to_vec(),
            timestamp,
            count,
        ));
    }
    cri::PodSandboxMetrics {
        pod_sandbox_id: p.pod.id.clone(),
        metrics,
        container_metrics: p
            .containers
            .iter()
            .map(|c| container_metrics(c, pod_labels, &image_name(&c.container), now))
            .collect(),
    }
}

/// When `usage` was read; `now` for a sample that carries no time.
fn sampled_at(usage: &crate::node::stats::CgroupUsage, now: i64) -> i64 {
    if usage.timestamp > 0 {
        usage.timestamp
    } else {
        now
    }
}

fn seconds(unix_nanos: i64) -> u64 {
    u64::try_from(unix_nanos).unwrap_or(0) / NANOS_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::pod_network::NetworkUsage;
    use crate::cri::test_records;
    use crate::host::MemoryUsage;
    use crate::node::stats::CgroupUsage;
    use std::collections::HashMap;

    fn pod_usage() -> PodUsage {
        let mut pod = test_records::pod("p1", crate::pod::PodState::Ready, &[]);
        pod.config.metadata = Some(cri::PodSandboxMetadata {
            name: "web".into(),
            namespace: "shop".into(),
            ..Default::default()
        });
        let mut record = test_records::container(
            "c1",
            crate::container::ContainerState::Running,
            cri::ImageSpec::default(),
        );
        record.pod_id = "p1".into();
        record.config.metadata = Some(cri::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        });
        record.started_at = 5_000_000_000;
        let eth0 = InterfaceUsage {
            name: "eth0".into(),
            rx_bytes: 10,
            rx_packets: 1,
            rx_dropped: 0,
            rx_errors: 0,
            tx_bytes: 20,
            tx_packets: 2,
            tx_dropped: 0,
            tx_errors: 0,
        };
        PodUsage {
            pod: crate::node::stats::PodStatsSubject::of(&pod, || test_records::pod_cgroup(&pod)),
            usage: CgroupUsage::default(),
            containers: vec![ContainerUsage {
                container: crate::node::stats::StatsSubject::of(&record),
                usage: CgroupUsage {
                    timestamp: 7,
                    cpu_ns: Some(3_500_000_000),
                    nano_cores: None,
                    memory: Some(MemoryUsage {
                        usage_bytes: 100,
                        working_set_bytes: 80,
                        rss_bytes: 60,
                        page_faults: 0,
                        major_page_faults: 0,
                        available_bytes: None,
                    }),
                    processes: Some(1),
                },
                writable_layer: None,
                layer_mountpoint: "/var/lib".into(),
            }],
            network: Some(NetworkUsage {
                timestamp: 9,
                default_interface: Some(eth0),
                interfaces: Vec::new(),
            }),
            process_count: Some(2),
        }
    }

    /// ListPodSandboxStats copies a `PodStatsSubject` instead of the pod:
    /// the answer's attributes must be the pod's, and the figures are
    /// looked for where the pod's cgroup and network namespace are.
    #[test]
    fn the_pod_stats_subject_reports_what_the_pod_says() {
        let pod = test_records::pod("p7", crate::pod::PodState::Ready, &[("app", "web")]);
        let subject =
            crate::node::stats::PodStatsSubject::of(&pod, || test_records::pod_cgroup(&pod));
        assert_eq!(
            (subject.state, &subject.network_pin),
            (pod.state, &pod.network_pin())
        );
        assert!(subject.network_pin.is_some(), "a pod network of its own");
        assert_eq!(subject.cgroup.dir, "/capcri/p7");
        let bytes = crate::cri::stats_wire::pod_sandbox_stats(&PodUsage {
            pod: subject,
            usage: CgroupUsage::default(),
            containers: Vec::new(),
            network: None,
            process_count: None,
        });
        let stats = <cri::PodSandboxStatsResponse as prost::Message>::decode(&bytes[..])
            .expect("decodes")
            .stats
            .expect("its stats");
        assert_eq!(
            stats.attributes,
            Some(cri::PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.config.metadata.clone(),
                labels: pod.config.labels.clone(),
                annotations: pod.config.annotations.clone(),
            })
        );
        let attributes = stats.attributes.unwrap();
        assert!(!attributes.labels.is_empty() && !attributes.annotations.is_empty());
    }

    /// The stats calls copy a `StatsSubject` instead of the record: it
    /// must carry every field they report, as the record has it.
    #[test]
    fn the_stats_subject_reports_what_the_record_says() {
        let mut record = test_records::container(
            "c9",
            crate::container::ContainerState::Running,
            cri::ImageSpec {
                image: "sha256:abc".into(),
                user_specified_image: "busybox:1".into(),
                ..Default::default()
            },
        );
        record.pod_id = "p9".into();
        record.created_at = 11;
        record.started_at = 12;
        let subject = crate::node::stats::StatsSubject::of(&record);
        assert_eq!(subject.asked_image(), record.asked_image());
        assert_eq!(subject.name(), record.name());
        assert_eq!(
            (&subject.pod_id, subject.created_at, subject.started_at),
            (&record.pod_id, 11, 12)
        );
        assert_eq!(subject.image_id, record.image_id);
        assert_eq!(subject.upper, record.writable_dir.join("upper"));
        // The start time is the record's at each call; the rest is kept
        // with the record, and a clone of it made later shares it.
        let mut started = record.clone();
        started.started_at = 42;
        let again = crate::node::stats::StatsSubject::of(&started);
        assert_eq!(again.started_at, 42);
        assert!(std::ptr::eq(&*again as *const _, &*subject as *const _));
        let bytes = crate::cri::stats_wire::container_stats(&ContainerUsage {
            container: subject,
            usage: CgroupUsage::default(),
            writable_layer: None,
            layer_mountpoint: "/var/lib".into(),
        });
        let stats = <cri::ContainerStatsResponse as prost::Message>::decode(&bytes[..])
            .expect("decodes")
            .stats
            .expect("its stats");
        assert_eq!(
            stats.attributes,
            Some(cri::ContainerAttributes {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            })
        );
        let attributes = stats.attributes.unwrap();
        assert!(!attributes.labels.is_empty() && !attributes.annotations.is_empty());
        assert!(attributes.metadata.is_some());
    }

    #[test]
    fn every_metric_has_a_descriptor_with_matching_labels() {
        let keys: HashMap<String, usize> = descriptors()
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
        assert_eq!(keys.len(), ALL.len(), "descriptor names are unique");
        let m = pod_sandbox_metrics(&pod_usage(), &mut |_| "busybox:1".into(), 42_000_000_000);
        let all = m
            .metrics
            .iter()
            .chain(m.container_metrics.iter().flat_map(|c| &c.metrics));
        for metric in all {
            assert_eq!(
                keys.get(&metric.name),
                Some(&metric.label_values.len()),
                "{metric:?}"
            );
        }
    }

    #[test]
    fn values_and_labels_are_cadvisors() {
        let m = pod_sandbox_metrics(&pod_usage(), &mut |_| "busybox:1".into(), 42_000_000_000);
        assert_eq!(m.pod_sandbox_id, "p1");
        let rx = m
            .metrics
            .iter()
            .find(|x| x.name == RX_BYTES.name)
            .expect("rx bytes");
        assert_eq!(rx.label_values, ["web", "shop", "", "p1", "", "eth0"]);
        assert_eq!(rx.value.as_ref().unwrap().value, 10);
        assert_eq!(rx.timestamp, 9);
        assert_eq!(rx.metric_type, cri::MetricType::Counter as i32);
        let c = &m.container_metrics[0];
        assert_eq!(c.container_id, "c1");
        let get = |name: &str| {
            c.metrics
                .iter()
                .find(|x| x.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let cpu = get(CPU_USAGE.name);
        assert_eq!(cpu.label_values, ["web", "shop", "app", "c1", "busybox:1"]);
        assert_eq!(cpu.value.as_ref().unwrap().value, 3, "whole seconds");
        assert_eq!(get(MEMORY_WORKING_SET.name).value.unwrap().value, 80);
        assert_eq!(get(START_TIME.name).value.unwrap().value, 5);
        assert_eq!(get(LAST_SEEN.name).value.unwrap().value, 42);
        assert!(c.metrics.iter().all(|x| x.name != FS_USAGE.name));
    }
}
