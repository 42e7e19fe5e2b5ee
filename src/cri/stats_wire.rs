//! ContainerStats, ListContainerStats, PodSandboxStats and
//! ListPodSandboxStats answers written as protobuf bytes. Pure.
//!
//! Each item is its attributes, encoded once per record and kept with it
//! (`ContainerRecord::stats_facts`, `PodSandbox::stats_facts`), then its
//! figures, encoded by prost from `convert`'s message without attributes.
//! kubelet asks for every pod's and container's stats every 10 s; at 250
//! pods, copying each record's label and annotation maps into a message
//! only to encode the same bytes again was a sixth of the list calls'
//! time. As in `list_wire`, protobuf allows it: a message is the
//! concatenation of its fields in any order, a repeated field the
//! concatenation of its entries.
//!
//! Unit tests decode what is written with k8s-cri's messages and compare
//! it with the message built field by field from the record.

use super::convert;
use crate::node::stats::{ContainerUsage, PodUsage};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// Field numbers of CRI v1 (`runtime.v1`, k8s-cri's api.proto).
/// `stats` of all four answers: `ContainerStatsResponse`,
/// `ListContainerStatsResponse`, `PodSandboxStatsResponse` and
/// `ListPodSandboxStatsResponse`.
const STATS: u32 = 1;
/// `ContainerStats.attributes` and `PodSandboxStats.attributes`.
const ATTRIBUTES: u32 = 1;
/// `PodSandboxStats.linux`.
const POD_LINUX: u32 = 2;
/// `LinuxPodSandboxStats.containers`.
const LINUX_CONTAINERS: u32 = 5;

/// What a length-delimited field of `len` bytes takes, key included.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_header(out: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn put_bytes_field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_header(out, tag, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends the fields of `m`. A `Vec` grows as it is written, so prost's
/// only error (a buffer too small for the message) cannot happen.
fn put_fields(out: &mut Vec<u8>, m: &impl Message) {
    let _ = m.encode(out);
}

/// Appends `c` as a `ContainerStats` in field `tag`.
fn put_container(out: &mut Vec<u8>, tag: u32, c: &ContainerUsage) {
    let attributes = &c.container.attributes;
    let figures = convert::container_stats_figures(c);
    put_header(
        out,
        tag,
        field_len(ATTRIBUTES, attributes.len()) + figures.encoded_len(),
    );
    put_bytes_field(out, ATTRIBUTES, attributes);
    put_fields(out, &figures);
}

/// Appends `p` as a `PodSandboxStats` in field `tag`; `scratch` holds its
/// `linux` field while its length is not yet known.
fn put_pod(out: &mut Vec<u8>, tag: u32, p: &PodUsage, scratch: &mut Vec<u8>) {
    scratch.clear();
    put_fields(scratch, &convert::pod_linux_figures(p));
    for c in &p.containers {
        put_container(scratch, LINUX_CONTAINERS, c);
    }
    let attributes = &p.pod.attributes;
    put_header(
        out,
        tag,
        field_len(ATTRIBUTES, attributes.len()) + field_len(POD_LINUX, scratch.len()),
    );
    put_bytes_field(out, ATTRIBUTES, attributes);
    put_bytes_field(out, POD_LINUX, scratch);
}

/// A `ContainerStatsResponse`.
pub fn container_stats(c: &ContainerUsage) -> Vec<u8> {
    let mut out = Vec::new();
    put_container(&mut out, STATS, c);
    out
}

/// A `ListContainerStatsResponse`, in the order given.
pub fn list_container_stats(cs: &[ContainerUsage]) -> Vec<u8> {
    // About what an item takes with kubelet's labels and annotations, so
    // a node's answer is written without growing the buffer many times.
    let mut out = Vec::with_capacity(cs.len() * 512);
    for c in cs {
        put_container(&mut out, STATS, c);
    }
    out
}

/// A `PodSandboxStatsResponse`.
pub fn pod_sandbox_stats(p: &PodUsage) -> Vec<u8> {
    let mut out = Vec::new();
    put_pod(&mut out, STATS, p, &mut Vec::new());
    out
}

/// A `ListPodSandboxStatsResponse`, in the order given.
pub fn list_pod_sandbox_stats(ps: &[PodUsage]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ps.len() * 1024);
    let mut scratch = Vec::new();
    for p in ps {
        put_pod(&mut out, STATS, p, &mut scratch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::pod_network::{InterfaceUsage, NetworkUsage};
    use crate::container::{ContainerRecord, ContainerState};
    use crate::cri::test_records::{container, map, pod, pod_cgroup};
    use crate::host::MemoryUsage;
    use crate::node::stats::{CgroupUsage, LayerUsage, PodStatsSubject, StatsSubject};
    use crate::pod::PodState;
    use k8s_cri::v1 as cri;

    fn usage(timestamp: i64) -> CgroupUsage {
        CgroupUsage {
            timestamp,
            cpu_ns: Some(3_500_000_000),
            nano_cores: Some(250_000_000),
            memory: Some(MemoryUsage {
                usage_bytes: 100,
                working_set_bytes: 80,
                rss_bytes: 60,
                page_faults: 7,
                major_page_faults: 1,
                available_bytes: Some(900),
            }),
            processes: Some(3),
        }
    }

    /// The figures of `records` (see `records_of`): the first running,
    /// with every figure and its layer read; the second just created, with
    /// none yet.
    fn containers(records: &[ContainerRecord]) -> Vec<ContainerUsage> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| ContainerUsage {
                container: StatsSubject::of(r),
                usage: if i == 0 {
                    usage(7)
                } else {
                    CgroupUsage::default()
                },
                writable_layer: (i == 0).then_some(LayerUsage {
                    bytes: 4096,
                    inodes: 3,
                }),
                layer_mountpoint: "/var/lib/capcri/containers".into(),
            })
            .collect()
    }

    /// The `ContainerStats` the record and figures make, field by field.
    fn expected_container(c: &ContainerUsage, records: &[ContainerRecord]) -> cri::ContainerStats {
        let r = records
            .iter()
            .find(|r| r.id == c.container.id)
            .expect("a record per usage");
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            }),
            ..convert::container_stats_figures(c)
        }
    }

    /// A pod's two containers: one with labels, annotations and metadata,
    /// one with none of them.
    fn records_of(pod_id: &str) -> Vec<ContainerRecord> {
        let mut full = container(
            &format!("{pod_id}-c1"),
            ContainerState::Running,
            Default::default(),
        );
        full.pod_id = pod_id.into();
        full.config.labels = map(&[("io.kubernetes.container.name", "app")]);
        full.config.annotations = map(&[("io.kubernetes.container.hash", "1"), ("b", "")]);
        let mut bare = container(
            &format!("{pod_id}-c2"),
            ContainerState::Created,
            Default::default(),
        );
        bare.pod_id = pod_id.into();
        bare.config.labels.clear();
        bare.config.annotations.clear();
        bare.config.metadata = None;
        vec![full, bare]
    }

    #[test]
    fn container_stats_decode_as_the_record_and_figures_make_them() {
        let records = records_of("p1");
        let cs = containers(&records);
        // Twice: the second round writes from the bytes kept by the first.
        for _ in 0..2 {
            let got = cri::ListContainerStatsResponse::decode(&list_container_stats(&cs)[..])
                .expect("decodes");
            let want = cri::ListContainerStatsResponse {
                stats: cs.iter().map(|c| expected_container(c, &records)).collect(),
            };
            assert_eq!(got, want);
            for c in &cs {
                let got =
                    cri::ContainerStatsResponse::decode(&container_stats(c)[..]).expect("decodes");
                assert_eq!(got.stats, Some(expected_container(c, &records)));
            }
        }
        let got = cri::ListContainerStatsResponse::decode(&list_container_stats(&[])[..])
            .expect("decodes");
        assert!(got.stats.is_empty());
    }

    #[test]
    fn pod_stats_decode_with_their_containers_in_order() {
        let eth0 = InterfaceUsage {
            name: "eth0".into(),
            rx_bytes: 10,
            rx_packets: 1,
            rx_dropped: 0,
            rx_errors: 2,
            tx_bytes: 20,
            tx_packets: 2,
            tx_dropped: 0,
            tx_errors: 0,
        };
        let records = records_of("p1");
        let mut ready = pod("p1", PodState::Ready, &[("app", "web")]);
        ready.config.annotations = map(&[("kubernetes.io/config.source", "api")]);
        let mut bare = pod("p2", PodState::NotReady, &[]);
        bare.config.annotations.clear();
        bare.config.metadata = None;
        let pods = [
            PodUsage {
                pod: PodStatsSubject::of(&ready, || pod_cgroup(&ready)),
                usage: usage(9),
                containers: containers(&records),
                network: Some(NetworkUsage {
                    timestamp: 9,
                    default_interface: Some(eth0.clone()),
                    interfaces: vec![eth0],
                }),
                process_count: Some(2),
            },
            PodUsage {
                pod: PodStatsSubject::of(&bare, || pod_cgroup(&bare)),
                usage: CgroupUsage::default(),
                containers: Vec::new(),
                network: None,
                process_count: None,
            },
        ];
        let expected = |p: &PodUsage| {
            let record = [&ready, &bare]
                .into_iter()
                .find(|r| r.id == p.pod.id)
                .expect("a pod per usage");
            cri::PodSandboxStats {
                attributes: Some(cri::PodSandboxAttributes {
                    id: record.id.clone(),
                    metadata: record.config.metadata.clone(),
                    labels: record.config.labels.clone(),
                    annotations: record.config.annotations.clone(),
                }),
                linux: Some(cri::LinuxPodSandboxStats {
                    containers: p
                        .containers
                        .iter()
                        .map(|c| expected_container(c, &records))
                        .collect(),
                    ..convert::pod_linux_figures(p)
                }),
                windows: None,
            }
        };
        for _ in 0..2 {
            let got = cri::ListPodSandboxStatsResponse::decode(&list_pod_sandbox_stats(&pods)[..])
                .expect("decodes");
            let want = cri::ListPodSandboxStatsResponse {
                stats: pods.iter().map(expected).collect(),
            };
            assert_eq!(got, want);
            assert_eq!(
                got.stats[0].linux.as_ref().map(|l| l.containers.len()),
                Some(2)
            );
            for p in &pods {
                let got = cri::PodSandboxStatsResponse::decode(&pod_sandbox_stats(p)[..])
                    .expect("decodes");
                assert_eq!(got.stats, Some(expected(p)));
            }
        }
        assert!(ready.stats_facts.is_set() && bare.stats_facts.is_set());
    }

    /// The kept attributes are the record's own: a label map of many
    /// entries comes out whole, whatever its order.
    #[test]
    fn kept_attributes_carry_every_label_and_annotation() {
        let mut r = container("c1", ContainerState::Running, Default::default());
        let many: Vec<(String, String)> =
            (0..40).map(|i| (format!("k{i}"), "v".repeat(i))).collect();
        r.config.labels = many.iter().cloned().collect();
        r.config.annotations = many.into_iter().collect();
        let subject = StatsSubject::of(&r);
        let got = cri::ContainerAttributes::decode(&subject.attributes[..]).expect("decodes");
        assert_eq!(got.labels, r.config.labels);
        assert_eq!(got.annotations, r.config.annotations);
        assert_eq!(got.id, "c1");
        assert!(r.stats_facts.is_set(), "kept with the record");
    }
}
