//! What the engine needs to know of the container's root filesystem, and
//! entrypoint resolution as execve and the runtime would do it.

use std::collections::BTreeMap;

use crate::capabilities::kernel::FileCaps;

/// A read-only view of the image root filesystem. The daemon implements it
/// over the image's file-capability index and the unpacked rootfs; tests
/// use [`MemoryRootfs`]. Paths are absolute inside the rootfs.
pub trait RootfsView {
    /// The target of a symlink, None if `path` is not a symlink.
    fn read_link(&self, path: &str) -> Option<String>;
    /// Whether `path` is a regular file (symlinks not followed).
    fn is_file(&self, path: &str) -> bool;
    /// The file's `security.capability`, if any (symlinks not followed).
    fn file_caps(&self, path: &str) -> Option<FileCaps>;
    /// Every file with file capabilities.
    fn all_file_caps(&self) -> Vec<(String, FileCaps)>;
    /// The set-id bits of the regular file at `path` and who they make the
    /// process (symlinks not followed: the caller resolved them inside the
    /// rootfs). The default: none, for views that know no modes.
    fn set_id(&self, path: &str) -> SetIdBits {
        let _ = path;
        SetIdBits::default()
    }
}

/// The set-user-ID and set-group-ID bits of a file, with its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SetIdBits {
    /// Mode 04000: the owner's uid.
    pub setuid: Option<u32>,
    /// Mode 02000 with group-execute (without it the bit means mandatory
    /// locking, not set-gid): the group's gid.
    pub setgid: Option<u32>,
}

impl SetIdBits {
    /// From `st_mode`, `st_uid` and `st_gid` of a regular file.
    pub fn from_mode(mode: u32, uid: u32, gid: u32) -> SetIdBits {
        SetIdBits {
            setuid: (mode & 0o4000 != 0).then_some(uid),
            setgid: (mode & 0o2010 == 0o2010).then_some(gid),
        }
    }
}

/// An in-memory rootfs: files, symlinks and file capabilities.
#[derive(Debug, Clone, Default)]
pub struct MemoryRootfs {
    pub files: BTreeMap<String, Option<FileCaps>>,
    pub links: BTreeMap<String, String>,
    pub set_ids: BTreeMap<String, SetIdBits>,
}

impl MemoryRootfs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn file(mut self, path: &str, caps: Option<FileCaps>) -> Self {
        self.files.insert(path.to_string(), caps);
        self
    }

    /// Marks the file at `path` set-uid/set-gid.
    pub fn set_id(mut self, path: &str, bits: SetIdBits) -> Self {
        self.set_ids.insert(path.to_string(), bits);
        self
    }

    pub fn link(mut self, path: &str, target: &str) -> Self {
        self.links.insert(path.to_string(), target.to_string());
        self
    }

    /// A view that knows only the files of an image's file-capability index.
    pub fn from_file_caps(caps: &BTreeMap<String, FileCaps>) -> Self {
        MemoryRootfs {
            files: caps.iter().map(|(p, c)| (p.clone(), Some(*c))).collect(),
            links: BTreeMap::new(),
            set_ids: BTreeMap::new(),
        }
    }
}

impl RootfsView for MemoryRootfs {
    fn read_link(&self, path: &str) -> Option<String> {
        self.links.get(path).cloned()
    }
    fn is_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }
    fn file_caps(&self, path: &str) -> Option<FileCaps> {
        self.files.get(path).copied().flatten()
    }
    fn all_file_caps(&self) -> Vec<(String, FileCaps)> {
        self.files
            .iter()
            .filter_map(|(p, c)| c.map(|c| (p.clone(), c)))
            .collect()
    }
    fn set_id(&self, path: &str) -> SetIdBits {
        self.set_ids.get(path).copied().unwrap_or_default()
    }
}

/// The binary execve will load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBinary {
    /// The path as found (after PATH search), before symlinks.
    pub path: String,
    /// The file after following symlinks inside the rootfs.
    pub target: String,
    pub file_caps: Option<FileCaps>,
    /// The target's set-id bits.
    pub set_id: SetIdBits,
}

/// Lexically normalizes an absolute path (`.`, `..`, `//`), never leaving
/// `/`: symlinks are resolved inside the rootfs like a chroot would.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Follows symlinks in every component of `path` inside the rootfs, as the
/// kernel's path walk does from within the container (40 links at most,
/// the kernel's MAXSYMLINKS).
pub fn resolve_symlinks(view: &dyn RootfsView, path: &str) -> Option<String> {
    let mut pending: Vec<String> = normalize(path)
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut done = String::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        let candidate = format!("{done}/{part}");
        match view.read_link(&candidate) {
            Some(target) => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let base = if target.starts_with('/') {
                    String::new()
                } else {
                    done.clone()
                };
                let joined = normalize(&format!("{base}/{target}"));
                for p in joined.split('/').filter(|s| !s.is_empty()).rev() {
                    pending.push(p.to_string());
                }
                done.clear();
            }
            None => done = candidate,
        }
    }
    Some(if done.is_empty() { "/".into() } else { done })
}

/// Finds the binary of `argv0`: a name with `/` is taken as is (relative to
/// `working_dir`), otherwise the first PATH entry holding a regular file
/// (what the runtime's exec does with the container's merged PATH).
pub fn resolve_entrypoint(
    view: &dyn RootfsView,
    argv0: &str,
    path_env: &str,
    working_dir: &str,
) -> Option<ResolvedBinary> {
    let found = |candidate: String| -> Option<ResolvedBinary> {
        let target = resolve_symlinks(view, &candidate)?;
        view.is_file(&target).then(|| ResolvedBinary {
            file_caps: view.file_caps(&target),
            set_id: view.set_id(&target),
            path: normalize(&candidate),
            target,
        })
    };
    if argv0.is_empty() {
        return None;
    }
    if argv0.contains('/') {
        let abs = if argv0.starts_with('/') {
            argv0.to_string()
        } else {
            format!(
                "{}/{argv0}",
                if working_dir.is_empty() {
                    "/"
                } else {
                    working_dir
                }
            )
        };
        return found(abs);
    }
    path_env
        .split(':')
        .filter(|d| d.starts_with('/'))
        .find_map(|dir| found(format!("{dir}/{argv0}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_path_and_symlinks_inside_rootfs() {
        let caps = FileCaps::default();
        let fs = MemoryRootfs::new()
            .file("/bin/busybox", Some(caps))
            .link("/bin/ping", "busybox")
            .link("/usr/bin", "/bin")
            .link("/escape", "../../../bin/busybox");
        let r = resolve_entrypoint(&fs, "ping", "/nope:/usr/bin", "/");
        assert_eq!(
            r.map(|r| (r.path, r.target)),
            Some(("/usr/bin/ping".to_string(), "/bin/busybox".to_string()))
        );
        assert_eq!(
            resolve_symlinks(&fs, "/escape").as_deref(),
            Some("/bin/busybox")
        );
        assert!(resolve_entrypoint(&fs, "missing", "/bin", "/").is_none());
        assert!(resolve_entrypoint(&fs, "./ping", "", "/bin").is_some());
        let looped = MemoryRootfs::new().link("/a", "/b").link("/b", "/a");
        assert_eq!(resolve_symlinks(&looped, "/a"), None);
    }
}
