//! The lowest oom_score_adj this process may set, found by asking the
//! kernel. proc(5): without CAP_SYS_RESOURCE a process may not go below its
//! oom_score_adj_min, inherited from whoever last set a value with the
//! capability (a systemd unit's OOMScoreAdjust, a parent's write); with the
//! capability (in the initial user namespace) anything down to -1000 goes.
//! Neither is readable, so the floor is probed once: writes to
//! /proc/self/oom_score_adj succeed exactly for values >= the floor, and
//! the process's own value is put back after. The daemon and the monitors
//! (forked from the daemon's template) share the floor.

use std::sync::OnceLock;

const PROC_SELF: &str = "/proc/self/oom_score_adj";

fn own() -> Option<i32> {
    std::fs::read_to_string(PROC_SELF).ok()?.trim().parse().ok()
}

fn try_set(value: i32) -> bool {
    std::fs::write(PROC_SELF, value.to_string()).is_ok()
}

/// Binary search of the lowest value the kernel accepts, between -1000
/// and the current one (always accepted). About ten writes.
fn probe() -> i32 {
    let Some(current) = own() else {
        // No /proc: assume nothing below 0 is allowed.
        return 0;
    };
    let (min, _) = crate::spec::OOM_SCORE_ADJ_RANGE;
    if try_set(min) {
        try_set(current);
        return min;
    }
    let (mut refused, mut accepted) = (min, current);
    while accepted - refused > 1 {
        let mid = refused + (accepted - refused) / 2;
        if try_set(mid) {
            accepted = mid;
        } else {
            refused = mid;
        }
    }
    try_set(current);
    accepted
}

/// The lowest oom_score_adj the kernel lets this process (and its
/// children) set; probed once.
pub fn floor() -> i32 {
    static FLOOR: OnceLock<i32> = OnceLock::new();
    *FLOOR.get_or_init(probe)
}

/// Sets this process's own oom_score_adj to `wanted`, raised to the floor
/// where the kernel refuses it; returns the value set and a warning when
/// it had to be raised.
pub fn set_own(wanted: i32) -> (i32, Option<String>) {
    let (value, warning) = crate::spec::oom_score_adj_within(wanted as i64, floor());
    if !try_set(value) {
        return (
            own().unwrap_or(value),
            Some(format!(
                "cannot set oom_score_adj {value}: the kernel refused it"
            )),
        );
    }
    (value, warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_accepted_and_the_own_value_kept() {
        let before = own();
        let f = floor();
        assert_eq!(own(), before, "the probe must put the process's value back");
        assert!((-1000..=before.unwrap_or(0)).contains(&f), "floor {f}");
        // The floor itself is writable; one below it is not (unless -1000).
        assert!(try_set(f));
        if f > -1000 {
            assert!(!try_set(f - 1));
        }
        if let Some(b) = before {
            assert!(try_set(b));
        }
    }
}
