//! Concurrent start/stop/remove across pods (issue 13 item 5: two
//! StopContainers in two pods once hung until critest's deadline). Several
//! pods at once, containers that exit at once, ignore SIGTERM, trap it and
//! exit, or just sleep; StopContainer with timeouts 0, 1 and 2, racing
//! RemoveContainer and StopPodSandbox. A hang is the bug, so every call is
//! bounded by its own timeout plus a few seconds (a liveness bound, not a
//! performance one), and the whole run by well under a minute.

mod common;

use common::{TestDaemon, container_config, create, pull, run_pod};
use futures_util::future::join_all;
use k8s_cri::v1 as cri;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long past its own timeout a call may take before it counts as hung.
const SLACK: Duration = Duration::from_secs(8);
const PODS: usize = 4;

/// Awaits `f`, failing the test if it takes longer than `limit`.
async fn bounded<T>(what: &str, limit: Duration, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!(
            "{what} hung: no answer after {:?} (bound {limit:?})",
            started.elapsed()
        ),
    }
}

async fn stop(d: &TestDaemon, what: &str, id: &str, timeout: i64) {
    stop_within(
        d,
        what,
        id,
        timeout,
        Duration::from_secs(timeout as u64) + SLACK,
    )
    .await
}

async fn stop_within(d: &TestDaemon, what: &str, id: &str, timeout: i64, limit: Duration) {
    let r = bounded(
        &format!("StopContainer({what}, {timeout}s)"),
        limit,
        async {
            d.runtime()
                .await
                .stop_container(cri::StopContainerRequest {
                    container_id: id.into(),
                    timeout,
                })
                .await
        },
    )
    .await;
    // Racing a RemoveContainer, the container may be gone already:
    // NotFound is an answer; anything else is a failure.
    if let Err(e) = r
        && e.code() != tonic::Code::NotFound
    {
        panic!("StopContainer({what}): {e}");
    }
}

async fn remove(d: &TestDaemon, what: &str, id: &str) {
    let r = bounded(&format!("RemoveContainer({what})"), SLACK, async {
        d.runtime()
            .await
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
    })
    .await;
    if let Err(e) = r
        && e.code() != tonic::Code::NotFound
    {
        panic!("RemoveContainer({what}): {e}");
    }
}

async fn stop_pod(d: &TestDaemon, pod: &str, limit: Duration) {
    bounded(&format!("StopPodSandbox({pod})"), limit, async {
        d.runtime()
            .await
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox({pod}): {e}"));
}

async fn remove_pod(d: &TestDaemon, pod: &str) {
    bounded(&format!("RemovePodSandbox({pod})"), SLACK, async {
        d.runtime()
            .await
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox({pod}): {e}"));
}

/// The kinds of container, by how they take SIGTERM.
const KINDS: [(&str, &str); 4] = [
    ("exits", "true"),
    ("ignores", "trap '' TERM; while :; do sleep 1; done"),
    (
        "traps",
        "trap 'exit 0' TERM; while :; do sleep 1 & wait; done",
    ),
    ("sleeps", "exec sleep 600"),
];

async fn started(d: &TestDaemon, pod: &str, p: usize, kind: &str, script: &str) -> String {
    let name = format!("{kind}-{p}");
    let c = container_config(&name, &common_image(), &["sh", "-c", script]);
    let id = bounded(
        &format!("CreateContainer({name})"),
        SLACK,
        create(d, pod, c),
    )
    .await
    .unwrap_or_else(|e| panic!("create {name}: {e}"));
    bounded(&format!("StartContainer({name})"), SLACK, async {
        d.runtime()
            .await
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
    })
    .await
    .unwrap_or_else(|e| panic!("start {name}: {e}"));
    id
}

fn common_image() -> String {
    format!(
        "{}/cri-lab/busybox:latest",
        common::support::privileged_registry().unwrap()
    )
}

/// One pod's run: every kind of container, then the racing stops.
async fn pod_run(d: &TestDaemon, p: usize) {
    let pod = bounded("RunPodSandbox", SLACK, run_pod(d, &format!("stress-{p}"))).await;
    let ids = join_all(
        KINDS
            .iter()
            .map(|(kind, script)| started(d, &pod, p, kind, script)),
    )
    .await;
    let name = |i: usize| format!("{}-{p}", KINDS[i].0);
    let t = (p % 3) as i64;
    // All at once: plain stops with each timeout, a stop racing a remove,
    // a stop racing the pod's own stop.
    let (exits, ignores, traps, sleeps) = (name(0), name(1), name(2), name(3));
    let racing = async {
        tokio::join!(stop(d, &ignores, &ids[1], 1), remove(d, &ignores, &ids[1]),);
    };
    let pod_race = async {
        tokio::join!(
            stop(d, &sleeps, &ids[3], 2),
            // StopPodSandbox waits for the stop above (same container),
            // then stops everything with timeout 0.
            stop_pod(d, &pod, Duration::from_secs(2) + SLACK),
        );
    };
    tokio::join!(
        stop(d, &exits, &ids[0], t),
        // It handles SIGTERM, so it ends on it, long before the kill: also
        // when the stop comes right after the start, before the shell has
        // set its trap (critest stops `top` that way, with 60 s).
        stop_within(d, &traps, &ids[2], 30, SLACK),
        racing,
    );
    pod_race.await;
    // Everything has exited now; stops again are instant and idempotent.
    join_all(
        ids.iter()
            .enumerate()
            .map(|(i, id)| async move { stop(d, &name(i), id, 0).await }),
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        if i != 1 {
            let status = common::container_state(d, id).await;
            assert_eq!(
                status.state,
                cri::ContainerState::ContainerExited as i32,
                "{} after stop: {status:?}",
                name(i)
            );
            if i == 2 {
                assert_eq!(
                    status.exit_code,
                    0,
                    "{} was not stopped by SIGTERM",
                    name(i)
                );
            }
        }
    }
    remove_pod(d, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stops_across_pods_never_hang() {
    let _registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    pull(&d, &common_image()).await;
    let started = Instant::now();
    // Two rounds, so pods are created while others are torn down.
    for round in 0..2 {
        join_all((0..PODS).map(|p| pod_run(&d, round * PODS + p))).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the stress run took {:?}",
        started.elapsed()
    );
    let mut d = d;
    d.terminate();
    let leftover = common::processes_mentioning(d.dir.path());
    assert!(leftover.is_empty(), "processes left: {leftover:?}");
}

/// critest's "should support stopping container" starts `top` and stops it
/// at once, with 60 s: a container's init is pid 1 of its pid namespace,
/// and the kernel drops a signal it has no handler for yet, so a SIGTERM
/// that lands between the execve and the handler used to be lost and the
/// stop waited for the kill. A container that handles SIGTERM must end on
/// it, however soon after its start the stop comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_right_after_start_reaches_the_handler() {
    let _registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    pull(&d, &common_image()).await;
    let started_at = Instant::now();
    let one = |p: usize| {
        let d = &d;
        async move {
            let pod = bounded("RunPodSandbox", SLACK, run_pod(d, &format!("fast-{p}"))).await;
            for n in 0..3 {
                let name = format!("traps-{p}-{n}");
                let id = started(d, &pod, p * 10 + n, "traps", KINDS[2].1).await;
                stop_within(d, &name, &id, 30, SLACK).await;
                let status = common::container_state(d, &id).await;
                assert_eq!(
                    status.exit_code, 0,
                    "{name} was not stopped by SIGTERM: {status:?}"
                );
            }
            remove_pod(d, &pod).await;
        }
    };
    join_all((0..PODS).map(one)).await;
    assert!(started_at.elapsed() < Duration::from_secs(50));
}
