//! The filesystem of a container in a POD user namespace: its overlay
//! rootfs on idmapped image layers, and its volumes and pod files as
//! idmapped binds, so the pod's root owns what the host's root owns without
//! a chown of anything shared.
//!
//! Everything is staged under `<bundle>/idmap/` in the daemon's mount
//! namespace: overlayfs takes its layers by path, and libcontainer binds
//! volumes by path (a bind of an idmapped mount keeps its idmapping).

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use k8s_cri::v1::ContainerConfig;
use nix::mount::{MntFlags, umount2};
use tracing::warn;

use crate::error::NodeError;
use crate::host::idmapped_bind;
use crate::image::rootfs::mount_overlay;
use crate::spec::{PodFiles, PodUserNamespace};

/// The staging directory of a container's idmapped mounts.
pub fn staging_dir(bundle: &Path) -> PathBuf {
    bundle.join("idmap")
}

fn create_like(source: &Path, target: &Path) -> Result<(), NodeError> {
    let meta = fs::metadata(source).map_err(|e| NodeError::io(source, e))?;
    if meta.is_dir() {
        fs::create_dir_all(target).map_err(|e| NodeError::io(target, e))
    } else {
        File::create(target)
            .map(drop)
            .map_err(|e| NodeError::io(target, e))
    }
}

/// Mounts the overlay rootfs at `target` over idmapped clones of the image
/// layers, which are shared by every pod and so never chowned. The clones
/// are detached once the overlay is up: overlayfs keeps private references.
///
/// The upper directory is not idmapped: overlayfs creates its work files
/// with the mounter's (host root's) ids, which an idmapped upper cannot
/// represent (EOVERFLOW, and the kernel then mounts the overlay read-only).
/// Instead the container's own, still empty, upper directory is created
/// owned by the pod's root: the overlay's root directory takes its owner
/// from it, and what the container writes lands there under its mapped ids.
pub fn mount_idmapped_overlay(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    bundle: &Path,
    userns: &File,
    mapping: &PodUserNamespace,
) -> Result<(), NodeError> {
    let root_uid = mapping.uids.to_host(0);
    let root_gid = mapping.gids.to_host(0);
    nix::unistd::chown(
        upper,
        root_uid.map(nix::unistd::Uid::from_raw),
        root_gid.map(nix::unistd::Gid::from_raw),
    )
    .map_err(|e| NodeError::io(upper, e.into()))?;
    let stage = staging_dir(bundle).join("layers");
    let mut staged = Vec::with_capacity(layers.len());
    let result = (|| {
        for (i, layer) in layers.iter().enumerate() {
            let at = stage.join(i.to_string());
            create_like(layer, &at)?;
            staged.push(at.clone());
            idmapped_bind(layer, &at, userns.as_fd(), false)?;
        }
        mount_overlay(&staged, upper, work, target)?;
        Ok(())
    })();
    for at in &staged {
        let _ = umount2(at, MntFlags::MNT_DETACH);
    }
    remove_unmounted(&stage);
    result
}

/// Removes the staging directory `dir` entry by entry, never recursively:
/// its entries are empty mount points, and rmdir/unlink of one that is
/// still mounted fails with EBUSY instead of deleting through it into a
/// layer or a volume.
fn remove_unmounted(dir: &Path) -> bool {
    let mut clean = true;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let removed = if e.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(err) = removed {
                warn!(path = %p.display(), error = %err, "idmap staging entry not removed");
                clean = false;
            }
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => false,
        _ => clean,
    }
}

/// Stages an idmapped bind of every CRI volume and pod file (not the pod's
/// /dev/shm: that tmpfs is mounted owned by the pod's root), and returns
/// the container config and pod files that name the staged mounts instead
/// of the host paths. The originals stay untouched (they are what
/// ContainerStatus reports).
pub fn stage_idmapped_volumes(
    config: &ContainerConfig,
    pod_files: &PodFiles,
    bundle: &Path,
    userns: &File,
) -> Result<(ContainerConfig, PodFiles), NodeError> {
    let stage = staging_dir(bundle).join("volumes");
    fs::create_dir_all(&stage).map_err(|e| NodeError::io(&stage, e))?;
    // The pod's root (in its user namespace) bind-mounts these staged
    // volumes; under the daemon's umask 077 both levels would be 0700.
    // The bundle above (0710, the pod root's group) keeps others out.
    for d in [staging_dir(bundle), stage.clone()] {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o711))
            .map_err(|e| NodeError::io(&d, e))?;
    }
    let bind = |name: String, source: &Path, recursive: bool| -> Result<PathBuf, NodeError> {
        let at = stage.join(name);
        create_like(source, &at)?;
        idmapped_bind(source, &at, userns.as_fd(), recursive).map_err(|e| {
            NodeError::InvalidArgument(format!(
                "cannot give {} to a container in a POD user namespace: {e}",
                source.display()
            ))
        })?;
        Ok(at)
    };
    let mut config = config.clone();
    for (i, m) in config.mounts.iter_mut().enumerate() {
        if m.host_path.is_empty() {
            continue; // refused with a clear message by the spec translation
        }
        let at = bind(format!("{i}"), Path::new(&m.host_path), true)?;
        m.host_path = at.to_string_lossy().into_owned();
    }
    let mut files = pod_files.clone();
    for (name, slot) in [
        ("hostname", &mut files.hostname),
        ("hosts", &mut files.hosts),
        ("resolv.conf", &mut files.resolv_conf),
    ] {
        if let Some(source) = slot.as_ref() {
            *slot = Some(bind(name.to_string(), source, false)?);
        }
    }
    Ok((config, files))
}

/// Detaches the staged volume mounts and removes the staging directory.
/// Returns false when a mount could not be detached: the bundle must then
/// not be removed recursively.
pub fn unstage(bundle: &Path) -> bool {
    let stage = staging_dir(bundle);
    if !stage.exists() {
        return true;
    }
    for sub in ["volumes", "layers"] {
        if let Ok(entries) = fs::read_dir(stage.join(sub)) {
            for e in entries.flatten() {
                // EINVAL: not (or no longer) a mount point.
                let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
            }
        }
    }
    ["volumes", "layers"]
        .iter()
        .all(|sub| remove_unmounted(&stage.join(sub)))
        && fs::remove_dir(&stage).is_ok()
}
