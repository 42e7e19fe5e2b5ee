//! The capability decision of one CreateContainer: facts gathered from the
//! request, the image and the node, evaluated by the policies in force,
//! and turned into the OCI capability sets.

use super::rootfs_read::{RootDir, read_link_of};
use crate::capabilities::kernel::{CapSet, Capability, FileCaps, parse_file_caps};
use crate::capabilities::policy::{
    Decision, Facts, ImageFacts, NodeFacts, PolicySet, ResolvedIdentity, RootfsView, SetIdBits,
};
use crate::image::ImageRecord;
use crate::pod::PodSandbox;
use k8s_cri::v1::ContainerConfig;
use oci_spec::runtime::{Capability as OciCapability, LinuxCapabilities};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use tracing::warn;

/// The image's file-capability index (from the layer headers, indexed at
/// pull) over the container's mounted rootfs (for symlinks and file types).
/// The rootfs is hostile: every lookup resolves inside it.
///
/// Each path is looked at once: resolving an entrypoint tries every PATH
/// directory, checks each component of each for a symlink and opens the
/// candidate several times, and the mount-destination check walks the
/// same directories again. Nothing changes the rootfs meanwhile: it was
/// mounted by this CreateContainer, no process runs in it yet, and its
/// lower layers are read-only.
pub struct MountedRootfs {
    root: RootDir,
    file_caps: BTreeMap<String, FileCaps>,
    seen: RefCell<HashMap<String, Option<Entry>>>,
}

/// What a path of the rootfs is, symlinks not followed.
#[derive(Debug, Clone)]
enum Entry {
    File(SetIdBits),
    Symlink(String),
    Other,
}

impl MountedRootfs {
    pub fn new(root: RootDir, file_caps: BTreeMap<String, FileCaps>) -> MountedRootfs {
        MountedRootfs {
            root,
            file_caps,
            seen: RefCell::default(),
        }
    }

    /// fstat of an O_PATH handle opened inside the rootfs without following
    /// the last component (the image cannot point it at a host file), and
    /// the link's target when it is one; None when nothing is there.
    fn entry(&self, path: &str) -> Option<Entry> {
        if let Some(e) = self.seen.borrow().get(path) {
            return e.clone();
        }
        let entry = self.root.open_handle(path, false).and_then(|h| {
            use std::os::unix::fs::MetadataExt;
            let m = h.metadata().ok()?;
            Some(if m.file_type().is_symlink() {
                // A link that cannot be read is treated as no link, as
                // before: the caller then finds no file at its path.
                match read_link_of(&h) {
                    Some(target) => Entry::Symlink(target),
                    None => Entry::Other,
                }
            } else if m.is_file() {
                Entry::File(SetIdBits::from_mode(m.mode(), m.uid(), m.gid()))
            } else {
                Entry::Other
            })
        });
        self.seen
            .borrow_mut()
            .insert(path.to_string(), entry.clone());
        entry
    }
}

impl RootfsView for MountedRootfs {
    fn read_link(&self, path: &str) -> Option<String> {
        match self.entry(path)? {
            Entry::Symlink(target) => Some(target),
            _ => None,
        }
    }
    fn is_file(&self, path: &str) -> bool {
        matches!(self.entry(path), Some(Entry::File(_)))
    }
    fn file_caps(&self, path: &str) -> Option<FileCaps> {
        self.file_caps.get(path).copied()
    }
    fn all_file_caps(&self) -> Vec<(String, FileCaps)> {
        self.file_caps
            .iter()
            .map(|(p, c)| (p.clone(), *c))
            .collect()
    }
    fn set_id(&self, path: &str) -> SetIdBits {
        match self.entry(path) {
            Some(Entry::File(bits)) => bits,
            _ => SetIdBits::default(),
        }
    }
}

/// Parses the raw xattrs of the image's index. A value the kernel would
/// refuse is skipped with a warning: it grants nothing at execve either.
pub fn image_file_caps(image: &ImageRecord) -> BTreeMap<String, FileCaps> {
    let mut out = BTreeMap::new();
    for (path, raw) in &image.file_caps {
        match parse_file_caps(raw) {
            Ok(c) => {
                out.insert(path.clone(), c);
            }
            Err(e) => {
                warn!(image = %image.id, path = %path, error = %e, "ignoring malformed security.capability")
            }
        }
    }
    out
}

pub fn image_facts(
    image: &ImageRecord,
    name: &str,
    file_caps: BTreeMap<String, FileCaps>,
) -> ImageFacts {
    let cfg = image.config.config().clone().unwrap_or_default();
    ImageFacts {
        name: name.to_string(),
        names: crate::image::names::all_names(image),
        digest: image
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone()),
        user: cfg.user().clone().unwrap_or_default(),
        entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
        cmd: cfg.cmd().clone().unwrap_or_default(),
        env: cfg.env().clone().unwrap_or_default(),
        working_dir: cfg.working_dir().clone().unwrap_or_default(),
        file_caps,
    }
}

/// Image facts for `capcri policy eval --image REF`, read from the image
/// records a daemon with `data_dir` pulled, without opening the store
/// (opening it cleans up, which must never race a running daemon).
pub fn image_facts_from_data_dir(
    data_dir: &std::path::Path,
    reference: &str,
) -> Result<ImageFacts, String> {
    let records_dir = data_dir.join("images").join("images");
    let wanted =
        crate::image::normalize_reference(reference).unwrap_or_else(|_| reference.to_string());
    let entries = std::fs::read_dir(&records_dir).map_err(|e| {
        format!(
            "cannot read image records in {}: {e}; pull the image with capcri first or pass --data-dir",
            records_dir.display()
        )
    })?;
    for entry in entries.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        // The store writes `{"record": {...}, "layer_blobs": [...]}`.
        #[derive(serde::Deserialize)]
        struct Stored {
            record: ImageRecord,
        }
        let Ok(Stored { record }) = serde_json::from_slice::<Stored>(&bytes) else {
            continue;
        };
        let by_tag = record.repo_tags.contains(&wanted);
        let by_digest = record.repo_digests.iter().any(|d| d == reference);
        let by_id = record.id == reference || record.id.trim_start_matches("sha256:") == reference;
        if by_tag || by_digest || by_id {
            let caps = image_file_caps(&record);
            let name = crate::image::names::reported_name(&record, &[reference]);
            return Ok(image_facts(&record, &name, caps));
        }
    }
    Err(format!(
        "image {reference} is not in {}; pull it first (crictl pull {reference})",
        records_dir.display()
    ))
}

pub fn node_facts() -> NodeFacts {
    NodeFacts {
        kernel_version: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// Evaluates the policies for one container.
pub fn decide(
    policies: &PolicySet,
    pod: &PodSandbox,
    container: &ContainerConfig,
    image: ImageFacts,
    identity: ResolvedIdentity,
    rootfs: &dyn RootfsView,
) -> Decision {
    let facts = Facts::from_cri(
        &pod.config,
        container,
        image,
        node_facts(),
        identity,
        &pod.runtime_handler,
    );
    policies.evaluate(&facts, rootfs)
}

fn oci_set(set: CapSet) -> HashSet<OciCapability> {
    set.iter()
        .filter_map(|c| match crate::capabilities::oci::oci_capability(c) {
            Some(c) => Some(c),
            None => {
                warn!(capability = %c, "capability unknown to oci-spec; not passed to the runtime");
                None
            }
        })
        .collect()
}

/// The bounding set of this process: what any container of this node can
/// have at most. A host (or a runtime in a container) may lack some
/// capabilities, e.g. CAP_SYS_RESOURCE here; asking the kernel for them
/// fails container creation with an opaque error, so capcri clamps first,
/// as containerd does for privileged containers.
///
/// Read once: a process's bounding set only ever shrinks, and only by its
/// own `PR_CAPBSET_DROP`, which the daemon never makes (the pod init
/// drops from its own, in its own process).
pub fn host_bounding_set() -> CapSet {
    static BOUNDING: std::sync::OnceLock<CapSet> = std::sync::OnceLock::new();
    *BOUNDING.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        parse_cap_bnd(&status).unwrap_or_else(|| Capability::ALL.iter().copied().collect())
    })
}

fn parse_cap_bnd(status: &str) -> Option<CapSet> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))?
        .trim();
    let bits = u64::from_str_radix(hex, 16).ok()?;
    Some(
        Capability::ALL
            .iter()
            .copied()
            .filter(|c| bits & (1u64 << c.bit()) != 0)
            .collect(),
    )
}

/// Removes from every set what the host cannot grant, with a warning on the
/// decision naming each capability.
pub fn clamp_to_host(decision: &mut Decision, host: CapSet) {
    let missing: Vec<String> = decision
        .caps
        .bounding
        .iter()
        .filter(|c| !host.contains(*c))
        .map(|c| c.to_string())
        .collect();
    if missing.is_empty() {
        return;
    }
    let keep = |s: CapSet| s.iter().filter(|c| host.contains(*c)).collect::<CapSet>();
    let c = &mut decision.caps;
    c.bounding = keep(c.bounding);
    c.effective = keep(c.effective);
    c.permitted = keep(c.permitted);
    c.inheritable = keep(c.inheritable);
    c.ambient = keep(c.ambient);
    decision.warnings.push(format!(
        "{} not in this node's bounding set (capcri itself lacks them): left out of the container",
        missing.join(", ")
    ));
}

/// The decision's five sets as the OCI runtime spec carries them.
pub fn oci_capabilities(decision: &Decision) -> LinuxCapabilities {
    let c = &decision.caps;
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(oci_set(c.bounding)));
    caps.set_effective(Some(oci_set(c.effective)));
    caps.set_permitted(Some(oci_set(c.permitted)));
    caps.set_inheritable(Some(oci_set(c.inheritable)));
    caps.set_ambient(Some(oci_set(c.ambient)));
    caps
}

#[cfg(test)]
mod tests {

    /// The mounted rootfs resolves an entrypoint inside the root (PATH,
    /// symlinks, a link up and out stays in), reads set-id bits without
    /// following the last link, and looks at each path once per create.
    #[test]
    fn the_mounted_rootfs_resolves_inside_it_once_per_path() {
        use super::{MountedRootfs, RootDir};
        use crate::capabilities::policy::{RootfsView, resolve_entrypoint, resolve_symlinks};
        use std::os::unix::fs::{PermissionsExt, symlink};
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("usr")).unwrap();
        std::fs::write(r.join("bin/busybox"), b"x").unwrap();
        std::fs::set_permissions(
            r.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        symlink("busybox", r.join("bin/sh")).unwrap();
        symlink("/bin", r.join("usr/bin")).unwrap();
        symlink("../../../../../../bin/busybox", r.join("up")).unwrap();
        let view = MountedRootfs::new(RootDir::open(r).unwrap(), Default::default());

        let found = resolve_entrypoint(&view, "sh", "/usr/local/bin:/usr/bin:/bin", "/").unwrap();
        assert_eq!(found.path, "/usr/bin/sh");
        assert_eq!(found.target, "/bin/busybox");
        assert_eq!(found.set_id.setuid, Some(nix::unistd::getuid().as_raw()));
        assert_eq!(
            resolve_symlinks(&view, "/up").as_deref(),
            Some("/bin/busybox")
        );
        assert_eq!(view.read_link("/bin/sh").as_deref(), Some("busybox"));
        assert!(!view.is_file("/bin/sh"), "the link itself is not a file");
        assert!(!view.is_file("/usr") && !view.is_file("/missing"));
        assert_eq!(view.set_id("/bin/sh"), Default::default());

        // Seen once: what the first lookups found is the answer for the
        // rest of this create, as the rootfs does not change during it.
        std::fs::remove_file(r.join("bin/busybox")).unwrap();
        assert!(view.is_file("/bin/busybox"));
        let fresh = MountedRootfs::new(RootDir::open(r).unwrap(), Default::default());
        assert!(!fresh.is_file("/bin/busybox"));
        assert!(resolve_entrypoint(&fresh, "sh", "/bin", "/").is_none());
    }

    /// `capcri policy eval --image` finds an image the way the store wrote
    /// it, under every name, and names it as CreateContainer's facts do.
    #[test]
    fn image_facts_read_from_the_store_records() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("images/images");
        std::fs::create_dir_all(&records).unwrap();
        let id = format!("sha256:{}", "a".repeat(64));
        let record = serde_json::json!({
            "record": {
                "id": id, "repo_tags": ["docker.io/library/busybox:latest"],
                "repo_digests": [format!("docker.io/library/busybox@sha256:{}", "1".repeat(64))],
                "size": 1, "diff_ids": [], "file_caps": {},
                "config": {"architecture": "amd64", "os": "linux", "config": {"User": "1000"},
                           "rootfs": {"type": "layers", "diff_ids": []}}
            },
            "layer_blobs": []
        });
        std::fs::write(
            records.join(format!("{}.json", "a".repeat(64))),
            record.to_string(),
        )
        .unwrap();
        for reference in [
            "busybox",
            "docker.io/library/busybox:latest",
            id.as_str(),
            &id[7..],
        ] {
            let facts = image_facts_from_data_dir(dir.path(), reference).unwrap();
            assert_eq!(
                facts.name, "docker.io/library/busybox:latest",
                "{reference}"
            );
            assert_eq!(facts.user, "1000");
            assert_eq!(facts.names.len(), 2);
        }
        assert!(image_facts_from_data_dir(dir.path(), "nginx").is_err());
    }

    use super::*;
    use crate::capabilities::kernel::ThreadCaps;

    #[test]
    fn host_bounding_set_clamps_every_set() {
        let status = "Name:\tx\nCapBnd:\t000001fffeffffff\nCapAmb:\t0\n";
        let host = parse_cap_bnd(status).unwrap();
        assert!(!host.contains(Capability::SysResource));
        assert!(host.contains(Capability::NetAdmin));
        let all: CapSet = Capability::ALL.iter().copied().collect();
        let mut d = Decision {
            allowed: true,
            deny_message: None,
            caps: ThreadCaps {
                bounding: all,
                effective: all,
                permitted: all,
                inheritable: CapSet::default(),
                ambient: CapSet::default(),
            },
            exec_path: crate::capabilities::policy::ExecPath::Direct,
            preflight: crate::capabilities::policy::PreflightMode::Off,
            preflight_failed: false,
            warnings: vec![],
            reasons: vec![],
            prediction: None,
            sysctls: Vec::new(),
        };
        clamp_to_host(&mut d, host);
        assert!(!d.caps.bounding.contains(Capability::SysResource));
        assert!(!d.caps.effective.contains(Capability::SysResource));
        assert!(d.caps.bounding.contains(Capability::SysAdmin));
        assert!(
            d.warnings[0].contains("CAP_SYS_RESOURCE"),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn decision_sets_map_to_oci_names() {
        let mut ambient = CapSet::default();
        ambient.insert(Capability::NetBindService);
        let mut base = CapSet::default();
        base.insert(Capability::NetBindService);
        base.insert(Capability::Chown);
        let d = Decision {
            allowed: true,
            deny_message: None,
            caps: ThreadCaps {
                bounding: base,
                effective: base,
                permitted: base,
                inheritable: ambient,
                ambient,
            },
            exec_path: crate::capabilities::policy::ExecPath::Direct,
            preflight: crate::capabilities::policy::PreflightMode::Off,
            preflight_failed: false,
            warnings: vec![],
            reasons: vec![],
            prediction: None,
            sysctls: Vec::new(),
        };
        let oci = oci_capabilities(&d);
        assert_eq!(
            oci.ambient().as_ref().unwrap(),
            &HashSet::from([OciCapability::NetBindService])
        );
        assert_eq!(oci.bounding().as_ref().unwrap().len(), 2);
        assert!(
            oci.inheritable()
                .as_ref()
                .unwrap()
                .contains(&OciCapability::NetBindService)
        );
    }
}
