//! CVE-2019-5736 class: a container must never reach the capcri binary
//! through /proc. From inside a running container, opening
//! `/proc/<pid>/exe` of its init, of pid 1 of its pid namespace and of
//! itself for writing must fail, on both exec paths (direct and the dmz
//! trampoline); no process in the container's pid namespace runs the
//! capcri binary on disk, and that binary is byte-identical afterwards.

mod common;

use common::{TestDaemon, container_config, create, exec, pull, run_pod, start};
use k8s_cri::v1 as cri;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;

const EXEC_PATHS: &str = r#"apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata:
  name: 30-exec-path-by-name
spec:
  match: "container.name.startsWith('dmz-')"
  rules:
    - name: trampoline
      execPath: dmz
---
apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata:
  name: 31-direct-by-name
spec:
  match: "container.name.startsWith('direct-')"
  rules:
    - name: no-trampoline
      execPath: direct
"#;

fn sha256_of(path: &str) -> String {
    hex::encode(Sha256::digest(
        std::fs::read(path).expect("read the capcri binary"),
    ))
}

/// Host pids whose pid namespace is the one of `pid`.
fn same_pid_namespace(pid: i64) -> Vec<i32> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("container pid ns");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&ns)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_exe_is_not_writable_from_inside_on_either_exec_path() {
    let registry = require_privileged!();
    let capcri_bin = env!("CARGO_BIN_EXE_capcri");
    let hash_before = sha256_of(capcri_bin);
    let bin_meta = std::fs::metadata(capcri_bin).unwrap();
    let d = TestDaemon::start_with_policies(&[("30-exec-paths.yaml", EXEC_PATHS)], &[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "cve-2019-5736").await;

    for (name, want_path) in [("direct-init", "direct"), ("dmz-init", "dmz")] {
        let id = create(
            &d,
            &pod,
            container_config(name, &busybox, &["sleep", "1000"]),
        )
        .await
        .expect("create");
        start(&d, &id).await;
        let info = common::verbose_info(&d, &id).await;
        assert_eq!(
            info["capabilityDecision"]["exec_path"].as_str(),
            Some(want_path),
            "{name}: the policy picks the exec path"
        );
        let host_pid = info["pid"].as_i64().expect("pid in verbose info");

        // Every target, opened read-write (`3<>`) and for append (`>>`):
        // pid 1 of the container's pid namespace, its init found by name
        // (the same process here), and the exec'd process itself.
        let script = r#"
            init=$(pidof sleep | tr ' ' '\n' | head -n 1)
            for target in /proc/1/exe /proc/$init/exe /proc/self/exe; do
                if (exec 3<>"$target") 2>/dev/null; then echo "OPENED-RW $target"; else echo "refused-rw $target"; fi
                if (echo x >> "$target") 2>/dev/null; then echo "APPENDED $target"; else echo "refused-append $target"; fi
                echo "link $target $(readlink "$target")"
            done
        "#;
        let out = exec(&d, &id, &["sh", "-c", script]).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{name}:\n{stdout}");
        assert!(
            !stdout.contains("OPENED-RW") && !stdout.contains("APPENDED"),
            "{name}: a container opened an exe for writing:\n{stdout}"
        );
        assert_eq!(
            stdout.matches("refused-").count(),
            6,
            "{name}: every attempt ran and was refused:\n{stdout}"
        );
        for line in stdout.lines().filter(|l| l.starts_with("link ")) {
            assert!(
                !line.ends_with(capcri_bin),
                "{name}: {line} resolves to the capcri binary on disk"
            );
        }
        // From the host: no process of the container's pid namespace runs
        // the capcri file on disk.
        let pids = same_pid_namespace(host_pid);
        assert!(pids.contains(&(host_pid as i32)), "{name}: {pids:?}");
        for p in pids {
            if let Ok(m) = std::fs::metadata(format!("/proc/{p}/exe")) {
                assert!(
                    (m.dev(), m.ino()) != (bin_meta.dev(), bin_meta.ino()),
                    "{name}: pid {p} runs {capcri_bin} itself"
                );
            }
        }
    }

    // The container's init is forked by the pod monitor and, until its
    // execve, its /proc/self/exe is the monitor's: that must be the sealed
    // in-memory copy, never the file on disk (the CVE-2019-5736 window).
    let monitors = common::processes_mentioning(&d.state_dir().join("pods"));
    assert!(!monitors.is_empty(), "the pod monitor runs");
    for p in monitors {
        let m = std::fs::metadata(format!("/proc/{p}/exe")).expect("monitor exe");
        assert!(
            (m.dev(), m.ino()) != (bin_meta.dev(), bin_meta.ino()),
            "monitor {p} runs {capcri_bin} from disk"
        );
    }

    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    assert_eq!(
        sha256_of(capcri_bin),
        hash_before,
        "the capcri binary on disk is unchanged"
    );
}
