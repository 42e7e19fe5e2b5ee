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

/// One bench run at a time: each checks afterwards that no `/tmp/cb-*`
/// mount of a bench is left, which a run going on beside it would have.
static ONE_BENCH_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bench_slot() -> std::sync::MutexGuard<'static, ()> {
    ONE_BENCH_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn quick_bench_against_capcri_reports_every_operation() {
    let registry = require_privileged!();
    let _slot = bench_slot();
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
    // And once more with no pods, after kubelet's periodic calls.
    assert!(memory["daemon_relisting"]["rss_kib"].as_u64() > Some(0));
    assert!(stdout.contains("relist"), "no relist row:\n{stdout}");
    // Per running pod: its monitor only, since the bench's pods ask for a
    // PID namespace per container as kubelet does (a shared-PID pod would
    // add the pod init, `--share-pid`); none when idle.
    assert_eq!(steps[0]["per_pod"]["processes"], 0);
    assert_eq!(steps[2]["per_pod"]["processes"], 4);
    // The monitors' template, one per daemon, is reported apart.
    assert_eq!(steps[2]["helpers"]["processes"], 1);

    // The state directory was a tmpfs, as /run is on a node (the mount
    // failing fails the run), and the report says so.
    assert!(
        report["notes"].as_array().expect("notes").iter().any(|n| n
            .as_str()
            .is_some_and(|n| n.starts_with("state:") && n.contains("tmpfs"))),
        "{}",
        report["notes"]
    );

    // The bench's own workspace is gone: no /tmp/cb-* of this run mounted.
    no_bench_mounts_left();
}

/// Runs capcri-bench with `args` against capcri alone; returns its table
/// and its JSON report.
fn bench(registry: &str, args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_capcri-bench"))
        .args(["--runtimes", "capcri", "--registry", registry])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run capcri-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "capcri-bench {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written"))
        .expect("valid JSON");
    (stdout, report)
}

fn no_bench_mounts_left() {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let left: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with("/tmp/cb-"))
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

#[test]
fn scale_bench_times_every_steady_call_at_each_size() {
    let registry = require_privileged!();
    let _slot = bench_slot();
    let (table, report) = bench(
        &registry,
        &[
            "--scale",
            "2,1",
            "--scale-samples",
            "3",
            "--scale-concurrency",
            "2",
            "--scale-cycles",
            "2",
        ],
    );
    assert_eq!(report["sizes"], serde_json::json!([1, 2]));
    let steps = report["runtimes"][0]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    for (step, pods) in steps.iter().zip([1u64, 2]) {
        assert_eq!(step["pods"].as_u64(), Some(pods));
        for call in [
            "ListPodSandbox",
            "ListContainers",
            "ListContainerStats",
            "ListPodSandboxStats",
            "PodSandboxStatus",
            "ContainerStatus",
        ] {
            assert!(table.contains(call), "table lacks {call}:\n{table}");
            assert_eq!(
                step["ops"][call]["count"].as_u64(),
                Some(3),
                "{call} at {pods}"
            );
            // The same samples until the answer was in, before decoding:
            // never later than decoded.
            let answered = &step["answered"][call];
            assert_eq!(answered["count"].as_u64(), Some(3), "{call} at {pods}");
            assert!(
                answered["median_ms"].as_f64() <= step["ops"][call]["median_ms"].as_f64(),
                "{call} at {pods}: {answered} after {}",
                step["ops"][call]
            );
        }
        assert!(table.contains("until the answer was in"), "{table}");
        // One more pod's life at this size, every call of it timed.
        assert!(
            table.contains(&format!("one more pod at {pods} pods")),
            "{table}"
        );
        for call in [
            "RunPodSandbox",
            "CreateContainer",
            "StartContainer",
            "RemoveContainer",
            "RemovePodSandbox",
        ] {
            assert_eq!(
                step["cycle"][call]["count"].as_u64(),
                Some(2),
                "{call} cycles at {pods}"
            );
        }
        // One monitor per running pod (measured before the cycles), and the
        // daemon measured.
        assert_eq!(step["per_pod"]["processes"].as_u64(), Some(pods));
        assert!(step["daemon"]["rss_kib"].as_u64() > Some(0));
    }
    let growth = report["runtimes"][0]["growth"].as_array().expect("growth");
    assert_eq!(growth.len(), 1);
    assert!(growth[0]["exponent"]["ListContainers"].is_number());
    no_bench_mounts_left();
}

#[test]
fn pull_bench_generates_pushes_and_pulls_a_small_image() {
    let registry = require_privileged!();
    let _slot = bench_slot();
    let (table, report) = bench(
        &registry,
        &["--pull", "--pull-mib", "5", "--pull-iterations", "1"],
    );
    let layers = report["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 5);
    for codec in ["Gzip", "Zstd"] {
        assert!(
            layers.iter().any(|l| l["plan"]["codec"] == codec),
            "{codec}"
        );
    }
    let rt = &report["runtimes"][0];
    assert_eq!(rt["pulls"].as_array().map(Vec::len), Some(1));
    assert!(rt["pulls"][0]["seconds"].as_f64() > Some(0.0));
    assert!(rt["max_peak_daemon_rss_kib"].as_u64() > Some(0));
    assert!(table.contains("capcri-bench/large:5m-"), "{table}");
    no_bench_mounts_left();
}
