//! The Scheduler's pure core: a business *job* in, the payloads of its tasks out (reference §5.9).
//!
//! - [`extract_job`]: the event (`{"job": ...}`, a flat job, or JSON text of either) → a [`Job`].
//! - [`Schema`]: the `chunkable_attrs` to chunk by, picked from config (`job_schema_name` → `job_schema_variants`).
//! - [`chunk`]: dates first (`period`, `isolate_days`), then each chunkable attribute as a level of a tree walk.
//!
//! The output format is Python sosw's, so existing workers keep working: chunked attributes appear in plural form
//! with list values (`"sections": ["s1"]`), keys of nested objects are lifted to the top level, `isolate_*` and
//! `max_*_per_batch` flags stay, `period` and `isolate_days` go. What is fixed (reference §7.9–7.11): an empty
//! `chunkable_attrs` schedules the job as one task; the singular key (`section`) does not duplicate tasks; sibling
//! keys are never dropped; `"False"` is false; a level's own flags override inherited ones; a flat list at a
//! non-last level is fine; the order is deterministic; a `period` must match as a whole; `last_week` is right on
//! Sundays.

mod capacity;
mod chunk;
mod dates;
mod ids;
mod job;
mod resume;

pub use capacity::{queue_room, to_write};
pub use chunk::{chunk, chunk_each, count, Counted, Schema};
pub use dates::{period_dates, Date};
pub use ids::{job_id_of, task_id, TaskIds};
pub use job::{extract_job, trim_arn_to_name, Job};
pub use resume::{already_written, stop_writing_at};

/// Why a job cannot be scheduled. Every variant names the offending key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("the job must be a JSON object (or the JSON text of one), got {0}")]
    NotAnObject(String),
    #[error("the job has no `lambda_name` (the labourer to schedule tasks for)")]
    MissingLabourer,
    #[error("`{key}` must be {expected}, got {got}")]
    BadValue { key: String, expected: String, got: String },
    #[error("unknown `job_schema_name` `{0}`: it is not in `job_schema_variants`")]
    UnknownSchema(String),
    #[error(
        "unsupported `period` `{0}`: use last_N_days, N_days_back, yesterday, today, previous_N_days, last_week or \
         YYYY-MM-DD..YYYY-MM-DD"
    )]
    UnsupportedPeriod(String),
    #[error("both `{singular}` and `{plural}` are in the job at `{path}`; give one")]
    Ambiguous {
        path: String,
        singular: String,
        plural: String,
    },
    #[error("`{path}`: {reason}")]
    Invalid { path: String, reason: String },
}
