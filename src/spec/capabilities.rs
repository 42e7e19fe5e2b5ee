//! Default capability sets, as containerd computes them from the CRI
//! `capabilities` add/drop lists.

use std::collections::HashSet;

use k8s_cri::v1::ContainerConfig;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::{SpecError, security_context};

/// The capabilities Docker (and containerd's CRI plugin) grant a container
/// that asks for nothing else.
pub const DOCKER_DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows, 0 (CAP_CHOWN) to 40
/// (CAP_CHECKPOINT_RESTORE, Linux 5.9): what "ALL" and privileged mean.
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Parses a capability name as kubelet sends it ("NET_ADMIN") or as it is
/// written elsewhere ("CAP_NET_ADMIN", any case).
pub fn parse_capability(name: &str) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(name.trim().to_string())).ok()
}

fn set_of(names: &[&str]) -> Capabilities {
    names.iter().filter_map(|n| parse_capability(n)).collect()
}

/// Bounding, effective and permitted all hold `set`; inheritable and ambient
/// are empty. Inheritable stays empty because of CVE-2022-24769: a non-empty
/// inheritable set let file capabilities of a binary reach a non-root
/// process (containerd >= 1.6.2 and runc >= 1.1.1 stopped setting it).
pub fn capabilities_from_set(set: Capabilities) -> LinuxCapabilities {
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(HashSet::new()));
    caps.set_ambient(Some(HashSet::new()));
    caps
}

/// containerd's capability computation: Docker's 14, then "ALL" in add,
/// then "ALL" in drop (so drop ALL wins), then each named add, then each
/// named drop; privileged means every capability. Unknown names are
/// skipped here; [`validate_capability_names`] rejects them first.
pub fn default_capabilities(container: &ContainerConfig) -> LinuxCapabilities {
    let sc = security_context(container);
    if sc.is_some_and(|sc| sc.privileged) {
        return capabilities_from_set(set_of(&ALL_CAPABILITIES));
    }
    let mut set = set_of(&DOCKER_DEFAULT_CAPABILITIES);
    if let Some(cri) = sc.and_then(|sc| sc.capabilities.as_ref()) {
        let is_all = |n: &String| n.eq_ignore_ascii_case("ALL");
        if cri.add_capabilities.iter().any(is_all) {
            set = set_of(&ALL_CAPABILITIES);
        }
        if cri.drop_capabilities.iter().any(is_all) {
            set.clear();
        }
        set.extend(
            cri.add_capabilities
                .iter()
                .filter_map(|n| parse_capability(n)),
        );
        for cap in cri
            .drop_capabilities
            .iter()
            .filter_map(|n| parse_capability(n))
        {
            set.remove(&cap);
        }
    }
    capabilities_from_set(set)
}

/// Rejects capability names the kernel does not know: containerd passes
/// them on and runc then fails with a less helpful message.
pub fn validate_capability_names(container: &ContainerConfig) -> Result<(), SpecError> {
    let Some(cri) = security_context(container).and_then(|sc| sc.capabilities.as_ref()) else {
        return Ok(());
    };
    let lists = [
        (
            "security_context.capabilities.add_capabilities",
            &cri.add_capabilities,
        ),
        (
            "security_context.capabilities.drop_capabilities",
            &cri.drop_capabilities,
        ),
    ];
    for (field, names) in lists {
        for name in names {
            if !name.eq_ignore_ascii_case("ALL") && parse_capability(name).is_none() {
                return Err(SpecError::invalid(
                    field,
                    format!(
                        "{name:?} is not a Linux capability; use a name from capabilities(7) such as NET_ADMIN"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        Capability as CriCapability, LinuxContainerConfig, LinuxContainerSecurityContext,
    };

    fn ctr(add: &[&str], drop: &[&str], privileged: bool) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: None,
                security_context: Some(LinuxContainerSecurityContext {
                    privileged,
                    capabilities: Some(CriCapability {
                        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                        add_ambient_capabilities: vec![],
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    fn effective(c: &LinuxCapabilities) -> HashSet<Capability> {
        c.effective().clone().unwrap_or_default()
    }

    #[test]
    fn all_names_parse() {
        assert_eq!(set_of(&ALL_CAPABILITIES).len(), 41);
        assert_eq!(set_of(&DOCKER_DEFAULT_CAPABILITIES).len(), 14);
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn add_drop_table() {
        // (add, drop, privileged, expected size, must contain, must lack)
        let cases: Vec<(
            &[&str],
            &[&str],
            bool,
            usize,
            Vec<Capability>,
            Vec<Capability>,
        )> = vec![
            (
                &[],
                &[],
                false,
                14,
                vec![Capability::Chown],
                vec![Capability::SysAdmin],
            ),
            (
                &["NET_ADMIN"],
                &[],
                false,
                15,
                vec![Capability::NetAdmin],
                vec![],
            ),
            (
                &["CAP_SYS_TIME"],
                &["KILL"],
                false,
                14,
                vec![Capability::SysTime],
                vec![Capability::Kill],
            ),
            (&[], &["ALL"], false, 0, vec![], vec![Capability::Chown]),
            (
                &["NET_BIND_SERVICE"],
                &["ALL"],
                false,
                1,
                vec![Capability::NetBindService],
                vec![],
            ),
            (&["ALL"], &[], false, 41, vec![Capability::SysAdmin], vec![]),
            (
                &["ALL"],
                &["SYS_ADMIN"],
                false,
                40,
                vec![Capability::Bpf],
                vec![Capability::SysAdmin],
            ),
            (
                &["ALL"],
                &["ALL"],
                false,
                0,
                vec![],
                vec![Capability::Chown],
            ),
            (
                &[],
                &["ALL"],
                true,
                41,
                vec![Capability::CheckpointRestore],
                vec![],
            ),
        ];
        for (add, drop, privileged, size, has, lacks) in cases {
            let caps = default_capabilities(&ctr(add, drop, privileged));
            let eff = effective(&caps);
            assert_eq!(
                eff.len(),
                size,
                "add={add:?} drop={drop:?} privileged={privileged}"
            );
            assert_eq!(caps.bounding().clone().unwrap_or_default(), eff);
            assert_eq!(caps.permitted().clone().unwrap_or_default(), eff);
            for c in has {
                assert!(
                    eff.contains(&c),
                    "{c:?} missing for add={add:?} drop={drop:?}"
                );
            }
            for c in lacks {
                assert!(
                    !eff.contains(&c),
                    "{c:?} present for add={add:?} drop={drop:?}"
                );
            }
            assert_eq!(caps.inheritable().as_ref().map(HashSet::len), Some(0));
            assert_eq!(caps.ambient().as_ref().map(HashSet::len), Some(0));
        }
    }

    #[test]
    fn no_security_context_means_docker_defaults() {
        let caps = default_capabilities(&ContainerConfig::default());
        assert_eq!(effective(&caps), set_of(&DOCKER_DEFAULT_CAPABILITIES));
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert!(validate_capability_names(&ctr(&["NET_ADMIN", "all"], &["ALL"], false)).is_ok());
        let err = validate_capability_names(&ctr(&["NET_WIZARD"], &[], false)).unwrap_err();
        assert!(err.to_string().contains("NET_WIZARD"));
        assert!(validate_capability_names(&ctr(&[], &["bogus"], false)).is_err());
    }
}
