//! Pod stats as kubelet reads them: the pod's network interfaces and
//! process count beside CPU and memory; and what the stats calls cost with
//! many pods running (issue 18: 1,086 ms for ListPodSandboxStats at 100
//! pods), an ignored measurement run by hand, never a timed assertion:
//!
//! `CAPCRI_PRIVILEGED_TESTS=1 CAPCRI_TEST_REGISTRY=127.0.0.1:5055
//! CAPCRI_STATS_PODS=24 unshare --mount --propagation private -- cargo test
//! --test cri_pod_stats -- --ignored --nocapture`

mod common;

use common::{
    TestDaemon, container_config, create, exec, pod_config, pull, run_pod, run_pod_with_config,
    start, stop_and_remove_pod, with_pod_namespaces,
};
use k8s_cri::v1 as cri;
use std::process::Command;
use std::time::{Duration, Instant};

/// PodSandboxStats of `pod`, its Linux part (None when absent).
async fn linux_pod_stats(d: &TestDaemon, pod: &str) -> Option<cri::LinuxPodSandboxStats> {
    d.runtime()
        .await
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats?
        .linux
}

/// Removes the test's bridge even when the test fails.
struct Bridge(String);
impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_stats_report_network_and_processes() {
    let registry = require_privileged!();
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("skipped: needs the containernetworking-plugins package (/usr/lib/cni/bridge)");
        return;
    }
    let n = std::process::id() % 200 + 20;
    let bridge = Bridge(format!("capcri-s{n}"));
    let d = TestDaemon::start_in_with(|dir| {
        let cni = dir.join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "capcri-stats-test",
            "plugins": [{
                "type": "bridge", "bridge": bridge.0, "isGateway": true, "ipMasq": false,
                "ipam": { "type": "host-local", "ranges": [[{ "subnet": format!("10.243.{n}.0/24") }]],
                          "dataDir": dir.join("ipam").display().to_string() }
            }]
        });
        std::fs::write(cni.join("10-test.conflist"), conf.to_string()).unwrap();
    });
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "stats-net").await;
    let ctr = create(
        &d,
        &pod,
        container_config("c", &busybox, &["sh", "-c", "sleep 3600 & exec sleep 3600"]),
    )
    .await
    .expect("create");
    start(&d, &ctr).await;
    // Traffic on eth0: ARP and echo requests out, replies in when the
    // gateway answers.
    let ping = exec(
        &d,
        &ctr,
        &["ping", "-c", "2", "-W", "1", &format!("10.243.{n}.1")],
    )
    .await;
    let stats = common::wait_for(
        "pod stats with two processes",
        Duration::from_secs(10),
        || async {
            let s = linux_pod_stats(&d, &pod).await.expect("linux stats");
            let procs = s.process.as_ref()?.process_count.as_ref()?.value;
            (procs >= 2).then_some(s)
        },
    )
    .await;
    let process = stats.process.as_ref().unwrap();
    assert!(process.timestamp > 0);
    let net = stats
        .network
        .as_ref()
        .expect("network stats of a pod with its own netns");
    assert!(net.timestamp > 0);
    let eth0 = net
        .default_interface
        .as_ref()
        .expect("eth0 is the default interface");
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.tx_bytes.as_ref().unwrap().value > 0, "{eth0:?}");
    if ping.exit_code == 0 {
        assert!(eth0.rx_bytes.as_ref().unwrap().value > 0, "{eth0:?}");
    }
    assert!(
        net.interfaces
            .iter()
            .all(|i| i.name != "lo" && i.name != "eth0")
    );
    assert!(stats.cpu.is_some() && stats.memory.is_some());
    assert_eq!(stats.containers.len(), 1);
    // The list form reports the same pod the same way.
    let listed = d
        .runtime()
        .await
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    let linux = listed[0].linux.as_ref().unwrap();
    assert_eq!(
        linux
            .network
            .as_ref()
            .unwrap()
            .default_interface
            .as_ref()
            .unwrap()
            .name,
        "eth0"
    );
    assert!(
        linux
            .process
            .as_ref()
            .unwrap()
            .process_count
            .as_ref()
            .unwrap()
            .value
            >= 2
    );

    // Later calls read the namespace through the view the first one kept:
    // traffic sent since shows.
    let before = eth0.tx_bytes.as_ref().unwrap().value;
    exec(
        &d,
        &ctr,
        &["ping", "-c", "1", "-W", "1", &format!("10.243.{n}.1")],
    )
    .await;
    common::wait_for(
        "eth0's transmitted bytes to grow",
        Duration::from_secs(10),
        || async {
            let s = linux_pod_stats(&d, &pod).await?;
            let tx = s.network?.default_interface?.tx_bytes?.value;
            (tx > before).then_some(())
        },
    )
    .await;

    // The same figures as cAdvisor-named metrics (kubelet's
    // /metrics/cadvisor with PodAndContainerStatsFromCRI): every metric
    // has a descriptor with as many label keys as it has label values.
    let mut rt = d.runtime().await;
    let descriptors: std::collections::HashMap<String, Vec<String>> = rt
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name, d.label_keys))
        .collect();
    assert!(descriptors.contains_key("container_memory_working_set_bytes"));
    let metrics = pod_metrics(&d).await;
    let ours = metrics
        .iter()
        .find(|m| m.pod_sandbox_id == pod)
        .expect("the running pod's metrics");
    for m in ours
        .metrics
        .iter()
        .chain(ours.container_metrics.iter().flat_map(|c| &c.metrics))
    {
        let keys = descriptors
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(keys.len(), m.label_values.len(), "{m:?}");
        assert!(m.timestamp > 0, "{m:?}");
    }
    let find = |metrics: &[cri::Metric], name: &str| -> cri::Metric {
        metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} missing from {metrics:?}"))
            .clone()
    };
    let tx = find(&ours.metrics, "container_network_transmit_bytes_total");
    assert_eq!(
        tx.label_values,
        ["stats-net", "default", "", pod.as_str(), "", "eth0"]
    );
    assert!(tx.value.unwrap().value > 0);
    assert!(
        find(&ours.metrics, "container_processes")
            .value
            .unwrap()
            .value
            >= 2
    );
    assert_eq!(ours.container_metrics.len(), 1);
    let cm = &ours.container_metrics[0];
    assert_eq!(cm.container_id, ctr);
    let ws = find(&cm.metrics, "container_memory_working_set_bytes");
    assert_eq!(
        ws.label_values,
        ["stats-net", "default", "c", ctr.as_str(), busybox.as_str()]
    );
    assert!(ws.value.unwrap().value > 0);
    find(&cm.metrics, "container_cpu_usage_seconds_total");
    assert!(
        find(&cm.metrics, "container_start_time_seconds")
            .value
            .unwrap()
            .value
            > 0
    );
    // A stopped pod is not reported (containerd reports ready pods only).
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    let metrics = pod_metrics(&d).await;
    assert!(metrics.iter().all(|m| m.pod_sandbox_id != pod));
    stop_and_remove_pod(&d, &pod).await;
    // The removed pod's namespace is not held open by the daemon's kept
    // view of it (an open `net/dev` keeps its namespace alive).
    let daemon = d.pid().expect("daemon pid");
    let views: Vec<String> = std::fs::read_dir(format!("/proc/{daemon}/fd"))
        .expect("daemon fds")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.ends_with("/net/dev"))
        .collect();
    assert!(views.is_empty(), "net/dev views left open: {views:?}");

    // A host-network pod's traffic is the node's: no pod network stats.
    let config = with_pod_namespaces(
        pod_config("stats-hostnet", &d.dir.path().join("logs")),
        cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        },
    );
    let hostnet = run_pod_with_config(&d, config).await;
    let s = d
        .runtime()
        .await
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: hostnet.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(s.linux.unwrap().network.is_none());
    stop_and_remove_pod(&d, &hostnet).await;
}

async fn pod_metrics(d: &TestDaemon) -> Vec<cri::PodSandboxMetrics> {
    d.runtime()
        .await
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics
}

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
