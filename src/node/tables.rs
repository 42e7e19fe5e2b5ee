//! The pod and container tables: each one's in-memory map and its record
//! directory behind one owner, and the name reservations both share.
//!
//! The record on disk is the commit point: a change is written (fsynced)
//! first and only then made visible in the map, so nothing a CRI call
//! answered is lost by a crash, and `recovery` tears down whatever a crash
//! left without a record. That order is written once, here ([`Table::put`]);
//! the writes run through `util::task::blocking` so an fsync never stalls
//! the async worker it is called on. One change is only shown
//! ([`Table::publish`]): a container's start, which its pod monitor answers
//! for after a crash of the daemon (see `Node::start_container`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::container::ContainerRecord;
use crate::error::NodeError;
use crate::pod::PodSandbox;
use crate::store::{RecordDir, StoreError};
use crate::util::sync::lock;
use crate::util::task::blocking;

/// A record kept in a [`Table`]: its id is its key in the map and its file
/// name in the record directory.
pub(crate) trait Keyed: Clone + Serialize + DeserializeOwned {
    fn key(&self) -> &str;
}

impl Keyed for PodSandbox {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for ContainerRecord {
    fn key(&self) -> &str {
        &self.id
    }
}

/// The map of one kind of record and its directory on disk.
pub(crate) struct Table<R> {
    map: Mutex<HashMap<String, R>>,
    /// Shared with the blocking threads of [`Table::write_alongside`].
    records: Arc<RecordDir<R>>,
    /// Bumped after every change of the map is made ([`Table::publish`],
    /// [`Table::forget`]): an answer made from the map while the number
    /// stayed the same saw no change (`cri::list_cache`).
    version: AtomicU64,
}

impl<R: Keyed> Table<R> {
    /// The table with every record of `records` loaded.
    pub(crate) fn load(records: RecordDir<R>) -> Result<Table<R>, StoreError> {
        let map = records
            .load_all()?
            .into_iter()
            .map(|r| (r.key().to_string(), r))
            .collect();
        Ok(Table {
            map: Mutex::new(map),
            records: Arc::new(records),
            version: AtomicU64::new(0),
        })
    }

    /// The map, for reading; every change goes through
    /// [`Table::publish`] or [`Table::forget`], which count it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, R>> {
        lock(&self.map)
    }

    /// Changes of the map so far (see the field).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Writes `record`, then puts it in the map: the one way a known
    /// record changes.
    pub(crate) fn put(&self, record: R) -> Result<(), StoreError> {
        self.write(&record)?;
        self.publish(record);
        Ok(())
    }

    /// Like [`Table::put`], with [`RecordDir::replace`]'s one fsync: for
    /// changes of a known record that a machine crash makes moot.
    pub(crate) fn replace(&self, record: R) -> Result<(), StoreError> {
        blocking(|| self.records.replace(record.key(), &record))?;
        self.publish(record);
        Ok(())
    }

    /// Writes `record` without showing it yet: a new pod or container is
    /// written at the end of its set-up ([`Table::publish`] follows when
    /// the whole call has succeeded).
    pub(crate) fn write(&self, record: &R) -> Result<(), StoreError> {
        blocking(|| self.records.put(record.key(), record))
    }

    /// [`Table::write`] on a blocking thread of its own, so the caller can
    /// go on meanwhile: CreateContainer writes a new container's record
    /// while the pod monitor builds the container. `then` runs on that
    /// thread once the record is on disk (a crash point). The handle's
    /// panic is the caller's to report.
    pub(crate) fn write_alongside(
        &self,
        record: R,
        then: impl FnOnce() + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>>
    where
        R: Send + 'static,
    {
        let records = Arc::clone(&self.records);
        tokio::task::spawn_blocking(move || {
            records.put(record.key(), &record)?;
            then();
            Ok(())
        })
    }

    /// Shows a record already written.
    pub(crate) fn publish(&self, record: R) {
        self.lock().insert(record.key().to_string(), record);
        // After the change is in: a reader that saw the old number and
        // then the new map also sees a new number when it checks again.
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    /// Deletes the record from disk (idempotent); the map keeps it until
    /// [`Table::forget`], so a removal that fails half-way can be retried.
    pub(crate) fn delete(&self, id: &str) -> Result<(), StoreError> {
        blocking(|| self.records.delete(id))
    }

    /// Drops the record from the map (after [`Table::delete`]).
    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
        self.version.fetch_add(1, Ordering::SeqCst);
    }
}

/// Names reserved by pods and containers, as containerd does: a second
/// RunPodSandbox/CreateContainer with the same metadata is refused.
#[derive(Default)]
pub(crate) struct Names(Mutex<HashSet<String>>);

impl Names {
    pub(crate) fn new(keys: impl IntoIterator<Item = String>) -> Names {
        Names(Mutex::new(keys.into_iter().collect()))
    }

    pub(crate) fn reserve(&self, key: String) -> Result<(), NodeError> {
        let mut names = lock(&self.0);
        if !names.insert(key.clone()) {
            return Err(NodeError::AlreadyExists { name: key });
        }
        Ok(())
    }

    pub(crate) fn release(&self, key: &str) {
        lock(&self.0).remove(key);
    }

    /// Reserves `key` for a new pod or container and picks its id; the
    /// reservation is undone when no id can be had.
    pub(crate) fn reserve_new(&self, key: String) -> Result<String, NodeError> {
        self.reserve(key.clone())?;
        new_id().inspect_err(|_| self.release(&key))
    }
}

/// A new random 64-hex id, like containerd's.
fn new_id() -> Result<String, NodeError> {
    let mut bytes = [0u8; 32];
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| NodeError::io("/dev/urandom".as_ref(), e))?;
    std::io::Read::read_exact(&mut f, &mut bytes)
        .map_err(|e| NodeError::io("/dev/urandom".as_ref(), e))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        id: String,
        v: u32,
    }

    impl Keyed for Rec {
        fn key(&self) -> &str {
            &self.id
        }
    }

    fn rec(id: &str, v: u32) -> Rec {
        Rec { id: id.into(), v }
    }

    #[test]
    fn put_writes_the_record_before_the_map_and_load_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::load(RecordDir::<Rec>::open(dir.path()).unwrap()).unwrap();
        t.put(rec("a", 1)).unwrap();
        t.put(rec("a", 2)).unwrap();
        assert_eq!(t.lock()["a"].v, 2);
        // What a restart sees: the last write.
        let again = Table::load(RecordDir::<Rec>::open(dir.path()).unwrap()).unwrap();
        assert_eq!(again.lock()["a"], rec("a", 2));
    }

    #[test]
    fn write_is_invisible_until_published_and_delete_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::load(RecordDir::<Rec>::open(dir.path()).unwrap()).unwrap();
        t.write(&rec("b", 1)).unwrap();
        assert!(t.lock().is_empty());
        t.publish(rec("b", 1));
        assert!(t.lock().contains_key("b"));
        t.delete("b").unwrap();
        t.delete("b").unwrap();
        assert!(t.lock().contains_key("b"));
        t.forget("b");
        assert!(t.lock().is_empty());
        let again = Table::load(RecordDir::<Rec>::open(dir.path()).unwrap()).unwrap();
        assert!(again.lock().is_empty());
    }

    #[test]
    fn a_name_is_reserved_once() {
        let names = Names::new(["pod/a".to_string()]);
        assert!(matches!(
            names.reserve("pod/a".into()),
            Err(NodeError::AlreadyExists { .. })
        ));
        names.reserve("pod/b".into()).unwrap();
        names.release("pod/a");
        names.reserve("pod/a".into()).unwrap();
    }
}
