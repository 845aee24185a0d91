//! Running a job in parts: when a run must stop, and what a later run of the same job may skip.

use crate::ports::JobProgress;
use crate::Time;

/// When a run whose invocation ends at `deadline_ms` (a Lambda context's deadline, milliseconds since the epoch; 0
/// when there is none, as outside Lambda) must stop writing: `shutdown_secs` before it.
pub fn stop_writing_at(deadline_ms: u64, shutdown_secs: i64) -> Option<Time> {
    (deadline_ms > 0)
        .then(|| Time::from_millis(i64::try_from(deadline_ms).unwrap_or(i64::MAX)).plus_secs(-shutdown_secs))
}

/// The tasks of a job of `total` tasks that an earlier run recorded as written, which a run of the same plan skips
/// without looking them up. Progress is recorded only after its batch is written, so these are certainly there; an
/// earlier run that made a different number of tasks was of another plan, and nothing is skipped.
pub fn already_written(previous: Option<&JobProgress>, total: u64) -> u64 {
    previous
        .filter(|p| p.total == total)
        .map_or(0, |p| p.scheduled.min(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(total: u64, scheduled: u64) -> JobProgress {
        JobProgress {
            job_id: "j".into(),
            labourer_id: "w".into(),
            total,
            scheduled,
            started_at: Time::from_secs(0),
            updated_at: Time::from_secs(0),
            finished_at: None,
        }
    }

    #[test]
    fn stopping_before_the_deadline() {
        assert_eq!(stop_writing_at(0, 60), None, "no deadline outside Lambda");
        assert_eq!(
            stop_writing_at(1_700_000_900_000, 60),
            Some(Time::from_secs(1_700_000_840))
        );
        assert_eq!(
            stop_writing_at(1_700_000_900_500, 0),
            Some(Time::from_millis(1_700_000_900_500))
        );
    }

    #[test]
    fn what_a_resumed_run_skips() {
        for (previous, total, skipped) in [
            (None, 100, 0),
            (Some(progress(100, 40)), 100, 40),
            (Some(progress(100, 100)), 100, 100),
            (Some(progress(90, 40)), 100, 0),
            (Some(progress(100, 150)), 100, 100),
        ] {
            assert_eq!(
                already_written(previous.as_ref(), total),
                skipped,
                "{previous:?} of {total}"
            );
        }
    }
}
