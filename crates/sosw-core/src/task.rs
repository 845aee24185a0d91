//! Tasks: what the store holds and what workers report.

use crate::greenfield::Greenfield;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A task as stored: the fields of the `sosw_tasks` row (reference §2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// 32 lowercase hex characters for tasks sosw creates; any non-empty string is accepted from other writers.
    pub task_id: String,
    pub labourer_id: String,
    /// Seconds since the epoch, with sub-second precision (Python writes `time.time()`).
    pub created_at: f64,
    pub greenfield: Greenfield,
    pub attempts: u32,
    /// Attempts given back because their invocation never reached a worker that took it (throttled, refused, or
    /// not sent): `attempts` went down by one for each. Kept so that an invocation's number never repeats
    /// ([`Task::invocation`]). Not a sosw attribute: absent (0) in items Python sosw writes.
    #[serde(default)]
    pub refunded_attempts: u32,
    /// The worker's arguments: the text of a JSON object, stored and returned unchanged (reference §7.1).
    pub payload: String,
    pub completed_at: Option<i64>,
    pub failed_attempts: u32,
    /// `stat_<k>` attributes, keyed by `k`.
    pub stats: Map<String, Value>,
    /// `result_<k>` attributes, keyed by `k`.
    pub result: Map<String, Value>,
}

impl Task {
    /// The invocation the task is at: its latest, or the one before its next.
    pub fn invocation(&self) -> Invocation {
        Invocation {
            attempts: self.attempts,
            refunded: self.refunded_attempts,
        }
    }
}

/// One invocation of a task, as the store counts it: a claim adds an attempt, and a refund takes it back while
/// counting the refund. Its [`Invocation::number`] therefore goes up with every invocation ever sent and never
/// repeats, which a refunded attempt alone would not give (the next invocation would have the same `attempts`).
/// A report token is signed for this number; a report that names an invocation is refused by the store once the
/// task is at another one ([`crate::moves::stale_report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Invocation {
    pub attempts: u32,
    pub refunded: u32,
}

impl Invocation {
    /// Invocations sent so far, this one included: `attempts + refunded`.
    pub fn number(self) -> u64 {
        u64::from(self.attempts) + u64::from(self.refunded)
    }
}

/// A task to create: the store assigns `created_at`, `greenfield` and `attempts = 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    pub task_id: String,
    pub labourer_id: String,
    /// JSON object text, as built by [`crate::payload::construct_payload`].
    pub payload: String,
}

/// Where a task is: exactly one of the live table, the retry table or the closed (archive) table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "table")]
pub enum Place {
    Live,
    Retry { desired_launch_time: i64 },
    Closed { closed_at: i64, completed: bool },
}

/// Where a task is, all tables and states together: what `sosw task show` and `task list --state` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Whereabouts {
    Queued,
    Running,
    Expired,
    Completed,
    Retry,
    Closed,
    Dead,
}

impl Whereabouts {
    pub fn as_str(self) -> &'static str {
        match self {
            Whereabouts::Queued => "queued",
            Whereabouts::Running => "running",
            Whereabouts::Expired => "expired",
            Whereabouts::Completed => "completed",
            Whereabouts::Retry => "retry",
            Whereabouts::Closed => "closed",
            Whereabouts::Dead => "dead",
        }
    }

    /// In words, after "it is": `waiting for a retry`, `closed as dead`, …
    pub fn words(self) -> &'static str {
        match self {
            Whereabouts::Retry => "waiting for a retry",
            Whereabouts::Closed => "closed as completed",
            Whereabouts::Dead => "closed as dead",
            other => other.as_str(),
        }
    }
}

/// A task and the table it is in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTask {
    pub task: Task,
    pub place: Place,
}

impl StoredTask {
    /// The row as sosw lays it out: flat, with `stat_<k>` / `result_<k>` and, per table, `desired_launch_time` or
    /// `closed_at` + `labourer_id_task_status`. `state` is added by the caller when it can classify the task.
    pub fn to_row(&self) -> Map<String, Value> {
        let t = &self.task;
        let mut row = Map::new();
        row.insert("task_id".into(), t.task_id.clone().into());
        row.insert("labourer_id".into(), t.labourer_id.clone().into());
        row.insert("created_at".into(), crate::payload::number(t.created_at));
        row.insert("greenfield".into(), t.greenfield.into());
        row.insert("attempts".into(), t.attempts.into());
        row.insert("payload".into(), t.payload.clone().into());
        if let Some(c) = t.completed_at {
            row.insert("completed_at".into(), c.into());
        }
        if t.failed_attempts > 0 {
            row.insert("failed_attempts".into(), t.failed_attempts.into());
        }
        if t.refunded_attempts > 0 {
            row.insert("refunded_attempts".into(), t.refunded_attempts.into());
        }
        for (k, v) in &t.stats {
            row.insert(format!("stat_{k}"), v.clone());
        }
        for (k, v) in &t.result {
            row.insert(format!("result_{k}"), v.clone());
        }
        match self.place {
            Place::Live => {}
            Place::Retry { desired_launch_time } => {
                row.insert("desired_launch_time".into(), desired_launch_time.into());
            }
            Place::Closed { closed_at, completed } => {
                row.insert("closed_at".into(), closed_at.into());
                row.insert(
                    "labourer_id_task_status".into(),
                    closed_status(&t.labourer_id, completed).into(),
                );
            }
        }
        row
    }
}

/// `labourer_id_task_status` of an archived task: `<labourer_id>_1` if completed, `_0` if dead.
pub fn closed_status(labourer_id: &str, completed: bool) -> String {
    format!("{labourer_id}_{}", u8::from(completed))
}

/// What a worker reports with `mark_task_as_completed` / `mark_task_as_failed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    #[serde(default)]
    pub stats: Map<String, Value>,
    #[serde(default)]
    pub result: Map<String, Value>,
    /// The invocation the report is about, when the caller knows it (a report token names it): the store then
    /// refuses the report, writing nothing, if the task has been invoked again since
    /// ([`crate::ports::StoreError::StaleReport`]). `None`: the report applies to the task's latest invocation.
    #[serde(skip)]
    pub of: Option<Invocation>,
}

impl WorkerReport {
    /// A report of a result only (no stats), about the task's latest invocation.
    pub fn with_result(result: Map<String, Value>) -> WorkerReport {
        WorkerReport {
            result,
            ..WorkerReport::default()
        }
    }
}

/// The outcome a worker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    Completed,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_use_sosw_attribute_names() {
        let mut stats = Map::new();
        stats.insert("rows".into(), json!(5));
        let mut result = Map::new();
        result.insert("some_info".into(), json!(33));
        let t = StoredTask {
            task: Task {
                task_id: "t1".into(),
                labourer_id: "w".into(),
                created_at: 12.5,
                greenfield: crate::Greenfield::new(2000),
                attempts: 1,
                payload: "{}".into(),
                completed_at: Some(99),
                failed_attempts: 1,
                refunded_attempts: 0,
                stats,
                result,
            },
            place: Place::Closed {
                closed_at: 100,
                completed: true,
            },
        };
        let row = Value::Object(t.to_row());
        assert_eq!(
            row,
            json!({"task_id": "t1", "labourer_id": "w", "created_at": 12.5, "greenfield": 2000, "attempts": 1,
                   "payload": "{}", "completed_at": 99, "failed_attempts": 1, "stat_rows": 5, "result_some_info": 33,
                   "closed_at": 100, "labourer_id_task_status": "w_1"})
        );
        assert_eq!(closed_status("some_lambda", false), "some_lambda_0");
    }
}
