//! Starting the kernel's wait for its cgroup migration lock before a
//! container's process needs the lock.
//!
//! Why: every move of a process by a `cgroup.procs` write takes the
//! kernel's global `cgroup_threadgroup_rwsem` for writing. libcontainer's
//! intermediate process does it when it joins the container's cgroups
//! (inside CreateContainer's build, so StartContainer waits for it), and so
//! does every exec's process. Unless a cgroup2 mount has `favordynmods`
//! (off by default, and on 6.x kernels it cannot be turned off again
//! without a reboot), the first writer after a quiet spell waits for an RCU
//! grace period before it gets the lock: 6-8 ms on this 2-vCPU host, most of
//! a create + start. For about one more grace period after that writer
//! leaves, the lock stays in writer mode and the next writer does not wait
//! again (measured: a second move 2-10 ms after the first takes 0.2 ms, one
//! 20 ms after takes 7.8 ms again).
//!
//! So the daemon starts that wait the moment a call arrives that will move
//! a process: a move of its own process into the cgroup it is already in,
//! which changes nothing but takes the lock. The grace period then runs
//! while the daemon mounts the rootfs, decides the capabilities and writes
//! the bundle and the monitor forks, instead of after them. One thread does
//! the moves; a call that arrives while one is under way joins it.
//!
//! One early move was not enough: the waiting writer holds `cgroup_mutex`,
//! so the build's first `mkdir` of a container cgroup waited for the rest
//! of the grace period anyway, and when the move came too early the lock
//! was back in reader mode by the time the build needed it (`perf trace`
//! of c=1 pod cycles: the intermediate process's `cgroup.procs` writes took
//! 5-24 ms). So the thread keeps the lock warm: it repeats the move every
//! [`REFRESH`] for [`AFTER_CALL`] after a create, start or exec and for
//! [`AFTER_POD`] after RunPodSandbox, since a pod's containers follow it.
//! Each repeat finds the lock in writer mode and costs tens of
//! microseconds; at most 250 a second, whatever the number of pods, and
//! none on a node where no pod is being started.
//!
//! The cgroup is read from `/proc/self/cgroup` right before each write, so
//! a daemon moved by its service manager is moved to where it now is, not
//! back, and the write goes only to a `cgroup.procs` that was seen to list
//! the daemon (looked at again whenever the group changes). Any failure
//! (a read-only cgroupfs in a container, a kernel that refuses) turns the
//! warm-up off for the daemon's life: it is an optimisation, never a
//! reason for a call to fail.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::util::cgroupfs::CGROUP_ROOT;

/// The `cgroup.procs` that holds this process, from the text of
/// `/proc/self/cgroup`: in the cgroup2 tree when one is mounted (the whole
/// of /sys/fs/cgroup on a unified host, `unified` below it on a hybrid
/// one), else in the first v1 hierarchy with controllers whose directory
/// exists under /sys/fs/cgroup (systemd's layout: named after the
/// controllers, comma-joined). `None` when nothing fits.
pub fn own_procs_file(
    proc_self_cgroup: &str,
    unified_host: bool,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    let under = |mount: PathBuf, rel: &str| {
        let dir = mount.join(rel.trim_start_matches('/'));
        let procs = dir.join("cgroup.procs");
        exists(&procs).then_some(procs)
    };
    let mut v1 = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(rel)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            let mount = if unified_host {
                root.to_path_buf()
            } else {
                root.join("unified")
            };
            if let Some(p) = under(mount, rel) {
                return Some(p);
            }
        } else if v1.is_none() && !unified_host && !controllers.starts_with("name=") {
            v1 = under(root.join(controllers), rel);
        }
    }
    v1
}

struct Warmer {
    /// Set by a caller, cleared by the thread once its move is done: a
    /// caller that finds it set joins the move under way.
    busy: AtomicBool,
    /// Cleared for good after the first failure.
    enabled: AtomicBool,
    /// Until when (`since` nanoseconds) the thread repeats its move every
    /// [`REFRESH`], so the lock is still in writer mode when the process
    /// that needs it comes.
    keep_until_ns: AtomicU64,
    since: Instant,
    thread: Thread,
}

static WARMER: OnceLock<Option<Warmer>> = OnceLock::new();

/// How often a kept-alive lock is taken again: well inside the one grace
/// period (6-15 ms here) for which it stays in writer mode after a writer
/// leaves. A move in that window takes about 0.03 ms of the kernel's time
/// (`perf trace`: the intermediate process's moves right after another).
pub const REFRESH: Duration = Duration::from_millis(4);

/// How long a create, start or exec keeps the lock warm: the build's or
/// the exec's move comes a few milliseconds after the call arrives, and
/// kubelet sends StartContainer as soon as CreateContainer has answered.
pub const AFTER_CALL: Duration = Duration::from_millis(50);

/// How long a new pod keeps it warm: kubelet creates the pod's first
/// container after the sandbox is up and its image is present, 0.1-0.7 s
/// later on a node with the image (measured from kubelet's calls to capcri
/// in the e2e suite). A longer pull pays one grace period, as before.
pub const AFTER_POD: Duration = Duration::from_secs(1);

/// Starts a no-op move of the daemon into its own cgroup on the warm-up
/// thread, repeated for [`AFTER_CALL`], and returns at once. Call it when
/// a request arrives that will move a process by `cgroup.procs` within the
/// next few milliseconds.
pub fn warm() {
    warm_for(AFTER_CALL);
}

/// [`warm`], repeated for `keep` (or longer, if an earlier call asked for
/// longer).
pub fn warm_for(keep: Duration) {
    let Some(w) = WARMER.get_or_init(spawn_warmer) else {
        return;
    };
    if !w.enabled.load(Ordering::Relaxed) {
        return;
    }
    w.keep_until_ns
        .fetch_max(nanos(w.since.elapsed() + keep), Ordering::AcqRel);
    if !w.busy.swap(true, Ordering::AcqRel) {
        w.thread.unpark();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What is left of a keep-alive ending at `until_ns` at `now_ns`.
fn kept_for(now_ns: u64, until_ns: u64) -> Option<Duration> {
    (until_ns > now_ns).then(|| Duration::from_nanos(until_ns - now_ns))
}

fn spawn_warmer() -> Option<Warmer> {
    let spawned = std::thread::Builder::new()
        .name("cgroup-warm".into())
        .stack_size(64 * 1024)
        .spawn(run_warmer);
    match spawned {
        Ok(handle) => Some(Warmer {
            busy: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
            keep_until_ns: AtomicU64::new(0),
            since: Instant::now(),
            thread: handle.thread().clone(),
        }),
        Err(e) => {
            tracing::debug!(error = %e, "no cgroup lock warm-up thread");
            None
        }
    }
}

fn run_warmer() {
    // `WARMER` is set once `spawn_warmer` has returned; the first `warm`
    // unparks this thread after that.
    let w = loop {
        if let Some(Some(w)) = WARMER.get() {
            break w;
        }
        std::thread::park();
    };
    let mut verified = None;
    loop {
        if !w.busy.load(Ordering::Acquire) {
            let left = kept_for(
                nanos(w.since.elapsed()),
                w.keep_until_ns.load(Ordering::Acquire),
            );
            match left {
                // Nothing asked and nothing to keep: sleep until a call.
                None => {
                    std::thread::park();
                    continue;
                }
                // Kept alive: move again after REFRESH, or at a call.
                Some(left) => std::thread::park_timeout(left.min(REFRESH)),
            }
        }
        let mut moved = move_into_own_cgroup(&mut verified);
        if moved.is_err() && verified.is_some() {
            // The kept file may name a group removed and made again under
            // the same path: look at the daemon's group again, once.
            verified = None;
            moved = move_into_own_cgroup(&mut verified);
        }
        if let Err(e) = moved {
            w.enabled.store(false, Ordering::Relaxed);
            tracing::info!(error = %e, "cgroup lock warm-up off for this daemon");
            return;
        }
        w.busy.store(false, Ordering::Release);
    }
}

/// Whether a `cgroup.procs` text lists `pid`.
pub fn lists_pid(procs: &str, pid: u32) -> bool {
    procs.lines().any(|l| l.trim().parse::<u32>() == Ok(pid))
}

/// The `cgroup.procs` the warm-up thread writes to, open, once it was
/// found to list the daemon.
struct OwnGroup {
    procs: PathBuf,
    file: std::fs::File,
}

/// Moves the daemon into the cgroup `/proc/self/cgroup` names now.
/// `verified` is the group of the previous move: written to again without
/// a second look while the daemon is still there, since listing a group's
/// `cgroup.procs` walks every task in it, and a daemon's service cgroup
/// holds its pods' monitors: at 250 pods, reading it every [`REFRESH`]
/// was most of the warm-up thread's time (`perf record -a`,
/// `css_task_iter_next` under `cgroup_procs_next`).
fn move_into_own_cgroup(verified: &mut Option<OwnGroup>) -> std::io::Result<()> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let procs = own_procs_file(&text, crate::util::cgroupfs::is_unified(), Path::exists)
        .ok_or_else(|| std::io::Error::other("no cgroup.procs of this process found"))?;
    let me = std::process::id();
    if verified.as_ref().is_none_or(|g| g.procs != procs) {
        *verified = None;
        // The path from /proc/self/cgroup is only right when the mount
        // shows the hierarchy from its root; a cgroupfs mounted from a
        // subtree (a node agent in a container without a cgroup namespace)
        // may hold an unrelated group of the same name. Only a group that
        // lists this process already is written to, so the write can never
        // move it.
        if !lists_pid(&std::fs::read_to_string(&procs)?, me) {
            return Err(std::io::Error::other(format!(
                "{} does not list this process",
                procs.display()
            )));
        }
        let file = std::fs::OpenOptions::new().write(true).open(&procs)?;
        *verified = Some(OwnGroup { procs, file });
    }
    let Some(group) = verified else {
        return Ok(());
    };
    group
        .file
        .write_all(me.to_string().as_bytes())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", group.procs.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keep_alive_lasts_until_its_end() {
        assert_eq!(kept_for(10, 0), None, "never asked");
        assert_eq!(kept_for(10, 10), None, "over at its end");
        assert_eq!(kept_for(11, 10), None);
        assert_eq!(kept_for(4, 10), Some(Duration::from_nanos(6)));
    }

    const HYBRID: &str = "12:pids:/system.slice/capcri.service\n\
        11:cpu,cpuacct:/system.slice/capcri.service\n\
        1:name=systemd:/system.slice/capcri.service\n\
        0::/system.slice/capcri.service\n";

    fn all(_: &Path) -> bool {
        true
    }

    /// `own_procs_file` as text ("" for none), for short assertions.
    fn found(text: &str, unified: bool, exists: impl Fn(&Path) -> bool) -> String {
        own_procs_file(text, unified, exists)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_unified_host_uses_the_cgroup2_line_at_the_root() {
        assert_eq!(
            found("0::/system.slice/capcri.service\n", true, all),
            "/sys/fs/cgroup/system.slice/capcri.service/cgroup.procs"
        );
        // The root cgroup itself (a daemon in a cgroup namespace sees "/").
        assert_eq!(found("0::/\n", true, all), "/sys/fs/cgroup/cgroup.procs");
    }

    #[test]
    fn a_hybrid_host_prefers_its_unified_mount() {
        assert_eq!(
            found(HYBRID, false, all),
            "/sys/fs/cgroup/unified/system.slice/capcri.service/cgroup.procs"
        );
    }

    #[test]
    fn a_v1_host_without_cgroup2_uses_a_controller_hierarchy() {
        let no_unified = |p: &Path| !p.starts_with("/sys/fs/cgroup/unified");
        assert_eq!(
            found(HYBRID, false, no_unified),
            "/sys/fs/cgroup/pids/system.slice/capcri.service/cgroup.procs"
        );
        // Co-mounted controllers live under their joined name; the named
        // systemd hierarchy holds no controller and is never used.
        let only_cpu = |p: &Path| p.starts_with("/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(
            found(HYBRID, false, only_cpu),
            "/sys/fs/cgroup/cpu,cpuacct/system.slice/capcri.service/cgroup.procs"
        );
        let only_named = |p: &Path| p.starts_with("/sys/fs/cgroup/name=systemd");
        assert_eq!(own_procs_file(HYBRID, false, only_named), None);
    }

    #[test]
    fn only_a_listed_pid_is_found() {
        assert!(lists_pid("1\n42\n4200\n", 42));
        assert!(lists_pid("42", 42));
        assert!(!lists_pid("1\n420\n4\n", 42));
        assert!(!lists_pid("", 42));
    }

    #[test]
    fn nothing_usable_is_none() {
        assert_eq!(own_procs_file("", true, all), None);
        assert_eq!(own_procs_file("garbage\n", false, all), None);
        assert_eq!(own_procs_file(HYBRID, false, |_| false), None);
    }
}
