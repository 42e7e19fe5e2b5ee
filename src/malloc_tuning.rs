//! glibc malloc settings for a long-running daemon on a small node.
//!
//! Two glibc defaults made capcri's idle RSS grow after the first pulls
//! (docs/PERFORMANCE.md): every thread that allocates gets its own arena
//! (up to 8 per core), and each arena keeps what was freed in it; and the
//! mmap threshold adapts upwards after large blocks are freed (up to 32
//! MiB), so the next layer-sized buffers (decompression, digests, JSON of
//! big manifests) come from an arena and stay there once freed. One arena:
//! what a pull frees on a blocking thread can then serve the runtime
//! workers' next allocations instead of sitting, fragmented, in a second
//! arena (idle after a workload: 736 KiB live, ~3 MiB resident over two
//! arenas); small allocations go through each thread's tcache without the
//! arena lock anyway. A fixed 1 MiB threshold (which also turns the
//! adaptation off) sends layer-sized buffers to mmap, and they go back to
//! the kernel on free. It was 128 KiB until layers streamed from the
//! network into the unpacker: hyper's read buffers (up to ~400 KiB) were
//! then each a fresh mapping, faulted in page by page on every socket read
//! and unmapped after (about 5% of a large pull's CPU, `perf`). At 1 MiB
//! they are reused from the heap: the 1 GiB pull of `capcri-bench --pull`
//! went from 2.91 to 2.67-2.70 s, and the idle RSS after a pod-cycle
//! workload stayed the same (16.6 / 16.7 MiB against 16.6 / 17.2 at
//! 128 KiB, alternated runs).
//! `malloc_trim` after a burst of work returns what the arenas still hold:
//! right after a pull, and once the node has been quiet for a second after
//! pod and container creation or removal ([`trim_when_idle`]). The quiet
//! node also unmaps the executable's code pages that burst faulted in
//! (`util::loader_pages::release_read_only_segments`): after the
//! pod-cycle bench they were 2.5 MiB of its RSS. Start-up is such a burst
//! too ([`release_after_start`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Applies the settings; call before any thread starts.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024);
    }
}

/// Gives freed heap memory back to the kernel (after a pull, say).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims the heap and unmaps the executable's code pages now: call once,
/// when start-up is over and before the first CRI call is served.
///
/// Start-up runs code the serving daemon never runs again (the
/// configuration, recovery, the policies' compilation, the monitor
/// template's spawn), and the kernel maps the neighbours of each page it
/// faults in when they are cached (fault-around, 64 KiB), so how much of
/// the 12 MiB of code stayed mapped depended on what the page cache held:
/// the idle daemon's RSS right after it said ready was 13.8 to 15.0 MiB
/// in the runs of one afternoon on one machine (`capcri-bench`, issue
/// 18). The first calls map again what they run.
pub fn release_after_start() {
    let bytes = give_back();
    tracing::debug!(bytes, "start-up's code pages unmapped");
}

/// Trims the heap and unmaps the executable's read-only segments; returns
/// the bytes of code and constants unmapped. What both the end of
/// start-up and a quiet node do.
fn give_back() -> usize {
    trim();
    crate::util::loader_pages::release_read_only_segments()
}

/// How long the node must go without a [`trim_when_idle`] call before the
/// trim runs: a burst of pod work is one trim, not one per call.
const QUIET: Duration = Duration::from_secs(1);

static LAST_WORK: Mutex<Option<Instant>> = Mutex::new(None);
static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Trims the heap and unmaps the code pages once no more work has been
/// reported for [`QUIET`]; call at the end of a CRI call that allocated
/// and freed a lot (pod and container creation and removal). Needs a
/// tokio runtime; never blocks.
pub fn trim_when_idle() {
    *LAST_WORK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        SCHEDULED.store(false, Ordering::Release);
        return;
    };
    handle.spawn(async {
        loop {
            let last = LAST_WORK
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(Instant::now);
            let due = last + QUIET;
            if Instant::now() >= due {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        // Work reported from here on schedules its own trim.
        SCHEDULED.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(|| {
            let bytes = give_back();
            tracing::trace!(bytes, "code pages unmapped while idle");
        })
        .await;
    });
}
