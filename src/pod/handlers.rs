//! Runtime handlers (RuntimeClass `handler`): the names RunPodSandbox
//! accepts and what Status reports for each. capcri runs every pod the
//! same way whatever the handler; the names exist so that RuntimeClasses
//! written for containerd (`runc`) or for capcri itself keep working, and
//! kubelet, which checks a handler's features before it admits a pod
//! (user namespaces for `hostUsers: false`), finds each one listed.

use k8s_cri::v1::{RuntimeHandler, RuntimeHandlerFeatures};

/// What every handler supports: the same runtime serves them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerFeatures {
    /// The spec emits "rro", applied with mount_setattr(AT_RECURSIVE).
    pub recursive_read_only_mounts: bool,
    /// POD user namespaces with idmapped rootfs and volumes work here
    /// (the startup probe's verdict).
    pub user_namespaces: bool,
}

pub use crate::config::valid_handler_name;

/// The handlers RunPodSandbox accepts: the default "" first, then the
/// configured ones, without repeats.
pub fn accepted_handlers(configured: &[String]) -> Vec<String> {
    let mut out = vec![String::new()];
    for h in configured {
        if !out.contains(h) {
            out.push(h.clone());
        }
    }
    out
}

/// Checks RunPodSandbox's `runtime_handler`; the error lists every
/// accepted name.
pub fn check_handler(requested: &str, configured: &[String]) -> Result<(), String> {
    let accepted = accepted_handlers(configured);
    if accepted.iter().any(|h| h == requested) {
        return Ok(());
    }
    let names: Vec<String> = accepted.iter().map(|h| format!("{h:?}")).collect();
    Err(format!(
        "unknown runtime handler {requested:?}: this node accepts {}; set the RuntimeClass's handler to one of them, or add it to runtime_handlers in capcri's config",
        names.join(", ")
    ))
}

/// Status's `runtime_handlers`: every accepted handler with its features.
pub fn status_handlers(configured: &[String], features: HandlerFeatures) -> Vec<RuntimeHandler> {
    accepted_handlers(configured)
        .into_iter()
        .map(|name| RuntimeHandler {
            name,
            features: Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: features.recursive_read_only_mounts,
                user_namespaces: features.user_namespaces,
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_and_configured_handlers_are_accepted() {
        let configured = names(&["capcri", "runc"]);
        for h in ["", "capcri", "runc"] {
            assert_eq!(check_handler(h, &configured), Ok(()), "{h:?}");
        }
        for h in ["kata", "CAPCRI", " capcri", "runsc"] {
            let e = check_handler(h, &configured).unwrap_err();
            assert!(
                e.contains(&format!("{h:?}")) && e.contains("\"\", \"capcri\", \"runc\""),
                "{e}"
            );
        }
        let custom = names(&["gvisor"]);
        assert_eq!(check_handler("gvisor", &custom), Ok(()));
        assert!(check_handler("capcri", &custom).is_err());
    }

    #[test]
    fn status_lists_each_handler_once_with_features() {
        let f = HandlerFeatures {
            recursive_read_only_mounts: true,
            user_namespaces: true,
        };
        let got = status_handlers(&names(&["capcri", "runc", "capcri", ""]), f);
        let listed: Vec<&str> = got.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(listed, ["", "capcri", "runc"]);
        assert!(got.iter().all(|h| {
            let f = h.features.as_ref().unwrap();
            f.user_namespaces && f.recursive_read_only_mounts
        }));
    }

    #[test]
    fn handler_names_are_dns_labels() {
        for ok in ["capcri", "runc", "kata-qemu", "h1"] {
            assert!(valid_handler_name(ok), "{ok}");
        }
        for bad in ["", "Runc", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!valid_handler_name(bad), "{bad}");
        }
    }
}
