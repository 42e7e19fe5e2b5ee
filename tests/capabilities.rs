//! The capability engine through the CRI socket, with real containers:
//! ambient promotion, file-capability preflight, and the decision record.

mod common;

use common::{
    TestDaemon, container_config, create, exec, log_of, pull, run_pod, start, wait_exited, wait_for,
};
use k8s_cri::v1 as cri;
use std::time::Duration;

fn caps(add: &[&str], drop: &[&str]) -> cri::Capability {
    cri::Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
        add_ambient_capabilities: vec![],
    }
}

fn with_security(
    mut c: cri::ContainerConfig,
    capability: cri::Capability,
    no_new_privs: bool,
) -> cri::ContainerConfig {
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            capabilities: Some(capability),
            no_new_privs,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// A uid-1000 container with `capabilities.add: [NET_BIND_SERVICE]` running
/// a plain `nc` (no file capabilities) on :80.
fn bind80(registry: &str, name: &str, no_new_privs: bool) -> cri::ContainerConfig {
    let cmd = [
        "sh",
        "-c",
        "grep CapAmb /proc/self/status; exec nc -ll -p 80 -e echo hello from :80",
    ];
    with_security(
        container_config(name, &format!("{registry}/cri-lab/bind80:latest"), &cmd),
        caps(&["NET_BIND_SERVICE"], &[]),
        no_new_privs,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_defaults_refuse_the_bind_like_containerd() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    pull(&d, &format!("{registry}/cri-lab/bind80:latest")).await;
    let pod = run_pod(&d, "plain").await;
    let id = create(&d, &pod, bind80(&registry, "web", false))
        .await
        .expect("create");
    start(&d, &id).await;
    let exited = wait_exited(&d, &id).await;
    assert_eq!(exited.exit_code, 1);
    let log = log_of(&d, "web");
    assert!(log.contains("CapAmb:\t0000000000000000"), "{log}");
    assert!(log.contains("Permission denied"), "{log}");
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommended_policy_promotes_added_caps_to_ambient() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_recommended_policies(&[]);
    pull(&d, &format!("{registry}/cri-lab/bind80:latest")).await;
    let pod = run_pod(&d, "promoted").await;
    for (name, nnp) in [("web", false), ("web-nnp", true)] {
        let id = create(&d, &pod, bind80(&registry, name, nnp))
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
        // NET_BIND_SERVICE is bit 10.
        let log = log_of(&d, name);
        assert!(log.contains("CapAmb:\t0000000000000400"), "{name}: {log}");
        let info = common::verbose_info(&d, &id).await;
        let decision = &info["capabilityDecision"];
        assert_eq!(decision["allowed"], true);
        assert!(
            decision["caps"]["ambient"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "CAP_NET_BIND_SERVICE"),
            "{decision}"
        );
        let reasons = decision["reasons"].as_array().unwrap();
        assert!(
            reasons
                .iter()
                .any(|r| r["subject"] == "ambient:CAP_NET_BIND_SERVICE"
                    && r["source"]
                        .as_str()
                        .unwrap()
                        .contains("10-ambient-non-root")),
            "{decision}"
        );
        d.runtime()
            .await
            .stop_container(cri::StopContainerRequest {
                container_id: id,
                timeout: 0,
            })
            .await
            .unwrap();
    }
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_refuses_file_caps_outside_the_bounding_set() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_recommended_policies(&[]);
    let netadmin = format!("{registry}/cri-lab/filecaps-netadmin:latest");
    let filecaps = format!("{registry}/cri-lab/filecaps:latest");
    pull(&d, &netadmin).await;
    pull(&d, &filecaps).await;
    let pod = run_pod(&d, "preflight").await;

    // ping carries cap_net_admin,cap_net_raw+ep; NET_ADMIN is not in the default bounding set.
    let err = create(
        &d,
        &pod,
        container_config("nspawn-ping", &netadmin, &["ping", "-c", "1", "127.0.0.1"]),
    )
    .await
    .expect_err("preflight refuses");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let msg = err.message();
    assert!(msg.contains("/usr/local/bin/ping"), "{msg}");
    assert!(msg.contains("CAP_NET_ADMIN"), "{msg}");
    assert!(
        msg.to_lowercase().contains("add") && msg.contains("setcap"),
        "names both fixes: {msg}"
    );

    // Adding NET_ADMIN fixes it: ping works as uid 1000.
    let fixed = with_security(
        container_config(
            "nspawn-ping-fixed",
            &netadmin,
            &["ping", "-c", "1", "127.0.0.1"],
        ),
        caps(&["NET_ADMIN"], &[]),
        false,
    );
    let id = create(&d, &pod, fixed)
        .await
        .expect("create with NET_ADMIN");
    start(&d, &id).await;
    let exited = wait_exited(&d, &id).await;
    assert_eq!(exited.exit_code, 0, "{}", log_of(&d, "nspawn-ping-fixed"));

    // ping with cap_net_raw+ep: works with NET_RAW kept, refused with it dropped.
    let id = create(
        &d,
        &pod,
        container_config("ping-raw", &filecaps, &["ping", "-c", "1", "127.0.0.1"]),
    )
    .await
    .expect("create");
    start(&d, &id).await;
    assert_eq!(
        wait_exited(&d, &id).await.exit_code,
        0,
        "{}",
        log_of(&d, "ping-raw")
    );
    let dropped = with_security(
        container_config("ping-dropped", &filecaps, &["ping", "-c", "1", "127.0.0.1"]),
        caps(&[], &["NET_RAW"]),
        false,
    );
    let err = create(&d, &pod, dropped)
        .await
        .expect_err("NET_RAW dropped");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("CAP_NET_RAW"), "{err}");

    let listed = common::list_containers(&d).await;
    assert_eq!(listed.len(), 2, "refused creates leave nothing");
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_preflight_the_kernel_eperm_is_reported() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let netadmin = format!("{registry}/cri-lab/filecaps-netadmin:latest");
    pull(&d, &netadmin).await;
    let pod = run_pod(&d, "no-preflight").await;
    let id = create(
        &d,
        &pod,
        container_config("ip", &netadmin, &["ping", "-c", "1", "127.0.0.1"]),
    )
    .await
    .expect("built-in defaults create it, like containerd");
    let started = d
        .runtime()
        .await
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await;
    let status = wait_exited(&d, &id).await;
    assert_ne!(status.exit_code, 0);
    let text = format!("{started:?} {} {}", status.reason, status.message);
    assert!(
        text.contains("ermission") || text.contains("EPERM"),
        "{text}"
    );
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

const FORCE_DMZ: &str = r#"apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata:
  name: 30-force-dmz
spec:
  match: "container.name.startsWith('forced-dmz')"
  rules:
    - name: trampoline
      execPath: dmz
---
apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata:
  name: 40-preflight-off
spec:
  match: "container.name.endsWith('-unchecked')"
  rules:
    - name: let-the-kernel-decide
      preflight: "off"
"#;

/// runc's dmz regression, through the CRI: a non-root container with
/// allowPrivilegeEscalation=false whose entrypoint gets NET_RAW from its
/// file capabilities works on the direct path and under `auto`, and breaks
/// when the dmz trampoline's extra execve is forced on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_path_auto_never_changes_the_outcome_and_forced_dmz_breaks_it() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_policies(&[("30-force-dmz.yaml", FORCE_DMZ)], &[]);
    let filecaps = format!("{registry}/cri-lab/filecaps:latest");
    pull(&d, &filecaps).await;
    let pod = run_pod(&d, "dmz").await;
    let ping = ["ping", "-c", "1", "127.0.0.1"];
    // With preflight enforce, the engine predicts the breakage and refuses.
    let refused = create(
        &d,
        &pod,
        with_security(
            container_config("forced-dmz-nnp", &filecaps, &ping),
            caps(&[], &[]),
            true,
        ),
    )
    .await
    .expect_err("preflight predicts the dmz failure");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("no_new_privs"), "{refused}");

    let mut outcomes = Vec::new();
    for name in ["auto-nnp", "forced-dmz-nnp-unchecked"] {
        let cfg = with_security(
            container_config(name, &filecaps, &ping),
            caps(&[], &[]),
            true,
        );
        let id = create(&d, &pod, cfg).await.expect("create");
        let info = common::verbose_info(&d, &id).await;
        let path = info["capabilityDecision"]["exec_path"]
            .as_str()
            .unwrap()
            .to_string();
        start(&d, &id).await;
        let exited = wait_exited(&d, &id).await;
        outcomes.push((name, path, exited.exit_code, log_of(&d, name)));
    }
    let (_, auto_path, auto_code, auto_log) = &outcomes[0];
    assert_eq!(
        auto_path, "direct",
        "auto must not pick dmz when it changes the outcome"
    );
    assert_eq!(*auto_code, 0, "{auto_log}");
    let (_, dmz_path, dmz_code, dmz_log) = &outcomes[1];
    assert_eq!(dmz_path, "dmz");
    assert_ne!(
        *dmz_code, 0,
        "the extra execve under no_new_privs empties the permitted set: {dmz_log}"
    );
    assert!(dmz_log.contains("permission denied"), "{dmz_log}");

    // Root without file capabilities: auto may take dmz, and it works.
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let mut root = container_config("root-auto", &busybox, &["id", "-u"]);
    root.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(&d, &pod, root).await.expect("create root");
    start(&d, &id).await;
    assert_eq!(
        wait_exited(&d, &id).await.exit_code,
        0,
        "{}",
        log_of(&d, "root-auto")
    );
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

fn capcri(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_capcri"))
        .args(args)
        .output()
        .expect("run capcri")
}

/// `capcri explain` reads the stored decision of a live container from the
/// daemon; `capcri policy check`/`eval` work offline; a policy change takes
/// effect for new containers without restart, and an invalid change is
/// rejected whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_policy_reload_through_the_daemon() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_recommended_policies(&[]);
    let image = format!("{registry}/cri-lab/bind80:latest");
    pull(&d, &image).await;
    let pod = run_pod(&d, "explain").await;
    let id = create(&d, &pod, bind80(&registry, "web", false))
        .await
        .expect("create");

    let admin = d.admin_socket();
    let out = capcri(&[
        "explain",
        &id[..12],
        "--admin-socket",
        admin.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("ambient:CAP_NET_BIND_SERVICE"), "{text}");
    assert!(text.contains("10-ambient-non-root"), "{text}");
    let out = capcri(&[
        "explain",
        "no-such-container",
        "--admin-socket",
        admin.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // Offline check of the policy directory, and of a broken file.
    let policy_dir = d.policy_dir();
    let out = capcri(&["policy", "check", policy_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let broken = d.dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: capcri.dev/v1alpha1\nkind: CapabilityPolicy\nmetadata:\n  name: b\nspec:\n  match: \"container.name == \"\n  rules:\n    - add: [NET_ADMINN]\n",
    )
    .unwrap();
    let out = capcri(&["policy", "check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("broken.yaml:6:"), "{report}");

    // An invalid change is rejected whole: the old set stays in force.
    std::fs::copy(&broken, policy_dir.join("50-broken.yaml")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let id2 = create(&d, &pod, bind80(&registry, "web-2", false))
        .await
        .expect("old set still in force");
    let status = d
        .runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id2,
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.info["info"].contains("CAP_NET_BIND_SERVICE"));

    // A valid change takes effect for new containers without a restart.
    std::fs::remove_file(policy_dir.join("50-broken.yaml")).unwrap();
    std::fs::write(
        policy_dir.join("60-deny-web.yaml"),
        "apiVersion: capcri.dev/v1alpha1\nkind: CapabilityPolicy\nmetadata:\n  name: 60-deny-web\nspec:\n  match: \"container.name == 'web-3'\"\n  rules:\n    - deny:\n        condition: \"true\"\n        message: web-3 is not allowed on this node\n",
    )
    .unwrap();
    let denied = wait_for("the new policy", Duration::from_secs(10), || async {
        match create(&d, &pod, bind80(&registry, "web-3", false)).await {
            Err(e) => Some(e),
            Ok(id) => {
                d.runtime()
                    .await
                    .remove_container(cri::RemoveContainerRequest { container_id: id })
                    .await
                    .unwrap();
                None
            }
        }
    })
    .await;
    assert_eq!(denied.code(), tonic::Code::FailedPrecondition);
    assert!(
        denied
            .message()
            .contains("web-3 is not allowed on this node"),
        "{denied}"
    );
    // The running container keeps its decision.
    let out = capcri(&[
        "explain",
        &id,
        "--admin-socket",
        admin.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allowed"], true);
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

/// critest "Privileged is true" and "adding ALL capabilities": every
/// capability this node has (it may lack some, e.g. CAP_SYS_RESOURCE),
/// never a creation error for the ones it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_and_add_all_get_every_capability_the_host_has() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = common::run_privileged_pod(&d, "priv").await;
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let host_bnd = host
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap()
        .to_string();
    let script = [
        "sh",
        "-c",
        "grep -E 'CapEff|CapBnd' /proc/self/status; sleep 1000",
    ];
    let mut privileged = container_config("privileged", &busybox, &script);
    privileged.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let all = with_security(
        container_config("all", &busybox, &script),
        caps(&["ALL"], &[]),
        false,
    );
    for (name, cfg) in [("privileged", privileged), ("all", all)] {
        let id = create(&d, &pod, cfg)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        start(&d, &id).await;
        let log = wait_for("capability lines", Duration::from_secs(10), || async {
            let l = log_of(&d, name);
            l.contains("CapBnd").then_some(l)
        })
        .await;
        let bnd_hex = host_bnd.split_whitespace().nth(1).unwrap();
        assert!(
            log.contains(&format!("CapBnd:\t{bnd_hex}")),
            "{name}: {log} vs host {host_bnd}"
        );
        assert!(
            log.contains(&format!("CapEff:\t{bnd_hex}")),
            "{name}: {log}"
        );
    }
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

/// The recommended network defaults turned off, so binding :80 needs the
/// capability, and the dmz exec path forced for `dmz-*` containers.
const EXEC_POLICIES: [(&str, &str); 2] = [
    (
        "95-kernel-network-defaults.yaml",
        "apiVersion: capcri.dev/v1alpha1\nkind: CapabilityPolicy\nmetadata:\n  name: 95-kernel-network-defaults\nspec:\n  match: \"true\"\n  rules:\n    - unprivilegedPorts: 1024\n      unprivilegedICMP: false\n",
    ),
    (
        "96-force-dmz.yaml",
        "apiVersion: capcri.dev/v1alpha1\nkind: CapabilityPolicy\nmetadata:\n  name: 96-force-dmz\nspec:\n  match: \"container.name.startsWith('dmz-')\"\n  rules:\n    - execPath: dmz\n",
    ),
];

/// Issue 17 item 4: an ExecSync process (a probe) gets the container's
/// decision: its ambient set, exec path and no_new_privs, so a non-root
/// probe binds :80 exactly when the container can, on both exec paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync_processes_get_the_containers_ambient_set_and_exec_path() {
    let registry = require_privileged!();
    let d = TestDaemon::start_with_policies(&EXEC_POLICIES, &[]);
    pull(&d, &format!("{registry}/cri-lab/bind80:latest")).await;
    let pod = run_pod(&d, "exec-probe").await;
    for (name, nnp, path) in [
        ("direct-nnp", true, "direct"),
        ("dmz-nnp", true, "dmz"),
        ("dmz-plain", false, "dmz"),
    ] {
        let cmd = ["sh", "-c", "grep CapAmb /proc/self/status; exec sleep 600"];
        let config = with_security(
            container_config(name, &format!("{registry}/cri-lab/bind80:latest"), &cmd),
            caps(&["NET_BIND_SERVICE"], &[]),
            nnp,
        );
        let id = create(&d, &pod, config).await.expect("create");
        start(&d, &id).await;
        let decision = common::verbose_info(&d, &id).await["capabilityDecision"].clone();
        assert_eq!(decision["exec_path"], path, "{name}: {decision}");
        assert!(
            decision["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["subject"] == "exec"
                    && r["text"].as_str().unwrap().contains(&format!(
                        "exec path {path}, ambient CAP_NET_BIND_SERVICE, no_new_privs {nnp}"
                    ))),
            "{name}: explain must say what execs get: {decision}"
        );
        let init_amb = wait_for(
            "the container's CapAmb",
            Duration::from_secs(10),
            || async {
                let log = log_of(&d, name);
                log.lines()
                    .find_map(|l| l.split("CapAmb:\t").nth(1).map(str::to_string))
            },
        )
        .await;
        assert_eq!(init_amb, "0000000000000400", "{name}");
        // The probe: its own CapAmb and NoNewPrivs, then a bind of :80 as
        // uid 1000 (ip_unprivileged_port_start is 1024 in this pod).
        let out = exec(
            &d,
            &id,
            &[
                "sh",
                "-c",
                "grep -E 'CapAmb|NoNewPrivs' /proc/self/status; id -u; nc -ll -p 80 -e echo probe-bound & sleep 1; nc 127.0.0.1 80 </dev/null; kill $! 2>/dev/null; true",
            ],
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            text.contains(&format!("CapAmb:\t{init_amb}")),
            "{name}: {text} {err}"
        );
        assert!(
            text.contains(&format!("NoNewPrivs:\t{}", u8::from(nnp))),
            "{name}: {text}"
        );
        assert!(text.contains("1000\n"), "{name}: {text}");
        assert!(text.contains("probe-bound"), "{name}: {text} {err}");
        assert!(!err.contains("Permission denied"), "{name}: {err}");
        d.runtime()
            .await
            .stop_container(cri::StopContainerRequest {
                container_id: id,
                timeout: 0,
            })
            .await
            .unwrap();
    }
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}
