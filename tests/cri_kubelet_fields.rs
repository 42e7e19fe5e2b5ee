//! What kubelet sends that a runtime must honour (issue 15, section 3),
//! each through the CRI socket with a real container: `config.devices`
//! with their device cgroup rules, a privileged container's host devices,
//! CDI devices, negative oom_score_adj, the runtime handlers of Status,
//! PID namespace TARGET and procMount Unmasked.

mod common;

use common::{
    TestDaemon, container_config, create, exec, log_of, pod_config, pull, run_pod,
    run_pod_with_config, run_privileged_pod, start, stop_and_remove_pod, wait_for, with_pid_mode,
    with_pod_namespaces,
};
use k8s_cri::v1 as cri;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn device(host: &str, container: &str, permissions: &str) -> cri::Device {
    cri::Device {
        host_path: host.into(),
        container_path: container.into(),
        permissions: permissions.into(),
    }
}

async fn busybox(d: &TestDaemon, registry: &str) -> String {
    let image = format!("{registry}/cri-lab/busybox:latest");
    pull(d, &image).await;
    image
}

async fn container_count(d: &TestDaemon) -> usize {
    common::list_containers(d).await.len()
}

async fn run_started(d: &TestDaemon, pod: &str, c: cri::ContainerConfig) -> String {
    let id = create(d, pod, c).await.expect("create");
    start(d, &id).await;
    id
}

/// `ls -ln` of one path in the container: (type and mode, uid, gid, major, minor).
async fn node_of(d: &TestDaemon, id: &str, path: &str) -> String {
    let out = exec(d, id, &["ls", "-ln", path]).await;
    assert_eq!(out.exit_code, 0, "{path}: {out:?}");
    let t = text(&out.stdout);
    let f: Vec<&str> = t.split_whitespace().collect();
    format!("{} {} {} {} {}", f[0], f[2], f[3], f[4], f[5])
}

/// `ls -ln` of a host path, in the form of [`node_of`].
fn host_node(path: &str) -> String {
    let out = std::process::Command::new("ls")
        .args(["-ln", path])
        .output()
        .unwrap();
    let t = text(&out.stdout);
    let f: Vec<&str> = t.split_whitespace().collect();
    format!("{} {} {} {} {}", f[0], f[2], f[3], f[4], f[5])
}

/// A user namespace's pod (hostUsers: false), as kubelet sends it.
fn userns_pod(d: &TestDaemon, name: &str) -> cri::PodSandboxConfig {
    let map = cri::IdMapping {
        container_id: 0,
        host_id: 65536,
        length: 65536,
    };
    let mut config = pod_config(name, &d.dir.path().join("logs"));
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                userns_options: Some(cri::UserNamespace {
                    mode: cri::NamespaceMode::Pod as i32,
                    uids: vec![map],
                    gids: vec![map],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// A daemon whose temp dir others may traverse (user namespace pods run as
/// mapped ids) and whose config file holds `toml`.
/// The Status answer, and the names of the runtime handlers it lists.
async fn status(d: &TestDaemon) -> cri::StatusResponse {
    d.runtime()
        .await
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
}

fn handler_names(status: &cri::StatusResponse) -> Vec<&str> {
    status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect()
}

fn daemon_with_config(toml: &str) -> TestDaemon {
    let toml = toml.to_string();
    let mut d = TestDaemon::start_in_with(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::write(dir.join("capcri.toml"), toml).unwrap();
    });
    let config = d.dir.path().join("capcri.toml");
    d.terminate();
    d.spawn(&["--config", config.to_str().unwrap()]);
    d
}

async fn supports_userns(d: &TestDaemon) -> bool {
    d.runtime()
        .await
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers
        .iter()
        .all(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces))
}

// ---------------------------------------------------------------- devices

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_devices_get_a_node_and_a_cgroup_rule_each() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let image = busybox(&d, &registry).await;
    let pod = run_pod(&d, "devices").await;
    // A raw-block volume as kubelet hands it over: a symlink under its own
    // directory to a block node (here a node made for loop7, 7:7).
    let blk_dir = d.dir.path().join("volumeDevices");
    std::fs::create_dir(&blk_dir).unwrap();
    let node = blk_dir.join("loop7-node");
    let c_node = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: mknod with a valid path and device number.
    assert_eq!(
        unsafe { libc::mknod(c_node.as_ptr(), libc::S_IFBLK | 0o640, libc::makedev(7, 7)) },
        0
    );
    let link = blk_dir.join("pvc-1");
    std::os::unix::fs::symlink(&node, &link).unwrap();
    let mut c = container_config("devs", &image, &["sleep", "600"]);
    c.devices = vec![
        // Read only: cpu_dma_latency (misc 10:259 or 10:125 by kernel) is
        // not one of the defaults.
        device("/dev/cpu_dma_latency", "/dev/dma", "r"),
        device(link.to_str().unwrap(), "/dev/xvda", "mrw"),
        // A directory (device plugins pass them): every node below it.
        device("/dev/net", "/dev/plugin-net", "rw"),
    ];
    let id = run_started(&d, &pod, c).await;

    // Nodes with the host's numbers, mode and owner.
    assert_eq!(
        node_of(&d, &id, "/dev/dma").await,
        host_node("/dev/cpu_dma_latency")
    );
    assert_eq!(node_of(&d, &id, "/dev/xvda").await, "brw-r----- 0 0 7, 7");
    if Path::new("/dev/net/tun").exists() {
        assert_eq!(
            node_of(&d, &id, "/dev/plugin-net/tun").await,
            host_node("/dev/net/tun")
        );
    }
    // The cgroup rule gives exactly the access asked for: dma is readable,
    // not writable.
    let read = exec(&d, &id, &["sh", "-c", "head -c 4 /dev/dma | wc -c"]).await;
    assert_eq!(text(&read.stdout).trim(), "4", "{read:?}");
    let write = exec(&d, &id, &["sh", "-c", "printf '\\0\\0\\0\\0' > /dev/dma"]).await;
    assert_ne!(write.exit_code, 0, "{write:?}");
    assert!(
        text(&write.stderr).contains("Operation not permitted"),
        "{write:?}"
    );
    // xvda: rw allowed (the open gets past the cgroup; an unbound loop
    // device answers ENXIO, not EPERM).
    let open = exec(&d, &id, &["sh", "-c", "head -c 1 /dev/xvda; echo rc=$?"]).await;
    assert!(
        !text(&open.stderr).contains("Operation not permitted"),
        "{open:?}"
    );
    // Another node for the same numbers made with mknod is no way around
    // the rule: still read only.
    let rdev =
        std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata("/dev/cpu_dma_latency").unwrap());
    let (dma_major, dma_minor) = (libc::major(rdev), libc::minor(rdev));
    let again = exec(
        &d,
        &id,
        &[
            "sh",
            "-c",
            &format!("mknod /tmp/d c {dma_major} {dma_minor} && printf '\\0\\0\\0\\0' > /tmp/d"),
        ],
    )
    .await;
    assert_ne!(again.exit_code, 0, "{again:?}");
    stop_and_remove_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_devices_are_refused_and_change_nothing() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let image = busybox(&d, &registry).await;
    let pod = run_pod(&d, "bad-devices").await;
    let file = d.dir.path().join("not-a-device");
    std::fs::write(&file, "x").unwrap();
    let link_to_file = d.dir.path().join("link-to-file");
    std::os::unix::fs::symlink(&file, &link_to_file).unwrap();
    let f = file.to_str().unwrap();
    let lf = link_to_file.to_str().unwrap();
    let empty_dir = d.dir.path().join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    let cases: Vec<(cri::Device, &str)> = vec![
        (
            device(f, "/dev/x", "rw"),
            "a regular file, not a character or block device",
        ),
        (device(lf, "/dev/x", "rw"), "a symlink to"),
        (
            device("/nonexistent/dev/sdz", "/dev/x", "rw"),
            "cannot be resolved",
        ),
        (device("/dev/null", "/dev/../etc/passwd", "rw"), "\"..\""),
        (device("/dev/null", "/dev/./x", "rw"), "\".\""),
        (device("/dev/null", "/etc/x", "rw"), "not under /dev"),
        (device("/dev/null", "dev/x", "rw"), "not absolute"),
        (device("/dev/null", "/dev/fd/x", "rw"), "/dev/fd"),
        (device("/dev/null", "/dev/pts/x", "rw"), "/dev/pts"),
        (device("/dev/null", "/dev/x", "rwx"), "'x'"),
        (device("/dev/null", "/dev/x", "read"), "'e'"),
        (device("/dev/null", "/dev/x", ""), "is empty"),
        (device("dev/null", "/dev/x", "rw"), "not an absolute path"),
        (
            device(empty_dir.to_str().unwrap(), "/dev/x", "rw"),
            "no device nodes",
        ),
    ];
    let before = container_count(&d).await;
    for (i, (dev, want)) in cases.into_iter().enumerate() {
        let mut c = container_config(&format!("bad{i}"), &image, &["sleep", "600"]);
        c.devices = vec![dev.clone()];
        let err = create(&d, &pod, c).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{dev:?}: {err:?}");
        assert!(
            err.message().contains("devices[0]"),
            "{dev:?}: {}",
            err.message()
        );
        assert!(err.message().contains(want), "{dev:?}: {}", err.message());
    }
    // A device under a volume's mount point would be made on the host.
    let vol = tempfile::tempdir().unwrap();
    let mut c = container_config("under-volume", &image, &["sleep", "600"]);
    c.mounts = vec![cri::Mount {
        container_path: "/dev/vol".into(),
        host_path: vol.path().to_str().unwrap().into(),
        ..Default::default()
    }];
    c.devices = vec![device("/dev/null", "/dev/vol/null", "rw")];
    let err = create(&d, &pod, c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("volume mounted at"),
        "{}",
        err.message()
    );
    assert_eq!(std::fs::read_dir(vol.path()).unwrap().count(), 0);
    assert_eq!(
        container_count(&d).await,
        before,
        "a refused create left a container"
    );
    // The names are free again: a good create with the same name works.
    let mut c = container_config("bad0", &image, &["sleep", "600"]);
    c.devices = vec![device("/dev/null", "/dev/mynull", "rw")];
    let id = run_started(&d, &pod, c).await;
    assert_eq!(node_of(&d, &id, "/dev/mynull").await, "crw-rw-rw- 0 0 1, 3");
    stop_and_remove_pod(&d, &pod).await;
}

/// The host's device nodes the way containerd's WithHostDevices walks /dev.
fn host_dev_nodes(dir: &Path, out: &mut Vec<String>) {
    use std::os::unix::fs::FileTypeExt;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            if !["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"]
                .contains(&name.as_str())
            {
                host_dev_nodes(&e.path(), out);
            }
        } else if (ft.is_char_device() || ft.is_block_device()) && name != "console" {
            out.push(e.path().to_string_lossy().to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_containers_get_the_host_devices() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let image = busybox(&d, &registry).await;
    let pod = run_privileged_pod(&d, "priv-devices").await;
    let mut c = container_config("priv", &image, &["sleep", "600"]);
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_started(&d, &pod, c).await;
    let mut host = Vec::new();
    host_dev_nodes(Path::new("/dev"), &mut host);
    host.sort();
    let listed = exec(
        &d,
        &id,
        &["sh", "-c", "find /dev -path /dev/pts -prune -o -path /dev/shm -prune -o -path /dev/mqueue -prune -o \\( -type c -o -type b \\) -print | sort"],
    )
    .await;
    let inside: Vec<String> = text(&listed.stdout).lines().map(str::to_string).collect();
    for node in &host {
        // /dev/ptmx becomes the runtime's link to pts/ptmx.
        if node == "/dev/ptmx" {
            continue;
        }
        assert!(
            inside.contains(node),
            "host node {node} missing in the container: {inside:?}"
        );
    }
    eprintln!(
        "{} host device nodes, all in the privileged container",
        host.len()
    );
    // Same numbers as the host's.
    for probe in ["/dev/kmsg", "/dev/loop0", "/dev/cpu_dma_latency"] {
        if !Path::new(probe).exists() {
            continue;
        }
        assert_eq!(node_of(&d, &id, probe).await, host_node(probe), "{probe}");
    }
    // The device cgroup allows all: a node no unprivileged container may
    // open opens here.
    let open = exec(
        &d,
        &id,
        &["sh", "-c", "head -c 4 /dev/cpu_dma_latency | wc -c"],
    )
    .await;
    assert_eq!(text(&open.stdout).trim(), "4", "{open:?}");
    stop_and_remove_pod(&d, &pod).await;
}

// ---------------------------------------------------------- oom_score_adj

/// The lowest oom_score_adj this test process may set; the daemon is its
/// child and inherits the same limit (see src/oom_score.rs).
fn kernel_floor() -> i32 {
    let set = |v: i32| std::fs::write("/proc/self/oom_score_adj", v.to_string()).is_ok();
    let current: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (mut refused, mut accepted) = (-1001, current);
    while accepted - refused > 1 {
        let mid = refused + (accepted - refused) / 2;
        if set(mid) {
            accepted = mid;
        } else {
            refused = mid;
        }
    }
    set(current);
    accepted
}

fn with_oom(mut c: cri::ContainerConfig, adj: i64) -> cri::ContainerConfig {
    c.linux.get_or_insert_with(Default::default).resources = Some(cri::LinuxContainerResources {
        oom_score_adj: adj,
        ..Default::default()
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_score_adj_is_honoured_down_to_the_kernel_floor() {
    let registry = require_privileged!();
    let floor = kernel_floor();
    eprintln!("kernel floor for this runtime: {floor}");
    let d = TestDaemon::start(&[]);
    let image = busybox(&d, &registry).await;
    // A shared-PID pod: pid 1 of its containers is the pod init, one of the
    // pod's own processes.
    let config = with_pod_namespaces(
        pod_config("oom", &d.dir.path().join("logs")),
        cri::NamespaceOption {
            pid: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        },
    );
    let pod = run_pod_with_config(&d, config).await;
    for (name, adj, want) in [
        ("guaranteed", Some(-997), (-997).max(floor)),
        ("critical", Some(-1000), (-1000).max(floor)),
        ("burstable", Some(500), 500),
        ("besteffort", Some(1000), 1000),
        ("none", None, 0.max(floor)),
    ] {
        let mut c = container_config(
            name,
            &image,
            &["sh", "-c", "cat /proc/self/oom_score_adj; sleep 600"],
        );
        c = with_pid_mode(c, cri::NamespaceMode::Pod);
        if let Some(adj) = adj {
            c = with_oom(c, adj);
        }
        let id = run_started(&d, &pod, c).await;
        // The container's own process (its init, which printed its value)...
        let logged = wait_for(
            "the init's oom_score_adj",
            Duration::from_secs(10),
            || async {
                let log = log_of(&d, name);
                let line = log.lines().next()?.to_string();
                Some(line.rsplit(' ').next()?.to_string())
            },
        )
        .await;
        assert_eq!(logged, want.to_string(), "{name}: init");
        // ... and what an exec runs.
        let execd = exec(&d, &id, &["cat", "/proc/self/oom_score_adj"]).await;
        assert_eq!(text(&execd.stdout).trim(), want.to_string(), "{name}: exec");
        // The pod init (pid 1 of the shared namespace): containerd's -998.
        let pod_init = exec(&d, &id, &["cat", "/proc/1/oom_score_adj"]).await;
        assert_eq!(
            text(&pod_init.stdout).trim(),
            (-998).max(floor).to_string(),
            "pod init"
        );
    }
    stop_and_remove_pod(&d, &pod).await;
}

// -------------------------------------------------------- runtime handlers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_every_handler_and_capcri_runs_user_namespaced_pods() {
    let registry = require_privileged!();
    let d = daemon_with_config("");
    let image = busybox(&d, &registry).await;
    let status = status(&d).await;
    let names = handler_names(&status);
    assert_eq!(names, ["", "capcri", "runc"]);
    for h in &status.runtime_handlers {
        assert!(
            h.features.as_ref().unwrap().recursive_read_only_mounts,
            "{h:?}"
        );
    }
    // An unknown handler: refused, naming the accepted ones.
    let err = d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("kata", &d.dir.path().join("logs"))),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("\"kata\"") && err.message().contains("\"\", \"capcri\", \"runc\""),
        "{}",
        err.message()
    );
    // RuntimeClass handler "capcri" with hostUsers: false.
    let run = d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(userns_pod(&d, "capcri-userns")),
            runtime_handler: "capcri".into(),
        })
        .await;
    if !supports_userns(&d).await {
        let err = run.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        eprintln!("user namespaces unsupported here: {}", err.message());
        return;
    }
    let pod = run
        .expect("capcri handler with hostUsers: false")
        .into_inner()
        .pod_sandbox_id;
    let id = run_started(&d, &pod, container_config("c", &image, &["sleep", "600"])).await;
    let map = exec(&d, &id, &["cat", "/proc/self/uid_map"]).await;
    let fields: Vec<String> = text(&map.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(fields, ["0", "65536", "65536"], "{map:?}");
    let sandbox = d
        .runtime()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(sandbox.runtime_handler, "capcri");
    stop_and_remove_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_handlers_replace_the_named_defaults() {
    let _registry = require_privileged!();
    let d = daemon_with_config("runtime_handlers = [\"gvisor\", \"kata-qemu\"]\n");
    let status = status(&d).await;
    let names = handler_names(&status);
    assert_eq!(names, ["", "gvisor", "kata-qemu"]);
    let err = d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("runc", &d.dir.path().join("logs"))),
            runtime_handler: "runc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("\"\", \"gvisor\", \"kata-qemu\""),
        "{}",
        err.message()
    );
    let pod = d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("gv", &d.dir.path().join("logs"))),
            runtime_handler: "gvisor".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    stop_and_remove_pod(&d, &pod).await;
}

// ------------------------------------------------------ PID TARGET mode

fn targeting(mut c: cri::ContainerConfig, target: &str) -> cri::ContainerConfig {
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Target as i32,
                target_id: target.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_target_joins_the_target_containers_pid_namespace() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let image = busybox(&d, &registry).await;
    let pod = run_pod(&d, "debug").await;
    let app = run_started(
        &d,
        &pod,
        container_config("app", &image, &["sh", "-c", "exec sleep 601"]),
    )
    .await;
    let debug = run_started(
        &d,
        &pod,
        targeting(
            container_config("debugger", &image, &["sleep", "600"]),
            &app,
        ),
    )
    .await;
    // The debug container sees the app as pid 1, and itself beside it.
    let ps = exec(
        &d,
        &debug,
        &[
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'",
        ],
    )
    .await;
    let out = text(&ps.stdout);
    assert!(out.starts_with("sleep 601"), "{ps:?}");
    // ... and the app sees the debugger's sleep.
    let seen = exec(
        &d,
        &app,
        &["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
    )
    .await;
    assert!(text(&seen.stdout).contains("sleep 600"), "{seen:?}");

    // A missing target.
    let err = create(
        &d,
        &pod,
        targeting(container_config("d2", &image, &["true"]), "nosuchcontainer"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("nosuchcontainer"),
        "{}",
        err.message()
    );
    // A target in another pod.
    let other_pod = run_pod(&d, "other").await;
    let err = create(
        &d,
        &other_pod,
        targeting(container_config("d3", &image, &["true"]), &app),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("its own pod"), "{}", err.message());
    // A stopped target.
    let stopped = create(&d, &pod, container_config("short", &image, &["true"]))
        .await
        .unwrap();
    start(&d, &stopped).await;
    common::wait_exited(&d, &stopped).await;
    let err = create(
        &d,
        &pod,
        targeting(container_config("d4", &image, &["true"]), &stopped),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not running"), "{}", err.message());
    // An empty target_id.
    let err = create(
        &d,
        &pod,
        targeting(container_config("d5", &image, &["true"]), ""),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    stop_and_remove_pod(&d, &other_pod).await;
    stop_and_remove_pod(&d, &pod).await;

    // A target in the host's PID namespace (a hostPID pod): TARGET would
    // hand the debugger the host's processes; refused, pointing to NODE.
    let config = with_pod_namespaces(
        pod_config("hostpid", &d.dir.path().join("logs")),
        cri::NamespaceOption {
            pid: cri::NamespaceMode::Node as i32,
            ..Default::default()
        },
    );
    let host_pod = run_pod_with_config(&d, config).await;
    let host_app = run_started(
        &d,
        &host_pod,
        common::with_pid_mode(
            container_config("host-app", &image, &["sleep", "600"]),
            cri::NamespaceMode::Node,
        ),
    )
    .await;
    let err = create(
        &d,
        &host_pod,
        targeting(container_config("d6", &image, &["true"]), &host_app),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("host's PID namespace"),
        "{}",
        err.message()
    );
    stop_and_remove_pod(&d, &host_pod).await;
}

// ---------------------------------------------------------- procMount

fn with_paths(mut c: cri::ContainerConfig, masked: &[&str], ro: &[&str]) -> cri::ContainerConfig {
    let sc = c
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default);
    sc.masked_paths = masked.iter().map(|s| s.to_string()).collect();
    sc.readonly_paths = ro.iter().map(|s| s.to_string()).collect();
    c
}

/// The mount points over /proc/* (masks and read-only binds) in the
/// container: `/proc` itself excluded.
async fn proc_submounts(d: &TestDaemon, id: &str) -> Vec<String> {
    let out = exec(d, id, &["cat", "/proc/self/mountinfo"]).await;
    let mut v: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = f.get(4)?;
            let opt = f.get(5)?.split(',').next()?;
            point
                .starts_with("/proc/")
                .then(|| format!("{point} {opt}"))
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_mount_default_lists_and_unmasked() {
    let registry = require_privileged!();
    let d = daemon_with_config("");
    let image = busybox(&d, &registry).await;
    let pod = run_pod(&d, "procmount").await;
    // No lists (crictl): the defaults.
    let default = run_started(
        &d,
        &pod,
        container_config("default", &image, &["sleep", "600"]),
    )
    .await;
    let got = proc_submounts(&d, &default).await;
    // (Of the defaults, those this kernel has: no /proc/kcore everywhere.)
    for p in ["/proc/keys", "/proc/timer_list"] {
        assert!(
            got.iter().any(|m| m.starts_with(&format!("{p} "))),
            "{p} unmasked: {got:?}"
        );
    }
    assert!(got.contains(&"/proc/sys ro".to_string()), "{got:?}");
    // Lists given (kubelet's Default, or any other): exactly those.
    let exact = run_started(
        &d,
        &pod,
        with_paths(
            container_config("exact", &image, &["sleep", "600"]),
            &["/proc/keys"],
            &["/proc/sys"],
        ),
    )
    .await;
    let got = proc_submounts(&d, &exact).await;
    assert_eq!(got, ["/proc/keys rw", "/proc/sys ro"], "{got:?}");
    stop_and_remove_pod(&d, &pod).await;

    // procMount: Unmasked, as kubelet sends it: empty lists, in a pod with
    // its own user namespace (the API server admits Unmasked only there).
    if !supports_userns(&d).await {
        eprintln!("skipped the Unmasked half: no user namespace support here");
        return;
    }
    let pod = run_pod_with_config(&d, userns_pod(&d, "unmasked")).await;
    let unmasked = run_started(
        &d,
        &pod,
        with_paths(
            container_config("unmasked", &image, &["sleep", "600"]),
            &[],
            &[],
        ),
    )
    .await;
    let got = proc_submounts(&d, &unmasked).await;
    assert!(
        got.is_empty(),
        "masks left with procMount Unmasked: {got:?}"
    );
    // The same pod with kubelet's Default lists: masked.
    let masked = run_started(
        &d,
        &pod,
        with_paths(
            container_config("masked", &image, &["sleep", "600"]),
            &["/proc/keys", "/proc/timer_list"],
            &["/proc/sys"],
        ),
    )
    .await;
    let got = proc_submounts(&d, &masked).await;
    assert_eq!(got.len(), 3, "{got:?}");
    stop_and_remove_pod(&d, &pod).await;
}

// ------------------------------------------------------------------- CDI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_devices_apply_their_edits_and_unknown_ones_are_named() {
    let registry = require_privileged!();
    let cdi_low = tempfile::tempdir().unwrap();
    let cdi_high = tempfile::tempdir().unwrap();
    let marker = cdi_high.path().join("hook-ran");
    let shared = cdi_high.path().join("shared-lib");
    std::fs::write(&shared, "from the vendor\n").unwrap();
    std::fs::write(
        cdi_high.path().join("example.yaml"),
        format!(
            r#"cdiVersion: "0.6.0"
kind: "example.com/dev"
containerEdits:
  env: ["VENDOR=example"]
  hooks:
    - hookName: createRuntime
      path: /bin/sh
      args: ["sh", "-c", "echo ran > {marker}"]
devices:
  - name: "a"
    containerEdits:
      env: ["DEV=a"]
      deviceNodes:
        - path: "/dev/example-dma"
          hostPath: "/dev/cpu_dma_latency"
          permissions: "r"
      mounts:
        - hostPath: "{shared}"
          containerPath: "/opt/vendor/lib"
          options: ["ro", "bind"]
  - name: "b"
    containerEdits:
      env: ["DEV_B=b"]
"#,
            marker = marker.display(),
            shared = shared.display()
        ),
    )
    .unwrap();
    // A broken file in the low-priority dir: reported, the rest still serve.
    std::fs::write(cdi_low.path().join("broken.yaml"), "cdiVersion: [").unwrap();
    let d = daemon_with_config(&format!(
        "cdi_spec_dirs = [\"{}\", \"{}\"]\n",
        cdi_low.path().display(),
        cdi_high.path().display()
    ));
    let image = busybox(&d, &registry).await;
    let pod = run_pod(&d, "cdi").await;
    let mut c = container_config("gpu", &image, &["sleep", "600"]);
    c.cdi_devices = vec![cri::CdiDevice {
        name: "example.com/dev=a".into(),
    }];
    // The annotation form device plugins use.
    c.annotations
        .insert("cdi.k8s.io/plugin_dev".into(), "example.com/dev=b".into());
    let id = run_started(&d, &pod, c).await;
    let env = text(&exec(&d, &id, &["env"]).await.stdout);
    for want in ["VENDOR=example", "DEV=a", "DEV_B=b"] {
        assert!(env.lines().any(|l| l == want), "{want} missing: {env}");
    }
    // The spec gives no mode: the host node's.
    assert_eq!(
        node_of(&d, &id, "/dev/example-dma").await,
        host_node("/dev/cpu_dma_latency")
    );
    // The node's cgroup rule: "r" only.
    let read = exec(&d, &id, &["sh", "-c", "head -c 4 /dev/example-dma | wc -c"]).await;
    assert_eq!(text(&read.stdout).trim(), "4", "{read:?}");
    let write = exec(
        &d,
        &id,
        &["sh", "-c", "printf '\\0\\0\\0\\0' > /dev/example-dma"],
    )
    .await;
    assert_ne!(write.exit_code, 0, "{write:?}");
    let lib = exec(&d, &id, &["cat", "/opt/vendor/lib"]).await;
    assert_eq!(text(&lib.stdout), "from the vendor\n", "{lib:?}");
    let ro = exec(&d, &id, &["sh", "-c", "echo x > /opt/vendor/lib"]).await;
    assert_ne!(ro.exit_code, 0, "{ro:?}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default(),
        "ran\n",
        "the createRuntime hook"
    );

    // Unknown devices: refused, naming the device, the directories searched
    // and the broken file.
    let before = container_count(&d).await;
    let mut c = container_config("nogpu", &image, &["sleep", "600"]);
    c.cdi_devices = vec![cri::CdiDevice {
        name: "example.com/dev=zzz".into(),
    }];
    let err = create(&d, &pod, c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    for want in [
        "example.com/dev=zzz",
        &cdi_low.path().display().to_string(),
        &cdi_high.path().display().to_string(),
        "broken.yaml",
    ] {
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    let mut c = container_config("badname", &image, &["sleep", "600"]);
    c.cdi_devices = vec![cri::CdiDevice {
        name: "gpu0".into(),
    }];
    let err = create(&d, &pod, c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("CDI_devices[0].name"),
        "{}",
        err.message()
    );
    assert_eq!(container_count(&d).await, before);
    stop_and_remove_pod(&d, &pod).await;
}
