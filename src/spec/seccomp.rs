//! Which seccomp filter a container gets, from its CRI SecurityProfile.

use std::collections::HashSet;

use k8s_cri::v1::{ContainerConfig, security_profile::ProfileType};
use oci_spec::runtime::{Capability, LinuxSeccomp};

use super::seccomp_default::runtime_default_profile;
use super::{SpecError, security_context};

/// The seccomp choice of a container, before the profile is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompMode {
    Unconfined,
    RuntimeDefault,
    /// The node-local profile, named by its CRI reference.
    Localhost(String),
}

/// Reads the mode. An absent profile is Unconfined, as with containerd
/// 1.6/1.7 without `enable_unprivileged...`/`seccomp_default` (kubelet sends
/// RuntimeDefault itself when the pod asks for it). The deprecated
/// `seccomp_profile_path` is honoured when the new field is absent.
pub fn seccomp_mode(container: &ContainerConfig) -> SeccompMode {
    let Some(sc) = security_context(container) else {
        return SeccompMode::Unconfined;
    };
    if let Some(profile) = &sc.seccomp {
        return match profile.profile_type() {
            ProfileType::RuntimeDefault => SeccompMode::RuntimeDefault,
            ProfileType::Unconfined => SeccompMode::Unconfined,
            ProfileType::Localhost => SeccompMode::Localhost(profile.localhost_ref.clone()),
        };
    }
    #[allow(deprecated)]
    let old_path = sc.seccomp_profile_path.as_str();
    match old_path {
        "runtime/default" | "docker/default" => SeccompMode::RuntimeDefault,
        path => match path.strip_prefix("localhost/") {
            Some(rest) => SeccompMode::Localhost(rest.to_string()),
            None => SeccompMode::Unconfined,
        },
    }
}

/// The seccomp filter of the spec. Privileged containers get none, like
/// containerd. `bounding` is the container's bounding set: RuntimeDefault
/// only lets through the syscall groups whose capability it holds.
/// `localhost_profile` is the JSON the caller read for a Localhost profile,
/// in the OCI `linux.seccomp` format (which Docker's profiles also use,
/// apart from their `includes`/`excludes` conditions, which are ignored).
pub fn container_seccomp(
    container: &ContainerConfig,
    bounding: &HashSet<Capability>,
    localhost_profile: Option<&str>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if security_context(container).is_some_and(|sc| sc.privileged) {
        return Ok(None);
    }
    match seccomp_mode(container) {
        SeccompMode::Unconfined => Ok(None),
        SeccompMode::RuntimeDefault => runtime_default_profile(bounding).map(Some),
        SeccompMode::Localhost(reference) => {
            let json = localhost_profile.ok_or_else(|| SpecError::InvalidSeccompProfile {
                profile: reference.clone(),
                reason: "its content was not read (no profile given to the spec builder)"
                    .to_string(),
            })?;
            serde_json::from_str::<LinuxSeccomp>(json)
                .map(Some)
                .map_err(|e| SpecError::InvalidSeccompProfile {
                    profile: reference,
                    reason: e.to_string(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxContainerConfig, LinuxContainerSecurityContext, SecurityProfile};
    use oci_spec::runtime::LinuxSeccompAction;

    #[allow(deprecated)]
    fn ctr(
        profile: Option<(ProfileType, &str)>,
        old_path: &str,
        privileged: bool,
    ) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: None,
                security_context: Some(LinuxContainerSecurityContext {
                    privileged,
                    seccomp: profile.map(|(t, r)| SecurityProfile {
                        profile_type: t as i32,
                        localhost_ref: r.into(),
                    }),
                    seccomp_profile_path: old_path.into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    const GOOD: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW","args":null,"comment":"docker-style extra field"}]}"#;

    #[test]
    fn mode_table() {
        let cases = vec![
            (ContainerConfig::default(), SeccompMode::Unconfined),
            (ctr(None, "", false), SeccompMode::Unconfined),
            (
                ctr(Some((ProfileType::Unconfined, "")), "", false),
                SeccompMode::Unconfined,
            ),
            (
                ctr(Some((ProfileType::RuntimeDefault, "")), "", false),
                SeccompMode::RuntimeDefault,
            ),
            (
                ctr(Some((ProfileType::Localhost, "/p.json")), "", false),
                SeccompMode::Localhost("/p.json".into()),
            ),
            (
                ctr(None, "runtime/default", false),
                SeccompMode::RuntimeDefault,
            ),
            (
                ctr(None, "localhost//x.json", false),
                SeccompMode::Localhost("/x.json".into()),
            ),
            (ctr(None, "unconfined", false), SeccompMode::Unconfined),
        ];
        for (c, want) in cases {
            assert_eq!(seccomp_mode(&c), want);
        }
    }

    #[test]
    fn profiles() {
        let caps = HashSet::new();
        assert_eq!(
            container_seccomp(&ctr(None, "", false), &caps, None).unwrap(),
            None
        );
        let rd = container_seccomp(
            &ctr(Some((ProfileType::RuntimeDefault, "")), "", false),
            &caps,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(rd.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(
            container_seccomp(
                &ctr(Some((ProfileType::RuntimeDefault, "")), "", true),
                &caps,
                None
            )
            .unwrap(),
            None
        );
        let local = container_seccomp(
            &ctr(Some((ProfileType::Localhost, "/p.json")), "", false),
            &caps,
            Some(GOOD),
        )
        .unwrap()
        .unwrap();
        assert_eq!(local.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(local.syscalls().as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn bad_localhost_profiles() {
        let c = ctr(Some((ProfileType::Localhost, "/p.json")), "", false);
        for json in [
            Some("{not json"),
            Some(r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#),
            None,
        ] {
            let err = container_seccomp(&c, &HashSet::new(), json).unwrap_err();
            assert!(
                matches!(&err, SpecError::InvalidSeccompProfile { profile, .. } if profile == "/p.json"),
                "{json:?}"
            );
        }
    }
}
