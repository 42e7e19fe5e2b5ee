//! Timing samples and their summaries: pure, no clocks, no I/O.
//!
//! Percentiles use the nearest-rank rule (the smallest sample with at least
//! p% of the samples at or below it): with 20 samples the p90 is a real
//! measured call, not an interpolation between two.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The measured operations, in the order a pod's life calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Op {
    PullImage,
    RunPodSandbox,
    CreateContainer,
    StartContainer,
    /// CreateContainer and StartContainer of one container, their two
    /// times added: what the "create+start together" compares
    /// (the median of the sums, not the sum of the medians).
    CreateAndStart,
    /// RunPodSandbox sent until ContainerStatus reports the container running.
    PodToRunning,
    ExecSync,
    StopContainer,
    RemoveContainer,
    StopPodSandbox,
    RemovePodSandbox,
    /// ContainerStatus and PodSandboxStatus sent while at least one pod of
    /// the round is between RunPodSandbox and running.
    StatusWhileCreating,
    /// ListContainers and ListPodSandbox, likewise.
    ListWhileCreating,
    /// StartContainer of a container on capcri's direct exec path.
    StartDirect,
    /// StartContainer of a container a policy puts on the dmz trampoline.
    StartDmz,
}

impl Op {
    pub const ALL: [Op; 15] = [
        Op::PullImage,
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
        Op::StatusWhileCreating,
        Op::ListWhileCreating,
        Op::StartDirect,
        Op::StartDmz,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::PullImage => "PullImage",
            Op::RunPodSandbox => "RunPodSandbox",
            Op::CreateContainer => "CreateContainer",
            Op::StartContainer => "StartContainer",
            Op::CreateAndStart => "create+start",
            Op::PodToRunning => "pod-to-running",
            Op::ExecSync => "ExecSync",
            Op::StopContainer => "StopContainer",
            Op::RemoveContainer => "RemoveContainer",
            Op::StopPodSandbox => "StopPodSandbox",
            Op::RemovePodSandbox => "RemovePodSandbox",
            Op::StatusWhileCreating => "status|creating",
            Op::ListWhileCreating => "list|creating",
            Op::StartDirect => "Start direct",
            Op::StartDmz => "Start dmz",
        }
    }
}

/// Count, median, p90, p99 and max of one operation, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Per call named in `names`: containerd's figure over capcri's (`pick`
/// says which: median, p99), above 1 when capcri is faster; None where
/// either runtime has no figure or capcri's is zero.
pub fn ratios_by_call(
    names: impl IntoIterator<Item = &'static str>,
    capcri: &BTreeMap<&'static str, Option<Summary>>,
    containerd: &BTreeMap<&'static str, Option<Summary>>,
    pick: fn(&Summary) -> f64,
) -> BTreeMap<&'static str, Option<f64>> {
    names
        .into_iter()
        .map(|name| {
            let r = match (capcri.get(name), containerd.get(name)) {
                (Some(Some(a)), Some(Some(b))) if pick(a) > 0.0 => Some(pick(b) / pick(a)),
                _ => None,
            };
            (name, r)
        })
        .collect()
}

/// Nearest-rank percentile of sorted samples; `p` in (0, 100].
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// None for no samples: an operation never measured has no median.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Some(Summary {
        count: ms.len(),
        median_ms: nearest_rank(&ms, 50.0),
        p90_ms: nearest_rank(&ms, 90.0),
        p99_ms: nearest_rank(&ms, 99.0),
        max_ms: ms[ms.len() - 1],
    })
}

/// The samples of one runtime at one concurrency.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    by_op: BTreeMap<Op, Vec<Duration>>,
}

impl Samples {
    pub fn add(&mut self, op: Op, d: Duration) {
        self.by_op.entry(op).or_default().push(d);
    }

    pub fn extend(&mut self, items: impl IntoIterator<Item = (Op, Duration)>) {
        for (op, d) in items {
            self.add(op, d);
        }
    }

    /// Summaries keyed by the operation's display name, every op present.
    pub fn summaries(&self) -> BTreeMap<&'static str, Option<Summary>> {
        Op::ALL
            .iter()
            .map(|op| {
                (
                    op.name(),
                    summarize(self.by_op.get(op).map(Vec::as_slice).unwrap_or(&[])),
                )
            })
            .collect()
    }

    pub fn summary(&self, op: Op) -> Option<Summary> {
        summarize(self.by_op.get(&op).map(Vec::as_slice).unwrap_or(&[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_both_figures_and_a_nonzero_capcri_one() {
        let s = |median_ms: f64| Summary {
            count: 1,
            median_ms,
            p90_ms: median_ms,
            p99_ms: median_ms * 3.0,
            max_ms: median_ms * 3.0,
        };
        let capcri = BTreeMap::from([("a", Some(s(2.0))), ("b", Some(s(0.0))), ("c", None)]);
        let containerd = BTreeMap::from([
            ("a", Some(s(8.0))),
            ("b", Some(s(1.0))),
            ("c", Some(s(1.0))),
        ]);
        let r = ratios_by_call(["a", "b", "c", "d"], &capcri, &containerd, |s| s.median_ms);
        assert_eq!(r["a"], Some(4.0));
        assert_eq!((r["b"], r["c"], r["d"]), (None, None, None));
        let p99 = ratios_by_call(["a"], &capcri, &containerd, |s| s.p99_ms);
        assert_eq!(p99["a"], Some(4.0));
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    /// Input samples (ms), then the expected count, median, p90 and max.
    type Case<'a> = (&'a [u64], (usize, f64, f64, f64));

    #[test]
    fn nearest_rank_percentiles() {
        let cases: &[Case] = &[
            (&[5], (1, 5.0, 5.0, 5.0)),
            (&[1, 2], (2, 1.0, 2.0, 2.0)),
            (&[3, 1, 2], (3, 2.0, 3.0, 3.0)),
            (&[10, 1, 9, 2, 8, 3, 7, 4, 6, 5], (10, 5.0, 9.0, 10.0)),
            (
                &[
                    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 100,
                ],
                (20, 10.0, 18.0, 100.0),
            ),
        ];
        for (input, (count, median, p90, max)) in cases {
            let s = summarize(&ms(input)).expect("samples");
            assert_eq!(
                (s.count, s.median_ms, s.p90_ms, s.max_ms),
                (*count, *median, *p90, *max),
                "{input:?}"
            );
            // With fewer than 100 samples the p99 is the largest one.
            assert_eq!(s.p99_ms, *max, "{input:?}");
        }
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(summarize(&[]), None);
        let s = Samples::default();
        let all = s.summaries();
        assert_eq!(all.len(), Op::ALL.len());
        assert!(all.values().all(Option::is_none));
    }

    #[test]
    fn samples_group_by_op() {
        let mut s = Samples::default();
        s.extend([
            (Op::ExecSync, Duration::from_millis(4)),
            (Op::ExecSync, Duration::from_millis(2)),
            (Op::PullImage, Duration::from_millis(30)),
        ]);
        assert_eq!(s.summary(Op::ExecSync).map(|x| x.count), Some(2));
        assert_eq!(s.summary(Op::PullImage).map(|x| x.max_ms), Some(30.0));
        assert_eq!(s.summary(Op::StopContainer), None);
    }
}
