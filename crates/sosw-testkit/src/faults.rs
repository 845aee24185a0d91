//! Fault injection: a [`TaskStore`] that fails chosen or random calls, before the call reaches the store (nothing
//! written) or after it took effect (the ambiguous case: written, yet the caller sees an error, as after a lost
//! reply). Engine tests run over it to show that nothing is lost, nothing stays stuck, and errors are reported
//! per labourer.

use async_trait::async_trait;
use sosw_core::breaker::LabourerState;
use sosw_core::flow::{DispatchRecord, FlowState, LabourerControl, Reports};
use sosw_core::meta::{MetaEvent, Stamp};
use sosw_core::ports::{
    ArchiveExpect, Claim, Completion, CreateReport, JobProgress, LabourerCounts, LabourerStore, StoreError,
    StoreResult, TaskQuery, TaskStore,
};
use sosw_core::{Greenfield, Invocation, Markers, NewTask, StoredTask, Task, Time, WorkerReport};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// When an injected failure strikes.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails without reaching the store.
    Before,
    /// The call takes effect, then fails.
    After,
}

/// A [`TaskStore`] over `inner` that fails calls on demand.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn TaskStore>,
    /// Faults for the next calls, in order (`None`: no fault for that call).
    script: Mutex<Vec<Option<Fault>>>,
    /// Faults for the next calls of a named operation (`claim`, `archive_many`, …).
    named: Mutex<Vec<(&'static str, Fault)>>,
    /// Per mille of the other calls that fail at random (seeded; half before, half after for writes).
    random_per_mille: AtomicU64,
    rng: AtomicU64,
    /// How many faults were injected.
    pub injected: AtomicU64,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn TaskStore>, seed: u64) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            script: Mutex::new(Vec::new()),
            named: Mutex::new(Vec::new()),
            random_per_mille: AtomicU64::new(0),
            rng: AtomicU64::new(seed | 1),
            injected: AtomicU64::new(0),
        })
    }

    /// The next calls meet these faults, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Option<Fault>>) {
        let mut s = lock(&self.script);
        let mut next: Vec<Option<Fault>> = faults.into_iter().collect();
        next.reverse();
        next.extend(s.drain(..));
        *s = next;
    }

    /// The next call of the operation `op` (the port method's name without `_recorded`) meets `fault`.
    pub fn fail_next(&self, op: &'static str, fault: Fault) {
        lock(&self.named).push((op, fault));
    }

    /// Every other call fails with probability `per_mille / 1000` (0 turns random faults off).
    pub fn fail_randomly(&self, per_mille: u64) {
        self.random_per_mille.store(per_mille, Ordering::SeqCst);
    }

    /// No more faults: the scripts are emptied and random faults are off.
    pub fn heal(&self) {
        lock(&self.script).clear();
        lock(&self.named).clear();
        self.fail_randomly(0);
    }

    fn next_random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::SeqCst);
        x
    }

    /// The fault for this call of `op`, if any; reads never fail "after".
    fn roll(&self, op: &str, write: bool) -> Option<Fault> {
        let named = {
            let mut named = lock(&self.named);
            named.iter().position(|(o, _)| *o == op).map(|i| named.remove(i).1)
        };
        let fault = match named {
            Some(f) => Some(f),
            None => match lock(&self.script).pop() {
                Some(scripted) => scripted,
                None => {
                    let p = self.random_per_mille.load(Ordering::SeqCst);
                    let r = self.next_random();
                    let when = if write && r % 2 == 0 {
                        Fault::After
                    } else {
                        Fault::Before
                    };
                    (p > 0 && r % 1000 < p).then_some(when)
                }
            },
        };
        let fault = match fault {
            Some(Fault::After) if !write => Some(Fault::Before),
            f => f,
        };
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        fault
    }

    async fn read<T>(&self, op: &str, call: impl std::future::Future<Output = StoreResult<T>>) -> StoreResult<T> {
        match self.roll(op, false) {
            Some(_) => Err(injected(op, Fault::Before)),
            None => call.await,
        }
    }

    async fn write<T>(&self, op: &str, call: impl std::future::Future<Output = StoreResult<T>>) -> StoreResult<T> {
        match self.roll(op, true) {
            Some(Fault::Before) => Err(injected(op, Fault::Before)),
            Some(Fault::After) => {
                let _ = call.await;
                Err(injected(op, Fault::After))
            }
            None => call.await,
        }
    }
}

fn injected(op: &str, when: Fault) -> StoreError {
    StoreError::Unavailable(match when {
        Fault::Before => format!("injected fault: `{op}` failed before reaching the store"),
        Fault::After => format!("injected fault: `{op}` took effect, then its reply was lost"),
    })
}

#[async_trait]
impl TaskStore for FaultyStore {
    async fn init(&self) -> StoreResult<()> {
        self.inner.init().await
    }

    async fn create_tasks_recorded(
        &self,
        tasks: &[NewTask],
        step: i64,
        now: Time,
        stamp: Option<&Stamp>,
    ) -> StoreResult<CreateReport> {
        self.write(
            "create_tasks",
            self.inner.create_tasks_recorded(tasks, step, now, stamp),
        )
        .await
    }

    async fn next_queued(&self, labourer: &str, start: Greenfield, limit: usize) -> StoreResult<Vec<Task>> {
        self.read("next_queued", self.inner.next_queued(labourer, start, limit))
            .await
    }

    async fn claim_recorded(
        &self,
        labourer: &str,
        tasks: &[(String, Greenfield)],
        start: Greenfield,
        invoked_greenfield: Greenfield,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Vec<Claim>> {
        let call = self
            .inner
            .claim_recorded(labourer, tasks, start, invoked_greenfield, stamp);
        self.write("claim", call).await
    }

    async fn release_claim_recorded(
        &self,
        task_id: &str,
        invoked_greenfield: Greenfield,
        previous_greenfield: Greenfield,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        let call = self
            .inner
            .release_claim_recorded(task_id, invoked_greenfield, previous_greenfield, events);
        self.write("release_claim", call).await
    }

    async fn count_running(&self, labourer: &str, expired: Greenfield) -> StoreResult<u64> {
        self.read("count_running", self.inner.count_running(labourer, expired))
            .await
    }

    async fn list_expired(
        &self,
        labourer: &str,
        start: Greenfield,
        expired: Greenfield,
        limit: usize,
    ) -> StoreResult<Vec<Task>> {
        self.read("list_expired", self.inner.list_expired(labourer, start, expired, limit))
            .await
    }

    async fn list_completed(&self, labourer: &str, now: Greenfield, limit: usize) -> StoreResult<Vec<Task>> {
        self.read("list_completed", self.inner.list_completed(labourer, now, limit))
            .await
    }

    async fn complete_recorded(
        &self,
        task_id: &str,
        now: Time,
        report: &WorkerReport,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Completion> {
        self.write("complete", self.inner.complete_recorded(task_id, now, report, stamp))
            .await
    }

    async fn fail_recorded(&self, task_id: &str, report: &WorkerReport, stamp: Option<&Stamp>) -> StoreResult<Task> {
        self.write("fail", self.inner.fail_recorded(task_id, report, stamp))
            .await
    }

    async fn archive_recorded(
        &self,
        task_id: &str,
        expect: ArchiveExpect,
        now: Time,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        self.write("archive", self.inner.archive_recorded(task_id, expect, now, events))
            .await
    }

    async fn archive_many_recorded(
        &self,
        moves: &[(String, ArchiveExpect)],
        now: Time,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.write("archive_many", self.inner.archive_many_recorded(moves, now, stamp))
            .await
    }

    async fn move_to_retry_recorded(
        &self,
        task_id: &str,
        expected_greenfield: Greenfield,
        desired_launch_time: i64,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        let call = self
            .inner
            .move_to_retry_recorded(task_id, expected_greenfield, desired_launch_time, events);
        self.write("move_to_retry", call).await
    }

    async fn due_retries(&self, labourer: &str, now: Time, limit: usize) -> StoreResult<Vec<Task>> {
        self.read("due_retries", self.inner.due_retries(labourer, now, limit))
            .await
    }

    async fn requeue_recorded(
        &self,
        task_id: &str,
        labourer: &str,
        greenfield: Greenfield,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        self.write(
            "requeue",
            self.inner.requeue_recorded(task_id, labourer, greenfield, events),
        )
        .await
    }

    async fn revive_recorded(&self, task_id: &str, greenfield: Greenfield, events: &[MetaEvent]) -> StoreResult<()> {
        self.write(
            "revive_recorded",
            self.inner.revive_recorded(task_id, greenfield, events),
        )
        .await
    }

    async fn heartbeat(
        &self,
        task_id: &str,
        expired: Greenfield,
        greenfield: Greenfield,
        of: Option<Invocation>,
    ) -> StoreResult<()> {
        self.write("heartbeat", self.inner.heartbeat(task_id, expired, greenfield, of))
            .await
    }

    async fn oldest_queued(&self, labourer: &str, now: Greenfield) -> StoreResult<Option<Greenfield>> {
        self.read("oldest_queued", self.inner.oldest_queued(labourer, now))
            .await
    }

    async fn newest_queued(&self, labourer: &str, now: Greenfield) -> StoreResult<Option<Greenfield>> {
        self.read("newest_queued", self.inner.newest_queued(labourer, now))
            .await
    }

    async fn get(&self, task_id: &str) -> StoreResult<Option<StoredTask>> {
        self.read("get", self.inner.get(task_id)).await
    }

    async fn list(&self, query: &TaskQuery) -> StoreResult<Vec<StoredTask>> {
        self.read("list", self.inner.list(query)).await
    }

    async fn has_task(&self, labourer: &str, task_id: &str) -> StoreResult<bool> {
        self.read("has_task", self.inner.has_task(labourer, task_id)).await
    }

    async fn labourer_ids(&self) -> StoreResult<Vec<String>> {
        self.read("labourer_ids", self.inner.labourer_ids()).await
    }

    async fn rescan_labourers(&self, now: Time) -> StoreResult<Vec<String>> {
        self.read("rescan_labourers", self.inner.rescan_labourers(now)).await
    }

    async fn counts(&self, labourer: &str, markers: &Markers) -> StoreResult<LabourerCounts> {
        self.read("counts", self.inner.counts(labourer, markers)).await
    }

    async fn counts_many(&self, labourers: &[(String, Markers)]) -> StoreResult<Vec<LabourerCounts>> {
        self.read("counts_many", self.inner.counts_many(labourers)).await
    }

    async fn save_job(&self, job: &JobProgress) -> StoreResult<()> {
        self.write("save_job", self.inner.save_job(job)).await
    }

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<JobProgress>> {
        self.read("get_job", self.inner.get_job(job_id)).await
    }

    async fn list_jobs(&self, limit: usize) -> StoreResult<Vec<JobProgress>> {
        self.read("list_jobs", self.inner.list_jobs(limit)).await
    }
}

#[async_trait]
impl LabourerStore for FaultyStore {
    async fn labourer_states(&self) -> StoreResult<Vec<LabourerState>> {
        self.read("labourer_states", self.inner.labourer_states()).await
    }

    async fn save_labourer_state(&self, state: &LabourerState) -> StoreResult<()> {
        self.write("save_labourer_state", self.inner.save_labourer_state(state))
            .await
    }

    async fn clear_labourer_state(&self, labourer_id: &str) -> StoreResult<()> {
        self.write("clear_labourer_state", self.inner.clear_labourer_state(labourer_id))
            .await
    }

    async fn labourer_controls(&self) -> StoreResult<Vec<LabourerControl>> {
        self.read("labourer_controls", self.inner.labourer_controls()).await
    }

    async fn save_labourer_control(&self, control: &LabourerControl) -> StoreResult<()> {
        self.write("save_labourer_control", self.inner.save_labourer_control(control))
            .await
    }

    async fn take_dispatch(
        &self,
        labourer_id: &str,
        holder: &str,
        now: Time,
        until: Time,
    ) -> StoreResult<Option<FlowState>> {
        self.write(
            "take_dispatch",
            self.inner.take_dispatch(labourer_id, holder, now, until),
        )
        .await
    }

    async fn give_back_dispatch(&self, labourer_id: &str, holder: &str, flow: &FlowState) -> StoreResult<bool> {
        self.write(
            "give_back_dispatch",
            self.inner.give_back_dispatch(labourer_id, holder, flow),
        )
        .await
    }

    async fn add_reports(&self, labourer_id: &str, reports: &Reports) -> StoreResult<()> {
        self.write("add_reports", self.inner.add_reports(labourer_id, reports))
            .await
    }

    async fn dispatch_records(&self) -> StoreResult<Vec<DispatchRecord>> {
        self.read("dispatch_records", self.inner.dispatch_records()).await
    }
}
