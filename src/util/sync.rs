//! Locks that survive a panic elsewhere, and per-key async locks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Poisoning only follows a panic elsewhere; the data stays consistent
/// because every critical section of capcri is a single insert, remove,
/// replace or clone, so the daemon goes on instead of panicking in turn.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`lock`] for the read side of an `RwLock`.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// [`lock`] for the write side of an `RwLock`.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Per-object async locks: lifecycle calls on one pod or container are
/// serialised (stop while start, remove while exec) without blocking calls
/// on other objects.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = lock(&self.locks)
            .entry(key.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Drops the key's lock when nobody holds or waits for it.
    pub fn forget(&self, key: &str) {
        let mut map = lock(&self.locks);
        if let Some(l) = map.get(key)
            && Arc::strong_count(l) == 1
        {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_hands_out_its_data() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    #[tokio::test]
    async fn keyed_locks_forget_only_idle_keys() {
        let locks = KeyedLocks::default();
        let held = locks.lock("a").await;
        locks.forget("a");
        assert_eq!(lock(&locks.locks).len(), 1, "held: kept");
        drop(held);
        locks.forget("a");
        assert!(lock(&locks.locks).is_empty());
    }
}
