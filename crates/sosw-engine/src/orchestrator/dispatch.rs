//! One labourer's dispatch in a pass, in two steps. Under the dispatch lease, [`Orchestrator::claim`]: count what
//! runs, the allowance, read the head of the queue, claim it (each claim records its `invoked` event). Then,
//! with the lease given back, [`Orchestrator::invoke`]: the first task alone, so that a labourer that fails it at
//! the labourer level is sent nothing else, then the rest; and what each outcome means for its task.
//! Labourer-level and permanent failures are decided once the pass knows whether the labourer accepted anything
//! ([`sosw_core::breaker`]).

use super::{LabourerOrchestration, Orchestrator};
use futures::future::join_all;
use serde_json::json;
use sosw_core::breaker::{dead_allowance, failure_is_the_tasks, probe, stops_the_pass, LabourerState, PassOutcome};
use sosw_core::config::Labourer;
use sosw_core::decide::{decide_after_failure, AfterFailure, ExpiredDecision, FailureKind};
use sosw_core::flow::{self, AllowanceInput, FlowState, LabourerControl, Signals};
use sosw_core::payload::worker_event;
use sosw_core::ports::{ArchiveExpect, Claim, InvokeError, InvokeOutcome, Invoker};
use sosw_core::task::ReportKind;
use sosw_core::time::duration_secs;
use sosw_core::{Markers, MetaAction, MetaEvent, Task, Time};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What became of one claimed task.
enum Outcome {
    Invoked,
    FinishedSync,
    Conflict,
    /// Put back: the labourer throttled it (with its Retry-After, if it gave one).
    Throttled {
        message: String,
        retry_after: Option<Duration>,
    },
    RetryLater,
    /// Closed as dead; `permanent` when its invocation failed for good (not when its attempts ran out).
    Dead {
        message: String,
        permanent: bool,
    },
    Uncertain,
    /// Back at its queue position with its attempt refunded; `local` is sosw's own trouble, to report.
    PutBack {
        local: Option<String>,
    },
    /// A labourer-level or permanent failure, decided once the pass is over.
    Deferred(Box<Failed>),
    Error(String),
}

/// A claimed task whose invocation failed.
struct Failed {
    /// The row as the claim left it.
    task: Task,
    previous_greenfield: i64,
    err: InvokeError,
}

/// Why a claimed task goes back to its queue position with its attempt refunded.
enum PutBack {
    /// The worker asked us to slow down.
    Throttled(InvokeError),
    /// The labourer cannot take any task ([`FailureKind::Labourer`], judged the labourer's).
    Labourer(InvokeError),
    /// sosw could not start the invocation ([`FailureKind::Local`]).
    Local(InvokeError),
    /// A permanent failure past the labourer's allowance of dead tasks in a row.
    RefusedDeath(InvokeError),
    /// Never sent: an earlier failure of the pass stopped the labourer's dispatch.
    NotSent,
}

/// One labourer's turn in a pass: what the orchestrator knows before dispatching it.
pub(super) struct Turn<'a> {
    pub l: &'a Labourer,
    /// The stored breaker state.
    pub state: Option<&'a LabourerState>,
    /// The breaker's probe: at most one task.
    pub probing: bool,
    pub control: Option<&'a LabourerControl>,
    /// `coefficient[eco status]`.
    pub coefficient: f64,
    pub now: Time,
}

/// What [`Orchestrator::claim`] claimed, for [`Orchestrator::invoke`].
pub(super) struct Claimed {
    claims: Vec<Claim>,
    /// The rows as they were in the queue.
    queued: Vec<Task>,
    invoker: std::sync::Arc<dyn Invoker>,
    markers: Markers,
    /// The allowance's ceiling (`floor(max × coefficient)`).
    ceiling: u32,
    saturated: bool,
}

/// What a pass teaches the shared flow state, applied under the lease again ([`Orchestrator::learn`]).
#[derive(Debug)]
pub(super) struct FlowLesson {
    pub signals: Signals,
    pub ceiling: u32,
    /// The longest throttle of the pass: its message and Retry-After.
    pub throttle: Option<(String, Option<Duration>)>,
}

/// What the outcomes of a pass add up to, besides the report's counts.
#[derive(Default)]
struct Tally {
    seen: PassOutcome,
    dead: Vec<String>,
    deferred: Vec<Failed>,
    /// The throttle with the longest Retry-After in the pass: its message and Retry-After.
    throttle: Option<(String, Option<Duration>)>,
}

/// What the invocations of one pass share.
struct Pass<'a> {
    l: &'a Labourer,
    state: Option<&'a LabourerState>,
    invoker: &'a dyn Invoker,
    markers: Markers,
    /// Set by a failure that says nothing about its task: the claimed tasks not yet sent go back.
    stop: AtomicBool,
    now: Time,
}

impl Orchestrator {
    /// Under the labourer's dispatch lease: counts what runs, computes the allowance ([`flow::allowance`]: one task
    /// when probing), reads the queue and claims (each claim with its `invoked` event); spends the rate limit's
    /// tokens and notes the claim's time in `flow`. `None` when nothing was claimed.
    pub(super) async fn claim(
        &self,
        turn: &Turn<'_>,
        r: &mut LabourerOrchestration,
        flow: &mut FlowState,
    ) -> Option<Claimed> {
        let (l, state, probing, now) = (turn.l, turn.state, turn.probing, turn.now);
        if flow.throttled_until.is_some_and(|until| until <= now) {
            flow.throttled_until = None;
            flow.throttle_reason = None;
        }
        // A store whose count lags its writes: the last claim may not be counted yet.
        let settle = i64::try_from(self.store.count_settle().as_millis()).unwrap_or(i64::MAX);
        if flow.claimed_at.is_some_and(|at| now < at.plus_millis(settle)) {
            r.dispatched_elsewhere = true;
            return None;
        }
        let markers = l.markers(now, self.config.greenfield.delta);
        match self.store.count_running(&l.id, markers.expired).await {
            Ok(n) => r.running = n,
            Err(e) => {
                r.errors.push(format!("counting running tasks: {e}"));
                return None;
            }
        }
        let allowance = flow::allowance(AllowanceInput {
            configured_max: l.max_simultaneous_invocations,
            coefficient: turn.coefficient,
            control: turn.control,
            flow,
            config: &l.flow,
            running: r.running,
            now,
        });
        r.desired = allowance.ceiling;
        r.requested = allowance.to_invoke;
        if probing {
            r.requested = r.requested.min(1);
        }
        let (ceiling, by_rate) = (allowance.ceiling, allowance.by_rate);
        r.allowance = Some(allowance);
        if r.requested == 0 {
            return None;
        }
        // A probe reads one task more, to avoid the suspect.
        let fetch = if probing { 2 } else { r.requested as usize };
        let mut queued = match self.store.next_queued(&l.id, markers.start, fetch).await {
            Ok(q) => q,
            Err(e) => {
                r.errors.push(format!("reading the queue: {e}"));
                return None;
            }
        };
        // The queue could fill the whole allowance, and a concurrency limit (not the rate) set it: the limit, not
        // the queue, held the labourer — the condition for the adaptive limit to grow.
        let saturated = !probing && !by_rate && queued.len() >= r.requested as usize;
        if probing {
            let ids: Vec<String> = queued.iter().map(|t| t.task_id.clone()).collect();
            let chosen = probe(state, &ids).cloned();
            queued.retain(|t| Some(&t.task_id) == chosen.as_ref());
        }
        if queued.is_empty() {
            return None;
        }
        // Before the claim: a claimed task that cannot be sent would spend its attempt for nothing.
        let Some(invoker) = self.invokers.get(&l.id) else {
            r.errors.push("no invoker was built for this labourer".into());
            return None;
        };
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
                return None;
            }
        };
        let sent = claims.iter().filter(|c| matches!(c, Claim::Claimed { .. })).count();
        if sent > 0 {
            flow.claimed_at = Some(now);
        }
        if let Some(rate) = &l.flow.rate {
            flow.rate_tat = flow::rate_spend(rate, flow.rate_tat, now, u32::try_from(sent).unwrap_or(u32::MAX));
        }
        Some(Claimed {
            claims,
            queued,
            invoker: invoker.clone(),
            markers,
            ceiling,
            saturated,
        })
    }

    /// Invokes what [`Self::claim`] claimed — the first task alone, so that a labourer that fails it at the labourer
    /// level is sent nothing else — and carries out each outcome. Returns what the pass saw for the breaker, the
    /// dead-task messages, and what the flow state should learn ([`FlowLesson`]).
    pub(super) async fn invoke(
        &self,
        turn: &Turn<'_>,
        r: &mut LabourerOrchestration,
        claimed: Claimed,
    ) -> (PassOutcome, Vec<String>, FlowLesson) {
        let (l, state, now) = (turn.l, turn.state, turn.now);
        let mut tally = Tally::default();
        let before: HashMap<&str, &Task> = claimed.queued.iter().map(|t| (t.task_id.as_str(), t)).collect();
        let pass = Pass {
            l,
            state,
            invoker: claimed.invoker.as_ref(),
            markers: claimed.markers,
            stop: AtomicBool::new(false),
            now,
        };
        let mut claims = claimed.claims.into_iter();
        let mut results = Vec::new();
        if let Some(first) = claims.next() {
            results.push(self.handle_claim(&pass, first, &before).await);
        }
        results.extend(join_all(claims.map(|c| self.handle_claim(&pass, c, &before))).await);

        let mut events = Vec::new();
        for (outcome, evs) in results {
            events.extend(evs);
            tally.add(r, outcome);
        }
        // Now that the pass knows what the labourer accepted: whose fault each deferred failure was.
        tally.seen.accepted = r.invoked + r.finished_sync;
        let accepted = tally.seen.accepted;
        let mut allowance = dead_allowance(state, accepted, &self.config.breaker);
        for f in std::mem::take(&mut tally.deferred) {
            let (outcome, evs) = match f.err.kind {
                FailureKind::Labourer if failure_is_the_tasks(state, &f.task.task_id, accepted) => {
                    let err = InvokeError::new(
                        FailureKind::Transient,
                        format!(
                            "{} (the labourer takes other tasks, so this failure is the task's own)",
                            f.err.message
                        ),
                    );
                    self.after_failure(&pass, &f.task, f.previous_greenfield, err).await
                }
                FailureKind::Labourer => {
                    if tally.seen.labourer_failure.is_none() {
                        tally.seen.labourer_failure = Some((f.err.message.clone(), f.task.task_id.clone()));
                    }
                    self.put_back(&pass, &f.task, f.previous_greenfield, PutBack::Labourer(f.err))
                        .await
                }
                _ if allowance > 0 => {
                    allowance -= 1;
                    self.after_failure(&pass, &f.task, f.previous_greenfield, f.err).await
                }
                _ => {
                    tally.seen.refused_dead += 1;
                    self.put_back(&pass, &f.task, f.previous_greenfield, PutBack::RefusedDeath(f.err))
                        .await
                }
            };
            events.extend(evs);
            tally.add(r, outcome);
        }
        self.meta.post(events).await;
        let lesson = FlowLesson {
            signals: Signals {
                accepted,
                throttled: r.throttled,
                // Congestion: failed or unanswered invocations; not a task's own permanent failure.
                failed: r.retry_later + r.uncertain,
                saturated: claimed.saturated,
            },
            ceiling: claimed.ceiling,
            throttle: tally.throttle.take(),
        };
        (tally.seen, tally.dead, lesson)
    }

    async fn handle_claim(
        &self,
        pass: &Pass<'_>,
        claim: Claim,
        before: &HashMap<&str, &Task>,
    ) -> (Outcome, Vec<MetaEvent>) {
        match claim {
            Claim::Lost { task_id } => {
                tracing::debug!(labourer = %pass.l.id, task_id, "claimed by someone else first");
                (Outcome::Conflict, Vec::new())
            }
            Claim::Claimed {
                task_id,
                previous_greenfield,
            } => match before.get(task_id.as_str()) {
                Some(queued) => {
                    // The row as the claim left it: at the invoked marker, with one more attempt.
                    let mut claimed = (*queued).clone();
                    claimed.greenfield = pass.markers.invoked;
                    claimed.attempts = claimed.attempts.saturating_add(1);
                    self.invoke_one(pass, queued, claimed, previous_greenfield).await
                }
                None => (
                    Outcome::Error(format!("the store claimed `{task_id}`, which was not asked for")),
                    Vec::new(),
                ),
            },
        }
    }

    /// Invokes one claimed task. `queued` is the row as it was in the queue (the event carries its `greenfield`
    /// and `attempts`, as Python sosw sends them); `claimed` is the row after the claim.
    async fn invoke_one(
        &self,
        pass: &Pass<'_>,
        queued: &Task,
        claimed: Task,
        previous_greenfield: i64,
    ) -> (Outcome, Vec<MetaEvent>) {
        let id = claimed.task_id.as_str();
        let event = match worker_event(queued) {
            Ok(e) => serde_json::Value::Object(e).to_string(),
            // A payload that is not a JSON object never reaches the labourer: dead, and no mark against it.
            Err(e) => {
                let err = InvokeError::new(FailureKind::Permanent, e.to_string());
                return match self.after_failure(pass, &claimed, previous_greenfield, err).await {
                    (Outcome::Dead { message, .. }, evs) => (
                        Outcome::Dead {
                            message,
                            permanent: false,
                        },
                        evs,
                    ),
                    other => other,
                };
            }
        };
        let result = {
            let _permit = self.permits.acquire().await;
            if pass.stop.load(Ordering::SeqCst) {
                return self
                    .put_back(pass, &claimed, previous_greenfield, PutBack::NotSent)
                    .await;
            }
            let deadline = pass.l.invocation_deadline_secs(self.config.invocation_timeout);
            match tokio::time::timeout(duration_secs(deadline), pass.invoker.invoke(&claimed, &event)).await {
                Ok(result) => result,
                Err(_) => Err(InvokeError::new(
                    FailureKind::Unknown,
                    format!("no answer from the invoker within {deadline} s; it may have been delivered"),
                )),
            }
        };
        let now = pass.now;
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
                if stops_the_pass(err.kind, pass.state, id) {
                    pass.stop.store(true, Ordering::SeqCst);
                }
                match err.kind {
                    FailureKind::Labourer | FailureKind::Permanent => (
                        Outcome::Deferred(Box::new(Failed {
                            task: claimed,
                            previous_greenfield,
                            err,
                        })),
                        Vec::new(),
                    ),
                    _ => self.after_failure(pass, &claimed, previous_greenfield, err).await,
                }
            }
        }
    }

    /// Puts a claimed task back at its queue position with its attempt refunded.
    async fn put_back(
        &self,
        pass: &Pass<'_>,
        claimed: &Task,
        previous_greenfield: i64,
        why: PutBack,
    ) -> (Outcome, Vec<MetaEvent>) {
        let (l, id, now) = (pass.l, claimed.task_id.as_str(), pass.now);
        let details = |e: &InvokeError| json!({"error": e.message, "kind": e.kind});
        let (outcome, action, details) = match why {
            PutBack::Throttled(e) => (
                Outcome::Throttled {
                    message: e.message.clone(),
                    retry_after: e.retry_after,
                },
                MetaAction::InvocationThrottled,
                details(&e),
            ),
            PutBack::Labourer(e) | PutBack::RefusedDeath(e) => (
                Outcome::PutBack { local: None },
                MetaAction::InvocationHeldBack,
                details(&e),
            ),
            PutBack::Local(e) => (
                Outcome::PutBack {
                    local: Some(format!("task `{id}` could not be started: {}", e.message)),
                },
                MetaAction::InvocationHeldBack,
                details(&e),
            ),
            PutBack::NotSent => (
                Outcome::PutBack { local: None },
                MetaAction::InvocationHeldBack,
                json!({"error": "not sent: an earlier invocation of this pass failed for a reason that is not the task's"}),
            ),
        };
        let events = self
            .meta
            .recording(vec![self.meta.event(id, &l.id, action, now, Some(details.clone()))]);
        match self
            .store
            .release_claim_recorded(id, claimed.greenfield, previous_greenfield, &events)
            .await
        {
            Ok(()) => (outcome, Vec::new()),
            Err(e) => (
                Outcome::Error(format!("task `{id}` could not be put back in its queue: {e}")),
                vec![self
                    .meta
                    .event(id, &l.id, MetaAction::InvocationFailed, now, Some(details))],
            ),
        }
    }

    /// What a failed invocation does to its task ([`decide_after_failure`]), carried out with its audit events.
    async fn after_failure(
        &self,
        pass: &Pass<'_>,
        claimed: &Task,
        previous_greenfield: i64,
        err: InvokeError,
    ) -> (Outcome, Vec<MetaEvent>) {
        let (l, now) = (pass.l, pass.now);
        let id = claimed.task_id.as_str();
        let decision = decide_after_failure(
            err.kind,
            claimed.attempts,
            &l.retry_policy(self.config.retry_backoff),
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
                self.put_back(pass, claimed, previous_greenfield, why).await
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

impl Tally {
    /// Counts one outcome in the labourer's report; deferred failures are set aside for after the pass.
    fn add(&mut self, r: &mut LabourerOrchestration, outcome: Outcome) {
        match outcome {
            Outcome::Invoked => r.invoked += 1,
            Outcome::FinishedSync => r.finished_sync += 1,
            Outcome::Conflict => r.skipped_conflict += 1,
            Outcome::Throttled { message, retry_after } => {
                r.throttled += 1;
                // The longest Retry-After of the pass wins.
                if self.throttle.as_ref().is_none_or(|(_, seen)| retry_after > *seen) {
                    self.throttle = Some((message, retry_after));
                }
            }
            Outcome::RetryLater => r.retry_later += 1,
            Outcome::Dead { message, permanent } => {
                r.dead += 1;
                self.seen.dead += u32::from(permanent);
                self.dead.push(message);
            }
            Outcome::Uncertain => r.uncertain += 1,
            Outcome::PutBack { local } => {
                r.put_back += 1;
                r.errors.extend(local);
            }
            Outcome::Deferred(f) => self.deferred.push(*f),
            Outcome::Error(e) => r.errors.push(e),
        }
    }
}
