//! The bench's results: the JSON document and the human table, both built
//! from the same data without I/O.

use super::procfs::Memory;
use super::stats::{Op, Summary, ratios_by_call};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub host: Host,
    pub command: Vec<String>,
    pub registry: String,
    pub container_image: String,
    pub pull_images: Vec<String>,
    pub iterations: usize,
    pub concurrency: Vec<usize>,
    pub runtimes: Vec<RuntimeReport>,
    /// containerd median / capcri median per phase and operation, when both ran.
    pub ratios: Vec<RatioPhase>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub cpus: usize,
    pub kernel: String,
    /// cgroup v1 controllers the kernel has enabled but no hierarchy
    /// mounts, on a node that uses v1 ([`unmounted_v1_controllers`]).
    pub cgroup_v1_unmounted: Vec<String>,
}

impl Host {
    /// The host facts that change the figures, one line, or nothing.
    ///
    /// libcontainer's cgroup library (libcgroups 0.7, v1) looks each of
    /// its 12 controllers up in /proc/self/mountinfo and stops at the
    /// first cgroup mount that matches: for a controller no hierarchy
    /// mounts, it reads the whole file, once per container create (in
    /// libcontainer's intermediate process) and once per remove. Those
    /// calls then grow with the node's mounts (about five per pod), which
    /// a node whose init mounts every controller (systemd does) does not
    /// see.
    pub fn note(&self) -> Option<String> {
        (!self.cgroup_v1_unmounted.is_empty()).then(|| {
            format!(
                "host: cgroup v1 controllers enabled but not mounted: {} (libcontainer's cgroup library reads all of /proc/self/mountinfo for each, in every container create and remove)",
                self.cgroup_v1_unmounted.join(", ")
            )
        })
    }
}

/// The controllers of `/proc/cgroups` (`subsys_name hierarchy num_cgroups
/// enabled`) that are enabled but in no hierarchy, when some other one is
/// in a v1 hierarchy (hierarchy id above 0). On a cgroup-v2-only node
/// every controller shows hierarchy 0: none is listed.
pub fn unmounted_v1_controllers(proc_cgroups: &str) -> Vec<String> {
    let rows: Vec<(&str, u32, bool)> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let hierarchy = f.next()?.parse().ok()?;
            let enabled = f.nth(1)? == "1";
            Some((name, hierarchy, enabled))
        })
        .collect();
    if !rows.iter().any(|&(_, h, _)| h > 0) {
        return Vec::new();
    }
    rows.into_iter()
        .filter(|&(_, h, enabled)| h == 0 && enabled)
        .map(|(name, _, _)| name.to_string())
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeReport {
    pub name: String,
    pub version: String,
    pub phases: Vec<Phase>,
    pub memory: Option<MemoryReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub concurrency: usize,
    /// Every operation is present; null when it was never measured.
    pub ops: BTreeMap<&'static str, Option<Summary>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RatioPhase {
    pub concurrency: usize,
    pub containerd_over_capcri: BTreeMap<&'static str, Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// What the per-pod processes are for this runtime.
    pub per_pod_processes: String,
    pub daemon_at_start: Memory,
    /// The daemon with no pods after the rounds, once it has answered
    /// kubelet's periodic calls for a few seconds (the code those calls
    /// run is mapped again after an idle daemon unmapped it).
    pub daemon_relisting: Memory,
    pub steps: Vec<MemoryStep>,
    /// (daemon + helpers + per-pod processes) growth per pod between the
    /// first and the last step with pods, by RSS and by PSS. The helpers
    /// count because the pages monitors share with the template move PSS
    /// between them.
    pub per_extra_pod_rss_kib: Option<f64>,
    pub per_extra_pod_pss_kib: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MemoryStep {
    pub pods: usize,
    pub daemon: Memory,
    /// Per-daemon helper processes (capcri's monitor template; none for
    /// containerd): a fixed cost, reported apart from the daemon's own.
    pub helpers: Memory,
    pub per_pod: Memory,
}

/// Growth per pod between the first and last step that have pods.
pub fn per_extra_pod(steps: &[MemoryStep], pss: bool) -> Option<f64> {
    let with_pods: Vec<&MemoryStep> = steps.iter().filter(|s| s.pods > 0).collect();
    let (first, last) = (with_pods.first()?, with_pods.last()?);
    if last.pods <= first.pods {
        return None;
    }
    let total = |s: &MemoryStep| {
        if pss {
            (s.daemon.pss_kib + s.helpers.pss_kib + s.per_pod.pss_kib) as f64
        } else {
            (s.daemon.rss_kib + s.helpers.rss_kib + s.per_pod.rss_kib) as f64
        }
    };
    Some((total(last) - total(first)) / (last.pods - first.pods) as f64)
}

/// containerd/capcri ratios of medians for one concurrency.
pub fn ratios(capcri: &Phase, containerd: &Phase) -> RatioPhase {
    let containerd_over_capcri = ratios_by_call(
        Op::ALL.iter().map(|op| op.name()),
        &capcri.ops,
        &containerd.ops,
        |s| s.median_ms,
    );
    RatioPhase {
        concurrency: capcri.concurrency,
        containerd_over_capcri,
    }
}

fn cell(s: Option<&Summary>) -> String {
    match s {
        Some(s) => format!(
            "{:>4} {:>8.1} {:>8.1} {:>8.1}",
            s.count, s.median_ms, s.p90_ms, s.max_ms
        ),
        None => format!("{:>4} {:>8} {:>8} {:>8}", 0, "-", "-", "-"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The human-readable table.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "capcri bench, {} on {} CPUs, Linux {}",
        r.date, r.host.cpus, r.host.kernel
    );
    if let Some(n) = r.host.note() {
        let _ = writeln!(o, "{n}");
    }
    let _ = writeln!(o, "command: {}", r.command.join(" "));
    let _ = writeln!(
        o,
        "iterations {} per concurrency, runtimes interleaved per iteration; registry {}",
        r.iterations, r.registry
    );
    let _ = writeln!(o, "container image {}", r.container_image);
    let _ = writeln!(o, "cold pulls of {}", r.pull_images.join(", "));
    for rt in &r.runtimes {
        let _ = writeln!(o, "{}: {}", rt.name, rt.version);
    }
    for &c in &r.concurrency {
        let _ = writeln!(o, "\nconcurrency {c} (milliseconds; n median p90 max)");
        let mut header = format!("{:<18}", "operation");
        for rt in &r.runtimes {
            let _ = write!(header, " | {:^31}", rt.name);
        }
        let ratio = r.ratios.iter().find(|p| p.concurrency == c);
        if ratio.is_some() {
            header.push_str(" | ctd/capcri");
        }
        let _ = writeln!(o, "{header}");
        for op in Op::ALL {
            let mut line = format!("{:<18}", op.name());
            for rt in &r.runtimes {
                let s = rt
                    .phases
                    .iter()
                    .find(|p| p.concurrency == c)
                    .and_then(|p| p.ops.get(op.name()).copied().flatten());
                let _ = write!(line, " | {}", cell(s.as_ref()));
            }
            if let Some(p) = ratio {
                match p.containerd_over_capcri.get(op.name()).copied().flatten() {
                    Some(x) => {
                        let _ = write!(line, " | {x:>9.2}x");
                    }
                    None => line.push_str(" |         -"),
                }
            }
            let _ = writeln!(o, "{line}");
        }
    }
    let _ = writeln!(
        o,
        "\nmemory (MiB; daemon = VmRSS/Pss of the daemon, helpers = its per-daemon helper processes (capcri: the monitor template), per-pod = sum over its per-pod processes)"
    );
    let _ = writeln!(
        o,
        "{:<11} {:>5} {:>11} {:>11} {:>15} {:>6} {:>11} {:>11}",
        "runtime",
        "pods",
        "daemon RSS",
        "daemon PSS",
        "helpers RSS/PSS",
        "procs",
        "per-pod RSS",
        "per-pod PSS"
    );
    for rt in &r.runtimes {
        let Some(m) = &rt.memory else { continue };
        // A row of the daemon alone: no helpers, no pods.
        let daemon_row = |o: &mut String, label: &str, d: &Memory| {
            let _ = writeln!(
                o,
                "{:<11} {:>5} {:>11} {:>11} {:>15} {:>6} {:>11} {:>11}",
                rt.name,
                label,
                mib(d.rss_kib),
                mib(d.pss_kib),
                "-",
                "-",
                "-",
                "-"
            );
        };
        daemon_row(&mut o, "start", &m.daemon_at_start);
        for (k, s) in m.steps.iter().enumerate() {
            if k == 1 {
                daemon_row(&mut o, "relist", &m.daemon_relisting);
            }
            let _ = writeln!(
                o,
                "{:<11} {:>5} {:>11} {:>11} {:>15} {:>6} {:>11} {:>11}",
                rt.name,
                s.pods,
                mib(s.daemon.rss_kib),
                mib(s.daemon.pss_kib),
                format!("{}/{}", mib(s.helpers.rss_kib), mib(s.helpers.pss_kib)),
                s.per_pod.processes,
                mib(s.per_pod.rss_kib),
                mib(s.per_pod.pss_kib)
            );
        }
        let per = |v: Option<f64>| v.map_or("-".to_string(), |k| format!("{:.2}", k / 1024.0));
        let _ = writeln!(
            o,
            "{:<11} per extra pod (daemon + helpers + per-pod processes): {} MiB by RSS, {} MiB by PSS; per-pod processes: {}",
            rt.name,
            per(m.per_extra_pod_rss_kib),
            per(m.per_extra_pod_pss_kib),
            m.per_pod_processes
        );
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Samples;
    use std::time::Duration;

    #[test]
    fn unmounted_v1_controllers_of_proc_cgroups() {
        // This lab machine: a hybrid layout without four hierarchies.
        let hybrid = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
memory\t4\t2312\t1
net_cls\t0\t1\t1
perf_event\t0\t1\t1
rdma\t0\t1\t0
hugetlb\t0\t1\t1
pids\t8\t1\t1
";
        assert_eq!(
            unmounted_v1_controllers(hybrid),
            vec!["net_cls", "perf_event", "hugetlb"]
        );
        // cgroup v2 only: every controller in hierarchy 0, none listed.
        let unified = "#subsys_name hierarchy num_cgroups enabled
cpu 0 80 1
memory 0 80 1
";
        assert!(unmounted_v1_controllers(unified).is_empty());
        // Unreadable or malformed: nothing claimed.
        assert!(unmounted_v1_controllers("").is_empty());
        assert!(unmounted_v1_controllers("cpu x 1 1\nmemory 2").is_empty());
        let quiet = Host {
            cpus: 2,
            kernel: "6.1".into(),
            cgroup_v1_unmounted: Vec::new(),
        };
        assert_eq!(quiet.note(), None);
    }

    fn phase(c: usize, ms: u64) -> Phase {
        let mut s = Samples::default();
        for op in Op::ALL {
            s.add(op, Duration::from_millis(ms));
        }
        Phase {
            concurrency: c,
            ops: s.summaries(),
        }
    }

    fn mem(rss: u64, pss: u64, n: usize) -> Memory {
        Memory {
            processes: n,
            rss_kib: rss,
            pss_kib: pss,
        }
    }

    #[test]
    fn ratio_of_medians() {
        let r = ratios(&phase(1, 10), &phase(1, 60));
        assert_eq!(r.containerd_over_capcri.len(), Op::ALL.len());
        assert!(r.containerd_over_capcri.values().all(|v| *v == Some(6.0)));
        let mut missing = phase(1, 10);
        missing.ops.insert("ExecSync", None);
        let r = ratios(&missing, &phase(1, 60));
        assert_eq!(r.containerd_over_capcri["ExecSync"], None);
    }

    #[test]
    fn growth_per_pod() {
        let steps = [
            MemoryStep {
                pods: 0,
                daemon: mem(9000, 8000, 1),
                helpers: Memory::default(),
                per_pod: Memory::default(),
            },
            MemoryStep {
                pods: 10,
                daemon: mem(10000, 9000, 1),
                helpers: mem(4000, 1000, 1),
                per_pod: mem(30000, 10000, 10),
            },
            MemoryStep {
                pods: 50,
                daemon: mem(14000, 13000, 1),
                helpers: mem(4000, 1000, 1),
                per_pod: mem(150000, 50000, 50),
            },
        ];
        assert_eq!(
            per_extra_pod(&steps, false),
            Some((164000.0 - 40000.0) / 40.0)
        );
        assert_eq!(
            per_extra_pod(&steps, true),
            Some((63000.0 - 19000.0) / 40.0)
        );
        assert_eq!(per_extra_pod(&steps[..2], true), None);
    }

    #[test]
    fn table_lists_every_operation_and_the_ratio() {
        let report = Report {
            date: "2025-01-01T00:00:00Z".into(),
            host: Host {
                cpus: 2,
                kernel: "6.1".into(),
                cgroup_v1_unmounted: vec!["hugetlb".into()],
            },
            command: vec!["capcri".into(), "bench".into()],
            registry: "127.0.0.1:5000".into(),
            container_image: "busybox".into(),
            pull_images: vec!["busybox:1".into()],
            iterations: 1,
            concurrency: vec![1],
            runtimes: vec![
                RuntimeReport {
                    name: "capcri".into(),
                    version: "capcri 0.1.0".into(),
                    phases: vec![phase(1, 10)],
                    memory: None,
                },
                RuntimeReport {
                    name: "containerd".into(),
                    version: "containerd 1.6.20".into(),
                    phases: vec![phase(1, 40)],
                    memory: None,
                },
            ],
            ratios: vec![ratios(&phase(1, 10), &phase(1, 40))],
            notes: vec![],
        };
        let t = render(&report);
        for op in Op::ALL {
            assert!(t.contains(op.name()), "{op:?} missing in\n{t}");
        }
        assert!(t.contains("4.00x"), "{t}");
        assert!(
            t.contains("controllers enabled but not mounted: hugetlb ("),
            "{t}"
        );
        let json = serde_json::to_value(&report).expect("serializable");
        assert_eq!(
            json["runtimes"][0]["phases"][0]["ops"]["ExecSync"]["count"],
            1
        );
    }
}
