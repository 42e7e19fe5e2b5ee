//! The size of containers' writable layers, for ContainerStats.
//!
//! Measuring a writable layer walks every file the container wrote;
//! kubelet asks for every container every 10 s. As containerd's snapshot
//! usage syncer does (its `stats_collect_period`, 10 s), the walk happens
//! off the call path: a call returns the last figures and, when they are
//! older than `MAX_AGE`, starts one background walk that the next call
//! will see. Only a layer never measured is walked on the call (a new
//! container's layer is nearly empty).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::util::fast_map::FastMap;

/// How stale a figure may be before a new walk starts: kubelet's stats
/// period.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// Size of a container's writable layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerUsage {
    /// Allocated bytes (blocks × 512, as `du` counts them).
    pub bytes: u64,
    pub inodes: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    usage: Option<LayerUsage>,
    measured: Instant,
    walking: bool,
}

type Cache = Arc<Mutex<FastMap<PathBuf, Entry>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn lock(c: &Cache) -> std::sync::MutexGuard<'_, FastMap<PathBuf, Entry>> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// The usage of the writable layer at `upper`, at most `MAX_AGE` old plus
/// one walk. Blocking only the first time a layer is seen.
pub fn usage(upper: &Path) -> Option<LayerUsage> {
    usage_with(cache(), upper, MAX_AGE, walk)
}

/// Forgets every layer not in `live` (containers removed since).
pub fn retain(live: &HashSet<PathBuf>) {
    lock(cache()).retain(|dir, _| live.contains(dir));
}

fn usage_with(
    cache: &Cache,
    upper: &Path,
    max_age: Duration,
    walk: fn(&Path) -> Option<LayerUsage>,
) -> Option<LayerUsage> {
    {
        let mut entries = lock(cache);
        if let Some(e) = entries.get_mut(upper) {
            if e.measured.elapsed() >= max_age && !e.walking {
                e.walking = true;
                let (cache, dir) = (cache.clone(), upper.to_path_buf());
                let refresh = move || {
                    let usage = walk(&dir);
                    lock(&cache).insert(
                        dir,
                        Entry {
                            usage,
                            measured: Instant::now(),
                            walking: false,
                        },
                    );
                };
                // One low-priority thread walks the stale layers one after
                // the other (not a pool thread per layer: 250 at once at
                // 250 pods, against kubelet's next calls). With no thread
                // to be had the job is dropped, not run here (it takes
                // this lock), and the next call tries again.
                if crate::util::background::submit(refresh).is_err() {
                    e.walking = false;
                }
            }
            return e.usage;
        }
    }
    let usage = walk(upper);
    lock(cache).insert(
        upper.to_path_buf(),
        Entry {
            usage,
            measured: Instant::now(),
            walking: false,
        },
    );
    usage
}

/// Walks the upper dir without following symlinks. Hard links are counted
/// per link (an upper dir rarely holds any; `du -l` counts the same).
pub fn walk(dir: &Path) -> Option<LayerUsage> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let mut total = LayerUsage {
        bytes: meta.blocks() * 512,
        inodes: 1,
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total.bytes += m.blocks() * 512;
            total.inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_counts_every_inode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), vec![1u8; 10_000]).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("l")).unwrap();
        let u = walk(dir.path()).unwrap();
        assert_eq!(u.inodes, 4);
        assert!(u.bytes >= 10_000, "{u:?}");
        assert_eq!(walk(&dir.path().join("missing")), None);
    }

    /// The first call walks; later calls return the kept figures and start
    /// a walk in the background once they are stale, never on the call.
    #[test]
    fn stale_figures_are_refreshed_off_the_call() {
        let cache: Cache = Default::default();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 4096]).unwrap();
        let first = usage_with(&cache, dir.path(), Duration::from_secs(3600), walk).unwrap();
        assert_eq!(first.inodes, 2);
        std::fs::write(dir.path().join("b"), vec![1u8; 4096]).unwrap();
        // Fresh: the kept figures.
        assert_eq!(
            usage_with(&cache, dir.path(), Duration::from_secs(3600), walk),
            Some(first)
        );
        // Stale: still the kept figures now, the new ones soon after.
        assert_eq!(
            usage_with(&cache, dir.path(), Duration::ZERO, walk),
            Some(first)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let u = usage_with(&cache, dir.path(), Duration::from_secs(3600), walk).unwrap();
            if u.inodes == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "never refreshed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
