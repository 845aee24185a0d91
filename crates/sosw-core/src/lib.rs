//! The pure core of sosw: domain types, every decision about a task, and the ports the engine talks through.
//!
//! Nothing in this crate performs I/O, starts an async runtime or reads the wall clock (only [`SystemClock`] does,
//! and nothing here calls it). Every decision is a function of data, `now` and [`Config`]:
//!
//! - [`greenfield`]: the state encoding of a task (queue position or invocation time + delta), labourer markers,
//!   classification and queue placement;
//! - [`ecology`]: eco statuses, feelings and the health of a labourer;
//! - [`decide`]: how many tasks to invoke, retry-or-die, what to do after a failed invocation;
//! - [`classify`]: whose fault a failed invocation is (the task's, the labourer's, ours);
//! - [`breaker`]: holding back a labourer whose invocations fail for reasons that are not the tasks';
//! - [`flow`]: flow control beyond sosw: pauses, live limits, adaptive concurrency, rate limits, Retry-After;
//! - [`check`]: the rules of a consistent store (`sosw check`);
//! - [`moves`]: what a store does with a move (the completion plan, the refusals), decided once for every backend;
//! - [`payload`]: task payload construction and the flat worker event;
//! - [`schedule`]: a business job → the payloads of its tasks (dates, chunking);
//! - [`config`]: the sosw JSON config shape, deep merge, validation with key paths;
//! - [`ports`]: the traits adapters implement (`TaskStore`, `MetaSink`, `Invoker`, `MetricSource`, `Notifier`,
//!   `TaskReporter`).

pub mod breaker;
pub mod check;
pub mod classify;
pub mod config;
pub mod decide;
pub mod ecology;
pub mod flow;
pub mod greenfield;
pub mod meta;
pub mod moves;
pub mod payload;
pub mod ports;
pub mod schedule;
pub mod task;
pub mod time;

pub use config::{Config, ConfigError, ConfigErrors, Essential, Labourer};
pub use ecology::EcoStatus;
pub use greenfield::{Greenfield, Markers, TaskState};
pub use meta::{MetaAction, MetaEvent};
pub use task::{Invocation, NewTask, Place, StoredTask, Task, WorkerReport};
pub use time::{Clock, SystemClock, Time};
