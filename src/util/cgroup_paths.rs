//! Where a pod's cgroup and its containers' cgroups are, for both cgroup
//! drivers, decided once at RunPodSandbox from what kubelet sent
//! (`PodSandboxConfig.linux.cgroup_parent`) and persisted in the pod record.
//! Pure: names in, names out; `pod::cgroups` does the I/O. A leaf
//! (config, spec, the monitor and the node all name cgroups).
//!
//! - cgroupfs: kubelet sends the pod's cgroup as an absolute path
//!   (`/kubepods/burstable/pod<uid>`); a container is `<pod>/<container id>`
//!   and a shared-PID pod's init `<pod>/pod-init`, as containerd places its
//!   sandbox and containers.
//! - systemd: kubelet sends the pod's slice (`kubepods-burstable-pod<uid>.slice`);
//!   a container is the transient scope `capcri-<id>.scope` in it, OCI
//!   `cgroupsPath` `<slice>:capcri:<id>` (containerd: `cri-containerd`,
//!   CRI-O: `crio`), made by libcontainer over D-Bus.
//!
//! An empty `cgroup_parent` (kubelet with `cgroupsPerQOS: false`, crictl)
//! puts the pod under the configured parent: `<parent>/<pod id>` or the
//! slice `<parent stem>-pod<pod id>.slice`.

use serde::{Deserialize, Serialize};

/// Who manages the pods' cgroups: capcri writing /sys/fs/cgroup itself, or
/// systemd (slices and transient scopes, over D-Bus). It must be kubelet's
/// `cgroupDriver` (kubelet 1.28+ reads it from the RuntimeConfig RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }
}

/// The prefix of capcri's scope units (`capcri-<id>.scope`).
pub const SCOPE_PREFIX: &str = "capcri";
/// The prefix of a shared-PID pod init's scope (`capcri-pod-init-<pod id>.scope`).
pub const POD_INIT_SCOPE_PREFIX: &str = "capcri-pod-init";
/// The pod init's leaf under a cgroupfs pod cgroup.
pub const POD_INIT_CGROUP: &str = "pod-init";
/// The configured parents of pods that name none, per driver.
pub const DEFAULT_CGROUPFS_PARENT: &str = "/capcri";
pub const DEFAULT_SYSTEMD_PARENT: &str = "capcri.slice";

/// Linux NAME_MAX: one path component, and systemd's unit name limit (256
/// with the NUL).
const MAX_NAME: usize = 255;
/// PATH_MAX.
const MAX_PATH: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgroupParentError {
    #[error(
        "cgroup_parent {0:?} is not an absolute cgroup path; the cgroupfs driver expects a path such as \"/kubepods/burstable/pod<uid>\""
    )]
    NotAbsolute(String),
    #[error(
        "cgroup_parent {value:?} has a {component:?} component: a cgroup path may not contain \".\", \"..\" or empty components (it would name a cgroup outside the one asked for)"
    )]
    BadComponent { value: String, component: String },
    #[error(
        "cgroup_parent {0:?} is the root cgroup: a pod needs a cgroup of its own, such as \"/kubepods/pod<uid>\""
    )]
    Root(String),
    #[error(
        "cgroup_parent {0:?} contains a control character or NUL; use a plain cgroup path or slice name"
    )]
    ControlCharacter(String),
    #[error("cgroup_parent is {len} bytes long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error(
        "cgroup_parent {value:?} is not a systemd slice name ({why}); the systemd driver expects a slice such as \"kubepods-burstable-pod<uid>.slice\""
    )]
    NotASlice { value: String, why: &'static str },
    #[error(
        "cgroup_parent {0:?} is a cgroupfs path but capcri runs the systemd cgroup driver: kubelet and capcri must use the same driver; set kubelet's cgroupDriver to systemd (kubelet 1.28+ reads it from capcri's RuntimeConfig) or run capcri with cgroup_driver = \"cgroupfs\""
    )]
    PathUnderSystemd(String),
    #[error(
        "cgroup_parent {value:?} ends in the slice {slice:?}, whose cgroup is {expected:?}, not that path: kubelet's systemd driver sends a slice's own path (or its unit name); any other path would name a cgroup the slice is not"
    )]
    SlicePathMismatch {
        value: String,
        slice: String,
        expected: String,
    },
    #[error(
        "cgroup_parent {0:?} is a systemd slice but capcri runs the cgroupfs driver: kubelet and capcri must use the same driver; set kubelet's cgroupDriver to cgroupfs or run capcri with cgroup_driver = \"systemd\""
    )]
    SliceUnderCgroupfs(String),
}

/// Checks a cgroupfs cgroup path (absolute, below the root, no `.`/`..`):
/// it is joined to every hierarchy's mount point, so anything else could
/// name a cgroup of another pod or escape /sys/fs/cgroup.
pub fn validate_cgroupfs_path(value: &str) -> Result<(), CgroupParentError> {
    if value.len() > MAX_PATH {
        return Err(CgroupParentError::TooLong {
            len: value.len(),
            max: MAX_PATH,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(CgroupParentError::ControlCharacter(value.to_string()));
    }
    if value.ends_with(".slice") && !value.contains('/') {
        return Err(CgroupParentError::SliceUnderCgroupfs(value.to_string()));
    }
    let Some(rest) = value.strip_prefix('/') else {
        return Err(CgroupParentError::NotAbsolute(value.to_string()));
    };
    // One trailing slash is harmless (kubelet never sends it, people do).
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(CgroupParentError::Root(value.to_string()));
    }
    for component in rest.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(CgroupParentError::BadComponent {
                value: value.to_string(),
                component: component.to_string(),
            });
        }
        if component.len() > MAX_NAME {
            return Err(CgroupParentError::TooLong {
                len: component.len(),
                max: MAX_NAME,
            });
        }
    }
    Ok(())
}

/// Checks a slice unit name the way systemd's `unit_name_is_valid` and its
/// slice expansion do: `[A-Za-z0-9:_.-]` (no `\` escapes: kubelet never
/// makes them), `.slice`, no empty `-` component, at most 255 bytes.
pub fn validate_slice(value: &str) -> Result<(), CgroupParentError> {
    let bad = |why| {
        Err(CgroupParentError::NotASlice {
            value: value.to_string(),
            why,
        })
    };
    if value.chars().any(char::is_control) {
        return Err(CgroupParentError::ControlCharacter(value.to_string()));
    }
    if value.starts_with('/') {
        return Err(CgroupParentError::PathUnderSystemd(value.to_string()));
    }
    if value.len() > MAX_NAME {
        return Err(CgroupParentError::TooLong {
            len: value.len(),
            max: MAX_NAME,
        });
    }
    let Some(stem) = value.strip_suffix(".slice") else {
        return bad("it does not end in \".slice\"");
    };
    if stem.is_empty() {
        return bad("it has no name before \".slice\"");
    }
    if stem == "-" {
        return bad("\"-.slice\" is the root slice; a pod needs a slice of its own");
    }
    if !stem
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-'))
    {
        return bad("only letters, digits, ':', '_', '.' and '-' are allowed");
    }
    if stem.split('-').any(str::is_empty) {
        return bad("a '-' starts, ends or doubles its name: each '-' separates a parent slice");
    }
    Ok(())
}

/// The slice unit of a `cgroup_parent` sent to the systemd driver. kubelet
/// sends the slice's cgroup path (`CgroupName.ToSystemd`, which expands the
/// unit: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`);
/// crictl and the CRI's own docs use the unit name. containerd and CRI-O take
/// the path's last component (Go's `path.Base`); capcri does too, but only
/// when the path is exactly that slice's expansion, so a path never names a
/// slice somewhere else than it says.
pub fn systemd_parent_slice(value: &str) -> Result<String, CgroupParentError> {
    if value.chars().any(char::is_control) {
        return Err(CgroupParentError::ControlCharacter(value.to_string()));
    }
    let Some(path) = value.strip_prefix('/') else {
        validate_slice(value)?;
        return Ok(value.to_string());
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    let last = path.rsplit('/').next().unwrap_or_default();
    if !last.ends_with(".slice") || validate_slice(last).is_err() {
        return Err(CgroupParentError::PathUnderSystemd(value.to_string()));
    }
    let expected = expand_slice(last);
    if expected != format!("/{path}") {
        return Err(CgroupParentError::SlicePathMismatch {
            value: value.to_string(),
            slice: last.to_string(),
            expected,
        });
    }
    Ok(last.to_string())
}

/// The cgroup directory of a slice, as systemd lays it out:
/// `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`. Call on a validated
/// name.
pub fn expand_slice(slice: &str) -> String {
    let stem = slice.strip_suffix(".slice").unwrap_or(slice);
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
        prefix.push('-');
    }
    path
}

/// The slice a slice lives in: `a-b.slice` in `a.slice`, `a.slice` in the
/// root slice `-.slice`.
pub fn parent_slice(slice: &str) -> String {
    let stem = slice.strip_suffix(".slice").unwrap_or(slice);
    match stem.rsplit_once('-') {
        Some((parent, _)) => format!("{parent}.slice"),
        None => "-.slice".to_string(),
    }
}

/// The directory a container's OCI `cgroupsPath` names, relative to every
/// hierarchy's root: the path itself, or for the systemd form
/// `<slice>:<prefix>:<name>` the scope `<slice dir>/<prefix>-<name>.scope`
/// (or the slice `<name>` itself). `None` for a malformed value.
pub fn cgroup_dir_of(cgroups_path: &str) -> Option<String> {
    if cgroups_path.starts_with('/') {
        return validate_cgroupfs_path(cgroups_path)
            .ok()
            .map(|()| cgroups_path.trim_end_matches('/').to_string());
    }
    let mut parts = cgroups_path.split(':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || name.is_empty() || name.contains('/') || prefix.contains('/') {
        return None;
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    validate_slice(slice).ok()?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else {
        format!("{prefix}-{name}.scope")
    };
    Some(format!("{}/{unit}", expand_slice(slice)))
}

/// A pod's cgroup as decided at RunPodSandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCgroup {
    pub driver: CgroupDriver,
    /// Its directory relative to the root of every hierarchy, with a
    /// leading `/` (`/kubepods/burstable/pod<uid>`,
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`).
    pub dir: String,
    /// systemd: its slice unit.
    #[serde(default)]
    pub slice: Option<String>,
    /// capcri made it (it did not exist before the pod): capcri applies the
    /// pod-level resources to it and removes it with the pod. A cgroup
    /// kubelet made (cgroupsPerQOS) is kubelet's: its limits are kubelet's
    /// and kubelet removes it.
    pub owned: bool,
    /// The pod id, for the pod init's scope name.
    pub pod_id: String,
}

impl PodCgroup {
    /// Where pod `pod_id` goes: `requested` is kubelet's `cgroup_parent`,
    /// `default_parent` the configured parent (already checked for the
    /// driver at startup). `owned` is what the caller found on the host:
    /// whether the requested cgroup is missing (an empty request always
    /// makes capcri's own).
    pub fn resolve(
        driver: CgroupDriver,
        requested: &str,
        default_parent: &str,
        pod_id: &str,
    ) -> Result<PodCgroup, CgroupParentError> {
        let own = requested.is_empty();
        match driver {
            CgroupDriver::Cgroupfs => {
                let dir = if own {
                    format!("{}/{pod_id}", default_parent.trim_end_matches('/'))
                } else {
                    validate_cgroupfs_path(requested)?;
                    requested.trim_end_matches('/').to_string()
                };
                Ok(PodCgroup {
                    driver,
                    dir,
                    slice: None,
                    owned: own,
                    pod_id: pod_id.to_string(),
                })
            }
            CgroupDriver::Systemd => {
                let slice = if own {
                    let stem = default_parent
                        .strip_suffix(".slice")
                        .unwrap_or(default_parent);
                    format!("{stem}-pod{pod_id}.slice")
                } else {
                    systemd_parent_slice(requested)?
                };
                validate_slice(&slice)?;
                Ok(PodCgroup {
                    driver,
                    dir: expand_slice(&slice),
                    slice: Some(slice),
                    owned: own,
                    pod_id: pod_id.to_string(),
                })
            }
        }
    }

    /// The OCI `linux.cgroupsPath` of container `id`.
    pub fn container_cgroups_path(&self, id: &str) -> String {
        match &self.slice {
            Some(slice) => format!("{slice}:{SCOPE_PREFIX}:{id}"),
            None => format!("{}/{id}", self.dir),
        }
    }

    /// The directory of container `id`, relative to every hierarchy's root.
    pub fn container_dir(&self, id: &str) -> String {
        match &self.slice {
            Some(_) => format!("{}/{SCOPE_PREFIX}-{id}.scope", self.dir),
            None => format!("{}/{id}", self.dir),
        }
    }

    /// Where a shared-PID pod's init goes, in the form the monitor takes
    /// (`--init-cgroup`): a cgroupfs path, or a systemd `slice:prefix:name`
    /// for a scope of its own (a slice holds no processes).
    pub fn init_cgroup(&self) -> String {
        match &self.slice {
            Some(slice) => format!("{slice}:{POD_INIT_SCOPE_PREFIX}:{}", self.pod_id),
            None => format!("{}/{POD_INIT_CGROUP}", self.dir),
        }
    }

    /// The pod init's directory.
    pub fn init_dir(&self) -> String {
        cgroup_dir_of(&self.init_cgroup()).unwrap_or_default()
    }
}

/// A cgroup v2 file a CRI `unified` key may name: `<controller>.<file>` of a
/// controller capcri leaves to the pod (never `cgroup.*`, whose files move
/// processes or change the tree), one path component.
pub fn validate_unified_key(key: &str) -> Result<(), String> {
    const CONTROLLERS: [&str; 8] = [
        "cpu", "cpuset", "memory", "io", "pids", "hugetlb", "rdma", "misc",
    ];
    let Some((controller, file)) = key.split_once('.') else {
        return Err(format!(
            "unified key {key:?} is not a cgroup v2 file name such as \"memory.high\""
        ));
    };
    if !CONTROLLERS.contains(&controller)
        || file.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    {
        return Err(format!(
            "unified key {key:?} is not a file of the cpu, cpuset, memory, io, pids, hugetlb, rdma or misc controller (e.g. \"memory.high\"); cgroup.* files and paths are refused"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_parents_kubelet_sends() {
        for (requested, dir) in [
            ("/kubepods/burstable/pod123", "/kubepods/burstable/pod123"),
            ("/kubepods/pod123", "/kubepods/pod123"),
            ("/kubepods/besteffort/pod1/", "/kubepods/besteffort/pod1"),
        ] {
            let p =
                PodCgroup::resolve(CgroupDriver::Cgroupfs, requested, "/capcri", "abc").unwrap();
            assert_eq!(p.dir, dir);
            assert!(!p.owned);
            assert_eq!(p.container_cgroups_path("c1"), format!("{dir}/c1"));
            assert_eq!(p.container_dir("c1"), format!("{dir}/c1"));
            assert_eq!(p.init_cgroup(), format!("{dir}/pod-init"));
            assert_eq!(p.init_dir(), format!("{dir}/pod-init"));
        }
        let own = PodCgroup::resolve(CgroupDriver::Cgroupfs, "", "/capcri", "abc").unwrap();
        assert_eq!((own.dir.as_str(), own.owned), ("/capcri/abc", true));
    }

    #[test]
    fn systemd_parents_kubelet_sends() {
        let p = PodCgroup::resolve(
            CgroupDriver::Systemd,
            "kubepods-burstable-pod12_34.slice",
            "capcri.slice",
            "abc",
        )
        .unwrap();
        assert_eq!(
            p.dir,
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice"
        );
        assert_eq!(
            p.container_cgroups_path("c1"),
            "kubepods-burstable-pod12_34.slice:capcri:c1"
        );
        assert_eq!(p.container_dir("c1"), format!("{}/capcri-c1.scope", p.dir));
        assert_eq!(p.init_dir(), format!("{}/capcri-pod-init-abc.scope", p.dir));
        // The directory libcontainer's systemd manager computes from the
        // cgroupsPath is the one stats and the monitor read.
        assert_eq!(
            cgroup_dir_of(&p.container_cgroups_path("c1")).unwrap(),
            p.container_dir("c1")
        );
        let own = PodCgroup::resolve(CgroupDriver::Systemd, "", "capcri.slice", "abc").unwrap();
        assert_eq!(own.slice.as_deref(), Some("capcri-podabc.slice"));
        assert_eq!(own.dir, "/capcri.slice/capcri-podabc.slice");
        assert!(own.owned);
        let guaranteed =
            PodCgroup::resolve(CgroupDriver::Systemd, "kubepods-pod1.slice", "x.slice", "a")
                .unwrap();
        assert_eq!(guaranteed.dir, "/kubepods.slice/kubepods-pod1.slice");
    }

    /// What kubelet v1.36 sends on the systemd driver (seen on the VM node):
    /// the slice's expanded path, for every QoS class; the same pod cgroup
    /// as its unit name gives.
    #[test]
    fn systemd_parents_as_kubelets_expanded_paths() {
        for (sent, slice) in [
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice",
                "kubepods-burstable-pod12_34.slice",
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab.slice",
                "kubepods-besteffort-podab.slice",
            ),
            ("/kubepods.slice/kubepods-pod1.slice", "kubepods-pod1.slice"),
            (
                "/kubepods.slice/kubepods-pod1.slice/",
                "kubepods-pod1.slice",
            ),
            // kubelet's cgroupRoot as a slice: its kubepods nests under it.
            (
                "/node.slice/node-kubepods.slice/node-kubepods-pod1.slice",
                "node-kubepods-pod1.slice",
            ),
            ("/kubepods.slice", "kubepods.slice"),
        ] {
            let by_path = PodCgroup::resolve(CgroupDriver::Systemd, sent, "capcri.slice", "abc")
                .unwrap_or_else(|e| panic!("{sent:?}: {e}"));
            let by_name =
                PodCgroup::resolve(CgroupDriver::Systemd, slice, "capcri.slice", "abc").unwrap();
            assert_eq!(by_path, by_name, "{sent:?}");
            assert_eq!(by_path.slice.as_deref(), Some(slice));
            assert_eq!(by_path.dir, sent.trim_end_matches('/'));
            assert_eq!(
                by_path.container_cgroups_path("c1"),
                format!("{slice}:capcri:c1")
            );
            assert!(!by_path.owned);
        }
    }

    #[test]
    fn hostile_cgroupfs_parents_are_refused() {
        let long = format!("/{}", "a".repeat(256));
        let very_long = "/a".repeat(3000);
        for (value, want) in [
            ("kubepods/pod1", "not an absolute"),
            ("../../etc", "not an absolute"),
            ("/kubepods/../../../etc", "\"..\" component"),
            ("/kubepods/./pod1", "\".\" component"),
            ("/kubepods//pod1", "\"\" component"),
            ("/..", "\"..\" component"),
            ("/", "root cgroup"),
            ("//", "root cgroup"),
            ("/a//", "\"\" component"),
            ("/kube\npods", "control character"),
            ("/kube\0pods", "control character"),
            (long.as_str(), "at most 255"),
            (very_long.as_str(), "at most 4096"),
            ("kubepods-pod1.slice", "is a systemd slice"),
        ] {
            let e = PodCgroup::resolve(CgroupDriver::Cgroupfs, value, "/capcri", "p")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{value:?}: {e}");
        }
    }

    #[test]
    fn hostile_slices_are_refused() {
        let long = format!("{}.slice", "a".repeat(250));
        for (value, want) in [
            ("/kubepods/burstable/pod1", "is a cgroupfs path"),
            ("/", "is a cgroupfs path"),
            ("/-.slice", "is a cgroupfs path"),
            ("/kubepods.slice/../etc.slice", "not that path"),
            ("/kubepods.slice/kube pods.slice", "is a cgroupfs path"),
            ("/kubepods.slice/x\npods.slice", "control character"),
            // A slice's name under another slice's path: it would run
            // where the path does not say.
            (
                "/system.slice/kubepods-pod1.slice",
                "whose cgroup is \"/kubepods.slice/kubepods-pod1.slice\"",
            ),
            ("/etc/kubepods.slice", "not that path"),
            ("//kubepods.slice", "not that path"),
            (
                "/kubepods.slice/kubepods-burstable.slice/../kubepods-burstable-pod1.slice",
                "not that path",
            ),
            (
                "/kubepods.slice/kubepods-burstable-pod1.slice",
                "not that path",
            ),
            ("kubepods", "does not end in"),
            (".slice", "no name"),
            ("-.slice", "root slice"),
            ("kubepods--pod1.slice", "'-' starts"),
            ("-kubepods.slice", "'-' starts"),
            ("kubepods-.slice", "'-' starts"),
            ("kube/pods.slice", "only letters"),
            ("../x.slice", "only letters"),
            ("kube pods.slice", "only letters"),
            ("kube\\x2dpods.slice", "only letters"),
            ("kube\npods.slice", "control character"),
            (long.as_str(), "at most 255"),
        ] {
            let e = PodCgroup::resolve(CgroupDriver::Systemd, value, "capcri.slice", "p")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{value:?}: {e}");
        }
    }

    #[test]
    fn slices_expand_like_systemd() {
        assert_eq!(expand_slice("a.slice"), "/a.slice");
        assert_eq!(
            expand_slice("a-b-c.slice"),
            "/a.slice/a-b.slice/a-b-c.slice"
        );
        assert_eq!(parent_slice("a-b-c.slice"), "a-b.slice");
        assert_eq!(parent_slice("a.slice"), "-.slice");
    }

    #[test]
    fn oci_cgroups_paths_to_directories() {
        assert_eq!(cgroup_dir_of("/capcri/p/c").as_deref(), Some("/capcri/p/c"));
        assert_eq!(
            cgroup_dir_of("a-b.slice:capcri:c1").as_deref(),
            Some("/a.slice/a-b.slice/capcri-c1.scope")
        );
        assert_eq!(
            cgroup_dir_of(":capcri:c1").as_deref(),
            Some("/system.slice/capcri-c1.scope")
        );
        for bad in [
            "/a/../b",
            "relative/path",
            "a.slice:capcri",
            "a.slice:x:y:z",
            "a.slice:x:../y",
            "../a.slice:x:y",
        ] {
            assert_eq!(cgroup_dir_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn unified_keys() {
        for ok in [
            "memory.high",
            "pids.max",
            "cpu.weight",
            "io.max",
            "memory.swap.max",
        ] {
            assert_eq!(validate_unified_key(ok), Ok(()), "{ok}");
        }
        for bad in [
            "cgroup.procs",
            "cgroup.subtree_control",
            "memory",
            "../memory.max",
            "memory.max/x",
            "devices.allow",
            "memory.",
            "Memory.High",
        ] {
            assert!(validate_unified_key(bad).is_err(), "{bad}");
        }
    }
}
