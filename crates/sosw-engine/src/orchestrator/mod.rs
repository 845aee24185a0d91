//! Orchestrator: per labourer, invoke `floor(max × coefficient[eco status]) − running` queued tasks (reference
//! §5.5) — `max` being `max_simultaneous_invocations`, an operator's limit, or the adaptive limit, and at most what
//! the rate limit allows — never one task twice.
//!
//! The only guard against a double invocation is the store's conditional claim (`greenfield < start`), exactly as
//! in Python sosw, so Rust and Python orchestrators can run side by side on one table. Beyond the original:
//! labourers run concurrently and in isolation; invocations run concurrently under `invocation_concurrency`; a
//! failed invocation is handled per task instead of aborting the run (§7.6); the `invoked` meta event is written
//! with the claim that spends the attempt, never for a claim lost to another orchestrator (§7.7). A labourer whose
//! failures are not its tasks' is held back by its circuit breaker ([`sosw_core::breaker`]).
//!
//! Flow control ([`sosw_core::flow`]): an operator's pause stops a labourer's dispatch; otherwise the pass takes
//! the labourer's **dispatch lease** in the store, so that no two orchestrators count and claim for one labourer at
//! once — which makes its limit hold across any number of orchestrators — and reads the shared flow state with it
//! (the adaptive limit, the rate limit's bucket, a throttle's Retry-After). The lease is given back right after
//! the claim, and taken again briefly after the invocations to store what they taught (`lease.rs`).
//!
//! - `mod.rs`: the pass — health, pauses, the breaker's gate, the lease, dispatch per labourer, the breaker's and
//!   the flow state's update, notifications;
//! - `dispatch.rs`: one labourer's dispatch — claim, invoke (the first task alone), and what each outcome does to
//!   its task;
//! - `outcomes.rs`: what each invocation's outcome does to its task, and how outcomes add up in the report;
//! - `lease.rs`: taking and giving back the dispatch lease, and the flow state's update after the invocations.

mod dispatch;
mod lease;
mod outcomes;

use crate::ecology::{EcologyManager, Health};
use crate::meta::MetaHandler;
use crate::worker_assistant::WorkerAssistant;
use crate::{EngineError, Wiring};
use futures::future::join_all;
use serde::Serialize;
use serde_json::Value;
use sosw_core::breaker::{after_pass, gate, Gate, LabourerState, PassOutcome, Transition};
use sosw_core::config::{Config, Labourer, DEAD_TASK_SUBJECT};
use sosw_core::decide::desired_invocations;
use sosw_core::flow::{self, Allowance, HeldReason, LabourerControl, Stop};
use sosw_core::ports::{Invoker, InvokerFactory, Notifier, TaskStore};
use sosw_core::{Essential, Time};
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
    /// Who holds the dispatch leases this orchestrator takes: unique per orchestrator.
    holder: String,
}

/// What one pass did for one labourer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LabourerOrchestration {
    pub labourer_id: String,
    pub eco_status: u8,
    pub max_simultaneous_invocations: u32,
    /// `floor(max × coefficient[eco_status])`, with an operator's limit as `max` when one is set.
    pub desired: u32,
    pub running: u64,
    /// What the allowance gave ([`sosw_core::flow::allowance`]: `desired − running`, or fewer under an adaptive or
    /// rate limit; 1 when probing): how many queued tasks were asked for.
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
    /// The limit in force and what bounded the pass's request ([`sosw_core::flow::allowance`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowance: Option<Allowance>,
    /// Another orchestrator held the labourer's dispatch lease: this pass left the labourer to it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dispatched_elsewhere: bool,
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

/// A labourer whose dispatch is held back: paused, throttling, failing ([`sosw_core::breaker`]), or its store
/// unreadable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldBack {
    pub code: HeldReason,
    pub reason: String,
    /// Epoch seconds; at that time dispatch resumes (by one probing task, after the breaker). `None`: until an
    /// operator resumes it.
    pub until: Option<i64>,
    /// This pass is the breaker's probe: at most one task was invoked.
    pub probing: bool,
}

impl HeldBack {
    fn stopped(stop: Stop) -> HeldBack {
        HeldBack {
            code: stop.code,
            reason: stop.reason,
            until: stop.until.map(Time::secs),
            probing: false,
        }
    }

    fn failing(reason: String, until: Time, probing: bool) -> HeldBack {
        HeldBack {
            code: HeldReason::LabourerFailing,
            reason,
            until: Some(until.secs()),
            probing,
        }
    }

    fn store_error(reason: String) -> HeldBack {
        HeldBack {
            code: HeldReason::StoreError,
            reason,
            until: None,
            probing: false,
        }
    }
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
            assistant: wiring.worker_assistant(config.clone()),
            notifier: wiring.notifier.clone(),
            holder: format!(
                "pid {} orchestrator {}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
            config,
        })
    }

    /// One pass over every labourer, at `now`.
    pub async fn run_once(&self, now: Time) -> OrchestratorReport {
        let throttled_before = self.store.throttled_requests();
        let labourers: Vec<&Labourer> = self.config.labourers.iter().collect();
        // Without the stored breaker states, dispatch goes on as if every labourer were healthy, and the pass
        // stores no breaker update (it could not tell a first trip from a repeated one).
        let (states, states_error) = match self.store.labourer_states().await {
            Ok(states) => (Some(states), None),
            Err(e) => (None, Some(format!("reading the labourers' dispatch state: {e}"))),
        };
        let by_id: Option<HashMap<&str, &LabourerState>> = states
            .as_ref()
            .map(|all| all.iter().map(|s| (s.labourer_id.as_str(), s)).collect());
        // Without the operators' controls, a paused labourer could be dispatched: nothing is.
        let controls = self.store.labourer_controls().await.map_err(|e| e.to_string());
        let controls: Result<HashMap<&str, &LabourerControl>, &String> = match &controls {
            Ok(all) => Ok(all.iter().map(|c| (c.labourer_id.as_str(), c)).collect()),
            Err(e) => Err(e),
        };
        let health = self.ecology.statuses(&self.config, &labourers, now).await;
        let results = join_all(labourers.iter().map(|l| {
            let h = health.get(&l.id).cloned().unwrap_or(Health {
                status: self.config.metric_failure_status,
                metric_errors: vec!["no health computed".into()],
                readings: Vec::new(),
            });
            let state = by_id.as_ref().map(|m| m.get(l.id.as_str()).copied());
            let control = controls.as_ref().map(|m| m.get(l.id.as_str()).copied()).map_err(|e| *e);
            self.orchestrate(l, h, state, control, now)
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

    /// One labourer's pass: (its report, dead-task messages, held-back messages). `state` is `None` when the
    /// stored breaker states could not be read, `Some(None)` for a labourer without one; `control` is `Err` when
    /// the operators' controls could not be read.
    async fn orchestrate(
        &self,
        l: &Labourer,
        health: Health,
        state: Option<Option<&LabourerState>>,
        control: Result<Option<&LabourerControl>, &String>,
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
        let control = match control {
            Ok(c) => c,
            Err(e) => {
                r.held_back = Some(HeldBack::store_error(format!("reading the operators' controls: {e}")));
                return (r, Vec::new(), Vec::new());
            }
        };
        if let Some(stop) = flow::gate(control, None, now) {
            r.held_back = Some(HeldBack::stopped(stop));
            return (r, Vec::new(), Vec::new());
        }
        let known = state.flatten();
        let probing = match gate(known, now) {
            Gate::Open => false,
            Gate::HalfOpen => true,
            Gate::Held { reason, until } => {
                r.held_back = Some(HeldBack::failing(reason, until, false));
                return (r, Vec::new(), Vec::new());
            }
        };
        let mut flow = match self.take(l, now).await {
            Ok(Some(flow)) => flow,
            Ok(None) => {
                r.dispatched_elsewhere = true;
                return (r, Vec::new(), Vec::new());
            }
            Err(e) => {
                r.held_back = Some(HeldBack::store_error(e));
                return (r, Vec::new(), Vec::new());
            }
        };
        let turn = dispatch::Turn {
            l,
            state: known,
            probing,
            control,
            coefficient: self.config.coefficients.get(health.status),
            now,
        };
        let claimed = match flow::gate(None, Some(&flow), now) {
            Some(stop) => {
                r.held_back = Some(HeldBack::stopped(stop));
                None
            }
            None => self.claim(&turn, &mut r, &mut flow).await,
        };
        // The claims are in the store: the next orchestrator counts them. Nobody waits for the invocations.
        self.give_back(l, &mut r, &flow).await;
        let Some(claimed) = claimed else {
            return (r, Vec::new(), Vec::new());
        };
        let (seen, dead, lesson) = self.invoke(&turn, &mut r, claimed).await;
        self.learn(l, &mut r, lesson, now).await;
        let held = match state {
            Some(state) => self.update_breaker(l, &mut r, state, &seen, probing, now).await,
            None => Vec::new(),
        };
        (r, dead, held)
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
                    r.held_back = state.and_then(|s| Some(HeldBack::failing(s.reason.clone()?, s.held_until?, true)));
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
                    r.held_back = Some(HeldBack::failing(reason.clone(), until, probing));
                }
                self.store.save_labourer_state(&state).await
            }
        };
        if let Err(e) = result {
            r.errors.push(format!("storing the labourer's dispatch state: {e}"));
        }
        messages
    }
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
