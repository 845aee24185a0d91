//! A mixed fleet on one set of tables: Python sosw 0.7.51's `TaskManager.create_task` and sosw-rs's essentials,
//! against a local moto_server. Needs `SOSW_TEST_DYNAMODB` (the server) and `SOSW_TEST_PYTHON_SOSW` (a Python
//! interpreter with `sosw==0.7.51` installed); `.ci/run` provides both.

use serde_json::{json, Value};
use sosw_aws::{DynamoStore, Tables};
use sosw_core::config::Config;
use sosw_core::ports::TaskStore;
use sosw_core::{Clock, NewTask, Place};
use sosw_engine::{Orchestrator, Scavenger, Wiring};
use sosw_testkit::fakes::{FakeInvokers, FakeMetrics, RecordingNotifier};
use sosw_testkit::ManualClock;
use std::process::Command;
use std::sync::Arc;

fn python(endpoint: &str, interpreter: &str, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sosw_fleet.py");
    let out = Command::new(interpreter)
        .arg(script)
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python sosw failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python prints JSON")
}

#[tokio::test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
async fn python_sosw_creates_and_sosw_rs_runs_the_tasks() {
    let (Some(endpoint), Some(interpreter)) = (
        sosw_testkit::service("SOSW_TEST_DYNAMODB"),
        sosw_testkit::service("SOSW_TEST_PYTHON_SOSW"),
    ) else {
        return;
    };
    let prefix = format!("py{}_", std::process::id());
    let tables = Tables::prefixed(&prefix);
    let store = Arc::new(DynamoStore::connect(Some(&endpoint), tables).await);
    store.init().await.expect("tables");

    // Python sosw queues three tasks...
    let python_ids: Vec<String> =
        serde_json::from_value(python(&endpoint, &interpreter, &["create", &prefix, "w", "3"])).expect("ids");
    assert_eq!(python_ids.len(), 3);
    assert!(python_ids.iter().all(|id| id.len() == 32));

    // ...and sosw-rs queues two behind them.
    let clock = ManualClock::at_secs(sosw_core::SystemClock.now().secs());
    let config = Arc::new(
        Config::from_value(
            &json!({"task_config": {"labourers": {"w": {"command": "true", "max_simultaneous_invocations": 10}}}}),
        )
        .expect("config"),
    );
    let wiring = Wiring {
        store: store.clone(),
        meta: Some(store.clone()),
        metrics: FakeMetrics::new(),
        notifier: RecordingNotifier::new(),
        clock: clock.clone(),
    };
    let tm = wiring.task_manager(config.clone());
    let ours = ["0000000000000000000000000000rust", "0000000000000000000000000001rust"];
    let report = tm
        .create(
            &ours.map(|id| NewTask {
                task_id: id.into(),
                labourer_id: "w".into(),
                payload: json!({"n": 9, "from": "rust"}).to_string(),
            }),
            clock.now(),
        )
        .await
        .expect("create");
    let positions: Vec<i64> = report.created.iter().map(|t| t.greenfield.get()).collect();
    assert_eq!(positions, vec![5000, 6000], "after Python's 2000, 3000, 4000");

    // Python reads our items like its own.
    let queued = python(&endpoint, &interpreter, &["queued", &prefix, "w"]);
    let seen: Vec<(String, Value)> = queued
        .as_array()
        .expect("list")
        .iter()
        .map(|t| {
            (
                t["task_id"].as_str().unwrap_or_default().to_string(),
                t["payload"]["from"].clone(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 5, "{queued}");
    assert_eq!(seen[3], (ours[0].to_string(), json!("rust")));

    // sosw-rs invokes all five, in queue order, with Python's payloads in the events.
    let invokers = FakeInvokers::new();
    let r = Orchestrator::new(config.clone(), &wiring, invokers.as_ref())
        .expect("orchestrator")
        .run_once(clock.now())
        .await;
    assert_eq!(r.labourers[0].invoked, 5, "{r:?}");
    let events = invokers.of("w").events.lock().expect("lock").clone();
    let order: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        &order[..3],
        &python_ids.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(events[0].1["from"], json!("python"));
    assert_eq!(events[0].1["n"], json!(0));
    assert_eq!(events[0].1["greenfield"], json!(2000));

    // Completed and archived by sosw-rs.
    let wa = wiring.worker_assistant(config.clone());
    for id in python_ids.iter().map(String::as_str).chain(ours) {
        wa.complete(id, &Default::default(), clock.now())
            .await
            .expect("complete");
    }
    let s = Scavenger::new(config.clone(), &wiring).run_once(clock.now()).await;
    assert_eq!(s.labourers[0].archived, 5, "{s:?}");
    let closed = store.get(&python_ids[0]).await.expect("get").expect("archived");
    assert!(matches!(closed.place, Place::Closed { completed: true, .. }));
    assert_eq!(closed.to_row()["labourer_id_task_status"], json!("w_1"));
    assert_eq!(
        serde_json::from_str::<Value>(&closed.task.payload).expect("JSON, not a Python repr"),
        json!({"n": 0, "from": "python"})
    );
}
