//! A value worked out once from the unchanging part of the record that
//! holds it.

use std::fmt;
use std::sync::{Arc, OnceLock};

/// Computed on first use and kept with the record: clones made after that
/// share it, a clone made before computes its own. Never persisted (a
/// record field holding one is `#[serde(skip)]`): a record read back from
/// disk computes it again. The holder guarantees that what it is computed
/// from never changes for the record's life.
pub struct Memo<T: ?Sized>(OnceLock<Arc<T>>);

impl<T: ?Sized> Memo<T> {
    pub fn get_or_init(&self, f: impl FnOnce() -> Arc<T>) -> &T {
        self.0.get_or_init(f)
    }

    /// `get_or_init`, as a share of the value that outlives the record's
    /// borrow (it is copied out under the table's lock).
    pub fn get_or_init_shared(&self, f: impl FnOnce() -> Arc<T>) -> Arc<T> {
        self.0.get_or_init(f).clone()
    }

    pub fn is_set(&self) -> bool {
        self.0.get().is_some()
    }
}

impl<T: ?Sized> Default for Memo<T> {
    fn default() -> Self {
        Memo(OnceLock::new())
    }
}

impl<T: ?Sized> Clone for Memo<T> {
    fn clone(&self) -> Self {
        let cell = OnceLock::new();
        if let Some(v) = self.0.get() {
            let _ = cell.set(v.clone());
        }
        Memo(cell)
    }
}

/// Records are logged with `{:?}`: the memo says only whether it is set.
impl<T: ?Sized> fmt::Debug for Memo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "Memo(set)"
        } else {
            "Memo(unset)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_once_and_shared_by_later_clones() {
        let m: Memo<[u8]> = Memo::default();
        let early = m.clone();
        let mut calls = 0;
        assert_eq!(
            m.get_or_init(|| {
                calls += 1;
                Arc::from(&b"ab"[..])
            }),
            b"ab"
        );
        assert_eq!(m.get_or_init(|| unreachable!("already set")), b"ab");
        assert_eq!(calls, 1);
        let late = m.clone();
        assert!(late.is_set());
        assert!(std::ptr::eq(
            late.get_or_init(|| unreachable!("shared")),
            m.get_or_init(|| unreachable!("set"))
        ));
        assert!(!early.is_set(), "a clone made before computes its own");
        assert_eq!(format!("{m:?} {early:?}"), "Memo(set) Memo(unset)");
    }
}
