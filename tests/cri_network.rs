//! CNI through the CRI: a pod on a bridge network gets an IP in its status,
//! its container sees it on eth0, and stop releases it (idempotently).

mod common;

use common::{TestDaemon, container_config, pod_config, pull};
use k8s_cri::v1 as cri;
use std::process::Command;

/// Removes the test's bridge even when the test fails.
struct Bridge(String);
impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_a_cni_address_and_release_it() {
    let registry = require_privileged!();
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("skipped: needs the containernetworking-plugins package (/usr/lib/cni/bridge)");
        return;
    }
    let n = std::process::id() % 200 + 20;
    let bridge = Bridge(format!("capcri-t{n}"));
    let d = TestDaemon::start_in_with(|dir| {
        let cni = dir.join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "capcri-test",
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge.0, "isGateway": false, "ipMasq": false,
                    "ipam": { "type": "host-local", "ranges": [[{ "subnet": format!("10.242.{n}.0/24") }]],
                              "dataDir": dir.join("ipam").display().to_string() }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } }
            ]
        });
        std::fs::write(cni.join("10-test.conflist"), conf.to_string()).unwrap();
    });
    let mut rt = d.runtime().await;
    let status = rt
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status),
        "a valid CNI config makes the network ready: {conditions:?}"
    );
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod_id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("net", &d.dir.path().join("logs"))),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    let pod = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let ip = pod.network.unwrap().ip;
    assert!(ip.starts_with(&format!("10.242.{n}.")), "pod ip {ip:?}");

    let ctr = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config("c", &busybox, &["sleep", "1000"])),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec![
                "ip".into(),
                "-4".into(),
                "addr".into(),
                "show".into(),
                "eth0".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("inet {ip}/24")), "{text}");

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stop");
    let leases: Vec<_> = std::fs::read_dir(d.dir.path().join("ipam").join("capcri-test"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leases.is_empty(),
        "the address is released at stop: {leases:?}"
    );
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stop again");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("remove");
    drop(bridge);
}
