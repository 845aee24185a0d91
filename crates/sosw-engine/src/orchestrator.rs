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
use sosw_core::breaker::{after_pass, gate, Gate, LabourerState, PassOutcome, Transition};
use sosw_core::config::{Config, Labourer, DEAD_TASK_SUBJECT};
use sosw_core::decide::{
    decide_after_failure, desired_invocations, to_invoke, AfterFailure, ExpiredDecision, FailureKind,
};
use sosw_core::payload::worker_event;
use sosw_core::ports::{
    ArchiveExpect, Claim, InvokeError, InvokeOutcome, Invoker, InvokerFactory, Notifier, TaskStore,
};
use sosw_core::task::ReportKind;
use sosw_core::time::duration_secs;
use sosw_core::{Essential, MetaAction, MetaEvent, Task, Time};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Claimed, then put back at their queue positions without spending an attempt: the labourer could not take
    /// any task (a labourer-level failure), or sosw could not start workers (out of file descriptors, memory).
    pub put_back: u32,
    /// Why the labourer dispatched nothing (or only one probing task) in this pass, if it is held back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<HeldBack>,
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

/// A labourer held back by its circuit breaker ([`sosw_core::breaker`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldBack {
    pub reason: String,
    /// Epoch seconds; at that time one task probes the labourer.
    pub until: i64,
    /// This pass is the probe: at most one task was invoked.
    pub probing: bool,
}

enum Outcome {
    Invoked,
    FinishedSync,
    Conflict,
    Throttled,
    RetryLater,
    /// Closed as dead: `permanent` when the invocation failed for good (not when attempts ran out).
    Dead {
        message: String,
        permanent: bool,
    },
    Uncertain,
    /// Put back without spending an attempt; `labourer` carries the labourer-level failure that caused it, if the
    /// labourer (rather than sosw itself, or an earlier failure of this pass) was the cause.
    PutBack {
        labourer: Option<String>,
        local: Option<String>,
    },
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
        let (states, states_error) = match self.store.labourer_states().await {
            Ok(states) => (states, None),
            Err(e) => (Vec::new(), Some(format!("reading the labourers' dispatch state: {e}"))),
        };
        let states: HashMap<&str, &LabourerState> = states.iter().map(|s| (s.labourer_id.as_str(), s)).collect();
        let health = self.ecology.statuses(&self.config, &labourers, now).await;
        let results = join_all(labourers.iter().map(|l| {
            let h = health.get(&l.id).cloned().unwrap_or(Health {
                status: self.config.metric_failure_status,
                metric_errors: vec!["no health computed".into()],
            });
            self.orchestrate(l, h, states.get(l.id.as_str()).copied(), now)
        }))
        .await;
        let mut report = OrchestratorReport {
            at: now.secs(),
            store_throttled: self.store.throttled_requests().saturating_sub(throttled_before),
            labourers: Vec::with_capacity(results.len()),
        };
        let mut dead_messages = Vec::new();
        let mut held_messages = Vec::new();
        for (mut r, dead, held) in results {
            if let Some(e) = &states_error {
                r.errors.push(e.clone());
            }
            report.labourers.push(r);
            dead_messages.extend(dead);
            held_messages.extend(held);
        }
        self.notify(DEAD_TASK_SUBJECT, dead_messages).await;
        self.notify(HELD_BACK_SUBJECT, held_messages).await;
        report
    }

    async fn notify(&self, subject: &str, messages: Vec<String>) {
        if messages.is_empty() {
            return;
        }
        if let Err(e) = self.notifier.notify(subject, &messages).await {
            tracing::warn!(error = %e, subject, count = messages.len(), "could not send a notification");
        }
    }

    /// One labourer's pass: (its report, dead-task messages, held-back messages).
    async fn orchestrate(
        &self,
        l: &Labourer,
        health: Health,
        state: Option<&LabourerState>,
        now: Time,
    ) -> (LabourerOrchestration, Vec<String>, Vec<String>) {
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
        let probing = match gate(state, now) {
            Gate::Open => false,
            Gate::HalfOpen => true,
            Gate::Held { reason, until } => {
                r.held_back = Some(HeldBack {
                    reason,
                    until: until.secs(),
                    probing: false,
                });
                return (r, Vec::new(), Vec::new());
            }
        };
        let (results, dead) = self.dispatch(l, &mut r, probing, now).await;
        let held = self.update_breaker(l, &mut r, state, &results, probing, now).await;
        (r, dead, held)
    }

    /// Claims and invokes up to `desired − running` queued tasks (one when `probing`); returns what the pass saw
    /// for the breaker and the dead-task messages.
    async fn dispatch(
        &self,
        l: &Labourer,
        r: &mut LabourerOrchestration,
        probing: bool,
        now: Time,
    ) -> (PassOutcome, Vec<String>) {
        let mut seen = PassOutcome::default();
        let markers = l.markers(now, self.config.greenfield.delta);
        match self.store.count_running(&l.id, markers.expired).await {
            Ok(n) => r.running = n,
            Err(e) => {
                r.errors.push(format!("counting running tasks: {e}"));
                return (seen, Vec::new());
            }
        }
        r.requested = to_invoke(r.desired, r.running);
        if probing {
            r.requested = r.requested.min(1);
        }
        if r.requested == 0 {
            return (seen, Vec::new());
        }
        let queued = match self.store.next_queued(&l.id, markers.start, r.requested as usize).await {
            Ok(q) => q,
            Err(e) => {
                r.errors.push(format!("reading the queue: {e}"));
                return (seen, Vec::new());
            }
        };
        if queued.is_empty() {
            return (seen, Vec::new());
        }
        let read: Vec<(String, i64)> = queued.iter().map(|t| (t.task_id.clone(), t.greenfield)).collect();
        // Each claim records its `invoked` event with it: every spent attempt has one, crash or not.
        let stamp = self.meta.stamp(now);
        let claims = match self
            .store
            .claim_recorded(&l.id, &read, markers.start, markers.invoked, stamp.as_ref())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                r.errors.push(format!("claiming tasks: {e}"));
                return (seen, Vec::new());
            }
        };
        let before: HashMap<&str, &Task> = queued.iter().map(|t| (t.task_id.as_str(), t)).collect();
        let Some(invoker) = self.invokers.get(&l.id) else {
            r.errors.push("no invoker was built for this labourer".into());
            return (seen, Vec::new());
        };
        // Set by the first failure that says nothing about its task: the claimed tasks not yet sent go back.
        let stop = AtomicBool::new(false);
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
                        let call = Call {
                            l,
                            invoker: invoker.as_ref(),
                            queued,
                            claimed: &claimed,
                            previous_greenfield,
                            stop: &stop,
                            now,
                        };
                        self.invoke_one(call).await
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
                Outcome::Dead { message, permanent } => {
                    r.dead += 1;
                    seen.dead += u32::from(permanent);
                    dead.push(message);
                }
                Outcome::Uncertain => r.uncertain += 1,
                Outcome::PutBack { labourer, local } => {
                    r.put_back += 1;
                    if seen.labourer_failure.is_none() {
                        seen.labourer_failure = labourer;
                    }
                    if let Some(e) = local {
                        r.errors.push(e);
                    }
                }
                Outcome::Error(e) => r.errors.push(e),
            }
        }
        seen.accepted = r.invoked + r.finished_sync;
        self.meta.post(events).await;
        (seen, dead)
    }

    /// Stores what the pass taught about the labourer's health ([`after_pass`]); returns the held-back
    /// notification, if the labourer has just been held back.
    async fn update_breaker(
        &self,
        l: &Labourer,
        r: &mut LabourerOrchestration,
        state: Option<&LabourerState>,
        seen: &PassOutcome,
        probing: bool,
        now: Time,
    ) -> Vec<String> {
        let mut messages = Vec::new();
        let result = match after_pass(&l.id, state, seen, &self.config.breaker, now) {
            Transition::Keep => {
                if probing {
                    r.held_back = state.and_then(|s| {
                        Some(HeldBack {
                            reason: s.reason.clone()?,
                            until: s.held_until?.secs(),
                            probing: true,
                        })
                    });
                }
                Ok(())
            }
            Transition::Clear { recovered } => {
                if recovered {
                    tracing::info!(labourer = %l.id, "the labourer accepted a task again: no longer held back");
                }
                self.store.clear_labourer_state(&l.id).await
            }
            Transition::Save { state, notify } => {
                if let (Some(reason), Some(until)) = (&state.reason, state.held_until) {
                    tracing::warn!(labourer = %l.id, until = until.secs(), "held back: {reason}");
                    if notify {
                        messages.push(held_back_message(&l.id, reason, until));
                    }
                    r.held_back = Some(HeldBack {
                        reason: reason.clone(),
                        until: until.secs(),
                        probing,
                    });
                }
                self.store.save_labourer_state(&state).await
            }
        };
        if let Err(e) = result {
            r.errors.push(format!("storing the labourer's dispatch state: {e}"));
        }
        messages
    }

    /// Invokes one claimed task. `queued` is the row as it was in the queue (the event carries its `greenfield`
    /// and `attempts`, as Python sosw sends them); `claimed` is the row after the claim.
    async fn invoke_one(&self, c: Call<'_>) -> (Outcome, Vec<MetaEvent>) {
        let (claimed, now) = (c.claimed, c.now);
        let id = claimed.task_id.as_str();
        let event = match worker_event(c.queued) {
            Ok(e) => Value::Object(e).to_string(),
            Err(e) => {
                let err = InvokeError::new(FailureKind::Permanent, e.to_string());
                return self.after_failure(&c, err).await;
            }
        };
        let result = {
            let _permit = self.permits.acquire().await;
            if c.stop.load(Ordering::SeqCst) {
                return self.put_back(&c, PutBack::NotSent).await;
            }
            let deadline = c.l.invocation_deadline_secs(self.config.invocation_timeout);
            match tokio::time::timeout(duration_secs(deadline), c.invoker.invoke(claimed, &event)).await {
                Ok(result) => result,
                Err(_) => Err(InvokeError::new(
                    FailureKind::Unknown,
                    format!("no answer from the invoker within {deadline} s; it may have been delivered"),
                )),
            }
        };
        match result {
            Ok(InvokeOutcome::Accepted) => (Outcome::Invoked, Vec::new()),
            Ok(InvokeOutcome::Finished(kind, report)) => {
                let reported = match kind {
                    ReportKind::Completed => self.assistant.complete(id, &report, now).await.map(|_| ()),
                    ReportKind::Failed => self.assistant.fail(id, &report, now).await.map(|_| ()),
                };
                match reported {
                    Ok(()) => (Outcome::FinishedSync, Vec::new()),
                    Err(e) => (
                        Outcome::Error(format!("task `{id}` finished but its report could not be stored: {e}")),
                        Vec::new(),
                    ),
                }
            }
            Err(err) => {
                if err.kind.stops_the_pass() {
                    c.stop.store(true, Ordering::SeqCst);
                }
                self.after_failure(&c, err).await
            }
        }
    }

    /// Puts a claimed task back at its queue position with its attempt refunded.
    async fn put_back(&self, c: &Call<'_>, why: PutBack) -> (Outcome, Vec<MetaEvent>) {
        let (l, id) = (c.l, c.claimed.task_id.as_str());
        let (outcome, action, details) = match why {
            PutBack::Throttled(e) => (
                Outcome::Throttled,
                MetaAction::InvocationThrottled,
                json!({"error": e.message, "kind": e.kind}),
            ),
            PutBack::Labourer(e) => (
                Outcome::PutBack {
                    labourer: Some(e.message.clone()),
                    local: None,
                },
                MetaAction::InvocationHeldBack,
                json!({"error": e.message, "kind": e.kind}),
            ),
            PutBack::Local(e) => (
                Outcome::PutBack {
                    labourer: None,
                    local: Some(format!("task `{id}` could not be started: {}", e.message)),
                },
                MetaAction::InvocationHeldBack,
                json!({"error": e.message, "kind": e.kind}),
            ),
            PutBack::NotSent => (
                Outcome::PutBack {
                    labourer: None,
                    local: None,
                },
                MetaAction::InvocationHeldBack,
                json!({"error": "not sent: an earlier invocation of this pass failed for a reason that is not the task's"}),
            ),
        };
        let events = self
            .meta
            .recording(vec![self.meta.event(id, &l.id, action, c.now, Some(details.clone()))]);
        match self
            .store
            .release_claim_recorded(id, c.claimed.greenfield, c.previous_greenfield, &events)
            .await
        {
            Ok(()) => (outcome, Vec::new()),
            Err(e) => (
                Outcome::Error(format!("task `{id}` could not be put back in its queue: {e}")),
                vec![self
                    .meta
                    .event(id, &l.id, MetaAction::InvocationFailed, c.now, Some(details))],
            ),
        }
    }

    async fn after_failure(&self, c: &Call<'_>, err: InvokeError) -> (Outcome, Vec<MetaEvent>) {
        let (l, claimed, now) = (c.l, c.claimed, c.now);
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
            AfterFailure::Requeue => {
                let why = match err.kind {
                    FailureKind::Labourer => PutBack::Labourer(err),
                    FailureKind::Local => PutBack::Local(err),
                    _ => PutBack::Throttled(err),
                };
                self.put_back(c, why).await
            }
            AfterFailure::Expired(ExpiredDecision::Retry {
                delay,
                desired_launch_time,
            }) => {
                let events = self.meta.recording(vec![
                    failed.clone(),
                    self.meta.event(
                        id,
                        &l.id,
                        MetaAction::ScheduledForRetry,
                        now,
                        Some(json!({"delay": delay})),
                    ),
                ]);
                match self
                    .store
                    .move_to_retry_recorded(id, claimed.greenfield, desired_launch_time, &events)
                    .await
                {
                    Ok(()) => (Outcome::RetryLater, Vec::new()),
                    Err(e) => (
                        Outcome::Error(format!("task `{id}` could not be parked for retry: {e}")),
                        vec![failed],
                    ),
                }
            }
            AfterFailure::Expired(ExpiredDecision::Dead) | AfterFailure::Dead => {
                let permanent = decision == AfterFailure::Dead;
                let events = self.meta.recording(vec![
                    failed.clone(),
                    self.meta.event(id, &l.id, MetaAction::ArchivedDead, now, Some(details)),
                ]);
                let expect = ArchiveExpect::Dead {
                    greenfield: claimed.greenfield,
                };
                match self.store.archive_recorded(id, expect, now, &events).await {
                    Ok(()) => (
                        Outcome::Dead {
                            message: format!("Closing dead task: {id} "),
                            permanent,
                        },
                        Vec::new(),
                    ),
                    Err(e) => (
                        Outcome::Error(format!("task `{id}` could not be closed as dead: {e}")),
                        vec![failed],
                    ),
                }
            }
            // No move to record it with: its `invoked` event came with the claim; this one says the outcome is
            // unknown, and is posted on its own (best-effort).
            AfterFailure::LeaveRunning => (
                Outcome::Uncertain,
                vec![self.meta.event(
                    id,
                    &l.id,
                    MetaAction::InvocationFailed,
                    now,
                    Some(json!({"error": err.message, "kind": err.kind, "left_running": true})),
                )],
            ),
        }
    }
}

/// One claimed task on its way to its worker.
struct Call<'a> {
    l: &'a Labourer,
    invoker: &'a dyn Invoker,
    queued: &'a Task,
    claimed: &'a Task,
    previous_greenfield: i64,
    /// Set once a failure of this labourer's pass says nothing about its task.
    stop: &'a AtomicBool,
    now: Time,
}

/// Why a claimed task goes back to its queue position with its attempt refunded.
enum PutBack {
    /// The worker asked us to slow down.
    Throttled(InvokeError),
    /// The labourer cannot take any task ([`FailureKind::Labourer`]).
    Labourer(InvokeError),
    /// sosw could not start the invocation ([`FailureKind::Local`]).
    Local(InvokeError),
    /// Never sent: an earlier failure of the pass stopped the labourer's dispatch.
    NotSent,
}

/// The subject of the notification sent when a labourer is held back.
pub const HELD_BACK_SUBJECT: &str = "``sosw`` Labourer Held Back";

fn held_back_message(labourer: &str, reason: &str, until: Time) -> String {
    format!(
        "Labourer `{labourer}` is held back until {until} (epoch seconds {}): {reason}. Its tasks wait in the queue \
         without spending attempts; one task probes the labourer when the hold ends.",
        until.secs(),
        until = sosw_core::time::iso8601(until),
    )
}
