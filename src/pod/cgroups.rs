//! The pod-level cgroups on the host: which driver this daemon runs, the
//! pod's cgroup made, limited and removed when capcri owns it, in every
//! hierarchy of this host (v1 controllers, the named systemd one, and the
//! unified cgroup2 mount of a hybrid host) or through systemd. Where each
//! cgroup is comes from `util::cgroup_paths`; libcontainer makes and removes the
//! containers' own.

use std::path::{Path, PathBuf};

use k8s_cri::v1::LinuxContainerResources;

use crate::config::Config;
use crate::host::{CgroupPath, ResourceUpdate};
use crate::util::cgroup_paths::{CgroupDriver, PodCgroup, parent_slice};
use crate::util::cgroupfs::{CGROUP_ROOT, hierarchies};

/// This host's cgroup v1 hierarchies (empty on a cgroup2 host), read once
/// from the daemon's mountinfo: the monitors and the containers' inits
/// start from the daemon's mount namespace, so they see the same ones.
pub fn v1_hierarchies() -> &'static [crate::spec::cgroup_v1::V1Hierarchy] {
    static HIERARCHIES: std::sync::OnceLock<Vec<crate::spec::cgroup_v1::V1Hierarchy>> =
        std::sync::OnceLock::new();
    HIERARCHIES.get_or_init(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        crate::spec::cgroup_v1::v1_hierarchies(&mountinfo)
    })
}

/// Whether containers on this host can have hugepage limits: the cgroup2
/// root lists the hugetlb controller, or (v1 and hybrid hosts, where
/// libcontainer manages the v1 hierarchies) a v1 hierarchy carries it.
pub fn hugetlb_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let root = std::path::Path::new(crate::util::cgroupfs::CGROUP_ROOT);
        if crate::util::cgroupfs::is_unified() {
            std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| crate::spec::hugetlb::v2_lists_hugetlb(&c))
        } else {
            v1_hierarchies()
                .iter()
                .any(|h| h.controllers.iter().any(|c| c == "hugetlb"))
        }
    })
}

/// The leaf cgroup of a shared-PID pod's init, under the pod's own.
pub use crate::util::cgroup_paths::POD_INIT_CGROUP;

pub use crate::util::cgroupfs::is_unified as unified;

/// Whether systemd is the init of this host: sd_booted(3)'s test, the one
/// libcgroups' systemd manager makes before it talks to systemd.
pub fn systemd_booted() -> bool {
    libcgroups::systemd::booted()
}

/// The cgroup driver and the parent of pods kubelet gives none, resolved
/// once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSetup {
    pub driver: CgroupDriver,
    pub default_parent: String,
    /// Whether the driver was chosen by detection (no `cgroup_driver` set).
    pub detected: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupSetupError {
    #[error(
        "cgroup_driver is \"systemd\" but systemd is not this host's init (no /run/systemd/system); use cgroup_driver = \"cgroupfs\" (and kubelet's cgroupDriver: cgroupfs)"
    )]
    NoSystemd,
    #[error(
        "cgroup_driver is \"systemd\" but /sys/fs/cgroup is not cgroup2: capcri's systemd driver (libcontainer's) needs the unified hierarchy; boot with systemd.unified_cgroup_hierarchy=1 or use cgroup_driver = \"cgroupfs\""
    )]
    NotUnified,
    #[error("{0}")]
    Parent(#[from] crate::util::cgroup_paths::CgroupParentError),
}

impl CgroupSetup {
    /// The driver of `config`, or the detected one: systemd where PID 1 is
    /// systemd on cgroup2 (kubeadm's default), cgroupfs elsewhere.
    pub fn resolve(config: &Config) -> Result<CgroupSetup, CgroupSetupError> {
        Self::resolve_on(config, systemd_booted(), unified())
    }

    /// [`CgroupSetup::resolve`] with the host's facts given.
    pub fn resolve_on(
        config: &Config,
        systemd: bool,
        unified: bool,
    ) -> Result<CgroupSetup, CgroupSetupError> {
        let detected = config.cgroup_driver.is_none();
        let driver = config.cgroup_driver.unwrap_or(if systemd && unified {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        });
        let default_parent = match (driver, config.cgroup_parent.as_str()) {
            (CgroupDriver::Cgroupfs, "") => {
                crate::util::cgroup_paths::DEFAULT_CGROUPFS_PARENT.to_string()
            }
            (CgroupDriver::Systemd, "") => {
                crate::util::cgroup_paths::DEFAULT_SYSTEMD_PARENT.to_string()
            }
            (CgroupDriver::Cgroupfs, p) => {
                crate::util::cgroup_paths::validate_cgroupfs_path(p)?;
                p.trim_end_matches('/').to_string()
            }
            (CgroupDriver::Systemd, p) => {
                crate::util::cgroup_paths::validate_slice(p)?;
                p.to_string()
            }
        };
        if driver == CgroupDriver::Systemd {
            if !systemd {
                return Err(CgroupSetupError::NoSystemd);
            }
            if !unified {
                return Err(CgroupSetupError::NotUnified);
            }
        }
        Ok(CgroupSetup {
            driver,
            default_parent,
            detected,
        })
    }
}

/// Whether the cgroup `dir` (relative to every hierarchy's root) exists in
/// any hierarchy: kubelet made it before RunPodSandbox.
pub fn cgroup_exists(dir: &str) -> bool {
    let rel = dir.trim_start_matches('/');
    if rel.is_empty() {
        return true;
    }
    hierarchies().iter().any(|h| h.join(rel).is_dir())
}

/// Puts the pod-level limits on a pod cgroup capcri owns (none when the
/// update is empty). cgroupfs: makes the cgroup in every hierarchy (v2:
/// with the controllers enabled on the way down) and writes the files;
/// systemd: sets the slice's properties over D-Bus, which systemd keeps
/// (and applies when the slice starts with the first scope in it).
pub fn apply_pod_limits(pod: &PodCgroup, update: &ResourceUpdate) -> Result<(), String> {
    if !pod.owned || *update == ResourceUpdate::default() {
        return Ok(());
    }
    match pod.driver {
        CgroupDriver::Cgroupfs => {
            let rel = pod.dir.trim_start_matches('/');
            for h in hierarchies() {
                crate::host::create_cgroup(&h, Path::new(rel))?;
            }
            if unified() {
                enable_controllers(rel)?;
            }
            CgroupPath::new(Path::new(&pod.dir)).apply(update)
        }
        CgroupDriver::Systemd => systemd_slice_limits(pod, update),
    }
}

/// cgroup v2: a controller's files exist in a cgroup only if its parent
/// enables it in `cgroup.subtree_control`; enables cpu, memory, pids (and
/// cpuset, io, hugetlb where present) from the root down to `rel`'s parent.
fn enable_controllers(rel: &str) -> Result<(), String> {
    let root = Path::new(CGROUP_ROOT);
    let mut dir = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for part in &parts {
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<String> = available
            .split_whitespace()
            .filter(|c| matches!(*c, "cpu" | "cpuset" | "memory" | "pids" | "io" | "hugetlb"))
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            let file = dir.join("cgroup.subtree_control");
            std::fs::write(&file, wanted.join(" "))
                .map_err(|e| format!("enabling {} in {}: {e}", wanted.join(" "), file.display()))?;
        }
        dir.push(part);
    }
    Ok(())
}

/// The libcgroups systemd manager of the pod's slice unit itself (the
/// cgroupsPath form `<parent slice>:<prefix>:<name>.slice`).
fn slice_manager(pod: &PodCgroup) -> Result<libcgroups::systemd::manager::Manager, String> {
    let slice = pod.slice.as_deref().ok_or("not a systemd pod")?;
    libcgroups::systemd::manager::Manager::new(
        PathBuf::from(CGROUP_ROOT),
        PathBuf::from(format!("{}:capcri:{slice}", parent_slice(slice))),
        slice.to_string(),
        true,
        std::time::Duration::from_secs(5),
    )
    .map_err(|e| format!("connecting to systemd for slice {slice}: {e}"))
}

fn systemd_slice_limits(pod: &PodCgroup, update: &ResourceUpdate) -> Result<(), String> {
    use libcgroups::common::{CgroupManager, ControllerOpt};
    let resources = oci_resources(update);
    slice_manager(pod)?
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| {
            format!(
                "setting the limits of slice {}: {e}",
                pod.slice.as_deref().unwrap_or_default()
            )
        })
}

/// Removes what capcri made for the pod: the pod init's leaf (cgroupfs),
/// and the pod's cgroup itself when capcri owns it (rmdir in every
/// hierarchy, or stopping the slice). A non-empty cgroup is left (it still
/// holds a live process) and reported. kubelet's own pod cgroup is never
/// touched: kubelet removes it once the pod is gone.
pub fn remove_pod_cgroup(pod: &PodCgroup) -> Vec<String> {
    let mut failures = Vec::new();
    match pod.driver {
        CgroupDriver::Cgroupfs => {
            let rel = pod.dir.trim_start_matches('/');
            for h in hierarchies() {
                let dir = h.join(rel);
                let _ = std::fs::remove_dir(dir.join(POD_INIT_CGROUP));
                if !pod.owned {
                    continue;
                }
                match std::fs::remove_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => failures.push(format!("{}: {e}", dir.display())),
                }
            }
        }
        // The pod init's scope went with its last process (systemd
        // collects empty transient scopes).
        CgroupDriver::Systemd if pod.owned => {
            use libcgroups::common::CgroupManager;
            match slice_manager(pod).and_then(|m| m.remove().map_err(|e| e.to_string())) {
                Ok(()) => {}
                Err(e) => failures.push(e),
            }
            // SetUnitProperties(runtime) keeps the limits as drop-ins; the
            // slice is gone, so are they.
            if let Some(slice) = &pod.slice {
                let _ = std::fs::remove_dir_all(
                    Path::new("/run/systemd/system.control").join(format!("{slice}.d")),
                );
            }
        }
        CgroupDriver::Systemd => {}
    }
    failures
}

/// The pod-level limits kubelet asks for: `resources` (the sum of its
/// containers' limits, overhead excluded) plus `overhead` (the RuntimeClass
/// overhead), as kubelet sizes its own pod cgroup. Only what is limited is
/// set: a pod whose containers do not all have a memory limit has none.
pub fn pod_limits(
    resources: Option<&LinuxContainerResources>,
    overhead: Option<&LinuxContainerResources>,
) -> ResourceUpdate {
    let zero = LinuxContainerResources::default();
    let r = resources.unwrap_or(&zero);
    let o = overhead.unwrap_or(&zero);
    let mut update = ResourceUpdate::default();
    if r.memory_limit_in_bytes > 0 {
        update.memory_limit = Some(
            r.memory_limit_in_bytes
                .saturating_add(o.memory_limit_in_bytes.max(0)),
        );
    }
    if r.cpu_shares > 0 {
        update.cpu_shares = Some((r.cpu_shares.saturating_add(o.cpu_shares.max(0))) as u64);
    }
    if r.cpu_quota > 0 {
        let period = if r.cpu_period > 0 {
            r.cpu_period
        } else {
            100_000
        };
        // The overhead's quota, rescaled to the pod's period.
        let extra = if o.cpu_quota > 0 {
            let o_period = if o.cpu_period > 0 {
                o.cpu_period
            } else {
                100_000
            };
            ((o.cpu_quota as i128 * period as i128) / o_period as i128) as i64
        } else {
            0
        };
        update.cpu_quota = Some(r.cpu_quota.saturating_add(extra));
        update.cpu_period = Some(period as u64);
    }
    update
}

/// The OCI form of pod-level limits (what libcgroups' systemd manager
/// turns into unit properties: MemoryMax, CPUWeight, CPUQuota...).
pub fn oci_resources(update: &ResourceUpdate) -> oci_spec::runtime::LinuxResources {
    use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};
    let mut resources = LinuxResources::default();
    if update.cpu_shares.is_some() || update.cpu_quota.is_some() || update.cpu_period.is_some() {
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(update.cpu_shares);
        cpu.set_quota(update.cpu_quota);
        cpu.set_period(update.cpu_period);
        resources.set_cpu(Some(cpu));
    }
    if let Some(limit) = update.memory_limit {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(limit));
        resources.set_memory(Some(memory));
    }
    resources
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(driver: Option<CgroupDriver>, parent: &str) -> Config {
        Config {
            cgroup_driver: driver,
            cgroup_parent: parent.to_string(),
            ..Config::default()
        }
    }

    #[test]
    fn pod_limits_add_the_overhead() {
        let resources = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 150_000,
            cpu_shares: 1536,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        };
        let overhead = LinuxContainerResources {
            cpu_period: 50_000,
            cpu_quota: 5_000,
            cpu_shares: 102,
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        };
        assert_eq!(
            pod_limits(Some(&resources), Some(&overhead)),
            ResourceUpdate {
                cpu_shares: Some(1638),
                cpu_quota: Some(160_000),
                cpu_period: Some(100_000),
                memory_limit: Some(288 << 20),
                ..Default::default()
            }
        );
        // Unlimited pods (a container without a limit): nothing to set,
        // whatever the overhead.
        assert_eq!(pod_limits(None, Some(&overhead)), ResourceUpdate::default());
        assert_eq!(pod_limits(None, None), ResourceUpdate::default());
    }

    #[test]
    fn the_driver_is_detected_like_kubeadm_nodes() {
        // (systemd is PID 1, cgroup2) -> driver
        for (systemd, unified, want) in [
            (true, true, CgroupDriver::Systemd),
            (true, false, CgroupDriver::Cgroupfs),
            (false, true, CgroupDriver::Cgroupfs),
            (false, false, CgroupDriver::Cgroupfs),
        ] {
            let s = CgroupSetup::resolve_on(&config(None, ""), systemd, unified).unwrap();
            assert_eq!(s.driver, want, "systemd {systemd} unified {unified}");
            assert!(s.detected);
            assert_eq!(
                s.default_parent,
                match want {
                    CgroupDriver::Systemd => "capcri.slice",
                    CgroupDriver::Cgroupfs => "/capcri",
                }
            );
        }
        let chosen =
            CgroupSetup::resolve_on(&config(Some(CgroupDriver::Cgroupfs), "/k/"), true, true)
                .unwrap();
        assert_eq!(
            (
                chosen.driver,
                chosen.default_parent.as_str(),
                chosen.detected
            ),
            (CgroupDriver::Cgroupfs, "/k", false)
        );
    }

    #[test]
    fn systemd_where_the_host_cannot_is_a_clear_startup_error() {
        let systemd = config(Some(CgroupDriver::Systemd), "");
        let e = CgroupSetup::resolve_on(&systemd, false, true).unwrap_err();
        assert!(
            e.to_string().contains("systemd is not this host's init"),
            "{e}"
        );
        let e = CgroupSetup::resolve_on(&systemd, true, false).unwrap_err();
        assert!(e.to_string().contains("not cgroup2"), "{e}");
        // A parent of the other driver's form, when detection picks one.
        let e = CgroupSetup::resolve_on(&config(None, "/capcri"), true, true).unwrap_err();
        assert!(e.to_string().contains("systemd cgroup driver"), "{e}");
        let e = CgroupSetup::resolve_on(&config(None, "capcri.slice"), false, false).unwrap_err();
        assert!(e.to_string().contains("cgroupfs driver"), "{e}");
    }
}
