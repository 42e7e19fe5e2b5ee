//! Pod namespaces: created once by a short-lived child of the monitor and
//! pinned by bind-mounting `/proc/<child>/ns/<kind>` onto `pod_dir/ns/<kind>`.
//! A bind mount of an nsfs inode keeps the namespace alive with no process in
//! it, so containers can come and go (and join it through the path in their
//! OCI spec) while the pod lives.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use serde::{Deserialize, Serialize};

use super::error::HostError;
use crate::util::mount::unmount_if_mounted;

/// The namespaces a pod shares between its containers, pinned by a bind
/// mount so they outlive every process in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceKind {
    Net,
    Ipc,
    Uts,
    Pid,
    /// The pod's user namespace (POD mode), owner of all the others.
    User,
}

impl NamespaceKind {
    /// The name of the entry in `/proc/<pid>/ns/`, also used as the pin file
    /// name.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Net => "net",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Pid => "pid",
            NamespaceKind::User => "user",
        }
    }

    /// The user namespace last: unpinning goes in this order, and the
    /// others are owned by it.
    pub const ALL: [NamespaceKind; 5] = [
        NamespaceKind::Net,
        NamespaceKind::Ipc,
        NamespaceKind::Uts,
        NamespaceKind::Pid,
        NamespaceKind::User,
    ];
}

pub fn pinned_namespace_path(pod_dir: &Path, kind: NamespaceKind) -> PathBuf {
    pod_dir.join("ns").join(kind.proc_name())
}

/// Unmount (lazily: a process may still be entering it) and remove every pin
/// of the pod. Idempotent: missing or unmounted pins are fine.
pub fn unpin_namespaces(pod_dir: &Path) -> Result<(), HostError> {
    for kind in NamespaceKind::ALL {
        unpin(&pinned_namespace_path(pod_dir, kind))?;
    }
    let ns_dir = pod_dir.join("ns");
    match fs::remove_dir(&ns_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HostError::io(format!("removing {}", ns_dir.display()), e)),
    }
}

/// Unmount (lazily) and remove one pin; missing or unmounted is fine.
pub fn unpin(path: &Path) -> Result<(), HostError> {
    unmount_if_mounted(path, MntFlags::MNT_DETACH).map_err(|e| {
        HostError::io(
            format!("unmounting pinned namespace {}", path.display()),
            e.into(),
        )
    })?;
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HostError::io(format!("removing {}", path.display()), e)),
    }
}

/// A new network namespace has `lo` down; pods expect 127.0.0.1 to work.
pub(crate) fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read/write the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifr_ifru is a union; the flags member was just filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pin the namespace `source` (a `/proc/.../ns/<kind>` link) at `target`,
/// a new empty file, by a bind mount.
pub fn pin_namespace(source: &Path, target: &Path) -> Result<(), HostError> {
    fs::File::create(target)
        .map_err(|e| HostError::io(format!("creating {}", target.display()), e))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        HostError::io(
            format!(
                "bind-mounting {} onto {}",
                source.display(),
                target.display()
            ),
            e.into(),
        )
    })
}

/// A new network namespace with `lo` up, pinned by a bind mount at
/// `target` (its parent must exist). The daemon makes the pods' network
/// namespaces with it (see `pod::netns_pool`), so CNI ADD (exec of Go
/// plugins, most of RunPodSandbox) can run while the monitor starts.
///
/// A namespace change is per thread, so a thread made for this alone
/// unshares, pins and exits: no thread of the daemon's pools is ever left
/// in the pod's network. Not for pods with their own user namespace, whose
/// network namespace must be created inside it (the monitor does that).
pub fn create_netns_at(target: &Path) -> Result<(), HostError> {
    let pinned = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(), HostError> {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| HostError::io("unshare(CLONE_NEWNET) for the pod", e.into()))?;
                loopback_up()
                    .map_err(|e| HostError::io("bringing lo up in the pod network namespace", e))?;
                pin_namespace(Path::new("/proc/thread-self/ns/net"), target)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(HostError::io(
                    "creating the pod network namespace",
                    std::io::Error::other("the network namespace thread panicked"),
                ))
            })
    });
    if pinned.is_err() {
        let _ = unpin(target);
    }
    pinned
}
