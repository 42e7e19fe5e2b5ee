//! `--scale`: the calls kubelet makes all the time, timed with N pods
//! held running (one container each), at several N, and the memory of
//! the runtime at each N.
//!
//! kubelet's PLEG relists pods and containers every second, its status
//! manager asks for pod and container status, and cadvisor-less stats
//! (`ListPodSandboxStats`, `ListContainerStats`) come every 10 s: on a node
//! with 110 or 250 pods these are most of the CRI traffic. What matters is
//! their latency at size and how it grows with the pod count: the report
//! gives, per call, the growth exponent between sizes (log of the latency
//! ratio over log of the pod ratio: 1 is linear, 2 quadratic).
//!
//! The pure part (summaries, ratios, growth, the table) is unit-tested
//! here; the driver is in [`run`].

use super::daemons::{Paused, Workspace};
use super::procfs::{self, Memory};
use super::stats::{Op, Summary, ratios_by_call, summarize};
use super::workload::Target;
use super::{BenchError, Runner, RuntimeKind, Settings, start_runtime};
use k8s_cri::v1 as cri;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The steady-state calls, in the order each sampling round sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ScaleOp {
    ListPodSandbox,
    ListContainers,
    ListContainerStats,
    ListPodSandboxStats,
    PodSandboxStatus,
    ContainerStatus,
    /// No work in either daemon: the round trip through the two gRPC
    /// stacks, the floor under every other call's figure.
    Version,
}

impl ScaleOp {
    pub const ALL: [ScaleOp; 7] = [
        ScaleOp::ListPodSandbox,
        ScaleOp::ListContainers,
        ScaleOp::ListContainerStats,
        ScaleOp::ListPodSandboxStats,
        ScaleOp::PodSandboxStatus,
        ScaleOp::ContainerStatus,
        ScaleOp::Version,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScaleOp::ListPodSandbox => "ListPodSandbox",
            ScaleOp::ListContainers => "ListContainers",
            ScaleOp::ListContainerStats => "ListContainerStats",
            ScaleOp::ListPodSandboxStats => "ListPodSandboxStats",
            ScaleOp::PodSandboxStatus => "PodSandboxStatus",
            ScaleOp::ContainerStatus => "ContainerStatus",
            ScaleOp::Version => "Version",
        }
    }
}

/// One runtime at one pod count.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleStep {
    pub pods: usize,
    /// Every call of [`ScaleOp::ALL`], null when never measured: sent
    /// until its answer was in and decoded, as a client such as kubelet
    /// waits for it.
    pub ops: BTreeMap<&'static str, Option<Summary>>,
    /// The same samples until the whole answer was in, before the client
    /// decoded it: the runtime's work and the transport. Decoding is the
    /// client's, the same for either runtime (at 250 pods about 0.3 ms of
    /// ListContainers's 0.6 in capcri's case).
    pub answered: BTreeMap<&'static str, Option<Summary>>,
    /// Pod to running (RunPodSandbox sent until ContainerStatus says
    /// RUNNING) of the pods started to reach this size.
    pub pod_to_running: Option<Summary>,
    /// Each call of a whole pod's life ([`CYCLE_OPS`]), pods started one
    /// at a time with this size's pods running: what a node at this size
    /// pays to start and remove one more pod.
    pub cycle: BTreeMap<&'static str, Option<Summary>>,
    pub daemon: Memory,
    /// Per-daemon helpers (capcri's monitor template).
    pub helpers: Memory,
    /// The per-pod processes (capcri's monitors, containerd's shims).
    pub per_pod: Memory,
}

impl ScaleStep {
    /// PSS of every runtime process: daemon, helpers, per-pod processes.
    pub fn total_pss_kib(&self) -> u64 {
        self.daemon.pss_kib + self.helpers.pss_kib + self.per_pod.pss_kib
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleRuntime {
    pub name: String,
    pub version: String,
    pub per_pod_processes: String,
    pub daemon_at_start: Memory,
    pub steps: Vec<ScaleStep>,
    /// Growth between consecutive sizes, per call.
    pub growth: Vec<Growth>,
    /// Growth exponent over all sizes, per call (`fitted_exponents`).
    pub fitted_exponent: BTreeMap<&'static str, Option<f64>>,
    /// Total PSS growth per extra pod between consecutive sizes, KiB.
    pub pss_per_extra_pod_kib: Vec<(usize, usize, f64)>,
}

/// How one call's median grew from `from_pods` to `to_pods`.
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    pub from_pods: usize,
    pub to_pods: usize,
    /// Median milliseconds added per 100 extra pods.
    pub ms_per_100_pods: BTreeMap<&'static str, Option<f64>>,
    /// log(median ratio) / log(pod ratio): 1 linear, below 1 sub-linear.
    pub exponent: BTreeMap<&'static str, Option<f64>>,
}

/// The calls of one pod's life timed by `--scale-cycles`, in order.
pub const CYCLE_OPS: [Op; 10] = [
    Op::RunPodSandbox,
    Op::CreateContainer,
    Op::StartContainer,
    Op::CreateAndStart,
    Op::PodToRunning,
    Op::ExecSync,
    Op::StopContainer,
    Op::RemoveContainer,
    Op::StopPodSandbox,
    Op::RemovePodSandbox,
];

/// Summaries of [`CYCLE_OPS`] from a pod cycle's timings.
pub fn cycle_summaries(timed: &[(Op, Duration)]) -> BTreeMap<&'static str, Option<Summary>> {
    CYCLE_OPS
        .iter()
        .map(|&op| {
            let v: Vec<Duration> = timed
                .iter()
                .filter(|(o, _)| *o == op)
                .map(|&(_, d)| d)
                .collect();
            (op.name(), summarize(&v))
        })
        .collect()
}

/// containerd over capcri at one size (above 1: capcri is faster).
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRatio {
    pub pods: usize,
    pub median: BTreeMap<&'static str, Option<f64>>,
    pub p99: BTreeMap<&'static str, Option<f64>>,
    /// The same of [`ScaleStep::answered`].
    pub answered_median: BTreeMap<&'static str, Option<f64>>,
    pub answered_p99: BTreeMap<&'static str, Option<f64>>,
    /// Medians of the pod-cycle calls ([`CYCLE_OPS`]).
    pub cycle_median: BTreeMap<&'static str, Option<f64>>,
    /// PSS of all runtime processes, containerd over capcri.
    pub total_pss: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub date: String,
    pub host: super::report::Host,
    pub command: Vec<String>,
    pub registry: String,
    pub container_image: String,
    pub sizes: Vec<usize>,
    pub samples: usize,
    pub runtimes: Vec<ScaleRuntime>,
    pub ratios: Vec<ScaleRatio>,
    pub notes: Vec<String>,
}

/// Timing samples of one runtime at one size.
#[derive(Debug, Default, Clone)]
pub struct ScaleSamples {
    pub by_op: BTreeMap<ScaleOp, Vec<Duration>>,
    /// The same calls until their answer was in, before decoding.
    pub answered: BTreeMap<ScaleOp, Vec<Duration>>,
    pub pod_to_running: Vec<Duration>,
}

/// One call's times from the moment it was sent.
#[derive(Debug, Clone, Copy)]
pub struct CallTimes {
    /// The whole answer in (the runtime's work and the transport).
    pub answered: Duration,
    /// The answer decoded too.
    pub decoded: Duration,
}

impl ScaleSamples {
    pub fn add(&mut self, op: ScaleOp, t: CallTimes) {
        self.by_op.entry(op).or_default().push(t.decoded);
        self.answered.entry(op).or_default().push(t.answered);
    }

    pub fn summaries(&self) -> BTreeMap<&'static str, Option<Summary>> {
        per_call(&self.by_op)
    }

    pub fn answered_summaries(&self) -> BTreeMap<&'static str, Option<Summary>> {
        per_call(&self.answered)
    }
}

fn per_call(samples: &BTreeMap<ScaleOp, Vec<Duration>>) -> BTreeMap<&'static str, Option<Summary>> {
    ScaleOp::ALL
        .iter()
        .map(|op| {
            (
                op.name(),
                summarize(samples.get(op).map(Vec::as_slice).unwrap_or(&[])),
            )
        })
        .collect()
}

fn median(step: &ScaleStep, op: ScaleOp) -> Option<f64> {
    step.ops
        .get(op.name())
        .copied()
        .flatten()
        .map(|s| s.median_ms)
}

/// Growth of every call between consecutive steps.
pub fn growth(steps: &[ScaleStep]) -> Vec<Growth> {
    steps
        .windows(2)
        .filter(|w| w[1].pods > w[0].pods && w[0].pods > 0)
        .map(|w| {
            let (a, b) = (&w[0], &w[1]);
            let dn = (b.pods - a.pods) as f64;
            let pods_ratio = (b.pods as f64 / a.pods as f64).ln();
            let mut per_100 = BTreeMap::new();
            let mut exponent = BTreeMap::new();
            for op in ScaleOp::ALL {
                let (ma, mb) = (median(a, op), median(b, op));
                per_100.insert(op.name(), ma.zip(mb).map(|(ma, mb)| (mb - ma) / dn * 100.0));
                exponent.insert(
                    op.name(),
                    ma.zip(mb)
                        .filter(|(ma, mb)| *ma > 0.0 && *mb > 0.0)
                        .map(|(ma, mb)| (mb / ma).ln() / pods_ratio),
                );
            }
            Growth {
                from_pods: a.pods,
                to_pods: b.pods,
                ms_per_100_pods: per_100,
                exponent,
            }
        })
        .collect()
}

/// Per call, the slope of a least-squares line through (ln pods, ln
/// median) over every size with a figure: the growth exponent of the
/// whole run (1 linear, 2 quadratic). Between two consecutive sizes a
/// sub-millisecond median moves with the machine's noise, and one noisy
/// size swings that pair's exponent by tenths; the fit weighs every size.
/// None with fewer than three sizes.
pub fn fitted_exponents(steps: &[ScaleStep]) -> BTreeMap<&'static str, Option<f64>> {
    ScaleOp::ALL
        .into_iter()
        .map(|op| {
            let points: Vec<(f64, f64)> = steps
                .iter()
                .filter(|s| s.pods > 0)
                .filter_map(|s| {
                    median(s, op)
                        .filter(|m| *m > 0.0)
                        .map(|m| ((s.pods as f64).ln(), m.ln()))
                })
                .collect();
            (op.name(), least_squares_slope(&points))
        })
        .collect()
}

fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Total PSS growth per pod between consecutive steps (KiB).
pub fn pss_per_extra_pod(steps: &[ScaleStep]) -> Vec<(usize, usize, f64)> {
    steps
        .windows(2)
        .filter(|w| w[1].pods > w[0].pods)
        .map(|w| {
            let d = w[1].total_pss_kib() as f64 - w[0].total_pss_kib() as f64;
            (w[0].pods, w[1].pods, d / (w[1].pods - w[0].pods) as f64)
        })
        .collect()
}

/// containerd over capcri at every size both measured.
pub fn ratios(capcri: &ScaleRuntime, containerd: &ScaleRuntime) -> Vec<ScaleRatio> {
    capcri
        .steps
        .iter()
        .filter_map(|a| {
            let b = containerd.steps.iter().find(|b| b.pods == a.pods)?;
            let steady = |of: fn(&ScaleStep) -> &BTreeMap<&'static str, Option<Summary>>,
                          pick: fn(&Summary) -> f64| {
                ratios_by_call(ScaleOp::ALL.iter().map(|op| op.name()), of(a), of(b), pick)
            };
            Some(ScaleRatio {
                pods: a.pods,
                median: steady(|s| &s.ops, |s| s.median_ms),
                p99: steady(|s| &s.ops, |s| s.p99_ms),
                answered_median: steady(|s| &s.answered, |s| s.median_ms),
                answered_p99: steady(|s| &s.answered, |s| s.p99_ms),
                cycle_median: ratios_by_call(
                    CYCLE_OPS.iter().map(|op| op.name()),
                    &a.cycle,
                    &b.cycle,
                    |s| s.median_ms,
                ),
                total_pss: (a.total_pss_kib() > 0)
                    .then(|| b.total_pss_kib() as f64 / a.total_pss_kib() as f64),
            })
        })
        .collect()
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// The human-readable tables.
pub fn render(r: &ScaleReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "capcri bench --scale, {} on {} CPUs, Linux {}",
        r.date, r.host.cpus, r.host.kernel
    );
    if let Some(n) = r.host.note() {
        let _ = writeln!(o, "{n}");
    }
    let _ = writeln!(o, "command: {}", r.command.join(" "));
    let _ = writeln!(
        o,
        "{} samples per call and size, in a run per call and runtime (runtimes in turn, the other daemon stopped, after a {} ms pause); container image {}",
        r.samples,
        SETTLE.as_millis(),
        r.container_image
    );
    for rt in &r.runtimes {
        let _ = writeln!(o, "{}: {}", rt.name, rt.version);
    }
    for &pods in &r.sizes {
        let _ = writeln!(
            o,
            "\n{pods} running pods (milliseconds; median p99, containerd/capcri)"
        );
        let mut header = format!("{:<20}", "call");
        for rt in &r.runtimes {
            let _ = write!(header, " | {:^17}", rt.name);
        }
        let ratio = r.ratios.iter().find(|x| x.pods == pods);
        if ratio.is_some() {
            header.push_str(" | ratio med  p99");
        }
        let _ = writeln!(o, "{header}");
        steady_rows(
            &mut o,
            r,
            pods,
            |s| &s.ops,
            ratio.map(|x| (&x.median, &x.p99)),
        );
        let mut line = format!("{:<20}", "pod-to-running");
        for rt in &r.runtimes {
            summary_cells(&mut line, step_at(rt, pods).and_then(|s| s.pod_to_running));
        }
        let _ = writeln!(o, "{line}");
        render_answered(&mut o, r, pods, ratio);
        render_cycle(&mut o, r, pods, ratio);
    }
    let _ = writeln!(
        o,
        "\ngrowth of the median between sizes (exponent: 1 = linear; ms per 100 extra pods)"
    );
    for rt in &r.runtimes {
        for g in &rt.growth {
            let _ = writeln!(o, "{} {} -> {} pods:", rt.name, g.from_pods, g.to_pods);
            for op in ScaleOp::ALL {
                let _ = writeln!(
                    o,
                    "  {:<20} exponent {:>6}  {:>8} ms/100 pods",
                    op.name(),
                    opt(g.exponent.get(op.name()).copied().flatten(), 2),
                    opt(g.ms_per_100_pods.get(op.name()).copied().flatten(), 2)
                );
            }
        }
        if rt.fitted_exponent.values().any(Option::is_some) {
            let _ = writeln!(
                o,
                "{} over all {} sizes (least-squares fit of ln median on ln pods):",
                rt.name,
                rt.steps.iter().filter(|s| s.pods > 0).count()
            );
            for op in ScaleOp::ALL {
                let _ = writeln!(
                    o,
                    "  {:<20} exponent {:>6}",
                    op.name(),
                    opt(rt.fitted_exponent.get(op.name()).copied().flatten(), 2)
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "\nmemory (MiB; total PSS = daemon + helpers + per-pod processes)"
    );
    let _ = writeln!(
        o,
        "{:<11} {:>5} {:>10} {:>10} {:>10} {:>6} {:>11} {:>10} {:>12}",
        "runtime",
        "pods",
        "daemon RSS",
        "daemon PSS",
        "helper PSS",
        "procs",
        "per-pod PSS",
        "total PSS",
        "PSS/pod"
    );
    for rt in &r.runtimes {
        let _ = writeln!(
            o,
            "{:<11} {:>5} {:>10} {:>10}",
            rt.name,
            "idle",
            mib(rt.daemon_at_start.rss_kib),
            mib(rt.daemon_at_start.pss_kib)
        );
        for s in &rt.steps {
            let per_pod = if s.pods > 0 {
                format!("{:.2}", s.per_pod.pss_kib as f64 / 1024.0 / s.pods as f64)
            } else {
                "-".into()
            };
            let _ = writeln!(
                o,
                "{:<11} {:>5} {:>10} {:>10} {:>10} {:>6} {:>11} {:>10} {:>12}",
                rt.name,
                s.pods,
                mib(s.daemon.rss_kib),
                mib(s.daemon.pss_kib),
                mib(s.helpers.pss_kib),
                s.per_pod.processes,
                mib(s.per_pod.pss_kib),
                mib(s.total_pss_kib()),
                per_pod
            );
        }
        for (a, b, k) in &rt.pss_per_extra_pod_kib {
            let _ = writeln!(
                o,
                "{:<11} {a} -> {b} pods: {:.2} MiB total PSS per extra pod",
                rt.name,
                k / 1024.0
            );
        }
    }
    for x in &r.ratios {
        if let Some(t) = x.total_pss {
            let _ = writeln!(o, "total PSS at {} pods: containerd/capcri {t:.1}x", x.pods);
        }
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

/// The runtime's figures at one size.
fn step_at(rt: &ScaleRuntime, pods: usize) -> Option<&ScaleStep> {
    rt.steps.iter().find(|s| s.pods == pods)
}

/// One runtime's cells of a table row: median and p99, or dashes.
fn summary_cells(line: &mut String, s: Option<Summary>) {
    match s {
        Some(s) => {
            let _ = write!(line, " | {:>8.2} {:>8.2}", s.median_ms, s.p99_ms);
        }
        None => line.push_str(" |        -        -"),
    }
}

/// The steady calls at one size until their answer was in, before the
/// client decoded it; nothing when no such samples were kept.
fn render_answered(o: &mut String, r: &ScaleReport, pods: usize, ratio: Option<&ScaleRatio>) {
    if !measured_at(r, pods, |s| &s.answered) {
        return;
    }
    let _ = writeln!(
        o,
        "the same calls until the answer was in, before the client decoded it (median p99)"
    );
    steady_rows(
        o,
        r,
        pods,
        |s| &s.answered,
        ratio.map(|x| (&x.answered_median, &x.answered_p99)),
    );
}

type ByCall<T> = BTreeMap<&'static str, Option<T>>;

/// Whether any runtime has a figure of `of` at `pods`.
fn measured_at(r: &ScaleReport, pods: usize, of: fn(&ScaleStep) -> &ByCall<Summary>) -> bool {
    r.runtimes
        .iter()
        .filter_map(|rt| step_at(rt, pods))
        .any(|s| of(s).values().any(Option::is_some))
}

/// A row per steady call at one size: each runtime's median and p99 of
/// the figures `of` picks, then the median and p99 ratios when given.
fn steady_rows(
    o: &mut String,
    r: &ScaleReport,
    pods: usize,
    of: fn(&ScaleStep) -> &ByCall<Summary>,
    ratios: Option<(&ByCall<f64>, &ByCall<f64>)>,
) {
    for op in ScaleOp::ALL {
        let mut line = format!("{:<20}", op.name());
        for rt in &r.runtimes {
            let s = step_at(rt, pods).and_then(|s| of(s).get(op.name()).copied().flatten());
            summary_cells(&mut line, s);
        }
        if let Some((median, p99)) = ratios {
            let _ = write!(
                line,
                " | {:>8}x {:>5}x",
                opt(median.get(op.name()).copied().flatten(), 1),
                opt(p99.get(op.name()).copied().flatten(), 1)
            );
        }
        let _ = writeln!(o, "{line}");
    }
}

/// One pod's life at one size: each call's median and p99 per runtime,
/// and containerd over capcri of the medians; nothing when no cycle ran.
fn render_cycle(o: &mut String, r: &ScaleReport, pods: usize, ratio: Option<&ScaleRatio>) {
    if !measured_at(r, pods, |s| &s.cycle) {
        return;
    }
    let _ = writeln!(
        o,
        "one more pod at {pods} pods, one at a time (median p99{})",
        if ratio.is_some() {
            ", containerd/capcri of the medians"
        } else {
            ""
        }
    );
    for op in CYCLE_OPS {
        let mut line = format!("{:<20}", op.name());
        for rt in &r.runtimes {
            let s = step_at(rt, pods).and_then(|s| s.cycle.get(op.name()).copied().flatten());
            summary_cells(&mut line, s);
        }
        if let Some(x) = ratio {
            let _ = write!(
                line,
                " | {:>8}x",
                opt(x.cycle_median.get(op.name()).copied().flatten(), 2)
            );
        }
        let _ = writeln!(o, "{line}");
    }
}

/// The processes of every runtime but `keep`'s: its daemon and its
/// per-pod processes (containerd's shims, capcri's pod monitors), stopped
/// while `keep`'s calls are sampled. A node runs one runtime, and 250
/// idle shims are not idle: each Go runtime's monitor thread wakes on a
/// timer. With containerd's shims stopped as well as its daemon, capcri's
/// ListContainers at 250 pods took 147 / 145 µs (median, 2,000 calls of a
/// standalone client) against 148 / 147 with them running, p99 225 / 221
/// against 246 / 290.
fn others_of(ws: &Workspace, runners: &[Runner], keep: usize) -> Vec<i32> {
    runners
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != keep)
        .flat_map(|(_, o)| {
            let daemon = ws.daemons[o.daemon_index].pid();
            std::iter::once(daemon).chain(procfs::pids_where(|c| o.per_pod.matches(c)))
        })
        .collect()
}

/// Memory of the runtime now: daemon, helpers, per-pod processes.
pub fn memory_now(daemon_pid: i32, per_pod: &procfs::PerPodProcess) -> (Memory, Memory, Memory) {
    (
        procfs::process_memory(daemon_pid).unwrap_or_default(),
        procfs::children_memory(daemon_pid, procfs::is_monitor_template),
        procfs::per_pod_memory(per_pod),
    )
}

/// The parameters of `--scale`.
#[derive(Debug, Clone)]
pub struct ScaleSettings {
    /// Pod counts, ascending, each above zero.
    pub sizes: Vec<usize>,
    pub samples: usize,
    /// Pods started at once while growing to a size.
    pub concurrency: usize,
    /// Whole pod cycles timed one at a time at each size.
    pub cycles: usize,
}

/// The pause before each run of samples.
const SETTLE: Duration = Duration::from_millis(500);

/// The order the runtimes take for the `n`-th call: alternating, so
/// neither always goes first.
fn turns(runtimes: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..runtimes).collect();
    if n % 2 == 1 {
        order.reverse();
    }
    order
}

/// Holds each size of pods running on every runtime in turn, samples the
/// steady calls, records memory, and removes every pod at the end; the
/// caller's cleanup removes them after an error.
///
/// Each call is sampled in a run of its own per runtime, the runtimes in
/// turn (the first one alternating from call to call), after a pause, the
/// other runtime's daemon stopped meanwhile ([`Paused`]).
/// Samples interleaved per runtime made one runtime's calls follow the
/// other's: capcri's relists came right after containerd's stats calls
/// (0.3-0.6 s of its CPU each at 250 pods, and its garbage collector
/// after them), and a tenth of them waited 2-12 ms for a core on the 2-core
/// machine; a node has one runtime. A run of one call also keeps each
/// call's own aftermath (the stats calls' background refresh) out of the
/// other calls' figures, as kubelet's periods do (relists every second,
/// stats every ten).
pub async fn run(
    ws: &mut Workspace,
    s: &Settings,
    sc: &ScaleSettings,
    targets: &mut Vec<Target>,
) -> Result<ScaleReport, BenchError> {
    let mut runners = Vec::new();
    for &kind in &s.runtimes {
        let r = start_runtime(ws, s, kind).await?;
        targets.push(r.target.clone());
        runners.push(r);
    }
    let image = s.container_image();
    for r in &runners {
        r.target.pull(&image).await?;
    }
    let mut running: Vec<Vec<(String, String)>> = vec![Vec::new(); runners.len()];
    let mut steps: Vec<Vec<ScaleStep>> = vec![Vec::new(); runners.len()];
    for &pods in &sc.sizes {
        let mut samples = vec![ScaleSamples::default(); runners.len()];
        for (i, r) in runners.iter_mut().enumerate() {
            eprintln!("capcri-bench: {}: growing to {pods} pods", r.kind.name());
            samples[i].pod_to_running =
                grow(r, &mut running[i], pods, sc.concurrency, &image).await?;
            ws.daemons[r.daemon_index].check_alive()?;
        }
        // Let the pods' first log writes and lazily started threads settle,
        // and containerd's stats collector (1 s period) see every pod.
        tokio::time::sleep(Duration::from_secs(3)).await;
        eprintln!("capcri-bench: sampling at {pods} pods");
        for (n, op) in ScaleOp::ALL.into_iter().enumerate() {
            for i in turns(runners.len(), n) {
                let r = &runners[i];
                let _others = Paused::these(others_of(ws, &runners, i));
                // This runtime's last calls' aftermath is over too.
                tokio::time::sleep(SETTLE).await;
                for times in sample(&r.target, op, &running[i], sc.samples).await? {
                    samples[i].add(op, times);
                }
            }
        }
        let memory: Vec<_> = runners
            .iter()
            .map(|r| memory_now(ws.daemons[r.daemon_index].pid(), &r.per_pod))
            .collect();
        // One more pod's life, after the memory: its processes come and go.
        let mut cycles = vec![Vec::new(); runners.len()];
        if sc.cycles > 0 {
            eprintln!("capcri-bench: pod cycles at {pods} pods");
        }
        for k in 0..sc.cycles {
            for i in turns(runners.len(), k) {
                let _others =
                    Paused::all_but(runners.iter().map(|o| ws.daemons[o.daemon_index].pid()), i);
                let name = runners[i].next_name("cycle");
                runners[i]
                    .target
                    .pod_cycle(&name, &image, &mut cycles[i], None)
                    .await?;
            }
        }
        for (i, (daemon, helpers, per_pod)) in memory.into_iter().enumerate() {
            steps[i].push(ScaleStep {
                pods,
                ops: samples[i].summaries(),
                answered: samples[i].answered_summaries(),
                pod_to_running: summarize(&samples[i].pod_to_running),
                cycle: cycle_summaries(&cycles[i]),
                daemon,
                helpers,
                per_pod,
            });
        }
    }
    for (i, r) in runners.iter().enumerate() {
        eprintln!(
            "capcri-bench: {}: removing {} pods",
            r.kind.name(),
            running[i].len()
        );
        remove_pods(&r.target, &running[i], sc.concurrency).await?;
    }
    let runtimes: Vec<ScaleRuntime> = runners
        .iter()
        .zip(steps)
        .map(|(r, steps)| ScaleRuntime {
            name: r.kind.name().into(),
            version: r.version.clone(),
            per_pod_processes: match r.kind {
                RuntimeKind::Capcri => "capcri monitor (one per pod)".into(),
                RuntimeKind::Containerd => "containerd-shim-runc-v2 (one per pod)".into(),
            },
            daemon_at_start: r.memory_at_start,
            growth: growth(&steps),
            fitted_exponent: fitted_exponents(&steps),
            pss_per_extra_pod_kib: pss_per_extra_pod(&steps),
            steps,
        })
        .collect();
    let by_name = |n: &str| runtimes.iter().find(|r| r.name == n);
    let ratios = match (by_name("capcri"), by_name("containerd")) {
        (Some(a), Some(b)) => ratios(a, b),
        _ => Vec::new(),
    };
    Ok(ScaleReport {
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        host: super::host(),
        command: std::env::args().collect(),
        registry: s.registry.clone(),
        container_image: image,
        sizes: sc.sizes.clone(),
        samples: sc.samples,
        runtimes,
        ratios,
        notes: vec![
            super::daemons::STATE_NOTE.into(),
            "percentiles by nearest rank".into(),
            "the calls are sent from a client of their own: one thread, a single-threaded tokio runtime, its own connection, three unanswered Version calls first; Version is the floor, no work in either daemon".into(),
            "the calls in the table's order, unfiltered lists, status of the pods and containers in turn, verbose false".into(),
            "pods: one container each (sh waiting on sleep), a PID namespace per container as kubelet asks by default, the runtime's own CNI bridge".into(),
            "per-pod processes: capcri's monitors, containerd's shims; containerd's pause processes and the containers themselves are not counted".into(),
        ],
    })
}

/// Starts pods until `running` holds `pods`, `concurrency` at once;
/// returns their pod-to-running times.
async fn grow(
    r: &mut Runner,
    running: &mut Vec<(String, String)>,
    pods: usize,
    concurrency: usize,
    image: &str,
) -> Result<Vec<Duration>, BenchError> {
    let mut times = Vec::new();
    while running.len() < pods {
        let n = concurrency.min(pods - running.len());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let name = r.next_name("scale");
            let target = r.target.clone();
            let image = image.to_string();
            set.spawn(async move {
                let mut out = Vec::new();
                let ids = target.start_pod(&name, &image, "c", &mut out).await?;
                Ok::<_, BenchError>((ids, out))
            });
        }
        let mut failed = None;
        while let Some(res) = set.join_next().await {
            match res.map_err(BenchError::from).and_then(|x| x) {
                Ok((ids, out)) => {
                    running.push(ids);
                    times.extend(
                        out.into_iter()
                            .filter(|(op, _)| *op == Op::PodToRunning)
                            .map(|(_, d)| d),
                    );
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(times)
}

async fn remove_pods(
    target: &Target,
    running: &[(String, String)],
    concurrency: usize,
) -> Result<(), BenchError> {
    for chunk in running.chunks(concurrency.max(1)) {
        let mut set = tokio::task::JoinSet::new();
        for (pod, _) in chunk {
            let (t, pod) = (target.clone(), pod.clone());
            set.spawn(async move { t.remove_pod(&pod, &mut Vec::new()).await });
        }
        while let Some(res) = set.join_next().await {
            res??;
        }
    }
    Ok(())
}

/// Unanswered calls each sampling client sends first: the connection's
/// first calls also settle its HTTP/2 windows and the daemon's per-call
/// allocations.
const WARM_UP_CALLS: usize = 3;

/// `samples` calls of `op`, one after the other, the pods and containers
/// in `objects` in turn, from a client of their own: a thread running a
/// single-threaded tokio runtime with its own connection to the socket.
///
/// Sent from the bench's multi-threaded runtime through its shared
/// channel, each call crossed threads on the client's side (the caller's
/// task, the channel's buffer task, the connection's task), and on this
/// 2-vCPU VM each wake of a thread on an idle vCPU costs about 30 us (a
/// pipe ping-pong between two pinned processes: 60 us a round trip across
/// vCPUs, 9 on one). That client floor, the same for either runtime, was
/// 0.11-0.16 ms of every sub-millisecond call; from one thread, a Version
/// call to capcri takes 0.03 ms. kubelet's client is grpc-go's, with costs
/// of its own; the figures here are the runtime's answer as close as the
/// client can measure it, decoding included.
async fn sample(
    target: &Target,
    op: ScaleOp,
    objects: &[(String, String)],
    samples: usize,
) -> Result<Vec<CallTimes>, BenchError> {
    let name = target.name;
    if objects.is_empty() {
        return Err(BenchError::Usage(format!(
            "{name}: no running pod to sample {}",
            op.name()
        )));
    }
    let objects = objects.to_vec();
    let base = target.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("sample-{name}"))
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| BenchError::Io {
                    what: "start the sampling client's runtime".into(),
                    source,
                })
                .and_then(|rt| {
                    rt.block_on(async move {
                        let t = Target {
                            channel: super::workload::connect(&base.socket).await?,
                            ..base
                        };
                        for _ in 0..WARM_UP_CALLS {
                            time_call(&t, ScaleOp::Version, "", "").await?;
                        }
                        let mut times = Vec::with_capacity(samples);
                        for k in 0..samples {
                            let (pod, ctr) = &objects[k % objects.len()];
                            times.push(time_call(&t, op, pod, ctr).await?);
                        }
                        Ok(times)
                    })
                });
            let _ = tx.send(out);
        })
        .map_err(|source| BenchError::Io {
            what: "start the sampling client's thread".into(),
            source,
        })?;
    rx.await.unwrap_or_else(|_| {
        Err(BenchError::Usage(format!(
            "{name}: the sampling client's thread ended without an answer"
        )))
    })
}

/// One call, timed until its answer was in and until it was decoded; a
/// failed call fails the run (every object is running).
async fn time_call(t: &Target, op: ScaleOp, pod: &str, ctr: &str) -> Result<CallTimes, BenchError> {
    const SERVICE: &str = "/runtime.v1.RuntimeService/";
    let path = format!("{SERVICE}{}", op.name());
    let start = Instant::now();
    let answer = match op {
        ScaleOp::ListPodSandbox => {
            raw_call(t, &path, cri::ListPodSandboxRequest { filter: None }).await
        }
        ScaleOp::ListContainers => {
            raw_call(t, &path, cri::ListContainersRequest { filter: None }).await
        }
        ScaleOp::ListContainerStats => {
            raw_call(t, &path, cri::ListContainerStatsRequest { filter: None }).await
        }
        ScaleOp::ListPodSandboxStats => {
            raw_call(t, &path, cri::ListPodSandboxStatsRequest { filter: None }).await
        }
        ScaleOp::PodSandboxStatus => {
            let req = cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.into(),
                verbose: false,
            };
            raw_call(t, &path, req).await
        }
        ScaleOp::ContainerStatus => {
            let req = cri::ContainerStatusRequest {
                container_id: ctr.into(),
                verbose: false,
            };
            raw_call(t, &path, req).await
        }
        ScaleOp::Version => {
            let req = cri::VersionRequest {
                version: "v1".into(),
            };
            raw_call(t, &path, req).await
        }
    };
    let answered = start.elapsed();
    let res = answer.and_then(|bytes| decode_answer(op, bytes));
    let decoded = start.elapsed();
    let object = match op {
        ScaleOp::PodSandboxStatus => pod,
        ScaleOp::ContainerStatus => ctr,
        _ => "runtime",
    };
    res.map_err(|status| BenchError::Rpc {
        runtime: t.name,
        op: op.name(),
        object: object.into(),
        status,
    })?;
    Ok(CallTimes { answered, decoded })
}

/// Sends `req` as a unary call to `path` and returns the answer's bytes,
/// not decoded: the generated client decodes inside the call, and its time
/// would then be the client's too.
async fn raw_call<Req>(t: &Target, path: &str, req: Req) -> Result<bytes::Bytes, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
{
    let path = http::uri::PathAndQuery::try_from(path)
        .map_err(|e| tonic::Status::internal(format!("bad method path {path:?}: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(t.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("the channel is not ready: {e}")))?;
    grpc.unary(tonic::Request::new(req), path, RawCodec::<Req>::default())
        .await
        .map(tonic::Response::into_inner)
}

/// Decodes an answer into the message the generated client would have
/// returned, as kubelet does.
fn decode_answer(op: ScaleOp, bytes: bytes::Bytes) -> Result<usize, tonic::Status> {
    use prost::Message;
    match op {
        ScaleOp::ListPodSandbox => {
            cri::ListPodSandboxResponse::decode(bytes).map(|r| r.items.len())
        }
        ScaleOp::ListContainers => {
            cri::ListContainersResponse::decode(bytes).map(|r| r.containers.len())
        }
        ScaleOp::ListContainerStats => {
            cri::ListContainerStatsResponse::decode(bytes).map(|r| r.stats.len())
        }
        ScaleOp::ListPodSandboxStats => {
            cri::ListPodSandboxStatsResponse::decode(bytes).map(|r| r.stats.len())
        }
        ScaleOp::PodSandboxStatus => cri::PodSandboxStatusResponse::decode(bytes).map(|_| 1),
        ScaleOp::ContainerStatus => cri::ContainerStatusResponse::decode(bytes).map(|_| 1),
        ScaleOp::Version => cri::VersionResponse::decode(bytes).map(|_| 1),
    }
    .map_err(|e| tonic::Status::internal(format!("undecodable {} answer: {e}", op.name())))
}

/// Requests encoded by prost, answers kept as the bytes that came.
struct RawCodec<Req>(std::marker::PhantomData<fn() -> Req>);

impl<Req> Default for RawCodec<Req> {
    fn default() -> Self {
        RawCodec(std::marker::PhantomData)
    }
}

impl<Req> tonic::codec::Codec for RawCodec<Req>
where
    Req: prost::Message + Send + 'static,
{
    type Encode = Req;
    type Decode = bytes::Bytes;
    type Encoder = tonic_prost::ProstEncoder<Req>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

struct RawDecoder;

impl tonic::codec::Decoder for RawDecoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_take_turns_going_first() {
        assert_eq!(turns(2, 0), vec![0, 1]);
        assert_eq!(turns(2, 1), vec![1, 0]);
        assert_eq!(turns(2, 2), vec![0, 1]);
        assert_eq!(turns(1, 1), vec![0]);
    }

    fn step(pods: usize, ms: f64, pss: u64) -> ScaleStep {
        let s = Summary {
            count: 10,
            median_ms: ms,
            p90_ms: ms,
            p99_ms: ms * 2.0,
            max_ms: ms * 2.0,
        };
        // The answer is in at half the decoded time.
        let answered = Summary {
            median_ms: ms / 2.0,
            p90_ms: ms / 2.0,
            p99_ms: ms,
            max_ms: ms,
            ..s
        };
        ScaleStep {
            pods,
            ops: ScaleOp::ALL.iter().map(|o| (o.name(), Some(s))).collect(),
            answered: ScaleOp::ALL
                .iter()
                .map(|o| (o.name(), Some(answered)))
                .collect(),
            pod_to_running: Some(s),
            cycle: CYCLE_OPS.iter().map(|o| (o.name(), Some(s))).collect(),
            daemon: Memory {
                processes: 1,
                rss_kib: 10_000,
                pss_kib: 8_000,
            },
            helpers: Memory::default(),
            per_pod: Memory {
                processes: pods,
                rss_kib: pss * 2,
                pss_kib: pss,
            },
        }
    }

    fn runtime(name: &str, steps: Vec<ScaleStep>) -> ScaleRuntime {
        ScaleRuntime {
            name: name.into(),
            version: "v".into(),
            per_pod_processes: "p".into(),
            daemon_at_start: Memory::default(),
            growth: growth(&steps),
            fitted_exponent: fitted_exponents(&steps),
            pss_per_extra_pod_kib: pss_per_extra_pod(&steps),
            steps,
        }
    }

    #[test]
    fn growth_exponent_and_slope() {
        // Linear: 10x the pods, 10x the time.
        let g = growth(&[step(10, 1.0, 0), step(100, 10.0, 0)]);
        assert_eq!(g.len(), 1);
        let e = g[0].exponent["ListPodSandbox"].expect("exponent");
        assert!((e - 1.0).abs() < 1e-9, "{e}");
        assert_eq!(g[0].ms_per_100_pods["ListPodSandbox"], Some(10.0));
        // Quadratic: 10x the pods, 100x the time.
        let g = growth(&[step(10, 1.0, 0), step(100, 100.0, 0)]);
        assert!((g[0].exponent["ContainerStatus"].expect("e") - 2.0).abs() < 1e-9);
        // Flat.
        let g = growth(&[step(10, 3.0, 0), step(100, 3.0, 0), step(250, 3.0, 0)]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].exponent["ListContainers"], Some(0.0));
        // No growth from zero pods, none without samples.
        assert!(growth(&[step(0, 1.0, 0), step(10, 2.0, 0)]).is_empty());
        let mut empty = step(100, 1.0, 0);
        empty.ops.insert("ListContainers", None);
        let g = growth(&[step(10, 1.0, 0), empty]);
        assert_eq!(g[0].exponent["ListContainers"], None);
    }

    #[test]
    fn fitted_exponent_over_all_sizes() {
        // Linear at every size: exponent 1.
        let f = fitted_exponents(&[step(10, 1.0, 0), step(100, 10.0, 0), step(250, 25.0, 0)]);
        let e = f["ListPodSandboxStats"].expect("exponent");
        assert!((e - 1.0).abs() < 1e-9, "{e}");
        // Quadratic.
        let f = fitted_exponents(&[step(10, 1.0, 0), step(20, 4.0, 0), step(40, 16.0, 0)]);
        assert!((f["ListContainers"].expect("e") - 2.0).abs() < 1e-9);
        // One noisy size moves the fit less than it moves its pair: the
        // 100 -> 250 pair alone says 1.44 here, the fit over four sizes
        // 1.11.
        let steps = [
            step(10, 1.0, 0),
            step(50, 5.0, 0),
            step(100, 10.0, 0),
            step(250, 37.5, 0),
        ];
        let pair = growth(&steps)[2].exponent["ListPodSandbox"].expect("pair");
        let fit = fitted_exponents(&steps)["ListPodSandbox"].expect("fit");
        assert!(
            pair > 1.4 && fit < 1.2 && fit > 1.0,
            "pair {pair}, fit {fit}"
        );
        // Too few sizes, zero-pod steps and missing figures give none.
        assert_eq!(
            fitted_exponents(&[step(10, 1.0, 0), step(100, 10.0, 0)])["ListContainers"],
            None
        );
        assert_eq!(
            fitted_exponents(&[step(0, 1.0, 0), step(10, 1.0, 0), step(100, 10.0, 0)])["ListContainers"],
            None
        );
        let mut empty = step(100, 1.0, 0);
        empty.ops.insert("ListContainers", None);
        let f = fitted_exponents(&[step(10, 1.0, 0), empty, step(250, 25.0, 0)]);
        assert_eq!(f["ListContainers"], None);
        assert!(f["ListPodSandbox"].is_some());
    }

    #[test]
    fn answers_decode_into_the_calls_messages() {
        use prost::Message;
        let list = cri::ListContainersResponse {
            containers: vec![cri::Container::default(), cri::Container::default()],
        };
        let bytes = bytes::Bytes::from(list.encode_to_vec());
        assert_eq!(
            decode_answer(ScaleOp::ListContainers, bytes).expect("decodes"),
            2
        );
        let status = cri::PodSandboxStatusResponse::default();
        let bytes = bytes::Bytes::from(status.encode_to_vec());
        assert_eq!(
            decode_answer(ScaleOp::PodSandboxStatus, bytes).expect("decodes"),
            1
        );
        // Bytes that are no such message fail the call, naming it.
        let err = decode_answer(
            ScaleOp::ListPodSandboxStats,
            bytes::Bytes::from_static(&[0xff]),
        )
        .expect_err("not a message");
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(
            err.message()
                .contains("undecodable ListPodSandboxStats answer"),
            "{err}"
        );
    }

    #[test]
    fn cycle_summaries_per_call() {
        let ms = Duration::from_millis;
        let timed = [
            (Op::CreateContainer, ms(4)),
            (Op::RunPodSandbox, ms(10)),
            (Op::CreateContainer, ms(2)),
            (Op::PullImage, ms(99)),
        ];
        let s = cycle_summaries(&timed);
        assert_eq!(s.len(), CYCLE_OPS.len());
        let create = s["CreateContainer"].expect("create timed");
        assert_eq!(create.count, 2);
        assert_eq!(s["RunPodSandbox"].expect("run").count, 1);
        assert_eq!(s["StartContainer"], None);
        assert!(!s.contains_key("PullImage"));
    }

    #[test]
    fn memory_per_extra_pod() {
        let v = pss_per_extra_pod(&[step(10, 1.0, 5_000), step(100, 1.0, 50_000)]);
        assert_eq!(v, vec![(10, 100, 500.0)]);
    }

    #[test]
    fn ratios_by_size_and_the_table() {
        let a = runtime("capcri", vec![step(10, 1.0, 1_000), step(100, 2.0, 10_000)]);
        let b = runtime(
            "containerd",
            vec![step(10, 4.0, 100_000), step(100, 20.0, 1_000_000)],
        );
        let r = ratios(&a, &b);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].median["ListPodSandboxStats"], Some(4.0));
        assert_eq!(r[1].p99["ContainerStatus"], Some(10.0));
        // The same ratios of the times until the answer was in.
        assert_eq!(r[1].answered_median["ListContainers"], Some(10.0));
        assert_eq!(r[0].answered_p99["ListPodSandbox"], Some(4.0));
        assert_eq!(r[0].total_pss, Some(108_000.0 / 9_000.0));
        let report = ScaleReport {
            date: "2026-01-01T00:00:00Z".into(),
            host: super::super::report::Host {
                cpus: 2,
                kernel: "6.1".into(),
                cgroup_v1_unmounted: Vec::new(),
            },
            command: vec!["capcri-bench".into(), "--scale".into(), "10,100".into()],
            registry: "r:1".into(),
            container_image: "busybox".into(),
            sizes: vec![10, 100],
            samples: 10,
            runtimes: vec![a, b],
            ratios: r,
            notes: vec![],
        };
        let t = render(&report);
        for op in ScaleOp::ALL {
            assert!(t.contains(op.name()), "{op:?} missing:\n{t}");
        }
        assert!(t.contains("10.0x"), "{t}");
        assert!(t.contains("10 -> 100 pods"), "{t}");
        assert!(
            t.contains("the same calls until the answer was in, before the client decoded it"),
            "{t}"
        );
        // One more pod's life at each size, with its ratio (20 / 2 ms).
        assert!(t.contains("one more pod at 100 pods"), "{t}");
        assert_eq!(report.ratios[1].cycle_median["CreateContainer"], Some(10.0));
        assert!(
            t.lines()
                .any(|l| l.starts_with("CreateContainer") && l.contains("10.00x")),
            "{t}"
        );
        let json = serde_json::to_value(&report).expect("JSON");
        assert_eq!(json["runtimes"][0]["steps"][1]["pods"], 100);
        assert_eq!(
            json["runtimes"][0]["steps"][1]["answered"]["ListContainers"]["median_ms"],
            1.0
        );
        assert_eq!(
            json["runtimes"][1]["steps"][0]["ops"]["ListPodSandbox"]["median_ms"],
            4.0
        );
        // From three sizes on, the exponent fitted over all of them.
        let mut report = report;
        report.sizes = vec![10, 100, 250];
        report.runtimes = vec![runtime(
            "capcri",
            vec![step(10, 1.0, 0), step(100, 10.0, 0), step(250, 25.0, 0)],
        )];
        report.ratios = Vec::new();
        let t = render(&report);
        assert!(t.contains("capcri over all 3 sizes"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.trim_start().starts_with("ListPodSandboxStats")
                    && l.trim_end().ends_with("exponent   1.00")),
            "{t}"
        );
        let json = serde_json::to_value(&report).expect("JSON");
        let e = json["runtimes"][0]["fitted_exponent"]["ListContainers"]
            .as_f64()
            .expect("fitted exponent in the JSON");
        assert!((e - 1.0).abs() < 1e-9, "{e}");
    }
}
