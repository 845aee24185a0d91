//! MetaHandler: the audit trail (reference §5.10). The events of a move are handed to the store with the move
//! ([`TaskStore`](sosw_core::ports::TaskStore)'s audit rule: in its transaction on SQLite, right after it on
//! DynamoDB); events that record no move (an invocation whose outcome is unknown) are posted on their own,
//! best-effort, fixing §7.21: a failed meta write is logged and never aborts the action it records.

use serde_json::Value;
use sosw_core::meta::Stamp;
use sosw_core::ports::MetaSink;
use sosw_core::{MetaAction, MetaEvent, Time};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct MetaHandler {
    sink: Option<Arc<dyn MetaSink>>,
    author: String,
}

impl MetaHandler {
    /// `sink: None` (config `meta_handler_config.write_meta_to_ddb: false`) only logs events at trace level.
    pub fn new(sink: Option<Arc<dyn MetaSink>>, author: impl Into<String>) -> MetaHandler {
        MetaHandler {
            sink,
            author: author.into(),
        }
    }

    /// Who records the events of the moves made at `now` (`None` when the audit trail is off).
    pub fn stamp(&self, now: Time) -> Option<Stamp> {
        self.sink.as_ref().map(|_| Stamp {
            author: self.author.clone(),
            at: now,
        })
    }

    /// `events`, or none when the audit trail is off: what a single-task move is given to record.
    pub fn recording(&self, events: Vec<MetaEvent>) -> Vec<MetaEvent> {
        if self.sink.is_some() {
            events
        } else {
            Vec::new()
        }
    }

    pub fn event(
        &self,
        task_id: &str,
        labourer_id: &str,
        action: MetaAction,
        at: Time,
        details: Option<Value>,
    ) -> MetaEvent {
        MetaEvent {
            task_id: task_id.to_string(),
            labourer_id: labourer_id.to_string(),
            action,
            at,
            author: self.author.clone(),
            details,
        }
    }

    pub async fn post(&self, events: Vec<MetaEvent>) {
        if events.is_empty() {
            return;
        }
        let Some(sink) = &self.sink else {
            tracing::trace!(
                count = events.len(),
                "meta events not stored (write_meta_to_ddb is off)"
            );
            return;
        };
        if let Err(e) = sink.record(&events).await {
            tracing::warn!(count = events.len(), error = %e, "could not write meta events; the actions they record stand");
        }
    }
}
