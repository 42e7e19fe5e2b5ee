//! Container lifecycle events for `GetContainerEvents` (kubelet's evented
//! PLEG): created, started, stopped and deleted, for containers and for
//! pod sandboxes (whose "container" id is the pod id, as in containerd).
//!
//! Events carry ids only. The CRI stream builds the statuses at delivery
//! time, so a subscriber sees the state the event announced (an exit code
//! already recorded by the monitor) and nothing is built when nobody
//! listens, which is the common case without evented PLEG.

use tokio::sync::broadcast;

/// What happened to the container or pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    pub kind: EventKind,
    /// The container id, or the pod id for a pod sandbox's own events.
    pub container_id: String,
    pub pod_id: String,
    /// Unix nanoseconds.
    pub at: i64,
}

/// A subscriber that falls this many events behind loses the oldest ones
/// (and is told so); kubelet then relists, as with a dropped stream.
const CAPACITY: usize = 1024;

/// The node's event fan-out. Emitting never blocks a CRI call.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<NodeEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    pub fn emit(&self, kind: EventKind, container_id: &str, pod_id: &str) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(NodeEvent {
            kind,
            container_id: container_id.to_string(),
            pod_id: pod_id.to_string(),
            at: crate::util::time::now_nanos(),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_in_order_and_nothing_is_kept_without_them() {
        let bus = EventBus::default();
        bus.emit(EventKind::Created, "lost", "p");
        let mut rx = bus.subscribe();
        bus.emit(EventKind::Created, "c", "p");
        bus.emit(EventKind::Started, "c", "p");
        let a = rx.recv().await.unwrap();
        let b = rx.recv().await.unwrap();
        assert_eq!((a.kind, a.container_id.as_str()), (EventKind::Created, "c"));
        assert_eq!(b.kind, EventKind::Started);
        assert!(b.at >= a.at);
        assert!(rx.try_recv().is_err());
    }
}
