//! The pod's namespaces, made inside the monitor: created by a short-lived
//! child and pinned (see `crate::host::namespaces` for the pins), and the
//! pod init, pid 1 of the pod's PID namespace.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, pipe};

use super::pod_init::{PodInitPlan, pod_init_id, scrub_environ_and_cmdline};
use crate::host::idmap::write_id_maps;
use crate::host::namespaces::{
    loopback_up, pin_namespace, pinned_namespace_path, unpin_namespaces,
};
use crate::monitor_api::RuntimeError;
use crate::monitor_api::{NamespaceKind, PodNamespaceSet};
use crate::spec::PodUserNamespace;

fn requested(set: PodNamespaceSet) -> Vec<NamespaceKind> {
    let mut v = Vec::new();
    if set.net {
        v.push(NamespaceKind::Net);
    }
    if set.ipc {
        v.push(NamespaceKind::Ipc);
    }
    if set.uts {
        v.push(NamespaceKind::Uts);
    }
    v
}

/// Create and pin the requested namespaces. Must be called while the caller
/// is single-threaded (it forks and the child does more than async-signal
/// -safe work), which the monitor is.
///
/// With a POD user namespace, one unshare(2) creates it together with the
/// others: the kernel makes the user namespace first and the new network,
/// IPC and UTS namespaces are owned by it (user_namespaces(7)), as for a
/// runc/crun pod sandbox. So the pod's root holds CAP_NET_ADMIN over its own
/// network and nothing on the host, while CNI, run as host root, can still
/// enter the network namespace (an ancestor user namespace's root has every
/// capability in its descendants). The mappings are written from here, as
/// host root, which the kernel allows for any range.
pub(crate) fn create_and_pin(
    pod_dir: &Path,
    set: PodNamespaceSet,
    hostname: Option<&str>,
    userns: Option<&PodUserNamespace>,
) -> Result<(), RuntimeError> {
    let mut kinds = requested(set);
    if userns.is_some() {
        kinds.push(NamespaceKind::User);
    }
    if kinds.is_empty() {
        return Ok(());
    }
    let ns_dir = pod_dir.join("ns");
    fs::create_dir_all(&ns_dir)
        .map_err(|e| RuntimeError::io(format!("creating {}", ns_dir.display()), e))?;
    let mut flags = CloneFlags::empty();
    for k in &kinds {
        flags |= match k {
            NamespaceKind::Net => CloneFlags::CLONE_NEWNET,
            NamespaceKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NamespaceKind::Uts => CloneFlags::CLONE_NEWUTS,
            NamespaceKind::User => CloneFlags::CLONE_NEWUSER,
            // Never requested here: see `start_pod_init`.
            NamespaceKind::Pid => CloneFlags::empty(),
        };
    }
    let hostname = if set.uts {
        hostname.map(str::to_owned)
    } else {
        None
    };
    let (ready_r, ready_w) = pipe().map_err(|e| RuntimeError::io("creating pipe", e.into()))?;
    let (done_r, done_w) = pipe().map_err(|e| RuntimeError::io("creating pipe", e.into()))?;

    // SAFETY: the monitor is single-threaded, so the child may allocate.
    match unsafe { fork() }
        .map_err(|e| RuntimeError::io("forking the namespace holder", e.into()))?
    {
        ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let mut ready = fs::File::from(ready_w);
            let result = setup_in_child(flags, hostname.as_deref());
            let msg = match result {
                Ok(()) => "ok".to_string(),
                Err(e) => e,
            };
            let _ = ready.write_all(msg.as_bytes());
            drop(ready);
            // Stay in the namespaces until the parent has bind-mounted them.
            let mut buf = [0u8; 1];
            let mut done = fs::File::from(done_r);
            let _ = done.read(&mut buf);
            // SAFETY: plain process exit without running the parent's atexit
            // handlers or destructors twice.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let mut msg = String::new();
            let read = fs::File::from(ready_r).read_to_string(&mut msg);
            let result = match read {
                Ok(_) if msg == "ok" => userns
                    .map_or(Ok(()), |u| {
                        write_id_maps(child.as_raw(), u).map_err(RuntimeError::from)
                    })
                    .and_then(|()| pin_from(child.as_raw(), pod_dir, &kinds)),
                Ok(_) => Err(RuntimeError::MonitorStartup {
                    pod: pod_dir.display().to_string(),
                    message: format!("creating pod namespaces failed: {msg}"),
                }),
                Err(e) => Err(RuntimeError::io("reading the namespace holder's status", e)),
            };
            drop(done_w);
            // The holder only waits for `done`; its exit status carries nothing.
            let _ = waitpid(child, None);
            if result.is_err() {
                let _ = unpin_namespaces(pod_dir);
            }
            result
        }
    }
}

/// Start the pod's PID namespace with a tiny init as its pid 1 and pin it;
/// returns the init's pid (in the monitor's namespace).
///
/// The monitor itself must stay in its PID namespace (an `unshare` would
/// also move every later child, including libcontainer's helpers), so a
/// short-lived child unshares CLONE_NEWPID and forks: that grandchild is
/// pid 1 of the new namespace. When the child exits, the grandchild is
/// re-parented to the monitor (PR_SET_CHILD_SUBREAPER), which kills it at
/// pod shutdown. The init must live as long as the pod: the kernel refuses
/// `fork` in a PID namespace whose init has died, so joining the pinned
/// namespace would fail for every later container.
///
/// The child first takes the init's sandbox (see `pod_init`): an empty
/// root, then, in a POD user namespace, that namespace (so the PID
/// namespace is owned by it: a container that has joined the user
/// namespace could not enter, nor mount /proc for, a PID namespace owned
/// by the host's), then the pod's other namespaces. The init drops every
/// privilege before it serves; the monitor moves it into its cgroup once it
/// has reported ready (`Monitor::place_pod_init`).
pub(crate) fn start_pod_init(
    pod_dir: &Path,
    userns: Option<&PodUserNamespace>,
) -> Result<i32, RuntimeError> {
    let ns_dir = pod_dir.join("ns");
    fs::create_dir_all(&ns_dir)
        .map_err(|e| RuntimeError::io(format!("creating {}", ns_dir.display()), e))?;
    let userns_pin = if userns.is_some() {
        let pin = pinned_namespace_path(pod_dir, NamespaceKind::User);
        Some(
            fs::File::open(&pin)
                .map_err(|e| RuntimeError::io(format!("opening {}", pin.display()), e))?,
        )
    } else {
        None
    };
    let plan = PodInitPlan::new(
        pod_dir,
        pod_init_id(userns.map(|u| u.uids.length)),
        pod_init_id(userns.map(|u| u.gids.length)),
    )?;
    let (pid_r, pid_w) = pipe().map_err(|e| RuntimeError::io("creating pipe", e.into()))?;
    // SAFETY: the monitor is single-threaded; the child only makes syscalls.
    match unsafe { fork() }
        .map_err(|e| RuntimeError::io("forking the pod init's parent", e.into()))?
    {
        ForkResult::Child => {
            drop(pid_r);
            let mut out = fs::File::from(pid_w);
            // Before anything else: the strings are read through /proc,
            // which the empty root leaves behind.
            scrub_environ_and_cmdline();
            let ready = plan
                .enter_empty_root()
                .and_then(|()| match &userns_pin {
                    Some(f) => join_as_root(f),
                    None => Ok(()),
                })
                .and_then(|()| plan.join_pod_namespaces())
                .and_then(|()| {
                    unshare(CloneFlags::CLONE_NEWPID)
                        .map_err(|e| format!("error: unshare(CLONE_NEWPID): {e}"))
                });
            let reply = match ready {
                Err(e) => format!("error: {}", e.trim_start_matches("error: ")),
                // SAFETY: as above; the grandchild runs only `pod_init`.
                Ok(()) => match unsafe { fork() } {
                    Ok(ForkResult::Child) => pod_init(&plan, out),
                    Ok(ForkResult::Parent { child }) => format!("{}", child.as_raw()),
                    Err(e) => format!("error: forking the pod init: {e}"),
                },
            };
            let _ = out.write_all(reply.as_bytes());
            // SAFETY: leave without running destructors shared with the parent.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(pid_w);
            drop(plan);
            let mut reply = String::new();
            let read = fs::File::from(pid_r).read_to_string(&mut reply);
            let _ = waitpid(child, None);
            let failed = |message: String| RuntimeError::MonitorStartup {
                pod: pod_dir.display().to_string(),
                message,
            };
            read.map_err(|e| RuntimeError::io("reading the pod init's pid", e))?;
            // The child writes the pid; the init, only if it fails, why.
            let (pid, error) = match reply.split_once("error: ") {
                Some((pid, error)) => (pid, Some(error)),
                None => (reply.as_str(), None),
            };
            let pid: Option<i32> = pid.trim().parse().ok();
            let pid = match (pid, error) {
                (Some(pid), None) => pid,
                (pid, error) => {
                    if let Some(pid) = pid {
                        let _ = waitpid(nix::unistd::Pid::from_raw(pid), None);
                    }
                    return Err(failed(format!(
                        "starting the pod's PID namespace failed: {}",
                        error.unwrap_or(&reply)
                    )));
                }
            };
            let kill = || {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = waitpid(nix::unistd::Pid::from_raw(pid), None);
            };
            if let Err(e) = pin_from(pid, pod_dir, &[NamespaceKind::Pid]) {
                kill();
                return Err(e);
            }
            Ok(pid)
        }
    }
}

/// Joins the pod's user namespace and becomes its root (the mapped host
/// id), so the pod init is not host root inside the pod's PID namespace.
/// setns keeps the host ids, which the namespace would show as 65534.
fn join_as_root(userns: &fs::File) -> Result<(), String> {
    nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("error: joining the pod user namespace: {e}"))?;
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setgroups(&[])
        .and_then(|()| nix::unistd::setresgid(root_gid, root_gid, root_gid))
        .and_then(|()| nix::unistd::setresuid(root_uid, root_uid, root_uid))
        .map_err(|e| format!("error: becoming root of the pod user namespace: {e}"))
}

/// Pid 1 of the pod's PID namespace, the role of the pause process: it
/// holds the namespace open and reaps orphans. With SIGCHLD ignored the
/// kernel reaps its children itself (POSIX.1-2001), including orphans
/// re-parented to it (the monitor's PR_SET_CHILD_SUBREAPER does not reach
/// into the namespace), so it has nothing to do but sleep. Every other
/// signal is ignored so nothing inside the namespace can end it; the
/// monitor kills it with SIGKILL. It first gives up every privilege (see
/// `pod_init`); if it cannot, it says why on `status` and exits, and the
/// monitor's start fails.
fn pod_init(plan: &PodInitPlan, mut status: fs::File) -> ! {
    super::template::set_comm(c"pod-init");
    if let Err(e) = plan.drop_privileges() {
        let _ = status.write_all(format!("error: {e}").as_bytes());
        // SAFETY: exit without running the monitor's destructors.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: plain syscalls on this process's own state; closing the
    // status pipe (with every other descriptor) tells the monitor it is
    // ready.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_IGN);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        loop {
            libc::pause();
        }
    }
}

fn setup_in_child(flags: CloneFlags, hostname: Option<&str>) -> Result<(), String> {
    unshare(flags).map_err(|e| format!("unshare({flags:?}): {e}"))?;
    if let Some(h) = hostname {
        nix::unistd::sethostname(h).map_err(|e| format!("sethostname({h:?}): {e}"))?;
    }
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        loopback_up().map_err(|e| format!("bringing lo up in the pod network namespace: {e}"))?;
    }
    Ok(())
}

fn pin_from(pid: i32, pod_dir: &Path, kinds: &[NamespaceKind]) -> Result<(), RuntimeError> {
    for kind in kinds {
        let target = pinned_namespace_path(pod_dir, *kind);
        let source = PathBuf::from(format!("/proc/{pid}/ns/{}", kind.proc_name()));
        pin_namespace(&source, &target)?;
    }
    Ok(())
}

/// Checked when the monitor starts, before anything is created, so a bad
/// hostname is a clear startup error instead of a failed unshare child.
/// 64 bytes is the kernel's limit (HOST_NAME_MAX).
pub(crate) fn validate_hostname(h: &str) -> Result<(), String> {
    CString::new(h).map_err(|_| format!("hostname {h:?} contains a NUL byte"))?;
    if h.is_empty() || h.len() > 64 {
        return Err(format!("hostname {h:?} must be 1 to 64 bytes long"));
    }
    Ok(())
}
