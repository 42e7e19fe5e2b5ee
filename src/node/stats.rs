//! ContainerStats, ListContainerStats, PodSandboxStats and
//! ListPodSandboxStats: CPU and memory from where the processes are, the
//! pod's cgroup (kubelet's or capcri's, see `util::cgroup_paths`) and each
//! container's in it, the pod's process count (`pids.current`) and network
//! counters (its network namespace's interfaces), and the size of each
//! container's
//! writable layer (its overlay upper dir, `layer_usage`).
//!
//! kubelet calls the list forms every 10 s for every pod (issue 18: 1,086
//! ms at 100 pods). So a call never waits on a sampling interval (CPU
//! rates come from the previous call's sample, kept here), never walks a
//! writable layer (kept figures, refreshed in the background), answers the
//! list forms from cgroup and network figures read after the previous list
//! call (`Freshness::Kept`), groups containers by pod in one pass (not a scan
//! of every container per pod), and does its file reads in one blocking
//! section rather than one blocking-pool round trip per pod and container,
//! each of which waits for a thread on a loaded 2-core node.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use k8s_cri::v1::{ContainerStatsFilter, PodSandboxStatsFilter};

use crate::container::layer_usage;
pub use crate::container::layer_usage::LayerUsage;
use crate::container::pod_network::{self, NetworkUsage, read_namespaces};
use crate::container::{ContainerRecord, ContainerState, StatsFacts};
use crate::host::{CgroupPath, MemoryUsage};
use crate::node::{Node, NodeError, labels_match};
use crate::pod::{PodSandbox, PodState, PodStatsFacts};
use crate::util::cgroup_paths::PodCgroup;
use crate::util::fast_map::FastMap;
use crate::util::sync::lock;
use crate::util::time::now_nanos;

/// CPU and memory of one cgroup at `timestamp` (unix nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub timestamp: i64,
    /// Cumulative CPU time.
    pub cpu_ns: Option<u64>,
    /// CPU use since the previous sample of the same group, in billionths
    /// of a core; `None` on the first sample (kubelet tolerates that).
    pub nano_cores: Option<u64>,
    pub memory: Option<MemoryUsage>,
    /// Tasks in the group and below (`pids.current`), read with the rest:
    /// ListPodSandboxStats reports it per pod, and reading it inside the
    /// call was a file read per pod per call.
    pub processes: Option<u64>,
}

/// What the stats calls report of a container besides its figures: its
/// CRI attributes, its image, and what the figures are found by. Copied
/// under the table's lock in place of the whole record (command,
/// environment, mounts, capability decision): at 250 pods those copies
/// were a sixth of the daemon's CPU in the list stats calls (`perf record
/// --call-graph dwarf -p <daemon>`, `ContainerRecord::clone`).
#[derive(Debug, Clone)]
pub struct StatsSubject {
    /// Everything but the start time, shared with the record.
    facts: Arc<StatsFacts>,
    pub started_at: i64,
}

impl StatsSubject {
    pub fn of(r: &ContainerRecord) -> StatsSubject {
        StatsSubject {
            facts: r.stats_facts(),
            started_at: r.started_at,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or("")
    }

    pub fn asked_image(&self) -> [&str; 2] {
        [&self.asked_image[0], &self.asked_image[1]]
    }
}

/// The subject's facts read as its own fields.
impl std::ops::Deref for StatsSubject {
    type Target = StatsFacts;
    fn deref(&self) -> &StatsFacts {
        &self.facts
    }
}

/// What the stats calls report of a pod besides its figures, and where
/// its figures are found. Copied under the pod table's lock in place of
/// the whole pod (its full config, DNS, port mappings, policy decision):
/// at 250 pods, cloning and then sorting whole `PodSandbox` values, and
/// cloning their attributes once more for the answer, were a quarter of
/// the daemon's CPU in back-to-back ListPodSandboxStats calls (`perf
/// record -g -p <daemon>`: `PodSandbox::clone`, malloc and free, memmove
/// in the sort). All but its state is now shared with the pod.
#[derive(Debug, Clone)]
pub struct PodStatsSubject {
    facts: Arc<PodStatsFacts>,
    pub state: PodState,
}

impl PodStatsSubject {
    /// `cgroup` gives the pod's cgroup (`Node::pod_cgroup`) the first time.
    pub fn of(pod: &PodSandbox, cgroup: impl FnOnce() -> PodCgroup) -> PodStatsSubject {
        PodStatsSubject {
            facts: pod.stats_facts(cgroup),
            state: pod.state,
        }
    }
}

impl std::ops::Deref for PodStatsSubject {
    type Target = PodStatsFacts;
    fn deref(&self) -> &PodStatsFacts {
        &self.facts
    }
}

#[derive(Debug, Clone)]
pub struct ContainerUsage {
    pub container: StatsSubject,
    pub usage: CgroupUsage,
    pub writable_layer: Option<LayerUsage>,
    /// The filesystem holding the writable layers (CRI `fs_id.mountpoint`).
    pub layer_mountpoint: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PodUsage {
    pub pod: PodStatsSubject,
    pub usage: CgroupUsage,
    pub containers: Vec<ContainerUsage>,
    /// The pod network namespace's interfaces; None for a host-network pod
    /// (its traffic is the node's) or a namespace that cannot be read.
    pub network: Option<NetworkUsage>,
    /// Tasks in the pod's cgroup and below.
    pub process_count: Option<u64>,
}

/// The previous (timestamp, cpu_ns) per cgroup, for `nano_cores`. Keyed,
/// like `kept_samples`, by the cgroup's path as a string: a `Path` hashes
/// component by component, which was 2% of the list stats calls' CPU.
fn cpu_samples() -> &'static Mutex<FastMap<String, (i64, u64)>> {
    static SAMPLES: OnceLock<Mutex<FastMap<String, (i64, u64)>>> = OnceLock::new();
    SAMPLES.get_or_init(Default::default)
}

/// The shortest span a kept CPU sample covers before it is replaced.
const MIN_RATE_WINDOW_NS: i64 = 1_000_000_000;

/// Billionths of a core used between two samples.
pub fn nano_cores(prev: (i64, u64), now: (i64, u64)) -> Option<u64> {
    let dt = now.0.checked_sub(prev.0).filter(|d| *d > 0)?;
    let used = now.1.checked_sub(prev.1)?;
    Some(((used as u128) * 1_000_000_000 / dt as u128) as u64)
}

fn sample(cgroups_path: &str) -> CgroupUsage {
    let group = CgroupPath::new(Path::new(cgroups_path));
    let timestamp = now_nanos();
    if !group.exists() {
        return CgroupUsage {
            timestamp,
            ..Default::default()
        };
    }
    let cpu_ns = group.cpu_usage_ns();
    let nano = cpu_ns.and_then(|cpu| {
        let mut samples = lock(cpu_samples());
        let now = (timestamp, cpu);
        match samples.get(cgroups_path).copied() {
            // Two callers moments apart (ListContainerStats then
            // ListPodSandboxStats) would see the rate of a few
            // milliseconds: the kept sample is replaced once it is
            // `MIN_RATE_WINDOW` old, and rates span at least that.
            Some(prev) if now.0.saturating_sub(prev.0) < MIN_RATE_WINDOW_NS => {
                nano_cores(prev, now)
            }
            prev => {
                samples.insert(cgroups_path.to_string(), now);
                prev.and_then(|p| nano_cores(p, now))
            }
        }
    });
    CgroupUsage {
        timestamp,
        cpu_ns,
        nano_cores: nano,
        memory: group.memory(),
        processes: group.pids_current(),
    }
}

/// How fresh the CPU and memory figures of a call are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Read now: ContainerStats and PodSandboxStats (one object, a few
    /// file reads).
    Now,
    /// The figures the previous list call had read again in the background
    /// (their timestamps say when); read now only for a group or network
    /// namespace seen for the first time. kubelet's list calls, every 10 s for every pod, then
    /// cost a copy instead of a `memory.stat` read per cgroup (~170 µs
    /// each on this host's 6.18 kernel, two per pod): the figures are one
    /// kubelet period old, as cadvisor's (10 s housekeeping) are.
    Kept,
}

/// What the list calls answer from (`Freshness::Kept`), per cgroup.
fn kept_samples() -> &'static Mutex<FastMap<String, CgroupUsage>> {
    static KEPT: OnceLock<Mutex<FastMap<String, CgroupUsage>>> = OnceLock::new();
    KEPT.get_or_init(Default::default)
}

/// What a list call found stale among the figures it answered from, to
/// read again after it (`refresh_kept`).
#[derive(Default)]
struct Stale {
    cgroups: Vec<String>,
    /// Pods' pinned network namespaces.
    pins: Vec<PathBuf>,
}

/// Whether a background read of the kept samples is under way.
static REFRESHING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `cgroup`'s figures as `freshness` asks. With `Kept`, a group whose
/// kept sample is stale (`needs_refresh`) is added to `stale`, for
/// `refresh_kept` after the call.
fn sample_with(cgroup: &str, freshness: Freshness, stale: &mut Stale) -> CgroupUsage {
    if freshness == Freshness::Now {
        return sample(cgroup);
    }
    if let Some(u) = lock(kept_samples()).get(cgroup) {
        if needs_refresh(Some(u), now_nanos()) {
            stale.cgroups.push(cgroup.to_string());
        }
        return u.clone();
    }
    let u = sample(cgroup);
    if needs_refresh(Some(&u), now_nanos()) {
        stale.cgroups.push(cgroup.to_string());
    }
    lock(kept_samples()).insert(cgroup.to_string(), u.clone());
    u
}

/// Whether something done at `at` is less than `MIN_RATE_WINDOW_NS` before
/// `now`. A wall clock set back makes the age negative: that counts as
/// not recent, so nothing waits for the clock to catch up.
fn within_window(at: i64, now: i64) -> bool {
    (0..MIN_RATE_WINDOW_NS).contains(&now.saturating_sub(at))
}

/// Whether a kept sample is worth reading again at `now`: it is older than
/// `MIN_RATE_WINDOW_NS` (or from the future: the clock was set back), or it
/// is a group's first sample, which has a CPU counter but no rate yet (read
/// again at once, so that the next list call has one).
fn needs_refresh(kept: Option<&CgroupUsage>, now: i64) -> bool {
    match kept {
        None => true,
        Some(u) if u.cpu_ns.is_some() && u.nano_cores.is_none() => true,
        Some(u) => !within_window(u.timestamp, now),
    }
}

/// Reads `cgroups` again off the call, for the next list call, on the
/// low-priority background thread; one such read at a time, and only of
/// the groups whose kept sample is stale (`needs_refresh`, which
/// `sample_with` asks as it answers from the sample). Before, every
/// list stats call started a read of every group: a client asking in a
/// tight loop (`capcri-bench --scale 250`, 100 calls in a row) kept the
/// background thread reading 500 cgroups' `memory.stat` without pause,
/// half of the daemon's CPU, and its allocations contended with the
/// calls' for the one malloc arena (`perf record -p`: 15% of the daemon's
/// samples in glibc's arena lock). kubelet, every 10 s, sees no change.
fn refresh_kept(stale: Stale) {
    use std::sync::atomic::Ordering;
    let Stale { cgroups, pins } = stale;
    if (cgroups.is_empty() && pins.is_empty()) || REFRESHING.swap(true, Ordering::AcqRel) {
        return;
    }
    let refresh = move || {
        for c in cgroups {
            let u = sample(&c);
            lock(kept_samples()).insert(c, u);
        }
        if !pins.is_empty() {
            read_namespaces(pins);
        }
        REFRESHING.store(false, Ordering::Release);
    };
    // No thread to be had: read them here (no lock is held).
    if let Err(refresh) = crate::util::background::submit(refresh) {
        refresh();
    }
}

/// The network figures of the namespaces pinned at `pins` as `freshness`
/// asks. With `Kept`: those the latest read found (`pod_network::kept`),
/// read now only for a namespace never read, and a namespace whose figures
/// are older than `MIN_RATE_WINDOW_NS` is added to `stale`, for
/// `refresh_kept` after the call, as the cgroup figures are.
fn networks(
    pins: Vec<PathBuf>,
    freshness: Freshness,
    stale: &mut Stale,
) -> Vec<Option<NetworkUsage>> {
    if freshness == Freshness::Now {
        return read_namespaces(pins);
    }
    let mut kept = pod_network::kept(&pins);
    let unread: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].is_none()).collect();
    if !unread.is_empty() {
        let read = read_namespaces(unread.iter().map(|&i| pins[i].clone()).collect());
        for (i, usage) in unread.into_iter().zip(read) {
            kept[i] = usage;
        }
    }
    stale.pins.extend(stale_networks(pins, &kept, now_nanos()));
    kept
}

/// The pins of `kept` figures read `MIN_RATE_WINDOW_NS` or more before
/// `now` (or after it: the clock was set back). A namespace that could not
/// be read has no figures and was just tried again: not stale.
fn stale_networks(
    pins: Vec<PathBuf>,
    kept: &[Option<NetworkUsage>],
    now: i64,
) -> impl Iterator<Item = PathBuf> {
    pins.into_iter()
        .zip(kept)
        .filter(move |(_, usage)| {
            usage
                .as_ref()
                .is_some_and(|u| !within_window(u.timestamp, now))
        })
        .map(|(pin, _)| pin)
}

/// The containers a pod's stats include: created or running, oldest first.
fn live_by_pod(
    containers: &HashMap<String, ContainerRecord>,
) -> FastMap<String, Vec<StatsSubject>> {
    let mut by_pod: FastMap<String, Vec<StatsSubject>> = FastMap::default();
    for c in containers.values() {
        if matches!(c.state, ContainerState::Created | ContainerState::Running) {
            by_pod
                .entry(c.pod_id.clone())
                .or_default()
                .push(StatsSubject::of(c));
        }
    }
    for list in by_pod.values_mut() {
        list.sort_by_key(|c| c.created_at);
    }
    by_pod
}

impl Node {
    /// The container's cgroup, under its pod's (wherever kubelet or capcri
    /// put it); a container whose pod record is gone is looked for where
    /// capcri's own parent would have put it.
    fn container_cgroup(&self, pod_id: &str, id: &str) -> String {
        self.container_cgroup_of(self.find_pod(pod_id).as_ref(), pod_id, id)
    }

    /// `container_cgroup` with the pod already looked up (`None`: its
    /// record is gone), for callers that look many up under one hold of
    /// the pod table.
    fn container_cgroup_of(&self, pod: Option<&PodSandbox>, pod_id: &str, id: &str) -> String {
        match pod {
            Some(pod) => self.pod_cgroup(pod).container_dir(id),
            None => format!(
                "{}/{}/{}",
                self.cgroups.default_parent.trim_end_matches('/'),
                pod_id,
                id
            ),
        }
    }

    /// One container's figures. Blocking (a few cgroup file reads).
    fn container_usage(
        &self,
        container: StatsSubject,
        cgroup: &str,
        freshness: Freshness,
        stale: &mut Stale,
    ) -> ContainerUsage {
        let usage = sample_with(cgroup, freshness, stale);
        let writable_layer = layer_usage::usage(&container.upper);
        ContainerUsage {
            container,
            usage,
            writable_layer,
            layer_mountpoint: self.config.writable_layers_dir(),
        }
    }

    /// The pods' figures, `network` in the same order. Blocking.
    fn pod_usages(
        &self,
        pods: Vec<PodStatsSubject>,
        mut by_pod: FastMap<String, Vec<StatsSubject>>,
        freshness: Freshness,
        stale: &mut Stale,
    ) -> Vec<PodUsage> {
        let pins: Vec<PathBuf> = pods.iter().filter_map(|p| p.network_pin.clone()).collect();
        let mut networks = networks(pins, freshness, stale).into_iter();
        pods.into_iter()
            .map(|pod| {
                let usage = sample_with(&pod.cgroup.dir, freshness, stale);
                let process_count = usage.processes;
                let network = match &pod.network_pin {
                    None => None,
                    Some(_) => networks.next().flatten(),
                };
                let containers = by_pod
                    .remove(&pod.id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| {
                        let cgroup = pod.cgroup.container_dir(&c.id);
                        self.container_usage(c, &cgroup, freshness, stale)
                    })
                    .collect();
                PodUsage {
                    pod,
                    usage,
                    containers,
                    network,
                    process_count,
                }
            })
            .collect()
    }

    /// Drops the kept CPU samples, layer figures and open network views of
    /// pods and containers that are gone, so the maps stay the size of the
    /// node. At most once
    /// per `MIN_RATE_WINDOW_NS`: it rebuilds every live group's path (a
    /// tenth of the daemon's CPU in back-to-back list stats calls at 250
    /// pods), and in between the maps only keep the groups removed in the
    /// last second.
    fn forget_removed(&self) {
        use std::sync::atomic::{AtomicI64, Ordering};
        static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
        let now = now_nanos();
        let last = LAST.load(Ordering::Acquire);
        if within_window(last, now)
            || LAST
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let (cgroups, uppers, pins): (HashSet<String>, HashSet<PathBuf>, HashSet<PathBuf>) = {
            let containers = self.containers.lock();
            let pods = self.pods.lock();
            let pins = pods.values().filter_map(PodSandbox::network_pin).collect();
            let cgroups = pods
                .values()
                .map(|p| self.pod_cgroup(p).dir)
                .chain(containers.values().filter_map(|c| {
                    pods.get(&c.pod_id)
                        .map(|p| self.pod_cgroup(p).container_dir(&c.id))
                }))
                .collect();
            let uppers = containers
                .values()
                .map(|c| c.writable_dir.join("upper"))
                .collect();
            (cgroups, uppers, pins)
        };
        lock(cpu_samples()).retain(|k, _| cgroups.contains(k));
        lock(kept_samples()).retain(|k, _| cgroups.contains(k));
        layer_usage::retain(&uppers);
        pod_network::retain(&pins);
    }

    pub async fn container_stats(&self, id: &str) -> Result<ContainerUsage, NodeError> {
        let record = StatsSubject::of(&self.container(id)?);
        let cgroup = self.container_cgroup(&record.pod_id, &record.id);
        Ok(crate::util::task::blocking(|| {
            self.container_usage(record, &cgroup, Freshness::Now, &mut Stale::default())
        }))
    }

    /// Stats of the containers that exist now and match the filter; exited
    /// containers have no cgroup any more and report their layer only.
    pub async fn list_container_stats(
        &self,
        filter: Option<&ContainerStatsFilter>,
    ) -> Vec<ContainerUsage> {
        let mut records = self.containers_matching(
            filter.map(|f| (&*f.id, &*f.pod_sandbox_id, &f.label_selector)),
            StatsSubject::of,
        );
        records.sort_by_key(|c| c.created_at);
        // Each container's cgroup under one hold of the pod table, rather
        // than a copy of its pod per container (`container_cgroup`).
        let cgroups: Vec<String> = {
            let pods = self.pods.lock();
            records
                .iter()
                .map(|c| self.container_cgroup_of(pods.get(&c.pod_id), &c.pod_id, &c.id))
                .collect()
        };
        crate::util::task::blocking(|| {
            let mut stale = Stale::default();
            let out = records
                .into_iter()
                .zip(&cgroups)
                .map(|(c, cgroup)| self.container_usage(c, cgroup, Freshness::Kept, &mut stale))
                .collect();
            if filter.is_none() {
                self.forget_removed();
            }
            refresh_kept(stale);
            out
        })
    }

    pub async fn pod_sandbox_stats(&self, id: &str) -> Result<PodUsage, NodeError> {
        let pod = self.pod(id)?;
        let pod = PodStatsSubject::of(&pod, || self.pod_cgroup(&pod));
        let by_pod = live_by_pod(&self.containers.lock());
        crate::util::task::blocking(|| {
            self.pod_usages(vec![pod], by_pod, Freshness::Now, &mut Stale::default())
                .pop()
        })
        .ok_or_else(|| NodeError::Internal(format!("no stats for pod {id}")))
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        filter: Option<&PodSandboxStatsFilter>,
    ) -> Vec<PodUsage> {
        // Sorted as references, then copied: sorting the copies moved
        // whole records about.
        let pods: Vec<PodStatsSubject> = {
            let table = self.pods.lock();
            let mut matching: Vec<&PodSandbox> = table
                .values()
                .filter(|p| {
                    let Some(f) = filter else { return true };
                    (f.id.is_empty() || p.id.starts_with(&f.id))
                        && labels_match(&p.config.labels, &f.label_selector)
                })
                .collect();
            matching.sort_by_key(|p| p.created_at);
            matching
                .into_iter()
                .map(|p| PodStatsSubject::of(p, || self.pod_cgroup(p)))
                .collect()
        };
        let by_pod = live_by_pod(&self.containers.lock());
        crate::util::task::blocking(|| {
            let mut stale = Stale::default();
            let out = self.pod_usages(pods, by_pod, Freshness::Kept, &mut stale);
            if filter.is_none() {
                self.forget_removed();
            }
            refresh_kept(stale);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stale_or_rateless_samples_are_read_again() {
        let now = 10 * MIN_RATE_WINDOW_NS;
        let kept = |age: i64, cpu: Option<u64>, rate: Option<u64>| CgroupUsage {
            timestamp: now - age,
            cpu_ns: cpu,
            nano_cores: rate,
            memory: None,
            processes: None,
        };
        // Never read, or read a window ago or more: read again.
        assert!(needs_refresh(None, now));
        assert!(needs_refresh(
            Some(&kept(MIN_RATE_WINDOW_NS, Some(5), Some(1))),
            now
        ));
        // Read moments ago with a rate: kept as it is.
        assert!(!needs_refresh(Some(&kept(1_000, Some(5), Some(1))), now));
        assert!(!needs_refresh(
            Some(&kept(MIN_RATE_WINDOW_NS - 1, Some(5), Some(0))),
            now
        ));
        // A first sample has a counter but no rate: read again at once.
        assert!(needs_refresh(Some(&kept(1_000, Some(5), None)), now));
        // A group with no counter (gone, unreadable) waits like any other.
        assert!(!needs_refresh(Some(&kept(1_000, None, None)), now));
        // A clock set back: read again, not kept until it catches up.
        assert!(needs_refresh(Some(&kept(-1_000, Some(5), Some(1))), now));
    }

    #[test]
    fn network_figures_a_second_old_are_read_again() {
        let now = 50 * MIN_RATE_WINDOW_NS;
        let read_at = |timestamp| {
            Some(NetworkUsage {
                timestamp,
                ..Default::default()
            })
        };
        let pins: Vec<PathBuf> = ["fresh", "old", "unreadable", "future"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let kept = [
            read_at(now - MIN_RATE_WINDOW_NS + 1),
            read_at(now - MIN_RATE_WINDOW_NS),
            None,
            read_at(now + 1),
        ];
        let stale: Vec<PathBuf> = stale_networks(pins, &kept, now).collect();
        assert_eq!(stale, [PathBuf::from("old"), PathBuf::from("future")]);
    }

    #[test]
    fn nano_cores_from_two_samples() {
        // Half a core: 0.5 s of CPU in 1 s.
        assert_eq!(
            nano_cores((1_000_000_000, 0), (2_000_000_000, 500_000_000)),
            Some(500_000_000)
        );
        // Same timestamp, clock going back or a counter reset: unknown.
        assert_eq!(nano_cores((5, 10), (5, 20)), None);
        assert_eq!(nano_cores((6, 10), (5, 20)), None);
        assert_eq!(nano_cores((1, 30), (2, 20)), None);
    }
}
