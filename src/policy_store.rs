//! The policies in force on this node: loaded from the policy directory at
//! start, reloaded when the directory changes.
//!
//! A reload is all or nothing: a directory with any invalid file is
//! rejected whole, the previous set stays in force, and the failure is
//! logged and counted. Running containers keep the decision they were
//! created with; only new CreateContainer calls see a new set.

use crate::policy::{LoadError, PolicySet};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::{error, info};

pub struct PolicyStore {
    dir: PathBuf,
    current: RwLock<Arc<PolicySet>>,
    fingerprint: RwLock<String>,
    last_errors: RwLock<Vec<String>>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

fn describe(errors: &[LoadError]) -> Vec<String> {
    errors.iter().map(|e| e.to_string()).collect()
}

/// A digest of the names and contents of the policy files: a reload is
/// attempted only when it changes (mtimes are too coarse for quick edits).
fn fingerprint(dir: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("yml")
            )
        })
        .collect();
    files.sort();
    for f in files {
        hasher.update(f.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(&f).unwrap_or_default());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

impl PolicyStore {
    /// Loads the directory; an invalid set at start is an error (the daemon
    /// refuses to start rather than run with a policy the admin did not write).
    pub fn open(dir: &Path) -> Result<PolicyStore, Vec<String>> {
        let print = fingerprint(dir);
        let set = PolicySet::load_dir_strict(dir).map_err(|e| describe(&e))?;
        info!(policy_dir = %dir.display(), policies = ?set.policy_names(), "capability policies loaded");
        Ok(PolicyStore {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(set)),
            fingerprint: RwLock::new(print),
            last_errors: RwLock::new(Vec::new()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn current(&self) -> Arc<PolicySet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Load errors of the last rejected reload (empty when the last one
    /// succeeded).
    pub fn last_errors(&self) -> Vec<String> {
        self.last_errors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads if the directory changed. Returns whether a new set is in force.
    pub fn reload_if_changed(&self) -> bool {
        let print = fingerprint(&self.dir);
        if *self.fingerprint.read().unwrap_or_else(|p| p.into_inner()) == print {
            return false;
        }
        *self.fingerprint.write().unwrap_or_else(|p| p.into_inner()) = print;
        match PolicySet::load_dir_strict(&self.dir) {
            Ok(set) => {
                info!(policy_dir = %self.dir.display(), policies = ?set.policy_names(), "capability policies reloaded");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                self.last_errors
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(errors) => {
                let errors = describe(&errors);
                error!(
                    policy_dir = %self.dir.display(),
                    errors = ?errors,
                    "policy change rejected whole; the previous policies stay in force: fix the files listed"
                );
                *self.last_errors.write().unwrap_or_else(|p| p.into_inner()) = errors;
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Polls the directory for changes until the process exits.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = Arc::clone(&store);
                // Reading and compiling files is blocking work.
                let _ = tokio::task::spawn_blocking(move || s.reload_if_changed()).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata:
  name: exec-direct
spec:
  match: "true"
  rules:
    - execPath: direct
"#;

    #[test]
    fn invalid_change_keeps_the_previous_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        let store = PolicyStore::open(dir.path()).unwrap();
        assert_eq!(store.current().policy_names(), vec!["exec-direct"]);
        assert!(!store.reload_if_changed(), "nothing changed");

        std::fs::write(dir.path().join("b.yaml"), "apiVersion: nope\n").unwrap();
        assert!(!store.reload_if_changed());
        assert_eq!(store.reloads_failed.load(Ordering::Relaxed), 1);
        assert_eq!(store.current().policy_names(), vec!["exec-direct"]);
        assert!(
            store.last_errors()[0].contains("b.yaml"),
            "{:?}",
            store.last_errors()
        );

        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            GOOD.replace("exec-direct", "renamed"),
        )
        .unwrap();
        assert!(store.reload_if_changed());
        assert_eq!(store.current().policy_names(), vec!["renamed"]);
        assert!(store.last_errors().is_empty());
    }

    #[test]
    fn missing_directory_is_the_builtin_set_and_bad_start_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = PolicyStore::open(&dir.path().join("absent")).unwrap();
        assert!(store.current().policy_names().is_empty());
        std::fs::write(dir.path().join("bad.yaml"), "kind: [").unwrap();
        let Err(errs) = PolicyStore::open(dir.path()) else {
            panic!("an invalid policy directory must be refused at start");
        };
        assert!(errs[0].contains("bad.yaml"), "{errs:?}");
    }
}
