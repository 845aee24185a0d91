//! What a store does with a move, decided once for every backend: the plan of a completion report, and the
//! refusals every store gives in the same words. A backend only finds the task and carries the plan out.

use crate::greenfield::is_queue_position;
use crate::ports::{report_refusal, StoreError};
use crate::task::NewTask;
use crate::time::Time;
use std::collections::HashSet;

/// Where a report found its task (the backend looks, in this order: live, retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Live {
        attempts: u32,
        greenfield: i64,
    },
    Retry {
        attempts: u32,
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

/// The plan of a completion report on a task found as `found`, at `now`. A never-invoked task is refused
/// ([`report_refusal`]): nobody can report on it.
pub fn plan_completion(task_id: &str, found: Found, now: Time) -> Result<CompletionPlan, StoreError> {
    match found {
        Found::Live { attempts, greenfield } => {
            report_refusal(task_id, attempts)?;
            Ok(if is_queue_position(greenfield, now) {
                CompletionPlan::CloseLive
            } else {
                CompletionPlan::MarkLive
            })
        }
        Found::Retry { attempts } => {
            report_refusal(task_id, attempts)?;
            Ok(CompletionPlan::CloseRetry)
        }
        Found::Nowhere => Ok(CompletionPlan::Refuse),
    }
}

/// A creation batch split into the tasks to write (in order) and the ids to report as existing: those the store has
/// in any table (`existing`), and repeats within the batch. An empty id refuses the whole batch.
pub fn partition_new<'a>(
    tasks: &'a [NewTask],
    existing: &HashSet<String>,
) -> Result<(Vec<&'a NewTask>, Vec<String>), StoreError> {
    if tasks.iter().any(|t| t.task_id.is_empty()) {
        return Err(StoreError::Invalid("a task id must not be empty".into()));
    }
    let mut taken = HashSet::new();
    let mut fresh = Vec::with_capacity(tasks.len());
    let mut skipped = Vec::new();
    for t in tasks {
        if existing.contains(&t.task_id) || !taken.insert(t.task_id.as_str()) {
            skipped.push(t.task_id.clone());
        } else {
            fresh.push(t);
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

    #[test]
    fn completion_plans() {
        let now = Time::from_secs(1_700_000_000);
        let invoked = 1_700_000_000 + 31_557_600;
        let table: &[(Found, Result<CompletionPlan, ()>)] = &[
            (
                Found::Live {
                    attempts: 1,
                    greenfield: invoked,
                },
                Ok(CompletionPlan::MarkLive),
            ),
            (
                Found::Live {
                    attempts: 2,
                    greenfield: 999,
                },
                Ok(CompletionPlan::CloseLive),
            ),
            (
                Found::Live {
                    attempts: 0,
                    greenfield: 2000,
                },
                Err(()),
            ),
            (Found::Retry { attempts: 1 }, Ok(CompletionPlan::CloseRetry)),
            (Found::Retry { attempts: 0 }, Err(())),
            (Found::Nowhere, Ok(CompletionPlan::Refuse)),
        ];
        for (found, want) in table {
            let got = plan_completion("t", *found, now).map_err(|e| {
                assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
            });
            assert_eq!(got, *want, "{found:?}");
        }
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
