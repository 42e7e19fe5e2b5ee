//! Pod and container records for the unit tests of the CRI translations
//! (`list_wire`, `pod_metrics`): every field set, as a live node has them.

use crate::container::{ContainerRecord, ContainerState};
use crate::pod::{PodSandbox, PodState};
use k8s_cri::v1 as cri;
use std::collections::HashMap;

pub(super) fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn pod(id: &str, state: PodState, labels: &[(&str, &str)]) -> PodSandbox {
    PodSandbox {
        id: id.into(),
        config: cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("name-{id}"),
                uid: format!("uid-{id}"),
                namespace: "ns".into(),
                attempt: 3,
            }),
            hostname: "h".into(),
            labels: map(labels),
            annotations: map(&[("a/b", "c"), ("kubernetes.io/config.seen", "now")]),
            ..Default::default()
        },
        runtime_handler: "runc".into(),
        created_at: 1_700_000_000_000_000_123,
        state,
        pod_dir: "/run/capcri/pods/x".into(),
        ips: vec!["10.0.0.2".into()],
        network_policy: Default::default(),
        cgroup: None,
        list_entry: Default::default(),
        stats_facts: Default::default(),
    }
}

/// The cgroup a pod without a kubelet parent gets (`Node::pod_cgroup`),
/// under the parent `/capcri`.
pub(super) fn pod_cgroup(pod: &PodSandbox) -> crate::util::cgroup_paths::PodCgroup {
    crate::util::cgroup_paths::PodCgroup::resolve(
        crate::util::cgroup_paths::CgroupDriver::Cgroupfs,
        "",
        "/capcri",
        &pod.id,
    )
    .expect("capcri's own cgroup for a test pod")
}

pub(super) fn container(id: &str, state: ContainerState, image: cri::ImageSpec) -> ContainerRecord {
    ContainerRecord {
        id: id.into(),
        pod_id: format!("pod-{id}"),
        config: cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: format!("c-{id}"),
                attempt: 1,
            }),
            image: Some(image),
            labels: map(&[("io.kubernetes.container.name", "c")]),
            annotations: map(&[("io.kubernetes.container.hash", "1234"), ("e", "")]),
            ..Default::default()
        },
        image_ref: "busybox:1.29".into(),
        image_id: "sha256:abc".into(),
        image_digest_ref: "busybox@sha256:def".into(),
        created_at: 42,
        started_at: 43,
        finished_at: 0,
        exit_code: 0,
        state,
        reason: String::new(),
        message: String::new(),
        log_path: "/var/log/pods/x/c.log".into(),
        bundle: "/b".into(),
        writable_dir: "/w".into(),
        pid: 7,
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        decision: None,
        list_entry: Default::default(),
        stats_facts: Default::default(),
        image_key: Default::default(),
    }
}
