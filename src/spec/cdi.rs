//! CDI devices a container asks for (DRA, GPUs): the names, and the checks
//! on a CDI spec's containerEdits that capcri adds to the CDI library's
//! own validation. Pure: the spec files are read and applied by
//! `container::cdi`.
//!
//! Names come from `CDI_devices` and, as containerd reads them, from the
//! container's `cdi.k8s.io/<anything>` annotations (comma-separated
//! names, the form device plugins used before CDI_devices existed).

use std::collections::BTreeMap;
use std::path::{Component, Path};

use k8s_cri::v1::ContainerConfig;

use super::SpecError;

/// The annotation prefix containerd and CRI-O read CDI device names from.
pub const CDI_ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

fn vendor_or_class_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn device_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// Checks a fully qualified CDI device name, `vendor.com/class=name`, with
/// the CDI specification's rules for each part.
pub fn check_cdi_name(field: &str, name: &str) -> Result<(), SpecError> {
    let bad = |why: &str| {
        Err(SpecError::invalid(
            field,
            format!(
                "{name:?} is not a qualified CDI device name ({why}); expected vendor.com/class=device, e.g. nvidia.com/gpu=0"
            ),
        ))
    };
    let Some((kind, device)) = name.split_once('=') else {
        return bad("no '='");
    };
    let Some((vendor, class)) = kind.split_once('/') else {
        return bad("no '/' between vendor and class");
    };
    if !vendor_or_class_ok(vendor) {
        return bad("bad vendor");
    }
    if !vendor_or_class_ok(class) {
        return bad("bad class");
    }
    if !device_name_ok(device) {
        return bad("bad device name");
    }
    Ok(())
}

/// Every CDI device the container asks for, in request order (CDI_devices
/// first, then the annotations by key), each once.
pub fn requested_cdi_devices(container: &ContainerConfig) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for (i, d) in container.cdi_devices.iter().enumerate() {
        check_cdi_name(&format!("CDI_devices[{i}].name"), &d.name)?;
        if !out.contains(&d.name) {
            out.push(d.name.clone());
        }
    }
    let annotations: BTreeMap<&String, &String> = container
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with(CDI_ANNOTATION_PREFIX))
        .collect();
    for (key, value) in annotations {
        for name in value.split(',') {
            check_cdi_name(&format!("annotations[{key:?}]"), name)?;
            if !out.iter().any(|n| n == name) {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}

fn plain_absolute(p: &str) -> bool {
    let path = Path::new(p);
    path.is_absolute()
        && !p.contains('\0')
        && !path.components().any(|c| matches!(c, Component::ParentDir))
}

/// capcri's checks of one device's (or spec's) containerEdits, given as the
/// CDI spec's JSON form: what libcontainer cannot do or would do unsafely.
/// `user_namespace`: the pod has its own user namespace, where device
/// nodes are bind-mounted from the host path equal to the container path.
pub fn check_cdi_edits(edits: &serde_json::Value, user_namespace: bool) -> Result<(), String> {
    if edits.get("netDevices").is_some_and(|v| !v.is_null()) {
        return Err("its containerEdits move network devices (netDevices), which capcri does not support; use a CNI plugin for the interface".into());
    }
    if edits.get("intelRdt").is_some_and(|v| !v.is_null()) {
        return Err("its containerEdits set intelRdt, which capcri does not support".into());
    }
    let empty = Vec::new();
    for node in edits
        .get("deviceNodes")
        .and_then(|v| v.as_array())
        .unwrap_or(&empty)
    {
        let path = node.get("path").and_then(|v| v.as_str()).unwrap_or("");
        let host = node
            .get("hostPath")
            .and_then(|v| v.as_str())
            .unwrap_or(path);
        super::check_device_container_path("deviceNodes.path", path, &ContainerConfig::default())
            .map_err(|e| format!("device node {path:?}: {e}"))?;
        if !plain_absolute(host) {
            return Err(format!(
                "device node {path:?}: hostPath {host:?} is not an absolute path without \"..\""
            ));
        }
        if user_namespace && host != path {
            return Err(format!(
                "device node {path:?} comes from {host:?}: in a pod with its own user namespace (hostUsers: false) a device is bind-mounted from the same path on the host; run the pod with hostUsers: true"
            ));
        }
    }
    for m in edits
        .get("mounts")
        .and_then(|v| v.as_array())
        .unwrap_or(&empty)
    {
        let dest = m
            .get("containerPath")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if !plain_absolute(dest) {
            return Err(format!(
                "mount containerPath {dest:?} is not an absolute path without \"..\""
            ));
        }
        if ["/proc", "/sys"]
            .iter()
            .any(|top| Path::new(dest).starts_with(top))
        {
            return Err(format!(
                "mount containerPath {dest:?} is on /proc or /sys, which only the runtime mounts"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::CdiDevice;
    use serde_json::json;

    #[test]
    fn names_are_checked_and_gathered_once() {
        let c = ContainerConfig {
            cdi_devices: vec![
                CdiDevice {
                    name: "nvidia.com/gpu=0".into(),
                },
                CdiDevice {
                    name: "vendor.example/net=a:b".into(),
                },
                CdiDevice {
                    name: "nvidia.com/gpu=0".into(),
                },
            ],
            annotations: [
                (
                    "cdi.k8s.io/z-plugin".to_string(),
                    "example.com/dev=x,nvidia.com/gpu=1".to_string(),
                ),
                (
                    "cdi.k8s.io/a-plugin".to_string(),
                    "example.com/dev=y".to_string(),
                ),
                ("other".to_string(), "not=cdi".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        assert_eq!(
            requested_cdi_devices(&c).unwrap(),
            [
                "nvidia.com/gpu=0",
                "vendor.example/net=a:b",
                "example.com/dev=y",
                "example.com/dev=x",
                "nvidia.com/gpu=1"
            ]
        );
        assert!(
            requested_cdi_devices(&ContainerConfig::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_names_are_refused_naming_the_field() {
        for bad in [
            "gpu0",
            "nvidia.com/gpu",
            "nvidia.com=0",
            "/gpu=0",
            "nvidia.com/=0",
            "nvidia.com/gpu=",
            "1vendor/gpu=0",
            "nvidia.com/gpu=-0",
            "nvidia.com/gpu=0/../x",
            "nvidia.com/g pu=0",
        ] {
            let c = ContainerConfig {
                cdi_devices: vec![CdiDevice { name: bad.into() }],
                ..Default::default()
            };
            let e = requested_cdi_devices(&c).unwrap_err().to_string();
            assert!(
                e.contains("CDI_devices[0].name") && e.contains("vendor.com/class=device"),
                "{bad}: {e}"
            );
            let c = ContainerConfig {
                annotations: [("cdi.k8s.io/p".to_string(), format!("ok.com/c=d,{bad}"))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            };
            let e = requested_cdi_devices(&c).unwrap_err().to_string();
            assert!(e.contains("cdi.k8s.io/p"), "{bad}: {e}");
        }
    }

    #[test]
    fn edits_capcri_cannot_apply_are_refused() {
        let ok = json!({
            "env": ["A=1"],
            "deviceNodes": [{"path": "/dev/gpu0", "hostPath": "/dev/null"}],
            "mounts": [{"hostPath": "/usr/lib/x", "containerPath": "/usr/lib/x"}]
        });
        assert_eq!(check_cdi_edits(&ok, false), Ok(()));
        let cases = [
            (
                json!({"netDevices": [{"hostInterfaceName": "eth1", "name": "net1"}]}),
                false,
                "netDevices",
            ),
            (json!({"intelRdt": {"closID": "x"}}), false, "intelRdt"),
            (
                json!({"deviceNodes": [{"path": "/etc/x"}]}),
                false,
                "not under /dev",
            ),
            (
                json!({"deviceNodes": [{"path": "/dev/../etc/x"}]}),
                false,
                "\"..\"",
            ),
            (
                json!({"deviceNodes": [{"path": "/dev/x", "hostPath": "x"}]}),
                false,
                "not an absolute path",
            ),
            (
                json!({"deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/y"}]}),
                true,
                "user namespace",
            ),
            (
                json!({"mounts": [{"hostPath": "/a", "containerPath": "/proc/sys"}]}),
                false,
                "/proc",
            ),
            (
                json!({"mounts": [{"hostPath": "/a", "containerPath": "a/b"}]}),
                false,
                "not an absolute",
            ),
        ];
        for (edits, userns, want) in cases {
            let e = check_cdi_edits(&edits, userns).unwrap_err();
            assert!(e.contains(want), "{edits}: {e}");
        }
        // Same host and container path: fine in a user namespace.
        let same = json!({"deviceNodes": [{"path": "/dev/fuse"}]});
        assert_eq!(check_cdi_edits(&same, true), Ok(()));
    }
}
