//! Memory of the daemons and of their per-pod processes, read from /proc.
//!
//! RSS (`VmRSS` of /proc/<pid>/status) counts every resident page a process
//! maps, shared ones in full: N monitors running the same `capcri` binary
//! each count its text. PSS (`Pss` of /proc/<pid>/smaps_rollup) divides each
//! shared page by the number of processes mapping it, so a sum of PSS is what
//! the group really costs. Both are reported.

use serde::Serialize;
use std::path::Path;

/// Resident and proportional set size of one process or a group, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, o: Memory) -> Memory {
        Memory {
            processes: self.processes + o.processes,
            rss_kib: self.rss_kib + o.rss_kib,
            pss_kib: self.pss_kib + o.pss_kib,
        }
    }
}

/// The value in kB of the line `key:` of a /proc status-like file.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let mut it = rest.split_whitespace();
        let v = it.next()?.parse().ok()?;
        match it.next() {
            Some("kB") | None => Some(v),
            Some(_) => None,
        }
    })
}

/// /proc/<pid>/cmdline with its NUL separators turned into spaces, so that
/// ` monitor ` matches the subcommand and not a path containing "monitor".
pub fn cmdline_text(raw: &[u8]) -> String {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

/// Which per-pod processes belong to the runtime under test.
#[derive(Debug, Clone)]
pub enum PerPodProcess {
    /// `capcri monitor ...` whose arguments name a path under this state
    /// dir: the pod monitors (their pod inits are found as their children).
    CapcriMonitor { state_dir: String },
    /// `containerd-shim-runc-v2 ... -address <socket>` of this containerd.
    ContainerdShim { socket: String },
}

impl PerPodProcess {
    pub fn matches(&self, cmdline: &str) -> bool {
        match self {
            PerPodProcess::CapcriMonitor { state_dir } => {
                format!("{cmdline} ").contains(" monitor ") && cmdline.contains(state_dir.as_str())
            }
            PerPodProcess::ContainerdShim { socket } => {
                cmdline.contains("containerd-shim-runc-v2") && cmdline.contains(socket.as_str())
            }
        }
    }
}

/// Memory of one pid; None when it is gone (raced with its exit).
pub fn process_memory(pid: i32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = kib_field(&status, "VmRSS")?;
    // smaps_rollup exists since Linux 4.14; without it PSS stays 0.
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| kib_field(&t, "Pss"))
        .unwrap_or(0);
    Some(Memory {
        processes: 1,
        rss_kib: rss,
        pss_kib: pss,
    })
}

/// Pids of /proc whose command line satisfies `pred`.
pub fn pids_where(pred: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let raw = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !raw.is_empty() && pred(&cmdline_text(&raw)) {
            out.push(pid);
        }
    }
    out
}

fn parent_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Children of `parents` whose command line is blank: capcri's pod inits,
/// which zero their arguments and environment (a container of a
/// shared-PID pod can read them, SECURITY.md), so no command line names
/// them. A container's own processes always have a command line.
fn scrubbed_children(parents: &[i32]) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| parent_of(pid).is_some_and(|p| parents.contains(&p)))
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|raw| cmdline_text(&raw).trim().is_empty())
        })
        .collect()
}

/// The summed memory of the runtime's per-pod processes (for capcri: the
/// pod monitors and the pod inits they fork).
pub fn per_pod_memory(kind: &PerPodProcess) -> Memory {
    let mut pids = pids_where(|c| kind.matches(c));
    if matches!(kind, PerPodProcess::CapcriMonitor { .. }) {
        let inits = scrubbed_children(&pids);
        pids.extend(inits);
    }
    pids.into_iter()
        .filter_map(process_memory)
        .fold(Memory::default(), |a, b| a + b)
}

/// The summed memory of `parent`'s children whose command line
/// satisfies `pred` (capcri's monitor template: one per daemon, not per pod).
pub fn children_memory(parent: i32, pred: impl Fn(&str) -> bool) -> Memory {
    pids_where(pred)
        .into_iter()
        .filter(|&pid| parent_of(pid) == Some(parent))
        .filter_map(process_memory)
        .fold(Memory::default(), |a, b| a + b)
}

/// Is this the command line of capcri's monitor template?
pub fn is_monitor_template(cmdline: &str) -> bool {
    cmdline.starts_with("capcri monitor-template")
}

/// Pids whose command line mentions `dir` (daemons, monitors, shims).
pub fn pids_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    let me = std::process::id() as i32;
    pids_where(|c| c.contains(&needle))
        .into_iter()
        .filter(|&p| p != me)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_told_from_the_monitors() {
        let _alone = crate::CHILD_PROCESSES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(is_monitor_template("capcri monitor-template       "));
        assert!(!is_monitor_template("capcri monitor --pod-id p"));
        let me = std::process::id() as i32;
        assert_eq!(children_memory(me, |_| true).processes, 0);
    }

    #[test]
    fn kib_fields() {
        let status = "Name:\tcapcri\nVmHWM:\t   9000 kB\nVmRSS:\t    8123 kB\nThreads:\t3\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(8123));
        assert_eq!(kib_field(status, "VmHWM"), Some(9000));
        assert_eq!(kib_field(status, "Threads"), Some(3));
        assert_eq!(kib_field(status, "VmSwap"), None);
        let rollup =
            "55d0-7ff r 0 00:00 0 [rollup]\nRss:  4000 kB\nPss:  1500 kB\nPss_Anon: 900 kB\n";
        assert_eq!(kib_field(rollup, "Pss"), Some(1500));
        assert_eq!(kib_field("Pss: 12 MB\n", "Pss"), None);
    }

    #[test]
    fn cmdline_and_matching() {
        let mon = cmdline_text(
            b"/usr/bin/capcri\0monitor\0--pod-id\0ab\0--pod-dir\0/tmp/cb-x/c/run/pods/ab\0",
        );
        assert_eq!(
            mon,
            "/usr/bin/capcri monitor --pod-id ab --pod-dir /tmp/cb-x/c/run/pods/ab"
        );
        let capcri = PerPodProcess::CapcriMonitor {
            state_dir: "/tmp/cb-x/c/run".into(),
        };
        assert!(capcri.matches(&mon));
        assert!(!capcri.matches("/usr/bin/capcri serve --state-dir /tmp/cb-x/c/run"));
        assert!(!capcri.matches("/usr/bin/capcri monitor --pod-dir /run/capcri/pods/ab"));
        assert!(!capcri.matches("/opt/monitor/x /tmp/cb-x/c/run"));

        let ctd = PerPodProcess::ContainerdShim {
            socket: "/tmp/cb-x/k/s".into(),
        };
        assert!(ctd.matches(
            "/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id 123 -address /tmp/cb-x/k/s"
        ));
        assert!(!ctd.matches(
            "/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id 123 -address /run/containerd/containerd.sock"
        ));
    }

    #[test]
    fn own_process_is_readable() {
        let m = process_memory(std::process::id() as i32).expect("own /proc entry");
        assert_eq!(m.processes, 1);
        assert!(m.rss_kib > 0);
    }
}
