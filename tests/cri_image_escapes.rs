//! Hostile image content through the CRI socket (issue 12 items 1 and 3):
//! layers that swap a parent directory for a symlink to a host directory
//! after writing below it, and images whose /etc/passwd or /etc/group is a
//! FIFO, a device, a symlink to a host file or huge.

mod common;

use common::crafted::{CraftedImage, Entry, busybox_layers, tar_layer};
use common::{TestDaemon, container_config, pull};
use k8s_cri::v1 as cri;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Path, mode, owner, mtime, link count and xattr names of `dir` and all
/// below it: equal before and after means nothing there was touched.
type Snapshot = Vec<(String, u32, u32, u32, i64, i64, u64, Vec<String>)>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("stat");
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        // SAFETY: a valid path and a buffer of the given length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        let names = if n > 0 {
            buf[..n as usize]
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        } else {
            Vec::new()
        };
        out.push((
            p.display().to_string(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec(),
            m.nlink(),
            names,
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
        }
    }
    out.sort();
    out
}

fn set_mtime(p: &Path, secs: u64) {
    std::fs::File::open(p)
        .and_then(|f| f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs)))
        .expect("set mtime");
}

/// `<tmp>/host/victim` (0750, owned 4321:4321, mtime 1000) with a file
/// `keep`: the host directory the layers aim at.
fn host_victim() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix("ccvictim")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let host = tmp.path().join("host");
    let victim = host.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), b"keep").unwrap();
    for p in [&victim, &victim.join("keep")] {
        std::os::unix::fs::chown(p, Some(4321), Some(4321)).unwrap();
    }
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&victim.join("keep"), 1000);
    set_mtime(&victim, 1000);
    set_mtime(&host, 2000);
    (tmp, host)
}

async fn pull_result(d: &TestDaemon, image: &str) -> Result<String, tonic::Status> {
    let mut images = d.images().await;
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// Issue 12 item 1, the reported case: `x/`, `x/victim/` (0777, mtime 0),
/// then `x` replaced by a symlink to the host dir. The pull succeeds (a
/// symlink replacing a directory is legal), and the deferred chmod/utimes
/// of `x/victim` never reach the host's `victim`. Then every other
/// operation below the swapped `x` (file, dir with owner and xattr,
/// symlink, fifo, hard link as destination and as source, whiteout, opaque
/// marker) is refused, and the host tree is untouched by all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_parent_never_reaches_a_host_directory() {
    let registry = require_privileged!();
    let (_tmp, host) = host_victim();
    let before = snapshot(&host);
    let host_s = host.to_str().unwrap().to_string();
    let d = TestDaemon::start(&[]);

    let swap = || {
        vec![
            Entry::dir("x/", 0o755),
            Entry::Dir {
                path: "x/victim/".into(),
                mode: 0o777,
                mtime: 0,
            },
            Entry::file("real", 0o644, b"r"),
            Entry::symlink("x", &host_s),
        ]
    };
    let image = CraftedImage {
        layers: vec![tar_layer(&swap())],
        config: serde_json::json!({}),
    }
    .push(&registry, "cri-lab/escape-deferred", "latest");
    pull(&d, &image).await;
    assert_eq!(
        snapshot(&host),
        before,
        "deferred chmod/utimes reached the host"
    );

    let ops: Vec<(&str, Entry, &str)> = vec![
        (
            "file",
            Entry::file("x/victim/f", 0o644, b"pwned"),
            "x/victim/f",
        ),
        (
            "overwrite",
            Entry::file("x/victim/keep", 0o666, b"pwned"),
            "x/victim/keep",
        ),
        (
            "chown-xattr",
            Entry::Dir {
                path: "x/victim/".into(),
                mode: 0o777,
                mtime: 0,
            }
            .with_meta(0, 0, &[("user.pwned", b"1")]),
            "x/victim/",
        ),
        (
            "symlink",
            Entry::symlink("x/victim/sl", "/etc/shadow"),
            "x/victim/sl",
        ),
        (
            "fifo",
            Entry::Fifo {
                path: "x/victim/p".into(),
                mode: 0o666,
            },
            "x/victim/p",
        ),
        (
            "link-dest",
            Entry::hard_link("x/victim/hl", "real"),
            "x/victim/hl",
        ),
        (
            "link-source",
            Entry::hard_link("stolen", "x/victim/keep"),
            "stolen",
        ),
        (
            "whiteout",
            Entry::file("x/.wh.victim", 0o644, b""),
            "x/.wh.victim",
        ),
        (
            "whiteout-file",
            Entry::file("x/victim/.wh.keep", 0o644, b""),
            "x/victim/.wh.keep",
        ),
        (
            "opaque",
            Entry::file("x/victim/.wh..wh..opq", 0o644, b""),
            "x/victim/.wh..wh..opq",
        ),
    ];
    for (name, op, entry) in ops {
        let mut entries = swap();
        entries.push(op);
        let image = CraftedImage {
            layers: vec![tar_layer(&entries)],
            config: serde_json::json!({}),
        }
        .push(&registry, &format!("cri-lab/escape-{name}"), "latest");
        let t = Instant::now();
        let err = pull_result(&d, &image)
            .await
            .expect_err(&format!("{name}: the layer must be refused"));
        assert!(t.elapsed() < Duration::from_secs(30), "{name}: prompt");
        assert!(
            err.message().contains("refused")
                && err.message().contains(&format!("{entry:?}"))
                && err.message().contains("symlink"),
            "{name}: names the entry and the cause: {}",
            err.message()
        );
        assert_eq!(snapshot(&host), before, "{name} changed the host tree");
    }
    // Nothing of a refused layer stays in the store.
    let layers = d.data_dir().join("images/layers");
    if layers.exists() {
        assert_eq!(
            std::fs::read_dir(&layers).unwrap().count(),
            1,
            "only the one good layer is stored"
        );
    }
}

/// Issue 12 item 3: /etc/passwd or /etc/group that is a FIFO, a character
/// device, a directory, huge, or a symlink to a host file. CreateContainer
/// returns promptly with an error naming the file; a host file is never
/// read (a user only the host file names stays unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_databases_that_are_not_small_regular_files() {
    let registry = require_privileged!();
    let host = tempfile::Builder::new()
        .prefix("cchostpw")
        .tempdir_in("/tmp")
        .unwrap();
    let host_passwd = host.path().join("passwd");
    std::fs::write(&host_passwd, "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
    let base = busybox_layers(&registry);
    let d = TestDaemon::start(&[]);
    let pod = common::run_pod(&d, "userdb").await;

    let huge = {
        let mut v = b"root:x:0:0::/root:/bin/sh\n".to_vec();
        v.resize(3 << 20, b'#');
        v
    };
    let cases: Vec<(&str, Entry, &str)> = vec![
        (
            "passwd-fifo",
            Entry::Fifo {
                path: "etc/passwd".into(),
                mode: 0o644,
            },
            "/etc/passwd in the image is a FIFO, not a regular file",
        ),
        (
            "group-fifo",
            Entry::Fifo {
                path: "etc/group".into(),
                mode: 0o644,
            },
            "/etc/group in the image is a FIFO, not a regular file",
        ),
        (
            "passwd-chardev",
            Entry::CharDev {
                path: "etc/passwd".into(),
                mode: 0o644,
                major: 5,
                minor: 0,
            },
            "/etc/passwd in the image is a character device",
        ),
        (
            "group-dir",
            Entry::dir("etc/group/", 0o755),
            "/etc/group in the image is a directory",
        ),
        (
            "passwd-huge",
            Entry::file("etc/passwd", 0o644, &huge),
            "/etc/passwd in the image is larger than 1048576 bytes",
        ),
    ];
    for (name, entry, want) in cases {
        let mut layers = base.clone();
        layers.push(tar_layer(&[Entry::dir("etc/", 0o755), entry]));
        let image = CraftedImage {
            layers,
            config: serde_json::json!({ "Cmd": ["true"] }),
        }
        .push(&registry, &format!("cri-lab/userdb-{name}"), "latest");
        pull(&d, &image).await;
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            common::create(&d, &pod, container_config(name, &image, &[])),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: CreateContainer hung"));
        let err = r.expect_err(&format!("{name}: must be refused"));
        assert!(t.elapsed() < Duration::from_secs(10), "{name}: prompt");
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{name}: {err:?}"
        );
        assert!(
            err.message().contains(want) && err.message().contains("fix the image"),
            "{name}: {}",
            err.message()
        );
    }

    // Symlinks to a host file, absolute and relative: resolved inside the
    // rootfs, where they dangle, so the host's user "hostonly" is unknown.
    let depth = "../".repeat(12);
    for (name, target) in [
        ("abs", host_passwd.to_str().unwrap().to_string()),
        (
            "rel",
            format!(
                "{depth}{}",
                host_passwd.to_str().unwrap().trim_start_matches('/')
            ),
        ),
    ] {
        let mut layers = base.clone();
        layers.push(tar_layer(&[
            Entry::dir("etc/", 0o755),
            Entry::symlink("etc/passwd", &target),
        ]));
        let image = CraftedImage {
            layers,
            config: serde_json::json!({ "Cmd": ["id", "-u"], "User": "hostonly" }),
        }
        .push(&registry, &format!("cri-lab/userdb-link-{name}"), "latest");
        pull(&d, &image).await;
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            common::create(
                &d,
                &pod,
                container_config(&format!("link-{name}"), &image, &[]),
            ),
        )
        .await
        .expect("CreateContainer hung");
        let err = r.expect_err("the host's user must stay unknown");
        assert!(
            err.message().contains("hostonly"),
            "{name}: names the user: {}",
            err.message()
        );
    }
    // The daemon still serves and the pod goes away cleanly.
    common::stop_and_remove_pod(&d, &pod).await;
    assert!(common::mounts_under(d.dir.path()).is_empty());
}
