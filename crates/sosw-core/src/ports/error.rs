//! The one error type of every store, and the refusals every store gives in the same words.

use crate::greenfield::Greenfield;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The one error type of every [`super::TaskStore`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task `{0}` not found")]
    NotFound(String),
    /// The task is not in the state the operation requires (another process moved it first, or the request does
    /// not apply to it).
    #[error("task `{task_id}`: {reason}")]
    Conflict { task_id: String, reason: String },
    /// A worker's report on an invocation of the task that is no longer its latest: the task has been invoked again
    /// since (or that invocation was given back unsent). Nothing is written.
    #[error(
        "task `{task_id}`: the report is about invocation {reported}, but the task is at invocation {latest} now \
         (it was invoked again, or that invocation was given back); nothing was recorded"
    )]
    StaleReport {
        task_id: String,
        reported: u64,
        latest: u64,
    },
    #[error("the store is throttling requests")]
    Throttled { retry_after: Option<Duration> },
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The request cannot be carried out as given (for example a queue that is full).
    #[error("{0}")]
    Invalid(String),
    /// The store's schema is missing or of another version.
    #[error("{0}")]
    Schema(String),
    #[error("store backend error: {0}")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Throttled { .. } | StoreError::Unavailable(_))
    }

    /// Whether the request was refused before anything was written: the task is not where the request needs it
    /// (`Conflict`, `NotFound`), or the request itself cannot be carried out (`Invalid`, `Schema`). A refusal
    /// never leaves anything half-done; every other error may have (a backend failure mid-write).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound(_)
                | StoreError::Conflict { .. }
                | StoreError::StaleReport { .. }
                | StoreError::Invalid(_)
                | StoreError::Schema(_)
        )
    }

    /// Whether a conditional move lost to another writer: the task was moved, completed or removed since it was
    /// read. Losing such a race is normal for concurrent essentials, never an error to report.
    pub fn is_lost_race(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound(_) | StoreError::Conflict { .. } | StoreError::StaleReport { .. }
        )
    }

    pub fn conflict(task_id: &str, reason: impl Into<String>) -> StoreError {
        StoreError::Conflict {
            task_id: task_id.to_string(),
            reason: reason.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What an archive move requires of the live row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveExpect {
    /// `completed_at` is set: the row goes to closed with status `_1`.
    Completed,
    /// Not completed and still at `greenfield`: the row goes to closed with status `_0`.
    Dead { greenfield: Greenfield },
}

impl ArchiveExpect {
    /// Why a live task that is (or is not) `completed`, at `greenfield`, does not meet this expectation — `None`
    /// when it does. Every backend refuses with these reasons.
    pub fn refusal(self, completed: bool, greenfield: Greenfield) -> Option<String> {
        match self {
            ArchiveExpect::Completed if !completed => {
                Some("is not completed, so it cannot be archived as completed".into())
            }
            ArchiveExpect::Dead { .. } if completed => Some("was completed, so it is not dead".into()),
            ArchiveExpect::Dead { greenfield: expected } if expected != greenfield => Some(moved(expected, greenfield)),
            _ => None,
        }
    }
}

/// Why a live task cannot be parked for retry (see [`super::TaskStore::move_to_retry`]) — `None` when it can.
pub fn retry_refusal(completed: bool, greenfield: Greenfield, expected_greenfield: Greenfield) -> Option<String> {
    if completed {
        Some("was completed, so it is not retried".into())
    } else if greenfield != expected_greenfield {
        Some(moved(expected_greenfield, greenfield))
    } else {
        None
    }
}

/// A worker report on a task invoked `attempts` times: refused (a `Conflict`) when it was never invoked, for a task
/// that was never invoked has no worker to report on it. Every backend refuses the same way and writes nothing.
pub fn report_refusal(task_id: &str, attempts: u32) -> Result<(), StoreError> {
    if attempts == 0 {
        Err(StoreError::conflict(
            task_id,
            "has not been invoked yet, so it cannot be reported on",
        ))
    } else {
        Ok(())
    }
}

fn moved(expected: Greenfield, actual: Greenfield) -> String {
    format!("moved since it was read (greenfield {expected} is now {actual})")
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn what_each_store_error_means() {
        let io: BoxError = "disk".into();
        // (error, retryable, refused before writing, lost a race)
        let table = [
            (StoreError::NotFound("t".into()), false, true, true),
            (StoreError::conflict("t", "moved"), false, true, true),
            (
                StoreError::StaleReport {
                    task_id: "t".into(),
                    reported: 1,
                    latest: 2,
                },
                false,
                true,
                true,
            ),
            (StoreError::Invalid("full".into()), false, true, false),
            (StoreError::Schema("old".into()), false, true, false),
            (StoreError::Throttled { retry_after: None }, true, false, false),
            (StoreError::Unavailable("busy".into()), true, false, false),
            (StoreError::Backend(io), false, false, false),
        ];
        for (e, retryable, refusal, lost) in table {
            assert_eq!(
                (e.is_retryable(), e.is_refusal(), e.is_lost_race()),
                (retryable, refusal, lost),
                "{e:?}"
            );
        }
    }
}
