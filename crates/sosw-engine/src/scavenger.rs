//! Scavenger: archive completed tasks; retry or close expired ones; bring due retries back to the head of the queue
//! (reference §5.6).
//!
//! Every move is the store's atomic conditional move, so a completion that lands while the Scavenger works wins
//! (§7.2, §7.3), and two Scavengers never archive or retry one task twice. Dead-task notifications go out once,
//! at the end of the pass (§7.26). Health metrics are not fetched here (§7.12).

use crate::meta::MetaHandler;
use crate::Wiring;
use futures::future::join_all;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use sosw_core::config::{Config, Labourer, DEAD_TASK_SUBJECT};
use sosw_core::decide::{decide_expired, ExpiredDecision};
use sosw_core::greenfield::head_positions;
use sosw_core::ports::{ArchiveExpect, Notifier, StoreError, TaskStore};
use sosw_core::Greenfield;
use sosw_core::{Essential, MetaAction, Task, Time};
use std::sync::Arc;

/// How many rows a phase reads at a time.
const PAGE: usize = 500;
/// How many moves of one labourer are in flight at once (each is its own atomic, conditional move).
const MOVES_IN_FLIGHT: usize = 64;

#[derive(Debug)]
pub struct Scavenger {
    config: Arc<Config>,
    store: Arc<dyn TaskStore>,
    meta: MetaHandler,
    notifier: Arc<dyn Notifier>,
}

/// What one pass did for one labourer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LabourerScavenge {
    pub labourer_id: String,
    /// Completed tasks moved to the closed table.
    pub archived: u32,
    /// Expired tasks parked in the retry table.
    pub retried: u32,
    /// Expired tasks out of attempts, closed as dead.
    pub dead: u32,
    /// Due retries moved back to the head of the queue.
    pub requeued: u32,
    /// Rows another process moved first (or that a completion overtook).
    pub skipped_conflict: u32,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScavengerReport {
    pub at: i64,
    /// Store requests throttled during the pass (each was retried by the store's client; with several passes at
    /// once in one process, each counts the others' too).
    pub store_throttled: u64,
    pub labourers: Vec<LabourerScavenge>,
}

impl ScavengerReport {
    /// `{"at": ..., "store_throttled": n, "labourers": {"<id>": {...}}}`
    pub fn to_json(&self) -> Value {
        crate::report_json(
            self.at,
            self.store_throttled,
            self.labourers.iter().map(|l| (l.labourer_id.clone(), l)),
        )
    }

    /// Whether the pass moved anything.
    pub fn moved_anything(&self) -> bool {
        self.labourers
            .iter()
            .any(|l| l.archived + l.retried + l.dead + l.requeued > 0)
    }
}

/// How a conditional move ended.
enum Moved {
    Yes,
    Conflict,
    Failed(String),
}

fn moved<T>(r: Result<T, StoreError>) -> Moved {
    match r {
        Ok(_) => Moved::Yes,
        Err(e) if e.is_lost_race() => Moved::Conflict,
        Err(e) => Moved::Failed(e.to_string()),
    }
}

impl Scavenger {
    pub fn new(config: Arc<Config>, wiring: &Wiring) -> Scavenger {
        Scavenger {
            store: wiring.store.clone(),
            meta: wiring.meta_handler(Essential::Scavenger),
            notifier: wiring.notifier.clone(),
            config,
        }
    }

    pub async fn run_once(&self, now: Time) -> ScavengerReport {
        let throttled_before = self.store.throttled_requests();
        let results = join_all(self.config.labourers.iter().map(|l| self.scavenge(l, now))).await;
        let mut report = ScavengerReport {
            at: now.secs(),
            store_throttled: self.store.throttled_requests().saturating_sub(throttled_before),
            labourers: Vec::with_capacity(results.len()),
        };
        let mut dead = Vec::new();
        for (r, messages) in results {
            report.labourers.push(r);
            dead.extend(messages);
        }
        if !dead.is_empty() {
            if let Err(e) = self.notifier.notify(DEAD_TASK_SUBJECT, &dead).await {
                tracing::warn!(error = %e, count = dead.len(), "could not send the dead-task notification");
            }
        }
        report
    }

    async fn scavenge(&self, l: &Labourer, now: Time) -> (LabourerScavenge, Vec<String>) {
        let mut r = LabourerScavenge {
            labourer_id: l.id.clone(),
            ..LabourerScavenge::default()
        };
        let mut dead = Vec::new();
        if let Err(e) = self.archive_completed(l, now, &mut r).await {
            r.errors.push(format!("archiving completed tasks: {e}"));
        }
        if let Err(e) = self.handle_expired(l, now, &mut r, &mut dead).await {
            r.errors.push(format!("handling expired tasks: {e}"));
        }
        if let Err(e) = self.retry_due(l, now, &mut r).await {
            r.errors.push(format!("requeueing due retries: {e}"));
        }
        (r, dead)
    }

    async fn archive_completed(&self, l: &Labourer, now: Time, r: &mut LabourerScavenge) -> Result<(), StoreError> {
        loop {
            let page = self.store.list_completed(&l.id, Greenfield::start(now), PAGE).await?;
            let moves: Vec<(String, ArchiveExpect)> = page
                .iter()
                .map(|t| (t.task_id.clone(), ArchiveExpect::Completed))
                .collect();
            let stamp = self.meta.stamp(now);
            let outcomes = self.store.archive_many_recorded(&moves, now, stamp.as_ref()).await?;
            let results = page.iter().zip(outcomes.into_iter().map(moved));
            let mut progress = false;
            for (t, result) in results {
                match result {
                    Moved::Yes => {
                        r.archived += 1;
                        progress = true;
                    }
                    Moved::Conflict => r.skipped_conflict += 1,
                    Moved::Failed(e) => r.errors.push(format!("archiving `{}`: {e}", t.task_id)),
                }
            }
            if page.len() < PAGE || !progress {
                return Ok(());
            }
        }
    }

    /// Retries or closes one expired task, as [`decide_expired`] says, recording the move with it.
    async fn expire(&self, l: &Labourer, t: &Task, now: Time) -> (Moved, MetaAction) {
        let decision = decide_expired(t.attempts, &l.retry_policy(self.config.retry_backoff), now.secs());
        let record = |action, details| {
            self.meta
                .recording(vec![self.meta.event(&t.task_id, &l.id, action, now, Some(details))])
        };
        match decision {
            ExpiredDecision::Retry {
                delay,
                desired_launch_time,
            } => {
                let events = record(
                    MetaAction::ScheduledForRetry,
                    json!({"delay": delay, "desired_launch_time": desired_launch_time, "attempts": t.attempts}),
                );
                let done = self
                    .store
                    .move_to_retry_recorded(&t.task_id, t.greenfield, desired_launch_time, &events)
                    .await;
                (moved(done), MetaAction::ScheduledForRetry)
            }
            ExpiredDecision::Dead => {
                let events = record(MetaAction::ArchivedDead, json!({"attempts": t.attempts}));
                let expect = ArchiveExpect::Dead {
                    greenfield: t.greenfield,
                };
                let done = self.store.archive_recorded(&t.task_id, expect, now, &events).await;
                (moved(done), MetaAction::ArchivedDead)
            }
        }
    }

    async fn handle_expired(
        &self,
        l: &Labourer,
        now: Time,
        r: &mut LabourerScavenge,
        dead: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let markers = l.markers(now, self.config.greenfield.delta);
        loop {
            let page = self
                .store
                .list_expired(&l.id, markers.start, markers.expired, PAGE)
                .await?;
            let results: Vec<(&Task, (Moved, MetaAction))> = stream::iter(&page)
                .map(|t| async move { (t, self.expire(l, t, now).await) })
                .buffered(MOVES_IN_FLIGHT)
                .collect()
                .await;
            let mut progress = false;
            for (t, (result, action)) in results {
                match result {
                    Moved::Yes => {
                        progress = true;
                        if action == MetaAction::ArchivedDead {
                            r.dead += 1;
                            dead.push(format!("Closing dead task: {} ", t.task_id));
                        } else {
                            r.retried += 1;
                        }
                    }
                    Moved::Conflict => r.skipped_conflict += 1,
                    Moved::Failed(e) => r.errors.push(format!("expired task `{}`: {e}", t.task_id)),
                }
            }
            if page.len() < PAGE || !progress {
                return Ok(());
            }
        }
    }

    async fn retry_due(&self, l: &Labourer, now: Time, r: &mut LabourerScavenge) -> Result<(), StoreError> {
        let due = self
            .store
            .due_retries(&l.id, now, self.config.retry_tasks_limit)
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let oldest = self.store.oldest_queued(&l.id, Greenfield::start(now)).await?;
        let positions = head_positions(oldest, self.config.greenfield.step, due.len());
        for (t, greenfield) in due.iter().zip(positions) {
            let events = self.meta.recording(vec![self.meta.event(
                &t.task_id,
                &l.id,
                MetaAction::ReadyForRetry,
                now,
                Some(json!({"greenfield": greenfield})),
            )]);
            let done = self
                .store
                .requeue_recorded(&t.task_id, &l.id, greenfield, &events)
                .await;
            match moved(done) {
                Moved::Yes => r.requeued += 1,
                Moved::Conflict => r.skipped_conflict += 1,
                Moved::Failed(e) => r.errors.push(format!("requeueing `{}`: {e}", t.task_id)),
            }
        }
        Ok(())
    }
}
