//! Host-side check of the mounts a container asks to share with the host.
//!
//! A `Bidirectional` (rshared) volume only propagates if its source lives on
//! a shared mount of the host, and a `HostToContainer` (rslave) one only if
//! that mount is shared or a slave. Otherwise the container starts fine and
//! propagation silently never happens, which kubelet users debug for hours;
//! containerd and CRI-O refuse such a container at create time, and so do we.

use k8s_cri::v1::{Mount, MountPropagation};
use std::path::{Path, PathBuf};

/// The propagation type of one host mount, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPropagation {
    Shared,
    Slave,
    Private,
}

/// One line of mountinfo, reduced to what the check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub propagation: HostPropagation,
}

/// Parses `/proc/<pid>/mountinfo` text; malformed lines are skipped (the
/// kernel writes this file, a line we cannot read is not the user's fault).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let mount_point = fields.nth(4)?;
            let _options = fields.next()?;
            let mut propagation = HostPropagation::Private;
            for optional in fields.by_ref() {
                if optional == "-" {
                    break;
                }
                if optional.starts_with("shared:") {
                    propagation = HostPropagation::Shared;
                } else if optional.starts_with("master:") && propagation != HostPropagation::Shared
                {
                    propagation = HostPropagation::Slave;
                }
            }
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(mount_point)),
                propagation,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path`: the longest mount point that is a prefix of
/// it, the last one listed when mounts are stacked on the same point.
pub fn mount_of<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| m)
}

/// Why a volume cannot get the propagation it asks for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "mounts[{index}]: host path {host_path:?} is on mount point {mount_point:?}, which is {actual}; \
     {wanted} propagation needs it {needed} (on the host: mount --make-rshared {mount_point:?}, \
     or use mountPropagation None)"
)]
pub struct PropagationError {
    pub index: usize,
    pub host_path: PathBuf,
    pub mount_point: PathBuf,
    pub actual: &'static str,
    pub wanted: &'static str,
    pub needed: &'static str,
}

/// Reads the daemon's mount table (the one containers' volumes come from)
/// only when some volume asks for propagation, and checks it.
pub fn check_host_sources(mounts: &[Mount]) -> Result<(), crate::error::NodeError> {
    if mounts
        .iter()
        .all(|m| m.propagation() == MountPropagation::PropagationPrivate)
    {
        return Ok(());
    }
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|e| crate::error::NodeError::io(path, e))?;
    check_sources(mounts, &parse_mountinfo(&text))
        .map_err(|e| crate::error::NodeError::Unsatisfiable(e.to_string()))
}

/// Checks each non-private volume against the host's mount table. Host
/// paths that do not resolve are left to the later steps, which name them.
pub fn check_sources(mounts: &[Mount], table: &[MountInfo]) -> Result<(), PropagationError> {
    for (index, m) in mounts.iter().enumerate() {
        let (wanted, needed, ok): (_, _, fn(HostPropagation) -> bool) = match m.propagation() {
            MountPropagation::PropagationPrivate => continue,
            MountPropagation::PropagationBidirectional => {
                ("Bidirectional", "shared", |p| p == HostPropagation::Shared)
            }
            MountPropagation::PropagationHostToContainer => {
                ("HostToContainer", "shared or a slave", |p| {
                    p != HostPropagation::Private
                })
            }
        };
        let Ok(resolved) = std::fs::canonicalize(&m.host_path) else {
            continue;
        };
        let Some(mount) = mount_of(table, &resolved) else {
            continue;
        };
        if !ok(mount.propagation) {
            return Err(PropagationError {
                index,
                host_path: PathBuf::from(&m.host_path),
                mount_point: mount.mount_point.clone(),
                actual: match mount.propagation {
                    HostPropagation::Shared => "shared",
                    HostPropagation::Slave => "a slave",
                    HostPropagation::Private => "private",
                },
                wanted,
                needed,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:25 / /run rw,nosuid master:5 - tmpfs tmpfs rw
31 22 8:1 /data /srv/private\\040dir rw - ext4 /dev/vda1 rw
32 22 8:1 /data /srv/both rw shared:7 master:3 - ext4 /dev/vda1 rw
33 22 8:1 /x /srv/private\\040dir rw shared:9 - ext4 /dev/vda1 rw
garbage
";

    #[test]
    fn parses_propagation_and_escaped_mount_points() {
        let t = parse_mountinfo(TABLE);
        assert_eq!(t.len(), 5);
        assert_eq!(t[0].propagation, HostPropagation::Shared);
        assert_eq!(t[1].propagation, HostPropagation::Slave);
        assert_eq!(t[2].mount_point, PathBuf::from("/srv/private dir"));
        assert_eq!(t[2].propagation, HostPropagation::Private);
        assert_eq!(t[3].propagation, HostPropagation::Shared);
    }

    #[test]
    fn longest_and_latest_mount_wins() {
        let t = parse_mountinfo(TABLE);
        let m = mount_of(&t, Path::new("/run/capcri/x")).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/run"));
        // Two mounts stacked on "/srv/private dir": the later one counts.
        let m = mount_of(&t, Path::new("/srv/private dir/a")).unwrap();
        assert_eq!(m.propagation, HostPropagation::Shared);
        let m = mount_of(&t, Path::new("/srvx")).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/"));
    }

    fn volume(host: &str, p: MountPropagation) -> Mount {
        Mount {
            container_path: "/v".into(),
            host_path: host.into(),
            propagation: p as i32,
            ..Default::default()
        }
    }

    #[test]
    fn refuses_private_source_for_shared_propagation() {
        let table = vec![MountInfo {
            mount_point: PathBuf::from("/"),
            propagation: HostPropagation::Private,
        }];
        let err = check_sources(
            &[
                volume("/", MountPropagation::PropagationPrivate),
                volume("/", MountPropagation::PropagationBidirectional),
            ],
            &table,
        )
        .unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.to_string().contains("mount --make-rshared"), "{err}");
        check_sources(&[volume("/", MountPropagation::PropagationPrivate)], &table).unwrap();
    }

    #[test]
    fn slave_source_is_enough_for_host_to_container_only() {
        let table = vec![MountInfo {
            mount_point: PathBuf::from("/"),
            propagation: HostPropagation::Slave,
        }];
        check_sources(
            &[volume("/", MountPropagation::PropagationHostToContainer)],
            &table,
        )
        .unwrap();
        let err = check_sources(
            &[volume("/", MountPropagation::PropagationBidirectional)],
            &table,
        )
        .unwrap_err();
        assert_eq!(err.actual, "a slave");
    }

    #[test]
    fn missing_host_paths_are_left_to_later_steps() {
        check_sources(
            &[volume(
                "/nonexistent/capcri-test",
                MountPropagation::PropagationBidirectional,
            )],
            &[],
        )
        .unwrap();
    }
}
