//! How many DynamoDB requests one task costs over its whole life (create → invoke → complete → archive), counted
//! at the SDK by an interceptor against a local moto_server (`SOSW_TEST_DYNAMODB`). Python sosw needs about 8.
//! Attempts that moto answered with a server error (it has races under concurrent transactions), which the SDK then
//! retried, are subtracted: DynamoDB would have answered them.

use aws_sdk_dynamodb::config::interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use serde_json::json;
use sosw_aws::{DynamoStore, Tables};
use sosw_core::config::Config;
use sosw_core::ports::{MetaSink, TaskStore};
use sosw_core::{Clock, NewTask};
use sosw_engine::{Orchestrator, Scavenger, Wiring};
use sosw_testkit::fakes::{FakeInvokers, FakeMetrics, RecordingNotifier};
use sosw_testkit::ManualClock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Requests sent, by operation, and how many of them the server failed with a 5xx.
#[derive(Debug, Default)]
struct Counter(Mutex<BTreeMap<String, u64>>, Mutex<u64>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("?")
            .to_string();
        *self.0.lock().expect("lock").entry(op).or_default() += 1;
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if context.response().is_some_and(|r| r.status().is_server_error()) {
            *self.1.lock().expect("lock") += 1;
        }
        Ok(())
    }
}

impl Counter {
    /// (requests by operation, server errors among them), since the last call.
    fn take(&self) -> (BTreeMap<String, u64>, u64) {
        (
            std::mem::take(&mut *self.0.lock().expect("lock")),
            std::mem::take(&mut *self.1.lock().expect("lock")),
        )
    }
}

#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn requests_per_task_lifecycle() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let counter = Arc::new(Counter::default());
    let sdk = sosw_aws::Aws::local(&endpoint).await.sdk().clone();
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .interceptor(CounterRef(counter.clone()))
        .build();
    let prefix = format!("r{}_", std::process::id());
    let tables = Tables::prefixed(&prefix);
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(conf), tables));
    store.init().await.expect("tables");
    counter.take();

    const N: usize = 100;
    let clock = ManualClock::at_secs(1_700_000_000);
    let config = Arc::new(
        Config::from_value(
            &json!({"task_config": {"labourers": {"w": {"command": "true", "max_simultaneous_invocations": N}}}}),
        )
        .expect("config"),
    );
    for with_meta in [false, true] {
        let meta: Option<Arc<dyn MetaSink>> = if with_meta { Some(store.clone()) } else { None };
        let wiring = Wiring {
            store: store.clone(),
            meta,
            metrics: FakeMetrics::new(),
            notifier: RecordingNotifier::new(),
            clock: clock.clone(),
        };
        let tm = wiring.task_manager(config.clone());
        let tasks: Vec<NewTask> = (0..N)
            .map(|i| NewTask {
                task_id: format!("{with_meta}-{i:04}"),
                labourer_id: "w".into(),
                payload: "{}".into(),
            })
            .collect();
        tm.create(&tasks, clock.now()).await.expect("create");
        let report = Orchestrator::new(config.clone(), &wiring, FakeInvokers::new().as_ref())
            .expect("orchestrator")
            .run_once(clock.now())
            .await;
        assert_eq!(report.labourers[0].invoked as usize, N);
        let wa = wiring.worker_assistant(config.clone());
        for t in &tasks {
            wa.complete(&t.task_id, &Default::default(), clock.now())
                .await
                .expect("complete");
        }
        let s = Scavenger::new(config.clone(), &wiring).run_once(clock.now()).await;
        assert_eq!(s.labourers[0].archived as usize, N);
        let (counts, server_errors) = counter.take();
        let total: u64 = counts.values().sum::<u64>() - server_errors;
        let per_task = total as f64 / N as f64;
        eprintln!(
            "meta {}: {total} requests for {N} tasks = {per_task:.2} per task: {counts:?}, less {server_errors} \
             retried after a moto server error",
            if with_meta { "on" } else { "off" }
        );
        if !with_meta {
            // claim 1 + complete 1 + archive 1 (a transaction from the Scavenger's own copy of the item), plus the
            // batched create and the per-pass queries.
            assert!(per_task <= 3.2, "{per_task} requests per task: {counts:?}");
        }
        clock.advance_secs(10);
    }
}

/// `Intercept` for an `Arc` we keep a handle on.
#[derive(Debug)]
struct CounterRef(Arc<Counter>);

impl Intercept for CounterRef {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.read_before_transmit(context, runtime_components, cfg)
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.read_after_attempt(context, runtime_components, cfg)
    }
}
