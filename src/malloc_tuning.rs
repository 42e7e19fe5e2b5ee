//! glibc malloc settings for a long-running daemon on a small node.
//!
//! Two glibc defaults made capcri's idle RSS grow after the first pulls
//! (README, Performance): every thread that allocates gets its own arena
//! (up to 8 per core), and each arena keeps what was freed in it; and the
//! mmap threshold adapts upwards after large blocks are freed (up to 32
//! MiB), so the next layer-sized buffers (decompression, digests, JSON of
//! big manifests) come from an arena and stay there once freed. Two
//! arenas are plenty for 2 runtime workers and the occasional blocking
//! thread; a fixed 128 KiB threshold (which also turns the adaptation off)
//! sends big buffers to mmap, and they go back to the kernel on free.
//! `malloc_trim` after a burst of work returns what the arenas still hold.

/// Applies the settings; call before any thread starts.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
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
