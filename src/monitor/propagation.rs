//! Per-mount propagation (`rprivate`, `rslave`, `rshared`), applied inside a
//! created container's mount namespace before it starts.
//!
//! libcontainer 0.7 bind-mounts volumes with `open_tree(OPEN_TREE_CLONE)`
//! and `move_mount`, and never applies the propagation options of the OCI
//! mount. A clone of a shared host mount then joins its peer group, so every
//! volume from a shared host mount (systemd makes `/` shared) would be
//! bidirectional whatever kubelet asked: a privileged container's mounts
//! would leak to the host, and `HostToContainer` could not be had at all.
//! runc applies these options right after the mount; we apply them right
//! after create, when the container's mounts exist and its process has not
//! run yet.

use super::RuntimeError;
use nix::mount::MsFlags;
use oci_spec::runtime::Spec;
use std::path::PathBuf;

/// One mount whose propagation must be set, at its container path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropagationChange {
    pub destination: PathBuf,
    pub flags: MsFlags,
}

/// The changes a spec asks for, in mount order (a later mount on the same
/// path is the visible one, so it is changed last).
pub fn propagation_changes(spec: &Spec) -> Vec<PropagationChange> {
    let Some(mounts) = spec.mounts() else {
        return Vec::new();
    };
    mounts
        .iter()
        .filter_map(|m| {
            let options = m.options().as_ref()?;
            // The last propagation option wins, as in runc.
            let flags = options.iter().rev().find_map(|o| {
                Some(match o.as_str() {
                    "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                    "private" => MsFlags::MS_PRIVATE,
                    "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
                    "slave" => MsFlags::MS_SLAVE,
                    "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
                    "shared" => MsFlags::MS_SHARED,
                    "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
                    "unbindable" => MsFlags::MS_UNBINDABLE,
                    _ => return None,
                })
            })?;
            Some(PropagationChange {
                destination: m.destination().clone(),
                flags,
            })
        })
        .collect()
}

/// Applies `changes` in the mount namespace of `pid`, from a short-lived
/// thread of the monitor: the thread leaves the monitor's filesystem
/// context (`unshare(CLONE_FS)`, without which the kernel refuses a mount
/// namespace `setns` to a thread sharing it), enters the container's, and
/// ends; the monitor's own namespace, root and cwd are never touched.
/// Container paths resolve against the container's root, which `setns`
/// makes the thread's root. A thread, not a fork of the monitor: no copy
/// and tear-down of the monitor's address space and one process fewer per
/// container (on a VM whose idle vCPUs are slow to wake, the wake-up costs
/// as much as either: 0.43 ms against the fork's 0.45, see the README's
/// Performance section). The thread is joined before this returns, so the
/// monitor is single-threaded again for libcontainer's next clone.
pub fn apply_in_container(pid: i32, changes: &[PropagationChange]) -> Result<(), RuntimeError> {
    if changes.is_empty() {
        return Ok(());
    }
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let ns = std::fs::File::open(&ns_path)
        .map_err(|e| RuntimeError::io(format!("opening {ns_path}"), e))?;
    let changes = changes.to_vec();
    let worker = std::thread::Builder::new()
        .name("propagation".into())
        .stack_size(PROPAGATION_STACK)
        .spawn(move || apply_here(&ns, &changes))
        .map_err(|e| RuntimeError::io("starting the mount propagation thread", e))?;
    let result = worker.join().map_err(|_| {
        RuntimeError::io(
            "setting mount propagation in the container",
            std::io::Error::other("the propagation thread panicked"),
        )
    })?;
    result.map_err(|msg| {
        RuntimeError::io(
            "setting mount propagation in the container",
            std::io::Error::other(msg),
        )
    })
}

/// The thread's stack: it only makes a few system calls.
const PROPAGATION_STACK: usize = 64 << 10;

/// In the calling thread: its own filesystem context, the mount namespace
/// of `ns`, then the changes. Only for a thread that ends right after.
fn apply_here(ns: &std::fs::File, changes: &[PropagationChange]) -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
        .map_err(|e| format!("leaving the monitor's filesystem context: {e}"))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("entering the container's mount namespace: {e}"))?;
    changes.iter().try_for_each(|c| {
        nix::mount::mount(
            None::<&str>,
            &c.destination,
            None::<&str>,
            c.flags,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "setting propagation {:?} on {}: {e}",
                c.flags,
                c.destination.display()
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, SpecBuilder};

    fn mount(dest: &str, options: &[&str]) -> oci_spec::runtime::Mount {
        MountBuilder::default()
            .destination(dest)
            .source("/src")
            .typ("bind")
            .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn each_mode_maps_to_its_recursive_flag_and_plain_mounts_are_left() {
        let spec = SpecBuilder::default()
            .mounts(vec![
                mount("/proc", &["nosuid"]),
                mount("/a", &["rbind", "rprivate", "rw"]),
                mount("/b", &["rbind", "rslave", "rw"]),
                mount("/c", &["rbind", "rshared", "ro"]),
                mount("/d", &["rbind", "rslave", "private"]),
            ])
            .build()
            .unwrap();
        let got = propagation_changes(&spec);
        let want = [
            ("/a", MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            ("/b", MsFlags::MS_SLAVE | MsFlags::MS_REC),
            ("/c", MsFlags::MS_SHARED | MsFlags::MS_REC),
            ("/d", MsFlags::MS_PRIVATE),
        ];
        assert_eq!(got.len(), want.len());
        for (g, (dest, flags)) in got.iter().zip(want) {
            assert_eq!(g.destination, PathBuf::from(dest));
            assert_eq!(g.flags, flags);
        }
    }
}
