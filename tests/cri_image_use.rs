//! Images in use, as kubelet drives them, with real containers through the
//! CRI socket: image volumes (`Mount.image`), RemoveImage of an image a
//! live container is mounted on, the image name ContainerStatus reports
//! and policies match when kubelet creates containers by image id, and
//! ImageFsInfo following pulls and removals.

mod common;

use common::{
    TestDaemon, container_config, container_state, create, exec, mounts_under, pull, run_pod,
    start, stop_and_remove_pod,
};
use k8s_cri::v1 as cri;
use std::path::Path;

fn image_spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// A CRI mount of `image` at `path`, as kubelet sends an image volume:
/// no host path, read-only, the image named by the id PullImage returned.
fn image_mount(path: &str, image: &str) -> cri::Mount {
    cri::Mount {
        container_path: path.into(),
        readonly: true,
        image: image_spec(image),
        ..Default::default()
    }
}

async fn image_fs_used(d: &TestDaemon) -> u64 {
    d.images()
        .await
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner()
        .image_filesystems[0]
        .used_bytes
        .as_ref()
        .expect("used bytes")
        .value
}

async fn remove_image(d: &TestDaemon, image: &str) {
    d.images()
        .await
        .remove_image(cri::RemoveImageRequest {
            image: image_spec(image),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage {image}: {e}"));
}

async fn listed_image_ids(d: &TestDaemon) -> Vec<String> {
    d.images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.id)
        .collect()
}

fn layer_count(d: &TestDaemon) -> usize {
    std::fs::read_dir(d.data_dir().join("images/layers"))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// The mount options of `path` as the container's /proc/self/mountinfo
/// shows them (field 6: the per-mount flags).
async fn mount_flags(d: &TestDaemon, ctr: &str, path: &str) -> String {
    let out = exec(d, ctr, &["cat", "/proc/self/mountinfo"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.split(' ').nth(4) == Some(path))
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or_else(|| panic!("{path} not mounted in the container:\n{text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volumes_are_read_only_and_keep_their_layers() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let empty = image_fs_used(&d).await;
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    let busybox_id = pull(&d, &busybox).await;
    // Three layers: an overlay of lowers. One layer: a bind of the layer.
    let volume = format!("{registry}/k8s-staging-cri-tools/test-image-1:latest");
    let volume_id = pull(&d, &volume).await;
    let single = format!("{registry}/docker/library/busybox:1-musl");
    let single_id = pull(&d, &single).await;
    let pulled = image_fs_used(&d).await;
    assert!(
        pulled > empty,
        "ImageFsInfo grows with a pull: {empty} -> {pulled}"
    );

    let pod = run_pod(&d, "image-volumes").await;
    let mut config = container_config("main", &busybox_id, &["sleep", "3600"]);
    config.mounts = vec![
        image_mount("/vol", &volume_id),
        // crictl users name images by reference; kubelet by id.
        image_mount("/single", &single),
    ];
    let ctr = create(&d, &pod, config)
        .await
        .expect("create with image volumes");
    start(&d, &ctr).await;

    // The image's files, at the container path.
    let out = exec(&d, &ctr, &["ls", "/vol/test-image-1", "/vol/bin/busybox"]).await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let out = exec(
        &d,
        &ctr,
        &["test", "-f", "/single/etc/capcri-test-image-variant"],
    )
    .await;
    assert_eq!(out.exit_code, 0, "the single-layer image is mounted");
    // Read-only, and nothing from the image runs, set-uid or not.
    for path in ["/vol", "/single"] {
        let out = exec(&d, &ctr, &["touch", &format!("{path}/written")]).await;
        assert_ne!(out.exit_code, 0, "{path} is writable");
        let flags = mount_flags(&d, &ctr, path).await;
        for flag in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(
                flags.split(',').any(|f| f == flag),
                "{path}: {flags} lacks {flag}"
            );
        }
    }
    let out = exec(&d, &ctr, &["sh", "-c", "/vol/bin/busybox true"]).await;
    assert_eq!(out.exit_code, 126, "a binary of the image volume ran");

    // kubelet's image GC (or a user) removes the images while the
    // container runs: the records go, the layers stay.
    let layers_before = layer_count(&d);
    for image in [&volume_id, &single_id, &busybox_id] {
        remove_image(&d, image).await;
    }
    assert_eq!(listed_image_ids(&d).await, Vec::<String>::new());
    assert_eq!(layer_count(&d), layers_before, "a layer in use was deleted");
    let out = exec(&d, &ctr, &["ls", "/vol/test-image-1", "/bin/sh"]).await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    // ListContainers still names the image id kubelet matches its GC on.
    let listed = common::list_containers(&d).await;
    assert_eq!(listed[0].image_ref, busybox_id);
    assert_eq!(listed[0].image_id, busybox_id);

    // The last user gone, the layers are collected and the space returns.
    stop_and_remove_pod(&d, &pod).await;
    assert_eq!(layer_count(&d), 0, "layers outlived their last container");
    let removed = image_fs_used(&d).await;
    assert!(
        removed < pulled,
        "ImageFsInfo shrinks after removal: {pulled} -> {removed}"
    );
    common::wait_for(
        "the trash emptied",
        std::time::Duration::from_secs(10),
        || async { mounts_under(d.dir.path()).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_ambiguous_image_volumes_are_refused() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = run_pod(&d, "image-volume-errors").await;

    let mut config = container_config("missing", &busybox, &["true"]);
    let absent = format!("{registry}/k8s-staging-cri-tools/test-image-2:latest");
    config.mounts = vec![image_mount("/vol", &absent)];
    let err = create(&d, &pod, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(
        err.message().contains(&absent) && err.message().contains("crictl pull"),
        "{}",
        err.message()
    );

    let mut config = container_config("both", &busybox, &["true"]);
    let mut m = image_mount("/vol", &busybox);
    m.host_path = "/tmp".into();
    config.mounts = vec![m];
    let err = create(&d, &pod, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // Nothing of the failed creations is left mounted or leased.
    assert_eq!(
        mounts_under(&d.state_dir().join("bundles")),
        Vec::<String>::new()
    );
    assert!(
        std::fs::read_dir(d.data_dir().join("images/leases"))
            .map(|r| r.count() == 0)
            .unwrap_or(true)
    );
    stop_and_remove_pod(&d, &pod).await;
}

/// kubelet creates containers with the image id and the pod spec's
/// reference in `user_specified_image`: ContainerStatus reports the name,
/// and a policy on `image.name` sees the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_names_for_containers_created_by_id() {
    let registry = require_privileged!();
    let tag1 = format!("{registry}/k8s-staging-cri-tools/test-image-tags:1");
    let tag2 = format!("{registry}/k8s-staging-cri-tools/test-image-tags:2");
    let policy = format!(
        r#"apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata:
  name: 50-deny-tag-1
spec:
  match: "true"
  rules:
    - name: no-tag-1
      deny:
        condition: "image.name == '{tag1}' && '{tag2}' in image.names"
        message: "image {tag1} is refused on this node"
"#
    );
    let d = TestDaemon::start_with_policies(&[("50-deny-tag-1.yaml", &policy)], &[]);
    let id = pull(&d, &tag1).await;
    assert_eq!(pull(&d, &tag2).await, id, "one image under two tags");
    let pod = run_pod(&d, "names").await;

    let by_id = |name: &str, user_specified: &str| {
        let mut c = container_config(name, &id, &["sleep", "3600"]);
        c.image = Some(cri::ImageSpec {
            image: id.clone(),
            user_specified_image: user_specified.into(),
            ..Default::default()
        });
        c
    };
    // The pod spec said tag 1: the policy matches although CreateContainer
    // carries only the id.
    let err = create(&d, &pod, by_id("tag1", &tag1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains("is refused on this node"),
        "{}",
        err.message()
    );
    // No pod spec name (crictl with an id): the first tag, as containerd.
    let err = create(&d, &pod, by_id("bare-id", "")).await.unwrap_err();
    assert!(
        err.message().contains("is refused on this node"),
        "{}",
        err.message()
    );
    // The pod spec said tag 2: allowed, and reported under tag 2.
    let ctr = create(&d, &pod, by_id("tag2", &tag2))
        .await
        .expect("create by id");
    start(&d, &ctr).await;
    let status = container_state(&d, &ctr).await;
    assert_eq!(status.image.as_ref().unwrap().image, tag2);
    assert_eq!(status.image_id, id);
    assert!(
        status.image_ref.contains("@sha256:"),
        "{}",
        status.image_ref
    );
    let listed = common::list_containers(&d).await;
    assert_eq!(listed[0].image.as_ref().unwrap().image, tag2);
    assert_eq!(listed[0].image_ref, id);
    // Tag 2 removed from the image (RemoveImage by tag removes the whole
    // image, so move it instead: there is no retag in the CRI). The image
    // record gone, the status keeps the pod spec's name.
    remove_image(&d, &id).await;
    let status = container_state(&d, &ctr).await;
    assert_eq!(status.image.as_ref().unwrap().image, tag2);
    assert_eq!(status.image_id, id);
    stop_and_remove_pod(&d, &pod).await;
    assert!(
        !Path::new(&d.data_dir().join("images/leases"))
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
}

/// The layers a running container is mounted on stay across a daemon
/// crash after RemoveImage, and go with the container after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_layers_survive_a_daemon_crash() {
    let registry = require_privileged!();
    let mut d = TestDaemon::start(&[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    let id = pull(&d, &busybox).await;
    let pod = run_pod(&d, "leases").await;
    let ctr = create(&d, &pod, container_config("main", &id, &["sleep", "3600"]))
        .await
        .expect("create");
    start(&d, &ctr).await;
    let layers = layer_count(&d);
    assert!(layers > 0);
    remove_image(&d, &id).await;
    assert_eq!(
        layer_count(&d),
        layers,
        "RemoveImage collected layers in use"
    );
    d.kill9();
    d.spawn(&[]);
    assert_eq!(layer_count(&d), layers, "a restart collected layers in use");
    let out = exec(&d, &ctr, &["ls", "/bin/sh"]).await;
    assert_eq!(out.exit_code, 0);
    stop_and_remove_pod(&d, &pod).await;
    assert_eq!(layer_count(&d), 0);
}
