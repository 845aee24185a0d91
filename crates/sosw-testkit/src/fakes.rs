//! Fakes for the ports: scripted invokers, metric values and a notifier that remembers.

use async_trait::async_trait;
use sosw_core::config::{Labourer, MetricDetails};
use sosw_core::ports::{
    InvokeError, InvokeOutcome, Invoker, InvokerFactory, MetricError, MetricSource, Notifier, NotifyError,
};
use sosw_core::{Task, Time};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An invoker that records every event and answers from a script (then `Accepted`).
#[derive(Debug, Default)]
pub struct FakeInvoker {
    pub events: Mutex<Vec<(String, serde_json::Value)>>,
    script: Mutex<VecDeque<Result<InvokeOutcome, InvokeError>>>,
    /// The answer once the script is used up (`Accepted` when `None`).
    otherwise: Mutex<Option<Result<InvokeOutcome, InvokeError>>>,
    /// How many of the next invocations never answer (a hung worker endpoint).
    hanging: Mutex<usize>,
}

impl FakeInvoker {
    pub fn new() -> Arc<FakeInvoker> {
        Arc::new(FakeInvoker::default())
    }

    /// The next invocations answer these, in order.
    pub fn then(&self, outcomes: impl IntoIterator<Item = Result<InvokeOutcome, InvokeError>>) {
        lock(&self.script).extend(outcomes);
    }

    /// Once the script is used up, every invocation answers `outcome` (a broken labourer), until [`Self::heal`].
    pub fn always(&self, outcome: Result<InvokeOutcome, InvokeError>) {
        *lock(&self.otherwise) = Some(outcome);
    }

    /// The next `n` invocations are recorded and never answer.
    pub fn hang_next(&self, n: usize) {
        *lock(&self.hanging) += n;
    }

    /// Back to accepting every invocation: the script, the standing answer and the hangs are dropped.
    pub fn heal(&self) {
        lock(&self.script).clear();
        *lock(&self.otherwise) = None;
        *lock(&self.hanging) = 0;
    }

    pub fn invoked_ids(&self) -> Vec<String> {
        lock(&self.events).iter().map(|(id, _)| id.clone()).collect()
    }
}

#[async_trait]
impl Invoker for FakeInvoker {
    async fn invoke(&self, task: &Task, event: &str) -> Result<InvokeOutcome, InvokeError> {
        let parsed = serde_json::from_str(event).unwrap_or(serde_json::Value::Null);
        lock(&self.events).push((task.task_id.clone(), parsed));
        let hang = {
            let mut hanging = lock(&self.hanging);
            let hang = *hanging > 0;
            *hanging = hanging.saturating_sub(1);
            hang
        };
        if hang {
            std::future::pending::<()>().await;
        }
        let scripted = lock(&self.script).pop_front();
        scripted.unwrap_or_else(|| lock(&self.otherwise).clone().unwrap_or(Ok(InvokeOutcome::Accepted)))
    }
}

/// Gives every labourer its own [`FakeInvoker`], created on first use.
#[derive(Debug, Default)]
pub struct FakeInvokers(Mutex<HashMap<String, Arc<FakeInvoker>>>);

impl FakeInvokers {
    pub fn new() -> Arc<FakeInvokers> {
        Arc::new(FakeInvokers::default())
    }

    pub fn of(&self, labourer: &str) -> Arc<FakeInvoker> {
        lock(&self.0).entry(labourer.to_string()).or_default().clone()
    }
}

impl InvokerFactory for FakeInvokers {
    fn invoker_for(&self, labourer: &Labourer) -> Result<Arc<dyn Invoker>, String> {
        Ok(self.of(&labourer.id))
    }
}

/// Metric values keyed by [`MetricDetails::cache_key`]; counts fetches.
#[derive(Debug, Default)]
pub struct FakeMetrics {
    values: Mutex<HashMap<String, Result<f64, String>>>,
    pub fetches: Mutex<Vec<String>>,
}

impl FakeMetrics {
    pub fn new() -> Arc<FakeMetrics> {
        Arc::new(FakeMetrics::default())
    }

    pub fn set(&self, details: &MetricDetails, value: Result<f64, String>) {
        lock(&self.values).insert(details.cache_key(), value);
    }

    pub fn fetch_count(&self) -> usize {
        lock(&self.fetches).len()
    }
}

#[async_trait]
impl MetricSource for FakeMetrics {
    async fn fetch(&self, details: &MetricDetails, _now: Time) -> Result<f64, MetricError> {
        let key = details.cache_key();
        lock(&self.fetches).push(key.clone());
        match lock(&self.values).get(&key) {
            Some(Ok(v)) => Ok(*v),
            Some(Err(e)) => Err(MetricError(e.clone())),
            None => Err(MetricError(format!("no value scripted for {key}"))),
        }
    }
}

/// Remembers every notification.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    pub sent: Mutex<Vec<(String, Vec<String>)>>,
}

impl RecordingNotifier {
    pub fn new() -> Arc<RecordingNotifier> {
        Arc::new(RecordingNotifier::default())
    }

    pub fn messages(&self) -> Vec<String> {
        lock(&self.sent).iter().flat_map(|(_, m)| m.clone()).collect()
    }

    pub fn notifications(&self) -> usize {
        lock(&self.sent).len()
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn notify(&self, subject: &str, messages: &[String]) -> Result<(), NotifyError> {
        lock(&self.sent).push((subject.to_string(), messages.to_vec()));
        Ok(())
    }
}

/// A live task of labourer `w` at queue position 2000, invoked once, with an empty payload.
pub fn sample_task(task_id: &str) -> Task {
    Task {
        task_id: task_id.into(),
        labourer_id: "w".into(),
        created_at: 1.0,
        greenfield: sosw_core::Greenfield::new(2000),
        attempts: 1,
        payload: "{}".into(),
        completed_at: None,
        failed_attempts: 0,
        refunded_attempts: 0,
        stats: serde_json::Map::new(),
        result: serde_json::Map::new(),
    }
}
