//! The ports: what the engine needs from the outside world, in domain verbs.
//!
//! Every backend implements the whole of a port; backend limits (transaction sizes, pagination, busy timeouts)
//! stay inside the adapter. Conditional moves are atomic: losing a race is a typed [`StoreError::Conflict`] (or a
//! [`Claim::Lost`]), never a silent double.
//!
//! - `store.rs`: the task tables and the audit trail (`TaskStore`, `MetaSink`);
//! - `labourers.rs`: what is stored per labourer (`LabourerStore`: breaker, controls, dispatch lease);
//! - `error.rs`: `StoreError` and the refusals every store gives;
//! - here: the invokers, metric sources, notifiers and the supervisors' reporter.

mod error;
mod labourers;
mod store;

pub use error::*;
pub use labourers::*;
pub use store::*;

use crate::config::{Labourer, MetricDetails};
use crate::decide::FailureKind;
use crate::task::{Invocation, ReportKind, Task, WorkerReport};
use crate::time::Time;
use async_trait::async_trait;
use std::fmt::Debug;
use std::time::Duration;

/// What an invocation achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum InvokeOutcome {
    /// The worker accepted the task and will report (or its supervisor will) later.
    Accepted,
    /// The worker ran synchronously and reported on the spot.
    Finished(ReportKind, WorkerReport),
}

/// A failed invocation, classified: the kind decides what happens to the task ([`crate::decide::decide_after_failure`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct InvokeError {
    pub kind: FailureKind,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl InvokeError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> InvokeError {
        InvokeError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// How one labourer is reached (a local process, an HTTP endpoint, a Lambda function).
#[async_trait]
pub trait Invoker: Send + Sync + Debug {
    /// Delivers `event` (the flat worker event as JSON text) for `task`. Must not wait for an asynchronous worker
    /// to finish.
    async fn invoke(&self, task: &Task, event: &str) -> Result<InvokeOutcome, InvokeError>;
}

/// The credential a worker reports with: bound to one task's one invocation (its [`Invocation::number`], which never
/// repeats), so that a worker can report only the task it was sent, and only for that invocation (`sosw run`'s
/// server checks it, and the store's write checks the invocation again).
pub trait ReportSigner: Send + Sync + Debug {
    fn sign(&self, task_id: &str, invocation: Invocation) -> String;
}

/// The server's secrets that may be in `sosw run`'s environment (API tokens, the report tokens' secret): never
/// passed on to a worker process.
pub const SECRET_ENV_VARS: [&str; 4] = [
    "SOSW_READ_TOKEN",
    "SOSW_WRITE_TOKEN",
    "SOSW_ADMIN_TOKEN",
    "SOSW_REPORT_SECRET",
];

/// The environment variable and HTTP header that give a worker its report token.
pub const REPORT_TOKEN_VAR: &str = "SOSW_REPORT_TOKEN";
pub const REPORT_TOKEN_HEADER: &str = "X-Sosw-Report-Token";

/// Builds the invoker of each labourer; the binaries pick the implementation.
pub trait InvokerFactory: Send + Sync + Debug {
    fn invoker_for(&self, labourer: &Labourer) -> Result<std::sync::Arc<dyn Invoker>, String>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MetricError(pub String);

/// Where health metric values come from.
#[async_trait]
pub trait MetricSource: Send + Sync + Debug {
    async fn fetch(&self, details: &MetricDetails, now: Time) -> Result<f64, MetricError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// Where dead-task notifications go (SNS in AWS).
#[async_trait]
pub trait Notifier: Send + Sync + Debug {
    /// One notification carrying `messages`, as SnsManager commits its queue.
    async fn notify(&self, subject: &str, messages: &[String]) -> Result<(), NotifyError>;
}

/// How a supervisor that watched a worker finish reports the outcome (the engine's WorkerAssistant implements it).
#[async_trait]
pub trait TaskReporter: Send + Sync + Debug {
    async fn report(&self, task_id: &str, kind: ReportKind, report: WorkerReport) -> StoreResult<()>;
}
