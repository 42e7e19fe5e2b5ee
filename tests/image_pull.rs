//! Pulls from the local test registry (`CAPCRI_TEST_REGISTRY`, e.g.
//! 127.0.0.1:5000) as root (`CAPCRI_PRIVILEGED_TESTS`): file capabilities
//! kept, mirrors and manifest lists, whiteouts through a real overlay mount,
//! garbage collection, errors for missing images.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use capcri::image::{ImageError, ImageStore, ImageStoreConfig, RegistriesConfig, rootfs};

mod support;

/// The one gate (`tests/support`): root, CAPCRI_PRIVILEGED_TESTS and the
/// registry.
fn registry() -> Option<String> {
    support::privileged_registry()
}

fn store(root: &Path, reg: &str) -> ImageStore {
    let mut mirrors = BTreeMap::new();
    mirrors.insert("registry.k8s.io".to_string(), vec![reg.to_string()]);
    mirrors.insert("docker.io".to_string(), vec![format!("http://{reg}")]);
    ImageStore::open(ImageStoreConfig {
        root: root.to_path_buf(),
        registries: RegistriesConfig {
            mirrors,
            insecure: vec![],
        },
        max_layer_bytes: 512 << 20,
        max_entry_xattr_bytes: capcri::image::unpack::DEFAULT_MAX_ENTRY_XATTR_BYTES,
        max_compressed_layer_bytes: capcri::image::DEFAULT_MAX_COMPRESSED_LAYER_BYTES,
    })
    .unwrap()
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    capcri::image::unpack::get_xattr(path, name)
}

/// `cap_net_raw+ep` as setcap writes it: VFS_CAP_REVISION_2 with the
/// effective flag (0x02000001), permitted bit 13 (CAP_NET_RAW), no inheritable.
const NET_RAW_EP: [u8; 20] = [
    0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn layer_with(store: &ImageStore, rec: &capcri::image::ImageRecord, rel: &str) -> Option<PathBuf> {
    store
        .layer_dirs(rec)
        .unwrap()
        .into_iter()
        .rev()
        .map(|d| d.join(rel))
        .find(|p| fs::symlink_metadata(p).is_ok())
}

#[tokio::test]
async fn filecaps_are_kept() {
    let Some(reg) = registry() else { return };
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path(), &reg);
    let rec = store
        .pull(&format!("{reg}/cri-lab/filecaps:latest"), None)
        .await
        .unwrap();
    assert_eq!(
        rec.repo_tags,
        vec![format!("{reg}/cri-lab/filecaps:latest")]
    );
    assert!(rec.repo_digests[0].starts_with(&format!("{reg}/cri-lab/filecaps@sha256:")));
    assert_eq!(rec.uid_and_username(), (Some(1000), String::new()));
    let ping = layer_with(&store, &rec, "usr/local/bin/ping").expect("ping in a layer");
    assert_eq!(
        lgetxattr(&ping, "security.capability").as_deref(),
        Some(&NET_RAW_EP[..])
    );
    assert_eq!(
        rec.file_caps.get("/usr/local/bin/ping").map(Vec::as_slice),
        Some(&NET_RAW_EP[..])
    );
    // getcap, if installed, agrees.
    if let Ok(out) = std::process::Command::new("getcap").arg(&ping).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("cap_net_raw=ep") || text.contains("cap_net_raw+ep"),
            "getcap said {text:?}"
        );
    }
    // Pulling again is idempotent and reuses the store.
    let again = store
        .pull(&format!("{reg}/cri-lab/filecaps"), None)
        .await
        .unwrap();
    assert_eq!(again.id, rec.id);
    assert_eq!(store.list().len(), 1);
    assert!(store.remove(&rec.id).unwrap());
}

#[tokio::test]
async fn mirror_and_manifest_list() {
    let Some(reg) = registry() else { return };
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path(), &reg);
    let rec = store.pull("registry.k8s.io/pause:3.9", None).await.unwrap();
    assert_eq!(rec.repo_tags, vec!["registry.k8s.io/pause:3.9"]);
    assert_eq!(rec.repo_digests.len(), 1);
    assert!(rec.repo_digests[0].starts_with("registry.k8s.io/pause@sha256:"));
    // The index's entry for this node's CPU (amd64 or arm64).
    assert_eq!(
        rec.config.architecture().to_string(),
        capcri::image::host_arch()
    );
    assert_eq!(rec.uid_and_username(), (Some(65535), String::new()));
    // The tag points at a Docker manifest list: the repo digest is the list's, not the image manifest's.
    let list = reqwest_free_get_manifest_type(&reg, "pause", "3.9");
    assert!(list.contains("manifest.list"), "registry served {list}");
    // Same image through another name: one record, two tags.
    let direct = store.pull(&format!("{reg}/pause:3.9"), None).await.unwrap();
    assert_eq!(direct.id, rec.id);
    let merged = store.resolve("registry.k8s.io/pause:3.9").unwrap();
    assert_eq!(
        merged.repo_tags,
        vec![
            "registry.k8s.io/pause:3.9".to_string(),
            format!("{reg}/pause:3.9")
        ]
    );
    // docker.io through an explicit http:// mirror, OCI index with an attestation manifest.
    let bb = store.pull("busybox", None).await.unwrap();
    assert_eq!(bb.repo_tags, vec!["docker.io/library/busybox:latest"]);
    assert_eq!(
        store.resolve("docker.io/library/busybox").map(|r| r.id),
        Some(bb.id.clone())
    );
    let usage = store.fs_usage().unwrap();
    assert!(usage.used_bytes > 0 && usage.inodes_used > 10);
    assert!(store.remove("registry.k8s.io/pause:3.9").unwrap());
    assert!(
        store.resolve(&format!("{reg}/pause:3.9")).is_none(),
        "remove drops every tag of the image"
    );
    assert!(store.remove(&bb.id[7..19]).unwrap());
}

/// The media type the registry serves for a tag (raw HTTP/1.0 over TCP, no extra dependency).
fn reqwest_free_get_manifest_type(reg: &str, repo: &str, tag: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(reg).unwrap();
    write!(
        s,
        "HEAD /v2/{repo}/manifests/{tag} HTTP/1.0\r\nHost: {reg}\r\nAccept: application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
        .unwrap_or_default()
        .to_string()
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = rootfs::unmount(&self.0);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn whiteouts_through_overlay_and_gc() {
    let Some(reg) = registry() else { return };
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path(), &reg);
    let rec = store
        .pull(&format!("{reg}/cri-lab/whiteout:latest"), None)
        .await
        .unwrap();
    let layers = store.layer_dirs(&rec).unwrap();
    assert_eq!(layers.len(), rec.diff_ids.len());
    let c = tempfile::tempdir().unwrap();
    let (upper, work, target) = (
        c.path().join("upper"),
        c.path().join("work"),
        c.path().join("rootfs"),
    );
    for d in [&upper, &work, &target] {
        fs::create_dir(d).unwrap();
    }
    rootfs::mount_overlay(&layers, &upper, &work, &target).unwrap();
    let guard = Unmount(target.clone());
    assert_eq!(names(&target.join("data")), vec!["b", "link-to-b"]);
    assert_eq!(names(&target.join("opq")), vec!["y"]);
    let expect = fs::read_to_string(target.join("etc/testimages-expect")).unwrap_or_default();
    eprintln!("image expectations:\n{expect}");
    rootfs::unmount(&target).unwrap();
    rootfs::unmount(&target).unwrap(); // idempotent
    drop(guard);

    // Single-layer image with an upper dir.
    rootfs::mount_overlay(&layers[..1], &upper, &work, &target).unwrap();
    let guard = Unmount(target.clone());
    assert!(target.join("bin/busybox").exists());
    rootfs::unmount(&target).unwrap();
    drop(guard);

    // Only the config is stored as a blob: layers stream into the unpacker.
    assert_eq!(
        names(&root.path().join("blobs/sha256")),
        vec![rec.id.trim_start_matches("sha256:").to_string()],
        "blobs stored"
    );
    assert!(store.remove(&format!("{reg}/cri-lab/whiteout")).unwrap());
    assert!(!store.remove(&rec.id).unwrap());
    assert_eq!(
        fs::read_dir(root.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "blobs collected"
    );
    assert_eq!(
        fs::read_dir(root.path().join("layers")).unwrap().count(),
        0,
        "layer dirs collected"
    );
    for d in &layers {
        assert!(!d.exists());
    }
}

#[tokio::test]
async fn missing_image_is_not_found() {
    let Some(reg) = registry() else { return };
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path(), &reg);
    let err = store
        .pull(&format!("{reg}/cri-lab/does-not-exist:latest"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("cri-lab/does-not-exist"), "{err}");
    let err = store
        .pull(&format!("{reg}/cri-lab/filecaps:no-such-tag"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    // A registry port where nothing listens.
    let err = store.pull("127.0.0.1:1/x:latest", None).await.unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err}");
    assert!(store.list().is_empty());
}

/// A one-image registry on a loopback port that serves a layer whose bytes
/// do not match the digest in the manifest.
async fn tampering_registry(layer_media_type: &str) -> (String, tokio::task::JoinHandle<()>) {
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let digest = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let layer = b"real layer bytes".to_vec();
    let tampered = b"evil layer bytes".to_vec();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#.to_vec();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"{layer_media_type}","digest":"{}","size":{}}}]}}"#,
        digest(&config),
        config.len(),
        digest(&layer),
        layer.len()
    );
    let (config_path, layer_path) = (
        format!("/v2/t/x/blobs/{}", digest(&config)),
        format!("/v2/t/x/blobs/{}", digest(&layer)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, ctype, body): (&str, &str, Vec<u8>) = if path == "/v2/" {
                ("200 OK", "application/json", b"{}".to_vec())
            } else if path.starts_with("/v2/t/x/manifests/") {
                (
                    "200 OK",
                    "application/vnd.oci.image.manifest.v1+json",
                    manifest.clone().into_bytes(),
                )
            } else if path == config_path {
                ("200 OK", "application/octet-stream", config.clone())
            } else if path == layer_path {
                ("200 OK", "application/octet-stream", tampered.clone())
            } else {
                (
                    "404 Not Found",
                    "application/json",
                    br#"{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}"#.to_vec(),
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            if !req.starts_with("HEAD") {
                let _ = sock.write_all(&body).await;
            }
            let _ = sock.shutdown().await;
        }
    });
    (addr, handle)
}

#[tokio::test]
async fn tampered_blob_is_refused() {
    tampered_layer_is_a_digest_mismatch("application/vnd.oci.image.layer.v1.tar").await;
}

/// The unpacker sees the wrong bytes first (they are not even gzip), but
/// the error is the blob's digest, checked at the end of the body.
#[tokio::test]
async fn tampered_gzip_layer_is_a_digest_mismatch_not_a_gzip_error() {
    tampered_layer_is_a_digest_mismatch("application/vnd.oci.image.layer.v1.tar+gzip").await;
}

async fn tampered_layer_is_a_digest_mismatch(layer_media_type: &str) {
    // Needs no root and no test registry: the registry is in-process.
    let (addr, server) = tampering_registry(layer_media_type).await;
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(ImageStoreConfig {
        root: root.path().to_path_buf(),
        registries: RegistriesConfig::default(),
        max_layer_bytes: 1 << 20,
        max_entry_xattr_bytes: capcri::image::unpack::DEFAULT_MAX_ENTRY_XATTR_BYTES,
        max_compressed_layer_bytes: capcri::image::DEFAULT_MAX_COMPRESSED_LAYER_BYTES,
    })
    .unwrap();
    let err = store
        .pull(&format!("{addr}/t/x:latest"), None)
        .await
        .unwrap_err();
    server.abort();
    match &err {
        ImageError::DigestMismatch {
            expected, actual, ..
        } => assert_ne!(expected, actual),
        other => panic!("expected DigestMismatch, got {other}"),
    }
    assert!(store.list().is_empty());
    assert_eq!(fs::read_dir(root.path().join("layers")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(root.path().join("blobs/tmp")).unwrap().count(),
        0,
        "no partial blob left"
    );
    // Layers stream into the unpacker: no layer blob is ever stored, only
    // the (verified) config.
    let stored = names(&root.path().join("blobs/sha256"));
    assert!(
        stored.iter().all(|b| b != &tampered_layer_hex()),
        "{stored:?}"
    );
}

/// The hex digest the tampering registry's manifest gives its layer.
fn tampered_layer_hex() -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b"real layer bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_layers() {
    let Some(reg) = registry() else { return };
    let root = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(store(root.path(), &reg));
    // Separate tokio tasks: the store is shared across threads like in the daemon.
    let refs = [
        format!("{reg}/e2e-test-images/busybox:1.29-2"),
        format!("{reg}/e2e-test-images/busybox:1.29-2"),
        "registry.k8s.io/e2e-test-images/busybox:1.29-2".to_string(),
    ];
    let tasks: Vec<_> = refs
        .into_iter()
        .map(|r| {
            let store = store.clone();
            tokio::spawn(async move { store.pull(&r, None).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let mut it = results.into_iter();
    let (a, b, c) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a.id, b.id);
    assert_eq!(a.id, c.id);
    let rec = store.resolve(&a.id).unwrap();
    assert_eq!(rec.repo_tags.len(), 2);
    assert_eq!(
        fs::read_dir(root.path().join("layers")).unwrap().count(),
        rec.diff_ids.len()
    );
    assert!(
        store
            .layer_dirs(&rec)
            .unwrap()
            .iter()
            .all(|d| d.join("bin").is_dir() || d.join("usr").is_dir())
    );
}
