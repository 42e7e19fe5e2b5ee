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

/// Applies `changes` in the mount namespace of `pid` from the monitor's
/// own thread: it enters the container's namespace, whose root `setns`
/// makes its root (so container paths, symlinks of the image included,
/// resolve inside the container), makes the changes and returns to its
/// own namespace, root and working directory before anything else runs.
/// Not a thread or a fork: on a VM whose idle vCPUs are slow to wake,
/// handing the work to another task cost 0.43-0.45 ms a create, the
/// wake-up, where the work itself is a few system calls (see the README's
/// Performance section). The monitor is single-threaded, so nothing else
/// sees the detour; `unshare(CLONE_FS)` first keeps it so if it ever is
/// not (the kernel refuses a mount namespace `setns` to a thread that
/// shares its filesystem context).
pub fn apply_in_container(pid: i32, changes: &[PropagationChange]) -> Result<(), RuntimeError> {
    if changes.is_empty() {
        return Ok(());
    }
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let target = std::fs::File::open(&ns_path)
        .map_err(|e| RuntimeError::io(format!("opening {ns_path}"), e))?;
    let home =
        Home::save().map_err(|e| RuntimeError::io("saving the monitor's mount namespace", e))?;
    let failed = |what: &str, e: nix::Error| RuntimeError::io(what, std::io::Error::from(e));
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
        .map_err(|e| failed("leaving a shared filesystem context", e))?;
    nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| failed("entering the container's mount namespace", e))?;
    let result = apply_here(changes);
    if let Err(e) = home.restore() {
        // Every path the monitor opens from here on would resolve in the
        // container: it must not serve another request.
        tracing::error!(error = %e, "the monitor cannot return to its own mount namespace; exiting");
        std::process::exit(70);
    }
    result.map_err(|msg| {
        RuntimeError::io(
            "setting mount propagation in the container",
            std::io::Error::other(msg),
        )
    })
}

/// Where the monitor's thread stands in the file system: its mount
/// namespace, root and working directory.
struct Home {
    ns: std::fs::File,
    root: std::fs::File,
    cwd: std::fs::File,
}

impl Home {
    fn save() -> std::io::Result<Home> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = |p: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(p)
        };
        Ok(Home {
            ns: std::fs::File::open("/proc/thread-self/ns/mnt")?,
            root: dir("/")?,
            cwd: dir(".")?,
        })
    }

    /// `setns` back sets root and working directory to the namespace's
    /// root; a root elsewhere (a chroot) and the working directory are put
    /// back from their descriptors.
    fn restore(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        nix::sched::setns(&self.ns, nix::sched::CloneFlags::CLONE_NEWNS)?;
        let now = std::fs::metadata("/")?;
        let saved = self.root.metadata()?;
        if (now.dev(), now.ino()) != (saved.dev(), saved.ino()) {
            nix::unistd::fchdir(self.root.as_raw_fd())?;
            nix::unistd::chroot(".")?;
        }
        nix::unistd::fchdir(self.cwd.as_raw_fd())?;
        Ok(())
    }
}

/// The changes, in the mount namespace the thread is in.
fn apply_here(changes: &[PropagationChange]) -> Result<(), String> {
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

    // Mounts in a mount namespace of its own: root only.
    use crate::util::test_env::privileged;

    #[test]
    fn the_change_lands_in_the_other_namespace_and_the_caller_comes_home() {
        use std::io::BufRead;
        use std::os::unix::fs::MetadataExt;
        if !privileged() {
            eprintln!("skipped: needs root and CAPCRI_PRIVILEGED_TESTS");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let point = dir.path().join("m");
        std::fs::create_dir(&point).unwrap();
        // A process in a mount namespace of its own, with a shared tmpfs
        // at `point` that only it sees.
        let mut holder = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs t {p} && mount --make-shared {p} && echo ready && exec sleep 60",
                p = point.display()
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let pid = holder.id() as i32;
        let mount_of = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .unwrap()
                .lines()
                .find(|l| l.split(' ').nth(4) == Some(point.to_str().unwrap()))
                .map(str::to_owned)
        };
        assert!(mount_of(pid).unwrap().contains("shared:"));
        let ns_before = std::fs::metadata("/proc/thread-self/ns/mnt").unwrap().ino();
        let cwd_before = std::env::current_dir().unwrap();

        let changes = [PropagationChange {
            destination: point.clone(),
            flags: MsFlags::MS_PRIVATE,
        }];
        let result = apply_in_container(pid, &changes);
        let in_holder = mount_of(pid);
        let _ = holder.kill();
        let _ = holder.wait();
        result.unwrap();

        let in_holder = in_holder.unwrap();
        assert!(!in_holder.contains("shared:"), "{in_holder}");
        assert_eq!(
            std::fs::metadata("/proc/thread-self/ns/mnt").unwrap().ino(),
            ns_before,
            "back in its own mount namespace"
        );
        assert_eq!(std::env::current_dir().unwrap(), cwd_before);
        assert!(mount_of(std::process::id() as i32).is_none());
        // A change that cannot be made names its path, and the caller is
        // home all the same.
        let missing = [PropagationChange {
            destination: dir.path().join("absent"),
            flags: MsFlags::MS_PRIVATE,
        }];
        let err = apply_in_container(std::process::id() as i32, &missing).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
        assert_eq!(
            std::fs::metadata("/proc/thread-self/ns/mnt").unwrap().ino(),
            ns_before
        );
        assert_eq!(std::env::current_dir().unwrap(), cwd_before);
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
