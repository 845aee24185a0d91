//! The dispatch lease around one labourer's pass: taken before counting and claiming, given back right after the
//! claim (so other orchestrators wait only for a count and a claim, never for invocations), and taken again
//! briefly to store what the invocations taught the shared flow state ([`Lesson`]).

use super::{LabourerOrchestration, Orchestrator};
use sosw_core::flow::{self, FlowState, Lesson};
use sosw_core::{Labourer, Time};
use std::time::Duration;

/// How often a lesson tries to take the lease back from another orchestrator's claim (each takes milliseconds).
const LESSON_TRIES: u32 = 20;
const LESSON_WAIT: Duration = Duration::from_millis(10);

impl Orchestrator {
    /// Takes the labourer's lease at `now` until `now + dispatch_lease`; `Ok(None)` while another holds it.
    pub(super) async fn take(&self, l: &Labourer, now: Time) -> Result<Option<FlowState>, String> {
        let until = now.plus_secs(self.config.dispatch_lease);
        self.store
            .take_dispatch(&l.id, &self.holder, now, until)
            .await
            .map_err(|e| format!("taking the dispatch lease: {e}"))
    }

    /// Gives the lease back with `flow`; a lease that ran out meanwhile (another orchestrator took it) is reported.
    pub(super) async fn give_back(&self, l: &Labourer, r: &mut LabourerOrchestration, flow: &FlowState) {
        match self.store.give_back_dispatch(&l.id, &self.holder, flow).await {
            Ok(true) => {}
            Ok(false) => r.errors.push(format!(
                "the dispatch lease ran out (`dispatch_lease` {} s) before it was given back, and another \
                 orchestrator took it: this pass's flow-state update is dropped",
                self.config.dispatch_lease
            )),
            Err(e) => r.errors.push(format!("giving back the dispatch lease: {e}")),
        }
    }

    /// Stores what the invocations taught — the adaptive limit's move ([`flow::adapt`]), a throttle's hold
    /// ([`flow::throttle_until`]) — into the flow state as it is now, under the lease.
    pub(super) async fn learn(&self, l: &Labourer, r: &mut LabourerOrchestration, lesson: Lesson, now: Time) {
        let adaptive = l.flow.adaptive.as_ref();
        if adaptive.is_none() && lesson.throttle.is_none() {
            return;
        }
        for _ in 0..LESSON_TRIES {
            match self.take(l, now).await {
                Ok(Some(mut flow)) => {
                    self.apply(l, &mut flow, &lesson, now);
                    self.give_back(l, r, &flow).await;
                    return;
                }
                Ok(None) => tokio::time::sleep(LESSON_WAIT).await,
                Err(e) => {
                    r.errors.push(e);
                    return;
                }
            }
        }
        r.errors.push(
            "other orchestrators held the dispatch lease throughout: this pass's adaptive limit and throttle \
             update is dropped"
                .into(),
        );
    }

    fn apply(&self, l: &Labourer, flow: &mut FlowState, lesson: &Lesson, now: Time) {
        let breaker = &self.config.breaker;
        let learned = flow::learn(flow, &l.flow, lesson, breaker.throttle_hold, breaker.max_hold, now);
        if let Some((before, after)) = learned.adaptive {
            tracing::info!(
                labourer = %l.id, before, after, signals = ?lesson.signals, reports = ?learned.reported,
                "adaptive limit changed"
            );
        }
        if let Some(until) = learned.held_until {
            tracing::warn!(labourer = %l.id, until = until.secs(), "held back: {}", flow.throttle_reason.as_deref().unwrap_or_default());
        }
    }
}
