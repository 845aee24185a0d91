//! TaskManager's creation side: queue new tasks for known labourers and record `created`.

use crate::meta::MetaHandler;
use crate::EngineError;
use sosw_core::config::Config;
use sosw_core::ports::{CreateReport, StoreError, TaskStore};
use sosw_core::{NewTask, Time};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct TaskManager {
    config: Arc<Config>,
    store: Arc<dyn TaskStore>,
    meta: MetaHandler,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Config(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TaskManager {
    pub fn new(config: Arc<Config>, store: Arc<dyn TaskStore>, meta: MetaHandler) -> TaskManager {
        TaskManager { config, store, meta }
    }

    /// Appends `tasks` to their labourers' queues. Every labourer must be configured; nothing is written otherwise.
    pub async fn create(&self, tasks: &[NewTask], now: Time) -> Result<CreateReport, CreateError> {
        if let Some(t) = tasks.iter().find(|t| self.config.labourer(&t.labourer_id).is_none()) {
            return Err(EngineError::UnknownLabourer(t.labourer_id.clone()).into());
        }
        let stamp = self.meta.stamp(now);
        let report = self
            .store
            .create_tasks_recorded(tasks, self.config.greenfield.step, now, stamp.as_ref())
            .await?;
        Ok(report)
    }
}
