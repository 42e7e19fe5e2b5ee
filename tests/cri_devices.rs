//! The device cgroup and /dev's mount options through the CRI (issue 12
//! item 8): a root container with CAP_MKNOD makes a node for the host's
//! disk and cannot open it; /dev and the other pseudo filesystems carry
//! the options runc gives them. The same assertions run on cgroup v1 (the
//! devices controller) and cgroup v2 (libcgroups' eBPF program, the
//! `cgroupsv2_devices` feature); the test says which one it checked.

mod common;

use common::{
    TestDaemon, container_config, create, exec, pull, run_pod, run_privileged_pod, start,
    stop_and_remove_pod,
};
use k8s_cri::v1 as cri;
use std::os::unix::fs::MetadataExt;

/// "v2" on a unified hierarchy, "v1" where the devices controller is a v1
/// hierarchy (this repository's CI host is hybrid).
fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    }
}

/// major:minor of a block device this host's root can read: the one
/// behind `/` where it can, else the first other one (a root on overlay or
/// tmpfs has none, and a test host may forbid its own disk): the container
/// being refused what the host allows is what proves its device rules.
/// None when the host's root can read no block device at all.
fn host_disk() -> Option<(u64, u64)> {
    let dev = std::fs::metadata("/").unwrap().dev();
    let root = (libc::major(dev) as u64, libc::minor(dev) as u64);
    let mut candidates = vec![root];
    for e in std::fs::read_dir("/sys/dev/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((a, b)) = name.split_once(':')
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
        {
            candidates.push((a, b));
        }
    }
    candidates
        .into_iter()
        .find(|&(major, minor)| major != 0 && host_can_read(major, minor))
}

/// Whether this (host, root) process can read the block device: where the
/// machine around the tests forbids it, a privileged container cannot
/// either, and that is no fault of the container's device rules.
fn host_can_read(major: u64, minor: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("disk");
    let Ok(c) = std::ffi::CString::new(node.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: mknod with a valid path and a block device number.
    let made = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major as u32, minor as u32),
        )
    } == 0;
    made && std::fs::File::open(&node).is_ok()
}

fn with_caps(mut c: cri::ContainerConfig, add: &[&str]) -> cri::ContainerConfig {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .capabilities = Some(cri::Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_with_mknod_cannot_open_the_host_disk() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let Some((major, minor)) = host_disk() else {
        eprintln!(
            "skipped: this host's root can read no block device, so no refusal would prove anything"
        );
        return;
    };
    eprintln!(
        "device cgroup checked on cgroup {}, host disk {major}:{minor}",
        cgroup_version()
    );
    let pod = run_pod(&d, "devices").await;
    let c = with_caps(
        container_config("mknod", &busybox, &["sleep", "600"]),
        &["MKNOD", "SYS_ADMIN", "SYS_RAWIO"],
    );
    let id = create(&d, &pod, c).await.unwrap();
    start(&d, &id).await;
    // The node can be made (mknod of anything is allowed, as runc does)...
    let made = exec(
        &d,
        &id,
        &[
            "sh",
            "-c",
            &format!("mknod /tmp/disk b {major} {minor} && mknod /tmp/dma c 10 103 && echo made"),
        ],
    )
    .await;
    assert_eq!(text(&made.stdout).trim(), "made", "{made:?}");
    // ... but neither read nor written, from an exec (it sits in the
    // container's device cgroup like the init): the host's root can read
    // both (checked above for the disk).
    for (node, what) in [
        ("/tmp/disk", "the host disk"),
        ("/tmp/dma", "/dev/cpu_dma_latency"),
    ] {
        for open in [
            format!("head -c 512 {node} > /dev/null"),
            format!("echo x > {node}"),
        ] {
            let out = exec(&d, &id, &["sh", "-c", &open]).await;
            assert_ne!(out.exit_code, 0, "{what} opened: {open}: {out:?}");
            assert!(
                text(&out.stderr).contains("Operation not permitted"),
                "{what}: {open}: {out:?}"
            );
        }
    }
    // The standard nodes still work.
    let ok = exec(
        &d,
        &id,
        &[
            "sh",
            "-c",
            "head -c 4 /dev/urandom > /dev/null && head -c 4 /dev/zero > /dev/full; echo > /dev/null && echo fine",
        ],
    )
    .await;
    assert!(text(&ok.stdout).contains("fine"), "{ok:?}");
    stop_and_remove_pod(&d, &pod).await;

    // A privileged container keeps the host's devices.
    let pod = run_privileged_pod(&d, "devices-priv").await;
    let mut c = container_config("priv", &busybox, &["sleep", "600"]);
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
    let id = create(&d, &pod, c).await.unwrap();
    start(&d, &id).await;
    let out = exec(
        &d,
        &id,
        &[
            "sh",
            "-c",
            &format!("mknod /tmp/disk b {major} {minor} && head -c 512 /tmp/disk > /dev/null && echo opened"),
        ],
    )
    .await;
    assert_eq!(text(&out.stdout).trim(), "opened", "{out:?}");
    stop_and_remove_pod(&d, &pod).await;
}

/// /dev is a tmpfs with nosuid and mode 755 (runc: nosuid,strictatime,
/// mode=755); /dev/pts, /dev/mqueue, /dev/shm, /proc and /sys carry nosuid
/// and noexec, and all but /dev/pts (a devpts is a device filesystem) and
/// /dev itself carry nodev.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_and_pseudo_filesystems_have_runc_options() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "devopts").await;
    let id = create(
        &d,
        &pod,
        container_config("opts", &busybox, &["sleep", "600"]),
    )
    .await
    .unwrap();
    start(&d, &id).await;
    let info = text(&exec(&d, &id, &["cat", "/proc/self/mountinfo"]).await.stdout);
    // mountinfo: id parent maj:min root mountpoint options ... - fstype source super-options
    let options = |point: &str| -> (String, String, String) {
        let line = info
            .lines()
            .rfind(|l| l.split_whitespace().nth(4) == Some(point))
            .unwrap_or_else(|| panic!("{point} not mounted:\n{info}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dash = fields.iter().position(|f| *f == "-").unwrap();
        (
            fields[5].to_string(),
            fields[dash + 1].to_string(),
            fields[dash + 3].to_string(),
        )
    };
    let has = |opts: &str, o: &str| opts.split(',').any(|x| x == o);
    let (dev, fstype, sb) = options("/dev");
    assert_eq!(fstype, "tmpfs");
    assert!(has(&dev, "nosuid"), "/dev: {dev}");
    assert!(has(&sb, "mode=755"), "/dev: {sb}");
    for point in ["/dev/pts", "/dev/mqueue", "/dev/shm", "/proc", "/sys"] {
        let (opts, _, _) = options(point);
        assert!(has(&opts, "nosuid"), "{point}: {opts}");
        assert!(has(&opts, "noexec"), "{point}: {opts}");
        if point != "/dev/pts" {
            assert!(has(&opts, "nodev"), "{point}: {opts}");
        }
    }
    stop_and_remove_pod(&d, &pod).await;
}
