//! Reading and writing a container's or pod's cgroup files, on cgroup v1
//! (one hierarchy per controller under /sys/fs/cgroup, as on this hybrid
//! host) and on a pure cgroup v2 host (one tree, `cgroup.controllers` at the
//! root). The parsing and formatting rules live in `cgroup_files`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::cgroup_files::{
    MemoryUsage, ResourceUpdate, available_bytes, cpu_usage_v2, memory_v1, memory_v2,
    oom_kill_count, single_number, v1_writes, v2_writes,
};

use crate::util::cgroupfs::{CGROUP_ROOT, is_unified};

/// A group by its path relative to every hierarchy (the OCI
/// `linux.cgroupsPath`, e.g. `/capcri/<pod>/<container>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPath {
    rel: PathBuf,
    unified: bool,
}

impl CgroupPath {
    pub fn new(cgroups_path: &Path) -> CgroupPath {
        let rel = cgroups_path
            .strip_prefix("/")
            .unwrap_or(cgroups_path)
            .to_path_buf();
        CgroupPath {
            rel,
            unified: is_unified(),
        }
    }

    /// The file of a v1 `controller` (ignored on v2).
    fn file(&self, controller: &str, name: &str) -> PathBuf {
        let root = Path::new(CGROUP_ROOT);
        if self.unified {
            root.join(&self.rel).join(name)
        } else {
            root.join(controller).join(&self.rel).join(name)
        }
    }

    fn read(&self, controller: &str, name: &str) -> Option<String> {
        std::fs::read_to_string(self.file(controller, name)).ok()
    }

    /// SIGKILLs every process of the group, in every hierarchy, until none
    /// is left or `timeout` passes; returns whether it is empty. In a
    /// shared-PID pod a container's children outlive its init (they are
    /// re-parented to the pod's init, still in the container's cgroup), and
    /// libcontainer's own cgroup removal gives them about 100 ms to die,
    /// which a loaded node does not always meet ("could not delete").
    pub fn kill_all(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        // cgroup v2 (5.14+): one write SIGKILLs the whole subtree, racing
        // no fork; the loop below then only waits for it to empty.
        if self.unified {
            let _ = std::fs::write(
                Path::new(CGROUP_ROOT).join(&self.rel).join("cgroup.kill"),
                "1",
            );
        }
        let dirs = crate::util::cgroupfs::dirs_of(&self.rel);
        loop {
            let mut left = false;
            for dir in &dirs {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    left = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if !left {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Removes the group from every hierarchy, with any groups under it,
    /// deepest first; a directory still busy (its killed processes are
    /// exiting) is tried again every 10 ms until `timeout`. The caller has
    /// killed the group's processes (`kill_all`). Error: the first
    /// directory that would not go, and why.
    pub fn remove(&self, timeout: std::time::Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        for dir in crate::util::cgroupfs::dirs_of(&self.rel) {
            crate::util::cgroupfs::remove_tree(&dir, deadline)
                .map_err(|(d, e)| format!("removing cgroup {}: {e}", d.display()))?;
        }
        Ok(())
    }

    /// Whether the group exists (in the memory hierarchy on v1).
    pub fn exists(&self) -> bool {
        self.file("memory", "").is_dir()
    }

    /// Cumulative CPU time in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        if self.unified {
            cpu_usage_v2(&self.read("", "cpu.stat")?)
        } else {
            single_number(&self.read("cpuacct", "cpuacct.usage")?)
        }
    }

    /// Tasks in the group and its descendants (`pids.current`; the pids
    /// controller counts threads, as CRI-O and containerd report it).
    pub fn pids_current(&self) -> Option<u64> {
        single_number(&self.read("pids", "pids.current")?)
    }

    pub fn memory(&self) -> Option<MemoryUsage> {
        let (mut usage, limit) = if self.unified {
            let current = single_number(&self.read("", "memory.current")?)?;
            let limit = self.read("", "memory.max");
            (memory_v2(current, &self.read("", "memory.stat")?), limit)
        } else {
            let usage = single_number(&self.read("memory", "memory.usage_in_bytes")?)?;
            let limit = self.read("memory", "memory.limit_in_bytes");
            (
                memory_v1(usage, &self.read("memory", "memory.stat")?),
                limit,
            )
        };
        usage.available_bytes = available_bytes(
            limit.as_deref().and_then(single_number),
            usage.working_set_bytes,
        );
        Some(usage)
    }

    /// Whether the kernel OOM killer has killed a process of this group.
    /// Read before the group is removed (libcontainer removes it at delete).
    pub fn oom_killed(&self) -> bool {
        self.oom_kills().is_some_and(|n| n > 0)
    }

    /// The OOM killer's kill count of this group and its descendants
    /// (v1 memory.oom_control, v2 memory.events).
    pub fn oom_kills(&self) -> Option<u64> {
        let text = if self.unified {
            self.read("", "memory.events")
        } else {
            self.read("memory", "memory.oom_control")
        };
        text.as_deref().and_then(oom_kill_count)
    }

    /// The group's parent (the pod's cgroup of a container's).
    pub fn parent(&self) -> Option<CgroupPath> {
        Some(CgroupPath {
            rel: self.rel.parent()?.to_path_buf(),
            unified: self.unified,
        })
    }

    /// Apply new limits to the running group.
    pub fn apply(&self, update: &ResourceUpdate) -> Result<(), String> {
        let writes = if self.unified {
            v2_writes(update)
        } else {
            v1_writes(update)
        };
        let put = |controller: &str, file: &str, value: &str| {
            // Never a path: `unified` keys are checked upstream, and this
            // is the last line of defence against `../` in one.
            if file.contains('/') {
                return Err((
                    PathBuf::from(file),
                    std::io::Error::from(ErrorKind::InvalidInput),
                ));
            }
            let path = self.file(controller, file);
            std::fs::write(&path, value).map_err(|e| (path, e))
        };
        let mut i = 0;
        while i < writes.len() {
            let w = &writes[i];
            let next = writes.get(i + 1);
            match put(w.controller, &w.file, &w.value) {
                Ok(()) => {}
                // memsw does not exist when swap accounting is off.
                Err((_, e))
                    if w.file == "memory.memsw.limit_in_bytes"
                        && e.kind() == ErrorKind::NotFound => {}
                // Raising the limit above memsw: memsw first, then the limit.
                Err((_, e))
                    if w.file == "memory.limit_in_bytes"
                        && e.raw_os_error() == Some(libc::EINVAL)
                        && next.is_some_and(|n| n.file == "memory.memsw.limit_in_bytes") =>
                {
                    if let Some(n) = next {
                        put(n.controller, &n.file, &n.value)
                            .and_then(|()| put(w.controller, &w.file, &w.value))
                            .map_err(|(p, e)| format!("writing {}: {e}", p.display()))?;
                    }
                    i += 1;
                }
                Err((p, e)) => {
                    return Err(format!("writing {:?} to {}: {e}", w.value, p.display()));
                }
            }
            i += 1;
        }
        Ok(())
    }
}
/// mkdir of each level under `hierarchy`; a new cpuset (v1) gets its
/// parent's cpus and mems, without which no process may join it.
pub(crate) fn create_cgroup(hierarchy: &Path, rel: &Path) -> Result<(), String> {
    let mut dir = hierarchy.to_path_buf();
    for part in rel.components() {
        let parent = dir.clone();
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating cgroup {}: {e}", dir.display())),
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(file);
            let Ok(current) = std::fs::read_to_string(&own) else {
                continue;
            };
            if current.trim().is_empty() {
                let inherited = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                std::fs::write(&own, inherited.trim())
                    .map_err(|e| format!("setting {}: {e}", own.display()))?;
            }
        }
    }
    Ok(())
}
