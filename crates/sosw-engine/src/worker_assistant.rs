//! WorkerAssistant: workers report `mark_task_as_completed` / `mark_task_as_failed` (reference §5.8).
//!
//! Fixed here (reference §7.4, WA-5): a report never creates a row. It applies to a task that has been invoked and
//! is live or waiting for retry; a completion for a task waiting for retry closes it as completed (its work is done).
//! A report for an unknown, never-invoked or already closed task is a typed error.
//!
//! For a labourer with an adaptive limit, each report is also added to the labourer's stored report counts
//! ([`sosw_core::ports::LabourerStore::add_reports`]: one more write per report, for those labourers only), from
//! which the orchestrators learn worker-reported failures and slowing durations ([`sosw_core::flow::judge_reports`]).
//!
//! Beyond sosw: a **heartbeat** (`action: heartbeat`) extends a running task's window, so that a long task is not
//! expired while its worker is alive ([`sosw_core::greenfield::heartbeat_greenfield`]). It moves the task's greenfield
//! forward, nothing else: Python sosw's essentials read the task as invoked at the heartbeat, and keep working.

use crate::meta::MetaHandler;
use async_trait::async_trait;
use serde_json::{Map, Value};
use sosw_core::flow::Reports;
use sosw_core::payload::{worker_report, ReportFieldError};
use sosw_core::ports::{Completion, StoreError, StoreResult, TaskReporter, TaskStore};
use sosw_core::task::ReportKind;
use sosw_core::time::MAX_SECONDS;
use sosw_core::{Clock, Config, Invocation, Task, Time, WorkerReport};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct WorkerAssistant {
    store: Arc<dyn TaskStore>,
    meta: MetaHandler,
    clock: Arc<dyn Clock>,
    config: Arc<Config>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerAssistantError {
    #[error("the event has no `action`; expected `mark_task_as_completed`, `mark_task_as_failed` or `heartbeat`")]
    MissingAction,
    #[error("action `{0}` is not supported; expected `mark_task_as_completed`, `mark_task_as_failed` or `heartbeat`")]
    UnknownAction(String),
    #[error("action `{0}` needs a string `task_id`")]
    MissingTaskId(String),
    #[error("the event must be a JSON object")]
    NotAnObject,
    #[error(transparent)]
    Report(#[from] ReportFieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WorkerAssistant {
    pub fn new(
        store: Arc<dyn TaskStore>,
        meta: MetaHandler,
        clock: Arc<dyn Clock>,
        config: Arc<Config>,
    ) -> WorkerAssistant {
        WorkerAssistant {
            store,
            meta,
            clock,
            config,
        }
    }

    /// Extends a running task's window from `now` ([`sosw_core::greenfield::heartbeat_greenfield`]); returns until
    /// when it now counts as running. Refused (a [`StoreError::Conflict`] saying why) for a task that is not running:
    /// queued, expired (the Scavenger may be retrying it), completed or closed; and
    /// ([`StoreError::StaleReport`]) when the heartbeat names invocation `of` and the task is at another one.
    /// Records no audit event: heartbeats may come every few seconds.
    pub async fn heartbeat(&self, task_id: &str, of: Option<Invocation>, now: Time) -> StoreResult<Time> {
        let Some(stored) = self.store.get(task_id).await? else {
            return Err(StoreError::NotFound(task_id.to_string()));
        };
        let labourer = &stored.task.labourer_id;
        let Some(l) = self.config.labourer(labourer) else {
            return Err(StoreError::Invalid(format!(
                "task `{task_id}` belongs to labourer `{labourer}`, which is not in this config"
            )));
        };
        let delta = self.config.greenfield.delta;
        let markers = l.markers(now, delta);
        let greenfield = sosw_core::greenfield::heartbeat_greenfield(&markers, l.heartbeat_timeout);
        match self.store.heartbeat(task_id, markers.expired, greenfield, of).await {
            Ok(()) => Ok(sosw_core::greenfield::running_until(
                greenfield,
                delta,
                l.duration + l.cooldown,
            )),
            Err(e @ StoreError::StaleReport { .. }) => Err(e),
            Err(e) if e.is_refusal() => {
                let state = match self.store.get(task_id).await? {
                    Some(s) => self.config.state_of(&s, now).words(),
                    None => "gone",
                };
                Err(StoreError::Conflict {
                    task_id: task_id.to_string(),
                    reason: format!("it is not running (it is {state}): a heartbeat only extends a running task"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Records the completion, with its audit events in the same store operation.
    pub async fn complete(&self, task_id: &str, report: &WorkerReport, now: Time) -> StoreResult<Completion> {
        let stamp = self.meta.stamp(now);
        let completion = self
            .store
            .complete_recorded(task_id, now, report, stamp.as_ref())
            .await?;
        let (task, duration) = match &completion {
            // Still live: its greenfield is its invocation's marker (or its last heartbeat's, as if invoked then),
            // so the duration is known to the second — except where `heartbeat_timeout` moves the marker to the
            // beat plus a timeout of its own: such a task is not timed.
            Completion::Live(t) => {
                let beats = self
                    .config
                    .labourer(&t.labourer_id)
                    .is_some_and(|l| l.heartbeat_timeout.is_some());
                let invoked = sosw_core::greenfield::invoked_at(t.greenfield, self.config.greenfield.delta);
                let ms = now.millis().saturating_sub(invoked.millis());
                let known = !beats && (0..=MAX_SECONDS * 1000).contains(&ms);
                (t, known.then_some(ms as u64))
            }
            Completion::Closed(t) => (t, None),
        };
        self.add_reports(&task.labourer_id, Reports::completed(duration)).await;
        Ok(completion)
    }

    /// Records the failure report, with its audit event in the same store operation.
    pub async fn fail(&self, task_id: &str, report: &WorkerReport, now: Time) -> StoreResult<Task> {
        let stamp = self.meta.stamp(now);
        let task = self.store.fail_recorded(task_id, report, stamp.as_ref()).await?;
        self.add_reports(&task.labourer_id, Reports::failed()).await;
        Ok(task)
    }

    /// Adds a report to an adaptive labourer's counts. The report itself is recorded already: if this write fails,
    /// the adaptive limit misses one report, and the worker is not told to report again.
    async fn add_reports(&self, labourer_id: &str, reports: Reports) {
        if self
            .config
            .labourer(labourer_id)
            .is_none_or(|l| l.flow.adaptive.is_none())
        {
            return;
        }
        if let Err(e) = self.store.add_reports(labourer_id, &reports).await {
            tracing::warn!(labourer = %labourer_id, "the report is recorded, but not counted for the adaptive limit: {e}");
        }
    }

    /// Handles a sosw WorkerAssistant event:
    /// `{"action": "mark_task_as_completed" | "mark_task_as_failed", "task_id": ..., "stats": ..., "result": ...}`,
    /// or `{"action": "heartbeat", "task_id": ...}`;
    /// `stats` and `result` as objects or JSON strings. Returns the task after the report, as a row.
    ///
    /// With `of` (the invocation a report token names), the report is recorded only while the task is at that
    /// invocation ([`WorkerReport::of`]); otherwise it is about the task's latest invocation.
    pub async fn handle_event(
        &self,
        event: &Value,
        of: Option<Invocation>,
        now: Time,
    ) -> Result<Map<String, Value>, WorkerAssistantError> {
        let obj = event.as_object().ok_or(WorkerAssistantError::NotAnObject)?;
        let action = obj
            .get("action")
            .or_else(|| obj.get("actions"))
            .and_then(Value::as_str)
            .ok_or(WorkerAssistantError::MissingAction)?;
        let kind = match action {
            "mark_task_as_completed" => Some(ReportKind::Completed),
            "mark_task_as_failed" => Some(ReportKind::Failed),
            "heartbeat" => None,
            other => return Err(WorkerAssistantError::UnknownAction(other.to_string())),
        };
        let task_id = obj
            .get("task_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WorkerAssistantError::MissingTaskId(action.to_string()))?;
        let Some(kind) = kind else {
            self.heartbeat(task_id, of, now).await?;
            let stored = self.store.get(task_id).await?;
            return Ok(stored.map(|s| s.to_row()).unwrap_or_default());
        };
        let report = WorkerReport {
            of,
            ..worker_report(obj)?
        };
        let task = match kind {
            ReportKind::Completed => match self.complete(task_id, &report, now).await? {
                Completion::Live(t) | Completion::Closed(t) => t,
            },
            ReportKind::Failed => self.fail(task_id, &report, now).await?,
        };
        let stored = self.store.get(&task.task_id).await?;
        Ok(stored.map(|s| s.to_row()).unwrap_or_default())
    }
}

#[async_trait]
impl TaskReporter for WorkerAssistant {
    async fn report(&self, task_id: &str, kind: ReportKind, report: WorkerReport) -> StoreResult<()> {
        let now = self.clock.now();
        match kind {
            ReportKind::Completed => self.complete(task_id, &report, now).await.map(|_| ()),
            ReportKind::Failed => self.fail(task_id, &report, now).await.map(|_| ()),
        }
    }
}
