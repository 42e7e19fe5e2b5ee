//! Network namespaces made before a pod asks for one.
//!
//! Why: `unshare(CLONE_NEWNET)` builds a whole network stack, about a
//! millisecond here and several on a busy node, and it is the first step of
//! RunPodSandbox (CNI ADD needs the namespace). Taking a namespace made in
//! the background turns that step into one bind mount.
//!
//! Each namespace is fresh (`lo` up, nothing else; no process has ever been
//! in it) and is used once: taken, it is the pod's, and it dies with the
//! pod. The pool lives in the volatile state dir; what a previous daemon
//! left there is destroyed when the pool opens, and a graceful shutdown
//! drains it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::host::{create_netns_at, pin_namespace, unpin};
use crate::util::sync::lock;

/// Namespaces kept ready: enough for the pods a kubelet starts at once on
/// a small node; each costs some kernel memory and nothing else.
pub(crate) const POOL_SIZE: usize = 2;

#[derive(Clone)]
pub(crate) struct NetnsPool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    size: usize,
    ready: Mutex<VecDeque<PathBuf>>,
    /// Pool pins already bind-mounted into a pod, to unmount off the
    /// request path.
    spent: Mutex<Vec<PathBuf>>,
    filling: AtomicBool,
    next: AtomicU64,
}

impl NetnsPool {
    /// The pool in `dir`, emptied of anything a previous daemon left.
    pub(crate) fn open(dir: PathBuf, size: usize) -> std::io::Result<NetnsPool> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            release(&entry.path());
        }
        Ok(NetnsPool {
            inner: Arc::new(Inner {
                dir,
                size,
                ready: Mutex::new(VecDeque::new()),
                spent: Mutex::new(Vec::new()),
                filling: AtomicBool::new(false),
                next: AtomicU64::new(0),
            }),
        })
    }

    /// Pin one of the pool's namespaces at `target` (a bind mount of the
    /// pool's pin); `false` when the pool is empty or the mount failed, and
    /// the caller makes a namespace itself.
    pub(crate) fn take_into(&self, target: &Path) -> bool {
        let Some(pin) = lock(&self.inner.ready).pop_front() else {
            return false;
        };
        let placed = pin_namespace(&pin, target).is_ok();
        if !placed {
            let _ = unpin(target);
        }
        lock(&self.inner.spent).push(pin);
        placed
    }

    /// Top the pool up (and unmount the spent pins) in a background thread,
    /// unless one is already at it.
    pub(crate) fn fill(&self) {
        if self.inner.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("netns-pool".into())
            .spawn(move || {
                // Work that arrived while this thread was finishing (a take
                // after its last check) is picked up by another turn.
                while inner.fill_now() {
                    inner.filling.store(false, Ordering::Release);
                    if !inner.needs_work() || inner.filling.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
                inner.filling.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.inner.filling.store(false, Ordering::Release);
        }
    }

    /// Destroy every ready namespace (graceful shutdown).
    pub(crate) fn drain(&self) {
        let ready: Vec<PathBuf> = lock(&self.inner.ready).drain(..).collect();
        let spent: Vec<PathBuf> = lock(&self.inner.spent).drain(..).collect();
        for pin in ready.iter().chain(&spent) {
            release(pin);
        }
    }

    #[cfg(test)]
    fn ready_count(&self) -> usize {
        lock(&self.inner.ready).len()
    }
}

impl Inner {
    /// Unmount the spent pins and top up; `false` if a namespace could not
    /// be made (pods then make their own, as without a pool).
    fn fill_now(&self) -> bool {
        loop {
            let spent: Vec<PathBuf> = lock(&self.spent).drain(..).collect();
            for pin in spent {
                release(&pin);
            }
            if lock(&self.ready).len() >= self.size {
                return true;
            }
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let pin = self.dir.join(format!("net-{n}"));
            match create_netns_at(&pin) {
                Ok(()) => lock(&self.ready).push_back(pin),
                Err(e) => {
                    warn!(error = %e, "cannot prepare a network namespace ahead of pods");
                    return false;
                }
            }
        }
    }

    fn needs_work(&self) -> bool {
        !lock(&self.spent).is_empty() || lock(&self.ready).len() < self.size
    }
}

/// Unmount and remove a pool pin; a failure leaves a pin the next start
/// clears.
fn release(pin: &Path) {
    let _ = unpin(pin);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privileged() -> bool {
        std::env::var_os("CAPCRI_PRIVILEGED_TESTS").is_some()
    }

    #[test]
    fn an_empty_pool_gives_nothing_and_leftovers_are_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pool");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("net-7"), b"").unwrap();
        let pool = NetnsPool::open(dir.clone(), 2).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(!pool.take_into(&tmp.path().join("target")));
        assert!(!tmp.path().join("target").exists());
    }

    /// Real namespaces: needs root and a private mount namespace
    /// (`unshare --mount`), like the other privileged tests.
    #[test]
    fn taken_namespaces_are_fresh_and_distinct() {
        if !privileged() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let pool = NetnsPool::open(tmp.path().join("pool"), 2).unwrap();
        assert!(pool.inner.fill_now());
        assert_eq!(pool.ready_count(), 2);
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        assert!(pool.take_into(&a));
        assert!(pool.take_into(&b));
        assert!(!pool.take_into(&tmp.path().join("c")), "empty after two");
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let host = ino(Path::new("/proc/self/ns/net"));
        assert_ne!(ino(&a), ino(&b));
        assert_ne!(ino(&a), host);
        assert!(pool.inner.fill_now());
        assert_eq!(pool.ready_count(), 2, "refilled");
        // The spent pool pins are gone; the pods' pins still hold theirs.
        assert_eq!(
            std::fs::read_dir(tmp.path().join("pool")).unwrap().count(),
            2
        );
        assert_ne!(ino(&a), host);
        pool.drain();
        assert_eq!(
            std::fs::read_dir(tmp.path().join("pool")).unwrap().count(),
            0
        );
        for p in [&a, &b] {
            unpin(p).unwrap();
        }
    }
}
