//! Pod PID namespace, OOM kills, stats, resource updates and log reopening,
//! through the CRI socket of a real daemon (the critest gaps they close are
//! named at each test).

mod common;

use common::*;
use k8s_cri::v1 as cri;
use std::time::Duration;

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

fn daemon(registry: &str) -> TestDaemon {
    TestDaemon::start(&["--registry-mirror", &format!("registry.k8s.io={registry}")])
}

async fn run_pod(d: &TestDaemon, name: &str) -> String {
    d.runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(name, &d.dir.path().join("logs"))),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id
}

async fn start(d: &TestDaemon, pod: &str, config: cri::ContainerConfig) -> String {
    let mut rt = d.runtime().await;
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .expect("create container")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start container");
    id
}

async fn exec(d: &TestDaemon, id: &str, cmd: &[&str]) -> String {
    let out = d
        .runtime()
        .await
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .expect("exec")
        .into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// critest leaves namespace_options.pid at POD: containers of such a pod
/// share one PID namespace (pid 1 is the pod init); a CONTAINER-mode
/// container sees only its own. Removing the pod leaves no process and
/// keeps the CRI log files, which belong to kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_pid_namespace_is_shared_and_logs_outlive_removal() {
    let registry = require_privileged!();
    let mut d = daemon(&registry);
    pull(&d, BUSYBOX).await;
    let pod = run_pod(&d, "pidns").await;

    let pod_mode = cri::NamespaceMode::Pod;
    let a = start(
        &d,
        &pod,
        with_pid_mode(
            container_config("a", BUSYBOX, &["sh", "-c", "echo from-a; exec sleep 4242"]),
            pod_mode,
        ),
    )
    .await;
    let b = start(
        &d,
        &pod,
        with_pid_mode(container_config("b", BUSYBOX, &["sleep", "4343"]), pod_mode),
    )
    .await;
    let own = start(
        &d,
        &pod,
        with_pid_mode(
            container_config("own", BUSYBOX, &["sleep", "4444"]),
            cri::NamespaceMode::Container,
        ),
    )
    .await;

    let seen_by_b = exec(&d, &b, &["ps", "-o", "pid,args"]).await;
    assert!(seen_by_b.contains("sleep 4242"), "{seen_by_b}");
    assert!(seen_by_b.contains("sleep 4343"), "{seen_by_b}");
    assert!(!seen_by_b.contains("sleep 4444"), "{seen_by_b}");
    assert_eq!(
        exec(&d, &a, &["cat", "/proc/1/comm"]).await.trim(),
        "pod-init"
    );
    let seen_by_own = exec(&d, &own, &["ps", "-o", "pid,args"]).await;
    assert!(!seen_by_own.contains("sleep 4242"), "{seen_by_own}");
    assert!(seen_by_own.contains("sleep 4444"), "{seen_by_own}");

    // After a daemon restart the monitor, its pod init and so the pinned
    // namespace live on: a new POD-mode container still joins it.
    d.kill9();
    let _ = std::fs::remove_file(&d.socket);
    d.spawn(&["--registry-mirror", &format!("registry.k8s.io={registry}")]);
    let late = start(
        &d,
        &pod,
        with_pid_mode(
            container_config("late", BUSYBOX, &["sleep", "4545"]),
            pod_mode,
        ),
    )
    .await;
    let seen_by_late = exec(&d, &late, &["ps", "-o", "pid,args"]).await;
    assert!(seen_by_late.contains("sleep 4242"), "{seen_by_late}");

    // Container a's log, written before the removals.
    let log = d.dir.path().join("logs/a/0.log");
    wait_for("a's log line", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("from-a"))
    })
    .await;
    stop_and_remove_container(&d, &a).await;
    assert!(log.exists(), "RemoveContainer deleted {}", log.display());

    common::stop_and_remove_pod(&d, &pod).await;
    assert!(log.exists(), "RemovePodSandbox deleted {}", log.display());
    assert!(d.dir.path().join("logs/b/0.log").exists());
    assert_eq!(
        processes_mentioning(&d.state_dir().join("pods")),
        Vec::<i32>::new()
    );
    assert_eq!(mounts_under(&d.state_dir()), Vec::<String>::new());
}

/// critest "should terminate with exitCode 137 and reason OOMKilled".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_container_reports_137_and_oomkilled() {
    let registry = require_privileged!();
    let d = daemon(&registry);
    pull(&d, BUSYBOX).await;
    let pod = run_pod(&d, "oom").await;
    let mut config = container_config(
        "hog",
        BUSYBOX,
        &["sh", "-c", "x=a; while true; do x=$x$x; done"],
    );
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 20 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = start(&d, &pod, config).await;
    let status = wait_for("the hog to be killed", Duration::from_secs(60), || async {
        let s = container_state(&d, &id).await;
        (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
    })
    .await;
    assert_eq!(status.exit_code, 137);
    assert_eq!(status.reason, "OOMKilled");
    common::stop_and_remove_pod(&d, &pod).await;
}

/// Stats RPCs, UpdateContainerResources and ReopenContainerLog on one
/// running container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_updates_and_log_reopening() {
    let registry = require_privileged!();
    let d = daemon(&registry);
    pull(&d, BUSYBOX).await;
    let pod = run_pod(&d, "stats").await;
    let script = "dd if=/dev/zero of=/written bs=1024 count=200 2>/dev/null; \
                  i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.02; done";
    let id = start(
        &d,
        &pod,
        container_config("busy", BUSYBOX, &["sh", "-c", script]),
    )
    .await;
    let mut rt = d.runtime().await;

    // Stats: CPU, memory, the writable layer with the 200 KiB file. The
    // layer's usage is a walk kept up to `layer_usage::MAX_AGE` (10 s) and
    // refreshed in the background: a first walk made before `dd` ran (a
    // slow node: the VM under TCG) shows the file one refresh later.
    let stats = wait_for(
        "stats with the written file",
        Duration::from_secs(30),
        || {
            let mut rt = rt.clone();
            let id = id.clone();
            async move {
                let s = rt
                    .container_stats(cri::ContainerStatsRequest { container_id: id })
                    .await
                    .expect("container stats")
                    .into_inner()
                    .stats
                    .expect("stats");
                let layer = s.writable_layer.clone()?;
                (layer.used_bytes?.value >= 200 * 1024).then_some(s)
            }
        },
    )
    .await;
    assert_eq!(stats.attributes.as_ref().unwrap().id, id);
    let cpu = stats.cpu.expect("cpu");
    assert!(cpu.usage_core_nano_seconds.unwrap().value > 0);
    assert!(cpu.timestamp > 0);
    let mem = stats.memory.expect("memory");
    assert!(mem.working_set_bytes.unwrap().value > 0);
    assert!(mem.usage_bytes.unwrap().value >= mem.working_set_bytes.unwrap().value);
    assert!(stats.writable_layer.unwrap().inodes_used.unwrap().value >= 2);

    let list = |filter: cri::ContainerStatsFilter| {
        let mut rt = rt.clone();
        async move {
            rt.list_container_stats(cri::ListContainerStatsRequest {
                filter: Some(filter),
            })
            .await
            .expect("list container stats")
            .into_inner()
            .stats
        }
    };
    let by_id = list(cri::ContainerStatsFilter {
        id: id.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_id.len(), 1);
    let by_pod = list(cri::ContainerStatsFilter {
        pod_sandbox_id: pod.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_pod.len(), 1);
    let by_label = list(cri::ContainerStatsFilter {
        label_selector: [("container".to_string(), "busy".to_string())].into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_label.len(), 1);
    let none = list(cri::ContainerStatsFilter {
        label_selector: [("container".to_string(), "other".to_string())].into(),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());

    let pod_stats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("pod stats")
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(pod_stats.attributes.unwrap().id, pod);
    let linux = pod_stats.linux.unwrap();
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert_eq!(linux.containers.len(), 1);
    let listed = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("list pod stats")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .expect("metric descriptors");

    // UpdateContainerResources reaches the cgroup files.
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("update resources");
    let limited = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("stats after the update")
        .into_inner()
        .stats
        .and_then(|s| s.memory)
        .and_then(|m| m.available_bytes)
        .expect("available bytes under a memory limit");
    assert!(limited.value > 0 && limited.value < 64 << 20, "{limited:?}");
    let group = format!("{}/{pod}/{id}", d.cgroup_parent.trim_start_matches('/'));
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}/{group}/{file}"))
            .unwrap_or_else(|e| panic!("{controller}/{file}: {e}"))
            .trim()
            .to_string()
    };
    if !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "20000");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
    }

    // Rotation: rename the log, reopen, and no line is lost.
    let log = d.dir.path().join("logs/busy/0.log");
    let rotated = d.dir.path().join("logs/busy/0.log.1");
    wait_for("a first line", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("line-3"))
    })
    .await;
    std::fs::rename(&log, &rotated).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .expect("reopen log");
    wait_for("lines in the new file", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.lines().count() >= 5)
    })
    .await;
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    let text = std::fs::read_to_string(&rotated).unwrap() + &std::fs::read_to_string(&log).unwrap();
    let numbers: Vec<u64> = text
        .lines()
        .filter_map(|l| l.rsplit("line-").next()?.parse().ok())
        .collect();
    // At least line-1..3 before the rotation and 5 after it.
    assert!(numbers.len() >= 8, "{text}");
    for (i, n) in numbers.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "a line is missing or repeated:\n{text}");
    }
    let err = rt
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect_err("reopen of a stopped container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");

    common::stop_and_remove_pod(&d, &pod).await;
    assert_eq!(
        cgroups_left(&d.cgroup_parent),
        Vec::<std::path::PathBuf>::new()
    );
}

/// The page sizes of this kernel, named as kubelet names them in
/// hugepage_limits ("2MB", "1GB"), from /sys/kernel/mm/hugepages.
fn kernel_page_sizes() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(kb) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(match kb {
            kb if kb >= 1 << 20 => format!("{}GB", kb >> 20),
            kb if kb >= 1 << 10 => format!("{}MB", kb >> 10),
            kb => format!("{kb}KB"),
        });
    }
    out
}

/// kubelet sends a hugepage limit (0 for a pod that asked for none) for
/// every page size of the kernel, whether or not the node has the hugetlb
/// cgroup controller. On a node without it (this development host mounts
/// no v1 hugetlb hierarchy) every kubelet container failed to start
/// ("cgroup hugetlb is required"); the limits are left out there, as CRI-O
/// does, and applied where the controller exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_hugepage_limits_start_with_or_without_the_hugetlb_controller() {
    let registry = require_privileged!();
    let sizes = kernel_page_sizes();
    if sizes.is_empty() {
        eprintln!("skipped: this kernel offers no hugepage sizes, kubelet would send no limits");
        return;
    }
    let d = daemon(&registry);
    pull(&d, BUSYBOX).await;
    let pod = run_pod(&d, "hugepages").await;
    let mut config = container_config("huge", BUSYBOX, &["sleep", "60"]);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            hugepage_limits: sizes
                .iter()
                .map(|s| cri::HugepageLimit {
                    page_size: s.clone(),
                    limit: 0,
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = start(&d, &pod, config).await;
    assert_eq!(
        container_state(&d, &id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let cgroups = exec(&d, &id, &["cat", "/proc/self/cgroup"]).await;
    let v2_root = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
    // On cgroup v2 the container has its own cgroup namespace ("0::/"):
    // its /sys/fs/cgroup is its own cgroup, so the limit is read there.
    if v2_root.exists() {
        let v2 = std::fs::read_to_string(v2_root).unwrap();
        if v2.split_whitespace().any(|c| c == "hugetlb") {
            let file = format!("/sys/fs/cgroup/hugetlb.{}.max", sizes[0]);
            let got = exec(&d, &id, &["cat", &file]).await;
            assert_eq!(got.trim(), "0", "{file} in the container");
        } else {
            eprintln!("no hugetlb controller here: the container ran without the limits");
        }
        stop_and_remove_pod(&d, &pod).await;
        return;
    }
    let limit_file = {
        cgroups
            .lines()
            .find_map(|l| l.split_once(":hugetlb:").map(|(_, p)| p.to_string()))
            .map(|path| {
                format!(
                    "/sys/fs/cgroup/hugetlb{path}/hugetlb.{}.limit_in_bytes",
                    sizes[0]
                )
            })
    };
    match limit_file {
        // The controller exists: kubelet's limit is applied.
        Some(file) => assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim(),
            "0",
            "{file}"
        ),
        None => eprintln!("no hugetlb controller here: the container ran without the limits"),
    }
    stop_and_remove_pod(&d, &pod).await;
}
