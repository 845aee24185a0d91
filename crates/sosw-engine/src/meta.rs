//! MetaHandler: writes the audit trail, best-effort (reference §5.10, fixing §7.21: a failed meta write is logged
//! and never aborts the action it records, which has already happened).

use serde_json::Value;
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
