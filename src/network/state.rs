//! Per-pod attachment records, so DEL after a daemon restart runs the same
//! plugins with the same prevResult as the ADD (SPEC.md: DEL gets the ADD
//! result; libcni keeps a result cache for the same reason).
//!
//! A record is written before the first ADD (phase `adding`, no result) so
//! a crash in the middle still leaves the config that was used, then again
//! with the result. Writes are atomic (`store::write_atomic`: temp file,
//! fsync, rename, fsync dir; the first one without the fsyncs).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::CniError;
use super::invocation::{PodIdentity, RuntimeCapabilities};

/// What was attached to one pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub pod: PodIdentity,
    pub netns: PathBuf,
    pub ifname: String,
    /// The network list that was used for ADD (see `NetworkList::to_json`).
    pub network: Value,
    /// The file it came from, for messages.
    pub network_file: PathBuf,
    pub capabilities: RuntimeCapabilities,
    /// The final ADD result; None while the ADD is still running.
    pub result: Option<Value>,
}

/// The directory of attachment records.
#[derive(Debug, Clone)]
pub struct AttachmentStore {
    dir: PathBuf,
}

impl AttachmentStore {
    pub fn new(dir: PathBuf) -> Self {
        AttachmentStore { dir }
    }

    /// Record path of a pod; the pod id is validated by `PodIdentity::validate`
    /// (no `/`, no leading `.`), so it cannot leave the directory.
    pub fn path_for(&self, pod_id: &str) -> PathBuf {
        self.dir.join(format!("{pod_id}.json"))
    }

    pub fn load(&self, pod_id: &str) -> Result<Option<AttachmentRecord>, CniError> {
        let path = self.path_for(pod_id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CniError::io("reading CNI attachment record", path, e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CniError::io(
                "parsing CNI attachment record",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// Write the record durably (fsync of the file and of the directory):
    /// the attachment's result, which a DEL after a reboot needs.
    pub fn save(&self, record: &AttachmentRecord) -> Result<(), CniError> {
        self.write(record, true)
    }

    /// Write the record that an ADD is about to start, without fsync. It
    /// lets a restarted daemon DEL an ADD that a daemon crash cut short, and
    /// a daemon crash keeps the page cache. Only a power loss in the
    /// milliseconds of the ADD could lose it; then the namespace and its
    /// veth are gone with the boot, and the result record written after the
    /// ADD is the durable one. Two fsyncs fewer per RunPodSandbox, which
    /// under a busy disk cost milliseconds each.
    pub fn save_intent(&self, record: &AttachmentRecord) -> Result<(), CniError> {
        self.write(record, false)
    }

    fn write(&self, record: &AttachmentRecord, durable: bool) -> Result<(), CniError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| CniError::io("creating CNI state dir", &self.dir, e))?;
        let path = self.path_for(&record.pod.pod_id);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| {
            CniError::io(
                "encoding CNI attachment record",
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        let written = if durable {
            crate::store::write_atomic(&path, &bytes)
        } else {
            crate::store::write_replace(&path, &bytes)
        };
        written.map_err(|e| match e {
            crate::store::StoreError::Io { path, source } => {
                CniError::io("writing CNI attachment record", path, source)
            }
            other => CniError::io(
                "writing CNI attachment record",
                path.clone(),
                std::io::Error::other(other.to_string()),
            ),
        })
    }

    pub fn remove(&self, pod_id: &str) -> Result<(), CniError> {
        let path = self.path_for(pod_id);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io("removing CNI attachment record", path, e)),
        }
    }
}

/// A rename is durable only once the directory entry is on disk.
fn sync_dir(dir: &Path) -> Result<(), CniError> {
    crate::util::fs::sync_dir(dir).map_err(|e| CniError::io("syncing CNI state dir", dir, e))
}
