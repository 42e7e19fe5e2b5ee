//! Blocking work from async code.

/// Runs blocking work (file system, mounts, fsync) without stalling the
/// other tasks of the runtime worker it is called on: on the
/// multi-threaded runtime the worker hands its queue to another thread
/// first; elsewhere (a current-thread test runtime, no runtime) it just
/// runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
