//! `sosw check`: what a consistent store looks like, row by row.
//!
//! The store adapter reads its rows (and runs its own integrity check); these functions say what is wrong with one
//! row, so that every backend checks the same rules. Each rule is a [`Check`], named in the report. What the rules
//! accept on purpose (see `docs/task-states.md`):
//!
//! - **A negative greenfield is legal**: retried tasks go to the head of the queue at `oldest − k`, which falls below
//!   zero after enough retries.
//! - **A never-invoked task cannot hold an invocation marker**: new positions are refused before they reach `now`
//!   (a full queue), so `attempts = 0` with `greenfield >= now` is damage ([`Check::MarkerWithoutAttempt`]).
//! - **A live task at a queue position with `attempts >= 1` is legal**: it was retried or its invocation was
//!   throttled.
//! - **A completed live task sits at its invocation marker**: a completion of a task back at a queue position closes
//!   it at once, so a completed row at a queue position (`greenfield < now`) was left unarchived for longer than
//!   `greenfield_invocation_delta` — the Scavenger, which lists completed tasks with `greenfield >= now` (as Python
//!   sosw does), never archives it ([`Check::CompletedAtQueuePosition`]).
//! - **An invocation marker is at most `now + delta`** (plus [`CLOCK_SKEW`] for a concurrent process with a later
//!   clock): a marker further ahead counts as running for longer than `delta` and is never scavenged.
//! - `failed_attempts` may exceed `attempts` (a worker may report a failure more than once).

use crate::ports::Table;
use crate::task::closed_status;
use serde::Serialize;
use serde_json::Value;

/// How far ahead of `now + delta` an invocation marker may be before it is reported: the clock of another process
/// sharing the store may run ahead of ours.
pub const CLOCK_SKEW: i64 = 86_400;

/// One rule of `sosw check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The database engine's own integrity check failed.
    Integrity,
    /// A table could not be read at all.
    Unreadable,
    /// A column holds a value of the wrong type (e.g. text in `greenfield`).
    ColumnType,
    /// The task id is in more than one of live, retry and closed.
    InSeveralTables,
    /// `attempts`, `failed_attempts` or `refunded_attempts` is negative.
    NegativeCount,
    /// Live, never invoked (`attempts = 0`), not completed, but `greenfield >= now`: an invocation marker.
    MarkerWithoutAttempt,
    /// `completed_at` is set on a task that was never invoked.
    CompletedWithoutAttempt,
    /// Live and completed, but at a queue position: the Scavenger never archives it.
    CompletedAtQueuePosition,
    /// An invocation marker beyond `now + delta + CLOCK_SKEW`.
    MarkerInFuture,
    /// A retry row that was never invoked (`attempts = 0`).
    RetryWithoutAttempt,
    /// A retry row with `completed_at` set (a completion closes a retry row).
    RetryCompleted,
    /// `labourer_id_task_status` of a closed row disagrees with its `completed_at`.
    ClosedStatus,
    /// `payload`, `stats` or `result` is not the text of a JSON object.
    NotJsonObject,
    /// A meta event whose task is in no table.
    OrphanMeta,
    /// A meta event with an action sosw does not know, or details that are not JSON.
    BadMeta,
    /// A stored count (the SQLite store's `closed_counts`, kept by triggers) disagrees with the rows it counts.
    StoredCount,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Integrity => "integrity",
            Check::Unreadable => "unreadable",
            Check::ColumnType => "column_type",
            Check::InSeveralTables => "in_several_tables",
            Check::NegativeCount => "negative_count",
            Check::MarkerWithoutAttempt => "marker_without_attempt",
            Check::CompletedWithoutAttempt => "completed_without_attempt",
            Check::CompletedAtQueuePosition => "completed_at_queue_position",
            Check::MarkerInFuture => "marker_in_future",
            Check::RetryWithoutAttempt => "retry_without_attempt",
            Check::RetryCompleted => "retry_completed",
            Check::ClosedStatus => "closed_status",
            Check::NotJsonObject => "not_json_object",
            Check::OrphanMeta => "orphan_meta",
            Check::BadMeta => "bad_meta",
            Check::StoredCount => "stored_count",
        }
    }
}

/// One thing wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub check: Check,
    /// The task concerned, if the problem is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The table the row is in (`tasks`, `retry_tasks`, `closed_tasks`, `tasks_meta`, ...), if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn new(check: Check, task_id: Option<&str>, table: Option<&str>, message: impl Into<String>) -> Problem {
        Problem {
            check,
            task_id: task_id.map(str::to_string),
            table: table.map(str::to_string),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.task_id, &self.table) {
            (Some(id), Some(t)) => write!(f, "task `{id}` ({t}): {}", self.message),
            (Some(id), None) => write!(f, "task `{id}`: {}", self.message),
            (None, Some(t)) => write!(f, "{t}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }?;
        write!(f, " [{}]", self.check.as_str())
    }
}

/// At most this many problems are listed; the rest are only counted ([`CheckReport::omitted`]).
pub const MAX_LISTED: usize = 10_000;

/// How many rows a check read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RowCounts {
    pub live: u64,
    pub retry: u64,
    pub closed: u64,
    pub meta: u64,
}

/// The result of checking a whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The engine's integrity check that ran (`integrity_check` or `quick_check`), if any.
    pub integrity: Option<String>,
    pub rows: RowCounts,
    pub problems: Vec<Problem>,
    /// Problems found beyond the first [`MAX_LISTED`].
    pub omitted: u64,
}

impl CheckReport {
    /// No problem found.
    pub fn clean(&self) -> bool {
        self.problems.is_empty() && self.omitted == 0
    }

    /// Adds a problem, or counts it once [`MAX_LISTED`] are listed.
    pub fn push(&mut self, p: Problem) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        } else {
            self.omitted += 1;
        }
    }
}

/// The fields of one task row that the rules look at, as read (counts as signed: a damaged row may be negative).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowFacts<'a> {
    pub table: Table,
    pub task_id: &'a str,
    pub labourer_id: &'a str,
    pub greenfield: i64,
    pub attempts: i64,
    pub failed_attempts: i64,
    pub refunded_attempts: i64,
    pub completed_at: Option<i64>,
    /// `labourer_id_task_status` of a closed row.
    pub closed_status: Option<&'a str>,
}

/// The store's name for a table, as `sosw check` reports it.
pub fn table_name(table: Table) -> &'static str {
    match table {
        Table::Live => "tasks",
        Table::Retry => "retry_tasks",
        Table::Closed => "closed_tasks",
    }
}

/// What is wrong with one task row at `now` (seconds), with `delta` = `greenfield_invocation_delta`.
pub fn row_problems(row: &RowFacts<'_>, now: i64, delta: i64) -> Vec<(Check, String)> {
    let mut out = Vec::new();
    if row.attempts < 0 {
        out.push((Check::NegativeCount, format!("attempts is negative ({})", row.attempts)));
    }
    for (column, n) in [
        ("failed_attempts", row.failed_attempts),
        ("refunded_attempts", row.refunded_attempts),
    ] {
        if n < 0 {
            out.push((Check::NegativeCount, format!("{column} is negative ({n})")));
        }
    }
    let g = row.greenfield;
    match row.table {
        Table::Live => {
            let queued = g < now;
            match row.completed_at {
                None if row.attempts == 0 && !queued => out.push((
                    Check::MarkerWithoutAttempt,
                    format!(
                        "never invoked (attempts 0) but greenfield {g} is an invocation marker (>= now {now}); it \
                         counts as running or expired"
                    ),
                )),
                Some(c) if row.attempts == 0 => out.push((
                    Check::CompletedWithoutAttempt,
                    format!("completed (completed_at {c}) but never invoked (attempts 0)"),
                )),
                Some(c) if queued => out.push((
                    Check::CompletedAtQueuePosition,
                    format!(
                        "completed (completed_at {c}) at queue position {g} (< now {now}): the Scavenger never \
                         archives it"
                    ),
                )),
                _ => {}
            }
            let limit = now.saturating_add(delta).saturating_add(CLOCK_SKEW);
            if g > limit {
                out.push((
                    Check::MarkerInFuture,
                    format!(
                        "greenfield {g} is beyond now + greenfield_invocation_delta + {CLOCK_SKEW} s ({limit}): \
                         an invocation marker from the future, never expired"
                    ),
                ));
            }
        }
        Table::Retry => {
            if row.attempts == 0 {
                out.push((
                    Check::RetryWithoutAttempt,
                    "waits for a retry but was never invoked (attempts 0)".into(),
                ));
            }
            if let Some(c) = row.completed_at {
                out.push((
                    Check::RetryCompleted,
                    format!("waits for a retry but is completed (completed_at {c}); a completion closes it"),
                ));
            }
        }
        Table::Closed => {
            let want = closed_status(row.labourer_id, row.completed_at.is_some());
            let have = row.closed_status.unwrap_or("");
            if have != want {
                out.push((
                    Check::ClosedStatus,
                    format!(
                        "labourer_id_task_status is `{have}` but completed_at is {}, so it should be `{want}`",
                        row.completed_at
                            .map_or_else(|| "not set".to_string(), |c| format!("set ({c})"))
                    ),
                ));
            }
        }
    }
    out
}

/// Why `text` (the column `column`) is not the text of a JSON object; `None` when it is.
pub fn json_object_problem(column: &str, text: &str) -> Option<String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(_)) => None,
        Ok(other) => Some(format!(
            "`{column}` is JSON but not an object: {}",
            crate::payload::json_kind(&other)
        )),
        Err(e) => Some(format!("`{column}` is not valid JSON: {e}")),
    }
}

/// Why a meta row is unusable: an empty action, or details that are not JSON. An action sosw-rs does not write
/// is fine: Python sosw's writers record their own (`completed`, `failed`), and `task show` shows them verbatim.
pub fn meta_problem(action: &str, details: Option<&str>) -> Option<String> {
    if action.trim().is_empty() {
        return Some("a meta event without an action".to_string());
    }
    match details.map(serde_json::from_str::<Value>) {
        Some(Err(e)) => Some(format!("details are not valid JSON: {e}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const DELTA: i64 = crate::greenfield::DEFAULT_INVOCATION_DELTA;

    fn row(table: Table, g: i64, attempts: i64, completed_at: Option<i64>) -> RowFacts<'static> {
        RowFacts {
            table,
            task_id: "t",
            labourer_id: "w",
            greenfield: g,
            attempts,
            failed_attempts: 0,
            refunded_attempts: 0,
            completed_at,
            closed_status: None,
        }
    }

    fn checks(r: &RowFacts<'_>) -> Vec<Check> {
        row_problems(r, NOW, DELTA).into_iter().map(|(c, _)| c).collect()
    }

    #[test]
    fn row_rules_table() {
        use Check::*;
        let running = NOW - 600 + DELTA;
        let closed = |completed_at: Option<i64>, status: &'static str| RowFacts {
            closed_status: Some(status),
            ..row(Table::Closed, running, 1, completed_at)
        };
        let cases: Vec<(&str, RowFacts<'static>, Vec<Check>)> = vec![
            ("a new task", row(Table::Live, 2000, 0, None), vec![]),
            (
                "head of the queue after many retries",
                row(Table::Live, -5, 1, None),
                vec![],
            ),
            ("retried, back in the queue", row(Table::Live, 997, 2, None), vec![]),
            ("running", row(Table::Live, running, 1, None), vec![]),
            ("expired", row(Table::Live, NOW + 5, 1, None), vec![]),
            (
                "completed, waiting to be archived",
                row(Table::Live, running, 1, Some(NOW)),
                vec![],
            ),
            ("marker at now + delta", row(Table::Live, NOW + DELTA, 1, None), vec![]),
            (
                "a concurrent clock a little ahead",
                row(Table::Live, NOW + DELTA + CLOCK_SKEW, 1, None),
                vec![],
            ),
            (
                "negative attempts",
                row(Table::Live, 2000, -1, None),
                vec![NegativeCount],
            ),
            (
                "negative failed_attempts",
                RowFacts {
                    failed_attempts: -3,
                    refunded_attempts: 0,
                    ..row(Table::Live, 2000, 0, None)
                },
                vec![NegativeCount],
            ),
            (
                "negative refunded_attempts",
                RowFacts {
                    refunded_attempts: -1,
                    ..row(Table::Live, 2000, 0, None)
                },
                vec![NegativeCount],
            ),
            (
                "never invoked, at a marker",
                row(Table::Live, running, 0, None),
                vec![MarkerWithoutAttempt],
            ),
            (
                "never invoked, at now",
                row(Table::Live, NOW, 0, None),
                vec![MarkerWithoutAttempt],
            ),
            (
                "completed, never invoked",
                row(Table::Live, running, 0, Some(NOW)),
                vec![CompletedWithoutAttempt],
            ),
            (
                "completed at a queue position",
                row(Table::Live, 3000, 1, Some(NOW - 10)),
                vec![CompletedAtQueuePosition],
            ),
            (
                "a marker from the future",
                row(Table::Live, NOW + DELTA + CLOCK_SKEW + 1, 1, None),
                vec![MarkerInFuture],
            ),
            (
                "i64::MAX, never invoked",
                row(Table::Live, i64::MAX, 0, None),
                vec![MarkerWithoutAttempt, MarkerInFuture],
            ),
            ("retry row", row(Table::Retry, running, 1, None), vec![]),
            (
                "retry, never invoked",
                row(Table::Retry, 2000, 0, None),
                vec![RetryWithoutAttempt],
            ),
            (
                "retry, completed",
                row(Table::Retry, running, 2, Some(NOW)),
                vec![RetryCompleted],
            ),
            ("closed completed", closed(Some(NOW), "w_1"), vec![]),
            ("closed dead", closed(None, "w_0"), vec![]),
            (
                "closed `_1` without completed_at",
                closed(None, "w_1"),
                vec![ClosedStatus],
            ),
            (
                "closed `_0` with completed_at",
                closed(Some(NOW), "w_0"),
                vec![ClosedStatus],
            ),
            (
                "closed under another labourer",
                closed(Some(NOW), "v_1"),
                vec![ClosedStatus],
            ),
            (
                "closed, no status",
                RowFacts {
                    closed_status: None,
                    ..row(Table::Closed, running, 1, None)
                },
                vec![ClosedStatus],
            ),
        ];
        for (name, r, want) in cases {
            assert_eq!(checks(&r), want, "{name}");
        }
    }

    #[test]
    fn messages_name_the_values() {
        let p = row_problems(&row(Table::Live, NOW + 7, 0, None), NOW, DELTA);
        assert!(p[0].1.contains(&(NOW + 7).to_string()), "{p:?}");
        let p = row_problems(
            &RowFacts {
                closed_status: Some("w_1"),
                ..row(Table::Closed, 1, 1, None)
            },
            NOW,
            DELTA,
        );
        assert!(p[0].1.contains("`w_1`") && p[0].1.contains("`w_0`"), "{p:?}");
    }

    #[test]
    fn json_object_table() {
        let cases: &[(&str, bool)] = &[
            ("{}", true),
            (r#"{"a": [1, {"b": null}]}"#, true),
            ("[]", false),
            ("null", false),
            ("\"{}\"", false),
            ("42", false),
            ("", false),
            ("{", false),
            ("{\"a\":1} x", false),
        ];
        for (text, ok) in cases {
            let p = json_object_problem("stats", text);
            assert_eq!(p.is_none(), *ok, "{text:?}: {p:?}");
            if let Some(m) = p {
                assert!(m.contains("`stats`"), "{m}");
            }
        }
    }

    #[test]
    fn meta_table() {
        assert_eq!(meta_problem("created", None), None);
        assert_eq!(meta_problem("invocation_failed", Some(r#"{"error": "x"}"#)), None);
        assert_eq!(meta_problem("invoked", Some("\"text\"")), None);
        assert_eq!(meta_problem("completed", None), None, "Python sosw's Worker writes it");
        assert!(meta_problem(" ", None).is_some_and(|m| m.contains("without an action")));
        assert!(meta_problem("created", Some("{oops")).is_some());
    }

    #[test]
    fn problems_render_with_their_task_and_rule() {
        let p = Problem::new(Check::OrphanMeta, Some("abc"), Some("tasks_meta"), "no task");
        assert_eq!(p.to_string(), "task `abc` (tasks_meta): no task [orphan_meta]");
        let j = serde_json::to_value(&p).expect("json");
        assert_eq!(j["check"], "orphan_meta");
        assert_eq!(j["task_id"], "abc");
    }
}
