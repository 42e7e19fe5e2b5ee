//! The `GetContainerEvents` stream: the node's lifecycle events with the
//! pod's status and its containers' statuses as they are when the event is
//! delivered, which is what kubelet's evented PLEG puts in its cache.

use super::convert;
use crate::events::{EventKind, NodeEvent};
use crate::node::Node;
use k8s_cri::v1 as cri;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

pub type ContainerEventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>,
>;

/// Subscribes now: events from this moment on, until the client hangs up.
pub fn container_events(node: Arc<Node>) -> ContainerEventStream {
    let rx = node.events.subscribe();
    Box::pin(futures_util::stream::unfold(
        (rx, node),
        |(mut rx, node)| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => {
                        let response = response_for(&node, event).await;
                        return Some((Ok(response), (rx, node)));
                    }
                    Err(RecvError::Lagged(n)) => {
                        // kubelet relists periodically; dropping is what a
                        // slow subscriber gets in containerd too.
                        tracing::warn!(
                            dropped = n,
                            "a GetContainerEvents subscriber fell behind; events were dropped"
                        );
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    ))
}

pub(crate) fn event_type(kind: EventKind) -> cri::ContainerEventType {
    match kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    }
}

async fn response_for(node: &Node, event: NodeEvent) -> cri::ContainerEventResponse {
    let pod_sandbox_status = node
        .find_pod(&event.pod_id)
        .map(|p| convert::pod_sandbox_status(&p));
    let mut containers_statuses = Vec::new();
    for c in node.containers_of(&event.pod_id) {
        // Fresh from the monitor: a stopped event carries the exit code.
        match node.container_status(&c.id).await {
            Ok(r) => {
                let name = node.images().reported_name(&r.image_id, &r.asked_image());
                containers_statuses.push(convert::container_status(&r, &name))
            }
            Err(e) => tracing::debug!(container.id = %c.id, error = %e, "status for event"),
        }
    }
    cri::ContainerEventResponse {
        container_id: event.container_id,
        container_event_type: event_type(event.kind) as i32,
        created_at: event.at,
        pod_sandbox_status,
        containers_statuses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_cri_type() {
        assert_eq!(
            event_type(EventKind::Created),
            cri::ContainerEventType::ContainerCreatedEvent
        );
        assert_eq!(
            event_type(EventKind::Started),
            cri::ContainerEventType::ContainerStartedEvent
        );
        assert_eq!(
            event_type(EventKind::Stopped),
            cri::ContainerEventType::ContainerStoppedEvent
        );
        assert_eq!(
            event_type(EventKind::Deleted),
            cri::ContainerEventType::ContainerDeletedEvent
        );
    }
}
