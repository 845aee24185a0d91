//! The audit trail: one event per thing that happens to a task (reference §5.10).

use crate::time::Time;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happened. The first eight are sosw's action names; the rest record what sosw-rs does beyond it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaAction {
    Created,
    Invoked,
    MarkedAsCompleted,
    MarkedAsFailed,
    Archived,
    ScheduledForRetry,
    ReadyForRetry,
    ArchivedDead,
    /// The invocation was throttled; the task went back to its queue position and the attempt was refunded.
    InvocationThrottled,
    /// The invocation failed; what happened next is in the following event.
    InvocationFailed,
    /// The task went back to its queue position with its attempt refunded, because the labourer could not take
    /// any task (misconfigured, missing, unreachable) or sosw could not start it (out of resources).
    InvocationHeldBack,
}

impl MetaAction {
    pub fn as_str(self) -> &'static str {
        match self {
            MetaAction::Created => "created",
            MetaAction::Invoked => "invoked",
            MetaAction::MarkedAsCompleted => "marked_as_completed",
            MetaAction::MarkedAsFailed => "marked_as_failed",
            MetaAction::Archived => "archived",
            MetaAction::ScheduledForRetry => "scheduled_for_retry",
            MetaAction::ReadyForRetry => "ready_for_retry",
            MetaAction::ArchivedDead => "archived_dead",
            MetaAction::InvocationThrottled => "invocation_throttled",
            MetaAction::InvocationFailed => "invocation_failed",
            MetaAction::InvocationHeldBack => "invocation_held_back",
        }
    }
}

/// One row of the meta table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaEvent {
    pub task_id: String,
    pub labourer_id: String,
    pub action: MetaAction,
    pub at: Time,
    /// Who wrote it: the essential (`sosw_orchestrator`, …) and, where known, the host or process.
    pub author: String,
    /// Anything else worth keeping (an error message, a greenfield, a delay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}
