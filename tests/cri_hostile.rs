//! Malformed and hostile CRI requests: the right gRPC code, a message that
//! names the cause, nothing changed, never a panic (the daemon keeps serving).

mod common;

use common::{TestDaemon, container_config, pod_config, pull, with_pid_mode};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_cleanly() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let mut rt = d.runtime().await;
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let logs = d.dir.path().join("logs");

    // Empty and wrong-kind ids.
    for (what, err) in [
        (
            "start empty",
            rt.start_container(cri::StartContainerRequest {
                container_id: String::new(),
            })
            .await
            .unwrap_err(),
        ),
        (
            "exec empty",
            rt.exec_sync(cri::ExecSyncRequest {
                container_id: String::new(),
                cmd: vec!["true".into()],
                timeout: 1,
            })
            .await
            .unwrap_err(),
        ),
        (
            "create in empty pod",
            rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: String::new(),
                config: Some(container_config("x", &busybox, &["true"])),
                sandbox_config: None,
            })
            .await
            .unwrap_err(),
        ),
        (
            "run without config",
            rt.run_pod_sandbox(cri::RunPodSandboxRequest::default())
                .await
                .unwrap_err(),
        ),
        (
            "container stats empty",
            rt.container_stats(cri::ContainerStatsRequest::default())
                .await
                .unwrap_err(),
        ),
        (
            "pod stats empty",
            rt.pod_sandbox_stats(cri::PodSandboxStatsRequest::default())
                .await
                .unwrap_err(),
        ),
    ] {
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
    }
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("h", &logs)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    // A pod id where a container id belongs, and the reverse.
    let err = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: pod.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
            config: Some(container_config("x", &busybox, &["true"])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // Absurd sizes: a 1 MiB label value, 10,000 labels, an unknown runtime handler.
    let mut big = pod_config("big", &logs);
    big.labels = (0..10_000)
        .map(|i| (format!("k{i}"), "v".repeat(100)))
        .collect::<HashMap<_, _>>();
    big.annotations.insert("huge".into(), "x".repeat(1 << 20));
    let big_pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(big),
            runtime_handler: String::new(),
        })
        .await;
    if let Ok(r) = big_pod {
        // Accepted is fine (containerd accepts it too) as long as it is kept exactly.
        let id = r.into_inner().pod_sandbox_id;
        let s = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.status.unwrap().annotations["huge"].len(), 1 << 20);
        // The stats answers carry its attributes whole too, alone and in
        // the list (written from the bytes kept with the record).
        let alone = rt
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .and_then(|s| s.attributes)
            .expect("attributes");
        assert_eq!(alone.id, id);
        assert_eq!(alone.labels.len(), 10_000);
        assert_eq!(alone.annotations["huge"].len(), 1 << 20);
        let listed = rt
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
                filter: Some(cri::PodSandboxStatsFilter {
                    id: id.clone(),
                    label_selector: HashMap::from([("k9999".into(), "v".repeat(100))]),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].attributes.as_ref(), Some(&alone));
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("handler", &logs)),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("kata"), "{err}");

    // Paths that escape: log_path with "..", a mount over /proc, a relative container path.
    let mut c = container_config("esc", &busybox, &["true"]);
    c.log_path = "../../../etc/cron.d/x".into();
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    for (name, container_path) in [
        ("proc", "/proc"),
        ("rel", "etc/x"),
        ("dots", "/tmp/../proc"),
    ] {
        let mut c = container_config(name, &busybox, &["true"]);
        c.mounts = vec![cri::Mount {
            container_path: container_path.into(),
            host_path: "/tmp".into(),
            ..Default::default()
        }];
        let err = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(c),
                sandbox_config: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
    }
    // Conflicting namespace options: TARGET pid without a target.
    let c = with_pid_mode(
        container_config("target", &busybox, &["true"]),
        cri::NamespaceMode::Target,
    );
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    // Nothing was created by any of it, and the daemon still serves.
    let listed = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "{listed:?}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    rt.version(cri::VersionRequest::default())
        .await
        .expect("still serving");
    assert!(common::mounts_under(d.dir.path()).is_empty());
}

/// The crafted-image kit of `tests/common/crafted.rs` works end to end: an
/// image pushed byte by byte by a test is pulled and run through the CRI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_image_is_pulled_and_run() {
    use common::crafted::{CraftedImage, Entry, busybox_layers, tar_layer};
    let registry = require_privileged!();
    let mut layers = busybox_layers(&registry);
    layers.push(tar_layer(&[
        Entry::dir("opt/", 0o755),
        Entry::file("opt/hello", 0o644, b"crafted\n"),
    ]));
    let image = CraftedImage {
        layers,
        config: serde_json::json!({ "Cmd": ["cat", "/opt/hello"] }),
    }
    .push(&registry, "cri-lab/crafted-smoke", "latest");
    let d = TestDaemon::start(&[]);
    pull(&d, &image).await;
    let pod = common::run_pod(&d, "crafted").await;
    let id = common::create(&d, &pod, container_config("c", &image, &[]))
        .await
        .expect("create");
    common::start(&d, &id).await;
    let status = common::wait_exited(&d, &id).await;
    assert_eq!(status.exit_code, 0);
    assert!(
        common::log_of(&d, "c").contains("crafted"),
        "log: {}",
        common::log_of(&d, "c")
    );
    common::stop_and_remove_pod(&d, &pod).await;
}
