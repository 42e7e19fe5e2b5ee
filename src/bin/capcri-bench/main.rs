//! `capcri-bench`: capcri and containerd side by side, driven through the
//! CRI like kubelet drives them, with per-call latencies and memory.
//!
//! A binary of its own, linked against the library: the daemon and every
//! pod monitor map the `capcri` binary, which holds none of this.
//!
//! Both daemons run at once from one temporary directory, against the same
//! images in the same local registry; each iteration runs capcri's round
//! and then containerd's (A B A B ...), so drift of the machine (page
//! cache, CPU frequency, the other tenants of 2 shared cores) hits both.

mod daemons;
pub mod procfs;
pub mod pull;
pub mod report;
pub mod scale;
pub mod stats;
mod workload;

use daemons::Workspace;
use procfs::PerPodProcess;
use report::{Host, MemoryReport, MemoryStep, Phase, Report, RuntimeReport};
use stats::{Op, Samples};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use workload::Target;

/// Held by the tests that start a child of the test process and by the
/// one that counts its children: the test harness runs them in parallel
/// threads of one process.
#[cfg(test)]
static CHILD_PROCESSES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `capcri-bench`'s command line: the flags of [`BenchArgs`].
#[derive(clap::Parser)]
#[command(
    name = "capcri-bench",
    version,
    about = "Benchmark capcri and containerd side by side through the CRI (as root)"
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    keep_freed_heap();
    run(<Cli as clap::Parser>::parse().args)
}

/// The bench keeps what its allocator frees instead of giving it back to
/// the kernel after each call.
///
/// With glibc's defaults (trim above 128 KiB of free top, adaptive mmap
/// threshold), the sampling client's arena gave back the ~150 KiB it had
/// just used to decode each large answer (`strace`: one
/// `madvise(MADV_DONTNEED)` per ListContainers, ListContainerStats or
/// ListPodSandboxStats call at 250 pods), and the next decode faulted the
/// same pages in again. That cost grows with the answer, not with the
/// runtime's work: at 250 pods it was half of ListPodSandboxStats' decode
/// (0.5 of 1.0-1.1 ms, alternated runs) and made its growth from 100 to
/// 250 pods look faster than linear, for both runtimes alike. kubelet, a
/// Go client, keeps its heap between collections; so does the bench now.
fn keep_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // thread starts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 * 1024 * 1024);
        // The largest threshold glibc takes on 64-bit; a fixed one also
        // turns its adaptation off.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    }
}

/// The runtimes the bench knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Capcri,
    Containerd,
}

impl RuntimeKind {
    fn name(self) -> &'static str {
        match self {
            RuntimeKind::Capcri => "capcri",
            RuntimeKind::Containerd => "containerd",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Pod cycles per runtime and concurrency [default: 20; 3 with --quick]
    #[arg(long)]
    pub iterations: Option<usize>,
    /// The second concurrency measured, besides 1
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Runtimes to start and measure, in round order
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "capcri,containerd"
    )]
    pub runtimes: Vec<RuntimeKind>,
    /// The capcri binary to serve [default: `capcri` beside this binary]
    #[arg(long)]
    pub capcri_bin: Option<PathBuf>,
    /// The containerd binary (1.6, with runc and containerd-shim-runc-v2 in PATH)
    #[arg(long, default_value = "containerd")]
    pub containerd_bin: PathBuf,
    /// Local plain-HTTP registry holding the test images
    #[arg(long, env = "CAPCRI_TEST_REGISTRY", default_value = "127.0.0.1:5000")]
    pub registry: String,
    /// Running pods at which memory is measured [default: 10,50; 2,4 with --quick]
    #[arg(long, value_delimiter = ',')]
    pub pods_for_rss: Option<Vec<usize>>,
    /// A short run: 3 iterations, memory at 2 and 4 pods
    #[arg(long)]
    pub quick: bool,
    /// Scale mode instead of pod cycles: hold each of these counts of
    /// running pods (e.g. 10,100,250) and time the calls kubelet makes all
    /// the time, and memory, at each
    #[arg(long, value_delimiter = ',', conflicts_with = "pull")]
    pub scale: Option<Vec<usize>>,
    /// Samples of each call at each --scale size
    #[arg(long, default_value_t = 50)]
    pub scale_samples: usize,
    /// Pods started at once while growing to a --scale size
    #[arg(long, default_value_t = 4)]
    pub scale_concurrency: usize,
    /// Whole pod cycles timed one at a time at each --scale size, with the
    /// size's pods running (0: none)
    #[arg(long, default_value_t = 10)]
    pub scale_cycles: usize,
    /// Pull mode instead of pod cycles: generate a large image (5 layers,
    /// incompressible and compressible data, gzip and zstd), push it to
    /// --registry and time cold pulls with the daemon's peak RSS
    #[arg(long)]
    pub pull: bool,
    /// Uncompressed size of the --pull image, MiB
    #[arg(long, default_value_t = 1024)]
    pub pull_mib: u64,
    /// Cold pulls per runtime in --pull mode
    #[arg(long, default_value_t = 3)]
    pub pull_iterations: usize,
    /// Also write the results as JSON to this file
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// capcri's --log-level (capcri=debug gives per-step timestamps)
    #[arg(long, default_value = "warn")]
    pub capcri_log_level: String,
    /// Copy the daemons' logs into this directory at the end
    #[arg(long)]
    pub logs_dir: Option<PathBuf>,
    /// Pods share one PID namespace (`shareProcessNamespace: true`); by
    /// default each container has its own, as kubelet asks for every pod
    /// that does not set it
    #[arg(long)]
    pub share_pid: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}; install it or pass its path")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited early ({status}); its log ends with:\n{log_tail}")]
    DaemonExited {
        name: &'static str,
        status: String,
        log_tail: String,
    },
    #[error("{name} was not ready after {secs}s; its log ends with:\n{log_tail}")]
    NotReady {
        name: &'static str,
        secs: u64,
        log_tail: String,
    },
    #[error("cannot connect to the CRI socket {socket}: {source}")]
    Connect {
        socket: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{runtime}: {op} of {object} failed: {} ({:?}); see the daemon log (--logs-dir)", status.message(), status.code())]
    Rpc {
        runtime: &'static str,
        op: &'static str,
        object: String,
        status: tonic::Status,
    },
    #[error(
        "{runtime}: container {container} did not reach RUNNING within 30s after StartContainer"
    )]
    NeverRunning {
        runtime: &'static str,
        container: String,
    },
    #[error("{runtime}: ExecSync `true` in {container} exited {exit_code}: {stderr}")]
    ExecFailed {
        runtime: &'static str,
        container: String,
        exit_code: i32,
        stderr: String,
    },
    #[error("a bench task failed to run: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot encode the JSON report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("interrupted; everything started was cleaned up")]
    Interrupted,
}

/// What one run measures.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Pod cycles at two concurrencies and memory (the default).
    Cycles,
    Scale(scale::ScaleSettings),
    Pull(pull::PullSettings),
}

/// The resolved run parameters.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub iterations: usize,
    pub concurrency: Vec<usize>,
    pub runtimes: Vec<RuntimeKind>,
    pub capcri_bin: PathBuf,
    pub containerd_bin: PathBuf,
    pub registry: String,
    pub pods_for_rss: Vec<usize>,
    pub json: Option<PathBuf>,
    pub capcri_log_level: String,
    pub logs_dir: Option<PathBuf>,
    pub share_pid: bool,
}

/// Single-layer busybox images of the test registry, one per concurrent
/// worker, so concurrent cold pulls never remove each other's image.
pub const PULL_IMAGES: [&str; 5] = [
    "docker/library/busybox:1-glibc",
    "docker/library/busybox:1.35.0-glibc",
    "docker/library/busybox:1",
    "docker/library/busybox:1-musl",
    "docker/library/busybox:1-uclibc",
];
pub const CONTAINER_IMAGE: &str = "e2e-test-images/busybox:1.29-2";

impl Settings {
    /// Explicit flags win over --quick, which wins over the defaults.
    pub fn from_args(a: BenchArgs) -> Result<Settings, BenchError> {
        let iterations = a.iterations.unwrap_or(if a.quick { 3 } else { 20 });
        let mut pods = a
            .pods_for_rss
            .unwrap_or_else(|| if a.quick { vec![2, 4] } else { vec![10, 50] });
        pods.sort_unstable();
        pods.dedup();
        pods.retain(|&p| p > 0);
        if iterations == 0 {
            return Err(BenchError::Usage("--iterations must be at least 1".into()));
        }
        if a.concurrency == 0 {
            return Err(BenchError::Usage("--concurrency must be at least 1".into()));
        }
        let mut runtimes = a.runtimes;
        runtimes.dedup();
        if runtimes.is_empty() {
            return Err(BenchError::Usage(
                "--runtimes names none: use capcri, containerd or both".into(),
            ));
        }
        let capcri_bin = match a.capcri_bin {
            Some(p) => p,
            None => std::env::current_exe()
                .map(|exe| exe.with_file_name("capcri"))
                .map_err(|source| BenchError::Io {
                    what: "find the capcri binary beside capcri-bench (pass --capcri-bin)".into(),
                    source,
                })?,
        };
        let registry = a.registry.trim().trim_end_matches('/').to_string();
        if registry.is_empty() || registry.contains('/') {
            return Err(BenchError::Usage(format!(
                "--registry {registry:?} is not HOST:PORT, e.g. 127.0.0.1:5000"
            )));
        }
        let mut concurrency = vec![1, a.concurrency];
        concurrency.dedup();
        let mode = if let Some(mut sizes) = a.scale {
            sizes.sort_unstable();
            sizes.dedup();
            if sizes.is_empty() || sizes[0] == 0 {
                return Err(BenchError::Usage(
                    "--scale wants pod counts above zero, e.g. --scale 10,100,250".into(),
                ));
            }
            if a.scale_samples == 0 || a.scale_concurrency == 0 {
                return Err(BenchError::Usage(
                    "--scale-samples and --scale-concurrency must be at least 1".into(),
                ));
            }
            Mode::Scale(scale::ScaleSettings {
                sizes,
                samples: a.scale_samples,
                concurrency: a.scale_concurrency,
                cycles: a.scale_cycles,
            })
        } else if a.pull {
            if a.pull_mib < 5 || a.pull_iterations == 0 {
                return Err(BenchError::Usage(
                    "--pull-mib must be at least 5 (one MiB per layer) and --pull-iterations at least 1".into(),
                ));
            }
            Mode::Pull(pull::PullSettings {
                mib: a.pull_mib,
                iterations: a.pull_iterations,
            })
        } else {
            Mode::Cycles
        };
        Ok(Settings {
            mode,
            iterations,
            concurrency,
            runtimes,
            capcri_bin,
            containerd_bin: a.containerd_bin,
            registry,
            pods_for_rss: pods,
            json: a.json,
            capcri_log_level: a.capcri_log_level,
            logs_dir: a.logs_dir,
            share_pid: a.share_pid,
        })
    }

    fn container_image(&self) -> String {
        format!("{}/{CONTAINER_IMAGE}", self.registry)
    }

    fn pull_images(&self) -> Vec<String> {
        PULL_IMAGES
            .iter()
            .map(|i| format!("{}/{i}", self.registry))
            .collect()
    }
}

/// Entry point of `capcri-bench`.
fn run(args: BenchArgs) -> ExitCode {
    let settings = match Settings::from_args(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("capcri-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capcri-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_bench(&settings)) {
        Ok(output) => {
            print!("{}", output.render());
            if let Some(path) = &settings.json {
                let written = output.to_json().map_err(BenchError::from).and_then(|j| {
                    std::fs::write(path, j + "\n").map_err(|source| BenchError::Io {
                        what: format!("write {}", path.display()),
                        source,
                    })
                });
                if let Err(e) = written {
                    eprintln!("capcri-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("capcri-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The results of one run, by mode.
pub enum Output {
    Cycles(Report),
    Scale(scale::ScaleReport),
    Pull(pull::PullReport),
}

impl Output {
    fn render(&self) -> String {
        match self {
            Output::Cycles(r) => report::render(r),
            Output::Scale(r) => scale::render(r),
            Output::Pull(r) => pull::render(r),
        }
    }

    fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            Output::Cycles(r) => serde_json::to_string_pretty(r),
            Output::Scale(r) => serde_json::to_string_pretty(r),
            Output::Pull(r) => serde_json::to_string_pretty(r),
        }
    }
}

/// The machine the bench ran on.
pub fn host() -> Host {
    Host {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cgroup_v1_unmounted: report::unmounted_v1_controllers(
            &std::fs::read_to_string("/proc/cgroups").unwrap_or_default(),
        ),
    }
}

/// Runs the whole bench; the workspace is cleaned up on every path out.
pub async fn run_bench(s: &Settings) -> Result<Output, BenchError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BenchError::Usage(
            "capcri bench starts real containers: run it as root (hack/bench.sh)".into(),
        ));
    }
    if std::fs::read_link("/proc/self/ns/mnt").ok() == std::fs::read_link("/proc/1/ns/mnt").ok() {
        eprintln!(
            "capcri bench: warning: not in a private mount namespace; hack/bench.sh runs it under `unshare --mount --propagation private`"
        );
    }
    let mut ws = Workspace::new()?;
    let mut targets: Vec<Target> = Vec::new();
    let result = tokio::select! {
        r = async {
            match &s.mode {
                Mode::Cycles => bench_in(&mut ws, s, &mut targets).await.map(Output::Cycles),
                Mode::Scale(sc) => scale::run(&mut ws, s, sc, &mut targets).await.map(Output::Scale),
                Mode::Pull(p) => pull::run(&mut ws, s, p, &mut targets).await.map(Output::Pull),
            }
        } => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
    };
    if result.is_err() {
        for t in &targets {
            let _ = tokio::time::timeout(Duration::from_secs(300), t.remove_all_pods()).await;
        }
    }
    if let Some(dir) = &s.logs_dir
        && let Err(e) = ws.copy_logs(dir)
    {
        eprintln!("capcri-bench: {e}");
    }
    tokio::task::spawn_blocking(move || drop(ws)).await?;
    result
}

/// One runtime under test and what was measured of it.
struct Runner {
    kind: RuntimeKind,
    target: Target,
    daemon_index: usize,
    per_pod: PerPodProcess,
    version: String,
    samples: BTreeMap<usize, Samples>,
    memory_at_start: procfs::Memory,
    pods_named: usize,
}

impl Runner {
    fn next_name(&mut self, tag: &str) -> String {
        self.pods_named += 1;
        format!("{}-{tag}-{}", self.kind.name(), self.pods_named)
    }
}

/// The pause between one runtime's round and the other's.
const TURN_SETTLE: Duration = Duration::from_millis(50);

async fn bench_in(
    ws: &mut Workspace,
    s: &Settings,
    targets: &mut Vec<Target>,
) -> Result<Report, BenchError> {
    let mut runners = Vec::new();
    for &kind in &s.runtimes {
        let r = start_runtime(ws, s, kind).await?;
        targets.push(r.target.clone());
        runners.push(r);
    }
    let container_image = s.container_image();
    let pulls = s.pull_images();
    for r in &mut runners {
        eprintln!("capcri-bench: warming up {}", r.kind.name());
        r.target.pull(&container_image).await?;
        let name = r.next_name("warmup");
        r.target
            .pod_cycle(&name, &container_image, &mut Vec::new(), None)
            .await?;
    }

    for &c in &s.concurrency {
        eprintln!("capcri-bench: concurrency {c}, {} iterations", s.iterations);
        for i in 0..s.iterations {
            let pids: Vec<i32> = runners
                .iter()
                .map(|o| ws.daemons[o.daemon_index].pid())
                .collect();
            for (k, r) in runners.iter_mut().enumerate() {
                // A node runs one runtime: the other one stopped, and the
                // kernel's cgroup lock back in reader mode (one grace
                // period, 6-15 ms here) after what it did last.
                let _others = daemons::Paused::all_but(pids.iter().copied(), k);
                tokio::time::sleep(TURN_SETTLE).await;
                let round = run_round(r, c, i, &container_image, &pulls).await?;
                r.samples.entry(c).or_default().extend(round);
                ws.daemons[r.daemon_index].check_alive()?;
            }
        }
    }

    for r in &mut runners {
        if r.kind == RuntimeKind::Capcri {
            eprintln!("capcri-bench: exec paths of capcri (direct, dmz)");
            let kept = run_exec_paths(r, s.iterations, &container_image).await?;
            r.samples.entry(1).or_default().extend(kept);
        }
    }

    let mut memory = Vec::new();
    for r in &mut runners {
        eprintln!("capcri-bench: memory of {}", r.kind.name());
        let pid = ws.daemons[r.daemon_index].pid();
        memory.push(measure_memory(r, pid, s, &container_image).await?);
    }

    let runtimes: Vec<RuntimeReport> = runners
        .iter()
        .zip(memory)
        .map(|(r, m)| RuntimeReport {
            name: r.kind.name().into(),
            version: r.version.clone(),
            phases: s
                .concurrency
                .iter()
                .map(|&c| Phase {
                    concurrency: c,
                    ops: r.samples.get(&c).cloned().unwrap_or_default().summaries(),
                })
                .collect(),
            memory: Some(m),
        })
        .collect();
    let by_name = |n: &str| runtimes.iter().find(|r| r.name == n);
    let ratios = match (by_name("capcri"), by_name("containerd")) {
        (Some(a), Some(b)) => a
            .phases
            .iter()
            .zip(&b.phases)
            .map(|(pa, pb)| report::ratios(pa, pb))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Report {
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        host: host(),
        command: std::env::args().collect(),
        registry: s.registry.clone(),
        container_image,
        pull_images: pulls
            .iter()
            .take(s.concurrency.iter().copied().max().unwrap_or(1))
            .cloned()
            .collect(),
        iterations: s.iterations,
        concurrency: s.concurrency.clone(),
        runtimes,
        ratios,
        notes: vec![
            daemons::STATE_NOTE.into(),
            "percentiles by nearest rank".into(),
            "PullImage is cold: RemoveImage (untimed) first; at concurrency N worker k pulls the k-th image (at most 5 workers pull)".into(),
            "pod-to-running: RunPodSandbox sent until the first ContainerStatus saying RUNNING".into(),
            "network: each runtime has its own CNI bridge (no gateway, host-local IPAM, /usr/lib/cni plugins): both RunPodSandbox/StopPodSandbox include the veth and bridge work".into(),
            "per-pod processes: capcri's monitors, containerd's shims; containerd's pause processes and the containers themselves are not counted".into(),
            "status|creating, list|creating: PodSandboxStatus+ContainerStatus and ListPodSandbox+ListContainers sent every 5 ms by a probe while at least one pod of the round is between RunPodSandbox and running".into(),
            "Start direct, Start dmz: capcri only, StartContainer of pods run one at a time after the rounds, alternating the exec path (a policy puts containers named c-dmz on the dmz trampoline)".into(),
        ],
    })
}

async fn start_runtime(
    ws: &mut Workspace,
    s: &Settings,
    kind: RuntimeKind,
) -> Result<Runner, BenchError> {
    let (socket, index, per_pod, pod_cgroup_parent) = match kind {
        RuntimeKind::Capcri => {
            let parent = ws.cgroup_parent("c");
            let (p, i) = ws.start_capcri(&s.capcri_bin, &s.capcri_log_level, &parent)?;
            let per_pod = PerPodProcess::CapcriMonitor {
                state_dir: p.state_dir().display().to_string(),
            };
            (p.socket(), i, per_pod, String::new())
        }
        RuntimeKind::Containerd => {
            let parent = ws.cgroup_parent("k");
            let (p, i) = ws.start_containerd(&s.containerd_bin, &s.registry)?;
            let per_pod = PerPodProcess::ContainerdShim {
                socket: p.socket().display().to_string(),
            };
            (p.socket(), i, per_pod, parent)
        }
    };
    ws.daemons[index].wait_for_socket(Duration::from_secs(30))?;
    let channel = workload::connect(&socket).await?;
    let target = Target {
        name: kind.name(),
        channel,
        socket: socket.clone(),
        pod_cgroup_parent,
        log_root: ws.path().join(format!("logs-{}", kind.name())),
        share_pid: s.share_pid,
    };
    // The socket exists before every plugin is up (containerd's CRI plugin
    // and its CNI config load come later): wait for Status to say ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut unmet = String::new();
    let version = loop {
        ws.daemons[index].check_alive()?;
        if let Ok(v) = target.version().await {
            match target.ready(kind == RuntimeKind::Containerd).await {
                Ok(Ok(())) => break v,
                Ok(Err(why)) => unmet = why,
                Err(e) => unmet = e.to_string(),
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::NotReady {
                name: kind.name(),
                secs: 30,
                log_tail: format!(
                    "{}\n(status: {unmet})",
                    daemons::log_tail(&ws.daemons[index].log)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let memory_at_start = procfs::process_memory(ws.daemons[index].pid()).unwrap_or_default();
    Ok(Runner {
        kind,
        target,
        daemon_index: index,
        per_pod,
        version,
        samples: BTreeMap::new(),
        memory_at_start,
        pods_named: 0,
    })
}

/// `c` workers at once, each a cold pull and one pod's whole life.
async fn run_round(
    r: &mut Runner,
    c: usize,
    iteration: usize,
    image: &str,
    pulls: &[String],
) -> Result<Vec<(Op, Duration)>, BenchError> {
    let creating = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (target, creating, stop) = (r.target.clone(), creating.clone(), stop.clone());
        tokio::spawn(async move { target.probe_while_creating(creating, stop).await })
    };
    let mut set = tokio::task::JoinSet::new();
    for k in 0..c {
        let name = r.next_name(&format!("c{c}i{iteration}w{k}"));
        let target = r.target.clone();
        let image = image.to_string();
        let pull = pulls.get(k).cloned();
        let creating = creating.clone();
        set.spawn(async move {
            let mut out = Vec::new();
            if let Some(p) = pull {
                out.push((Op::PullImage, target.pull_cold(&p).await?));
            }
            target
                .pod_cycle(&name, &image, &mut out, Some(&creating))
                .await?;
            Ok::<_, BenchError>(out)
        });
    }
    let mut all = Vec::new();
    let mut failed = None;
    while let Some(res) = set.join_next().await {
        match res.map_err(BenchError::from).and_then(|x| x) {
            Ok(out) => all.extend(out),
            Err(e) => failed = Some(e),
        }
    }
    stop.store(true, Ordering::SeqCst);
    all.extend(prober.await?);
    match failed {
        Some(e) => Err(e),
        None => Ok(all),
    }
}

/// capcri only: `iterations` pods on each exec path, alternating, one at a
/// time; only their StartContainer is kept (as "Start direct" and "Start
/// dmz" at concurrency 1).
async fn run_exec_paths(
    r: &mut Runner,
    iterations: usize,
    image: &str,
) -> Result<Vec<(Op, Duration)>, BenchError> {
    let mut kept = Vec::new();
    for i in 0..iterations {
        for (ctr, op) in [
            ("c", Op::StartDirect),
            (daemons::DMZ_CONTAINER, Op::StartDmz),
        ] {
            let name = r.next_name(&format!("path{i}-{ctr}"));
            let mut out = Vec::new();
            r.target
                .pod_cycle_of(&name, image, ctr, &mut out, None)
                .await?;
            kept.extend(
                out.into_iter()
                    .filter(|(o, _)| *o == Op::StartContainer)
                    .map(|(_, d)| (op, d)),
            );
        }
    }
    Ok(kept)
}

/// Rounds of kubelet's periodic calls before the daemon's memory is read
/// again (the "relist" row).
const RELIST_ROUNDS: u32 = 5;

/// What kubelet sends an idle node, once a second for `rounds` seconds:
/// its relist (pods, containers) and its stats calls (every 10 s in
/// kubelet; here every round).
async fn relist_for(t: &Target, rounds: u32) -> Result<(), tonic::Status> {
    use k8s_cri::v1 as cri;
    let mut rt = t.runtime();
    let mut images = t.images();
    for _ in 0..rounds {
        rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await?;
        rt.list_containers(cri::ListContainersRequest { filter: None })
            .await?;
        rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await?;
        rt.list_container_stats(cri::ListContainerStatsRequest { filter: None })
            .await?;
        images.image_fs_info(cri::ImageFsInfoRequest {}).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Daemon and per-pod memory at 0 pods (and again after [`relist_for`])
/// and at each of `s.pods_for_rss` running pods (one running container
/// each); the pods are removed after.
async fn measure_memory(
    r: &mut Runner,
    daemon_pid: i32,
    s: &Settings,
    image: &str,
) -> Result<MemoryReport, BenchError> {
    let conc = s.concurrency.iter().copied().max().unwrap_or(1);
    let mut running: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    let mut result = Ok(());
    let mut relisting = procfs::Memory::default();
    for &target_pods in std::iter::once(&0).chain(&s.pods_for_rss) {
        while running.len() < target_pods {
            let n = conc.min(target_pods - running.len());
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..n {
                let name = r.next_name("mem");
                let target = r.target.clone();
                let image = image.to_string();
                set.spawn(async move {
                    target
                        .start_pod(&name, &image, "c", &mut Vec::new())
                        .await
                        .map(|(pod, _)| pod)
                });
            }
            while let Some(res) = set.join_next().await {
                match res.map_err(BenchError::from).and_then(|x| x) {
                    Ok(pod) => running.push(pod),
                    Err(e) => result = Err(e),
                }
            }
            if result.is_err() {
                break;
            }
        }
        if result.is_err() {
            break;
        }
        // Let lazily started threads and first log writes settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        steps.push(MemoryStep {
            pods: target_pods,
            daemon: procfs::process_memory(daemon_pid).unwrap_or_default(),
            helpers: procfs::children_memory(daemon_pid, procfs::is_monitor_template),
            per_pod: procfs::per_pod_memory(&r.per_pod),
        });
        if target_pods == 0 {
            match relist_for(&r.target, RELIST_ROUNDS).await {
                Ok(()) => relisting = procfs::process_memory(daemon_pid).unwrap_or_default(),
                Err(status) => {
                    result = Err(BenchError::Rpc {
                        runtime: r.target.name,
                        op: "relist",
                        object: "runtime".into(),
                        status,
                    });
                    break;
                }
            }
        }
    }
    let target = Arc::new(r.target.clone());
    for chunk in running.chunks(conc) {
        let mut set = tokio::task::JoinSet::new();
        for pod in chunk {
            let (t, pod) = (target.clone(), pod.clone());
            set.spawn(async move { t.remove_pod(&pod, &mut Vec::new()).await });
        }
        while let Some(res) = set.join_next().await {
            if let Err(e) = res.map_err(BenchError::from).and_then(|x| x) {
                result = result.and(Err(e));
            }
        }
    }
    result?;
    Ok(MemoryReport {
        per_pod_processes: match r.kind {
            RuntimeKind::Capcri => "capcri monitor (one per pod)".into(),
            RuntimeKind::Containerd => "containerd-shim-runc-v2 (one per pod)".into(),
        },
        daemon_at_start: r.memory_at_start,
        daemon_relisting: relisting,
        per_extra_pod_rss_kib: report::per_extra_pod(&steps, false),
        per_extra_pod_pss_kib: report::per_extra_pod(&steps, true),
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn settings(argv: &[&str]) -> Result<Settings, BenchError> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .map_err(|e| BenchError::Usage(e.to_string()))?;
        Settings::from_args(cli.args)
    }

    #[test]
    fn defaults_quick_and_explicit_flags() {
        let d = settings(&["--registry", "127.0.0.1:5000"]).expect("defaults");
        assert_eq!(d.iterations, 20);
        assert_eq!(d.concurrency, vec![1, 2]);
        assert_eq!(d.pods_for_rss, vec![10, 50]);
        assert_eq!(
            d.runtimes,
            vec![RuntimeKind::Capcri, RuntimeKind::Containerd]
        );
        let q = settings(&["--quick", "--registry", "r:1"]).expect("quick");
        assert_eq!((q.iterations, q.pods_for_rss.clone()), (3, vec![2, 4]));
        let x = settings(&[
            "--quick",
            "--iterations",
            "7",
            "--pods-for-rss",
            "5,1,5",
            "--concurrency",
            "1",
            "--runtimes",
            "containerd",
            "--registry",
            "r:1",
        ])
        .expect("explicit");
        assert_eq!(x.iterations, 7);
        assert_eq!(x.pods_for_rss, vec![1, 5]);
        assert_eq!(x.concurrency, vec![1]);
        assert_eq!(x.runtimes, vec![RuntimeKind::Containerd]);
        assert_eq!(
            x.pull_images()[0],
            "r:1/docker/library/busybox:1-glibc".to_string()
        );
    }

    #[test]
    fn scale_and_pull_modes() {
        let s = settings(&["--scale", "250,10,100,10", "--registry", "r:1"]).expect("scale");
        match s.mode {
            Mode::Scale(sc) => {
                assert_eq!(sc.sizes, vec![10, 100, 250]);
                assert_eq!((sc.samples, sc.concurrency), (50, 4));
            }
            m => panic!("{m:?}"),
        }
        let p = settings(&["--pull", "--pull-mib", "10", "--registry", "r:1"]).expect("pull");
        match p.mode {
            Mode::Pull(p) => assert_eq!((p.mib, p.iterations), (10, 3)),
            m => panic!("{m:?}"),
        }
        assert!(matches!(
            settings(&["--registry", "r:1"]).expect("cycles").mode,
            Mode::Cycles
        ));
    }

    #[test]
    fn bad_flags_are_refused() {
        for argv in [
            &["--scale", "0,10", "--registry", "r:1"][..],
            &["--scale", "10", "--scale-samples", "0", "--registry", "r:1"],
            &["--scale", "10", "--pull", "--registry", "r:1"],
            &["--pull", "--pull-mib", "4", "--registry", "r:1"],
            &["--pull", "--pull-iterations", "0", "--registry", "r:1"],
            &["--iterations", "0", "--registry", "r:1"],
            &["--concurrency", "0", "--registry", "r:1"],
            &["--registry", "r:1/x"],
            &["--runtimes", "crio", "--registry", "r:1"],
        ] {
            assert!(settings(argv).is_err(), "{argv:?}");
        }
    }
}
