//! cgroup resources, the device cgroup, the OOM score and sysctls, as
//! containerd sets them from `LinuxContainerResources`.

use std::collections::HashMap;

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxHugepageLimit, LinuxMemory, LinuxResources,
};

use super::{SpecError, security_context};

/// The device cgroup rules, written out in the spec for cgroup v1 and v2
/// alike. Unprivileged: deny everything, then allow what runc allows every
/// container (its specconv `AllowedDevices`): mknod of any node (creating
/// one is harmless, opening it is what the rules guard), and read, write
/// and mknod of null, zero, full, random, urandom, tty, console, ptmx,
/// /dev/pts/* and /dev/net/tun. So a root container with CAP_MKNOD can
/// make a node for the host's disk but not open it (EPERM). libcgroups
/// appends the same list itself (v1, and v2 with `cgroupsv2_devices`); the
/// spec says it so it does not depend on that. Privileged: allow all, as
/// containerd does (the container gets the host's /dev).
fn device_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    let rule = |allow: bool,
                typ: Option<LinuxDeviceType>,
                major: Option<i64>,
                minor: Option<i64>,
                access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow);
        r.set_typ(typ);
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    if privileged {
        return vec![rule(true, None, None, None, "rwm")];
    }
    let c = Some(LinuxDeviceType::C);
    let mut rules = vec![
        rule(false, None, None, None, "rwm"),
        rule(true, c, None, None, "m"),
        rule(true, Some(LinuxDeviceType::B), None, None, "m"),
    ];
    for (major, minor) in ALLOWED_CHAR_DEVICES {
        rules.push(rule(true, c, Some(major), minor, "rwm"));
    }
    rules
}

/// (major, minor) of the character devices every container may use; a
/// minor of None is all of them.
const ALLOWED_CHAR_DEVICES: [(i64, Option<i64>); 10] = [
    (1, Some(3)),    // /dev/null
    (1, Some(5)),    // /dev/zero
    (1, Some(7)),    // /dev/full
    (1, Some(8)),    // /dev/random
    (1, Some(9)),    // /dev/urandom
    (5, Some(0)),    // /dev/tty
    (5, Some(1)),    // /dev/console
    (5, Some(2)),    // /dev/ptmx
    (136, None),     // /dev/pts/*
    (10, Some(200)), // /dev/net/tun
];

fn non_negative(value: i64, field: &str) -> Result<u64, SpecError> {
    u64::try_from(value)
        .map_err(|_| SpecError::invalid(field, format!("{value} is negative; use a value >= 0")))
}

/// linux.resources of the container.
///
/// Memory: the swap limit equals the memory limit unless the CRI sets one,
/// so a container does not swap by default (containerd, when the swap
/// controller exists; on this host memory.memsw.* is present).
pub fn container_resources(container: &ContainerConfig) -> Result<LinuxResources, SpecError> {
    let privileged = security_context(container).is_some_and(|sc| sc.privileged);
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(device_rules(privileged)));
    let Some(r) = container.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
        return Ok(resources);
    };

    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    if r.cpu_period != 0 {
        cpu.set_period(Some(non_negative(r.cpu_period, "resources.cpu_period")?));
        cpu_set = true;
    }
    if r.cpu_quota != 0 {
        // -1 means "no limit" in cgroup v1's cpu.cfs_quota_us.
        cpu.set_quota(Some(r.cpu_quota));
        cpu_set = true;
    }
    if r.cpu_shares != 0 {
        cpu.set_shares(Some(non_negative(r.cpu_shares, "resources.cpu_shares")?));
        cpu_set = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        cpu_set = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
        cpu_set = true;
    }
    if cpu_set {
        resources.set_cpu(Some(cpu));
    }

    if r.memory_limit_in_bytes != 0 || r.memory_swap_limit_in_bytes != 0 {
        let mut memory = LinuxMemory::default();
        if r.memory_limit_in_bytes != 0 {
            memory.set_limit(Some(r.memory_limit_in_bytes));
            memory.set_swap(Some(r.memory_limit_in_bytes));
        }
        if r.memory_swap_limit_in_bytes != 0 {
            memory.set_swap(Some(r.memory_swap_limit_in_bytes));
        }
        resources.set_memory(Some(memory));
    }

    if !r.hugepage_limits.is_empty() {
        let mut limits = Vec::with_capacity(r.hugepage_limits.len());
        for h in &r.hugepage_limits {
            let limit = i64::try_from(h.limit).map_err(|_| {
                SpecError::invalid(
                    "resources.hugepage_limits",
                    format!(
                        "limit {} of page size {} is too large",
                        h.limit, h.page_size
                    ),
                )
            })?;
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(h.page_size.clone());
            l.set_limit(limit);
            limits.push(l);
        }
        resources.set_hugepage_limits(Some(limits));
    }

    for key in r.unified.keys() {
        crate::util::cgroup_paths::validate_unified_key(key)
            .map_err(|e| SpecError::invalid("resources.unified", e))?;
    }
    if !r.unified.is_empty() {
        resources.set_unified(Some(r.unified.clone().into_iter().collect()));
    }
    Ok(resources)
}

/// The kernel's range of oom_score_adj (OOM_SCORE_ADJ_MIN..MAX); a write
/// outside it fails with EINVAL.
pub const OOM_SCORE_ADJ_RANGE: (i32, i32) = (-1000, 1000);

/// containerd's `defaultSandboxOOMAdj`: the pod's own processes (here the
/// monitor and the pod init, containerd's shim and pause) are the last
/// an OOM kill picks, since their death takes every container with them.
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

/// process.oomScoreAdj as kubelet asked (-997 for Guaranteed and critical
/// pods, 1000 for BestEffort, in between for Burstable), held to the
/// kernel's range. Always set, as containerd does (0 when the CRI has no
/// resources), so a container never inherits the monitor's score. Where
/// the kernel would refuse a value, [`oom_score_adj_within`] raises it.
pub fn oom_score_adj(container: &ContainerConfig) -> Option<i32> {
    let requested = container
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .map(|r| r.oom_score_adj)
        .unwrap_or(0);
    let (min, max) = OOM_SCORE_ADJ_RANGE;
    Some(requested.clamp(min as i64, max as i64) as i32)
}

/// The value the kernel accepts for `requested`, given the lowest value
/// this runtime may set (`floor`: -1000 with CAP_SYS_RESOURCE, else the
/// process's inherited oom_score_adj_min, proc(5)), and a warning when it
/// had to be changed. Only a refusal by the kernel changes it.
pub fn oom_score_adj_within(requested: i64, floor: i32) -> (i32, Option<String>) {
    let (min, max) = OOM_SCORE_ADJ_RANGE;
    let in_range = requested.clamp(min as i64, max as i64) as i32;
    if in_range as i64 != requested {
        return (
            in_range.max(floor),
            Some(format!(
                "oom_score_adj {requested} is outside the kernel's range {min}..{max}; set {}",
                in_range.max(floor)
            )),
        );
    }
    if in_range < floor {
        return (
            floor,
            Some(format!(
                "oom_score_adj {requested} is below {floor}, the lowest this runtime may set \
                 (lowering it needs CAP_SYS_RESOURCE, which capcri lacks); set {floor}: give capcri \
                 CAP_SYS_RESOURCE (or a lower OOMScoreAdjust in its unit) to honour it"
            )),
        );
    }
    (in_range, None)
}

/// Applies [`oom_score_adj_within`] to the spec's process.
pub fn apply_oom_score_floor(spec: &mut oci_spec::runtime::Spec, floor: i32) -> Option<String> {
    let process = spec.process_mut().as_mut()?;
    let requested = process.oom_score_adj()?;
    let (value, warning) = oom_score_adj_within(requested as i64, floor);
    process.set_oom_score_adj(Some(value));
    warning
}

/// The pod's sysctls (CRI has them on the sandbox only: every container of
/// the pod shares its network and IPC namespaces, which they configure).
pub fn sysctls(pod: &PodSandboxConfig) -> HashMap<String, String> {
    pod.linux
        .as_ref()
        .map(|l| l.sysctls.clone().into_iter().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        HugepageLimit, LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig,
    };

    fn ctr(r: Option<LinuxContainerResources>) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: r,
                security_context: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resources_are_translated() {
        let r = LinuxContainerResources {
            cpu_period: 100000,
            cpu_quota: 50000,
            cpu_shares: 512,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            memory_limit_in_bytes: 64 << 20,
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "50000000".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let got = container_resources(&ctr(Some(r))).unwrap();
        let cpu = got.cpu().clone().unwrap();
        assert_eq!(
            (cpu.period(), cpu.quota(), cpu.shares()),
            (Some(100000), Some(50000), Some(512))
        );
        assert_eq!(
            (cpu.cpus().as_deref(), cpu.mems().as_deref()),
            (Some("0-1"), Some("0"))
        );
        let mem = got.memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
        let huge = got.hugepage_limits().clone().unwrap();
        assert_eq!(
            (huge[0].page_size().as_str(), huge[0].limit()),
            ("2MB", 4 << 20)
        );
        assert_eq!(
            got.unified()
                .clone()
                .unwrap()
                .get("memory.high")
                .map(String::as_str),
            Some("50000000")
        );
    }

    #[test]
    fn explicit_swap_and_empty_resources() {
        let r = LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 300,
            ..Default::default()
        };
        let mem = container_resources(&ctr(Some(r)))
            .unwrap()
            .memory()
            .unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(100), Some(300)));
        let empty = container_resources(&ctr(None)).unwrap();
        assert!(empty.cpu().is_none() && empty.memory().is_none());
        let devices = empty.devices().clone().unwrap();
        assert!(!devices[0].allow());
        assert_eq!(devices[0].access().as_deref(), Some("rwm"));
        assert!(devices[0].typ().is_none() && devices[0].major().is_none());
        let bad = LinuxContainerResources {
            cpu_shares: -2,
            ..Default::default()
        };
        assert!(container_resources(&ctr(Some(bad))).is_err());
    }

    /// The rules a kernel device cgroup would apply, evaluated the way
    /// both v1 and libcgroups' v2 emulator do: the last matching rule wins.
    fn decide(
        rules: &[LinuxDeviceCgroup],
        typ: LinuxDeviceType,
        major: i64,
        minor: i64,
        access: char,
    ) -> bool {
        let mut allowed = false;
        for r in rules {
            let typ_ok = r.typ().is_none_or(|t| t == LinuxDeviceType::A || t == typ);
            let major_ok = r.major().is_none_or(|m| m == major);
            let minor_ok = r.minor().is_none_or(|m| m == minor);
            let access_ok = r.access().as_deref().is_some_and(|a| a.contains(access));
            if typ_ok && major_ok && minor_ok && access_ok {
                allowed = r.allow();
            }
        }
        allowed
    }

    #[test]
    fn device_rules_deny_disks_and_allow_the_standard_nodes() {
        use LinuxDeviceType::{B, C};
        let rules = device_rules(false);
        // The host's disks (sda 8:0, nvme 259:0, vda 253:0, dm 254:0) and
        // memory (1:1 /dev/mem, 1:2 /dev/kmem): mknod yes, open no.
        for (typ, major, minor) in [
            (B, 8, 0),
            (B, 259, 0),
            (B, 253, 0),
            (B, 254, 0),
            (C, 1, 1),
            (C, 10, 229),
        ] {
            assert!(
                decide(&rules, typ, major, minor, 'm'),
                "{typ:?} {major}:{minor} mknod"
            );
            for a in ['r', 'w'] {
                assert!(
                    !decide(&rules, typ, major, minor, a),
                    "{typ:?} {major}:{minor} {a}"
                );
            }
        }
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
            (136, 0),
            (136, 7),
            (10, 200),
        ] {
            for a in ['r', 'w', 'm'] {
                assert!(decide(&rules, C, major, minor, a), "c {major}:{minor} {a}");
            }
            assert!(!decide(&rules, B, major, minor, 'r'), "b {major}:{minor}");
        }
        let privileged = device_rules(true);
        assert!(decide(&privileged, B, 8, 0, 'r') && decide(&privileged, C, 1, 1, 'w'));
    }

    #[test]
    fn oom_score_adj_is_kept_within_the_kernel_range() {
        for (given, want) in [
            (-997, -997),
            (-1000, -1000),
            (-5000, -1000),
            (0, 0),
            (500, 500),
            (1000, 1000),
            (5000, 1000),
        ] {
            let r = LinuxContainerResources {
                oom_score_adj: given,
                ..Default::default()
            };
            assert_eq!(oom_score_adj(&ctr(Some(r))), Some(want), "given {given}");
        }
        assert_eq!(oom_score_adj(&ctr(None)), Some(0));
    }

    #[test]
    fn oom_score_adj_is_raised_only_where_the_kernel_refuses() {
        // (requested, floor, applied, warned)
        let cases = [
            (-997, -1000, -997, false),
            (-1000, -1000, -1000, false),
            (-997, -999, -997, false),
            (-997, 0, 0, true),
            (-998, -500, -500, true),
            (0, 0, 0, false),
            (1000, 0, 1000, false),
            (500, 0, 500, false),
            (1001, 0, 1000, true),
            (-1001, -1000, -1000, true),
            (-1001, 0, 0, true),
        ];
        for (requested, floor, applied, warned) in cases {
            let (got, warning) = oom_score_adj_within(requested, floor);
            assert_eq!(
                (got, warning.is_some()),
                (applied, warned),
                "{requested} floor {floor}"
            );
            if let Some(w) = warning {
                assert!(w.contains(&requested.to_string()), "{w}");
            }
        }
    }

    #[test]
    fn pod_sysctls() {
        let pod = PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            sysctls(&pod).get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
    }
}
