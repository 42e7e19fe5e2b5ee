//! The policies in force on this node: loaded from the policy directory at
//! start, reloaded when the directory changes.
//!
//! A reload is all or nothing: a directory with any invalid file is
//! rejected whole, the previous set stays in force, and the failure is
//! logged and counted. Running containers keep the decision they were
//! created with; only new CreateContainer calls see a new set.

use crate::capabilities::policy::{DirSnapshot, LoadError, PolicySet, snapshot_dir};
use crate::util::sync::{read, write};
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

/// A digest of what one snapshot read (names and the very bytes that are
/// parsed): a reload is attempted only when it changes (mtimes are too
/// coarse for quick edits). Errors are part of it, so one persistent error
/// is logged and counted once, not on every poll.
fn fingerprint(snap: &DirSnapshot) -> String {
    if snap.missing {
        return "missing".into();
    }
    let mut hasher = Sha256::new();
    for (file, text) in &snap.sources {
        hasher.update(file.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    for e in &snap.errors {
        hasher.update(b"error\0");
        hasher.update(e.to_string().as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

impl PolicyStore {
    /// Loads the directory; an invalid set at start is an error (the daemon
    /// refuses to start rather than run with a policy the admin did not write).
    pub fn open(dir: &Path) -> Result<PolicyStore, Vec<String>> {
        let snap = snapshot_dir(dir);
        let print = fingerprint(&snap);
        let (set, errors) = PolicySet::from_snapshot(snap);
        if !errors.is_empty() {
            return Err(describe(&errors));
        }
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
        read(&self.current).clone()
    }

    /// Load errors of the last rejected reload (empty when the last one
    /// succeeded).
    pub fn last_errors(&self) -> Vec<String> {
        read(&self.last_errors).clone()
    }

    /// Reloads if the directory changed. Returns whether a new set is in force.
    ///
    /// Each file is read once per poll ([`snapshot_dir`]); the fingerprint
    /// and the parse see the same bytes. Fail closed: a directory that
    /// vanished or cannot be read, or a file that cannot be read (removed
    /// or replaced mid-poll, not a regular file), rejects the poll and the
    /// last good set stays in force. A missing directory means "no
    /// policies" only at start; once policies were loaded, removing the
    /// directory is treated as an accident (an unmounted ConfigMap, a
    /// half-done deploy), not as "allow everything": to drop every policy,
    /// empty the directory instead.
    pub fn reload_if_changed(&self) -> bool {
        let snap = snapshot_dir(&self.dir);
        let print = fingerprint(&snap);
        if *read(&self.fingerprint) == print {
            return false;
        }
        *write(&self.fingerprint) = print;
        let loaded = if snap.missing && !self.current().policy_names().is_empty() {
            Err(vec![format!(
                "policy directory {} disappeared: the previous policies stay in force; recreate it (an empty directory means no policies)",
                self.dir.display()
            )])
        } else {
            let (set, errors) = PolicySet::from_snapshot(snap);
            if errors.is_empty() {
                Ok(set)
            } else {
                Err(describe(&errors))
            }
        };
        match loaded {
            Ok(set) => {
                info!(policy_dir = %self.dir.display(), policies = ?set.policy_names(), "capability policies reloaded");
                *write(&self.current) = Arc::new(set);
                write(&self.last_errors).clear();
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(errors) => {
                error!(
                    policy_dir = %self.dir.display(),
                    errors = ?errors,
                    "policy change rejected whole; the previous policies stay in force: fix the files listed"
                );
                *write(&self.last_errors) = errors;
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

    /// Issue 12 item 10: a directory that vanishes, becomes unreadable, or
    /// whose file is swapped for something that is not a regular file
    /// mid-poll keeps the last good set (fail closed), logs and counts a
    /// failure once, and recovers when the directory is good again.
    #[test]
    fn vanished_or_unreadable_directory_keeps_the_last_good_set() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("policies");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), GOOD).unwrap();
        let store = PolicyStore::open(&dir).unwrap();
        let failed = || store.reloads_failed.load(Ordering::Relaxed);

        // Vanishes.
        std::fs::rename(&dir, root.path().join("moved")).unwrap();
        assert!(!store.reload_if_changed());
        assert_eq!(store.current().policy_names(), vec!["exec-direct"]);
        assert_eq!(failed(), 1);
        assert!(
            store.last_errors()[0].contains("disappeared"),
            "{:?}",
            store.last_errors()
        );
        assert!(!store.reload_if_changed(), "same state: no second failure");
        assert_eq!(failed(), 1);

        // Replaced by a file (read_dir fails with ENOTDIR).
        std::fs::write(&dir, "not a directory").unwrap();
        assert!(!store.reload_if_changed());
        assert_eq!(store.current().policy_names(), vec!["exec-direct"]);
        assert_eq!(failed(), 2);
        std::fs::remove_file(&dir).unwrap();

        // Back, with a policy file swapped for a FIFO: refused, no hang.
        std::fs::rename(root.path().join("moved"), &dir).unwrap();
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        nix::unistd::mkfifo(
            &dir.join("a.yaml"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(!store.reload_if_changed());
        assert_eq!(store.current().policy_names(), vec!["exec-direct"]);
        assert_eq!(failed(), 3);
        assert!(
            store.last_errors()[0].contains("a.yaml"),
            "{:?}",
            store.last_errors()
        );

        // Or for a directory: the policy is never silently left out.
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        std::fs::create_dir(dir.join("a.yaml")).unwrap();
        std::fs::write(dir.join("b.yaml"), GOOD.replace("exec-direct", "other")).unwrap();
        assert!(!store.reload_if_changed());
        assert_eq!(store.current().policy_names(), vec!["exec-direct"]);
        assert_eq!(failed(), 4);

        // Good again.
        std::fs::remove_dir(dir.join("a.yaml")).unwrap();
        assert!(store.reload_if_changed());
        assert_eq!(store.current().policy_names(), vec!["other"]);
        assert!(store.last_errors().is_empty());

        // An emptied directory is the deliberate way to drop every policy.
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        assert!(store.reload_if_changed());
        assert!(store.current().policy_names().is_empty());
    }

    /// What is parsed is what was read: a snapshot keeps the bytes of its
    /// single read, whatever happens to the file afterwards, and the
    /// fingerprint is of those same bytes.
    #[test]
    fn each_file_is_read_once_per_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        let snap = snapshot_dir(dir.path());
        let print = fingerprint(&snap);
        std::fs::write(
            dir.path().join("a.yaml"),
            GOOD.replace("exec-direct", "swapped"),
        )
        .unwrap();
        let (set, errors) = PolicySet::from_snapshot(snap);
        assert!(errors.is_empty());
        assert_eq!(set.policy_names(), vec!["exec-direct"]);
        assert_ne!(fingerprint(&snapshot_dir(dir.path())), print);
        // A file over the size cap is an error, not a truncated policy.
        let big = "#".repeat(crate::capabilities::policy::MAX_POLICY_FILE_BYTES as usize + 1);
        std::fs::write(dir.path().join("huge.yaml"), big).unwrap();
        let snap = snapshot_dir(dir.path());
        assert!(
            snap.errors
                .iter()
                .any(|e| e.to_string().contains("huge.yaml")),
            "{:?}",
            snap.errors
        );
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
