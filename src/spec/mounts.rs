//! The container's mount list, built like containerd's CRI plugin: the
//! default Unix mounts (/proc, /dev, /dev/pts, /dev/mqueue, /sys,
//! /sys/fs/cgroup, /dev/shm), then the pod files and the CRI mounts, sorted
//! (stably) by path depth so that a parent is mounted before its children,
//! and replacing any default mount with the same destination.

use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, MountPropagation};
use oci_spec::runtime::Mount;

use super::{SpecError, security_context};

/// Host files of the pod bind-mounted into each container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFiles {
    pub hostname: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    /// The pod's shared /dev/shm; None: a private 64m tmpfs.
    pub shm: Option<PathBuf>,
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(dest: &Path, source: &Path, options: Vec<String>) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.to_path_buf());
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options));
    m
}

/// The mounts every container gets. A privileged container gets /sys and
/// the cgroup tree read-write, as with containerd (`--privileged` tools such
/// as kube-proxy or CNI daemons write there).
fn default_mounts(privileged: bool) -> Vec<Mount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ]
}

/// Checks a CRI container path: the OCI spec wants an absolute destination
/// and ".." could climb out of the rootfs before the runtime resolves it.
fn check_container_path(index: usize, path: &str) -> Result<(), SpecError> {
    let field = format!("mounts[{index}].container_path");
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(SpecError::invalid(
            field,
            format!("{path:?} is not absolute; use a path starting with '/'"),
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(SpecError::invalid(
            field,
            format!("{path:?} contains \"..\"; use a path without it"),
        ));
    }
    // A bind mount over /proc (or inside it) would hide the container's own
    // procfs, masked paths included, behind a host directory: runc refuses
    // it for the same reason (CVE-2019-19921), and so does capcri.
    if p == Path::new("/proc") || p.starts_with("/proc/") {
        return Err(SpecError::invalid(
            field,
            format!(
                "{path:?} is on /proc, which only the runtime mounts; mount the volume elsewhere"
            ),
        ));
    }
    Ok(())
}

/// Filesystems only the runtime mounts: a bind mount that lands on them
/// would hide the container's procfs (masked paths included) or sysfs
/// behind a host directory (CVE-2019-19921 class).
const RUNTIME_ONLY: [&str; 2] = ["/proc", "/sys"];

fn under(path: &str, top: &str) -> bool {
    path == top
        || path
            .strip_prefix(top)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Refuses a CRI mount whose destination, once the image's symlinks are
/// followed inside the rootfs, lands on /proc or /sys although the path as
/// written does not (an image with `/data -> /proc/sys` and a volume at
/// `/data/kernel`). The lexical check ([`check_container_path`]) cannot see
/// this; the runtime would follow the link when it mounts. `resolve`
/// follows symlinks without leaving the rootfs (openat2 RESOLVE_IN_ROOT for
/// the real rootfs) and returns None for a loop.
pub fn check_mount_destinations(
    container: &ContainerConfig,
    resolve: impl Fn(&str) -> Option<String>,
) -> Result<(), SpecError> {
    for (i, m) in container.mounts.iter().enumerate() {
        let field = format!("mounts[{i}].container_path");
        let path = m.container_path.as_str();
        let Some(resolved) = resolve(path) else {
            return Err(SpecError::invalid(
                field,
                format!(
                    "{path:?} does not resolve in the image (a symlink loop or more than 40 links); fix the image or mount the volume elsewhere"
                ),
            ));
        };
        if let Some(top) = RUNTIME_ONLY
            .iter()
            .find(|top| under(&resolved, top) && !under(path, top))
        {
            return Err(SpecError::invalid(
                field,
                format!(
                    "{path:?} resolves through a symlink in the image to {resolved:?}, which is on {top}, which only the runtime mounts; mount the volume elsewhere or remove the symlink from the image"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod proc_tests {
    #[test]
    fn mounts_over_proc_are_refused() {
        assert!(super::check_container_path(0, "/proc").is_err());
        assert!(super::check_container_path(0, "/proc/sys/kernel").is_err());
        assert!(super::check_container_path(0, "/procfs").is_ok());
        assert!(super::check_container_path(0, "/var/run/x").is_ok());
    }

    #[test]
    fn destinations_resolving_into_proc_or_sys_are_refused() {
        use k8s_cri::v1::{ContainerConfig, Mount as CriMount};
        // An image's links, resolved the way `policy::resolve_symlinks`
        // does over the rootfs.
        let resolve = |p: &str| -> Option<String> {
            let links = [
                ("/data", "/proc/sys"),
                ("/rel", "proc"),
                ("/deep/root", "/"),
                ("/sysl", "/sys/kernel"),
                ("/loop", "/loop"),
                ("/vol", "/srv/vol"),
            ];
            if p.starts_with("/loop") {
                return None;
            }
            for (link, target) in links {
                if let Some(rest) = p.strip_prefix(link)
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    let base = if target.starts_with('/') {
                        target.to_string()
                    } else {
                        format!("/{target}")
                    };
                    return Some(
                        format!("{}{rest}", base.trim_end_matches('/')).replace("//", "/"),
                    );
                }
            }
            Some(p.to_string())
        };
        let ctr = |path: &str| ContainerConfig {
            mounts: vec![
                CriMount {
                    container_path: "/ok".into(),
                    host_path: "/h".into(),
                    ..Default::default()
                },
                CriMount {
                    container_path: path.into(),
                    host_path: "/h".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        for path in [
            "/data/kernel",
            "/data",
            "/rel/sys",
            "/deep/root/proc/1",
            "/sysl/x",
            "/deep/root/sys",
        ] {
            let err = super::check_mount_destinations(&ctr(path), resolve).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("mounts[1]") && text.contains(path), "{text}");
            assert!(text.contains("/proc") || text.contains("/sys"), "{text}");
        }
        let err = super::check_mount_destinations(&ctr("/loop/x"), resolve).unwrap_err();
        assert!(err.to_string().contains("symlink loop"), "{err}");
        for path in ["/vol/x", "/srv", "/procfs", "/sys/fs/bpf"] {
            assert!(
                super::check_mount_destinations(&ctr(path), resolve).is_ok(),
                "{path}"
            );
        }
    }
}

fn depth(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// Result of the mount translation: the list and the rootfs propagation
/// the CRI propagation modes need (rslave/rshared mounts only propagate if
/// the rootfs mount itself is slave/shared).
///
/// `rootfs_propagation` uses the names libcontainer accepts (`slave`,
/// `shared`): it always applies them recursively and refuses the `r`
/// forms that runc also takes, failing deep in rootfs preparation.
pub struct ContainerMounts {
    pub mounts: Vec<Mount>,
    pub rootfs_propagation: Option<String>,
}

/// Builds the full mount list of a container.
pub fn container_mounts(
    container: &ContainerConfig,
    pod_files: &PodFiles,
) -> Result<ContainerMounts, SpecError> {
    let sc = security_context(container);
    let privileged = sc.is_some_and(|sc| sc.privileged);
    let readonly_rootfs = sc.is_some_and(|sc| sc.readonly_rootfs);

    let mut cri_mounts: Vec<Mount> = Vec::new();
    let mut rootfs_propagation: Option<String> = None;
    for (i, m) in container.mounts.iter().enumerate() {
        check_container_path(i, &m.container_path)?;
        if m.host_path.is_empty() {
            return Err(SpecError::invalid(
                format!("mounts[{i}].host_path"),
                format!(
                    "empty host path for container path {:?}; name the host file or directory to mount",
                    m.container_path
                ),
            ));
        }
        if m.image.as_ref().is_some_and(|img| !img.image.is_empty()) {
            return Err(SpecError::invalid(
                format!("mounts[{i}].image"),
                "image volumes are not supported; use a host path volume",
            ));
        }
        let mut options = vec!["rbind".to_string()];
        let propagation = m.propagation();
        match propagation {
            MountPropagation::PropagationPrivate => options.push("rprivate".into()),
            MountPropagation::PropagationHostToContainer => {
                options.push("rslave".into());
                if rootfs_propagation.is_none() {
                    rootfs_propagation = Some("slave".into());
                }
            }
            MountPropagation::PropagationBidirectional => {
                options.push("rshared".into());
                rootfs_propagation = Some("shared".into());
            }
        }
        if m.recursive_read_only {
            // KEP-3857: rro needs a read-only, private mount (a slave or
            // shared mount would receive writable submounts later).
            if !m.readonly {
                return Err(SpecError::invalid(
                    format!("mounts[{i}].recursive_read_only"),
                    "recursive read-only requires readonly to be true too; set readOnly",
                ));
            }
            if propagation != MountPropagation::PropagationPrivate {
                return Err(SpecError::invalid(
                    format!("mounts[{i}].recursive_read_only"),
                    "recursive read-only requires private propagation; set mountPropagation to None",
                ));
            }
            options.push("rro".into());
        } else if m.readonly {
            options.push("ro".into());
        } else {
            options.push("rw".into());
        }
        // selinux_relabel is ignored: the host has no SELinux.
        cri_mounts.push(bind(
            Path::new(&m.container_path),
            Path::new(&m.host_path),
            options,
        ));
    }

    let user_has = |dest: &str| {
        cri_mounts
            .iter()
            .any(|m| m.destination() == Path::new(dest))
    };
    // The pod files are mounted read-only when the rootfs is read-only,
    // like containerd: a read-only container must not rewrite them.
    let file_opts = || {
        let mode = if readonly_rootfs { "ro" } else { "rw" };
        vec![
            "rbind".to_string(),
            "rprivate".to_string(),
            mode.to_string(),
        ]
    };
    let mut extra: Vec<Mount> = Vec::new();
    let pod_file_mounts = [
        ("/etc/hostname", &pod_files.hostname),
        ("/etc/hosts", &pod_files.hosts),
        ("/etc/resolv.conf", &pod_files.resolv_conf),
    ];
    for (dest, source) in pod_file_mounts {
        if let Some(source) = source
            && !user_has(dest)
        {
            extra.push(bind(Path::new(dest), source, file_opts()));
        }
    }
    if let Some(shm) = &pod_files.shm
        && !user_has("/dev/shm")
    {
        extra.push(bind(
            Path::new("/dev/shm"),
            shm,
            vec!["rbind".into(), "rprivate".into(), "rw".into()],
        ));
    }
    extra.extend(cri_mounts);
    // containerd's orderedMounts: a stable sort by depth.
    extra.sort_by_key(|m| depth(m.destination()));

    let mut mounts: Vec<Mount> = default_mounts(privileged)
        .into_iter()
        .filter(|d| !extra.iter().any(|m| m.destination() == d.destination()))
        .collect();
    mounts.extend(extra);
    Ok(ContainerMounts {
        mounts,
        rootfs_propagation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxContainerConfig, LinuxContainerSecurityContext, Mount as CriMount};

    fn cri(container: &str, host: &str, ro: bool, rro: bool, prop: MountPropagation) -> CriMount {
        CriMount {
            container_path: container.into(),
            host_path: host.into(),
            readonly: ro,
            recursive_read_only: rro,
            propagation: prop as i32,
            ..Default::default()
        }
    }

    fn ctr(mounts: Vec<CriMount>, privileged: bool, ro_rootfs: bool) -> ContainerConfig {
        ContainerConfig {
            mounts,
            linux: Some(LinuxContainerConfig {
                resources: None,
                security_context: Some(LinuxContainerSecurityContext {
                    privileged,
                    readonly_rootfs: ro_rootfs,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    fn files() -> PodFiles {
        PodFiles {
            hostname: Some("/pod/hostname".into()),
            resolv_conf: Some("/pod/resolv.conf".into()),
            hosts: Some("/pod/hosts".into()),
            shm: Some("/pod/shm".into()),
        }
    }

    fn dests(m: &[Mount]) -> Vec<String> {
        m.iter()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    fn opts(m: &[Mount], dest: &str) -> Vec<String> {
        m.iter()
            .find(|m| m.destination() == Path::new(dest))
            .and_then(|m| m.options().clone())
            .unwrap_or_default()
    }

    #[test]
    fn order_and_defaults() {
        let c = ctr(
            vec![
                cri(
                    "/data/sub",
                    "/h/sub",
                    false,
                    false,
                    MountPropagation::PropagationPrivate,
                ),
                cri(
                    "/data",
                    "/h/data",
                    false,
                    false,
                    MountPropagation::PropagationPrivate,
                ),
            ],
            false,
            false,
        );
        let got = container_mounts(&c, &files()).unwrap();
        assert_eq!(
            dests(&got.mounts),
            vec![
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/data",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm",
                "/data/sub",
            ]
        );
        assert!(opts(&got.mounts, "/sys").contains(&"ro".to_string()));
        assert!(opts(&got.mounts, "/sys/fs/cgroup").contains(&"ro".to_string()));
        assert_eq!(
            opts(&got.mounts, "/dev/shm"),
            vec!["rbind", "rprivate", "rw"]
        );
        assert_eq!(
            opts(&got.mounts, "/etc/hosts"),
            vec!["rbind", "rprivate", "rw"]
        );
        assert_eq!(got.rootfs_propagation, None);
    }

    #[test]
    fn private_shm_when_pod_has_none_and_user_files_win() {
        let c = ctr(
            vec![cri(
                "/etc/hosts",
                "/mine/hosts",
                true,
                false,
                MountPropagation::PropagationPrivate,
            )],
            false,
            true,
        );
        let got = container_mounts(
            &c,
            &PodFiles {
                shm: None,
                ..files()
            },
        )
        .unwrap();
        let shm = got
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
        assert!(opts(&got.mounts, "/dev/shm").contains(&"size=65536k".to_string()));
        let hosts: Vec<_> = got
            .mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/mine/hosts")));
        // read-only rootfs makes the pod files read-only
        assert_eq!(
            opts(&got.mounts, "/etc/hostname"),
            vec!["rbind", "rprivate", "ro"]
        );
    }

    #[test]
    fn propagation_and_readonly_table() {
        use MountPropagation::*;
        let cases = vec![
            (
                false,
                false,
                PropagationPrivate,
                vec!["rbind", "rprivate", "rw"],
                None,
            ),
            (
                true,
                false,
                PropagationPrivate,
                vec!["rbind", "rprivate", "ro"],
                None,
            ),
            (
                true,
                true,
                PropagationPrivate,
                vec!["rbind", "rprivate", "rro"],
                None,
            ),
            (
                false,
                false,
                PropagationHostToContainer,
                vec!["rbind", "rslave", "rw"],
                Some("slave"),
            ),
            (
                false,
                false,
                PropagationBidirectional,
                vec!["rbind", "rshared", "rw"],
                Some("shared"),
            ),
        ];
        for (ro, rro, prop, want, rootfs_prop) in cases {
            let c = ctr(vec![cri("/v", "/h", ro, rro, prop)], false, false);
            let got = container_mounts(&c, &PodFiles::default()).unwrap();
            assert_eq!(opts(&got.mounts, "/v"), want, "ro={ro} rro={rro} {prop:?}");
            assert_eq!(got.rootfs_propagation.as_deref(), rootfs_prop);
            let m = got
                .mounts
                .iter()
                .find(|m| m.destination() == Path::new("/v"))
                .unwrap();
            assert_eq!(m.typ().as_deref(), Some("bind"));
        }
    }

    #[test]
    fn invalid_mounts_table() {
        use MountPropagation::*;
        let cases = vec![
            (
                cri("relative/path", "/h", false, false, PropagationPrivate),
                "container_path",
            ),
            (
                cri("/a/../etc", "/h", false, false, PropagationPrivate),
                "container_path",
            ),
            (cri("/a", "", false, false, PropagationPrivate), "host_path"),
            (
                cri("/a", "/h", false, true, PropagationPrivate),
                "recursive_read_only",
            ),
            (
                cri("/a", "/h", true, true, PropagationHostToContainer),
                "recursive_read_only",
            ),
        ];
        for (m, field) in cases {
            let err =
                container_mounts(&ctr(vec![m.clone()], false, false), &PodFiles::default()).err();
            match err {
                Some(SpecError::InvalidConfig { field: f, .. }) => {
                    assert!(f.ends_with(field), "{m:?}: {f}")
                }
                other => panic!("{m:?}: expected InvalidConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn privileged_gets_rw_sysfs_and_cgroup() {
        let got = container_mounts(&ctr(vec![], true, false), &PodFiles::default()).unwrap();
        assert!(opts(&got.mounts, "/sys").contains(&"rw".to_string()));
        assert!(opts(&got.mounts, "/sys/fs/cgroup").contains(&"rw".to_string()));
    }
}
