//! Values read from the node's state at scrape time: pods and containers by
//! state, policy reloads, bytes fetched from registries.
//!
//! Counting pods and containers from the node's maps on every scrape, rather
//! than incrementing and decrementing gauges at each lifecycle call, cannot
//! drift: after a daemon restart the maps are reloaded from the records and
//! the numbers are right again, whatever happened while it was down.

use super::labels::{Outcome, OutcomeLabels, StateLabels};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the node's state says at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSnapshot {
    /// Pods by state ("ready", "notready"), every state present.
    pub pods: BTreeMap<&'static str, i64>,
    /// Containers by state ("created", "running", "exited", "unknown").
    pub containers: BTreeMap<&'static str, i64>,
    pub policy_reloads_ok: u64,
    pub policy_reloads_failed: u64,
    /// Bytes of blobs fetched from registries (not those already stored).
    pub image_pull_bytes: u64,
}

impl NodeSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let by_state = |counts: &BTreeMap<&'static str, i64>| {
            let family = Family::<StateLabels, Gauge>::default();
            for (state, n) in counts {
                family.get_or_create(&StateLabels { state }).set(*n);
            }
            family
        };
        let pods = by_state(&self.pods);
        pods.encode(encoder.encode_descriptor(
            "pods",
            "Pod sandboxes known to capcri by state: ready (running) or notready (stopped, not yet removed).",
            None,
            pods.metric_type(),
        )?)?;
        let containers = by_state(&self.containers);
        containers.encode(encoder.encode_descriptor(
            "containers",
            "Containers known to capcri by state (created, running, exited, unknown), as last seen from their pod monitors.",
            None,
            containers.metric_type(),
        )?)?;
        let reloads = Family::<OutcomeLabels, Counter>::default();
        for (outcome, n) in [
            (Outcome::Success, self.policy_reloads_ok),
            (Outcome::Failure, self.policy_reloads_failed),
        ] {
            reloads.get_or_create(&OutcomeLabels { outcome }).inc_by(n);
        }
        reloads.encode(encoder.encode_descriptor(
            "policy_reloads",
            "Reloads of the policy directory after a change: success (new set in force) or failure (rejected whole, previous set kept).",
            None,
            reloads.metric_type(),
        )?)?;
        let bytes = ConstCounter::new(self.image_pull_bytes);
        bytes.encode(encoder.encode_descriptor(
            "image_pull_bytes",
            "Bytes of image blobs (configs and layers) fetched from registries.",
            None,
            bytes.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Where a [`NodeCollector`] reads its snapshot: the node, or a fixed
/// value in tests.
pub trait SnapshotSource: Send + Sync + 'static {
    fn snapshot(&self) -> NodeSnapshot;
}

impl SnapshotSource for NodeSnapshot {
    fn snapshot(&self) -> NodeSnapshot {
        self.clone()
    }
}

/// The collector registered with the registry: a snapshot on each scrape.
pub struct NodeCollector {
    source: Arc<dyn SnapshotSource>,
}

impl NodeCollector {
    pub fn new(source: Arc<dyn SnapshotSource>) -> NodeCollector {
        NodeCollector { source }
    }
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

impl Collector for NodeCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.source.snapshot().encode(encoder)
    }
}
