//! Scheduler: a business job → tasks at the end of its labourer's queue (reference §5.9).
//!
//! Beyond Python sosw:
//! - **validated before writing**: [`Scheduler::plan`] counts the job's tasks from its structure, without building
//!   them (time proportional to the job's size, not its number of tasks), which also validates it; an invalid job
//!   fails naming the offending key, a job over `schedule_max_tasks` or one whose missing tasks do not fit in the
//!   queue is refused at once, and nothing is written;
//! - **streaming**: [`Scheduler::run`] generates tasks on a blocking thread and hands them over in batches through a
//!   bounded channel, so memory does not grow with the job;
//! - **idempotent and resumable**: task ids derive from (job id, index) and the store skips ids it has, so a
//!   resubmitted job, or one re-run after a crash, creates only the missing tasks, in order — and only those count
//!   against the queue's room;
//! - **progress** is recorded in the store per batch (`sosw job show`).

use crate::tasks::{CreateError, TaskManager};
use crate::{EngineError, Wiring};
use serde::Serialize;
use serde_json::{Map, Value};
use sosw_core::config::Config;
use sosw_core::ports::{JobProgress, StoreError, TaskStore};
use sosw_core::schedule::{
    already_written, chunk_each, count, extract_job, job_id_of, queue_room, to_write, Date, JobError, Schema, TaskIds,
};
use sosw_core::Greenfield;
use sosw_core::{Clock, NewTask, Time};
use std::ops::ControlFlow;
use std::sync::Arc;

#[derive(Debug)]
pub struct Scheduler {
    config: Arc<Config>,
    store: Arc<dyn TaskStore>,
    tasks: TaskManager,
}

/// A validated job, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub job_id: String,
    pub labourer: String,
    pub schema: Schema,
    pub today: Date,
    pub body: Map<String, Value>,
    /// The tasks the job makes.
    pub total: u64,
    /// The first tasks of the job found in the store when it was planned (an earlier run of it): what it will not
    /// write again.
    pub present: u64,
    /// Parts of the job that are valid but probably not what was meant (a chunking flag that has no effect).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid job: {0}")]
    Job(#[from] JobError),
    #[error(transparent)]
    Config(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    QueueFull(String),
    #[error(
        "the job makes {total} tasks, more than `schedule_max_tasks` ({max}): split it into smaller jobs (by \
         `period`, or by the values of its outer level), or raise `schedule_max_tasks`"
    )]
    TooBig { total: u64, max: u64 },
    #[error("the task generator stopped unexpectedly: {0}")]
    Generator(String),
}

impl From<CreateError> for ScheduleError {
    fn from(e: CreateError) -> ScheduleError {
        match e {
            CreateError::Config(e) => ScheduleError::Config(e),
            CreateError::Store(e) => ScheduleError::Store(e),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleReport {
    pub job_id: String,
    pub labourer_id: String,
    pub total: u64,
    /// Created by this run.
    pub created: u64,
    /// Already in the store (an earlier run of the same job).
    pub existing: u64,
    /// Whether every task of the job is in the store; `false` when the run stopped at its deadline
    /// ([`Scheduler::run_until`]) and the job must be resumed.
    pub finished: bool,
}

impl Scheduler {
    pub fn new(config: Arc<Config>, wiring: &Wiring) -> Scheduler {
        Scheduler {
            tasks: wiring.task_manager(config.clone()),
            store: wiring.store.clone(),
            config,
        }
    }

    /// Reads a Scheduler event (`{"job": ...}` or the job itself), checks its labourer and schema, and walks every
    /// task once to validate and count them. Writes nothing.
    pub async fn plan(&self, event: &Value, now: Time) -> Result<Plan, ScheduleError> {
        self.plan_for(event, now, None).await
    }

    /// [`Scheduler::plan`] with the day relative periods (`today`, `last_3_days`, ...) resolve against: `None` for
    /// the day of `now`, or the day a job was first planned on when it is resumed, so that a job continued after
    /// midnight still makes the same tasks with the same ids.
    pub async fn plan_for(&self, event: &Value, now: Time, today: Option<Date>) -> Result<Plan, ScheduleError> {
        let job = extract_job(event)?;
        if self.config.labourer(&job.labourer).is_none() {
            return Err(EngineError::UnknownLabourer(job.labourer).into());
        }
        let schema_name = match job.body.get("job_schema_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(JobError::BadValue {
                    key: "job_schema_name".into(),
                    expected: "the name of a job schema variant".into(),
                    got: other.to_string(),
                }
                .into())
            }
        };
        let schema = self.config.job_schemas.schema(schema_name.as_deref())?;
        let today = today.unwrap_or_else(|| Date::at(now, self.config.utc_offset_secs));
        let job_id = job
            .job_id
            .clone()
            .unwrap_or_else(|| job_id_of(&job.labourer, &job.body, &today.to_string()));
        let (body, counted_schema) = (job.body.clone(), schema.clone());
        let counted = tokio::task::spawn_blocking(move || count(&body, &counted_schema, today))
            .await
            .map_err(|e| ScheduleError::Generator(e.to_string()))??;
        let total = counted.tasks;
        let max = self.config.schedule_max_tasks;
        if total > max {
            return Err(ScheduleError::TooBig { total, max });
        }
        // Only what will be written must fit in the queue: a resumed or resubmitted job has some or all of its tasks
        // in the store already. (The store checks again per batch, against concurrent writers.)
        let present = self.present(&job.labourer, &job_id, total).await?;
        let writes = to_write(total, present);
        let newest = self.store.newest_queued(&job.labourer, Greenfield::start(now)).await?;
        let step = self.config.greenfield.step;
        let room = queue_room(newest, step, now);
        if writes > room {
            let there = if present > 0 {
                format!(" ({present} of its {total} are in the store already)")
            } else {
                String::new()
            };
            return Err(ScheduleError::QueueFull(format!(
                "the queue of labourer `{}` is full: this job writes {writes} tasks{there} and the queue has room \
                 for {room} more at `greenfield_task_step` {step} (positions must stay below the current time); \
                 drain the queue or lower `greenfield_task_step`",
                job.labourer
            )));
        }
        Ok(Plan {
            job_id,
            labourer: job.labourer,
            schema,
            today,
            body: job.body,
            total,
            present,
            warnings: counted.warnings,
        })
    }

    /// How many of the first tasks of job `job_id` (of `total`) are in the store. The Scheduler writes a job's tasks
    /// in order, batch after batch, so what the store has of a job is a prefix of it: the tasks its progress
    /// records (certainly there), then possibly more (a batch committed just before a crash, before its progress
    /// was saved; or progress that was never recorded). The end of the prefix is found by looking tasks up from
    /// there at growing distances, then by bisection: O(log total) reads, each [`TaskStore::has_task`] of `labourer`'s.
    async fn present(&self, labourer: &str, job_id: &str, total: u64) -> Result<u64, ScheduleError> {
        let previous = self.store.get_job(job_id).await?;
        let mut there = already_written(previous.as_ref(), total);
        let ids = TaskIds::new(job_id);
        let has = |i: u64| {
            let id = ids.id(i);
            async move { self.store.has_task(labourer, &id).await }
        };
        if there >= total || !has(there).await? {
            return Ok(there);
        }
        // Task `there` is in the store: gallop to a missing one (or past the end).
        let mut gap = 1u64;
        let missing = loop {
            let probe = there.saturating_add(gap);
            if probe >= total {
                if has(total - 1).await? {
                    return Ok(total);
                }
                break total - 1;
            }
            if !has(probe).await? {
                break probe;
            }
            there = probe;
            gap = gap.saturating_mul(2);
        };
        // `there` is in the store, `missing` is not: bisect.
        let (mut lo, mut hi) = (there, missing);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if has(mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(hi)
    }

    /// Every task of `plan`, in order, with its id: what [`Scheduler::run`] writes (`--dry-run`).
    pub fn each_task(plan: &Plan, emit: &mut dyn FnMut(NewTask) -> ControlFlow<()>) -> Result<u64, JobError> {
        let mut index = 0u64;
        let ids = TaskIds::new(&plan.job_id);
        chunk_each(&plan.body, &plan.schema, plan.today, &mut |payload| {
            let t = NewTask {
                task_id: ids.id(index),
                labourer_id: plan.labourer.clone(),
                payload: Value::Object(payload).to_string(),
            };
            index += 1;
            emit(t)
        })
    }

    /// Writes the tasks of `plan` in batches, skipping those already there, and records progress after each batch
    /// (`on_progress` sees it too).
    pub async fn run(
        &self,
        plan: &Plan,
        clock: &dyn Clock,
        on_progress: impl FnMut(&JobProgress),
    ) -> Result<ScheduleReport, ScheduleError> {
        self.run_until(plan, clock, None, on_progress).await
    }

    /// [`Scheduler::run`] that stops after the first batch that ends at or after `stop_at` (by the clock), with
    /// `finished: false` and its progress recorded, so that a later run of the same plan continues where it stopped:
    /// the tasks an earlier run recorded as scheduled (or that planning found in the store) are skipped without
    /// reading the store, the rest are checked.
    ///
    /// A run takes time, so it reads `clock` itself: for the progress it records after each batch, and for
    /// `stop_at`.
    pub async fn run_until(
        &self,
        plan: &Plan,
        clock: &dyn Clock,
        stop_at: Option<Time>,
        mut on_progress: impl FnMut(&JobProgress),
    ) -> Result<ScheduleReport, ScheduleError> {
        let started = clock.now();
        let previous = self.store.get_job(&plan.job_id).await?;
        // What an earlier run recorded, or what planning found in the store: skipped without being looked up again.
        let done = already_written(previous.as_ref(), plan.total).max(plan.present.min(plan.total));
        let mut progress = JobProgress {
            job_id: plan.job_id.clone(),
            labourer_id: plan.labourer.clone(),
            total: plan.total,
            scheduled: done,
            started_at: previous.map_or(started, |p| p.started_at),
            updated_at: started,
            finished_at: None,
        };
        self.store.save_job(&progress).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewTask>>(2);
        let producer_plan = plan.clone();
        let batch_size = self.config.schedule_batch_size.max(1);
        let producer = tokio::task::spawn_blocking(move || {
            let capacity = batch_size.min(100_000);
            let mut batch = Vec::with_capacity(capacity);
            let mut skip = done;
            let result = Scheduler::each_task(&producer_plan, &mut |t| {
                if skip > 0 {
                    skip -= 1;
                    return ControlFlow::Continue(());
                }
                batch.push(t);
                if batch.len() >= batch_size
                    && tx
                        .blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(capacity)))
                        .is_err()
                {
                    // The writer stopped (it failed): stop generating.
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            result
        });
        let mut report = ScheduleReport {
            job_id: plan.job_id.clone(),
            labourer_id: plan.labourer.clone(),
            total: plan.total,
            created: 0,
            existing: done,
            finished: false,
        };
        let mut failure = None;
        while let Some(batch) = rx.recv().await {
            let now = clock.now();
            match self.tasks.create(&batch, now).await {
                Ok(r) => {
                    report.created += r.created.len() as u64;
                    report.existing += r.existing.len() as u64;
                    progress.scheduled += batch.len() as u64;
                    progress.updated_at = now;
                    self.store.save_job(&progress).await?;
                    on_progress(&progress);
                    if stop_at.is_some_and(|at| clock.now() >= at) && progress.scheduled < plan.total {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(rx);
        let generated = producer.await.map_err(|e| ScheduleError::Generator(e.to_string()))?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        generated?;
        if progress.scheduled < plan.total && stop_at.is_some_and(|at| clock.now() >= at) {
            return Ok(report);
        }
        if progress.scheduled != plan.total {
            return Err(ScheduleError::Generator(format!(
                "the job made {} tasks this time and {} when it was planned",
                progress.scheduled, plan.total
            )));
        }
        progress.finished_at = Some(clock.now());
        progress.updated_at = progress.finished_at.unwrap_or(progress.updated_at);
        self.store.save_job(&progress).await?;
        on_progress(&progress);
        report.finished = true;
        Ok(report)
    }
}
