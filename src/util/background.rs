//! One low-priority thread for work that no call waits on: refreshing the
//! figures the stats calls answer from (cgroup samples, writable-layer
//! walks).
//!
//! Before, each refresh was its own blocking-pool task: at 250 pods a
//! stats call queued 250 layer walks at once, the pool grew a thread for
//! each, and on a 2-core node they ran against kubelet's next relist and
//! status calls: in `capcri-bench --runtimes capcri --scale 250
//! --scale-samples 100` (each sample the six calls in turn), 48 of the 400
//! list and status calls took 1.5-7 ms instead of 0.2-0.7; 9 once the
//! refreshes ran as below. Here the jobs run one after the other on a
//! single thread at nice 10, so the calls kubelet waits on take the CPU
//! first; a nice value, not `SCHED_IDLE`, so the figures still move on a
//! node that is busy all the time (kubelet's evictions read them). The
//! thread exits after a second without work, as the blocking pool's do.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// A queued piece of work.
pub type Job = Box<dyn FnOnce() + Send>;

/// The thread's nice value (0 is the daemon's; 19 the lowest).
const NICE: libc::c_int = 10;

/// How long the thread waits for a job before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(1);

/// The live thread's queue; `None` when no thread runs.
static QUEUE: Mutex<Option<Sender<Job>>> = Mutex::new(None);

/// Queues `job` for the background thread, starting the thread if none
/// runs. Jobs run in the order they were queued. When no thread can be
/// started the job comes back, for the caller to run or drop (it may hold
/// a lock the job takes).
pub fn submit(job: impl FnOnce() + Send + 'static) -> Result<(), Job> {
    let mut job: Job = Box::new(job);
    let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = queue.as_ref() {
        match tx.send(job) {
            Ok(()) => return Ok(()),
            // The thread is gone (it panicked): start another.
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    let (tx, rx) = mpsc::channel();
    let started = std::thread::Builder::new()
        .name("capcri-background".into())
        .spawn(move || run(rx));
    match started {
        Ok(_) => {
            // The receiver lives in the thread just started: cannot fail.
            let _ = tx.send(job);
            *queue = Some(tx);
            Ok(())
        }
        Err(e) => {
            *queue = None;
            tracing::debug!("no background thread: {e}");
            Err(job)
        }
    }
}

fn run(rx: Receiver<Job>) {
    lower_priority();
    loop {
        match rx.recv_timeout(IDLE_EXIT) {
            Ok(job) => job(),
            Err(RecvTimeoutError::Timeout) => {
                let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
                // A job queued between the timeout and the lock is still
                // this thread's to run; with the lock held, no new one can
                // come before the queue is cleared.
                match rx.try_recv() {
                    Ok(job) => {
                        drop(queue);
                        job();
                    }
                    Err(_) => {
                        *queue = None;
                        return;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Sets this thread's nice value (Linux keeps one per thread).
fn lower_priority() {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: setpriority on this thread's id only changes its nice value.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, NICE) } != 0 {
        tracing::debug!(
            "background thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// This thread's nice value, for tests.
#[cfg(test)]
fn nice_of(tid: libc::id_t) -> libc::c_int {
    // SAFETY: getpriority reads a value; errno is reset first so that -1
    // (a valid nice) can be told from an error.
    unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn wait_for(mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Jobs run in order, on one thread other than the caller's, at the
    /// lower priority; the thread exits when idle and a later job starts
    /// another.
    #[test]
    fn jobs_run_in_order_on_one_low_priority_thread_that_comes_back() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let caller = std::thread::current().id();
        for i in 0..50 {
            let seen = seen.clone();
            let queued = submit(move || {
                // SAFETY: as in lower_priority.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
                assert_ne!(std::thread::current().id(), caller);
                seen.lock()
                    .unwrap()
                    .push((i, std::thread::current().id(), nice_of(tid)));
            });
            assert!(queued.is_ok());
        }
        wait_for(|| seen.lock().unwrap().len() == 50);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
        assert!(
            seen.iter().all(|s| s.1 == seen[0].1),
            "more than one thread"
        );
        // Root may lower any nice value; so may anyone raise their own.
        assert!(seen.iter().all(|s| s.2 >= NICE), "{seen:?}");

        // Idle: the thread goes, and the next job brings one back.
        wait_for(|| QUEUE.lock().unwrap().is_none());
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        assert!(
            submit(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .is_ok()
        );
        wait_for(|| ran.load(Ordering::SeqCst) == 1);
    }
}
