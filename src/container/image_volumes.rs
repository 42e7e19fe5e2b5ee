//! Image volumes (KEP-4639, `Mount.image`, on by default since Kubernetes
//! 1.35): kubelet pulls the image, then names it (by id) in a CRI mount
//! with no host path; the runtime mounts the image's root filesystem
//! read-only at the container path.
//!
//! Each volume is the image's layers, mounted under the container's bundle
//! (`<bundle>/image-volumes/<mount index>`): one layer as a bind of the
//! layer directory, several as an overlay of them with no upper directory
//! (read-only by construction), none as an empty directory. Both are
//! mounted `ro,nosuid,nodev,noexec`, as CRI-O mounts image volumes (and
//! KEP-4639 describes them): image content is attacker-controlled and
//! must not bring set-uid binaries or device nodes into a container. The
//! container gets a read-only bind of that mount, the same four flags
//! written into its OCI mount too (a runtime's bind remount would
//! otherwise drop them). The image's layers are leased by the container
//! (`ImageStore::lease`), so RemoveImage and kubelet's image GC never
//! delete them under it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, MountPropagation};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::ContainerRecord;
use crate::error::NodeError;
use crate::image::ImageError;

/// Flags of every image volume mount, on the host and in the container.
const VOLUME_FLAGS: [&str; 4] = ["ro", "nosuid", "nodev", "noexec"];

/// Where the volumes of a container are mounted on the host.
pub fn volumes_dir(bundle: &Path) -> PathBuf {
    bundle.join("image-volumes")
}

/// One `Mount.image` of a container config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageVolume {
    /// Index in `ContainerConfig.mounts`.
    pub index: usize,
    pub container_path: String,
    /// What kubelet sent: the image id, or a reference crictl users type.
    pub image: String,
}

/// The image volumes of `config`, validated: a mount names either a host
/// path or an image, never both (containerd and CRI-O refuse the same).
pub fn image_volumes(config: &ContainerConfig) -> Result<Vec<ImageVolume>, NodeError> {
    let mut out = Vec::new();
    for (index, m) in config.mounts.iter().enumerate() {
        let Some(image) = m.image.as_ref().map(|i| i.image.trim()) else {
            continue;
        };
        if image.is_empty() {
            continue;
        }
        if !m.host_path.is_empty() {
            return Err(NodeError::InvalidArgument(format!(
                "mounts[{index}] (container path {:?}) names both host path {:?} and image {image:?}; an image volume has no host path, set one or the other",
                m.container_path, m.host_path
            )));
        }
        out.push(ImageVolume {
            index,
            container_path: m.container_path.clone(),
            image: image.to_string(),
        });
    }
    Ok(out)
}

/// The config the OCI spec is built from: every image mount becomes a
/// read-only, private bind of its staged mount (`staged`: mount index ->
/// host directory). Propagation is meaningless for an image and would only
/// make the spec ask for a shared host mount.
pub fn with_staged_volumes(
    config: &ContainerConfig,
    staged: &BTreeMap<usize, PathBuf>,
) -> ContainerConfig {
    let mut config = config.clone();
    for (index, dir) in staged {
        if let Some(m) = config.mounts.get_mut(*index) {
            m.host_path = dir.to_string_lossy().into_owned();
            m.image = None;
            m.readonly = true;
            m.propagation = MountPropagation::PropagationPrivate as i32;
        }
    }
    config
}

/// Adds `ro,nosuid,nodev,noexec` to the OCI mounts at the image volumes'
/// destinations.
pub fn harden_spec_mounts(spec: &mut oci_spec::runtime::Spec, destinations: &[String]) {
    let Some(mut mounts) = spec.mounts().clone() else {
        return;
    };
    for m in &mut mounts {
        if !destinations
            .iter()
            .any(|d| Path::new(d) == m.destination().as_path())
        {
            continue;
        }
        let mut options = m.options().clone().unwrap_or_default();
        options.retain(|o| o != "rw");
        for flag in VOLUME_FLAGS {
            if !options.iter().any(|o| o == flag) {
                options.push(flag.to_string());
            }
        }
        m.set_options(Some(options));
    }
    spec.set_mounts(Some(mounts));
}

/// Every image a container's files come from, by id or reference: its
/// rootfs image and its image volumes (`ImageStore::reconcile_leases`).
pub fn images_in_use<'a>(
    containers: impl IntoIterator<Item = &'a ContainerRecord>,
) -> BTreeMap<String, Vec<String>> {
    containers
        .into_iter()
        .map(|c| {
            let mut ids = vec![c.image_id.clone()];
            if let Ok(volumes) = image_volumes(&c.config) {
                ids.extend(volumes.into_iter().map(|v| v.image));
            }
            (c.id.clone(), ids)
        })
        .collect()
}

/// The overlay options of a read-only stack of layers (no upper, no work
/// directory): `lowerdir=top:...:bottom`.
fn lower_only_options(
    layers_bottom_first: &[PathBuf],
    target: &Path,
) -> Result<String, ImageError> {
    let mut lowers = Vec::with_capacity(layers_bottom_first.len());
    for p in layers_bottom_first.iter().rev() {
        let s = p.to_str().ok_or_else(|| ImageError::Mount {
            target: target.to_path_buf(),
            reason: format!("layer path {} is not UTF-8", p.display()),
        })?;
        if s.is_empty() || s.contains([':', ',']) {
            return Err(ImageError::Mount {
                target: target.to_path_buf(),
                reason: format!(
                    "layer path {s:?} contains ':' or ',' which the overlay option string cannot hold; use another data directory"
                ),
            });
        }
        lowers.push(s);
    }
    let options = format!("lowerdir={}", lowers.join(":"));
    // mount(2) copies its data argument into one page, NUL included.
    if options.len() > 4095 {
        return Err(ImageError::Mount {
            target: target.to_path_buf(),
            reason: format!(
                "the overlay options for {} layers are {} bytes, more than one page; move the data directory to a shorter path or flatten the image",
                layers_bottom_first.len(),
                options.len()
            ),
        });
    }
    Ok(options)
}

/// Mounts the image with `layers` (bottom-most first) read-only at
/// `target`, which must exist and be an empty directory. Blocking.
pub fn mount_image_volume(layers: &[PathBuf], target: &Path) -> Result<(), ImageError> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let failed = |what: &str, e: nix::errno::Errno| ImageError::Mount {
        target: target.to_path_buf(),
        reason: format!("{what}: {e}; check that capcri runs as root with overlayfs available"),
    };
    match layers {
        // An image without layers (an artifact, `FROM scratch` with
        // nothing added) is an empty directory: bind the target onto itself
        // so it is a read-only mount point like the others.
        [] => {
            mount(
                Some(target),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| failed("bind", e))?;
            remount_bind(target, flags).map_err(|e| failed("remount read-only", e))
        }
        // overlayfs refuses a single lower directory without an upper one.
        [single] => {
            mount(
                Some(single.as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| failed("bind the layer", e))?;
            remount_bind(target, flags).map_err(|e| failed("remount read-only", e))
        }
        _ => {
            let options = lower_only_options(layers, target)?;
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                flags,
                Some(options.as_str()),
            )
            .map_err(|e| failed(&format!("mount(overlay, {options})"), e))
        }
    }
}

/// A bind mount takes its flags from a remount (mount(2): MS_BIND with
/// other flags ignores them on the first call). On failure the bind is
/// undone: a writable bind of a layer must never stay.
fn remount_bind(target: &Path, flags: MsFlags) -> Result<(), nix::errno::Errno> {
    let r = mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    );
    if r.is_err() {
        let _ = umount2(target, MntFlags::MNT_DETACH);
    }
    r
}

/// Detaches every image volume under `bundle` and removes their
/// directories. Returns false when one is still mounted: the bundle must
/// then not be deleted recursively (it would walk into the image's layers,
/// read-only as they are mounted).
pub fn unmount_all(bundle: &Path) -> bool {
    let dir = volumes_dir(bundle);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return true;
    };
    let mut all = true;
    for e in entries.flatten() {
        let path = e.path();
        // EINVAL: not (or no longer) a mount point.
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        if std::fs::remove_dir(&path).is_err() && path.exists() {
            tracing::warn!(path = %path.display(), "image volume still mounted or not empty");
            all = false;
        }
    }
    if all {
        let _ = std::fs::remove_dir(&dir);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{ImageSpec, Mount};

    fn mount_of(container: &str, host: &str, image: &str) -> Mount {
        Mount {
            container_path: container.into(),
            host_path: host.into(),
            image: (!image.is_empty()).then(|| ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn image_mounts_are_found_and_validated() {
        let config = ContainerConfig {
            mounts: vec![
                mount_of("/data", "/host/data", ""),
                mount_of("/models", "", "sha256:abc"),
                mount_of("/tools", "", " busybox "),
                Mount {
                    container_path: "/empty-spec".into(),
                    image: Some(ImageSpec::default()),
                    host_path: "/h".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            image_volumes(&config).unwrap(),
            vec![
                ImageVolume {
                    index: 1,
                    container_path: "/models".into(),
                    image: "sha256:abc".into()
                },
                ImageVolume {
                    index: 2,
                    container_path: "/tools".into(),
                    image: "busybox".into()
                },
            ]
        );
        let both = ContainerConfig {
            mounts: vec![mount_of("/x", "/host/x", "busybox")],
            ..Default::default()
        };
        let err = image_volumes(&both).unwrap_err().to_string();
        assert!(
            err.contains("both host path") && err.contains("mounts[0]"),
            "{err}"
        );
    }

    #[test]
    fn staged_volumes_are_private_read_only_binds() {
        let mut m = mount_of("/models", "", "sha256:abc");
        m.propagation = MountPropagation::PropagationBidirectional as i32;
        m.readonly = false;
        let config = ContainerConfig {
            mounts: vec![mount_of("/data", "/host/data", ""), m],
            ..Default::default()
        };
        let staged = BTreeMap::from([(1, PathBuf::from("/b/image-volumes/1"))]);
        let out = with_staged_volumes(&config, &staged);
        assert_eq!(out.mounts[0], config.mounts[0]);
        let v = &out.mounts[1];
        assert_eq!(v.host_path, "/b/image-volumes/1");
        assert!(v.image.is_none() && v.readonly);
        assert_eq!(v.propagation(), MountPropagation::PropagationPrivate);
    }

    #[test]
    fn spec_mounts_get_the_four_flags() {
        let mut spec = oci_spec::runtime::Spec::default();
        let mk = |dest: &str, opts: &[&str]| {
            let mut m = oci_spec::runtime::Mount::default();
            m.set_destination(PathBuf::from(dest));
            m.set_options(Some(opts.iter().map(|s| s.to_string()).collect()));
            m
        };
        spec.set_mounts(Some(vec![
            mk("/models", &["rbind", "rprivate", "rw"]),
            mk("/data", &["rbind", "rprivate", "rw"]),
            mk("/tools", &["rbind", "rprivate", "rro"]),
        ]));
        harden_spec_mounts(&mut spec, &["/models".into(), "/tools/".into()]);
        let mounts = spec.mounts().clone().unwrap();
        assert_eq!(
            mounts[0].options().clone().unwrap(),
            vec!["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"]
        );
        assert_eq!(
            mounts[1].options().clone().unwrap(),
            vec!["rbind", "rprivate", "rw"]
        );
        assert_eq!(
            mounts[2].options().clone().unwrap(),
            vec![
                "rbind", "rprivate", "rro", "ro", "nosuid", "nodev", "noexec"
            ]
        );
    }

    #[test]
    fn overlay_lowers_are_top_first_and_bounded() {
        let t = Path::new("/t");
        let layers = [PathBuf::from("/l/bottom"), PathBuf::from("/l/top")];
        assert_eq!(
            lower_only_options(&layers, t).unwrap(),
            "lowerdir=/l/top:/l/bottom"
        );
        assert!(lower_only_options(&[PathBuf::from("/a:b"), PathBuf::from("/c")], t).is_err());
        let many: Vec<PathBuf> = (0..80)
            .map(|i| {
                PathBuf::from(format!(
                    "/var/lib/capcri/images/layers/{}{i:02}",
                    "f".repeat(62)
                ))
            })
            .collect();
        assert!(lower_only_options(&many, t).is_err());
    }
}
