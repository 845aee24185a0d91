//! The sosw essentials over the core ports: [`Orchestrator`], [`Scavenger`], [`Scheduler`], [`WorkerAssistant`],
//! [`TaskManager`], with the [`MetaHandler`] audit trail and the [`EcologyManager`].
//!
//! Each essential has `run_once(now) -> Report`: one pass, with `now` given, so tests drive it with a manual clock.
//! Labourers are processed concurrently and in isolation: an error in one labourer (a store error, a metric that
//! cannot be fetched) is recorded in that labourer's report and never stops the others. The engine never names a
//! concrete adapter; the binaries wire them in.

pub mod control;
pub mod daemon;
pub mod ecology;
pub mod meta;
pub mod orchestrator;
pub mod scavenger;
pub mod scheduler;
pub mod status;
pub mod tasks;
pub mod worker_assistant;

pub use ecology::EcologyManager;
pub use meta::MetaHandler;
pub use orchestrator::{LabourerOrchestration, Orchestrator, OrchestratorReport};
pub use scavenger::{LabourerScavenge, Scavenger, ScavengerReport};
pub use scheduler::{Plan, ScheduleError, ScheduleReport, Scheduler};
pub use status::{status, LabourerStatus};
pub use tasks::TaskManager;
pub use worker_assistant::{WorkerAssistant, WorkerAssistantError};

use sosw_core::ports::{MetaSink, MetricSource, Notifier, TaskStore};
use sosw_core::Clock;
use std::sync::Arc;

/// The adapters an essential runs on, chosen by the binary.
#[derive(Debug, Clone)]
pub struct Wiring {
    pub store: Arc<dyn TaskStore>,
    /// `None` when meta is switched off (`meta_handler_config.write_meta_to_ddb: false`).
    pub meta: Option<Arc<dyn MetaSink>>,
    pub metrics: Arc<dyn MetricSource>,
    pub notifier: Arc<dyn Notifier>,
    /// Read only where no pass hands down `now`: a worker supervisor reporting an exit.
    pub clock: Arc<dyn Clock>,
}

impl Wiring {
    pub fn meta_handler(&self, essential: sosw_core::Essential) -> MetaHandler {
        MetaHandler::new(self.meta.clone(), essential.function_name())
    }

    /// Task creation on these adapters; its audit events are written as the Scheduler's, as in Python sosw.
    pub fn task_manager(&self, config: Arc<sosw_core::Config>) -> TaskManager {
        TaskManager::new(
            config,
            self.store.clone(),
            self.meta_handler(sosw_core::Essential::Scheduler),
        )
    }

    /// Worker reports on these adapters; `config` gives each labourer's running window, which a heartbeat extends.
    pub fn worker_assistant(&self, config: Arc<sosw_core::Config>) -> WorkerAssistant {
        WorkerAssistant::new(
            self.store.clone(),
            self.meta_handler(sosw_core::Essential::WorkerAssistant),
            self.clock.clone(),
            config,
        )
    }
}

/// A pass report as JSON: `{"at": ..., "store_throttled": n, "labourers": {"<id>": {...}}}`, each labourer's row
/// without its id.
pub(crate) fn report_json<T: serde::Serialize>(
    at: i64,
    store_throttled: u64,
    rows: impl IntoIterator<Item = (String, T)>,
) -> serde_json::Value {
    let mut labourers = serde_json::Map::new();
    for (id, row) in rows {
        let mut v = serde_json::to_value(row).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(o) = &mut v {
            o.remove("labourer_id");
        }
        labourers.insert(id, v);
    }
    serde_json::json!({"at": at, "store_throttled": store_throttled, "labourers": labourers})
}

/// Why an essential could not be built from its config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("labourer `{labourer}`: {message}")]
    Invoker { labourer: String, message: String },
    #[error("unknown labourer `{0}`: it is not in `task_config.labourers`")]
    UnknownLabourer(String),
}
