//! The one clock of CRI timestamps, and step timing for debug logs.

/// Nanoseconds since the Unix epoch on the wall clock (CLOCK_REALTIME,
/// through `SystemTime`): the CRI's `created_at`, `started_at`,
/// `finished_at` and event timestamps are compared by kubelet with its own
/// wall time, and the monitor's exit times with the daemon's, so both
/// processes use this one function. 0 if the clock is before 1970.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Debug-level durations of the steps of one CRI call (`--log-level
/// capcri=debug`): where the time of a slow call goes, without a profiler.
pub struct StepTimer {
    call: &'static str,
    id: String,
    last: std::cell::Cell<std::time::Instant>,
}

impl StepTimer {
    pub fn new(call: &'static str, id: &str) -> Self {
        StepTimer {
            call,
            id: id.to_string(),
            last: std::cell::Cell::new(std::time::Instant::now()),
        }
    }

    /// Logs the time since the previous step (or since `new`).
    pub fn done(&self, step: &'static str) {
        let now = std::time::Instant::now();
        let us = now.duration_since(self.last.replace(now)).as_micros() as u64;
        tracing::debug!(call = self.call, id = %self.id, step, elapsed_us = us, "step done");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_2020_in_nanoseconds() {
        assert!(super::now_nanos() > 1_577_836_800_000_000_000);
    }
}
