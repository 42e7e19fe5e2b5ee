//! The OCI form of a container's capability sets. The sets themselves
//! (Docker's defaults, `ALL`, containerd's add/drop order, name
//! normalisation) are computed in `crate::capabilities::kernel`, once for the spec builder
//! and the policy engine alike.

use std::collections::HashSet;

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::kernel::{self as caps, CapList, CapParseError, CapSet};

/// The OCI capability for one of ours. oci-spec knows every capability up
/// to CAP_CHECKPOINT_RESTORE (the model's last), so this never fails today;
/// a None is logged by the caller rather than passed to the runtime.
pub fn oci_capability(cap: caps::Capability) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(cap.to_string())).ok()
}

/// The OCI form of a set.
pub fn oci_capabilities(set: CapSet) -> Capabilities {
    set.iter().filter_map(oci_capability).collect()
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

/// A capability name in the CRI request the kernel does not know: the
/// field it is in and the name, in the one wording of [`CapParseError`].
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct CapRequestError {
    pub field: &'static str,
    #[source]
    pub source: CapParseError,
}

/// The container's CRI capability lists, normalised.
pub fn requested_capabilities(
    container: &ContainerConfig,
) -> Result<(CapList, CapList, CapList), CapRequestError> {
    let Some(cri) = security_context(container).and_then(|sc| sc.capabilities.as_ref()) else {
        return Ok(Default::default());
    };
    let parse = |field: &'static str, names: &[String]| {
        CapList::parse(names).map_err(|source| CapRequestError { field, source })
    };
    Ok((
        parse(
            "security_context.capabilities.add_capabilities",
            &cri.add_capabilities,
        )?,
        parse(
            "security_context.capabilities.drop_capabilities",
            &cri.drop_capabilities,
        )?,
        parse(
            "security_context.capabilities.add_ambient_capabilities",
            &cri.add_ambient_capabilities,
        )?,
    ))
}

/// containerd's capability computation ([`caps::container_bounding`]) in
/// OCI form. Unknown names are refused first by
/// `spec::validate_capability_names`; here they count as absent.
pub fn default_capabilities(container: &ContainerConfig) -> LinuxCapabilities {
    let privileged = security_context(container).is_some_and(|sc| sc.privileged);
    let (add, drop, _) = requested_capabilities(container).unwrap_or_default();
    capabilities_from_set(oci_capabilities(caps::container_bounding(
        privileged, add, drop,
    )))
}

fn security_context(container: &ContainerConfig) -> Option<&LinuxContainerSecurityContext> {
    container.linux.as_ref()?.security_context.as_ref()
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
    fn all_names_map_to_oci() {
        assert_eq!(oci_capabilities(caps::all_capabilities()).len(), 41);
        assert_eq!(
            oci_capabilities(caps::docker_default_capabilities()).len(),
            14
        );
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
        assert_eq!(
            effective(&caps),
            oci_capabilities(caps::docker_default_capabilities())
        );
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert!(requested_capabilities(&ctr(&["NET_ADMIN", " all"], &["ALL"], false)).is_ok());
        let err = requested_capabilities(&ctr(&["NET_WIZARD"], &[], false)).unwrap_err();
        assert!(err.to_string().contains("NET_WIZARD"));
        assert!(err.to_string().contains("add_capabilities"));
        let err = requested_capabilities(&ctr(&[], &["bogus"], false)).unwrap_err();
        assert!(err.to_string().contains("drop_capabilities"), "{err}");
        assert!(err.to_string().contains("CAP_ prefix"), "{err}");
    }
}
