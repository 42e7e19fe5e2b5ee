//! User namespaces (hostUsers: false) with real containers through the CRI
//! socket: the pod's mapping in /proc/self/uid_map, the image and a volume
//! owned by the container's root through idmapped mounts, and invalid
//! options refused before anything is made.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{
    TestDaemon, container_config, container_state, create, exec, pod_config, pull, start,
};
use k8s_cri::v1 as cri;

fn mapping(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id,
        host_id,
        length,
    }
}

fn userns(
    mode: cri::NamespaceMode,
    uids: Vec<cri::IdMapping>,
    gids: Vec<cri::IdMapping>,
) -> cri::NamespaceOption {
    cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: mode as i32,
            uids,
            gids,
        }),
        ..Default::default()
    }
}

fn pod_with(d: &TestDaemon, name: &str, ns: cri::NamespaceOption) -> cri::PodSandboxConfig {
    let mut config = pod_config(name, &d.dir.path().join("logs"));
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

async fn run(d: &TestDaemon, config: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    d.runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

fn out(r: &cri::ExecSyncResponse) -> String {
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// The test's temp dir is 0700; a container's processes run as the pod's
/// mapped root, which must be able to reach its rootfs and pod files.
fn daemon() -> TestDaemon {
    TestDaemon::start_in_with(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_user_namespace_maps_ids_and_idmaps_rootfs_and_volumes() {
    let registry = require_privileged!();
    let d = daemon();
    let status = d
        .runtime()
        .await
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let supported = status.runtime_handlers[0]
        .features
        .as_ref()
        .unwrap()
        .user_namespaces;
    let ns = userns(
        cri::NamespaceMode::Pod,
        vec![mapping(0, 65536, 65536)],
        vec![mapping(0, 65536, 65536)],
    );
    if !supported {
        // An older kernel or a filesystem without idmapped mounts: POD mode
        // is refused with the startup probe's reason, and nothing more can
        // be checked here.
        let err = run(&d, pod_with(&d, "userns", ns)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains("hostUsers: true"),
            "{}",
            err.message()
        );
        eprintln!(
            "skipped the rest: this node does not support idmapped overlay layers: {}",
            err.message()
        );
        return;
    }
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;

    // A volume owned by the host's root, with a root-only file.
    let vol = d.dir.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("secret"), "s").unwrap();
    std::fs::set_permissions(vol.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let pod = run(&d, pod_with(&d, "userns", ns.clone()))
        .await
        .expect("run pod");
    let mut c = container_config("app", &busybox, &["sleep", "1000"]);
    c.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: vol.display().to_string(),
        ..Default::default()
    }];
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = match create(&d, &pod, c).await {
        Ok(id) => id,
        Err(e) => {
            let log =
                std::fs::read_to_string(d.state_dir().join("pods").join(&pod).join("monitor.log"))
                    .unwrap_or_default();
            panic!("create: {e}\nmonitor log:\n{log}");
        }
    };
    start(&d, &id).await;

    let maps = exec(
        &d,
        &id,
        &["cat", "/proc/self/uid_map", "/proc/self/gid_map"],
    )
    .await;
    let text = out(&maps);
    let fields: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        fields,
        vec![vec!["0", "65536", "65536"], vec!["0", "65536", "65536"]],
        "{maps:?}"
    );

    // The image's files, unpacked as host root, belong to the pod's root;
    // and so does the volume, whose root-only file it can read.
    let owners = exec(
        &d,
        &id,
        &[
            "sh",
            "-c",
            "id -u; stat -c %u:%g / /bin /etc/passwd /etc/hosts /dev/shm /vol /vol/secret; cat /vol/secret",
        ],
    )
    .await;
    assert_eq!(
        out(&owners),
        "0\n0:0\n0:0\n0:0\n0:0\n0:0\n0:0\n0:0\ns",
        "stderr: {}",
        String::from_utf8_lossy(&owners.stderr)
    );

    // A volume write goes through the idmapping back to on-disk root; a
    // rootfs write lands in the container's own upper directory under the
    // mapped id, unprivileged on the host.
    let wrote = exec(
        &d,
        &id,
        &[
            "sh",
            "-c",
            "echo x > /vol/new && echo y > /rootfile && mkdir /vol/d && touch /dev/shm/s && echo ok",
        ],
    )
    .await;
    assert_eq!(out(&wrote).trim(), "ok", "{wrote:?}");
    let new = std::fs::metadata(vol.join("new")).unwrap();
    assert_eq!((new.uid(), new.gid()), (0, 0));
    let upper = d
        .data_dir()
        .join("containers")
        .join(&id)
        .join("upper/rootfile");
    assert_eq!(
        std::fs::metadata(&upper).unwrap().uid(),
        65536,
        "{}",
        upper.display()
    );

    // Inside, the exec is root and the pod's init (pid 1 of the shared PID
    // namespace) the unprivileged 65535, as a pause container (see
    // tests/cri_pod_init.rs); seen from the host, the container's
    // processes run as the mapped id.
    let status = exec(
        &d,
        &id,
        &["sh", "-c", "grep ^Uid: /proc/self/status /proc/1/status"],
    )
    .await;
    let uids: Vec<String> = out(&status)
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .collect();
    assert_eq!(uids, vec!["0", "65535"], "{status:?}");
    let host_uids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let cmd = std::fs::read_to_string(e.path().join("cmdline")).ok()?;
            let cgroup = std::fs::read_to_string(e.path().join("cgroup")).ok()?;
            (cmd.starts_with("sleep\0") && cgroup.contains(&id)).then(|| {
                status
                    .lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })?
        })
        .collect();
    assert_eq!(
        host_uids,
        vec![65536],
        "the container's sleep, as the host sees it"
    );

    // A second container joins the same user namespace.
    let mut c2 = container_config("second", &busybox, &["sleep", "1000"]);
    c2.linux = None;
    let id2 = create(&d, &pod, c2).await.expect("create second");
    start(&d, &id2).await;
    let a = exec(&d, &id, &["readlink", "/proc/self/ns/user"]).await;
    let b = exec(&d, &id2, &["readlink", "/proc/self/ns/user"]).await;
    assert!(out(&a).starts_with("user:["), "{a:?}");
    assert_eq!(out(&a), out(&b));
    let host_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
    assert_ne!(out(&a).trim(), host_ns.to_string_lossy());

    let rt = d.runtime().await;
    for cid in [&id, &id2] {
        let mut rt = rt.clone();
        rt.stop_container(cri::StopContainerRequest {
            container_id: cid.to_string(),
            timeout: 0,
        })
        .await
        .unwrap();
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: cid.to_string(),
        })
        .await
        .unwrap();
    }
    let mut rt = rt.clone();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    // The removed containers' directories are deleted after the answer
    // (the trash): wait for that, then the volume must be intact, the
    // deletion never having gone through its idmapped mount.
    let trash = d.state_dir().join("trash");
    common::wait_for(
        "the trash to empty",
        std::time::Duration::from_secs(20),
        || async {
            std::fs::read_dir(&trash)
                .map(|r| r.count() == 0)
                .unwrap_or(true)
                .then_some(())
        },
    )
    .await;
    assert_eq!(std::fs::read_to_string(vol.join("secret")).unwrap(), "s");
    assert!(vol.join("d").is_dir());
    assert!(
        common::mounts_under(d.dir.path()).is_empty(),
        "{:?}",
        common::mounts_under(d.dir.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_mode_keeps_the_host_user_namespace() {
    let registry = require_privileged!();
    let d = daemon();
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run(
        &d,
        pod_with(&d, "node", userns(cri::NamespaceMode::Node, vec![], vec![])),
    )
    .await
    .expect("run pod");
    let id = create(
        &d,
        &pod,
        container_config("c", &busybox, &["sleep", "1000"]),
    )
    .await
    .expect("create");
    start(&d, &id).await;
    let maps = exec(&d, &id, &["cat", "/proc/self/uid_map"]).await;
    let host = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    let norm = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    assert_eq!(norm(&out(&maps)), norm(&host));
    let _ = container_state(&d, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_user_namespace_options_are_refused_and_nothing_is_made() {
    let _registry = require_privileged!();
    let d = daemon();
    use cri::NamespaceMode::*;
    let one = || vec![mapping(0, 65536, 65536)];
    let cases = vec![
        (
            "two-mappings",
            userns(
                Pod,
                vec![mapping(0, 1000, 100000), mapping(0, 2000, 100000)],
                one(),
            ),
            "2 mappings",
        ),
        (
            "root-unmapped",
            userns(
                Pod,
                vec![mapping(1, 1000, 100000)],
                vec![mapping(1, 1000, 100000)],
            ),
            "container id 0",
        ),
        ("no-gids", userns(Pod, one(), vec![]), "gids"),
        (
            "zero-length",
            userns(Pod, vec![mapping(0, 1000, 0)], one()),
            "length 0",
        ),
        (
            "container-mode",
            userns(Container, vec![], vec![]),
            "not supported",
        ),
        (
            "target-mode",
            userns(Target, vec![], vec![]),
            "not supported",
        ),
        ("node-with-maps", userns(Node, one(), one()), "NODE mode"),
        (
            "host-network",
            cri::NamespaceOption {
                network: Node as i32,
                ..userns(Pod, one(), one())
            },
            "host's network",
        ),
    ];
    for (name, ns, want) in cases {
        let err = run(&d, pod_with(&d, name, ns)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains(want), "{name}: {}", err.message());
    }
    let pods = d
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    let made: Vec<_> = std::fs::read_dir(d.state_dir().join("pods"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "{made:?}");
    // The names were not reserved: a valid pod with one of them runs.
    run(
        &d,
        pod_with(&d, "two-mappings", userns(Node, vec![], vec![])),
    )
    .await
    .expect("the name is free");
}
