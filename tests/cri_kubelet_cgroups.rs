//! Pods created the way kubelet creates them (issue 15, section 2): kubelet
//! makes the QoS tree and each pod's cgroup with its limits before
//! RunPodSandbox (cgroupsPerQOS, node-allocatable enforcement,
//! podPidsLimit), then sends the pod's cgroup as `linux.cgroup_parent`, the
//! pod's `resources` and `overhead`, its uid and namespace options. The
//! tests build that tree themselves, as kubelet would (cgroupfs: directories
//! and files; systemd: slices over systemctl), and check that the processes
//! sit in kubelet's cgroups under kubelet's limits, that kubelet's cgroup
//! is neither rewritten nor removed by capcri, that stats and updates follow
//! the real path, also after a daemon restart, and that hostile
//! `cgroup_parent` values change nothing.
//!
//! The cgroupfs tests run on any host (v1 hybrid and v2); the systemd ones
//! where systemd is PID 1 on cgroup v2 (the VM node, `hack/vm/test.sh
//! cri_kubelet_cgroups`) and say they skipped elsewhere.

mod common;

use common::*;
use k8s_cri::v1 as cri;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn unified() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

fn systemd_node() -> bool {
    Path::new("/run/systemd/system").is_dir() && unified()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    Cgroupfs,
    Systemd,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// What kubelet writes on a pod's cgroup (pod_container_manager /
/// ResourceConfigForPod): the sum of its containers' limits plus overhead,
/// shares from requests, podPidsLimit.
#[derive(Clone, Copy, Debug, Default)]
struct PodLimits {
    memory: Option<u64>,
    cpu_shares: Option<u64>,
    cpu_quota: Option<u64>,
    pids: Option<u64>,
}

/// A kubelet cgroup tree under a cgroup root of its own (kubelet's
/// `cgroupRoot`), removed at drop with whatever is left in it.
struct KubeletTree {
    driver: Driver,
    /// cgroupfs: the root path (`/capcritest-<n>`); systemd: the root
    /// slice's stem (`capcritest<n>`).
    root: String,
    /// Every cgroup directory (relative, leading `/`) or slice made, in order.
    made: Vec<String>,
}

impl KubeletTree {
    fn new(driver: Driver) -> KubeletTree {
        // One root per tree: the tests of this file run in parallel.
        static TREES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = format!(
            "{}x{}",
            std::process::id(),
            TREES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut t = KubeletTree {
            driver,
            root: match driver {
                Driver::Cgroupfs => format!("/capcritest-{n}"),
                Driver::Systemd => format!("capcritest{n}"),
            },
            made: Vec::new(),
        };
        // The node-allocatable and QoS levels kubelet makes at startup.
        t.make(&["kubepods"], PodLimits::default());
        t.make(&["kubepods", "burstable"], PodLimits::default());
        t.make(
            &["kubepods", "besteffort"],
            PodLimits {
                cpu_shares: Some(2),
                ..Default::default()
            },
        );
        t
    }

    /// kubelet's name of `parts` under the root: a path, or a slice
    /// (kubelet's systemd driver joins the components with '-').
    fn name(&self, parts: &[&str]) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("{}/{}", self.root, parts.join("/")),
            Driver::Systemd => format!("{}-{}.slice", self.root, parts.join("-")),
        }
    }

    /// The cgroup directory of a name, relative to the hierarchy roots.
    fn dir(&self, name: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => name.to_string(),
            // Already a path (what pod() returns as kubelet sends it).
            Driver::Systemd if name.starts_with('/') => name.to_string(),
            Driver::Systemd => {
                let stem = name.strip_suffix(".slice").unwrap();
                let mut path = String::new();
                let mut prefix = String::new();
                for part in stem.split('-') {
                    prefix.push_str(part);
                    path.push_str(&format!("/{prefix}.slice"));
                    prefix.push('-');
                }
                path
            }
        }
    }

    fn make(&mut self, parts: &[&str], limits: PodLimits) -> String {
        let name = self.name(parts);
        match self.driver {
            Driver::Cgroupfs => make_cgroupfs(&name, limits),
            Driver::Systemd => make_slice(&name, limits),
        }
        self.made.push(name.clone());
        name
    }

    /// The pod cgroup kubelet makes before RunPodSandbox; what it sends as
    /// `cgroup_parent`.
    fn pod(&mut self, qos: Qos, uid: &str, limits: PodLimits) -> String {
        // kubelet's systemd driver escapes '-' in the uid to '_'.
        let pod = format!("pod{}", uid.replace('-', "_"));
        let name = match qos {
            Qos::Guaranteed => self.make(&["kubepods", &pod], limits),
            Qos::Burstable => self.make(&["kubepods", "burstable", &pod], limits),
            Qos::BestEffort => self.make(&["kubepods", "besteffort", &pod], limits),
        };
        // kubelet's systemd driver sends the slice's expanded cgroup path
        // (CgroupName.ToSystemd: `/a.slice/a-b.slice/a-b-pod<uid>.slice`);
        // crictl sends the unit name. BestEffort pods take the unit name,
        // so both forms go through the CRI.
        match (self.driver, qos) {
            (Driver::Systemd, Qos::Guaranteed | Qos::Burstable) => self.dir(&name),
            _ => name,
        }
    }

    /// Reads a cgroup file of `name` (v1: in `controller`'s hierarchy).
    fn read(&self, name: &str, controller: &str, v1: &str, v2: &str) -> String {
        read_file(&self.dir(name), controller, v1, v2)
    }
}

impl Drop for KubeletTree {
    fn drop(&mut self) {
        for name in self.made.iter().rev() {
            let dir = self.dir(name);
            kill_and_rmdir_tree(&dir);
            if self.driver == Driver::Systemd {
                let _ = Command::new("systemctl").args(["stop", name]).status();
                let _ = std::fs::remove_dir_all(
                    Path::new("/run/systemd/system.control").join(format!("{name}.d")),
                );
            }
        }
        if self.driver == Driver::Systemd {
            let root = format!("{}.slice", self.root);
            let _ = Command::new("systemctl").args(["stop", &root]).status();
        } else {
            kill_and_rmdir_tree(&self.root);
        }
    }
}

/// Every hierarchy directory (v1 controllers and the named ones, or the
/// unified root).
fn hierarchies() -> Vec<PathBuf> {
    capcri::util::cgroupfs::hierarchies()
}

fn v1_dir(controller: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join(controller)
}

fn read_file(dir: &str, controller: &str, v1: &str, v2: &str) -> String {
    let rel = dir.trim_start_matches('/');
    let path = if unified() {
        Path::new(CGROUP_ROOT).join(rel).join(v2)
    } else {
        v1_dir(controller).join(rel).join(v1)
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// What kubelet's cgroupfs manager does for one cgroup: mkdir in every
/// hierarchy (a cpuset gets its parent's cpus and mems; v2: the
/// controllers enabled from the root down), then the limits.
fn make_cgroupfs(path: &str, limits: PodLimits) {
    let rel = path.trim_start_matches('/');
    if unified() {
        let mut dir = PathBuf::from(CGROUP_ROOT);
        for part in rel.split('/') {
            std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids")
                .unwrap_or_else(|e| panic!("enabling controllers in {}: {e}", dir.display()));
            dir.push(part);
            let _ = std::fs::create_dir(&dir);
        }
        let put = |file: &str, value: String| {
            std::fs::write(dir.join(file), &value)
                .unwrap_or_else(|e| panic!("{file} = {value}: {e}"));
        };
        if let Some(m) = limits.memory {
            put("memory.max", m.to_string());
        }
        if let Some(s) = limits.cpu_shares {
            // kubelet's CpuSharesToCpuWeight (runc's conversion).
            put("cpu.weight", (1 + ((s - 2) * 9999) / 262_142).to_string());
        }
        if let Some(q) = limits.cpu_quota {
            put("cpu.max", format!("{q} 100000"));
        }
        if let Some(p) = limits.pids {
            put("pids.max", p.to_string());
        }
        return;
    }
    for h in hierarchies() {
        let mut dir = h.clone();
        for part in rel.split('/') {
            let parent = dir.clone();
            dir.push(part);
            let _ = std::fs::create_dir(&dir);
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(dir.join(f))
                    && v.trim().is_empty()
                {
                    let inherited = std::fs::read_to_string(parent.join(f)).unwrap();
                    std::fs::write(dir.join(f), inherited.trim()).unwrap();
                }
            }
        }
    }
    let put = |controller: &str, file: &str, value: String| {
        let p = v1_dir(controller).join(rel).join(file);
        std::fs::write(&p, &value).unwrap_or_else(|e| panic!("{} = {value}: {e}", p.display()));
    };
    if let Some(m) = limits.memory {
        put("memory", "memory.limit_in_bytes", m.to_string());
    }
    if let Some(s) = limits.cpu_shares {
        put("cpu", "cpu.shares", s.to_string());
    }
    if let Some(q) = limits.cpu_quota {
        put("cpu", "cpu.cfs_period_us", "100000".into());
        put("cpu", "cpu.cfs_quota_us", q.to_string());
    }
    if let Some(p) = limits.pids {
        put("pids", "pids.max", p.to_string());
    }
}

/// What kubelet's systemd manager does: the slice started, its limits set
/// as unit properties (kubelet passes them to StartTransientUnit).
fn make_slice(slice: &str, limits: PodLimits) {
    let ok = Command::new("systemctl")
        .args(["start", slice])
        .status()
        .unwrap();
    assert!(ok.success(), "systemctl start {slice}");
    let mut props = Vec::new();
    if let Some(m) = limits.memory {
        props.push(format!("MemoryMax={m}"));
    }
    if let Some(s) = limits.cpu_shares {
        props.push(format!("CPUWeight={}", 1 + ((s - 2) * 9999) / 262_142));
    }
    if let Some(q) = limits.cpu_quota {
        props.push(format!("CPUQuota={}%", q / 1000));
    }
    if let Some(p) = limits.pids {
        props.push(format!("TasksMax={p}"));
    }
    if !props.is_empty() {
        let ok = Command::new("systemctl")
            .args(["set-property", "--runtime", slice])
            .args(&props)
            .status()
            .unwrap();
        assert!(ok.success(), "systemctl set-property {slice} {props:?}");
    }
}

/// SIGKILLs what is left under `dir` and removes its directories, deepest
/// first, in every hierarchy.
fn kill_and_rmdir_tree(dir: &str) {
    for h in hierarchies() {
        let top = h.join(dir.trim_start_matches('/'));
        let mut dirs = vec![top.clone()];
        let mut i = 0;
        while i < dirs.len() {
            for e in std::fs::read_dir(&dirs[i]).into_iter().flatten().flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(e.path());
                }
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            for _ in 0..100 {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) of a test leftover.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// The cgroup of `pid` as the host sees it: the unified line on v2, the
/// memory controller's on v1.
fn cgroup_of(pid: i64) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let wanted = |l: &&str| {
        if unified() {
            l.starts_with("0::")
        } else {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        }
    };
    text.lines()
        .find(wanted)
        .and_then(|l| l.splitn(3, ':').nth(2))
        .unwrap_or_else(|| panic!("no cgroup line in {text}"))
        .to_string()
}

/// The daemon's cgroup flags: the harness's own parent (a path) serves
/// cgroupfs; the systemd driver needs a slice, one per daemon.
fn driver_args(driver: Driver, own_parent: Option<&str>) -> Vec<String> {
    static DAEMONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut args = Vec::new();
    if driver == Driver::Systemd {
        args.extend(["--cgroup-driver".to_string(), "systemd".to_string()]);
        let parent = own_parent.map(str::to_string).unwrap_or_else(|| {
            format!(
                "capcritestd{}x{}.slice",
                std::process::id(),
                DAEMONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        });
        args.extend(["--cgroup-parent".to_string(), parent]);
    } else if let Some(p) = own_parent {
        args.extend(["--cgroup-parent".to_string(), p.to_string()]);
    }
    args
}

fn daemon(registry: &str, driver: Driver, own_parent: Option<&str>) -> (TestDaemon, Vec<String>) {
    let mirror = format!("registry.k8s.io={registry}");
    let cgroup_args = driver_args(driver, own_parent);
    let mut args = vec!["--registry-mirror", mirror.as_str()];
    args.extend(cgroup_args.iter().map(String::as_str));
    (TestDaemon::start(&args), cgroup_args)
}

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

/// The sandbox config kubelet sends: metadata with the pod's uid, the pod
/// cgroup, pod-level resources and overhead, namespace options.
fn kubelet_pod_config(
    d: &TestDaemon,
    name: &str,
    uid: &str,
    cgroup_parent: &str,
    share_pid: bool,
) -> cri::PodSandboxConfig {
    let mut config = pod_config(name, &d.dir.path().join("logs"));
    config.metadata.as_mut().unwrap().uid = uid.to_string();
    config.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: cgroup_parent.to_string(),
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Pod as i32,
                pid: if share_pid {
                    cri::NamespaceMode::Pod
                } else {
                    cri::NamespaceMode::Container
                } as i32,
                ipc: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 256,
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        }),
        overhead: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 10_000,
            cpu_shares: 51,
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// A container as kubelet sends it for a pod: its own limits, the pod's
/// PID mode.
fn kubelet_container(name: &str, memory: i64, share_pid: bool) -> cri::ContainerConfig {
    let mut c = container_config(name, BUSYBOX, &["sleep", "3600"]);
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 256,
            memory_limit_in_bytes: memory,
            oom_score_adj: 1000,
            ..Default::default()
        }),
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Pod as i32,
                pid: if share_pid {
                    cri::NamespaceMode::Pod
                } else {
                    cri::NamespaceMode::Container
                } as i32,
                ipc: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    c
}

/// Where capcri must have put container `id` of a pod whose cgroup is
/// `pod_dir`: `<pod>/<id>` (cgroupfs, as containerd) or the scope
/// `<pod slice dir>/capcri-<id>.scope` (systemd).
fn container_dir(driver: Driver, pod_dir: &str, id: &str) -> String {
    match driver {
        Driver::Cgroupfs => format!("{pod_dir}/{id}"),
        Driver::Systemd => format!("{pod_dir}/capcri-{id}.scope"),
    }
}

fn exec_ok_text(out: &cri::ExecSyncResponse) -> String {
    assert_eq!(
        out.exit_code,
        0,
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn runtime_driver(d: &TestDaemon) -> i32 {
    d.runtime()
        .await
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner()
        .linux
        .expect("linux runtime config")
        .cgroup_driver
}

async fn kubelet_pods_sit_in_kubelet_cgroups(registry: &str, driver: Driver) {
    let mut tree = KubeletTree::new(driver);
    let (mut d, cgroup_args) = daemon(registry, driver, None);
    assert_eq!(
        runtime_driver(&d).await,
        match driver {
            Driver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
            Driver::Systemd => cri::CgroupDriver::Systemd,
        } as i32,
        "RuntimeConfig must report the driver capcri runs"
    );
    let status = d
        .runtime()
        .await
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(&status.info["config"]).unwrap();
    assert_eq!(
        config["cgroupDriver"],
        match driver {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd => "systemd",
        },
        "Status verbose info: {config}"
    );
    assert_eq!(config["cgroupVersion"], if unified() { 2 } else { 1 });
    pull(&d, BUSYBOX).await;

    // Guaranteed, shareProcessNamespace: kubelet's pod limits are the
    // containers' (64 MiB) plus the overhead (32 MiB); podPidsLimit 8.
    let kubelet_limits = PodLimits {
        memory: Some(96 << 20),
        cpu_shares: Some(307),
        cpu_quota: Some(60_000),
        pids: Some(8),
    };
    let uid_g = "0b9f3c1e-5d2a-4c7b-9e8f-000000000001";
    let parent_g = tree.pod(Qos::Guaranteed, uid_g, kubelet_limits);
    let pod_dir_g = tree.dir(&parent_g);
    let pod_g = run_pod_with_config(
        &d,
        kubelet_pod_config(&d, "guaranteed", uid_g, &parent_g, true),
    )
    .await;
    let c_g = create(&d, &pod_g, kubelet_container("app", 64 << 20, true))
        .await
        .expect("create in a Guaranteed pod");
    start(&d, &c_g).await;

    // Burstable, the default CONTAINER pid mode; BestEffort, no limits.
    let uid_b = "0b9f3c1e-5d2a-4c7b-9e8f-000000000002";
    let parent_b = tree.pod(
        Qos::Burstable,
        uid_b,
        PodLimits {
            cpu_shares: Some(102),
            pids: Some(64),
            ..Default::default()
        },
    );
    let pod_dir_b = tree.dir(&parent_b);
    let pod_b = run_pod_with_config(
        &d,
        kubelet_pod_config(&d, "burstable", uid_b, &parent_b, false),
    )
    .await;
    let c_b = create(&d, &pod_b, kubelet_container("app", 48 << 20, false))
        .await
        .expect("create in a Burstable pod");
    start(&d, &c_b).await;
    let uid_e = "0b9f3c1e-5d2a-4c7b-9e8f-000000000003";
    let parent_e = tree.pod(Qos::BestEffort, uid_e, PodLimits::default());
    let pod_dir_e = tree.dir(&parent_e);
    let mut be_config = kubelet_pod_config(&d, "besteffort", uid_e, &parent_e, false);
    let l = be_config.linux.as_mut().unwrap();
    l.resources = None;
    l.overhead = None;
    let pod_e = run_pod_with_config(&d, be_config).await;
    let mut be = kubelet_container("app", 0, false);
    be.linux.as_mut().unwrap().resources = None;
    let c_e = create(&d, &pod_e, be)
        .await
        .expect("create in a BestEffort pod");
    start(&d, &c_e).await;

    // Every container's process sits in its own cgroup under kubelet's pod
    // cgroup, under the QoS level kubelet chose.
    for (id, pod_dir) in [(&c_g, &pod_dir_g), (&c_b, &pod_dir_b), (&c_e, &pod_dir_e)] {
        let pid = verbose_info(&d, id).await["pid"].as_i64().unwrap();
        assert_eq!(
            cgroup_of(pid),
            container_dir(driver, pod_dir, id),
            "container {id} of pod cgroup {pod_dir}"
        );
        let out = exec(&d, id, &["cat", "/proc/self/cgroup"]).await;
        let seen = exec_ok_text(&out);
        if unified() {
            // Its own cgroup namespace: it cannot see kubelet's tree.
            assert_eq!(seen, "0::/", "a container's /proc/self/cgroup on v2");
        } else {
            assert!(seen.contains(pod_dir.as_str()), "{seen}");
        }
    }
    // The shared-PID pod's init: in kubelet's pod cgroup too, in its own
    // leaf (cgroupfs) or scope (systemd).
    let init = exec(&d, &c_g, &["cat", "/proc/1/cgroup"]).await;
    let init = exec_ok_text(&init);
    let init_dir = match driver {
        Driver::Cgroupfs => format!("{pod_dir_g}/pod-init"),
        Driver::Systemd => format!("{pod_dir_g}/capcri-pod-init-{pod_g}.scope"),
    };
    let init_rel = init_dir.trim_start_matches('/');
    let init_procs = if unified() {
        Path::new(CGROUP_ROOT).join(init_rel)
    } else {
        v1_dir("memory").join(init_rel)
    }
    .join("cgroup.procs");
    let host_init = std::fs::read_to_string(&init_procs)
        .unwrap_or_else(|e| panic!("the pod init's cgroup {init_dir}: {e} (init sees {init})"));
    assert_eq!(
        host_init.lines().count(),
        1,
        "one process, the pod init, in {init_dir}"
    );

    // kubelet's pod limits are kubelet's: not rewritten by capcri (the
    // pod's resources + overhead would also be 96 MiB here: the pids limit
    // and the CPU quota tell them apart).
    assert_eq!(
        tree.read(&parent_g, "memory", "memory.limit_in_bytes", "memory.max"),
        (96u64 << 20).to_string()
    );
    assert_eq!(tree.read(&parent_g, "pids", "pids.max", "pids.max"), "8");
    // The container's own limits, in its cgroup under kubelet's.
    let ctr_g = container_dir(driver, &pod_dir_g, &c_g);
    assert_eq!(
        read_file(&ctr_g, "memory", "memory.limit_in_bytes", "memory.max"),
        (64u64 << 20).to_string()
    );
    // And as the container sees them.
    let inside = if unified() {
        "/sys/fs/cgroup/memory.max"
    } else {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    };
    let seen = exec(&d, &c_g, &["cat", inside]).await;
    assert_eq!(exec_ok_text(&seen), (64u64 << 20).to_string());

    // kubelet's podPidsLimit binds the pod's processes: forks beyond 8 fail
    // (the pod init, the container's sleep and this shell are 3 of them),
    // whatever the container's own cgroup allows.
    let forks = exec(
        &d,
        &c_g,
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 300 </dev/null >/dev/null 2>&1 & done; echo done",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&forks.stderr);
    assert!(
        stderr.contains("fork") || stderr.contains("Resource temporarily unavailable"),
        "forks beyond kubelet's pids.max 8 must fail: {forks:?}"
    );
    let current: u64 = tree
        .read(&parent_g, "pids", "pids.current", "pids.current")
        .parse()
        .unwrap();
    assert!(current <= 8, "pids.current {current} above kubelet's 8");
    // The sleeps go with a kill of the container's cgroup.
    let _ = exec(
        &d,
        &c_g,
        &[
            "sh",
            "-c",
            "kill $(pidof sleep | tr ' ' '\\n' | grep -v '^1$') 2>/dev/null; true",
        ],
    )
    .await;

    // Stats are read where the processes are: kubelet's pod cgroup.
    let mut rt = d.runtime().await;
    let stats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_b.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .unwrap();
    let linux = stats.linux.unwrap();
    let memory = linux.memory.expect("pod memory from kubelet's pod cgroup");
    assert!(memory.usage_bytes.unwrap().value > 0, "{memory:?}");
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.is_some());
    assert_eq!(linux.containers.len(), 1);
    let ctr_mem = linux.containers[0].memory.expect("container memory");
    assert!(ctr_mem.working_set_bytes.unwrap().value > 0, "{ctr_mem:?}");

    // UpdateContainerResources changes the container's cgroup in
    // kubelet's tree.
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: c_b.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 40 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("update");
    let ctr_b = container_dir(driver, &pod_dir_b, &c_b);
    assert_eq!(
        read_file(&ctr_b, "memory", "memory.limit_in_bytes", "memory.max"),
        (40u64 << 20).to_string()
    );

    // A restarted daemon finds the pods' real cgroups in their records.
    drop(rt);
    d.terminate();
    d.spawn(&cgroup_args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut rt = d.runtime().await;
    let after = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: c_b.clone(),
        })
        .await
        .expect("ContainerStats after a restart")
        .into_inner()
        .stats
        .unwrap();
    assert!(
        after.memory.and_then(|m| m.usage_bytes).is_some(),
        "stats after a restart read kubelet's tree"
    );
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: c_b.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 44 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("update after a restart");
    assert_eq!(
        read_file(&ctr_b, "memory", "memory.limit_in_bytes", "memory.max"),
        (44u64 << 20).to_string()
    );
    drop(rt);

    // Removal takes capcri's cgroups and leaves kubelet's: kubelet removes
    // its pod cgroup itself, and finds it empty.
    for (pod, parent, ctr) in [
        (&pod_g, &parent_g, &c_g),
        (&pod_b, &parent_b, &c_b),
        (&pod_e, &parent_e, &c_e),
    ] {
        stop_and_remove_pod(&d, pod).await;
        let pod_dir = tree.dir(parent);
        let rel = pod_dir.trim_start_matches('/');
        let check_root = if unified() {
            PathBuf::from(CGROUP_ROOT)
        } else {
            v1_dir("memory")
        };
        assert!(
            check_root.join(rel).is_dir(),
            "kubelet's pod cgroup {pod_dir} must outlive RemovePodSandbox"
        );
        let left: Vec<String> = std::fs::read_dir(check_root.join(rel))
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            left.is_empty(),
            "capcri's cgroups left in kubelet's pod cgroup {pod_dir} (container {ctr}): {left:?}"
        );
        assert_eq!(
            std::fs::read_to_string(check_root.join(rel).join("cgroup.procs")).unwrap(),
            "",
            "no process left in {pod_dir}"
        );
    }
    drop(d);
    drop(tree);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroupfs_driver_pods_sit_in_kubelet_cgroups_with_kubelet_limits() {
    let registry = require_privileged!();
    kubelet_pods_sit_in_kubelet_cgroups(&registry, Driver::Cgroupfs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_driver_pods_sit_in_kubelet_slices_with_kubelet_limits() {
    let registry = require_privileged!();
    if !systemd_node() {
        eprintln!(
            "skipped: the systemd driver needs systemd as PID 1 on cgroup v2 (run it on the VM node: hack/vm/test.sh cri_kubelet_cgroups)"
        );
        return;
    }
    kubelet_pods_sit_in_kubelet_cgroups(&registry, Driver::Systemd).await;
}

/// Each driver refuses what would put a pod outside the tree it names:
/// InvalidArgument with the cause, and no pod, no cgroup made.
async fn hostile_parents(registry: &str, driver: Driver) {
    let tree = KubeletTree::new(driver);
    let (d, _) = daemon(registry, driver, None);
    let escape = format!("{}/kubepods/../../../etc", tree.root);
    let cases: Vec<(String, &str)> = match driver {
        Driver::Cgroupfs => vec![
            (
                "kubepods/burstable/pod1".into(),
                "not an absolute cgroup path",
            ),
            (escape, "\"..\" component"),
            ("/kubepods/./pod1".into(), "\".\" component"),
            ("/kubepods//pod1".into(), "\"\" component"),
            ("/".into(), "root cgroup"),
            ("/kube\npods".into(), "control character"),
            (format!("/{}", "x".repeat(300)), "at most 255"),
            ("kubepods-burstable-pod1.slice".into(), "systemd slice"),
        ],
        Driver::Systemd => vec![
            ("/kubepods/burstable/pod1".into(), "cgroupfs path"),
            // A pod slice's name under another slice's path.
            ("/system.slice/kubepods-pod1.slice".into(), "not that path"),
            ("kubepods-burstable-pod1".into(), "does not end in"),
            ("../kubepods.slice".into(), "only letters"),
            ("kube/pods.slice".into(), "only letters"),
            ("kubepods--pod1.slice".into(), "'-' starts"),
            ("-.slice".into(), "root slice"),
            (format!("{}.slice", "x".repeat(300)), "at most 255"),
        ],
    };
    for (i, (parent, why)) in cases.iter().enumerate() {
        let config = kubelet_pod_config(&d, &format!("hostile{i}"), "uid-h", parent, false);
        let err = d
            .runtime()
            .await
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .expect_err(&format!("cgroup_parent {parent:?} must be refused"));
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{parent:?}: {err}"
        );
        assert!(err.message().contains(why), "{parent:?}: {}", err.message());
        assert!(err.message().contains("cgroup_parent"), "{}", err.message());
    }
    let pods = d
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "a refused pod was kept: {pods:?}");
    // Nothing was made outside the tree: the escape target's neighbours.
    for h in hierarchies() {
        assert!(!h.join("etc").exists(), "{}/etc made", h.display());
    }
    // The name is free again: the same pod with a good parent runs.
    let mut good_tree = tree;
    let parent = good_tree.pod(Qos::BestEffort, "uid-h", PodLimits::default());
    let pod = run_pod_with_config(
        &d,
        kubelet_pod_config(&d, "hostile0", "uid-h", &parent, false),
    )
    .await;
    stop_and_remove_pod(&d, &pod).await;
    drop(d);
    drop(good_tree);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cgroup_parents_are_refused_and_change_nothing() {
    let registry = require_privileged!();
    hostile_parents(&registry, Driver::Cgroupfs).await;
    if systemd_node() {
        hostile_parents(&registry, Driver::Systemd).await;
    } else {
        eprintln!("systemd driver part skipped: systemd is not PID 1 on cgroup v2 here");
    }
}

/// kubelet with cgroupsPerQOS false (or crictl) sends no cgroup_parent:
/// the pod gets capcri's own cgroup under the configured parent, with the
/// pod-level limits (resources + overhead) applied by capcri, and it goes
/// with the pod.
async fn own_pod_cgroup(registry: &str, driver: Driver) {
    let n = std::process::id();
    let parent = match driver {
        Driver::Cgroupfs => format!("/capcritest-own-{n}"),
        Driver::Systemd => format!("capcritestown{n}.slice"),
    };
    let (d, _) = daemon(registry, driver, Some(&parent));
    pull(&d, BUSYBOX).await;
    let pod = run_pod_with_config(&d, kubelet_pod_config(&d, "own", "uid-own", "", false)).await;
    let pod_dir = match driver {
        Driver::Cgroupfs => format!("{parent}/{pod}"),
        Driver::Systemd => format!("/capcritestown{n}.slice/capcritestown{n}-pod{pod}.slice"),
    };
    let id = create(&d, &pod, kubelet_container("app", 64 << 20, false))
        .await
        .unwrap();
    start(&d, &id).await;
    let pid = verbose_info(&d, &id).await["pid"].as_i64().unwrap();
    assert_eq!(cgroup_of(pid), container_dir(driver, &pod_dir, &id));
    // 96 MiB of resources + 32 MiB of overhead; a 60 ms quota per 100 ms.
    assert_eq!(
        read_file(&pod_dir, "memory", "memory.limit_in_bytes", "memory.max"),
        (128u64 << 20).to_string()
    );
    if unified() {
        assert_eq!(read_file(&pod_dir, "cpu", "", "cpu.max"), "60000 100000");
    } else {
        assert_eq!(read_file(&pod_dir, "cpu", "cpu.cfs_quota_us", ""), "60000");
    }
    stop_and_remove_pod(&d, &pod).await;
    for h in hierarchies() {
        let dir = h.join(pod_dir.trim_start_matches('/'));
        wait_for(
            "the pod's own cgroup to go",
            Duration::from_secs(10),
            || {
                let gone = !dir.exists();
                async move { gone.then_some(()) }
            },
        )
        .await;
    }
    drop(d);
    kill_and_rmdir_tree(&match driver {
        Driver::Cgroupfs => parent.clone(),
        Driver::Systemd => format!("/capcritestown{n}.slice"),
    });
    if driver == Driver::Systemd {
        let _ = Command::new("systemctl").args(["stop", &parent]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_cgroup_parent_gets_capcris_cgroup_with_pod_level_limits() {
    let registry = require_privileged!();
    own_pod_cgroup(&registry, Driver::Cgroupfs).await;
    if systemd_node() {
        own_pod_cgroup(&registry, Driver::Systemd).await;
    } else {
        eprintln!("systemd driver part skipped: systemd is not PID 1 on cgroup v2 here");
    }
}

/// Choosing the systemd driver where systemd cannot serve it fails at
/// startup, naming the cause and the fix, before anything is made.
#[test]
fn systemd_driver_without_systemd_fails_at_startup() {
    if systemd_node() {
        eprintln!("skipped: systemd is PID 1 on cgroup v2 here, the systemd driver works");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_capcri"))
        .arg("serve")
        .arg("--cgroup-driver")
        .arg("systemd")
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--admin-socket")
        .arg(dir.path().join("a.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("run"))
        .arg("--data-dir")
        .arg(dir.path().join("lib"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cgroup_driver is \"systemd\"") && stderr.contains("cgroupfs"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("run").exists(),
        "a refused driver made the state dir"
    );
}

/// major:minor of a block device this host's root can open (the one behind
/// `/` first): a container being refused it proves its device rules.
fn host_disk() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").unwrap().dev();
    let mut candidates = vec![(libc::major(dev) as u64, libc::minor(dev) as u64)];
    for e in std::fs::read_dir("/sys/dev/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((a, b)) = name.split_once(':')
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
        {
            candidates.push((a, b));
        }
    }
    candidates.into_iter().find(|&(major, minor)| {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("disk");
        let c = std::ffi::CString::new(node.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mknod with a valid path and a block device number.
        let made = unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFBLK | 0o600,
                libc::makedev(major as u32, minor as u32),
            )
        } == 0;
        major != 0 && made && std::fs::File::open(&node).is_ok()
    })
}

/// The systemd driver's scopes: libcgroups' systemd manager sets unit
/// properties but no device rules, so capcri attaches the device program
/// itself; a root container with CAP_MKNOD still cannot open the host's
/// disk. The OOM kill is read from the scope's memory.events, a `unified`
/// update lands in the scope, and StopContainer's kill empties it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_scopes_keep_device_rules_oom_reports_and_unified_updates() {
    let registry = require_privileged!();
    if !systemd_node() {
        eprintln!(
            "skipped: the systemd driver needs systemd as PID 1 on cgroup v2 (run it on the VM node: hack/vm/test.sh cri_kubelet_cgroups)"
        );
        return;
    }
    let mut tree = KubeletTree::new(Driver::Systemd);
    let (d, _) = daemon(&registry, Driver::Systemd, None);
    pull(&d, BUSYBOX).await;
    let parent = tree.pod(Qos::BestEffort, "uid-scopes", PodLimits::default());
    let pod_dir = tree.dir(&parent);
    let pod = run_pod_with_config(
        &d,
        kubelet_pod_config(&d, "scopes", "uid-scopes", &parent, false),
    )
    .await;

    // Devices.
    let mut c = container_config("mknod", BUSYBOX, &["sleep", "600"]);
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: vec!["MKNOD".into(), "SYS_ADMIN".into(), "SYS_RAWIO".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(&d, &pod, c).await.expect("create");
    start(&d, &id).await;
    let pid = verbose_info(&d, &id).await["pid"].as_i64().unwrap();
    assert_eq!(
        cgroup_of(pid),
        container_dir(Driver::Systemd, &pod_dir, &id)
    );
    if let Some((major, minor)) = host_disk() {
        let made = exec(
            &d,
            &id,
            &[
                "sh",
                "-c",
                &format!("mknod /tmp/disk b {major} {minor} && echo made"),
            ],
        )
        .await;
        assert_eq!(exec_ok_text(&made), "made");
        let open = exec(&d, &id, &["sh", "-c", "head -c 512 /tmp/disk > /dev/null"]).await;
        assert_ne!(
            open.exit_code, 0,
            "the host disk opened in a scope: {open:?}"
        );
        assert!(
            String::from_utf8_lossy(&open.stderr).contains("Operation not permitted"),
            "{open:?}"
        );
        let null = exec(&d, &id, &["sh", "-c", "echo x > /dev/null && echo ok"]).await;
        assert_eq!(exec_ok_text(&null), "ok");
    } else {
        eprintln!("device part skipped: this host's root can open no block device");
    }

    // A `unified` update lands in the scope.
    d.runtime()
        .await
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                unified: [("memory.high".to_string(), "50331648".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("unified update");
    assert_eq!(
        read_file(
            &container_dir(Driver::Systemd, &pod_dir, &id),
            "",
            "",
            "memory.high"
        ),
        "50331648"
    );
    let refused = d
        .runtime()
        .await
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                unified: [("cgroup.procs".to_string(), "1".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("cgroup.procs is no resource");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // OOM.
    let mut hog = container_config(
        "hog",
        BUSYBOX,
        &["sh", "-c", "x=a; while true; do x=$x$x; done"],
    );
    hog.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 20 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hog = create(&d, &pod, hog).await.expect("create hog");
    start(&d, &hog).await;
    let status = wait_for("the hog to be killed", Duration::from_secs(120), || async {
        let s = container_state(&d, &hog).await;
        (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
    })
    .await;
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (137, "OOMKilled")
    );

    stop_and_remove_pod(&d, &pod).await;
    let scope = Path::new(CGROUP_ROOT)
        .join(container_dir(Driver::Systemd, &pod_dir, &id).trim_start_matches('/'));
    wait_for(
        "the container's scope to go",
        Duration::from_secs(10),
        || {
            let gone = !scope.exists();
            async move { gone.then_some(()) }
        },
    )
    .await;
    drop(d);
    drop(tree);
}

/// The cgroup2 mount: the whole of /sys/fs/cgroup on a unified host,
/// `unified` below it on a hybrid one.
fn cgroup2_mount() -> Option<PathBuf> {
    if unified() {
        return Some(PathBuf::from(CGROUP_ROOT));
    }
    let hybrid = Path::new(CGROUP_ROOT).join("unified");
    hybrid.join("cgroup.procs").exists().then_some(hybrid)
}

/// The daemon's cgroup2 line of `/proc/<pid>/cgroup`.
fn cgroup2_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup2 line in {text}"))
        .to_string()
}

/// The daemon's warm-up thread (`host::cgroup_lock`) and its count of
/// write system calls: one `cgroup.procs` write per warm-up (its reads of
/// /proc/self/cgroup count as reads).
fn warm_up_writes(pid: u32) -> Option<u64> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "cgroup-warm" {
            let io = std::fs::read_to_string(t.path().join("io")).ok()?;
            return io
                .lines()
                .find_map(|l| l.strip_prefix("syscw: "))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

/// Waits until the warm-up thread has made no write for 300 ms (its
/// keep-alive after a call is over) and returns its write count then; the
/// lock is kept warm for at most a second after the last pod or call.
fn wait_for_warm_up_quiet(pid: u32) -> Option<u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut last = warm_up_writes(pid)?;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = warm_up_writes(pid)?;
        if now == last || std::time::Instant::now() > deadline {
            return Some(now);
        }
        last = now;
    }
}

/// Puts the daemon back into its first cgroup and removes the test's one
/// (`rel`, under the hierarchy root), however the test ends.
struct MovedDaemon {
    pid: u32,
    home: PathBuf,
    rel: String,
}

impl Drop for MovedDaemon {
    fn drop(&mut self) {
        // A warm-up write racing this move could put the daemon back.
        wait_for_warm_up_quiet(self.pid);
        let _ = std::fs::write(self.home.join("cgroup.procs"), self.pid.to_string());
        kill_and_rmdir_tree(&self.rel);
    }
}

/// CreateContainer and exec start the kernel's wait for its cgroup
/// migration lock early, by moving the daemon into the cgroup it is in
/// (`host::cgroup_lock`). That move must change nothing: the daemon stays
/// where it is, and where it is is read at each move, so a daemon moved
/// by its service manager is not moved back. The warm-up thread made its
/// writes and is alive (a failure ends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cgroup_lock_warm_up_moves_the_daemon_nowhere() {
    let registry = require_privileged!();
    let Some(mount) = cgroup2_mount() else {
        eprintln!("skipped: no cgroup2 mount on this host");
        return;
    };
    let (d, _) = daemon(&registry, Driver::Cgroupfs, None);
    let pid = d.pid().unwrap();
    let first = cgroup2_of(pid);
    pull(&d, BUSYBOX).await;
    // The thread starts with the first call that warms; a pull does not.
    let before = warm_up_writes(pid).unwrap_or(0);
    // A RunPodSandbox keeps the lock warm for a second from its arrival
    // (a write every 4 ms): in its first 300 ms, however long the call
    // itself takes (under the VM's emulation, most of it), the thread has
    // written again and again, not once.
    let sent = std::time::Instant::now();
    let pod = run_pod(&d, "warm").await;
    std::thread::sleep(std::time::Duration::from_millis(300).saturating_sub(sent.elapsed()));
    let kept = warm_up_writes(pid).expect("the warm-up thread runs");
    assert!(
        kept >= before + 5,
        "the lock was not kept warm after RunPodSandbox ({before} -> {kept} writes)"
    );
    let id = running_sleeper(&d, &pod, "c1", BUSYBOX).await;
    let after_create = warm_up_writes(pid).expect("the warm-up thread runs");
    assert!(after_create > kept, "no warm-up write after a create");
    assert_eq!(cgroup2_of(pid), first, "a warm-up moved the daemon");
    // And then quiet: the keep-alive ends without another call.
    let quiet = wait_for_warm_up_quiet(pid).expect("the warm-up thread runs");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        warm_up_writes(pid),
        Some(quiet),
        "warm-up writes without a call long after the last one"
    );
    assert_eq!(cgroup2_of(pid), first, "a warm-up moved the daemon");

    // Moved by someone else: the next warm-ups follow it there.
    let home = mount.join(first.trim_start_matches('/'));
    let rel = format!("capcri-test-warm-{}", std::process::id());
    let moved_to = mount.join(&rel);
    std::fs::create_dir_all(&moved_to).unwrap();
    let _guard = MovedDaemon {
        pid,
        home,
        rel: rel.clone(),
    };
    std::fs::write(moved_to.join("cgroup.procs"), pid.to_string()).unwrap();
    let there = cgroup2_of(pid);
    assert!(there.ends_with(&rel));
    let out = exec(&d, &id, &["true"]).await;
    assert_eq!(out.exit_code, 0);
    let after_exec = warm_up_writes(pid).expect("the warm-up thread still runs");
    assert!(
        after_exec > after_create,
        "no warm-up write after an exec ({after_create} -> {after_exec})"
    );
    running_sleeper(&d, &pod, "c2", BUSYBOX).await;
    let after_more = warm_up_writes(pid).expect("the warm-up thread still runs");
    assert!(
        after_more > after_exec,
        "no warm-up write after a second create ({after_exec} -> {after_more})"
    );
    assert_eq!(cgroup2_of(pid), there, "a warm-up moved the daemon back");
    wait_for_warm_up_quiet(pid);
    assert_eq!(cgroup2_of(pid), there, "a warm-up moved the daemon back");
    stop_and_remove_pod(&d, &pod).await;
}

/// RemoveContainer takes the container's cgroup out of every hierarchy,
/// groups made under it included (a container with a writable cgroupfs
/// may make them), and leaves its pod's. capcri removes the groups itself
/// on the cgroupfs driver rather than through libcontainer's cgroup
/// manager, which parsed the node's whole mount table once per v1
/// controller (`monitor::container_ops::delete_directly`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_container_takes_its_cgroup_from_every_hierarchy() {
    let registry = require_privileged!();
    let n = std::process::id();
    let parent = format!("/capcritest-rm-{n}");
    let (d, _) = daemon(&registry, Driver::Cgroupfs, Some(&parent));
    pull(&d, BUSYBOX).await;
    let pod = run_pod_with_config(&d, kubelet_pod_config(&d, "rm", "uid-rm", "", false)).await;
    let pod_dir = format!("{parent}/{pod}");
    let id = create(&d, &pod, kubelet_container("app", 64 << 20, false))
        .await
        .unwrap();
    start(&d, &id).await;
    let ctr_dir = container_dir(Driver::Cgroupfs, &pod_dir, &id);
    let dirs: Vec<PathBuf> = hierarchies()
        .into_iter()
        .map(|h| h.join(ctr_dir.trim_start_matches('/')))
        .filter(|d| d.is_dir())
        .collect();
    assert!(!dirs.is_empty(), "no hierarchy holds {ctr_dir}");
    for dir in &dirs {
        std::fs::create_dir_all(dir.join("nested/deeper")).expect("a group under the container's");
    }
    stop_and_remove_container(&d, &id).await;
    for dir in &dirs {
        assert!(
            !dir.exists(),
            "{} is left after RemoveContainer",
            dir.display()
        );
        let pod_group = dir.parent().expect("the pod's group");
        assert!(
            pod_group.is_dir(),
            "{} went with its container",
            pod_group.display()
        );
    }
    // Removing it again is no error and changes nothing.
    d.runtime()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("a second RemoveContainer");
    stop_and_remove_pod(&d, &pod).await;
    drop(d);
    kill_and_rmdir_tree(&parent);
}
