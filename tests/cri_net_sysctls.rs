//! Network sysctls as policy actions, through the CRI socket (issue 17
//! item 1): the recommended set reproduces containerd 2's defaults in a
//! pod's own network namespace, a pod's own sysctls win, a host-network
//! pod's (the node's) sysctls are never touched, and an operator can turn
//! the defaults off.

mod common;

use common::{
    TestDaemon, container_config, create, exec, log_of, pod_config, pull, run_pod_with_config,
    start, wait_exited, wait_for, with_pod_namespaces,
};
use k8s_cri::v1 as cri;
use std::time::Duration;

const PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
const PING_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

/// The recommended defaults, turned off by a policy that sorts after them.
const TURN_OFF: &str = r#"apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata:
  name: 99-kernel-network-defaults
spec:
  match: "true"
  rules:
    - unprivilegedPorts: 1024
      unprivilegedICMP: false
"#;

/// uid 1000 with every capability dropped (so no NET_BIND_SERVICE in any
/// set), printing the pod's two sysctls, then serving on :80.
fn server(registry: &str, name: &str) -> cri::ContainerConfig {
    let cmd = [
        "sh",
        "-c",
        &format!(
            "cat {PORT_START} {PING_RANGE}; grep CapBnd /proc/self/status; exec nc -ll -p 80 -e echo hello from :80"
        ),
    ];
    let mut c = container_config(name, &format!("{registry}/cri-lab/bind80:latest"), &cmd);
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

fn pod(d: &TestDaemon, name: &str) -> cri::PodSandboxConfig {
    pod_config(name, &d.dir.path().join("logs"))
}

async fn pod_info(d: &TestDaemon, id: &str) -> serde_json::Value {
    let status = d
        .runtime()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("verbose pod status")
        .into_inner();
    serde_json::from_str(&status.info["info"]).expect("verbose info is JSON")
}

/// `(key, outcome, source)` of the pod's policy sysctls.
fn outcomes(info: &serde_json::Value) -> Vec<(String, String, String)> {
    info["networkPolicy"]["sysctls"]
        .as_array()
        .expect("networkPolicy.sysctls")
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_string(),
                s["outcome"].as_str().unwrap().to_string(),
                s["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn remove_pod(d: &TestDaemon, id: String) {
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommended_set_lets_a_non_root_container_bind_80_without_the_capability() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_recommended_policies(&[]);
    pull(&d, &format!("{registry}/cri-lab/bind80:latest")).await;
    let host_before = (
        std::fs::read_to_string(PORT_START).unwrap(),
        std::fs::read_to_string(PING_RANGE).unwrap(),
    );

    // A pod with its own network namespace: containerd 2's defaults.
    let pod_id = run_pod_with_config(&d, pod(&d, "net-default")).await;
    let info = pod_info(&d, &pod_id).await;
    let got = outcomes(&info);
    for key in [
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ping_group_range",
    ] {
        assert!(
            got.iter().any(|(k, o, s)| k == key
                && o == "applied"
                && s.contains("30-unprivileged-network")),
            "{info}"
        );
    }
    let id = create(&d, &pod_id, server(&registry, "web"))
        .await
        .expect("create");
    start(&d, &id).await;
    let reply = wait_for("the server on :80", Duration::from_secs(10), || async {
        let out = exec(&d, &id, &["sh", "-c", "nc 127.0.0.1 80 </dev/null"]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("hello from :80").then_some(text)
    })
    .await;
    assert!(reply.contains("hello from :80"));
    let log = log_of(&d, "web");
    assert!(log.contains("stdout F 0\n"), "{log}");
    assert!(log.contains("stdout F 0\t2147483647\n"), "{log}");
    assert!(log.contains("CapBnd:\t0000000000000000"), "{log}");
    // The container's decision shows what its pod got, and from where.
    let decision = &common::verbose_info(&d, &id).await["capabilityDecision"];
    assert!(
        decision["sysctls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["key"] == "net.ipv4.ip_unprivileged_port_start"
                && s["value"] == "0"
                && s["outcome"] == "applied"),
        "{decision}"
    );
    remove_pod(&d, pod_id).await;

    // The pod's own sysctl wins over the policy default.
    let mut own = pod(&d, "net-own");
    own.linux.get_or_insert_with(Default::default).sysctls = [(
        "net.ipv4.ip_unprivileged_port_start".to_string(),
        "1024".to_string(),
    )]
    .into();
    let pod_id = run_pod_with_config(&d, own).await;
    let got = outcomes(&pod_info(&d, &pod_id).await);
    assert!(
        got.iter()
            .any(|(k, o, _)| k == "net.ipv4.ip_unprivileged_port_start" && o == "overriddenByPod"),
        "{got:?}"
    );
    let id = create(&d, &pod_id, server(&registry, "own"))
        .await
        .expect("create");
    start(&d, &id).await;
    assert_eq!(wait_exited(&d, &id).await.exit_code, 1);
    let log = log_of(&d, "own");
    assert!(log.contains("stdout F 1024\n"), "{log}");
    // The other default still applies.
    assert!(log.contains("stdout F 0\t2147483647\n"), "{log}");
    assert!(log.contains("Permission denied"), "{log}");
    remove_pod(&d, pod_id).await;

    // A host-network pod: skipped with a reason, the node untouched.
    let host = with_pod_namespaces(
        pod(&d, "net-host"),
        cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        },
    );
    let pod_id = run_pod_with_config(&d, host).await;
    let info = pod_info(&d, &pod_id).await;
    let got = outcomes(&info);
    assert_eq!(got.len(), 2, "{info}");
    assert!(
        got.iter().all(|(_, o, _)| o == "skippedHostNetwork"),
        "{info}"
    );
    assert!(
        info["networkPolicy"]["sysctls"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("host's network namespace"),
        "{info}"
    );
    let host_after = (
        std::fs::read_to_string(PORT_START).unwrap(),
        std::fs::read_to_string(PING_RANGE).unwrap(),
    );
    assert_eq!(host_before, host_after);
    remove_pod(&d, pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_the_bind_gets_eacces() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_policies(&[("99-kernel-network-defaults.yaml", TURN_OFF)], &[]);
    pull(&d, &format!("{registry}/cri-lab/bind80:latest")).await;
    let pod_id = run_pod_with_config(&d, pod(&d, "net-off")).await;
    let got = outcomes(&pod_info(&d, &pod_id).await);
    assert!(
        got.iter()
            .all(|(_, o, s)| o == "applied" && s.contains("99-kernel-network-defaults")),
        "{got:?}"
    );
    let id = create(&d, &pod_id, server(&registry, "off"))
        .await
        .expect("create");
    start(&d, &id).await;
    assert_eq!(wait_exited(&d, &id).await.exit_code, 1);
    let log = log_of(&d, "off");
    assert!(log.contains("stdout F 1024\n"), "{log}");
    assert!(log.contains("stdout F 1\t0\n"), "{log}");
    assert!(log.contains("Permission denied"), "{log}");
    remove_pod(&d, pod_id).await;
}
