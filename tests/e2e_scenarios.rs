//! The e2e scenarios of e2e/scenarios/ run against capcri through the CRI,
//! the way kubelet would run them: each Pod manifest is translated to the
//! requests kubelet sends (tests/e2e_support/translate.rs), sent to a real
//! daemon started with the recommended policies or with none, and every
//! expectation of the scenario's `.expect.yaml` is asserted on the
//! container's state, exit code, log or CreateContainer error. This is the
//! runner CI uses; e2e/kubelet.sh and e2e/run.sh run the same files through
//! a real kubelet.

mod common;
mod e2e_support;

use common::{TestDaemon, pull};
use e2e_support::expect::{Expectation, Observed, PolicySet};
use e2e_support::translate::{NodeLayout, translate};
use e2e_support::{IMAGE_HOST, Scenario, load, scenario_dir};
use k8s_cri::v1 as cri;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a container may take to reach its expected outcome; a deadline
/// for a stuck run, not a timing assertion.
const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn every_scenario_loads_translates_and_expects_something() {
    let scenarios = load(&scenario_dir()).expect("scenarios load");
    assert!(scenarios.len() >= 5, "the five scenarios of issue 7");
    let layout = NodeLayout {
        pod_logs: Path::new("/var/log/pods"),
        seccomp_root: Path::new("/var/lib/kubelet/seccomp"),
        cgroup_parent: String::new(),
    };
    for s in &scenarios {
        let t = translate(&s.pod, &layout).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(t.containers.len(), s.pod.spec.containers.len());
        assert!(!s.expect.is_empty(), "{}", s.name);
    }
    let dns = scenarios
        .iter()
        .find(|s| s.name.starts_with("01-"))
        .expect("scenario 1");
    assert!(
        !dns.expectations(PolicySet::Recommended).is_empty()
            && !dns.expectations(PolicySet::None).is_empty(),
        "scenario 1 is asserted with and without the recommended policies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_with_the_recommended_policies() {
    let registry = require_privileged!();
    let mirror = format!("{IMAGE_HOST}={registry}");
    let d = TestDaemon::start_with_recommended_policies(&["--registry-mirror", &mirror]);
    run_all(&d, PolicySet::Recommended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_with_the_builtin_defaults() {
    let registry = require_privileged!();
    let mirror = format!("{IMAGE_HOST}={registry}");
    let d = TestDaemon::start(&["--registry-mirror", &mirror]);
    run_all(&d, PolicySet::None).await;
}

async fn run_all(d: &TestDaemon, policies: PolicySet) {
    let scenarios = load(&scenario_dir()).expect("scenarios load");
    let mut checked = 0;
    let mut failures = Vec::new();
    for s in &scenarios {
        let expectations = s.expectations(policies);
        if expectations.is_empty() {
            continue;
        }
        checked += expectations.len();
        for f in run_scenario(d, s, &expectations).await {
            failures.push(format!("{} ({policies:?} policies): {f}", s.name));
        }
    }
    assert!(checked > 0, "no expectation for {policies:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{checked} expectations of {policies:?} held");
}

/// What became of one container of the pod.
enum Created {
    Id(String),
    Refused(tonic::Status),
}

/// Runs one scenario pod like kubelet (pull, RunPodSandbox, then
/// CreateContainer and StartContainer per container), judges every
/// expectation and removes the pod. Returns the failed expectations.
async fn run_scenario(d: &TestDaemon, s: &Scenario, expectations: &[&Expectation]) -> Vec<String> {
    let layout = NodeLayout {
        pod_logs: &d.dir.path().join("pods"),
        seccomp_root: &d.dir.path().join("seccomp"),
        cgroup_parent: String::new(),
    };
    let t = translate(&s.pod, &layout).expect("translate");
    let images: BTreeSet<&str> = s
        .pod
        .spec
        .containers
        .iter()
        .map(|c| c.image.as_str())
        .collect();
    for image in images {
        pull(d, image).await;
    }
    let mut rt = d.runtime().await;
    let pod_id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(t.sandbox.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{}: RunPodSandbox: {e}", s.name))
        .into_inner()
        .pod_sandbox_id;
    let mut created: HashMap<String, (Created, String)> = HashMap::new();
    for config in &t.containers {
        let name = config.metadata.as_ref().expect("metadata").name.clone();
        let log = Path::new(&t.sandbox.log_directory)
            .join(&config.log_path)
            .display()
            .to_string();
        let outcome = match rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(config.clone()),
                sandbox_config: Some(t.sandbox.clone()),
            })
            .await
        {
            Ok(r) => {
                let id = r.into_inner().container_id;
                rt.start_container(cri::StartContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("{}/{name}: StartContainer: {e}", s.name));
                Created::Id(id)
            }
            Err(status) => Created::Refused(status),
        };
        created.insert(name, (outcome, log));
    }
    let mut failures = Vec::new();
    for e in expectations {
        let (outcome, log_path) = &created[&e.container];
        let deadline = Instant::now() + SETTLE;
        let seen = loop {
            let seen = observe(&mut rt, outcome, log_path).await;
            if e.settled(&seen) || Instant::now() > deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Err(f) = e.check(&seen) {
            failures.push(f);
        }
    }
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stop pod");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("remove pod");
    failures
}

async fn observe(
    rt: &mut cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    created: &Created,
    log_path: &str,
) -> Observed {
    let id = match created {
        Created::Refused(status) => {
            return Observed::CreateContainerError {
                message: format!("{:?}: {}", status.code(), status.message()),
            };
        }
        Created::Id(id) => id,
    };
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .expect("container status")
        .into_inner()
        .status
        .expect("status present");
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    match cri::ContainerState::try_from(status.state) {
        Ok(cri::ContainerState::ContainerRunning) => Observed::Running { log },
        Ok(cri::ContainerState::ContainerExited) => Observed::Terminated {
            exit_code: status.exit_code,
            log,
        },
        _ => Observed::Pending,
    }
}
