//! Orchestrator: per labourer, invoke `floor(max_simultaneous_invocations × coefficient[eco status]) − running`
//! queued tasks (reference §5.5), never one task twice.
//!
//! The only guard against a double invocation is the store's conditional claim (`greenfield < start`), exactly as
//! in Python sosw, so Rust and Python orchestrators can run side by side on one table. Beyond the original:
//! labourers run concurrently and in isolation; invocations run concurrently under `invocation_concurrency`; a
//! failed invocation is handled per task by [`decide_after_failure`] instead of aborting the run (§7.6); the
//! `invoked` meta event is written only for real invocations (§7.7).

use crate::ecology::{EcologyManager, Health};
use crate::meta::MetaHandler;
use crate::worker_assistant::WorkerAssistant;
use crate::{EngineError, Wiring};
use futures::future::join_all;
use serde::Serialize;
use serde_json::{json, Value};
use sosw_core::config::{Config, Labourer, DEAD_TASK_SUBJECT};
use sosw_core::decide::{decide_after_failure, desired_invocations, to_invoke, AfterFailure, ExpiredDecision};
use sosw_core::payload::worker_event;
use sosw_core::ports::{
    ArchiveExpect, Claim, InvokeError, InvokeOutcome, Invoker, InvokerFactory, Notifier, TaskStore,
};
use sosw_core::task::ReportKind;
use sosw_core::{Essential, MetaAction, MetaEvent, Task, Time};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Debug)]
pub struct Orchestrator {
    config: Arc<Config>,
    store: Arc<dyn TaskStore>,
    meta: MetaHandler,
    ecology: EcologyManager,
    invokers: HashMap<String, Arc<dyn Invoker>>,
    assistant: WorkerAssistant,
    notifier: Arc<dyn Notifier>,
    permits: Arc<Semaphore>,
}

/// What one pass did for one labourer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LabourerOrchestration {
    pub labourer_id: String,
    pub eco_status: u8,
    pub max_simultaneous_invocations: u32,
    /// `floor(max_simultaneous_invocations × coefficient[eco_status])`.
    pub desired: u32,
    pub running: u64,
    /// `max(desired − running, 0)`: how many queued tasks were asked for.
    pub requested: u32,
    pub invoked: u32,
    /// Invoked synchronously and reported on the spot (HTTP `sync` mode).
    pub finished_sync: u32,
    /// Claimed by someone else first (a concurrent orchestrator).
    pub skipped_conflict: u32,
    /// The worker throttled us; back to the queue without spending an attempt.
    pub throttled: u32,
    /// The invocation failed; parked in the retry table.
    pub retry_later: u32,
    /// The invocation failed for good, or too often; closed as dead.
    pub dead: u32,
    /// The invocation may or may not have arrived; left running (it expires if the worker never reports).
    pub uncertain: u32,
    pub metric_errors: Vec<String>,
    pub errors: Vec<String>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OrchestratorReport {
    pub at: i64,
    /// Store requests throttled during the pass (each was retried by the store's client; with several passes at
    /// once in one process, each counts the others' too).
    pub store_throttled: u64,
    pub labourers: Vec<LabourerOrchestration>,
}

impl OrchestratorReport {
    /// `{"at": ..., "store_throttled": n, "labourers": {"<id>": {...}}}`
    pub fn to_json(&self) -> Value {
        crate::report_json(
            self.at,
            self.store_throttled,
            self.labourers.iter().map(|l| (l.labourer_id.clone(), l)),
        )
    }

    pub fn total_invoked(&self) -> u32 {
        self.labourers.iter().map(|l| l.invoked + l.finished_sync).sum()
    }
}

enum Outcome {
    Invoked,
    FinishedSync,
    Conflict,
    Throttled,
    RetryLater,
    Dead(String),
    Uncertain,
    Error(String),
}

impl Orchestrator {
    /// Builds the invoker of every labourer up front: a labourer that cannot be invoked here is a config error.
    pub fn new(
        config: Arc<Config>,
        wiring: &Wiring,
        invokers: &dyn InvokerFactory,
    ) -> Result<Orchestrator, EngineError> {
        let mut built = HashMap::new();
        for l in &config.labourers {
            let inv = invokers.invoker_for(l).map_err(|message| EngineError::Invoker {
                labourer: l.id.clone(),
                message,
            })?;
            built.insert(l.id.clone(), inv);
        }
        Ok(Orchestrator {
            permits: Arc::new(Semaphore::new(config.invocation_concurrency.max(1))),
            store: wiring.store.clone(),
            meta: wiring.meta_handler(Essential::Orchestrator),
            ecology: EcologyManager::new(wiring.metrics.clone()),
            invokers: built,
            assistant: wiring.worker_assistant(),
            notifier: wiring.notifier.clone(),
            config,
        })
    }

    /// One pass over every labourer, at `now`.
    pub async fn run_once(&self, now: Time) -> OrchestratorReport {
        let throttled_before = self.store.throttled_requests();
        let labourers: Vec<&Labourer> = self.config.labourers.iter().collect();
        let health = self.ecology.statuses(&self.config, &labourers, now).await;
        let results = join_all(labourers.iter().map(|l| {
            let h = health.get(&l.id).cloned().unwrap_or(Health {
                status: self.config.metric_failure_status,
                metric_errors: vec!["no health computed".into()],
            });
            self.orchestrate(l, h, now)
        }))
        .await;
        let mut report = OrchestratorReport {
            at: now.secs(),
            store_throttled: self.store.throttled_requests().saturating_sub(throttled_before),
            labourers: Vec::with_capacity(results.len()),
        };
        let mut dead_messages = Vec::new();
        for (r, dead) in results {
            report.labourers.push(r);
            dead_messages.extend(dead);
        }
        self.notify_dead(dead_messages).await;
        report
    }

    async fn notify_dead(&self, messages: Vec<String>) {
        if messages.is_empty() {
            return;
        }
        if let Err(e) = self.notifier.notify(DEAD_TASK_SUBJECT, &messages).await {
            tracing::warn!(error = %e, count = messages.len(), "could not send the dead-task notification");
        }
    }

    async fn orchestrate(&self, l: &Labourer, health: Health, now: Time) -> (LabourerOrchestration, Vec<String>) {
        let mut r = LabourerOrchestration {
            labourer_id: l.id.clone(),
            eco_status: health.status as u8,
            max_simultaneous_invocations: l.max_simultaneous_invocations,
            desired: desired_invocations(l.max_simultaneous_invocations, health.status, &self.config.coefficients),
            metric_errors: health.metric_errors,
            ..LabourerOrchestration::default()
        };
        for e in &r.metric_errors {
            tracing::warn!(labourer = %l.id, "{e}");
        }
        let markers = l.markers(now, self.config.greenfield.delta);
        match self.store.count_running(&l.id, markers.expired).await {
            Ok(n) => r.running = n,
            Err(e) => {
                r.errors.push(format!("counting running tasks: {e}"));
                return (r, Vec::new());
            }
        }
        r.requested = to_invoke(r.desired, r.running);
        if r.requested == 0 {
            return (r, Vec::new());
        }
        let queued = match self.store.next_queued(&l.id, markers.start, r.requested as usize).await {
            Ok(q) => q,
            Err(e) => {
                r.errors.push(format!("reading the queue: {e}"));
                return (r, Vec::new());
            }
        };
        if queued.is_empty() {
            return (r, Vec::new());
        }
        let read: Vec<(String, i64)> = queued.iter().map(|t| (t.task_id.clone(), t.greenfield)).collect();
        let claims = match self.store.claim(&l.id, &read, markers.start, markers.invoked).await {
            Ok(c) => c,
            Err(e) => {
                r.errors.push(format!("claiming tasks: {e}"));
                return (r, Vec::new());
            }
        };
        let before: HashMap<&str, &Task> = queued.iter().map(|t| (t.task_id.as_str(), t)).collect();
        let Some(invoker) = self.invokers.get(&l.id) else {
            r.errors.push("no invoker was built for this labourer".into());
            return (r, Vec::new());
        };
        let results = join_all(claims.into_iter().map(|c| async {
            match c {
                Claim::Lost { task_id } => {
                    tracing::debug!(labourer = %l.id, task_id, "claimed by someone else first");
                    (Outcome::Conflict, Vec::new())
                }
                Claim::Claimed {
                    task_id,
                    previous_greenfield,
                } => match before.get(task_id.as_str()) {
                    Some(queued) => {
                        // The row as the claim left it: at the invoked marker, with one more attempt.
                        let mut claimed = (*queued).clone();
                        claimed.greenfield = markers.invoked;
                        claimed.attempts = claimed.attempts.saturating_add(1);
                        self.invoke_one(l, invoker.as_ref(), queued, &claimed, previous_greenfield, now)
                            .await
                    }
                    None => (
                        Outcome::Error(format!("the store claimed `{task_id}`, which was not asked for")),
                        Vec::new(),
                    ),
                },
            }
        }))
        .await;
        let mut events = Vec::new();
        let mut dead = Vec::new();
        for (outcome, evs) in results {
            events.extend(evs);
            match outcome {
                Outcome::Invoked => r.invoked += 1,
                Outcome::FinishedSync => r.finished_sync += 1,
                Outcome::Conflict => r.skipped_conflict += 1,
                Outcome::Throttled => r.throttled += 1,
                Outcome::RetryLater => r.retry_later += 1,
                Outcome::Dead(message) => {
                    r.dead += 1;
                    dead.push(message);
                }
                Outcome::Uncertain => r.uncertain += 1,
                Outcome::Error(e) => r.errors.push(e),
            }
        }
        self.meta.post(events).await;
        (r, dead)
    }

    /// Invokes one claimed task. `queued` is the row as it was in the queue (the event carries its `greenfield`
    /// and `attempts`, as Python sosw sends them); `claimed` is the row after the claim.
    async fn invoke_one(
        &self,
        l: &Labourer,
        invoker: &dyn Invoker,
        queued: &Task,
        claimed: &Task,
        previous_greenfield: i64,
        now: Time,
    ) -> (Outcome, Vec<MetaEvent>) {
        let id = claimed.task_id.as_str();
        let event = match worker_event(queued) {
            Ok(e) => serde_json::to_string(&Value::Object(e)).unwrap_or_default(),
            Err(e) => {
                let err = InvokeError::new(sosw_core::decide::FailureKind::Permanent, e.to_string());
                return self.after_failure(l, claimed, previous_greenfield, err, now).await;
            }
        };
        let result = {
            let _permit = self.permits.acquire().await;
            invoker.invoke(claimed, &event).await
        };
        let invoked_event = |details| self.meta.event(id, &l.id, MetaAction::Invoked, now, details);
        match result {
            Ok(InvokeOutcome::Accepted) => (Outcome::Invoked, vec![invoked_event(None)]),
            Ok(InvokeOutcome::Finished(kind, report)) => {
                let reported = match kind {
                    ReportKind::Completed => self
                        .assistant
                        .complete_deferred(id, &report, now)
                        .await
                        .map(|(_, ev)| ev),
                    ReportKind::Failed => self.assistant.fail_deferred(id, &report, now).await.map(|(_, ev)| ev),
                };
                match reported {
                    Ok(events) => (
                        Outcome::FinishedSync,
                        std::iter::once(invoked_event(None)).chain(events).collect(),
                    ),
                    Err(e) => (
                        Outcome::Error(format!("task `{id}` finished but its report could not be stored: {e}")),
                        vec![invoked_event(None)],
                    ),
                }
            }
            Err(err) => self.after_failure(l, claimed, previous_greenfield, err, now).await,
        }
    }

    async fn after_failure(
        &self,
        l: &Labourer,
        claimed: &Task,
        previous_greenfield: i64,
        err: InvokeError,
        now: Time,
    ) -> (Outcome, Vec<MetaEvent>) {
        let id = claimed.task_id.as_str();
        let decision = decide_after_failure(
            err.kind,
            claimed.attempts,
            l.max_attempts,
            l.max_duration,
            self.config.retry_backoff,
            now.secs(),
        );
        tracing::warn!(labourer = %l.id, task_id = id, kind = ?err.kind, error = %err.message, ?decision, "invocation failed");
        let details = json!({"error": err.message, "kind": err.kind});
        let failed = self
            .meta
            .event(id, &l.id, MetaAction::InvocationFailed, now, Some(details.clone()));
        match decision {
            AfterFailure::Requeue => match self
                .store
                .release_claim(id, claimed.greenfield, previous_greenfield)
                .await
            {
                Ok(()) => (
                    Outcome::Throttled,
                    vec![self
                        .meta
                        .event(id, &l.id, MetaAction::InvocationThrottled, now, Some(details))],
                ),
                Err(e) => (
                    Outcome::Error(format!("task `{id}` was throttled but could not be put back: {e}")),
                    vec![failed],
                ),
            },
            AfterFailure::Expired(ExpiredDecision::Retry {
                delay,
                desired_launch_time,
            }) => {
                match self
                    .store
                    .move_to_retry(id, claimed.greenfield, desired_launch_time)
                    .await
                {
                    Ok(()) => (
                        Outcome::RetryLater,
                        vec![
                            failed,
                            self.meta.event(
                                id,
                                &l.id,
                                MetaAction::ScheduledForRetry,
                                now,
                                Some(json!({"delay": delay})),
                            ),
                        ],
                    ),
                    Err(e) => (
                        Outcome::Error(format!("task `{id}` could not be parked for retry: {e}")),
                        vec![failed],
                    ),
                }
            }
            AfterFailure::Expired(ExpiredDecision::Dead) | AfterFailure::Dead => {
                match self
                    .store
                    .archive(
                        id,
                        ArchiveExpect::Dead {
                            greenfield: claimed.greenfield,
                        },
                        now,
                    )
                    .await
                {
                    Ok(_) => (
                        Outcome::Dead(format!("Closing dead task: {id} ")),
                        vec![
                            failed,
                            self.meta.event(id, &l.id, MetaAction::ArchivedDead, now, Some(details)),
                        ],
                    ),
                    Err(e) => (
                        Outcome::Error(format!("task `{id}` could not be closed as dead: {e}")),
                        vec![failed],
                    ),
                }
            }
            AfterFailure::LeaveRunning => (
                Outcome::Uncertain,
                vec![self.meta.event(
                    id,
                    &l.id,
                    MetaAction::Invoked,
                    now,
                    Some(json!({"uncertain": err.message})),
                )],
            ),
        }
    }
}
