//! The e2e scenarios of e2e/scenarios/ for the Rust runners: the Pod model,
//! the kubelet-like translation to CRI requests, and the expectations.
#![allow(dead_code)]

pub mod expect;
pub mod pod;
pub mod translate;

use expect::{ExpectFile, Expectation, PolicySet};
use pod::Pod;
use std::path::{Path, PathBuf};

/// The registry host the manifests name; every runner maps it to the
/// registry that holds the test images (capcri's registry mirrors).
pub const IMAGE_HOST: &str = "e2e.capcri.test";

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub manifest: PathBuf,
    pub pod: Pod,
    pub expect: Vec<Expectation>,
}

impl Scenario {
    pub fn expectations(&self, policies: PolicySet) -> Vec<&Expectation> {
        self.expect
            .iter()
            .filter(|e| e.policies == policies)
            .collect()
    }
}

pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/scenarios")
}

/// Every `NAME.yaml` of `dir` with its `NAME.expect.yaml`, sorted by name.
/// A manifest without expectations, or an expectation that is unsound, is
/// an error: a scenario must never pass by asserting nothing.
pub fn load(dir: &Path) -> Result<Vec<Scenario>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for manifest in paths {
        let file = manifest
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some(name) = file.strip_suffix(".yaml") else {
            continue;
        };
        if name.ends_with(".expect") {
            continue;
        }
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let pod: Pod = serde_norway::from_str(&read(&manifest)?)
            .map_err(|e| format!("{}: {e}", manifest.display()))?;
        let expect_path = dir.join(format!("{name}.expect.yaml"));
        let expect: ExpectFile = serde_norway::from_str(&read(&expect_path)?)
            .map_err(|e| format!("{}: {e}", expect_path.display()))?;
        let containers: Vec<&str> = pod
            .spec
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        if expect.expect.is_empty() {
            return Err(format!("{}: no expectations", expect_path.display()));
        }
        for e in &expect.expect {
            e.validate(&containers)
                .map_err(|err| format!("{}: {err}", expect_path.display()))?;
        }
        for c in &pod.spec.containers {
            if !c.image.starts_with(&format!("{IMAGE_HOST}/")) {
                return Err(format!(
                    "{}: container {:?} pulls {:?}; scenario images must be named {IMAGE_HOST}/... so every runner can map them to its registry",
                    manifest.display(),
                    c.name,
                    c.image
                ));
            }
        }
        out.push(Scenario {
            name: name.to_string(),
            manifest,
            pod,
            expect: expect.expect,
        });
    }
    Ok(out)
}
