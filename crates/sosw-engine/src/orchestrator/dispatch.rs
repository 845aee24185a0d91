//! One labourer's dispatch in a pass, in two steps. Under the dispatch lease, [`Orchestrator::claim`]: count what
//! runs, the allowance, read the head of the queue, claim it (each claim records its `invoked` event). Then,
//! with the lease given back, [`Orchestrator::invoke`]: the first task alone, so that a labourer that fails it at
//! the labourer level is sent nothing else, then the rest; and what each outcome means for its task.
//! Labourer-level and permanent failures are decided once the pass knows whether the labourer accepted anything
//! ([`sosw_core::breaker`]). What each outcome does to its task is in `outcomes.rs`.

use super::outcomes::{PutBack, Tally};
use super::{LabourerOrchestration, Orchestrator};
use futures::future::join_all;
use sosw_core::breaker::{dead_allowance, failure_is_the_tasks, probe, LabourerState, PassOutcome};
use sosw_core::config::Labourer;
use sosw_core::decide::FailureKind;
use sosw_core::flow::{self, AllowanceInput, FlowState, LabourerControl, Lesson, Signals};
use sosw_core::ports::{Claim, InvokeError, Invoker};
use sosw_core::Greenfield;
use sosw_core::{Markers, Task, Time};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

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

/// What the invocations of one pass share.
pub(super) struct Pass<'a> {
    pub(super) l: &'a Labourer,
    pub(super) state: Option<&'a LabourerState>,
    pub(super) invoker: &'a dyn Invoker,
    pub(super) markers: Markers,
    /// Set by a failure that says nothing about its task: the claimed tasks not yet sent go back.
    pub(super) stop: AtomicBool,
    pub(super) now: Time,
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
        flow::expire_throttle(flow, now);
        // A store whose count lags its writes: the last claim may not be counted yet.
        let settle = i64::try_from(self.store.count_settle().as_millis()).unwrap_or(i64::MAX);
        if !flow::settled(flow, settle, now) {
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
        let read: Vec<(String, Greenfield)> = queued.iter().map(|t| (t.task_id.clone(), t.greenfield)).collect();
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
    /// dead-task messages, and what the flow state should learn ([`Lesson`]).
    pub(super) async fn invoke(
        &self,
        turn: &Turn<'_>,
        r: &mut LabourerOrchestration,
        claimed: Claimed,
    ) -> (PassOutcome, Vec<String>, Lesson) {
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
        let lesson = Lesson {
            signals: Signals {
                accepted,
                throttled: r.throttled,
                // Congestion: failed or unanswered invocations; not a task's own permanent failure.
                failed: r.retry_later + r.uncertain,
                saturated: claimed.saturated,
                // The workers' reports are judged with the stored counts, under the lease (flow::learn).
                reported_trouble: false,
            },
            ceiling: claimed.ceiling,
            throttle: tally
                .throttle
                .take()
                .map(|(m, after)| (m, after.map(|d| d.as_secs_f64()))),
        };
        (tally.seen, tally.dead, lesson)
    }
}
