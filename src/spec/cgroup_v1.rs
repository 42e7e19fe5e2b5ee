//! A container's /sys/fs/cgroup on a cgroup v1 (or hybrid) host, spelled
//! out as plain mounts instead of libcontainer's `cgroup` mount type.
//!
//! Why: for a `cgroup` mount on v1, libcontainer's init reads
//! `/proc/<its own pid>/cgroup` to find the cgroup prefix to strip
//! (`Process::new(ppid or getpid())` in `mount_cgroup_v1`). In a PID
//! namespace its pid is only valid in that namespace, but /proc at that
//! point is still the runtime's: a container joining the pod's shared PID
//! namespace (pid 2, 3, ..) read an unrelated process's cgroups, or, when
//! the runtime itself runs in a PID namespace (a kind node, a node agent in
//! a container), nothing at all: "failed to prepare rootfs" with
//! `Procfs(NotFound("/proc/2"))`, critest's NamespaceOption and
//! UserNamespaces specs. The mounts below need no /proc: libcontainer's v1
//! manager puts the container at `<hierarchy mount point>/<cgroupsPath>` in
//! every hierarchy it manages, which is what each bind mount shows, as
//! runc does (tmpfs, one bind per hierarchy, the co-mounted controllers
//! under each of their names). On a cgroup2 host the `cgroup` mount stays:
//! libcontainer mounts cgroup2 there without reading /proc/<pid>.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The controllers libcontainer's v1 manager joins (libcgroups
/// `v1::CONTROLLERS`); a hierarchy with none of them (the named systemd
/// one, rdma, misc) does not hold the container, so it is not shown.
const MANAGED: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// One cgroup v1 hierarchy mounted under /sys/fs/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mount_point: PathBuf,
    /// The managed controllers it carries, e.g. `["cpu", "cpuacct"]`.
    pub controllers: Vec<String>,
}

/// The v1 hierarchies of a `/proc/self/mountinfo` text: `cgroup` mounts
/// directly under /sys/fs/cgroup that carry a managed controller.
pub fn v1_hierarchies(mountinfo: &str) -> Vec<V1Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        if right.next() != Some("cgroup") {
            continue;
        }
        let super_opts = right.nth(1).unwrap_or_default();
        let mount_point = PathBuf::from(unescape(mount_point));
        if mount_point.parent() != Some(Path::new(CGROUP_ROOT)) {
            continue;
        }
        let controllers: Vec<String> = super_opts
            .split(',')
            .filter(|o| MANAGED.contains(o))
            .map(str::to_string)
            .collect();
        if !controllers.is_empty()
            && !out
                .iter()
                .any(|h: &V1Hierarchy| h.mount_point == mount_point)
        {
            out.push(V1Hierarchy {
                mount_point,
                controllers,
            });
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if bytes[i] == b'\\'
            && let Some(d) = octal
        {
            let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces the spec's `cgroup` mount at /sys/fs/cgroup by a tmpfs and one
/// bind mount per hierarchy of the container's own cgroup, read-only
/// unless the `cgroup` mount was read-write (privileged). No hierarchies
/// (a cgroup2 host) or no `cgroup` mount: the spec is left as it is.
pub fn emulate_cgroup_v1(spec: &mut Spec, hierarchies: &[V1Hierarchy]) {
    if hierarchies.is_empty() {
        return;
    }
    let Some(cgroups_path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
        return;
    };
    let Some(mounts) = spec.mounts().clone() else {
        return;
    };
    let Some(at) = mounts.iter().position(|m| {
        m.destination() == Path::new(CGROUP_ROOT) && m.typ().as_deref() == Some("cgroup")
    }) else {
        return;
    };
    let writable = mounts[at]
        .options()
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o == "rw"));
    let mode = if writable { "rw" } else { "ro" };
    let relative = cgroups_path
        .strip_prefix("/")
        .unwrap_or(&cgroups_path)
        .to_path_buf();

    let mut replacement = vec![mount(
        Path::new(CGROUP_ROOT),
        "tmpfs",
        Path::new("tmpfs"),
        &["nosuid", "noexec", "nodev", "mode=755", "size=64k"],
    )];
    let names: Vec<String> = hierarchies.iter().filter_map(name_of).collect();
    for h in hierarchies {
        let Some(name) = name_of(h) else {
            continue;
        };
        let source = h.mount_point.join(&relative);
        let options = ["rbind", mode, "nosuid", "noexec", "nodev"];
        let mut dests = vec![name.clone()];
        // A co-mounted hierarchy ("cpu,cpuacct") is also reachable under
        // each controller's name, where runc puts a symlink.
        if h.controllers.len() > 1 {
            dests.extend(h.controllers.iter().filter(|c| !names.contains(c)).cloned());
        }
        for dest in dests {
            replacement.push(mount(
                &Path::new(CGROUP_ROOT).join(dest),
                "bind",
                &source,
                &options,
            ));
        }
    }
    let mut mounts = mounts;
    mounts.splice(at..=at, replacement);
    spec.set_mounts(Some(mounts));
}

fn name_of(h: &V1Hierarchy) -> Option<String> {
    h.mount_point
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

fn mount(dest: &Path, typ: &str, source: &Path, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.to_path_buf());
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Linux;

    /// This machine's layout (Debian 12, hybrid), plus a co-mounted
    /// cpu,cpuacct and a kind node's mount root.
    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 /docker/abc /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:39 / /var/lib/x/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
43 31 0:40 / /sys/fs/cgroup/rdma rw - cgroup cgroup rw,rdma
";

    fn h(p: &str, c: &[&str]) -> V1Hierarchy {
        V1Hierarchy {
            mount_point: PathBuf::from(p),
            controllers: c.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn hierarchies_are_the_managed_cgroup_mounts_under_sys_fs_cgroup() {
        assert_eq!(
            v1_hierarchies(MOUNTINFO),
            vec![
                h("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
                h("/sys/fs/cgroup/cpuset", &["cpuset"]),
                h("/sys/fs/cgroup/memory", &["memory"]),
            ]
        );
        // A pure cgroup2 host has none.
        assert_eq!(
            v1_hierarchies("25 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"),
            vec![]
        );
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    fn spec_with(cgroup_opts: &[&str]) -> Spec {
        let mut spec = Spec::default();
        let mut linux = Linux::default();
        linux.set_cgroups_path(Some(PathBuf::from("/capcri/pod1/ctr1")));
        spec.set_linux(Some(linux));
        spec.set_mounts(Some(vec![
            mount(Path::new("/sys"), "sysfs", Path::new("sysfs"), &["ro"]),
            mount(
                Path::new(CGROUP_ROOT),
                "cgroup",
                Path::new("cgroup"),
                cgroup_opts,
            ),
            mount(Path::new("/dev/shm"), "tmpfs", Path::new("shm"), &[]),
        ]));
        spec
    }

    fn summary(spec: &Spec) -> Vec<(String, String, String, String)> {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.typ().clone().unwrap_or_default(),
                    m.source()
                        .as_ref()
                        .map(|s| s.display().to_string())
                        .unwrap_or_default(),
                    m.options()
                        .as_ref()
                        .map(|o| o.join(","))
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn the_cgroup_mount_becomes_a_tmpfs_and_binds_of_the_containers_own_cgroups() {
        let mut spec = spec_with(&["nosuid", "noexec", "nodev", "relatime", "ro"]);
        emulate_cgroup_v1(&mut spec, &v1_hierarchies(MOUNTINFO));
        let ro = "rbind,ro,nosuid,noexec,nodev".to_string();
        let bind = |d: &str, s: &str| (d.to_string(), "bind".into(), s.to_string(), ro.clone());
        assert_eq!(
            summary(&spec),
            vec![
                ("/sys".into(), "sysfs".into(), "sysfs".into(), "ro".into()),
                (
                    "/sys/fs/cgroup".into(),
                    "tmpfs".into(),
                    "tmpfs".into(),
                    "nosuid,noexec,nodev,mode=755,size=64k".into()
                ),
                bind(
                    "/sys/fs/cgroup/cpu,cpuacct",
                    "/sys/fs/cgroup/cpu,cpuacct/capcri/pod1/ctr1"
                ),
                bind(
                    "/sys/fs/cgroup/cpu",
                    "/sys/fs/cgroup/cpu,cpuacct/capcri/pod1/ctr1"
                ),
                bind(
                    "/sys/fs/cgroup/cpuacct",
                    "/sys/fs/cgroup/cpu,cpuacct/capcri/pod1/ctr1"
                ),
                bind(
                    "/sys/fs/cgroup/cpuset",
                    "/sys/fs/cgroup/cpuset/capcri/pod1/ctr1"
                ),
                bind(
                    "/sys/fs/cgroup/memory",
                    "/sys/fs/cgroup/memory/capcri/pod1/ctr1"
                ),
                ("/dev/shm".into(), "tmpfs".into(), "shm".into(), "".into()),
            ]
        );
    }

    #[test]
    fn privileged_binds_are_writable_and_cgroup2_hosts_are_untouched() {
        let mut spec = spec_with(&["nosuid", "rw"]);
        emulate_cgroup_v1(&mut spec, &[h("/sys/fs/cgroup/memory", &["memory"])]);
        let got = summary(&spec);
        assert_eq!(got[2].3, "rbind,rw,nosuid,noexec,nodev");

        let mut spec = spec_with(&["ro"]);
        let before = summary(&spec);
        emulate_cgroup_v1(&mut spec, &[]);
        assert_eq!(summary(&spec), before);
    }
}
