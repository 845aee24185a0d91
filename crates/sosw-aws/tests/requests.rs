//! How many DynamoDB requests one task costs over its whole life (create → invoke → complete → archive), counted
//! at the SDK by an interceptor against a local moto_server (`SOSW_TEST_DYNAMODB`). Python sosw needs about 8.
//! Attempts that moto answered with a server error (it has races under concurrent transactions), which the SDK then
//! retried, are subtracted: DynamoDB would have answered them.

use aws_sdk_dynamodb::config::interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use futures::StreamExt;
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

/// Requests sent, by operation, and how many of them the server failed with a 5xx; and by "operation table".
#[derive(Debug, Default)]
struct Counter(Mutex<BTreeMap<String, u64>>, Mutex<u64>, Mutex<BTreeMap<String, u64>>);

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
        let table = context
            .request()
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v["TableName"].as_str().map(str::to_string))
            .unwrap_or_default();
        *self.2.lock().expect("lock").entry(format!("{op} {table}")).or_default() += 1;
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
        self.2.lock().expect("lock").clear();
        (
            std::mem::take(&mut *self.0.lock().expect("lock")),
            std::mem::take(&mut *self.1.lock().expect("lock")),
        )
    }
}

/// A store on fresh tables (`<prefix><pid>_…`) whose every request is counted, the counter emptied after `init`.
async fn counted_store(endpoint: &str, prefix: &str) -> (DynamoStore, Arc<Counter>) {
    let counter = Arc::new(Counter::default());
    let sdk = sosw_aws::Aws::local(endpoint).await.sdk().clone();
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .interceptor(CounterRef(counter.clone()))
        .build();
    let tables = Tables::prefixed(&format!("{prefix}{}_", std::process::id()));
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(conf), tables);
    store.init().await.expect("tables");
    counter.take();
    (store, counter)
}

#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn requests_per_task_lifecycle() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let (store, counter) = counted_store(&endpoint, "r").await;
    let store = Arc::new(store);

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
        // The workers report as a fleet does: many at once (16 in flight), so that the moves' audit events share
        // requests (the store's group commit); a lone report costs one audit request of its own.
        let wa = wiring.worker_assistant(config.clone());
        let now = clock.now();
        futures::stream::iter(&tasks)
            .map(|t| {
                let wa = &wa;
                async move {
                    wa.complete(&t.task_id, &Default::default(), now)
                        .await
                        .expect("complete")
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let s = Scavenger::new(config.clone(), &wiring).run_once(clock.now()).await;
        assert_eq!(s.labourers[0].archived as usize, N);
        let (counts, server_errors) = counter.take();
        let total: u64 = counts.values().sum::<u64>() - server_errors;
        let per_task = total as f64 / N as f64;
        eprintln!(
            "meta {}: {total} DynamoDB requests for {N} tasks = {per_task:.2} per task, {:.2} with Lambda's Invoke: \
             {counts:?}, less {server_errors} retried after a moto server error",
            if with_meta { "on" } else { "off" },
            per_task + 1.0,
        );
        // claim 1 + complete 1 + archive 1 (a transaction from the Scavenger's own copy of the item), plus the
        // batched create and the per-pass queries; the audit trail's events share BatchWriteItem requests.
        let most = if with_meta { 3.8 } else { 3.2 };
        assert!(per_task <= most, "{per_task} requests per task: {counts:?}");
        clock.advance_secs(10);
    }
}

/// Issue #12: a report that closes a task waiting for retry read the task, then scanned the whole retry table to
/// find it (its key starts with the labourer). The task's audit trail names the labourer: one Query, one GetItem.
#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn a_report_on_a_task_waiting_for_retry_scans_nothing() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let (store, counter) = counted_store(&endpoint, "rr").await;
    let now = sosw_core::Time::from_secs(1_700_000_000);
    let stamp = sosw_core::meta::Stamp {
        author: "test".into(),
        at: now,
    };
    let task = |id: &str| NewTask {
        task_id: id.into(),
        labourer_id: "w".into(),
        payload: "{}".into(),
    };
    let created = store
        .create_tasks_recorded(&[task("a"), task("b")], 1000, now, Some(&stamp))
        .await
        .expect("create");
    let invoked = sosw_core::Greenfield::new(now.secs() + 31_557_600);
    for t in &created.created {
        store
            .claim(
                "w",
                &[(t.task_id.clone(), t.greenfield)],
                sosw_core::Greenfield::start(now),
                invoked,
            )
            .await
            .expect("claim");
        store
            .move_to_retry(&t.task_id, invoked, now.secs() + 60)
            .await
            .expect("retry");
    }
    counter.take();
    let closed = store
        .complete("a", now, &Default::default())
        .await
        .expect("a late completion");
    assert!(matches!(closed, sosw_core::ports::Completion::Closed(_)), "{closed:?}");
    store.fail("b", &Default::default()).await.expect("a late failure");
    let (counts, _) = counter.take();
    assert_eq!(counts.get("Scan"), None, "{counts:?}");
    assert_eq!(
        counts.get("Query"),
        Some(&2),
        "one look at each audit trail: {counts:?}"
    );
}

/// A page of one labourer's closed tasks reads its status index and the page's items, never the archive: no Scan,
/// whatever the archive holds.
#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn a_page_of_one_labourers_closed_tasks_scans_nothing() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let (store, counter) = counted_store(&endpoint, "cl").await;
    let now = sosw_core::Time::from_secs(1_700_000_000);
    let tasks: Vec<NewTask> = (0..30)
        .map(|i| NewTask {
            task_id: format!("c{i:02}"),
            labourer_id: if i % 3 == 0 { "v" } else { "w" }.into(),
            payload: "{}".into(),
        })
        .collect();
    let created = store.create_tasks(&tasks, 1000, now).await.expect("create");
    for t in &created.created {
        let invoked = sosw_core::Greenfield::new(now.secs() + 60);
        store
            .claim(
                &t.labourer_id,
                &[(t.task_id.clone(), t.greenfield)],
                sosw_core::Greenfield::start(now),
                invoked,
            )
            .await
            .expect("claim");
        store
            .complete(&t.task_id, now, &Default::default())
            .await
            .expect("complete");
        store
            .archive(&t.task_id, sosw_core::ports::ArchiveExpect::Completed, now)
            .await
            .expect("archive");
    }
    counter.take();
    let mut query = sosw_core::ports::TaskQuery {
        table: sosw_core::ports::Table::Closed,
        labourer: Some("w".into()),
        greenfield: None,
        completed: None,
        limit: 5,
        after: None,
    };
    let mut seen = Vec::new();
    loop {
        let page = store.list(&query).await.expect("list");
        let Some(last) = page.last() else { break };
        query.after = Some(sosw_core::ports::ListCursor::after(last));
        seen.extend(page.iter().map(|t| t.task.task_id.clone()));
    }
    assert_eq!(seen.len(), 20, "every one of w's closed tasks, once: {seen:?}");
    let (counts, _) = counter.take();
    assert_eq!(counts.get("Scan"), None, "{counts:?}");
}

/// `status` and `/metrics` ask for every labourer with tasks on each poll. On DynamoDB that is one Scan of the
/// labourers' table, whatever the task tables hold: task creation registers its labourers, a rescan finds those
/// whose tasks another program wrote (Python sosw's `TaskManager`), and the first look at tables never scanned
/// rescans by itself.
#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn labourers_are_listed_from_the_registry_without_reading_the_task_tables() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let (store, counter) = counted_store(&endpoint, "lr").await;
    let raw = sosw_aws::Aws::local(&endpoint).await.dynamodb();
    // A task as Python sosw writes it, straight into a table, for `labourer`.
    let python_task = |table: String, labourer: &str, id: &str| {
        let raw = raw.clone();
        let (labourer, id) = (labourer.to_string(), id.to_string());
        async move {
            use aws_sdk_dynamodb::types::AttributeValue::{N, S};
            raw.put_item()
                .table_name(table)
                .item("task_id", S(id))
                .item("labourer_id", S(labourer))
                .item("greenfield", N("1000".into()))
                .item("attempts", N("0".into()))
                .item("created_at", N("1700000000".into()))
                .item("payload", S("{}".into()))
                .send()
                .await
                .expect("put a Python task");
        }
    };
    // Deletes the item with `key` (attribute, string value) from `table`.
    let delete = |table: String, key: &[(&str, &str)]| {
        let raw = raw.clone();
        let key: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> = key
            .iter()
            .map(|(k, v)| (k.to_string(), aws_sdk_dynamodb::types::AttributeValue::S(v.to_string())))
            .collect();
        async move {
            raw.delete_item()
                .table_name(table)
                .set_key(Some(key))
                .send()
                .await
                .expect("delete");
        }
    };
    let tables = store.tables().clone();
    let now = sosw_core::Time::from_secs(1_700_000_000);
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Tables from before the registry (or filled by Python sosw): the first look scans them, once.
    python_task(tables.tasks.clone(), "py1", "p1").await;
    assert_eq!(store.labourer_ids().await.expect("ids"), ids(&["py1"]));
    counter.take();

    // From then on, a Scan of the labourers' table alone.
    python_task(tables.closed.clone(), "py2", "p2").await;
    assert_eq!(store.labourer_ids().await.expect("ids"), ids(&["py1"]));
    let (counts, _) = counter.take();
    assert_eq!(counts, BTreeMap::from([("Scan".to_string(), 1)]), "{counts:?}");

    // Tasks this store creates register their labourer first: one update, then none for ten minutes.
    let task = |id: &str| NewTask {
        task_id: id.into(),
        labourer_id: "w".into(),
        payload: "{}".into(),
    };
    store.create_tasks(&[task("w1")], 1000, now).await.expect("create");
    assert_eq!(counter.take().0.get("UpdateItem"), Some(&1));
    store
        .create_tasks(&[task("w2")], 1000, now.plus_secs(599))
        .await
        .expect("create");
    assert_eq!(counter.take().0.get("UpdateItem"), None);
    store
        .create_tasks(&[task("w3")], 1000, now.plus_secs(600))
        .await
        .expect("create");
    assert_eq!(counter.take().0.get("UpdateItem"), Some(&1));
    assert_eq!(store.labourer_ids().await.expect("ids"), ids(&["py1", "w"]));

    // A rescan finds what another program wrote since.
    assert_eq!(
        store.rescan_labourers(now).await.expect("rescan"),
        ids(&["py1", "py2", "w"])
    );
    assert_eq!(store.labourer_ids().await.expect("ids"), ids(&["py1", "py2", "w"]));

    // A labourer with no task left is only marked by a rescan; one that finds none of its tasks an hour later or more
    // unregisters it, unless it registered within that hour. A task found in between clears the mark.
    delete(tables.tasks.clone(), &[("task_id", "p1")]).await;
    delete(tables.closed.clone(), &[("task_id", "p2")]).await;
    assert_eq!(store.rescan_labourers(now).await.expect("rescan"), ids(&["w"]));
    assert_eq!(
        store.labourer_ids().await.expect("ids"),
        ids(&["py1", "py2", "w"]),
        "missed once"
    );
    python_task(tables.retry.clone(), "py2", "p3").await;
    let later = now.plus_secs(3601);
    assert_eq!(store.rescan_labourers(later).await.expect("rescan"), ids(&["py2", "w"]));
    assert_eq!(
        store.labourer_ids().await.expect("ids"),
        ids(&["py2", "w"]),
        "py1 missed twice an hour apart; py2 found again"
    );
    delete(tables.retry.clone(), &[("labourer_id", "py2"), ("task_id", "p3")]).await;
    assert_eq!(store.rescan_labourers(later).await.expect("rescan"), ids(&["w"]));
    assert_eq!(
        store.rescan_labourers(later.plus_secs(1800)).await.expect("rescan"),
        ids(&["w"])
    );
    assert_eq!(
        store.labourer_ids().await.expect("ids"),
        ids(&["py2", "w"]),
        "py2's mark is half an hour old"
    );
    assert_eq!(
        store.rescan_labourers(later.plus_secs(3601)).await.expect("rescan"),
        ids(&["w"])
    );
    assert_eq!(store.labourer_ids().await.expect("ids"), ids(&["w"]));
}

/// A principal that may read the tables but not write the registry (here: a labourers' table keyed by a number, so
/// DynamoDB refuses every write to it) still gets the labourers with tasks from the first look, each time, as before
/// the registry; the explicit rescan says it could not record them.
#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn labourers_are_found_when_the_registry_cannot_be_written() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue::S, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let raw = sosw_aws::Aws::local(&endpoint).await.dynamodb();
    let tables = Tables::prefixed(&format!("lw{}_", std::process::id()));
    raw.create_table()
        .table_name(&tables.labourers)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("labourer_id")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("labourer_id")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("a labourers' table we cannot write to");
    let store = DynamoStore::new(raw.clone(), tables.clone());
    store.init().await.expect("the other tables");
    raw.put_item()
        .table_name(&tables.tasks)
        .item("task_id", S("p1".into()))
        .item("labourer_id", S("py".into()))
        .send()
        .await
        .expect("a Python task");
    for _ in 0..2 {
        assert_eq!(store.labourer_ids().await.expect("ids"), vec!["py".to_string()]);
    }
    let now = sosw_core::Time::from_secs(1_700_000_000);
    assert!(
        store.rescan_labourers(now).await.is_err(),
        "the explicit rescan reports the refused write"
    );
}

/// The first look at tables never scanned is one rescan, however many callers ask at once.
#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn callers_at_once_share_the_first_rescan() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let (store, counter) = counted_store(&endpoint, "lf").await;
    let asked = futures::future::join_all((0..8).map(|_| store.labourer_ids())).await;
    assert!(
        asked.iter().all(|ids| ids.as_ref().is_ok_and(Vec::is_empty)),
        "{asked:?}"
    );
    let by_table = std::mem::take(&mut *counter.2.lock().expect("lock"));
    let t = store.tables();
    for table in [&t.tasks, &t.retry, &t.closed] {
        assert_eq!(by_table.get(&format!("Scan {table}")), Some(&1), "{by_table:?}");
    }
    assert_eq!(
        by_table.get(&format!("UpdateItem {}", t.labourers)),
        Some(&1),
        "one marker: {by_table:?}"
    );
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
