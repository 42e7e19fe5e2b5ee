//! Named crash points for the kill -9 recovery tests.
//!
//! A daemon started with `CAPCRI_CRASH_AT=<name>` SIGKILLs itself the first
//! time any task reaches the point of that name, so a test can stop the
//! daemon deterministically between two steps of RunPodSandbox,
//! CreateContainer, StartContainer, RemoveContainer or RemovePodSandbox
//! (timing jitter would hit the interesting windows only by chance).
//! Compiled in debug builds only (what `cargo test` builds): a release
//! daemon ignores the variable.

/// The environment variable that names the crash point.
pub const CRASH_AT_ENV: &str = "CAPCRI_CRASH_AT";

/// Every point the daemon has, so a test can iterate over all of them.
pub const CRASH_POINTS: &[&str] = &[
    "pod.run.after-files",
    "pod.run.after-monitor",
    "pod.run.after-network",
    "pod.run.after-record",
    "container.create.after-rootfs",
    "container.create.after-bundle",
    "container.create.record-written",
    "container.create.after-monitor",
    "container.create.after-record",
    "container.start.after-monitor",
    "container.remove.after-monitor",
    "container.remove.after-teardown",
    "pod.remove.after-containers",
    "pod.remove.after-teardown",
];

/// SIGKILLs this process when `CAPCRI_CRASH_AT` names `point`.
#[cfg(debug_assertions)]
pub fn crash_point(point: &'static str) {
    debug_assert!(
        CRASH_POINTS.contains(&point),
        "unlisted crash point {point}"
    );
    if std::env::var(CRASH_AT_ENV).is_ok_and(|p| p == point) {
        tracing::error!(point, "crash point reached: SIGKILL");
        // SIGKILL, not abort or exit: no destructor, no flush, no atexit,
        // exactly what `kill -9` from outside does.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Release builds have no crash points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn crash_point(_point: &'static str) {}
