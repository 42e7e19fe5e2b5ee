//! linux.maskedPaths and linux.readonlyPaths: kubelet's procMount.
//!
//! kubelet always sends both lists: the defaults for `procMount: Default`,
//! empty ones for `procMount: Unmasked` (Kubernetes' rule since 1.12:
//! empty means empty, containerd/containerd#5029). The wire cannot tell an
//! empty list from an absent one, and crictl and other CRI clients leave
//! them out, so an empty list means Unmasked only where kubelet can send
//! it: the API server admits `Unmasked` only with `hostUsers: false`
//! (the pod has its own user namespace). Elsewhere an empty list keeps the
//! defaults. A non-empty list is used exactly as given.

use std::path::{Component, Path};

use k8s_cri::v1::LinuxContainerSecurityContext;

use super::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, SpecError};

fn check_paths(field: &str, paths: &[String]) -> Result<(), SpecError> {
    for p in paths {
        let path = Path::new(p);
        if !path.is_absolute()
            || p.contains('\0')
            || path.components().any(|c| matches!(c, Component::ParentDir))
        {
            return Err(SpecError::invalid(
                field,
                format!(
                    "{p:?} is not an absolute path without \"..\"; give paths such as /proc/kcore"
                ),
            ));
        }
    }
    Ok(())
}

/// (masked, readonly) of a container. `privileged`: none (containerd).
/// `user_namespace`: the pod has its own user namespace.
pub fn masked_and_readonly_paths(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    user_namespace: bool,
) -> Result<(Vec<String>, Vec<String>), SpecError> {
    if privileged {
        return Ok((Vec::new(), Vec::new()));
    }
    let given_masked = sc.map(|sc| sc.masked_paths.clone()).unwrap_or_default();
    let given_ro = sc.map(|sc| sc.readonly_paths.clone()).unwrap_or_default();
    check_paths("security_context.masked_paths", &given_masked)?;
    check_paths("security_context.readonly_paths", &given_ro)?;
    let pick = |given: Vec<String>, defaults: &[&str]| {
        if !given.is_empty() || user_namespace {
            given
        } else {
            defaults.iter().map(|s| s.to_string()).collect()
        }
    };
    Ok((
        pick(given_masked, &DEFAULT_MASKED_PATHS),
        pick(given_ro, &DEFAULT_READONLY_PATHS),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(masked: &[&str], ro: &[&str]) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            masked_paths: masked.iter().map(|s| s.to_string()).collect(),
            readonly_paths: ro.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn procmount_table() {
        let defaults = (
            DEFAULT_MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
        let none = (Vec::<String>::new(), Vec::<String>::new());
        let own = (
            vec!["/proc/kcore".to_string()],
            vec!["/proc/sys".to_string()],
        );
        let empty = sc(&[], &[]);
        let lists = sc(&["/proc/kcore"], &["/proc/sys"]);
        // (security context, privileged, user namespace, expected)
        let cases = [
            (None, false, false, &defaults),
            (Some(&empty), false, false, &defaults),
            (Some(&empty), false, true, &none),
            (None, false, true, &none),
            (Some(&lists), false, false, &own),
            (Some(&lists), false, true, &own),
            (Some(&lists), true, false, &none),
            (Some(&empty), true, false, &none),
        ];
        for (i, (sc, privileged, userns, want)) in cases.into_iter().enumerate() {
            let got = masked_and_readonly_paths(sc, privileged, userns).unwrap();
            assert_eq!(&got, want, "case {i}");
        }
        // Only one list given: the other keeps its rule.
        let masked_only = sc(&["/proc/kcore"], &[]);
        let got = masked_and_readonly_paths(Some(&masked_only), false, false).unwrap();
        assert_eq!((got.0, got.1), (own.0.clone(), defaults.1.clone()));
    }

    #[test]
    fn lists_must_hold_absolute_plain_paths() {
        for bad in ["proc/kcore", "/proc/../etc", ""] {
            let e = masked_and_readonly_paths(Some(&sc(&[bad], &[])), false, false).unwrap_err();
            assert!(e.to_string().contains("masked_paths"), "{bad}: {e}");
            let e = masked_and_readonly_paths(Some(&sc(&[], &[bad])), false, false).unwrap_err();
            assert!(e.to_string().contains("readonly_paths"), "{bad}: {e}");
        }
    }
}
