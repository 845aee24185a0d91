//! The world the engine tests run in: a real SQLite file, a manual clock and scripted fakes.
#![allow(dead_code)]

use serde_json::{json, Value};
use sosw_core::config::Config;
use sosw_core::ports::{MetaSink, TaskStore};
use sosw_core::{Clock, MetaAction, NewTask, Place, Time};
use sosw_engine::{Orchestrator, Scavenger, Wiring, WorkerAssistant};
use sosw_sqlite::SqliteStore;
use sosw_testkit::fakes::{FakeInvokers, FakeMetrics, RecordingNotifier};
use sosw_testkit::ManualClock;
use std::sync::Arc;

pub const T0: i64 = 1_700_000_000;

pub struct World {
    pub _dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
    pub config: Arc<Config>,
    pub store: Arc<SqliteStore>,
    pub clock: Arc<ManualClock>,
    pub invokers: Arc<FakeInvokers>,
    pub metrics: Arc<FakeMetrics>,
    pub notifier: Arc<RecordingNotifier>,
    pub wiring: Wiring,
}

impl World {
    pub async fn new(config: Value) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sosw.db");
        let store = Arc::new(SqliteStore::open_or_create(&path).expect("open"));
        store.init().await.expect("init");
        let clock = ManualClock::at_secs(T0);
        let metrics = FakeMetrics::new();
        let notifier = RecordingNotifier::new();
        let wiring = Wiring {
            store: store.clone(),
            meta: Some(store.clone()),
            metrics: metrics.clone(),
            notifier: notifier.clone(),
            clock: clock.clone(),
        };
        let config = Arc::new(Config::from_value(&config).unwrap_or_else(|e| panic!("{e}")));
        World {
            _dir: dir,
            path,
            config,
            store,
            clock,
            invokers: FakeInvokers::new(),
            metrics,
            notifier,
            wiring,
        }
    }

    pub fn now(&self) -> Time {
        self.clock.now()
    }

    pub fn orchestrator(&self) -> Orchestrator {
        Orchestrator::new(self.config.clone(), &self.wiring, self.invokers.as_ref()).expect("orchestrator")
    }

    pub fn scavenger(&self) -> Scavenger {
        Scavenger::new(self.config.clone(), &self.wiring)
    }

    pub fn assistant(&self) -> WorkerAssistant {
        self.wiring.worker_assistant(self.config.clone())
    }

    /// Queues `ids` for `labourer`; returns their queue positions (greenfields).
    pub async fn create(&self, labourer: &str, ids: &[&str]) -> Vec<i64> {
        let tm = self.wiring.task_manager(self.config.clone());
        let tasks: Vec<NewTask> = ids
            .iter()
            .map(|id| NewTask {
                task_id: id.to_string(),
                labourer_id: labourer.to_string(),
                payload: json!({"n": id, "task_id": "from payload"}).to_string(),
            })
            .collect();
        let report = tm.create(&tasks, self.now()).await.expect("create");
        report.created.iter().map(|t| t.greenfield.get()).collect()
    }

    pub async fn place(&self, id: &str) -> Place {
        self.store.get(id).await.expect("get").expect("task exists").place
    }

    pub async fn task(&self, id: &str) -> sosw_core::Task {
        self.store.get(id).await.expect("get").expect("task exists").task
    }

    pub async fn actions(&self, id: &str) -> Vec<MetaAction> {
        self.store
            .events_of(id)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.action)
            .collect()
    }
}

pub fn one_labourer(extra: Value) -> Value {
    let mut l = json!({"command": ["true"], "max_simultaneous_invocations": 2, "duration": 60, "cooldown": 30, "max_attempts": 3});
    if let (Value::Object(l), Value::Object(e)) = (&mut l, extra) {
        l.extend(e);
    }
    json!({"task_config": {"labourers": {"w": l}}})
}
