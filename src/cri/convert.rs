//! Domain records to CRI messages. Pure.

use crate::container::{ContainerRecord, ContainerState};
use crate::image::ImageRecord;
use crate::pod::{PodSandbox, PodState};
use k8s_cri::v1 as cri;

pub(super) fn pod_state(s: PodState) -> cri::PodSandboxState {
    match s {
        PodState::Ready => cri::PodSandboxState::SandboxReady,
        PodState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}

pub fn pod_sandbox(p: &PodSandbox) -> cri::PodSandbox {
    cri::PodSandbox {
        id: p.id.clone(),
        metadata: p.config.metadata.clone(),
        state: pod_state(p.state) as i32,
        created_at: p.created_at,
        labels: p.config.labels.clone(),
        annotations: p.config.annotations.clone(),
        runtime_handler: p.runtime_handler.clone(),
    }
}

pub fn pod_sandbox_status(p: &PodSandbox) -> cri::PodSandboxStatus {
    let options = p
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    cri::PodSandboxStatus {
        id: p.id.clone(),
        metadata: p.config.metadata.clone(),
        state: pod_state(p.state) as i32,
        created_at: p.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: p.ips.first().cloned().unwrap_or_default(),
            additional_ips: p
                .ips
                .iter()
                .skip(1)
                .map(|ip| cri::PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace { options }),
        }),
        labels: p.config.labels.clone(),
        annotations: p.config.annotations.clone(),
        runtime_handler: p.runtime_handler.clone(),
    }
}

pub(super) fn container_state(s: ContainerState) -> i32 {
    crate::container::cri_state(s) as i32
}

/// `image_name`: `ImageStore::reported_name` of the container's image,
/// the tag containerd reports there (never the id kubelet created it with).
pub(super) fn image_spec(c: &ContainerRecord, image_name: &str) -> cri::ImageSpec {
    let mut spec = c.config.image.clone().unwrap_or_default();
    spec.image = image_name.to_string();
    spec
}

pub fn container(c: &ContainerRecord, image_name: &str) -> cri::Container {
    cri::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.pod_id.clone(),
        metadata: c.config.metadata.clone(),
        image: Some(image_spec(c, image_name)),
        image_ref: c.image_id.clone(),
        state: container_state(c.state),
        created_at: c.created_at,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        image_id: c.image_id.clone(),
    }
}

pub fn container_status(c: &ContainerRecord, image_name: &str) -> cri::ContainerStatus {
    let mounts = c.config.mounts.to_vec();
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: container_state(c.state),
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(image_spec(c, image_name)),
        image_ref: c.image_digest_ref.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts,
        log_path: c.log_path.display().to_string(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|r| cri::ContainerResources {
                linux: Some(r),
                windows: None,
            }),
        image_id: c.image_id.clone(),
        user: Some(cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: c.uid as i64,
                gid: c.gid as i64,
                supplemental_groups: c.additional_gids.iter().map(|g| *g as i64).collect(),
            }),
        }),
    }
}

pub fn image(i: &ImageRecord) -> cri::Image {
    let (uid, username) = i.uid_and_username();
    cri::Image {
        id: i.id.clone(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

fn uint(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

fn cpu_usage(u: &crate::node::stats::CgroupUsage) -> Option<cri::CpuUsage> {
    u.cpu_ns.map(|ns| cri::CpuUsage {
        timestamp: u.timestamp,
        usage_core_nano_seconds: uint(ns),
        usage_nano_cores: u.nano_cores.and_then(uint),
    })
}

fn memory_usage(u: &crate::node::stats::CgroupUsage) -> Option<cri::MemoryUsage> {
    u.memory.map(|m| cri::MemoryUsage {
        timestamp: u.timestamp,
        working_set_bytes: uint(m.working_set_bytes),
        available_bytes: m.available_bytes.and_then(uint),
        usage_bytes: uint(m.usage_bytes),
        rss_bytes: uint(m.rss_bytes),
        page_faults: uint(m.page_faults),
        major_page_faults: uint(m.major_page_faults),
    })
}

/// A container's figures as a `ContainerStats` without its attributes,
/// which `stats_wire` writes from the bytes kept with the record.
pub fn container_stats_figures(c: &crate::node::stats::ContainerUsage) -> cri::ContainerStats {
    cri::ContainerStats {
        attributes: None,
        cpu: cpu_usage(&c.usage),
        memory: memory_usage(&c.usage),
        writable_layer: c.writable_layer.map(|l| cri::FilesystemUsage {
            timestamp: c.usage.timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: c.layer_mountpoint.display().to_string(),
            }),
            used_bytes: uint(l.bytes),
            inodes_used: uint(l.inodes),
        }),
        swap: None,
    }
}

fn interface_usage(
    i: &crate::container::pod_network::InterfaceUsage,
) -> cri::NetworkInterfaceUsage {
    cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: uint(i.rx_bytes),
        rx_errors: uint(i.rx_errors),
        tx_bytes: uint(i.tx_bytes),
        tx_errors: uint(i.tx_errors),
    }
}

fn network_usage(n: &crate::container::pod_network::NetworkUsage) -> cri::NetworkUsage {
    cri::NetworkUsage {
        timestamp: n.timestamp,
        default_interface: n.default_interface.as_ref().map(interface_usage),
        interfaces: n.interfaces.iter().map(interface_usage).collect(),
    }
}

/// A pod's own figures as its `LinuxPodSandboxStats`, without its
/// containers' (`stats_wire` writes those after it).
pub fn pod_linux_figures(p: &crate::node::stats::PodUsage) -> cri::LinuxPodSandboxStats {
    cri::LinuxPodSandboxStats {
        cpu: cpu_usage(&p.usage),
        memory: memory_usage(&p.usage),
        network: p.network.as_ref().map(network_usage),
        process: p.process_count.map(|n| cri::ProcessUsage {
            timestamp: p.usage.timestamp,
            process_count: uint(n),
        }),
        containers: Vec::new(),
    }
}
