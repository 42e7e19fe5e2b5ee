//! Pid 1 of a shared-PID pod (`shareProcessNamespace`, CRI pid mode POD):
//! the role of the pause process, and no more power than it.
//!
//! It is a fork of the monitor, so it starts as host root with every
//! capability, in the host's mount, network, IPC and UTS namespaces. A
//! container of the pod sees it as pid 1 and, with CAP_SYS_PTRACE, may
//! reach `/proc/1/root`, `/proc/1/cwd`, `/proc/1/fd`, `/proc/1/environ` or
//! ptrace it outright (the ptrace access check passes on that capability
//! whatever the uid or dumpable flag). So before it serves, it takes what a
//! pause container has and nothing else:
//! - the pod's network, IPC and UTS namespaces, joined from the monitor's
//!   pins (injected code must not open sockets in the host's network);
//! - a mount namespace of its own whose root is an empty, read-only tmpfs
//!   (pivot_root, old root detached): `/proc/1/root` shows nothing;
//! - in the pod's cgroup (a leaf of its own, see `join_cgroup`);
//! - no capabilities: the bounding set dropped, ambient and inheritable
//!   cleared, then a uid change clears permitted and effective;
//! - uid and gid 65535 (the pause image's; not 65534, `nobody`, which host
//!   daemons share), or inside a pod user namespace the highest mapped id
//!   up to 65535;
//! - no_new_privs, not dumpable, no descriptors, no environment and no
//!   command line left from the monitor.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns};

use crate::host::create_cgroup;
use crate::util::mount::PrivateMountsError;

/// The pause image's uid and gid.
pub(crate) const POD_INIT_ID: u32 = 65535;

/// The id the pod init runs as: 65535, or inside a pod user namespace
/// whose mapping (always from container id 0) is shorter, its last id.
pub(crate) fn pod_init_id(mapped_length: Option<u32>) -> u32 {
    match mapped_length {
        Some(len) if len <= POD_INIT_ID => len.saturating_sub(1),
        _ => POD_INIT_ID,
    }
}

/// The pod's namespaces to join (opened before anything changes) and the
/// ids to become.
pub(crate) struct PodInitPlan {
    namespaces: Vec<(File, CloneFlags)>,
    uid: u32,
    gid: u32,
    /// Where the empty root is mounted before pivot_root: any directory
    /// works, the mount is only ever in the init's own mount namespace.
    staging: PathBuf,
}

impl PodInitPlan {
    /// Opens the pins of the pod's net, ipc and uts namespaces that exist
    /// (a host-network or host-IPC pod has none for them).
    pub(crate) fn new(
        pod_dir: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<PodInitPlan, crate::monitor_api::RuntimeError> {
        use crate::host::{NamespaceKind, pinned_namespace_path};
        let mut namespaces = Vec::new();
        for (kind, flag) in [
            (NamespaceKind::Net, CloneFlags::CLONE_NEWNET),
            (NamespaceKind::Ipc, CloneFlags::CLONE_NEWIPC),
            (NamespaceKind::Uts, CloneFlags::CLONE_NEWUTS),
        ] {
            let pin = pinned_namespace_path(pod_dir, kind);
            match File::open(&pin) {
                Ok(f) => namespaces.push((f, flag)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(crate::monitor_api::RuntimeError::io(
                        format!("opening {}", pin.display()),
                        e,
                    ));
                }
            }
        }
        Ok(PodInitPlan {
            namespaces,
            uid,
            gid,
            staging: pod_dir.to_path_buf(),
        })
    }

    /// In the pod init's parent, after `enter_empty_root` and joining the
    /// pod's user namespace (which owns these), before it unshares the PID
    /// namespace: the pod's network, IPC and UTS namespaces.
    pub(crate) fn join_pod_namespaces(&self) -> Result<(), String> {
        for (ns, flag) in &self.namespaces {
            setns(ns, *flag).map_err(|e| format!("joining the pod's {flag:?} namespace: {e}"))?;
        }
        Ok(())
    }

    /// In the pod init's parent, first, as host root (a pod user
    /// namespace's root could not even reach the staging directory): a
    /// mount namespace of its own, owned by the host's user namespace so
    /// the init can never change it, with an empty read-only root.
    pub(crate) fn enter_empty_root(&self) -> Result<(), String> {
        // Nothing done here may propagate back to the host's mounts.
        crate::util::mount::unshare_private_mounts().map_err(|e| match e {
            PrivateMountsError::Unshare(e) => {
                format!("unshare(CLONE_NEWNS) for the pod init: {e}")
            }
            PrivateMountsError::MakePrivate(e) => {
                format!("making the pod init's mounts private: {e}")
            }
        })?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("tmpfs"),
            &self.staging,
            Some("tmpfs"),
            flags,
            Some("size=4k,nr_inodes=2,mode=0555"),
        )
        .map_err(|e| format!("mounting the pod init's empty root: {e}"))?;
        nix::unistd::chdir(&self.staging)
            .map_err(|e| format!("entering the pod init's empty root: {e}"))?;
        // pivot_root(".", "."): the old root ends up stacked on the new
        // one and is detached right away (as runc does for rootless).
        nix::unistd::pivot_root(".", ".")
            .map_err(|e| format!("pivot_root into the pod init's empty root: {e}"))?;
        umount2(".", MntFlags::MNT_DETACH)
            .map_err(|e| format!("detaching the host's root from the pod init: {e}"))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir / in the pod init: {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags,
            None::<&str>,
        )
        .map_err(|e| format!("making the pod init's root read-only: {e}"))?;
        Ok(())
    }

    /// In the pod init itself, last: become powerless. Only syscalls.
    pub(crate) fn drop_privileges(&self) -> Result<(), String> {
        // SAFETY: prctl with integer arguments on this process.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(format!(
                    "PR_SET_NO_NEW_PRIVS: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // Needs CAP_SETPCAP, so before the uid change. EINVAL past
            // the kernel's last capability ends the loop.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    break;
                }
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
        }
        let gid = nix::unistd::Gid::from_raw(self.gid);
        let uid = nix::unistd::Uid::from_raw(self.uid);
        nix::unistd::setgroups(&[])
            .and_then(|()| nix::unistd::setresgid(gid, gid, gid))
            .and_then(|()| nix::unistd::setresuid(uid, uid, uid))
            .map_err(|e| format!("becoming uid {} gid {}: {e}", self.uid, self.gid))?;
        clear_capabilities()?;
        // After the uid change, which resets it to fs.suid_dumpable.
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(format!(
                "PR_SET_DUMPABLE: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

/// capset(2) with every set empty: the inheritable set survives a uid
/// change, and a uid of 0 (a one-id user namespace) keeps the others.
fn clear_capabilities() -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a v3 header and the two data words it reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(format!(
            "clearing capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Zeroes this process's environment and command line strings in place
/// (what /proc/<pid>/environ and cmdline read): a fork of the monitor
/// carries the daemon's environment and the pod's host paths.
pub(crate) fn scrub_environ_and_cmdline() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the ")" of the command name, counting from field 3:
    // arg_start, arg_end, env_start, env_end are fields 48 to 51.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return;
    };
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    for (start, end) in [(field(48), field(49)), (field(50), field(51))] {
        if start != 0 && end > start && end - start < (1 << 20) {
            // SAFETY: the kernel's own bounds of this process's argument
            // and environment strings, mapped and writable (initial stack).
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, (end - start) as usize) };
        }
    }
}

/// Puts `pid` into the cgroup `rel` (e.g. `/capcri/<pod>/pod-init`) of
/// every hierarchy, creating it. A leaf of its own, as a pause container
/// has: on cgroup v2 a cgroup whose controllers are delegated to children
/// (the pod level, once containers exist) may hold no process itself.
/// Under the systemd driver `rel` is `<slice>:<prefix>:<pod id>`: a
/// transient scope of its own in the pod's slice, started over D-Bus (a
/// slice holds no processes, and systemd owns what is in its tree).
pub(crate) fn join_cgroup(pid: i32, rel: &str) -> Result<Vec<PathBuf>, String> {
    if !rel.starts_with('/') {
        return join_scope(pid, rel);
    }
    let rel = rel.trim_start_matches('/');
    let mut joined = Vec::new();
    for h in crate::util::cgroupfs::hierarchies() {
        let dir = h.join(rel);
        create_cgroup(&h, Path::new(rel))?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving the pod init into {}: {e}", dir.display()))?;
        joined.push(dir);
    }
    Ok(joined)
}

fn join_scope(pid: i32, cgroups_path: &str) -> Result<Vec<PathBuf>, String> {
    use libcgroups::common::CgroupManager;
    let dir = crate::util::cgroup_paths::cgroup_dir_of(cgroups_path)
        .ok_or_else(|| format!("{cgroups_path:?} is not a systemd cgroups path"))?;
    let manager = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: PathBuf::from(cgroups_path),
        systemd_cgroup: true,
        container_name: cgroups_path
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string(),
    })
    .map_err(|e| format!("connecting to systemd for {cgroups_path}: {e}"))?;
    manager
        .add_task(nix::unistd::Pid::from_raw(pid))
        .map_err(|e| format!("starting the scope {cgroups_path}: {e}"))?;
    Ok(vec![
        Path::new("/sys/fs/cgroup").join(dir.trim_start_matches('/')),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_init_id_is_the_pause_id_or_the_last_mapped_one() {
        assert_eq!(pod_init_id(None), 65535);
        assert_eq!(pod_init_id(Some(65536)), 65535);
        assert_eq!(pod_init_id(Some(1 << 20)), 65535);
        assert_eq!(pod_init_id(Some(1000)), 999);
        // Only root mapped: it stays the pod's root, with no capabilities.
        assert_eq!(pod_init_id(Some(1)), 0);
    }
}
