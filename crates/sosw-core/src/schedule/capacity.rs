//! How many tasks a job may still add to a queue: the checks the Scheduler makes before writing anything.

use crate::{Greenfield, Time};

/// How many more tasks fit at the end of a queue whose newest queued position is `newest_queued` (`None`: empty):
/// tasks go at `newest + step·k` (an empty queue starts at `step`), and every position must stay below `now`, where
/// the invocation range begins (the store refuses a batch that would reach it). Checked arithmetic throughout: a
/// position or step near `i64::MAX` means no room, never a wrap-around.
pub fn queue_room(newest_queued: Option<Greenfield>, step: i64, now: Time) -> u64 {
    if step <= 0 {
        return 0;
    }
    let base = newest_queued.map_or(step, Greenfield::get);
    // The last position may be `now - 1`: k ≤ (now − 1 − base) / step.
    match now.secs().checked_sub(1).and_then(|last| last.checked_sub(base)) {
        Some(span) if span >= 0 => u64::try_from(span / step).unwrap_or(0),
        Some(_) => 0,
        // `base` so far below `now` that the difference overflows: room for any job.
        None if base < 0 => u64::MAX,
        None => 0,
    }
}

/// The tasks of a job of `total` that a run will write when the first `present` are in the store already (they are
/// written in order, so what a job has in the store is a prefix of it).
pub fn to_write(total: u64, present: u64) -> u64 {
    total.saturating_sub(present)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_in_a_queue() {
        let now = Time::from_secs(1_301_000_001);
        for (newest, step, room) in [
            // Empty: positions 1e6, 2e6, ... up to 1,301e6 − … : 1,300 tasks.
            (None, 1_000_000, 1_300),
            (Some(1_001_000_000), 1_000_000, 300),
            (Some(1_300_000_000), 1_000_000, 1),
            (Some(1_301_000_000), 1_000_000, 0),
            (Some(1_301_000_001), 1_000_000, 0),
            (Some(i64::MAX), 1_000_000, 0),
            (Some(i64::MIN), 1, u64::MAX),
            (Some(-5), 1_000_000, 1_301),
            (None, 1_000, 1_300_999),
            (None, i64::MAX, 0),
            (None, 0, 0),
            (None, -3, 0),
        ] {
            assert_eq!(
                queue_room(newest.map(Greenfield::new), step, now),
                room,
                "{newest:?} at step {step}"
            );
        }
    }

    #[test]
    fn what_a_run_writes() {
        for (total, present, writes) in [(1_200, 0, 1_200), (1_200, 1_000, 200), (1_200, 1_200, 0), (10, 20, 0)] {
            assert_eq!(to_write(total, present), writes);
        }
    }
}
