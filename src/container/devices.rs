//! The host side of a container's devices: stats the nodes that
//! `ContainerConfig.devices` names (and, for a privileged container, every
//! node of the host's /dev) into [`HostDevice`] facts for `spec::devices`.
//!
//! The walk is containerd's (`oci.getDevices`): a host path is resolved
//! through its symlinks (kubelet hands raw-block volumes over as a symlink
//! under /var/lib/kubelet), a directory gives every device node below it
//! (pts, shm, fd, mqueue, .lxc, .lxd-mounts and .udev skipped, as the
//! runtimes do, and "console"), symlinks and other files inside a directory
//! are skipped. Only the numbers are kept: the container's node is made
//! from major:minor, never from the host path, so a path swapped after the
//! stat opens nothing new.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::spec::{ContainerDevice, DeviceKind, DeviceRequest, HostDevice, SpecError};

/// Directories of /dev a walk does not enter (containerd and runc skip the
/// same: mounts of their own, and container managers' private trees).
const SKIPPED_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// A bound on the nodes one walk returns and on its depth: a device plugin
/// naming a huge tree fails clearly instead of stalling CreateContainer.
const MAX_NODES: usize = 4096;
const MAX_DEPTH: usize = 8;

/// The device node at `path` (not followed), or None for anything else.
pub fn host_device_at(path: &Path) -> Option<HostDevice> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        DeviceKind::Char
    } else if ft.is_block_device() {
        DeviceKind::Block
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(HostDevice {
        host_path: path.to_path_buf(),
        kind,
        major: libc::major(rdev) as i64,
        minor: libc::minor(rdev) as i64,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Every device node under `dir`, each paired with its path under
/// `container_dir`.
fn walk(
    dir: &Path,
    container_dir: &str,
    depth: usize,
    out: &mut Vec<(String, HostDevice)>,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{} is more than {MAX_DEPTH} directories deep",
            dir.display()
        ));
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(ft) = e.file_type() else { continue };
        let container_path = format!("{}/{name}", container_dir.trim_end_matches('/'));
        if ft.is_dir() {
            if SKIPPED_DIRS.contains(&name) {
                continue;
            }
            walk(&e.path(), &container_path, depth + 1, out)?;
        } else if name != "console"
            && let Some(d) = host_device_at(&e.path())
        {
            if out.len() >= MAX_NODES {
                return Err(format!("more than {MAX_NODES} device nodes"));
            }
            out.push((container_path, d));
        }
    }
    Ok(())
}

/// The host's devices for one checked request: its node, or every node in
/// its directory (each container path checked like the request's, against
/// `config`'s mounts). A missing path, a path that is neither a device nor
/// a directory, or a directory without devices is a bad request.
pub fn resolve_request(
    req: &DeviceRequest,
    config: &k8s_cri::v1::ContainerConfig,
) -> Result<Vec<ContainerDevice>, SpecError> {
    let field = format!("devices[{}].host_path", req.index);
    let resolved = std::fs::canonicalize(&req.host_path).map_err(|e| {
        SpecError::invalid(
            &field,
            format!(
                "{:?} cannot be resolved on the node ({e}); give the path of a device node (e.g. /dev/sdb) that exists",
                req.host_path
            ),
        )
    })?;
    let shown = if resolved == Path::new(&req.host_path) {
        format!("{:?}", req.host_path)
    } else {
        format!("{:?} (a symlink to {})", req.host_path, resolved.display())
    };
    let meta = std::fs::symlink_metadata(&resolved)
        .map_err(|e| SpecError::invalid(&field, format!("{shown}: {e}")))?;
    let access = req.access.clone();
    if meta.is_dir() {
        let mut found = Vec::new();
        walk(&resolved, &req.container_path, 0, &mut found)
            .map_err(|e| SpecError::invalid(&field, format!("{shown} is a directory: {e}")))?;
        if found.is_empty() {
            return Err(SpecError::invalid(
                &field,
                format!(
                    "{shown} is a directory with no device nodes; name a device node or a directory holding some"
                ),
            ));
        }
        let mut out = Vec::with_capacity(found.len());
        for (container_path, host) in found {
            crate::spec::check_device_container_path(&field, &container_path, config)?;
            out.push(ContainerDevice {
                container_path,
                host,
                access: access.clone(),
            });
        }
        return Ok(out);
    }
    let Some(host) = host_device_at(&resolved) else {
        let what = if meta.is_file() {
            "a regular file"
        } else if meta.file_type().is_fifo() {
            "a FIFO"
        } else if meta.file_type().is_socket() {
            "a socket"
        } else {
            "not a device"
        };
        return Err(SpecError::invalid(
            &field,
            format!(
                "{shown} is {what}, not a character or block device; name a device node such as /dev/sdb"
            ),
        ));
    };
    Ok(vec![ContainerDevice {
        container_path: req.container_path.clone(),
        host,
        access,
    }])
}

/// Every device node of the host's /dev at its own path, for a privileged
/// container (containerd's `WithHostDevices`). A walk error leaves the
/// nodes found so far, logged: a privileged container still gets the
/// defaults.
pub fn host_dev_nodes() -> Vec<HostDevice> {
    let mut found = Vec::new();
    if let Err(e) = walk(Path::new("/dev"), "/dev", 0, &mut found) {
        tracing::warn!(error = %e, "walking the host's /dev for a privileged container");
    }
    found
        .into_iter()
        .map(|(p, mut d)| {
            d.host_path = PathBuf::from(p);
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_request_plain(r: &DeviceRequest) -> Result<Vec<ContainerDevice>, SpecError> {
        resolve_request(r, &Default::default())
    }

    fn req(host: &str, container: &str) -> DeviceRequest {
        DeviceRequest {
            index: 0,
            host_path: host.into(),
            container_path: container.into(),
            access: "rw".into(),
        }
    }

    #[test]
    fn a_node_a_symlink_to_it_and_refusals() {
        let got = resolve_request_plain(&req("/dev/null", "/dev/xnull")).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].host.major, got[0].host.minor), (1, 3));
        assert_eq!(got[0].container_path, "/dev/xnull");

        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let got = resolve_request_plain(&req(link.to_str().unwrap(), "/dev/x")).unwrap();
        assert_eq!(got[0].host.host_path, Path::new("/dev/null"));

        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = resolve_request_plain(&req(file.to_str().unwrap(), "/dev/x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a regular file, not a character or block device"),
            "{e}"
        );
        let to_file = dir.path().join("to-file");
        std::os::unix::fs::symlink(&file, &to_file).unwrap();
        let e = resolve_request_plain(&req(to_file.to_str().unwrap(), "/dev/x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a symlink to") && e.contains("regular file"),
            "{e}"
        );
        let e = resolve_request_plain(&req("/nonexistent/dev", "/dev/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be resolved"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = resolve_request_plain(&req(empty.to_str().unwrap(), "/dev/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no device nodes"), "{e}");
        // A directory gives each node under the container path.
        if Path::new("/dev/net/tun").exists() {
            let got = resolve_request_plain(&req("/dev/net", "/dev/mynet")).unwrap();
            assert!(
                got.iter().any(|d| d.container_path == "/dev/mynet/tun"),
                "{got:?}"
            );
        }
    }

    #[test]
    fn host_dev_holds_null_and_skips_pts() {
        let nodes = host_dev_nodes();
        assert!(nodes.iter().any(|n| n.host_path == Path::new("/dev/null")));
        assert!(!nodes.iter().any(|n| n.host_path.starts_with("/dev/pts")));
        assert!(
            !nodes
                .iter()
                .any(|n| n.host_path == Path::new("/dev/console"))
        );
    }
}
