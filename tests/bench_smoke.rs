//! `capcri-bench --quick` against capcri alone: it completes, cleans up, and
//! its JSON report has every operation measured. No timing assertions: the
//! numbers depend on the machine.

mod common;

use std::process::Command;

const OPS: [&str; 10] = [
    "PullImage",
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "pod-to-running",
    "ExecSync",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

#[test]
fn quick_bench_against_capcri_reports_every_operation() {
    let registry = require_privileged!();
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_capcri-bench"))
        .args(["--quick", "--runtimes", "capcri", "--registry"])
        .arg(&registry)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run capcri-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "capcri-bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for op in OPS {
        assert!(stdout.contains(op), "table lacks {op}:\n{stdout}");
    }

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written"))
            .expect("valid JSON");
    let runtimes = report["runtimes"].as_array().expect("runtimes array");
    assert_eq!(runtimes.len(), 1);
    assert_eq!(runtimes[0]["name"], "capcri");
    let phases = runtimes[0]["phases"].as_array().expect("phases");
    assert_eq!(
        phases
            .iter()
            .map(|p| p["concurrency"].as_u64())
            .collect::<Vec<_>>(),
        vec![Some(1), Some(2)]
    );
    for phase in phases {
        for op in OPS {
            let count = phase["ops"][op]["count"].as_u64().unwrap_or(0);
            assert!(
                count > 0,
                "{op} at {}: no samples in {phase}",
                phase["concurrency"]
            );
        }
    }
    // Capcri's own rows: StartContainer on each exec path (the dmz one
    // through the bench's policy), one pod each per iteration, at c=1.
    for op in ["Start direct", "Start dmz"] {
        assert!(stdout.contains(op), "table lacks {op}:\n{stdout}");
        assert_eq!(phases[0]["ops"][op]["count"].as_u64(), Some(3), "{op}");
    }
    // The status/list probe ran while pods were being created.
    for op in ["status|creating", "list|creating"] {
        assert!(stdout.contains(op), "table lacks {op}:\n{stdout}");
        assert!(
            phases
                .iter()
                .any(|p| p["ops"][op]["count"].as_u64().unwrap_or(0) > 0),
            "no {op} samples"
        );
    }
    assert_eq!(report["iterations"], 3);
    let memory = &runtimes[0]["memory"];
    let steps = memory["steps"].as_array().expect("memory steps");
    assert_eq!(
        steps.iter().map(|s| s["pods"].as_u64()).collect::<Vec<_>>(),
        vec![Some(0), Some(2), Some(4)]
    );
    assert!(
        steps
            .iter()
            .all(|s| s["daemon"]["rss_kib"].as_u64() > Some(0))
    );
    // Per running pod: its monitor only, since the bench's pods ask for a
    // PID namespace per container as kubelet does (a shared-PID pod would
    // add the pod init, `--share-pid`); none when idle.
    assert_eq!(steps[0]["per_pod"]["processes"], 0);
    assert_eq!(steps[2]["per_pod"]["processes"], 4);
    // The monitors' template, one per daemon, is reported apart.
    assert_eq!(steps[2]["helpers"]["processes"], 1);

    // The bench's own workspace is gone: no /tmp/cb-* of this run mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let left: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with("/tmp/cb-"))
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}
