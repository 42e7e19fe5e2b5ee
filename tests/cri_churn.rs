//! Churn without leaks: many pod lifecycles, concurrently, each with a
//! container that logs and an ExecSync, then zero leftovers. The full run
//! (1,000 pods, 20 at a time) is gated by CAPCRI_CHURN_PODS, which
//! hack/test.sh sets; without it a short run of 40 pods checks the same.

mod common;

use common::{
    TestDaemon, cgroups_left, container_config, mounts_under, pod_config, processes_mentioning,
    pull,
};
use k8s_cri::v1 as cri;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn one_lifecycle(d: &TestDaemon, image: &str, n: usize) {
    let mut rt = d.runtime().await;
    let name = format!("churn-{n}");
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(&name, &d.dir.path().join("logs").join(&name))),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: run pod: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let cmd = [
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; done; echo err >&2; exec sleep 1000",
    ];
    let ctr = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("c", image, &cmd)),
            sandbox_config: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: create: {e}"))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: start: {e}"));
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec!["echo".into(), name.clone()],
            timeout: 20,
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: exec: {e}"))
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: stopp: {e}"));
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: rmp: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_behind() {
    let registry = require_privileged!();
    let total: usize = std::env::var("CAPCRI_CHURN_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let concurrency: usize = std::env::var("CAPCRI_CHURN_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let d = Arc::new(TestDaemon::start(&[]));
    let image = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &image).await;
    let pid = d.pid().unwrap();
    // Warm-up at the load's own concurrency: allocator arenas, tonic
    // buffers, the first monitor spawn, and the runtime's extra threads for
    // blocking work, which only a concurrent load makes (each keeps a stack
    // and stays alive a few seconds after the load).
    let warm: Vec<_> = (0..concurrency.min(total))
        .map(|n| {
            let d = Arc::clone(&d);
            let image = image.clone();
            tokio::spawn(async move { one_lifecycle(&d, &image, 100_000 + n).await })
        })
        .collect();
    for w in warm {
        w.await.unwrap();
    }
    let fds_before = fd_count(pid);
    let rss_before = rss_kib(pid);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let d = Arc::clone(&d);
        let image = image.clone();
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    break;
                }
                one_lifecycle(&d, &image, n).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker panicked");
    }
    let elapsed = started.elapsed();
    // Give tonic's idle connections a moment to close.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fds_after = fd_count(pid);
    // "Back within 10%": the runtime's extra threads for blocking work
    // outlive a burst by their keep-alive (1 s in capcri's runtime) with their stacks,
    // so RSS is given that long to come back; a leak never does.
    let settle = Instant::now();
    let mut rss_after = rss_kib(pid);
    while rss_after * 10 > rss_before * 11 && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_after = rss_kib(pid);
    }
    eprintln!(
        "churn: {total} pods, {concurrency} at a time, in {elapsed:.1?}; daemon fds {fds_before} -> {fds_after}, RSS {rss_before} KiB -> {rss_after} KiB"
    );
    let mut rt = d.runtime().await;
    assert!(
        rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
            .is_empty()
    );
    assert!(
        rt.list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .is_empty()
    );
    assert_eq!(mounts_under(d.dir.path()), Vec::<String>::new());
    assert_eq!(
        processes_mentioning(&d.state_dir().join("pods")),
        Vec::<i32>::new()
    );
    assert_eq!(
        cgroups_left(&d.cgroup_parent),
        Vec::<std::path::PathBuf>::new()
    );
    let pins: Vec<_> = std::fs::read_dir(d.state_dir().join("pods"))
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(pins.is_empty(), "pod dirs left: {}", pins.len());
    assert!(
        fds_after <= fds_before + 2,
        "daemon fds {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after * 10 <= rss_before * 11,
        "daemon RSS {rss_before} KiB -> {rss_after} KiB (more than +10%)"
    );
}
