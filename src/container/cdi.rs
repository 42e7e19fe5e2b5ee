//! CDI devices (DRA, GPUs): the spec files of the configured directories
//! (`cdi_spec_dirs`, default /etc/cdi then /var/run/cdi), read, validated
//! and applied to a container's OCI spec with the CNCF
//! `container-device-interface` crate.
//!
//! capcri uses the crate's parser, validator (JSON schema, names, versions)
//! and `ContainerEdits::apply`, not its `Cache`: the cache gives up on every
//! device when one file of any vendor is broken, and its name check prints
//! to stdout. Here each file is read on its own: a broken one is reported
//! (by path, in the error of a device it would have defined) and the
//! others still serve. Spec files are the node admin's, but still bounded
//! in size and checked (`spec::check_cdi_edits`) before anything is applied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use container_device_interface::container_edits::ContainerEdits;
use container_device_interface::device::Device;
use container_device_interface::spec::read_spec;
use oci_spec::runtime::Spec;

use crate::spec::SpecError;

/// No vendor's spec is near this: a larger file is refused unread.
const MAX_SPEC_BYTES: u64 = 4 << 20;

/// The devices of every readable spec file, and the files that could not
/// be used.
pub struct CdiRegistry {
    /// Qualified name -> (device, priority, spec file).
    devices: HashMap<String, (Device, usize, PathBuf)>,
    /// Names defined twice at the same priority: refused, as in CDI.
    conflicts: HashMap<String, Vec<PathBuf>>,
    /// Files that failed to read or validate, with why.
    pub broken: Vec<(PathBuf, String)>,
}

fn is_spec_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json") | Some("yaml")
    )
}

impl CdiRegistry {
    /// Reads every `.json` and `.yaml` file directly in `dirs` (later
    /// directories have higher priority). Missing directories are empty.
    pub fn load(dirs: &[PathBuf]) -> CdiRegistry {
        let mut reg = CdiRegistry {
            devices: HashMap::new(),
            conflicts: HashMap::new(),
            broken: Vec::new(),
        };
        for (priority, dir) in dirs.iter().enumerate() {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for path in files.into_iter().filter(|p| is_spec_file(p)) {
                // Followed: generated specs may be links into a vendor's
                // tree; only a regular file is read.
                match std::fs::metadata(&path) {
                    Ok(m) if !m.is_file() => continue,
                    Ok(m) if m.len() > MAX_SPEC_BYTES => {
                        reg.broken.push((
                            path,
                            format!("{} bytes, more than {MAX_SPEC_BYTES}", m.len()),
                        ));
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        reg.broken.push((path, e.to_string()));
                        continue;
                    }
                }
                match read_spec(&path, priority as i32) {
                    Ok(spec) => {
                        for device in spec.devices.values() {
                            reg.add(device.clone(), priority, &path);
                        }
                    }
                    Err(e) => reg.broken.push((path, format!("{e:#}"))),
                }
            }
        }
        reg
    }

    fn add(&mut self, device: Device, priority: usize, path: &Path) {
        let name = device.get_qualified_name();
        if let Some(paths) = self.conflicts.get_mut(&name) {
            paths.push(path.to_path_buf());
            return;
        }
        match self.devices.get(&name) {
            Some((_, p, _)) if *p > priority => {}
            Some((_, p, other)) if *p == priority => {
                let other = other.clone();
                self.devices.remove(&name);
                self.conflicts.insert(name, vec![other, path.to_path_buf()]);
            }
            _ => {
                self.devices
                    .insert(name, (device, priority, path.to_path_buf()));
            }
        }
    }

    fn unknown_device_error(&self, name: &str, dirs: &[PathBuf]) -> SpecError {
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        let mut reason = if let Some(paths) = self.conflicts.get(name) {
            let p: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            format!(
                "CDI device {name:?} is defined by more than one spec file of the same directory ({}); remove all but one",
                p.join(", ")
            )
        } else {
            format!(
                "unknown CDI device {name:?}: no spec file in {} defines it; install the device's CDI spec (its DRA driver or device plugin writes one) or fix the name",
                searched.join(", ")
            )
        };
        if !self.broken.is_empty() {
            let b: Vec<String> = self
                .broken
                .iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect();
            reason.push_str(&format!(
                "; spec files that could not be used: {}",
                b.join("; ")
            ));
        }
        SpecError::invalid("CDI_devices", reason)
    }

    /// Applies the named devices' edits (and once, each spec file's global
    /// edits) to `spec`.
    pub fn inject(
        &self,
        spec: &mut Spec,
        names: &[String],
        dirs: &[PathBuf],
        user_namespace: bool,
    ) -> Result<(), SpecError> {
        let mut edits = ContainerEdits::new();
        let mut specs_applied: Vec<PathBuf> = Vec::new();
        for name in names {
            let Some((device, _, path)) = self.devices.get(name) else {
                return Err(self.unknown_device_error(name, dirs));
            };
            let refuse = |what: String| {
                SpecError::invalid(
                    "CDI_devices",
                    format!("CDI device {name:?} (spec file {}): {what}", path.display()),
                )
            };
            let mut own = vec![device.edits()];
            if !specs_applied.contains(path) {
                specs_applied.push(path.clone());
                if let Some(global) = device.get_spec().edits() {
                    own.push(global);
                }
            }
            for mut e in own {
                fill_file_modes(&mut e);
                let json = serde_json::to_value(&e.container_edits)
                    .map_err(|e| refuse(format!("cannot be checked: {e}")))?;
                crate::spec::check_cdi_edits(&json, user_namespace).map_err(refuse)?;
                edits.append(e).map_err(|e| refuse(format!("{e:#}")))?;
            }
        }
        edits.apply(spec).map_err(|e| {
            SpecError::invalid(
                "CDI_devices",
                format!("applying the CDI devices {names:?} failed: {e:#}"),
            )
        })
    }
}

/// A device node whose spec gives no fileMode gets its host node's
/// permission bits, as a config device does, rather than libcontainer's
/// 0666 default (the cgroup rule still limits the access).
fn fill_file_modes(edits: &mut ContainerEdits) {
    use std::os::unix::fs::MetadataExt;
    let Some(nodes) = edits.container_edits.device_nodes.as_mut() else {
        return;
    };
    for node in nodes.iter_mut().filter(|n| n.file_mode.is_none()) {
        let Ok(json) = serde_json::to_value(&*node) else {
            continue;
        };
        let host = json
            .get("hostPath")
            .or_else(|| json.get("path"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if let Ok(m) = std::fs::metadata(host) {
            node.file_mode = Some(m.mode() & 0o777);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Linux, LinuxResources, Process};

    const GPU: &str = r#"
cdiVersion: "0.6.0"
kind: "example.com/gpu"
containerEdits:
  env: ["GPU_VENDOR=example"]
devices:
  - name: "0"
    containerEdits:
      env: ["GPU=0"]
      deviceNodes:
        - path: "/dev/example-gpu0"
          hostPath: "/dev/null"
          permissions: "rw"
      mounts:
        - hostPath: "/etc/hostname"
          containerPath: "/etc/example-gpu"
          options: ["ro", "bind"]
  - name: "1"
    containerEdits:
      env: ["GPU=1"]
"#;

    fn base_spec() -> Spec {
        let mut process = Process::default();
        process.set_env(Some(vec!["PATH=/bin".into()]));
        let mut linux = Linux::default();
        linux.set_resources(Some(LinuxResources::default()));
        let mut spec = Spec::default();
        spec.set_process(Some(process));
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn devices_are_found_and_applied_with_their_spec_edits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gpu.yaml"), GPU).unwrap();
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        std::fs::write(dir.path().join("README"), "not a spec").unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        let reg = CdiRegistry::load(&dirs);
        assert_eq!(reg.broken.len(), 1, "{:?}", reg.broken);
        let mut spec = base_spec();
        reg.inject(&mut spec, &["example.com/gpu=0".into()], &dirs, false)
            .unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"GPU=0".to_string()), "{env:?}");
        assert!(env.contains(&"GPU_VENDOR=example".to_string()), "{env:?}");
        assert!(env.contains(&"PATH=/bin".to_string()), "{env:?}");
        let linux = spec.linux().as_ref().unwrap();
        let node = &linux.devices().as_ref().unwrap()[0];
        assert_eq!(node.path(), Path::new("/dev/example-gpu0"));
        assert_eq!((node.major(), node.minor()), (1, 3));
        let rules = crate::spec::device_rules(linux);
        assert!(rules.iter().any(|r| r.allow()
            && r.major() == Some(1)
            && r.minor() == Some(3)
            && r.access().as_deref() == Some("rw")));
        let mounts = spec.mounts().clone().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.destination() == Path::new("/etc/example-gpu"))
        );
    }

    #[test]
    fn unknown_devices_name_the_dirs_and_the_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gpu.yaml"), GPU).unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "cdiVersion: [").unwrap();
        let dirs = vec![dir.path().to_path_buf(), PathBuf::from("/nonexistent/cdi")];
        let reg = CdiRegistry::load(&dirs);
        let e = reg
            .inject(
                &mut base_spec(),
                &["example.com/gpu=7".into()],
                &dirs,
                false,
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown CDI device \"example.com/gpu=7\""),
            "{e}"
        );
        assert!(
            e.contains(&dir.path().display().to_string()) && e.contains("/nonexistent/cdi"),
            "{e}"
        );
        assert!(e.contains("broken.yaml"), "{e}");
    }

    #[test]
    fn later_directories_win_and_same_directory_conflicts_are_refused() {
        let low = tempfile::tempdir().unwrap();
        let high = tempfile::tempdir().unwrap();
        std::fs::write(low.path().join("gpu.yaml"), GPU).unwrap();
        std::fs::write(
            high.path().join("gpu.yaml"),
            GPU.replace("GPU=1", "GPU=one"),
        )
        .unwrap();
        let dirs = vec![low.path().to_path_buf(), high.path().to_path_buf()];
        let reg = CdiRegistry::load(&dirs);
        let mut spec = base_spec();
        reg.inject(&mut spec, &["example.com/gpu=1".into()], &dirs, false)
            .unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"GPU=one".to_string()), "{env:?}");
        std::fs::write(low.path().join("again.yaml"), GPU).unwrap();
        let dirs = vec![low.path().to_path_buf()];
        let reg = CdiRegistry::load(&dirs);
        let e = reg
            .inject(
                &mut base_spec(),
                &["example.com/gpu=0".into()],
                &dirs,
                false,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one spec file"), "{e}");
    }

    #[test]
    fn unsupported_edits_are_refused_before_anything_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("net.yaml"),
            r#"
cdiVersion: "0.8.0"
kind: "example.com/net"
devices:
  - name: "a"
    containerEdits:
      netDevices:
        - hostInterfaceName: "eth9"
          name: "net1"
"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("escape.yaml"),
            r#"
cdiVersion: "0.6.0"
kind: "example.com/esc"
devices:
  - name: "a"
    containerEdits:
      deviceNodes:
        - path: "/etc/shadow"
          hostPath: "/dev/null"
"#,
        )
        .unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        let reg = CdiRegistry::load(&dirs);
        for (name, want) in [
            ("example.com/net=a", "netDevices"),
            ("example.com/esc=a", "not under /dev"),
        ] {
            let mut spec = base_spec();
            let before = serde_json::to_string(&spec).unwrap();
            let e = reg
                .inject(&mut spec, &[name.into()], &dirs, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains(name), "{e}");
            assert_eq!(serde_json::to_string(&spec).unwrap(), before);
        }
    }
}
