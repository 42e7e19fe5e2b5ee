//! Persistent metadata of pods, containers and images, written atomically
//! before an RPC is acknowledged.
//!
//! Every object is one JSON file named by its id. A write goes to a temporary
//! file in the same directory, is fsynced, renamed over the old name and the
//! directory is fsynced: after a crash either the old or the new version is
//! there, never a torn one. (`RecordDir::replace`, for changes a machine
//! crash makes moot, skips the directory's fsync: after a power loss the
//! old version may be the one there, still whole.) On start a file that does not parse is an error
//! that names it, so a pod is never silently dropped.

mod atomic;
pub mod perms;

use atomic::write_whole;
pub use atomic::{write_atomic, write_replace};

use serde::{Serialize, de::DeserializeOwned};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "metadata file {path} is corrupt ({reason}); capcri refuses to start rather than drop \
         the object it describes: repair or move the file away, then restart"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot encode {what} for the metadata store: {reason}")]
    Encode { what: String, reason: String },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A directory of `<id>.json` records of one kind.
#[derive(Debug)]
pub struct RecordDir<T> {
    dir: PathBuf,
    _kind: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> RecordDir<T> {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        Ok(RecordDir {
            dir,
            _kind: PhantomData,
        })
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Durably stores `record`; returns only once it is on disk.
    pub fn put(&self, id: &str, record: &T) -> Result<(), StoreError> {
        write_atomic(&self.path_of(id), &self.encode(id, record)?)
    }

    fn encode(&self, id: &str, record: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec_pretty(record).map_err(|e| StoreError::Encode {
            what: id.to_string(),
            reason: e.to_string(),
        })
    }

    /// Replaces `record` with its content on disk but not, yet, its
    /// directory entry: after a machine crash the previous version or
    /// this one is there, each whole. For changes a machine crash makes
    /// moot (a container's start: after a reboot its record reads Unknown
    /// whether it said created or running); one fsync instead of two.
    pub fn replace(&self, id: &str, record: &T) -> Result<(), StoreError> {
        write_whole(&self.path_of(id), &self.encode(id, record)?)
    }

    /// Removes the record; absent is fine (removal is idempotent in the CRI).
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path_of(id);
        match std::fs::remove_file(&path) {
            Ok(()) => atomic::fsync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Loads every record. Leftover temporary files of an interrupted write
    /// are removed; a record that does not parse stops the load.
    pub fn load_all(&self) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&self.dir, e))?;
            paths.push(entry.path());
        }
        paths.sort();
        for path in paths {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(atomic::TMP_PREFIX) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
            let record = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            out.push(record);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        id: String,
        n: u32,
    }

    #[test]
    fn put_load_delete_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir: RecordDir<Rec> = RecordDir::open(tmp.path().join("recs")).unwrap();
        dir.put(
            "a",
            &Rec {
                id: "a".into(),
                n: 1,
            },
        )
        .unwrap();
        dir.put(
            "b",
            &Rec {
                id: "b".into(),
                n: 2,
            },
        )
        .unwrap();
        dir.put(
            "a",
            &Rec {
                id: "a".into(),
                n: 3,
            },
        )
        .unwrap();
        let all = dir.load_all().unwrap();
        assert_eq!(
            all,
            vec![
                Rec {
                    id: "a".into(),
                    n: 3
                },
                Rec {
                    id: "b".into(),
                    n: 2
                }
            ]
        );
        dir.delete("a").unwrap();
        dir.delete("a").unwrap();
        assert_eq!(dir.load_all().unwrap().len(), 1);
    }

    #[test]
    fn a_replaced_record_is_whole_private_and_leaves_no_temp_file() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir: RecordDir<Rec> = RecordDir::open(tmp.path()).unwrap();
        let first = Rec {
            id: "c".into(),
            n: 1,
        };
        dir.put("c", &first).unwrap();
        let second = Rec {
            id: "c".into(),
            n: 2,
        };
        dir.replace("c", &second).unwrap();
        assert_eq!(dir.load_all().unwrap(), vec![second]);
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["c.json".to_string()]);
        let mode = std::fs::metadata(tmp.path().join("c.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "records hold specs and env");
    }

    #[test]
    fn corrupt_record_is_refused_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir: RecordDir<Rec> = RecordDir::open(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("bad.json"), b"{\"id\": ").unwrap();
        let err = dir.load_all().unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn leftover_temp_files_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir: RecordDir<Rec> = RecordDir::open(tmp.path()).unwrap();
        let stray = tmp.path().join(format!("{}x.json", atomic::TMP_PREFIX));
        std::fs::write(&stray, b"half").unwrap();
        assert!(dir.load_all().unwrap().is_empty());
        assert!(!stray.exists());
    }
}
