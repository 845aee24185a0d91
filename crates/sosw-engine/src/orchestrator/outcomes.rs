//! What each outcome of an invocation does to its task: invoked, finished on the spot, throttled or held back (put
//! back at its queue position, attempt refunded), failed (retry or dead, [`decide_after_failure`]), or uncertain;
//! and how the outcomes add up in the labourer's report ([`Tally`]).

use super::dispatch::Pass;
use super::{LabourerOrchestration, Orchestrator};
use serde_json::json;
use sosw_core::breaker::{stops_the_pass, PassOutcome};
use sosw_core::decide::{decide_after_failure, AfterFailure, ExpiredDecision, FailureKind};
use sosw_core::payload::worker_event;
use sosw_core::ports::{ArchiveExpect, Claim, InvokeError, InvokeOutcome};
use sosw_core::task::ReportKind;
use sosw_core::time::duration_secs;
use sosw_core::Greenfield;
use sosw_core::{MetaAction, MetaEvent, Task};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What became of one claimed task.
pub(super) enum Outcome {
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
pub(super) struct Failed {
    /// The row as the claim left it.
    pub(super) task: Task,
    pub(super) previous_greenfield: Greenfield,
    pub(super) err: InvokeError,
}

/// Why a claimed task goes back to its queue position with its attempt refunded.
pub(super) enum PutBack {
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

/// What the outcomes of a pass add up to, besides the report's counts.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) seen: PassOutcome,
    pub(super) dead: Vec<String>,
    pub(super) deferred: Vec<Failed>,
    /// The throttle with the longest Retry-After in the pass: its message and Retry-After.
    pub(super) throttle: Option<(String, Option<Duration>)>,
}

impl Orchestrator {
    pub(super) async fn handle_claim(
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
        previous_greenfield: Greenfield,
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
    pub(super) async fn put_back(
        &self,
        pass: &Pass<'_>,
        claimed: &Task,
        previous_greenfield: Greenfield,
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
    pub(super) async fn after_failure(
        &self,
        pass: &Pass<'_>,
        claimed: &Task,
        previous_greenfield: Greenfield,
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
    pub(super) fn add(&mut self, r: &mut LabourerOrchestration, outcome: Outcome) {
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
