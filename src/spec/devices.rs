//! Devices of a container: `ContainerConfig.devices` (raw-block PVCs,
//! device plugins) and, for a privileged container, every device node of
//! the host's /dev, as containerd gives them (its `WithDevices` and
//! `WithHostDevices`). Pure: the caller stats the host's nodes and passes
//! their facts in as [`HostDevice`]s.
//!
//! The rule enforced: a container may open only the nodes the runtime
//! put in its /dev, with the access the request gave each (a subset of
//! `rwm`); the device cgroup denies every other major:minor (see
//! `resources::device_rules`), so a node made with mknod, or reached any
//! other way, stays closed.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::ContainerConfig;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Spec};

use super::SpecError;

/// Character or block: the only kinds a device cgroup rule and a device
/// node can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

impl DeviceKind {
    fn oci(self) -> LinuxDeviceType {
        match self {
            DeviceKind::Char => LinuxDeviceType::C,
            DeviceKind::Block => LinuxDeviceType::B,
        }
    }
}

/// What the host's inode of a device node says (lstat of its resolved
/// path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// The node's path on the host, symlinks resolved.
    pub host_path: PathBuf,
    pub kind: DeviceKind,
    pub major: i64,
    pub minor: i64,
    /// Permission bits (no file type).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One node to create in the container: where, from which host device,
/// with which cgroup access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDevice {
    pub container_path: String,
    pub host: HostDevice,
    /// A canonical subset of "rwm" ("r", "rw", "rwm", ...).
    pub access: String,
}

/// One entry of `ContainerConfig.devices`, checked lexically: the host
/// path is still to be resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Index in `devices`, for error messages.
    pub index: usize,
    pub host_path: String,
    pub container_path: String,
    pub access: String,
}

/// Where device nodes may not go: mounts of their own (pts, shm, mqueue)
/// and libcontainer's /dev symlinks (a node there would be created through
/// the link, outside /dev).
const RESERVED_DEV_PATHS: [&str; 9] = [
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/dev/fd",
    "/dev/stdin",
    "/dev/stdout",
    "/dev/stderr",
    "/dev/core",
    "/dev/kcore",
];

/// `permissions` as a canonical subset of "rwm". The kernel's device
/// cgroup (v1 `devices.allow`, v2's eBPF emulation) knows only these three.
pub fn device_access(field: &str, permissions: &str) -> Result<String, SpecError> {
    if permissions.is_empty() {
        return Err(SpecError::invalid(
            field,
            "is empty; give one or more of r (read), w (write) and m (mknod), e.g. \"rw\"",
        ));
    }
    if let Some(bad) = permissions.chars().find(|c| !matches!(c, 'r' | 'w' | 'm')) {
        return Err(SpecError::invalid(
            field,
            format!(
                "{permissions:?} has {bad:?}; the device cgroup knows only r (read), w (write) and m (mknod): use a subset of \"rwm\""
            ),
        ));
    }
    Ok(['r', 'w', 'm']
        .into_iter()
        .filter(|c| permissions.contains(*c))
        .collect())
}

/// Checks a container path of a device: absolute, under /dev (libcontainer
/// creates device nodes only there, on the container's own tmpfs), no `.`
/// or `..` component (the path is resolved inside the rootfs), not on a
/// mount or symlink of its own in /dev, not under a CRI mount (a volume
/// there is the host's directory: the node would be made on the host).
pub fn check_device_container_path(
    field: &str,
    path: &str,
    container: &ContainerConfig,
) -> Result<(), SpecError> {
    if path.contains('\0') {
        return Err(SpecError::invalid(field, "contains a NUL byte"));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(SpecError::invalid(
            field,
            format!(
                "{path:?} is not absolute; give the node's path in the container, e.g. /dev/xvda"
            ),
        ));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || path.split('/').skip(1).any(|s| s == "." || s == "..")
    {
        return Err(SpecError::invalid(
            field,
            format!(
                "{path:?} has a \".\" or \"..\" component; give a plain path such as /dev/xvda"
            ),
        ));
    }
    if !p.starts_with("/dev") || p == Path::new("/dev") {
        return Err(SpecError::invalid(
            field,
            format!(
                "{path:?} is not under /dev: capcri creates device nodes on the container's own /dev only; put the device at /dev/<name> (volumeDevices.devicePath)"
            ),
        ));
    }
    if let Some(r) = RESERVED_DEV_PATHS.iter().find(|r| p.starts_with(r)) {
        return Err(SpecError::invalid(
            field,
            format!(
                "{path:?} is on {r}, which the runtime mounts or links itself; choose another name under /dev"
            ),
        ));
    }
    if let Some(m) = container
        .mounts
        .iter()
        .find(|m| !m.container_path.is_empty() && p.starts_with(&m.container_path))
    {
        return Err(SpecError::invalid(
            field,
            format!(
                "{path:?} is under the volume mounted at {:?}, a host directory: the node would be created on the host; put the device elsewhere under /dev",
                m.container_path
            ),
        ));
    }
    Ok(())
}

/// The lexical checks of `ContainerConfig.devices`, before any host path
/// is looked at.
pub fn device_requests(container: &ContainerConfig) -> Result<Vec<DeviceRequest>, SpecError> {
    let mut out = Vec::with_capacity(container.devices.len());
    for (i, d) in container.devices.iter().enumerate() {
        let field = format!("devices[{i}]");
        if d.host_path.is_empty() || !d.host_path.starts_with('/') || d.host_path.contains('\0') {
            return Err(SpecError::invalid(
                format!("{field}.host_path"),
                format!(
                    "{:?} is not an absolute path; name the device node on the node, e.g. /dev/sdb",
                    d.host_path
                ),
            ));
        }
        // containerd: an empty container path means the host's.
        let container_path = if d.container_path.is_empty() {
            d.host_path.clone()
        } else {
            d.container_path.clone()
        };
        check_device_container_path(
            &format!("{field}.container_path"),
            &container_path,
            container,
        )?;
        let access = device_access(&format!("{field}.permissions"), &d.permissions)?;
        out.push(DeviceRequest {
            index: i,
            host_path: d.host_path.clone(),
            container_path,
            access,
        });
    }
    Ok(out)
}

/// Who owns the nodes in the container: the host node's owner (containerd's
/// default), or the container's run_as_user/run_as_group where set and not
/// root (containerd's `device_ownership_from_security_context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceOwnership {
    #[default]
    Host,
    SecurityContext {
        uid: Option<u32>,
        gid: Option<u32>,
    },
}

impl DeviceOwnership {
    /// The ownership rule for `container`, from the node's setting.
    pub fn for_container(from_security_context: bool, container: &ContainerConfig) -> Self {
        if !from_security_context {
            return DeviceOwnership::Host;
        }
        let sc = super::security_context(container);
        let id = |v: Option<i64>| v.filter(|v| *v > 0).and_then(|v| u32::try_from(v).ok());
        DeviceOwnership::SecurityContext {
            uid: id(sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value)),
            gid: id(sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value)),
        }
    }
}

/// Adds the devices to the spec: a node per device in `linux.devices`
/// (a later one with the same container path replaces an earlier one),
/// and a device cgroup allow rule for each with its access, appended
/// after the base rules (the last matching rule wins). A privileged
/// container's rules already allow everything; nothing is added there.
pub fn apply_devices(
    spec: &mut Spec,
    devices: &[ContainerDevice],
    ownership: DeviceOwnership,
    privileged: bool,
) {
    if devices.is_empty() {
        return;
    }
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let mut by_path: BTreeMap<PathBuf, LinuxDevice> = linux
        .devices()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d.path().clone(), d))
        .collect();
    let mut rules = Vec::new();
    for d in devices {
        let (uid, gid) = match ownership {
            DeviceOwnership::Host => (Some(d.host.uid), Some(d.host.gid)),
            DeviceOwnership::SecurityContext { uid, gid } => {
                (uid.or(Some(d.host.uid)), gid.or(Some(d.host.gid)))
            }
        };
        let mut node = LinuxDevice::default();
        node.set_path(PathBuf::from(&d.container_path));
        node.set_typ(d.host.kind.oci());
        node.set_major(d.host.major);
        node.set_minor(d.host.minor);
        node.set_file_mode(Some(d.host.mode & 0o7777));
        node.set_uid(uid);
        node.set_gid(gid);
        by_path.insert(PathBuf::from(&d.container_path), node);
        if !privileged {
            let mut rule = LinuxDeviceCgroup::default();
            rule.set_allow(true);
            rule.set_typ(Some(d.host.kind.oci()));
            rule.set_major(Some(d.host.major));
            rule.set_minor(Some(d.host.minor));
            rule.set_access(Some(d.access.clone()));
            rules.push(rule);
        }
    }
    linux.set_devices(Some(by_path.into_values().collect()));
    if rules.is_empty() {
        return;
    }
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut all = resources.devices().clone().unwrap_or_default();
    all.extend(rules);
    resources.set_devices(Some(all));
    linux.set_resources(Some(resources));
}

/// A privileged container's devices: every host node at its own path, with
/// full access (the cgroup allows all anyway).
/// The device cgroup rules of a spec (tests of the spec builder and CDI).
#[cfg(test)]
pub(crate) fn device_rules(
    linux: &oci_spec::runtime::Linux,
) -> Vec<oci_spec::runtime::LinuxDeviceCgroup> {
    linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .expect("the spec has device rules")
}

pub fn host_devices_for_privileged(nodes: Vec<HostDevice>) -> Vec<ContainerDevice> {
    nodes
        .into_iter()
        .filter_map(|h| {
            let container_path = h.host_path.to_str()?.to_string();
            Some(ContainerDevice {
                container_path,
                host: h,
                access: "rwm".into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{Device, Mount as CriMount};
    use oci_spec::runtime::{Linux, LinuxResources};

    fn ctr(devices: &[(&str, &str, &str)]) -> ContainerConfig {
        ContainerConfig {
            devices: devices
                .iter()
                .map(|(h, c, p)| Device {
                    host_path: h.to_string(),
                    container_path: c.to_string(),
                    permissions: p.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn host(path: &str, kind: DeviceKind, major: i64, minor: i64) -> HostDevice {
        HostDevice {
            host_path: path.into(),
            kind,
            major,
            minor,
            mode: 0o660,
            uid: 0,
            gid: 6,
        }
    }

    #[test]
    fn permissions_are_a_subset_of_rwm() {
        let cases = [
            ("r", Ok("r")),
            ("w", Ok("w")),
            ("m", Ok("m")),
            ("mrw", Ok("rwm")),
            ("wr", Ok("rw")),
            ("rrw", Ok("rw")),
            ("", Err("is empty")),
            ("rwx", Err("'x'")),
            ("a", Err("'a'")),
            ("RW", Err("'R'")),
            ("r w", Err("' '")),
        ];
        for (given, want) in cases {
            let got = device_access("devices[0].permissions", given);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(w), "{given:?}"),
                Err(msg) => {
                    let e = got.unwrap_err().to_string();
                    assert!(
                        e.contains(msg) && e.contains("devices[0].permissions"),
                        "{given:?}: {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn container_paths_are_plain_and_under_dev() {
        let mut c = ctr(&[]);
        c.mounts.push(CriMount {
            container_path: "/dev/vol".into(),
            host_path: "/srv/vol".into(),
            ..Default::default()
        });
        let ok = [
            "/dev/xvda",
            "/dev/disk/a",
            "/dev/nvidia0",
            "/dev/ptmxx",
            "/dev/fdx",
        ];
        for p in ok {
            check_device_container_path("f", p, &c).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        let refused = [
            ("dev/xvda", "not absolute"),
            ("/dev/../etc/x", "\"..\""),
            ("/dev/./x", "\".\""),
            ("/dev/a/../../etc", "\"..\""),
            ("/etc/x", "not under /dev"),
            ("/mnt/disk", "not under /dev"),
            ("/dev", "not under /dev"),
            ("/devices/x", "not under /dev"),
            ("/dev/pts/9", "/dev/pts"),
            ("/dev/shm/x", "/dev/shm"),
            ("/dev/mqueue/x", "/dev/mqueue"),
            ("/dev/fd/3", "/dev/fd"),
            ("/dev/stdout", "/dev/stdout"),
            ("/dev/vol/x", "volume mounted at \"/dev/vol\""),
            ("/dev/vol", "volume mounted at"),
            ("/dev/x\0y", "NUL"),
        ];
        for (p, msg) in refused {
            let e = check_device_container_path("f", p, &c)
                .unwrap_err()
                .to_string();
            assert!(e.contains(msg), "{p:?}: {e}");
        }
    }

    #[test]
    fn requests_default_the_container_path_and_check_every_field() {
        let got = device_requests(&ctr(&[
            ("/dev/sdb", "/dev/xvda", "mrw"),
            ("/dev/fuse", "", "rw"),
        ]))
        .unwrap();
        assert_eq!(got[0].container_path, "/dev/xvda");
        assert_eq!(got[0].access, "rwm");
        assert_eq!(
            (got[1].container_path.as_str(), got[1].index),
            ("/dev/fuse", 1)
        );
        for (d, field) in [
            (("", "/dev/x", "rw"), "devices[0].host_path"),
            (("sdb", "/dev/x", "rw"), "devices[0].host_path"),
            (("/dev/sdb", "/x", "rw"), "devices[0].container_path"),
            (("/dev/sdb", "/dev/x", "rwz"), "devices[0].permissions"),
            (("/srv/blk", "", "rw"), "devices[0].container_path"),
        ] {
            let e = device_requests(&ctr(&[d])).unwrap_err().to_string();
            assert!(e.contains(field), "{d:?}: {e}");
        }
    }

    fn spec_with_base_rules() -> Spec {
        let mut deny = LinuxDeviceCgroup::default();
        deny.set_allow(false);
        deny.set_access(Some("rwm".into()));
        let mut resources = LinuxResources::default();
        resources.set_devices(Some(vec![deny]));
        let mut linux = Linux::default();
        linux.set_resources(Some(resources));
        linux.set_devices(None);
        let mut spec = Spec::default();
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn devices_become_nodes_and_allow_rules() {
        let mut spec = spec_with_base_rules();
        let devs = vec![
            ContainerDevice {
                container_path: "/dev/xvda".into(),
                host: host("/dev/loop7", DeviceKind::Block, 7, 7),
                access: "rw".into(),
            },
            ContainerDevice {
                container_path: "/dev/fuse".into(),
                host: host("/dev/fuse", DeviceKind::Char, 10, 229),
                access: "rwm".into(),
            },
            // Same path again: replaces the first node.
            ContainerDevice {
                container_path: "/dev/xvda".into(),
                host: host("/dev/loop8", DeviceKind::Block, 7, 8),
                access: "r".into(),
            },
        ];
        apply_devices(&mut spec, &devs, DeviceOwnership::Host, false);
        let linux = spec.linux().as_ref().unwrap();
        let nodes = linux.devices().clone().unwrap();
        assert_eq!(nodes.len(), 2);
        let xvda = nodes
            .iter()
            .find(|n| n.path() == Path::new("/dev/xvda"))
            .unwrap();
        assert_eq!(
            (xvda.typ(), xvda.major(), xvda.minor()),
            (LinuxDeviceType::B, 7, 8)
        );
        assert_eq!(
            (xvda.uid(), xvda.gid(), xvda.file_mode()),
            (Some(0), Some(6), Some(0o660))
        );
        let rules = device_rules(linux);
        let summary: Vec<_> = rules
            .iter()
            .map(|r| {
                (
                    r.allow(),
                    r.typ(),
                    r.major(),
                    r.minor(),
                    r.access().clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (false, None, None, None, "rwm".to_string()),
                (
                    true,
                    Some(LinuxDeviceType::B),
                    Some(7),
                    Some(7),
                    "rw".into()
                ),
                (
                    true,
                    Some(LinuxDeviceType::C),
                    Some(10),
                    Some(229),
                    "rwm".into()
                ),
                (true, Some(LinuxDeviceType::B), Some(7), Some(8), "r".into()),
            ]
        );
    }

    #[test]
    fn ownership_from_the_security_context_where_set() {
        use k8s_cri::v1::{Int64Value, LinuxContainerConfig, LinuxContainerSecurityContext};
        let mut c = ctr(&[]);
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1000 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            DeviceOwnership::for_container(false, &c),
            DeviceOwnership::Host
        );
        let own = DeviceOwnership::for_container(true, &c);
        assert_eq!(
            own,
            DeviceOwnership::SecurityContext {
                uid: Some(1000),
                gid: None
            }
        );
        let mut spec = spec_with_base_rules();
        let d = ContainerDevice {
            container_path: "/dev/fuse".into(),
            host: host("/dev/fuse", DeviceKind::Char, 10, 229),
            access: "rw".into(),
        };
        apply_devices(&mut spec, &[d], own, false);
        let n = &spec.linux().as_ref().unwrap().devices().clone().unwrap()[0];
        assert_eq!((n.uid(), n.gid()), (Some(1000), Some(6)));
    }

    #[test]
    fn privileged_gets_nodes_but_no_extra_rules() {
        let mut spec = spec_with_base_rules();
        let devs = host_devices_for_privileged(vec![
            host("/dev/sda", DeviceKind::Block, 8, 0),
            host("/dev/kmsg", DeviceKind::Char, 1, 11),
        ]);
        assert_eq!(devs[0].container_path, "/dev/sda");
        apply_devices(&mut spec, &devs, DeviceOwnership::Host, true);
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.devices().as_ref().unwrap().len(), 2);
        assert_eq!(device_rules(linux).len(), 1);
    }
}
