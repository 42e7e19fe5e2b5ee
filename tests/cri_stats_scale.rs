//! What kubelet's stats calls cost with many pods running (issue 18: 1,086
//! ms for ListPodSandboxStats at 100 pods). Ignored: a measurement, run by
//! hand, never a timed assertion:
//!
//! `CAPCRI_PRIVILEGED_TESTS=1 CAPCRI_TEST_REGISTRY=127.0.0.1:5055
//! CAPCRI_STATS_PODS=24 unshare --mount --propagation private -- cargo test
//! --test cri_stats_scale -- --ignored --nocapture`

mod common;

use common::{TestDaemon, container_config, create, pull, run_pod, start, stop_and_remove_pod};
use k8s_cri::v1 as cri;
use std::time::{Duration, Instant};

/// CPU time (user + system, all threads) the daemon has used: what a call
/// costs, independent of how loaded the machine is (wall times on a shared
/// 2-core machine mostly measure the other tenants).
fn daemon_cpu(d: &TestDaemon) -> Duration {
    let pid = d.pid().expect("daemon pid");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.2} ms, min {:.2} ms, max {:.2} ms ({} calls)",
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn stats_calls_with_many_pods() {
    let registry = require_privileged!();
    let pods: usize = std::env::var("CAPCRI_STATS_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let d = TestDaemon::start(&[]);
    let image = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &image).await;
    let mut pod_ids = Vec::new();
    for i in 0..pods {
        let pod = run_pod(&d, &format!("scale-{i}")).await;
        let id = create(
            &d,
            &pod,
            container_config("main", &image, &["sleep", "3600"]),
        )
        .await
        .expect("create");
        start(&d, &id).await;
        pod_ids.push(pod);
    }
    let mut rt = d.runtime().await;
    // First calls take the first CPU samples and the first layer walks.
    for _ in 0..2 {
        rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await
            .unwrap();
    }
    let mut list_pod = Vec::new();
    let mut list_ctr = Vec::new();
    let mut one_pod = Vec::new();
    // Daemon CPU of 20 ListPodSandboxStats calls alone.
    let cpu_before = daemon_cpu(&d);
    for _ in 0..20 {
        rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await
            .unwrap();
    }
    let cpu_per_list = (daemon_cpu(&d) - cpu_before) / 20;
    for _ in 0..15 {
        let t = Instant::now();
        let stats = rt
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats;
        list_pod.push(t.elapsed());
        assert_eq!(stats.len(), pods);
        let t = Instant::now();
        let stats = rt
            .list_container_stats(cri::ListContainerStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats;
        list_ctr.push(t.elapsed());
        assert_eq!(stats.len(), pods);
        let t = Instant::now();
        rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_ids[0].clone(),
        })
        .await
        .unwrap();
        one_pod.push(t.elapsed());
    }
    println!("{pods} pods, one running container each:");
    println!(
        "  ListPodSandboxStats: {} ; daemon CPU {:.2} ms per call",
        summary(list_pod),
        cpu_per_list.as_secs_f64() * 1000.0
    );
    println!("  ListContainerStats:  {}", summary(list_ctr));
    println!("  PodSandboxStats:     {}", summary(one_pod));
    for pod in pod_ids {
        stop_and_remove_pod(&d, &pod).await;
    }
}
