//! Network sysctls as policy actions: which keys a policy may set, how
//! their values are checked, and how the settings of the policies and the
//! pod's own `sysctls` combine into what the pod's network namespace gets.
//!
//! Pure: the daemon writes the result at RunPodSandbox
//! (`pod::net_sysctls`).
//!
//! Why: containerd 2 sets `net.ipv4.ip_unprivileged_port_start=0` and
//! `net.ipv4.ping_group_range=0 2147483647` in every pod with its own
//! network namespace, so a non-root process binds :80 and pings without
//! any capability. Those keys are per network namespace (the kernel keeps
//! them in `struct net`), so they reach nothing outside the pod; a
//! host-network pod shares the host's namespace, so they are never written
//! for one (containerd skips it too).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::facts::PodFacts;

pub const UNPRIVILEGED_PORT_START: &str = "net.ipv4.ip_unprivileged_port_start";
pub const PING_GROUP_RANGE: &str = "net.ipv4.ping_group_range";
/// `unprivilegedICMP: true`: every group may open ICMP echo sockets
/// (containerd 2's value; 2147483647 is the kernel's GID_T_MAX).
pub const PING_GROUP_RANGE_ALL: &str = "0 2147483647";
/// `unprivilegedICMP: false`: the kernel's default, no group may.
pub const PING_GROUP_RANGE_NONE: &str = "1 0";

/// How a key's value is checked.
#[derive(Debug, Clone, Copy)]
enum ValueShape {
    /// One integer in the range.
    Int(i64, i64),
    /// `n` integers separated by blanks, each in the range.
    Ints(usize, i64, i64),
    /// Comma-separated ports and port ranges (`8080,9000-9100`), or empty.
    PortList,
}

/// The keys a policy may set: the network sysctls Kubernetes calls safe
/// (namespaced by the kernel, no effect on other pods or the node; the
/// kubelet's `SafeSysctlAllowlist`).
const POD_SAFE_NET_SYSCTLS: &[(&str, ValueShape)] = &[
    (UNPRIVILEGED_PORT_START, ValueShape::Int(0, 65535)),
    (PING_GROUP_RANGE, ValueShape::Ints(2, 0, 4294967294)),
    (
        "net.ipv4.ip_local_port_range",
        ValueShape::Ints(2, 1, 65535),
    ),
    ("net.ipv4.ip_local_reserved_ports", ValueShape::PortList),
    ("net.ipv4.tcp_syncookies", ValueShape::Int(0, 2)),
    ("net.ipv4.tcp_keepalive_time", ValueShape::Int(1, 32767)),
    ("net.ipv4.tcp_keepalive_intvl", ValueShape::Int(1, 32767)),
    ("net.ipv4.tcp_keepalive_probes", ValueShape::Int(1, 127)),
    ("net.ipv4.tcp_fin_timeout", ValueShape::Int(1, 2147483647)),
    ("net.ipv4.tcp_rmem", ValueShape::Ints(3, 1, 2147483647)),
    ("net.ipv4.tcp_wmem", ValueShape::Ints(3, 1, 2147483647)),
];

/// A key as the kernel names it under /proc/sys with dots: `a/b/c` (the
/// other spelling sysctl(8) and Kubernetes accept) becomes `a.b.c`.
pub fn normalize_key(key: &str) -> String {
    key.trim().replace('/', ".")
}

/// The keys a policy may set, for messages.
pub fn allowed_keys() -> Vec<&'static str> {
    POD_SAFE_NET_SYSCTLS.iter().map(|(k, _)| *k).collect()
}

/// Checks that a policy may set `key` (normalised) to `value`; the error
/// names the cause and the fix.
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    let Some((_, shape)) = POD_SAFE_NET_SYSCTLS.iter().find(|(k, _)| *k == key) else {
        return Err(format!(
            "sysctl {key:?} is not a namespaced, pod-safe network sysctl; a policy may set only {}",
            allowed_keys().join(", ")
        ));
    };
    let ints = |n: usize, lo: i64, hi: i64| -> Result<Vec<i64>, String> {
        let parts: Vec<&str> = value.split_ascii_whitespace().collect();
        if parts.len() != n {
            return Err(format!(
                "sysctl {key} takes {n} integer(s) separated by blanks, got {value:?}"
            ));
        }
        parts
            .iter()
            .map(|p| match p.parse::<i64>() {
                Ok(v) if (lo..=hi).contains(&v) => Ok(v),
                _ => Err(format!(
                    "sysctl {key}: {p:?} is not an integer from {lo} to {hi}"
                )),
            })
            .collect()
    };
    match *shape {
        ValueShape::Int(lo, hi) => ints(1, lo, hi).map(|_| ()),
        ValueShape::Ints(n, lo, hi) => {
            let v = ints(n, lo, hi)?;
            // A range: the kernel refuses low > high for the port range.
            if key == "net.ipv4.ip_local_port_range" && v[0] > v[1] {
                return Err(format!(
                    "sysctl {key}: the low port {} is above the high {}",
                    v[0], v[1]
                ));
            }
            Ok(())
        }
        ValueShape::PortList => {
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let ok = part.split('-').all(|p| p.parse::<u16>().is_ok())
                    && part.split('-').count() <= 2;
                if !ok {
                    return Err(format!(
                        "sysctl {key}: {part:?} is not a port or a port range (8080 or 9000-9100)"
                    ));
                }
            }
            Ok(())
        }
    }
}

/// One sysctl a policy rule asks for, with the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlRequest {
    pub key: String,
    pub value: String,
    /// `"policy <name> rule <n>"`.
    pub source: String,
}

/// Why a policy sysctl is or is not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SysctlOutcome {
    /// Written into the pod's network namespace.
    Applied,
    /// The pod shares the host's network namespace: never written.
    SkippedHostNetwork,
    /// The pod's own `sysctls` set the key; the pod's value wins.
    OverriddenByPod,
    /// The write failed (the daemon records the error in `reason`).
    Failed,
}

impl SysctlOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            SysctlOutcome::Applied => "applied",
            SysctlOutcome::SkippedHostNetwork => "skipped_host_network",
            SysctlOutcome::OverriddenByPod => "overridden_by_pod",
            SysctlOutcome::Failed => "failed",
        }
    }
}

/// A policy sysctl and what became of it: shown by `explain`, the verbose
/// PodSandboxStatus and ContainerStatus, and counted by the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SysctlSetting {
    pub key: String,
    /// The policy's value.
    pub value: String,
    pub outcome: SysctlOutcome,
    /// The rule that set it (the last applying rule per key wins).
    pub source: String,
    pub reason: String,
}

/// Combines the applying rules' requests (in policy order: a later rule
/// overrides an earlier one for the same key) with the pod.
pub fn resolve(requests: &[SysctlRequest], pod: &PodFacts) -> Vec<SysctlSetting> {
    let mut last: BTreeMap<&str, &SysctlRequest> = BTreeMap::new();
    for r in requests {
        last.insert(&r.key, r);
    }
    let pod_own: BTreeMap<String, &str> = pod
        .sysctls
        .iter()
        .map(|(k, v)| (normalize_key(k), v.as_str()))
        .collect();
    last.into_values()
        .map(|r| {
            let (outcome, reason) = if pod.host_network {
                (
                    SysctlOutcome::SkippedHostNetwork,
                    "not written: the pod uses the host's network namespace, which a pod default must never change (containerd skips it too)".to_string(),
                )
            } else if let Some(own) = pod_own.get(&r.key) {
                (
                    SysctlOutcome::OverriddenByPod,
                    format!(
                        "not written: the pod's own sysctls set it to {own:?}, and a pod's value wins over a policy default (a policy deny on pod.sysctls refuses it instead)"
                    ),
                )
            } else {
                (
                    SysctlOutcome::Applied,
                    format!("{} = {:?} in the pod's network namespace", r.key, r.value),
                )
            };
            SysctlSetting {
                key: r.key.clone(),
                value: r.value.clone(),
                outcome,
                source: r.source.clone(),
                reason,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pod_safe_network_keys_with_valid_values() {
        for (key, value) in [
            (UNPRIVILEGED_PORT_START, "0"),
            (UNPRIVILEGED_PORT_START, "1024"),
            (PING_GROUP_RANGE, PING_GROUP_RANGE_ALL),
            (PING_GROUP_RANGE, PING_GROUP_RANGE_NONE),
            ("net.ipv4.ip_local_port_range", "1024 65000"),
            ("net.ipv4.ip_local_reserved_ports", "8080,9000-9100"),
            ("net.ipv4.tcp_syncookies", "1"),
            ("net.ipv4.tcp_rmem", "4096 87380 6291456"),
        ] {
            assert_eq!(validate(key, value), Ok(()), "{key}={value}");
        }
        for (key, value, why) in [
            ("net.ipv4.ip_forward", "1", "not a namespaced, pod-safe"),
            ("kernel.shm_rmid_forced", "1", "not a namespaced, pod-safe"),
            (
                "net.core.somaxconn",
                "1024",
                "may set only net.ipv4.ip_unprivileged_port_start",
            ),
            (
                UNPRIVILEGED_PORT_START,
                "-1",
                "not an integer from 0 to 65535",
            ),
            (UNPRIVILEGED_PORT_START, "65536", "not an integer"),
            (UNPRIVILEGED_PORT_START, "80\n1", "takes 1 integer"),
            (PING_GROUP_RANGE, "0", "takes 2 integer"),
            (
                "net.ipv4.ip_local_port_range",
                "60000 1024",
                "above the high",
            ),
            ("net.ipv4.ip_local_reserved_ports", "80;rm", "not a port"),
        ] {
            let e = validate(key, value).unwrap_err();
            assert!(e.contains(why), "{key}={value}: {e}");
        }
        assert_eq!(
            normalize_key(" net/ipv4/ping_group_range"),
            PING_GROUP_RANGE
        );
    }

    fn req(key: &str, value: &str, source: &str) -> SysctlRequest {
        SysctlRequest {
            key: key.into(),
            value: value.into(),
            source: source.into(),
        }
    }

    #[test]
    fn later_rules_win_then_the_pod_then_host_network_skips_all() {
        let reqs = [
            req(UNPRIVILEGED_PORT_START, "0", "policy a rule 1"),
            req(PING_GROUP_RANGE, PING_GROUP_RANGE_ALL, "policy a rule 1"),
            req(PING_GROUP_RANGE, PING_GROUP_RANGE_NONE, "policy b rule 1"),
        ];
        let mut pod = PodFacts::default();
        let got = resolve(&reqs, &pod);
        assert_eq!(got.len(), 2);
        let ping = got.iter().find(|s| s.key == PING_GROUP_RANGE).unwrap();
        assert_eq!(
            (ping.value.as_str(), ping.source.as_str(), ping.outcome),
            (
                PING_GROUP_RANGE_NONE,
                "policy b rule 1",
                SysctlOutcome::Applied
            )
        );
        pod.sysctls
            .insert("net/ipv4/ip_unprivileged_port_start".into(), "1024".into());
        let got = resolve(&reqs, &pod);
        let port = got
            .iter()
            .find(|s| s.key == UNPRIVILEGED_PORT_START)
            .unwrap();
        assert_eq!(port.outcome, SysctlOutcome::OverriddenByPod);
        assert!(port.reason.contains("\"1024\""), "{}", port.reason);
        pod.host_network = true;
        assert!(
            resolve(&reqs, &pod)
                .iter()
                .all(|s| s.outcome == SysctlOutcome::SkippedHostNetwork)
        );
    }
}
