//! Security-context features capcri advertises in Status, checked with real
//! containers: recursive read-only mounts and SupplementalGroupsPolicy.

mod common;

use common::{TestDaemon, container_config, create, exec, pull, run_pod, start};
use k8s_cri::v1 as cri;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_mounts_cover_submounts() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let status = d
        .runtime()
        .await
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let handler = &status.runtime_handlers[0];
    assert!(
        handler
            .features
            .as_ref()
            .unwrap()
            .recursive_read_only_mounts
    );
    assert!(status.features.unwrap().supplemental_groups_policy);

    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    // A host directory with a writable submount.
    let host = d.dir.path().join("vol");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(host.join("sub"))
        .status()
        .unwrap();
    assert!(mounted.success());
    let pod = run_pod(&d, "rro").await;
    let mut ids = Vec::new();
    for (name, rro) in [("ro", false), ("rro", true)] {
        let mut c = container_config(name, &busybox, &["sleep", "1000"]);
        c.mounts = vec![cri::Mount {
            container_path: "/mnt".into(),
            host_path: host.display().to_string(),
            readonly: true,
            recursive_read_only: rro,
            ..Default::default()
        }];
        let id = create(&d, &pod, c)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        start(&d, &id).await;
        ids.push(id);
    }
    let plain = exec(&d, &ids[0], &["sh", "-c", "touch /mnt/sub/f && echo wrote"]).await;
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout).trim(),
        "wrote",
        "a plain ro bind leaves submounts writable"
    );
    let rro = exec(&d, &ids[1], &["sh", "-c", "touch /mnt/sub/g"]).await;
    assert_ne!(rro.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&rro.stderr).contains("Read-only file system"),
        "{:?}",
        rro
    );
    // rro with host-to-container propagation is refused (KEP-3857).
    let mut bad = container_config("rro-slave", &busybox, &["true"]);
    bad.mounts = vec![cri::Mount {
        container_path: "/mnt".into(),
        host_path: host.display().to_string(),
        readonly: true,
        recursive_read_only: true,
        propagation: cri::MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    }];
    let err = create(&d, &pod, bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    let _ = std::process::Command::new("umount")
        .arg(host.join("sub"))
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplemental_groups_policy_merge_and_strict() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    // USER 1000, a member of group 50000 in the image's /etc/group.
    let image = format!("{registry}/k8s-staging-cri-tools/test-image-predefined-group:latest");
    pull(&d, &image).await;
    let pod = run_pod(&d, "groups").await;
    for (name, policy, expect_image_group) in [
        ("merge", cri::SupplementalGroupsPolicy::Merge, true),
        ("strict", cri::SupplementalGroupsPolicy::Strict, false),
    ] {
        let mut c = container_config(name, &image, &["sleep", "1000"]);
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                supplemental_groups: vec![1234],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = create(&d, &pod, c)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        start(&d, &id).await;
        let out = exec(&d, &id, &["id", "-G"]).await;
        let groups: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert!(groups.contains(&"1234".to_string()), "{name}: {groups:?}");
        assert_eq!(
            groups.contains(&"50000".to_string()),
            expect_image_group,
            "{name}: {groups:?}"
        );
        let status = d
            .runtime()
            .await
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        let reported = status.user.unwrap().linux.unwrap().supplemental_groups;
        assert_eq!(
            reported.contains(&50000),
            expect_image_group,
            "{name}: reported {reported:?}"
        );
        assert!(reported.contains(&1234), "{name}: reported {reported:?}");
    }
    d.runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

/// The mounts a test makes on the host side, undone even when it fails.
struct HostMounts(Vec<std::path::PathBuf>);

impl Drop for HostMounts {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = std::process::Command::new("umount")
                .arg("-R")
                .arg("-l")
                .arg(p)
                .status();
        }
    }
}

fn sh(cmd: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd}");
}

fn host_sees_mount(path: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

/// Mount propagation as kubelet's mountPropagation modes promise it, with
/// real mounts on both sides: HostToContainer (rslave) sees the host's new
/// mounts, Bidirectional (rshared) also hands its own back to the host, and
/// None (private) neither. A Bidirectional volume on a private host mount
/// is refused at create, as containerd does, instead of silently not
/// propagating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_propagation_modes_reach_the_host_as_asked() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    // Privileged containers (to call mount) need a privileged pod.
    let pod = common::run_privileged_pod(&d, "propagation").await;
    let mut guard = HostMounts(Vec::new());

    let source = d.dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("flagFile"), b"x").unwrap();

    let cases = [
        (
            "private",
            cri::MountPropagation::PropagationPrivate,
            false,
            false,
        ),
        (
            "rslave",
            cri::MountPropagation::PropagationHostToContainer,
            true,
            false,
        ),
        (
            "rshared",
            cri::MountPropagation::PropagationBidirectional,
            true,
            true,
        ),
    ];
    for (name, propagation, host_to_container, container_to_host) in cases {
        // A shared host mount, as kubelet's pod volume dirs are.
        let vol = d.dir.path().join(name);
        std::fs::create_dir_all(vol.join("fromhost")).unwrap();
        std::fs::create_dir_all(vol.join("fromctr")).unwrap();
        sh(&format!(
            "mount --bind {0} {0} && mount --make-rshared {0}",
            vol.display()
        ));
        guard.0.push(vol.clone());

        let mut c = container_config(name, &busybox, &["sleep", "1000"]);
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        c.mounts = vec![cri::Mount {
            container_path: vol.display().to_string(),
            host_path: vol.display().to_string(),
            propagation: propagation as i32,
            ..Default::default()
        }];
        let id = create(&d, &pod, c)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let status = d
            .runtime()
            .await
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(status.mounts[0].propagation, propagation as i32, "{name}");
        start(&d, &id).await;

        // Host to container.
        sh(&format!(
            "mount --bind {} {}",
            source.display(),
            vol.join("fromhost").display()
        ));
        let seen = exec(
            &d,
            &id,
            &[
                "test",
                "-e",
                &format!("{}/fromhost/flagFile", vol.display()),
            ],
        )
        .await;
        assert_eq!(
            seen.exit_code == 0,
            host_to_container,
            "{name}: host to container"
        );

        // Container to host.
        let target = vol.join("fromctr");
        let r = exec(
            &d,
            &id,
            &["mount", "-t", "tmpfs", "ctr", target.to_str().unwrap()],
        )
        .await;
        assert_eq!(r.exit_code, 0, "{name}: {r:?}");
        assert_eq!(
            host_sees_mount(&target),
            container_to_host,
            "{name}: container to host"
        );
    }

    // Bidirectional on a private host mount: refused, with the fix named.
    let private = d.dir.path().join("private-src");
    std::fs::create_dir_all(&private).unwrap();
    sh(&format!(
        "mount --bind {0} {0} && mount --make-rprivate {0}",
        private.display()
    ));
    guard.0.push(private.clone());
    let mut c = container_config("refused", &busybox, &["true"]);
    c.mounts = vec![cri::Mount {
        container_path: "/mnt".into(),
        host_path: private.display().to_string(),
        propagation: cri::MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    let err = create(&d, &pod, c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("mount --make-rshared"), "{err}");

    common::stop_and_remove_pod(&d, &pod).await;
}
