//! The node's state as the metrics scrape reads it: pods and containers by
//! state, counted from the tables on every scrape (it cannot drift), and
//! the policy and pull counters.

use super::Node;
use crate::metrics::labels::{CONTAINER_STATES, POD_STATES, container_state, pod_state};
use crate::metrics::{NodeSnapshot, SnapshotSource};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

fn zeroes(states: &[&'static str]) -> BTreeMap<&'static str, i64> {
    states.iter().map(|s| (*s, 0)).collect()
}

impl SnapshotSource for Node {
    fn snapshot(&self) -> NodeSnapshot {
        let node = self;
        let mut pods = zeroes(&POD_STATES);
        for p in node.pods.lock().values() {
            *pods.entry(pod_state(p.state)).or_default() += 1;
        }
        let mut containers = zeroes(&CONTAINER_STATES);
        for c in node.containers.lock().values() {
            *containers.entry(container_state(c.state)).or_default() += 1;
        }
        let policies = node.policies();
        NodeSnapshot {
            pods,
            containers,
            policy_reloads_ok: policies.reloads_ok.load(Ordering::Relaxed),
            policy_reloads_failed: policies.reloads_failed.load(Ordering::Relaxed),
            image_pull_bytes: node.images().fetched_bytes(),
        }
    }
}
