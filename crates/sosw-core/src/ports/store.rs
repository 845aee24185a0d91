//! The store contract: the task tables (`TaskStore`) and the audit trail (`MetaSink`), and what they exchange.

use super::LabourerStore;
use super::{ArchiveExpect, StoreResult};
use crate::greenfield::{Greenfield, GreenfieldRange, Markers};
use crate::meta::{MetaEvent, Stamp};
use crate::task::{Invocation, NewTask, Place, StoredTask, Task, WorkerReport};
use crate::time::Time;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// The result of [`TaskStore::create_tasks`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateReport {
    pub created: Vec<Task>,
    /// Ids that already existed (in any table) and were left untouched.
    pub existing: Vec<String>,
}

impl CreateReport {
    /// The created tasks as rows of the live table ([`StoredTask::to_row`]), as `task create --json` and the API
    /// show them.
    pub fn created_rows(&self) -> Vec<serde_json::Value> {
        self.created
            .iter()
            .map(|task| {
                let stored = StoredTask {
                    task: task.clone(),
                    place: Place::Live,
                };
                serde_json::Value::Object(stored.to_row())
            })
            .collect()
    }
}

/// The result of claiming one queued task for invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The task moved from `previous_greenfield` (its queue position) to the invoked range, with one more attempt.
    Claimed {
        task_id: String,
        previous_greenfield: Greenfield,
    },
    /// Someone else claimed, completed, moved or deleted it first.
    Lost { task_id: String },
}

/// What [`TaskStore::complete`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The live row now has `completed_at` (it stays there until the Scavenger archives it).
    Live(Task),
    /// The task's attempt had expired and it was waiting for a retry (in the retry table, or queued again): that
    /// attempt finished after all, so the task was closed as completed directly — the work is neither lost nor run
    /// again, and every completed live task keeps its invocation marker (`greenfield >= now`).
    Closed(Task),
}

/// Which table [`TaskStore::list`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Live,
    Retry,
    Closed,
}

/// A listing query. All filters are optional; rows come ordered by labourer, then queue order (live), desired
/// launch time (retry) or close time (closed), then task id — the sort key a [`ListCursor`] holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskQuery {
    pub table: Table,
    /// One labourer's tasks, or (`None`) those of every labourer [`TaskStore::labourer_ids`] lists.
    pub labourer: Option<String>,
    /// Live table only.
    pub greenfield: Option<GreenfieldRange>,
    /// Live table: whether `completed_at` is set. Closed table: completed (`_1`) or dead (`_0`).
    pub completed: Option<bool>,
    pub limit: usize,
    /// Keyset pagination: only rows strictly after this sort key. A long listing is read page by page, each
    /// starting after the last row of the one before ([`ListCursor::after`]), in memory bounded by the page.
    pub after: Option<ListCursor>,
}

/// The sort key of a row of a listing ([`TaskQuery`]): labourer, order value, task id. Rows inserted between two
/// pages appear in a later page if they sort after the cursor, and never make a row appear twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListCursor {
    pub labourer_id: String,
    /// Greenfield (live), desired launch time (retry) or close time (closed).
    pub order: i64,
    pub task_id: String,
}

impl ListCursor {
    /// The cursor just after `row`.
    pub fn after(row: &StoredTask) -> ListCursor {
        ListCursor {
            labourer_id: row.task.labourer_id.clone(),
            order: ListCursor::order_of(row),
            task_id: row.task.task_id.clone(),
        }
    }

    /// The value a listing orders rows of one labourer by.
    pub fn order_of(row: &StoredTask) -> i64 {
        match row.place {
            Place::Live => row.task.greenfield.get(),
            Place::Retry { desired_launch_time } => desired_launch_time,
            Place::Closed { closed_at, .. } => closed_at,
        }
    }

    /// Whether `row` sorts strictly after this cursor.
    pub fn precedes(&self, row: &StoredTask) -> bool {
        (self.labourer_id.as_str(), self.order, self.task_id.as_str())
            < (
                row.task.labourer_id.as_str(),
                ListCursor::order_of(row),
                row.task.task_id.as_str(),
            )
    }
}

/// The counts `sosw status` shows for one labourer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabourerCounts {
    pub queued: u64,
    pub running: u64,
    pub expired: u64,
    /// Completed and waiting to be archived.
    pub completed: u64,
    pub retry_waiting: u64,
    pub closed_completed: u64,
    pub closed_dead: u64,
}

/// How far the scheduling of a job has come (`sosw job show`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    pub job_id: String,
    pub labourer_id: String,
    /// The tasks the job makes.
    pub total: u64,
    /// How many of them are known to be in the store (created by this run or an earlier one).
    pub scheduled: u64,
    pub started_at: Time,
    pub updated_at: Time,
    pub finished_at: Option<Time>,
}

/// The task tables: live (`sosw_tasks`), retry (`sosw_retry_tasks`) and closed (`sosw_closed_tasks`), and the
/// progress of scheduled jobs.
///
/// **The audit rule.** Every move has a `*_recorded` form that records audit events with it: `events` given as
/// they are, or derived from a [`Stamp`] by [`Stamp::recorded`]. They are recorded if and only if the move takes
/// effect. A backend with transactions (SQLite) writes them in the move's own transaction, so a crash never leaves
/// a move without its event; one without (DynamoDB: its meta table is separate, and a transaction would double the
/// write cost of every move) writes them right after the move, best-effort: a failure is logged, never undoes the
/// move. The plain forms record nothing.
#[async_trait]
pub trait TaskStore: LabourerStore {
    /// Creates the schema, or migrates it to this version. Idempotent.
    async fn init(&self) -> StoreResult<()>;

    /// Appends tasks to the tails of their labourers' queues, in the given order, positions `newest + step·k`
    /// where `newest` is the highest `greenfield < now` of the labourer.
    /// A task id that exists in any table is skipped and reported in [`CreateReport::existing`]. Either every new
    /// task is written or none is (a full queue fails the whole call with [`super::StoreError::Invalid`]).
    ///
    /// With a `stamp`, each created task's `created` event is recorded with it ([`TaskStore`]'s audit rule).
    async fn create_tasks_recorded(
        &self,
        tasks: &[NewTask],
        step: i64,
        now: Time,
        stamp: Option<&Stamp>,
    ) -> StoreResult<CreateReport>;

    /// [`TaskStore::create_tasks_recorded`] without an audit trail.
    async fn create_tasks(&self, tasks: &[NewTask], step: i64, now: Time) -> StoreResult<CreateReport> {
        self.create_tasks_recorded(tasks, step, now, None).await
    }

    /// The head of a labourer's queue: `greenfield < start`, not completed, in ascending greenfield order.
    async fn next_queued(&self, labourer: &str, start: Greenfield, limit: usize) -> StoreResult<Vec<Task>>;

    /// For each `(task_id, greenfield as read)`, atomically: if the row is still at that greenfield, queued
    /// (`greenfield < start`) and not completed, set `greenfield = invoked_greenfield` and `attempts += 1`. One result
    /// per task, in order. (Python sosw's guard is `greenfield < start`; requiring the greenfield as read is
    /// stricter, so Rust and Python orchestrators still never invoke one task twice.)
    ///
    /// With a `stamp`, each claimed task's `invoked` event is recorded with its claim: every spent attempt has one.
    async fn claim_recorded(
        &self,
        labourer: &str,
        tasks: &[(String, Greenfield)],
        start: Greenfield,
        invoked_greenfield: Greenfield,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Vec<Claim>>;

    /// [`TaskStore::claim_recorded`] without an audit trail.
    async fn claim(
        &self,
        labourer: &str,
        tasks: &[(String, Greenfield)],
        start: Greenfield,
        invoked_greenfield: Greenfield,
    ) -> StoreResult<Vec<Claim>> {
        self.claim_recorded(labourer, tasks, start, invoked_greenfield, None)
            .await
    }

    /// Undoes a claim whose invocation was throttled: back to `previous_greenfield` with `attempts − 1` and
    /// `refunded_attempts + 1` (so that the next invocation's number is new: [`crate::task::Invocation`]), if the
    /// row is still at `invoked_greenfield` and not completed.
    async fn release_claim_recorded(
        &self,
        task_id: &str,
        invoked_greenfield: Greenfield,
        previous_greenfield: Greenfield,
        events: &[MetaEvent],
    ) -> StoreResult<()>;

    async fn release_claim(
        &self,
        task_id: &str,
        invoked_greenfield: Greenfield,
        previous_greenfield: Greenfield,
    ) -> StoreResult<()> {
        self.release_claim_recorded(task_id, invoked_greenfield, previous_greenfield, &[])
            .await
    }

    /// Live, not completed, `greenfield > expired` (see [`Markers`]).
    async fn count_running(&self, labourer: &str, expired: Greenfield) -> StoreResult<u64>;

    /// Live, not completed, `start <= greenfield <= expired`, oldest invocation first.
    async fn list_expired(
        &self,
        labourer: &str,
        start: Greenfield,
        expired: Greenfield,
        limit: usize,
    ) -> StoreResult<Vec<Task>>;

    /// Live with `completed_at` set and `greenfield >= start` (a completed live task carries the marker of its
    /// invocation; Python sosw's query, which lets a backend read only the invoked range).
    async fn list_completed(&self, labourer: &str, start: Greenfield, limit: usize) -> StoreResult<Vec<Task>>;

    /// WorkerAssistant's `mark_task_as_completed`. Only for a task that has been invoked (`attempts >= 1`) and is
    /// live or waiting for retry, and still at the invocation the report names ([`WorkerReport::of`]), decided by
    /// [`crate::moves::plan_completion`] and checked in the write itself; never creates a row. Stats and result keys are merged into the stored ones;
    /// a repeated completion keeps the first `completed_at`. A task waiting for a retry (in the retry table, or
    /// queued again) is closed as completed at once ([`Completion::Closed`]).
    async fn complete_recorded(
        &self,
        task_id: &str,
        now: Time,
        report: &WorkerReport,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Completion>;

    async fn complete(&self, task_id: &str, now: Time, report: &WorkerReport) -> StoreResult<Completion> {
        self.complete_recorded(task_id, now, report, None).await
    }

    /// WorkerAssistant's `mark_task_as_failed`: `failed_attempts += 1` and the report merged, in the live or retry
    /// table, for an invoked task still at the invocation the report names ([`crate::moves::check_report`], checked
    /// in the write itself). Does not change its state.
    async fn fail_recorded(&self, task_id: &str, report: &WorkerReport, stamp: Option<&Stamp>) -> StoreResult<Task>;

    async fn fail(&self, task_id: &str, report: &WorkerReport) -> StoreResult<Task> {
        self.fail_recorded(task_id, report, None).await
    }

    /// Moves a live task to closed with `closed_at = now` and its `labourer_id_task_status`, atomically and only if
    /// the row still meets `expect`.
    async fn archive_recorded(
        &self,
        task_id: &str,
        expect: ArchiveExpect,
        now: Time,
        events: &[MetaEvent],
    ) -> StoreResult<()>;

    async fn archive(&self, task_id: &str, expect: ArchiveExpect, now: Time) -> StoreResult<()> {
        self.archive_recorded(task_id, expect, now, &[]).await
    }

    /// [`TaskStore::archive`] for many tasks in one request; each move succeeds or fails on its own (one result per
    /// request, in order). An `Err` for the whole call means none of them was done.
    ///
    /// With a `stamp`, each archived task's `archived` / `archived_dead` event is recorded with its move.
    async fn archive_many_recorded(
        &self,
        moves: &[(String, ArchiveExpect)],
        now: Time,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Vec<StoreResult<()>>>;

    async fn archive_many(&self, moves: &[(String, ArchiveExpect)], now: Time) -> StoreResult<Vec<StoreResult<()>>> {
        self.archive_many_recorded(moves, now, None).await
    }

    /// Moves a live task to the retry table with `desired_launch_time`, atomically and only if it is not completed
    /// and still at `expected_greenfield`: a completion that arrived first wins.
    async fn move_to_retry_recorded(
        &self,
        task_id: &str,
        expected_greenfield: Greenfield,
        desired_launch_time: i64,
        events: &[MetaEvent],
    ) -> StoreResult<()>;

    async fn move_to_retry(
        &self,
        task_id: &str,
        expected_greenfield: Greenfield,
        desired_launch_time: i64,
    ) -> StoreResult<()> {
        self.move_to_retry_recorded(task_id, expected_greenfield, desired_launch_time, &[])
            .await
    }

    /// Retry rows of a labourer with `desired_launch_time <= now` (to the second), earliest first.
    async fn due_retries(&self, labourer: &str, now: Time, limit: usize) -> StoreResult<Vec<Task>>;

    /// Moves a retry row back to the live table at `greenfield`, keeping every field (reference §7.5).
    async fn requeue_recorded(
        &self,
        task_id: &str,
        labourer: &str,
        greenfield: Greenfield,
        events: &[MetaEvent],
    ) -> StoreResult<()>;

    async fn requeue(&self, task_id: &str, labourer: &str, greenfield: Greenfield) -> StoreResult<()> {
        self.requeue_recorded(task_id, labourer, greenfield, &[]).await
    }

    /// Moves a task closed as dead back to the live table at `greenfield` (an operator's re-queue: one more
    /// attempt), keeping its attempts, payload, stats and results, with `events` recorded as a move's are. Only a
    /// dead task moves: a live, retrying or completed one is a [`super::StoreError::Conflict`], an unknown one
    /// [`super::StoreError::NotFound`], and nothing changes. Of two concurrent revivals, one moves the task.
    async fn revive_recorded(&self, task_id: &str, greenfield: Greenfield, events: &[MetaEvent]) -> StoreResult<()>;

    /// Moves a running task's greenfield to `greenfield` (a worker's heartbeat): only if it is live, not completed,
    /// still running (`greenfield > expired`) and, when the heartbeat names its invocation `of`, still at that
    /// invocation; otherwise a refusal ([`super::StoreError::Conflict`], [`super::StoreError::StaleReport`] or
    /// [`super::StoreError::NotFound`]) and nothing changes.
    async fn heartbeat(
        &self,
        task_id: &str,
        expired: Greenfield,
        greenfield: Greenfield,
        of: Option<Invocation>,
    ) -> StoreResult<()>;

    /// The lowest queue position (`greenfield < start`) of a labourer, if its queue is not empty.
    async fn oldest_queued(&self, labourer: &str, start: Greenfield) -> StoreResult<Option<Greenfield>>;

    /// The highest queue position (`greenfield < start`) of a labourer, if its queue is not empty.
    async fn newest_queued(&self, labourer: &str, start: Greenfield) -> StoreResult<Option<Greenfield>>;

    async fn get(&self, task_id: &str) -> StoreResult<Option<StoredTask>>;

    /// Whether task `task_id` of `labourer` is in any table (a task of another labourer is not). Cheaper than
    /// [`TaskStore::get`] where the store keys a table by labourer (DynamoDB's retry table: knowing the labourer, one
    /// `BatchGetItem` of three keys; not knowing it, `get` may need the task's audit trail, or a Scan).
    async fn has_task(&self, labourer: &str, task_id: &str) -> StoreResult<bool> {
        Ok(self.get(task_id).await?.is_some_and(|t| t.task.labourer_id == labourer))
    }

    async fn list(&self, query: &TaskQuery) -> StoreResult<Vec<StoredTask>>;

    /// Every labourer id that has a row in any table, in order, at a cost that does not grow with the tasks stored
    /// (what `status` and `/metrics` read on every poll). Exact on SQLite. DynamoDB reads its registry of labourers
    /// instead: every labourer it created tasks of, and those its last [`TaskStore::rescan_labourers`] found.
    async fn labourer_ids(&self) -> StoreResult<Vec<String>>;

    /// Every labourer id that has a row in any table, in order, by reading every table, whatever it costs; where
    /// [`TaskStore::labourer_ids`] reads a registry, the registry is brought up to date: labourers whose tasks
    /// another program wrote are added; one with no task is removed when a rescan finds none for the second time,
    /// an hour or more after the first (and it did not register within that hour before `now`). Where
    /// [`TaskStore::counts`] keeps closed tasks counted, they are counted again from the archive.
    async fn rescan_labourers(&self, now: Time) -> StoreResult<Vec<String>> {
        let _ = now;
        self.labourer_ids().await
    }

    /// The labourer's tasks by state, as of `markers.start` (the poll's `now`). A store may keep what closed long
    /// before `now` counted rather than count it again (DynamoDB does; what it cannot see that way is listed in
    /// `docs/api.md`, and [`TaskStore::rescan_labourers`] counts it all again).
    async fn counts(&self, labourer: &str, markers: &Markers) -> StoreResult<LabourerCounts>;

    /// [`TaskStore::counts`] of several labourers, in their order: one request where the store can (what
    /// `status` and `/metrics` read for every labourer at once).
    async fn counts_many(&self, labourers: &[(String, Markers)]) -> StoreResult<Vec<LabourerCounts>> {
        let mut out = Vec::with_capacity(labourers.len());
        for (labourer, markers) in labourers {
            out.push(self.counts(labourer, markers).await?);
        }
        Ok(out)
    }

    /// Creates or replaces the progress record of a job.
    async fn save_job(&self, job: &JobProgress) -> StoreResult<()>;

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<JobProgress>>;

    /// The most recently updated jobs first.
    async fn list_jobs(&self, limit: usize) -> StoreResult<Vec<JobProgress>>;

    /// How long after a claim this store's `count_running` may still miss it (DynamoDB counts through an
    /// eventually consistent index; SQLite's count is exact: zero). The Orchestrator waits this long after the last
    /// claim of a labourer before counting it again, so that the limit holds across orchestrators.
    fn count_settle(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Requests the backend throttled since the store was opened (and retried, by the one layer that retries), for
    /// the pass reports. Backends that are never throttled report 0.
    fn throttled_requests(&self) -> u64 {
        0
    }
}

/// Where meta (audit) events go. Writing them is best-effort for the engine: a failure is logged, never aborts
/// the action it records (reference §7.21).
#[async_trait]
pub trait MetaSink: Send + Sync + Debug {
    async fn record(&self, events: &[MetaEvent]) -> StoreResult<()>;
    /// Events of one task, by time (`at`), then in the order recorded.
    async fn events_of(&self, task_id: &str) -> StoreResult<Vec<MetaEvent>>;
}

#[cfg(test)]
mod list_cursor_tests {
    use super::*;

    fn row(labourer: &str, task_id: &str, place: Place, greenfield: i64) -> StoredTask {
        StoredTask {
            task: Task {
                task_id: task_id.into(),
                labourer_id: labourer.into(),
                created_at: 0.0,
                greenfield: crate::Greenfield::new(greenfield),
                attempts: 0,
                payload: "{}".into(),
                completed_at: None,
                failed_attempts: 0,
                refunded_attempts: 0,
                stats: Default::default(),
                result: Default::default(),
            },
            place,
        }
    }

    #[test]
    fn a_cursor_precedes_exactly_the_rows_sorting_after_it() {
        let cursor = ListCursor {
            labourer_id: "w".into(),
            order: 10,
            task_id: "m".into(),
        };
        let retry = |t: i64| Place::Retry { desired_launch_time: t };
        let closed = |t: i64| Place::Closed {
            closed_at: t,
            completed: true,
        };
        let cases = [
            (row("w", "m", Place::Live, 10), false),
            (row("w", "n", Place::Live, 10), true),
            (row("w", "a", Place::Live, 10), false),
            (row("w", "a", Place::Live, 11), true),
            (row("w", "z", Place::Live, 9), false),
            (row("v", "z", Place::Live, 99), false),
            (row("x", "a", Place::Live, -5), true),
            // Retry and closed rows order by their time, not their greenfield.
            (row("w", "a", retry(11), 0), true),
            (row("w", "z", retry(9), 99), false),
            (row("w", "a", closed(11), 0), true),
            (row("w", "z", closed(9), 99), false),
        ];
        for (r, after) in cases {
            assert_eq!(cursor.precedes(&r), after, "{r:?}");
            assert_eq!(ListCursor::after(&r) > cursor, after, "{r:?}");
        }
    }
}
