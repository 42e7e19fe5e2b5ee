//! GetContainerEvents (kubelet's evented PLEG): created, started, stopped
//! and deleted events for pods and containers, with the statuses kubelet
//! caches, from a real pod; and exits still reported after a daemon crash.

mod common;

use common::{TestDaemon, container_config, create, pull, run_pod, start};
use k8s_cri::v1 as cri;
use std::time::Duration;
use tonic::Streaming;

type Events = Streaming<cri::ContainerEventResponse>;

async fn subscribe(d: &TestDaemon) -> Events {
    d.runtime()
        .await
        .get_container_events(cri::GetEventsRequest::default())
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// The next event, or a panic naming what was awaited.
async fn next(events: &mut Events, what: &str) -> cri::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(30), events.message())
        .await
        .unwrap_or_else(|_| panic!("no event while waiting for {what}"))
        .expect("event stream failed")
        .unwrap_or_else(|| panic!("event stream ended while waiting for {what}"))
}

fn kind(e: &cri::ContainerEventResponse) -> cri::ContainerEventType {
    cri::ContainerEventType::try_from(e.container_event_type).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_carry_the_statuses_kubelet_caches() {
    use cri::ContainerEventType::*;
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let mut events = subscribe(&d).await;

    let pod = run_pod(&d, "events").await;
    for want in [ContainerCreatedEvent, ContainerStartedEvent] {
        let e = next(&mut events, "pod events").await;
        assert_eq!((kind(&e), e.container_id.as_str()), (want, pod.as_str()));
        assert_eq!(e.pod_sandbox_status.as_ref().unwrap().id, pod);
    }

    // Exits by itself with 3 once started: the stop comes from the monitor.
    let c = create(
        &d,
        &pod,
        container_config("exits", &busybox, &["sh", "-c", "sleep 1; exit 3"]),
    )
    .await
    .unwrap();
    let e = next(&mut events, "container created").await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (ContainerCreatedEvent, c.as_str())
    );
    assert!(e.created_at > 0);
    assert_eq!(e.containers_statuses.len(), 1);
    assert_eq!(
        e.containers_statuses[0].state,
        cri::ContainerState::ContainerCreated as i32
    );
    start(&d, &c).await;
    let e = next(&mut events, "container started").await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (ContainerStartedEvent, c.as_str())
    );
    assert_eq!(
        e.containers_statuses[0].state,
        cri::ContainerState::ContainerRunning as i32
    );
    let e = next(&mut events, "container stopped").await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (ContainerStoppedEvent, c.as_str())
    );
    let status = &e.containers_statuses[0];
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 3);
    assert!(status.finished_at > 0);

    d.runtime()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap();
    let e = next(&mut events, "container deleted").await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (ContainerDeletedEvent, c.as_str())
    );
    assert!(e.containers_statuses.is_empty());

    d.runtime()
        .await
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let e = next(&mut events, "pod stopped").await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (ContainerStoppedEvent, pod.as_str())
    );
    assert_eq!(
        e.pod_sandbox_status.unwrap().state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let e = next(&mut events, "pod deleted").await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (ContainerDeletedEvent, pod.as_str())
    );
    assert!(e.pod_sandbox_status.is_none());
}

/// After `kill -9` of the daemon, a container that exits later is still
/// reported: the restarted daemon follows every live monitor at startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_after_a_daemon_crash_are_still_reported() {
    let registry = require_privileged!();
    let mut d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "events-crash").await;
    let c = create(
        &d,
        &pod,
        container_config("late", &busybox, &["sh", "-c", "sleep 4; exit 7"]),
    )
    .await
    .unwrap();
    start(&d, &c).await;
    d.kill9();
    d.spawn(&[]);
    let mut events = subscribe(&d).await;
    let e = next(&mut events, "stop after restart").await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (cri::ContainerEventType::ContainerStoppedEvent, c.as_str())
    );
    assert_eq!(e.containers_statuses[0].exit_code, 7);
    common::stop_and_remove_pod(&d, &pod).await;
}
