//! The audit trail: one event per thing that happens to a task (reference §5.10).

use crate::time::Time;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happened. The first eight are sosw's action names; the next record what sosw-rs does beyond it; any other
/// action found in a store is kept as it is ([`MetaAction::Foreign`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// An operator paused a labourer's dispatch (recorded under the labourer's trail id, [`labourer_trail`]).
    LabourerPaused,
    /// An operator resumed it.
    LabourerResumed,
    /// An operator set or cleared a labourer's live limit.
    LabourerLimitChanged,
    /// An operator put a task closed as dead back at the head of its queue, for one more attempt.
    RequeuedByOperator,
    /// An action another writer recorded: Python sosw's MetaHandler takes any action (its `Worker` writes
    /// `completed` and `failed`). Shown verbatim, never refused.
    #[serde(untagged)]
    Foreign(String),
}

/// The id under which a labourer's own audit events (an operator's pause, resume, limit) are recorded in the meta
/// table, beside its tasks' events: `labourer:<id>`.
pub fn labourer_trail(labourer_id: &str) -> String {
    format!("labourer:{labourer_id}")
}

impl MetaAction {
    /// The action as a store keeps it: a known name, or a foreign one verbatim.
    pub fn parse(action: &str) -> MetaAction {
        serde_json::from_value(Value::String(action.to_string())).unwrap_or_else(|_| MetaAction::Foreign(action.into()))
    }

    pub fn as_str(&self) -> &str {
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
            MetaAction::LabourerPaused => "labourer_paused",
            MetaAction::LabourerResumed => "labourer_resumed",
            MetaAction::LabourerLimitChanged => "labourer_limit_changed",
            MetaAction::RequeuedByOperator => "requeued_by_operator",
            MetaAction::Foreign(action) => action,
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

/// Who records the audit events of a move, and when: the store writes them with the move (in the same transaction
/// where the backend has transactions; right after it, best-effort, where it does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub author: String,
    pub at: Time,
}

/// What a move records, when it takes effect (the events of [`Stamp`]ed moves are decided here, once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new task was queued.
    Created,
    /// The task was claimed for invocation (its attempt spent).
    Invoked,
    /// A worker reported completion; `closed` when the task was waiting for a retry and closed at once.
    Completed { closed: bool },
    /// A worker reported failure.
    Failed,
    /// Closed: as completed, or as dead.
    Archived { dead: bool },
}

impl Stamp {
    pub fn event(&self, task_id: &str, labourer_id: &str, action: MetaAction, details: Option<Value>) -> MetaEvent {
        MetaEvent {
            task_id: task_id.to_string(),
            labourer_id: labourer_id.to_string(),
            action,
            at: self.at,
            author: self.author.clone(),
            details,
        }
    }

    /// The events a move of `what` on a task records.
    pub fn recorded(&self, task_id: &str, labourer_id: &str, what: Recorded) -> Vec<MetaEvent> {
        let one = |action| vec![self.event(task_id, labourer_id, action, None)];
        match what {
            Recorded::Created => one(MetaAction::Created),
            Recorded::Invoked => one(MetaAction::Invoked),
            Recorded::Completed { closed: false } => one(MetaAction::MarkedAsCompleted),
            Recorded::Completed { closed: true } => vec![
                self.event(task_id, labourer_id, MetaAction::MarkedAsCompleted, None),
                self.event(
                    task_id,
                    labourer_id,
                    MetaAction::Archived,
                    Some(serde_json::json!({
                        "reason": "an expired attempt completed while the task waited for a retry"
                    })),
                ),
            ],
            Recorded::Failed => one(MetaAction::MarkedAsFailed),
            Recorded::Archived { dead: false } => one(MetaAction::Archived),
            Recorded::Archived { dead: true } => one(MetaAction::ArchivedDead),
        }
    }
}

/// The events `stamp` records for `what` happening to a task; none without a stamp (the audit trail is off, or a
/// plain move).
pub fn stamped(stamp: Option<&Stamp>, task_id: &str, labourer_id: &str, what: Recorded) -> Vec<MetaEvent> {
    stamp.map_or_else(Vec::new, |s| s.recorded(task_id, labourer_id, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_move_records() {
        let s = Stamp {
            author: "sosw_orchestrator".into(),
            at: Time::from_millis(1_700_000_000_250),
        };
        let actions = |what| -> Vec<String> {
            s.recorded("t", "w", what)
                .iter()
                .map(|e| e.action.as_str().to_string())
                .collect()
        };
        assert_eq!(actions(Recorded::Created), ["created"]);
        assert_eq!(actions(Recorded::Invoked), ["invoked"]);
        assert_eq!(actions(Recorded::Completed { closed: false }), ["marked_as_completed"]);
        assert_eq!(
            actions(Recorded::Completed { closed: true }),
            ["marked_as_completed", "archived"]
        );
        assert_eq!(actions(Recorded::Failed), ["marked_as_failed"]);
        assert_eq!(actions(Recorded::Archived { dead: false }), ["archived"]);
        assert_eq!(actions(Recorded::Archived { dead: true }), ["archived_dead"]);
        let e = &s.recorded("t", "w", Recorded::Invoked)[0];
        assert_eq!((e.task_id.as_str(), e.labourer_id.as_str(), e.at), ("t", "w", s.at));
        assert_eq!(e.author, "sosw_orchestrator");
    }
}
