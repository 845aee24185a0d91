//! What a store does with a move, decided once for every backend: the plan of a completion report, and the
//! refusals every store gives in the same words. A backend only finds the task and carries the plan out.

use crate::greenfield::{is_queue_position, Greenfield};
use crate::ports::{report_refusal, StoreError};
use crate::task::{Invocation, NewTask};
use crate::time::Time;
use std::collections::HashSet;

/// Where a report found its task (the backend looks, in this order: live, retry), and the invocation it is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Live {
        at: Invocation,
        greenfield: Greenfield,
    },
    Retry {
        at: Invocation,
    },
    /// In neither: closed, or unknown (the backend tells which with [`closed_refusal`] or `NotFound`).
    Nowhere,
}

/// What a completion report does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionPlan {
    /// Mark the live row completed (the first `completed_at` is kept) and merge the report.
    MarkLive,
    /// Close the live row as completed now: it was queued again after an expired attempt, which finished after all.
    CloseLive,
    /// Close the retry row as completed now: the attempt that expired finished after all.
    CloseRetry,
    /// The task is closed or unknown: the backend refuses with [`closed_refusal`] or `NotFound`.
    Refuse,
}

/// The plan of a completion report about invocation `of` (if named) on a task found as `found`, at `now`. Refused:
/// a never-invoked task ([`report_refusal`]: nobody can report on it), and a report about an invocation that is no
/// longer the task's latest ([`stale_report`]).
pub fn plan_completion(
    task_id: &str,
    found: Found,
    of: Option<Invocation>,
    now: Time,
) -> Result<CompletionPlan, StoreError> {
    match found {
        Found::Live { at, greenfield } => {
            check_report(task_id, at, of)?;
            Ok(if is_queue_position(greenfield, now) {
                CompletionPlan::CloseLive
            } else {
                CompletionPlan::MarkLive
            })
        }
        Found::Retry { at } => {
            check_report(task_id, at, of)?;
            Ok(CompletionPlan::CloseRetry)
        }
        Found::Nowhere => Ok(CompletionPlan::Refuse),
    }
}

/// Whether a worker report about invocation `of` (if named) may be recorded on a task at invocation `at`: refused
/// when the task was never invoked ([`report_refusal`]) or is at another invocation ([`stale_report`]). Every report
/// (completion, failure, heartbeat) on every backend is checked by this.
pub fn check_report(task_id: &str, at: Invocation, of: Option<Invocation>) -> Result<(), StoreError> {
    report_refusal(task_id, at.attempts)?;
    stale_report(task_id, at, of)
}

/// Refuses ([`StoreError::StaleReport`]) a report about invocation `of` on a task that is at invocation `at` now:
/// it was invoked again since, or that invocation was given back unsent. A report that names no invocation is
/// about the latest one.
pub fn stale_report(task_id: &str, at: Invocation, of: Option<Invocation>) -> Result<(), StoreError> {
    match of {
        Some(of) if of != at => Err(StoreError::StaleReport {
            task_id: task_id.to_string(),
            reported: of.number(),
            latest: at.number(),
        }),
        _ => Ok(()),
    }
}

/// A creation batch split into the tasks to write (in order) and the ids to report as existing: those the store has
/// in any table (`existing`), and repeats within the batch. An empty id refuses the whole batch.
pub fn partition_new<'a>(
    tasks: &'a [NewTask],
    existing: &HashSet<String>,
) -> Result<(Vec<&'a NewTask>, Vec<String>), StoreError> {
    let (fresh, skipped) = partition_new_indices(tasks, existing)?;
    Ok((fresh.into_iter().map(|i| &tasks[i]).collect(), skipped))
}

/// [`partition_new`], with the tasks to write given by their indexes in `tasks`.
pub fn partition_new_indices(
    tasks: &[NewTask],
    existing: &HashSet<String>,
) -> Result<(Vec<usize>, Vec<String>), StoreError> {
    if tasks.iter().any(|t| t.task_id.is_empty()) {
        return Err(StoreError::Invalid("a task id must not be empty".into()));
    }
    let mut taken = HashSet::new();
    let mut fresh = Vec::with_capacity(tasks.len());
    let mut skipped = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        if existing.contains(&t.task_id) || !taken.insert(t.task_id.as_str()) {
            skipped.push(t.task_id.clone());
        } else {
            fresh.push(i);
        }
    }
    Ok((fresh, skipped))
}

/// The refusal of a move or report on a task that is already closed.
pub fn closed_refusal(task_id: &str, completed: bool, closed_at: i64) -> StoreError {
    StoreError::conflict(
        task_id,
        format!(
            "is already closed as {} (closed_at {closed_at})",
            if completed { "completed" } else { "dead" }
        ),
    )
}

/// The refusal of a put-back whose task moved (or completed) since it was claimed.
pub fn moved_since_claimed(task_id: &str) -> StoreError {
    StoreError::conflict(task_id, "moved or completed since it was claimed")
}

/// The refusal of a requeue of a task that is live, not waiting for retry.
pub fn not_waiting_for_retry(task_id: &str) -> StoreError {
    StoreError::conflict(task_id, "is not waiting for retry (it is live)")
}

/// Why a task that is not closed as dead cannot be revived (an operator's re-queue), from where it is.
pub fn revive_refusal(task_id: &str, place: &crate::task::Place) -> crate::ports::StoreError {
    use crate::task::Place;
    let reason = match place {
        Place::Closed { completed: false, .. } => "was moved by someone else first",
        Place::Closed { completed: true, .. } => "it is closed as completed: only a dead task is re-queued",
        Place::Retry { .. } => "it is waiting for a retry: only a dead task is re-queued",
        Place::Live => "it is live (queued, running or completed): only a dead task is re-queued",
    };
    crate::ports::StoreError::conflict(task_id, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(attempts: u32, refunded: u32) -> Invocation {
        Invocation { attempts, refunded }
    }

    #[test]
    fn completion_plans() {
        let now = Time::from_secs(1_700_000_000);
        let invoked = 1_700_000_000 + 31_557_600;
        let live = |a, g| Found::Live {
            at: at(a, 0),
            greenfield: crate::Greenfield::new(g),
        };
        let retry = |a| Found::Retry { at: at(a, 0) };
        // (found, the invocation the report names, the plan or the refusal)
        let table: &[(Found, Option<Invocation>, Result<CompletionPlan, &str>)] = &[
            (live(1, invoked), None, Ok(CompletionPlan::MarkLive)),
            (live(1, invoked), Some(at(1, 0)), Ok(CompletionPlan::MarkLive)),
            (live(2, 999), None, Ok(CompletionPlan::CloseLive)),
            (live(0, 2000), None, Err("not been invoked")),
            (live(0, 2000), Some(at(0, 0)), Err("not been invoked")),
            (
                live(2, invoked),
                Some(at(1, 0)),
                Err("invocation 1, but the task is at invocation 2"),
            ),
            (
                Found::Live {
                    at: at(1, 1),
                    greenfield: crate::Greenfield::new(invoked),
                },
                Some(at(1, 0)),
                Err("invocation 1, but the task is at invocation 2"),
            ),
            (retry(1), None, Ok(CompletionPlan::CloseRetry)),
            (retry(1), Some(at(1, 0)), Ok(CompletionPlan::CloseRetry)),
            (retry(2), Some(at(1, 0)), Err("invocation 1")),
            (retry(0), None, Err("not been invoked")),
            (Found::Nowhere, None, Ok(CompletionPlan::Refuse)),
            (Found::Nowhere, Some(at(1, 0)), Ok(CompletionPlan::Refuse)),
        ];
        for (found, of, want) in table {
            match (plan_completion("t", *found, *of, now), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{found:?} {of:?}"),
                (Err(e), Err(words)) => {
                    assert!(e.is_refusal(), "{e}");
                    assert!(e.to_string().contains(words), "{found:?} {of:?}: {e}");
                }
                (got, want) => panic!("{found:?} {of:?}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn an_invocation_number_never_repeats_after_a_refund() {
        // claim → 1; refund → attempts 0, refunded 1 (still number 1, never sent); claim again → number 2.
        let (first, refunded, second) = (at(1, 0), at(0, 1), at(1, 1));
        assert_eq!((first.number(), refunded.number(), second.number()), (1, 1, 2));
        assert!(
            stale_report("t", second, Some(first)).is_err(),
            "the refused invocation cannot report"
        );
        assert!(stale_report("t", second, Some(second)).is_ok());
        assert!(
            stale_report("t", second, None).is_ok(),
            "a report naming no invocation is about the latest"
        );
        assert_eq!(at(u32::MAX, u32::MAX).number(), 2 * u64::from(u32::MAX), "no overflow");
        let e = check_report("t", second, Some(first)).expect_err("stale");
        assert!(
            matches!(
                e,
                StoreError::StaleReport {
                    reported: 1,
                    latest: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.is_lost_race());
    }

    #[test]
    fn new_tasks_are_told_from_existing_ones() {
        let t = |id: &str| NewTask {
            task_id: id.into(),
            labourer_id: "w".into(),
            payload: "{}".into(),
        };
        let batch = [t("a"), t("b"), t("a"), t("c")];
        let existing: HashSet<String> = ["b".to_string()].into();
        let (fresh, skipped) = partition_new(&batch, &existing).expect("partition");
        let ids: Vec<&str> = fresh.iter().map(|t| t.task_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"], "in order, each once");
        assert_eq!(skipped, ["b", "a"], "existing, then the repeat");
        assert!(matches!(
            partition_new(&[t("")], &existing),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn refusals_read_the_same_on_every_backend() {
        assert_eq!(
            closed_refusal("t", true, 42).to_string(),
            "task `t`: is already closed as completed (closed_at 42)"
        );
        assert_eq!(
            closed_refusal("t", false, 42).to_string(),
            "task `t`: is already closed as dead (closed_at 42)"
        );
        assert!(moved_since_claimed("t").is_lost_race());
        assert!(not_waiting_for_retry("t").is_refusal());
    }

    #[test]
    fn a_revival_refusal_says_where_the_task_is() {
        use crate::task::Place;
        let cases = [
            (Place::Live, "it is live"),
            (Place::Retry { desired_launch_time: 5 }, "waiting for a retry"),
            (
                Place::Closed {
                    closed_at: 5,
                    completed: true,
                },
                "closed as completed",
            ),
            (
                Place::Closed {
                    closed_at: 5,
                    completed: false,
                },
                "moved by someone else first",
            ),
        ];
        for (place, words) in cases {
            let e = revive_refusal("t", &place);
            assert!(e.is_refusal() && e.to_string().contains(words), "{place:?}: {e}");
        }
    }
}
