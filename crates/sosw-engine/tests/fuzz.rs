//! Property tests over arbitrary input for the WorkerAssistant event — what `sosw complete` / `fail`, the WorkerAssistant
//! Lambda and the report endpoint of `sosw run --listen` (whose body is this event as JSON text) all go through — on
//! a real SQLite store. Nothing panics; every refusal says why; an accepted report is about the task it names.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{json, Map, Value};
use sosw_core::ports::TaskStore;
use sosw_core::{NewTask, Time};
use sosw_engine::{Wiring, WorkerAssistant, WorkerAssistantError};
use sosw_sqlite::SqliteStore;
use sosw_testkit::fakes::{FakeMetrics, RecordingNotifier};
use sosw_testkit::ManualClock;
use std::sync::Arc;

const T0: i64 = 1_700_000_000;
const IDS: [&str; 4] = ["t0", "t1", "t2", "t3"];

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(-1e300)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop::sample::select(&["", "t0", "t3", "ghost", "é日本🙂", "{\"a\": 1}", "[1]", "null", "{"][..])
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(&["action", "actions", "task_id", "stats", "result", "a", ""][..]).prop_map(String::from),
        "\\PC{0,8}",
    ];
    let shallow = leaf().prop_recursive(6, 64, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    let deep = (1usize..300, leaf()).prop_map(|(depth, mut v)| {
        for _ in 0..depth {
            v = json!({ "a": [v] });
        }
        v
    });
    prop_oneof![6 => shallow, 1 => deep]
}

/// A WorkerAssistant event: mostly well-formed in shape, arbitrary in its values.
fn event() -> impl Strategy<Value = Value> {
    let action = prop_oneof![
        Just(json!("mark_task_as_completed")),
        Just(json!("mark_task_as_failed")),
        leaf(),
    ];
    let task_id = prop_oneof![prop::sample::select(&IDS[..]).prop_map(Value::from), leaf()];
    let shaped = (action, task_id, any_json(), any_json(), any::<u8>()).prop_map(|(a, id, stats, result, drop)| {
        let mut m = Map::new();
        m.insert(if drop % 7 == 0 { "actions" } else { "action" }.into(), a);
        m.insert("task_id".into(), id);
        if drop % 3 != 0 {
            m.insert("stats".into(), stats);
        }
        if drop % 5 != 0 {
            m.insert(
                "result".into(),
                if drop % 2 == 0 {
                    Value::String(result.to_string())
                } else {
                    result
                },
            );
        }
        Value::Object(m)
    });
    prop_oneof![4 => shaped, 1 => any_json()]
}

struct World {
    _dir: tempfile::TempDir,
    wa: WorkerAssistant,
    rt: tokio::runtime::Runtime,
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let wa = rt.block_on(async {
        let store = Arc::new(SqliteStore::open_or_create(dir.path().join("sosw.db")).expect("open"));
        store.init().await.expect("init");
        let now = Time::from_secs(T0);
        let tasks: Vec<NewTask> = IDS
            .iter()
            .map(|id| NewTask {
                task_id: id.to_string(),
                labourer_id: "w".into(),
                payload: "{}".into(),
            })
            .collect();
        let created = store.create_tasks(&tasks, 1000, now).await.expect("create");
        let claims: Vec<(String, sosw_core::Greenfield)> = created
            .created
            .iter()
            .map(|t| (t.task_id.clone(), t.greenfield))
            .collect();
        store
            .claim(
                "w",
                &claims,
                sosw_core::Greenfield::new(T0),
                sosw_core::Greenfield::new(T0 + 100_000),
            )
            .await
            .expect("claim");
        let wiring = Wiring {
            store: store.clone(),
            meta: Some(store),
            metrics: FakeMetrics::new(),
            notifier: RecordingNotifier::new(),
            clock: ManualClock::at_secs(T0),
        };
        let config = sosw_core::Config::from_value(
            &serde_json::json!({"task_config": {"labourers": {"w": {"command": "true"}}}}),
        )
        .expect("config");
        wiring.worker_assistant(Arc::new(config))
    });
    World { _dir: dir, wa, rt }
}

fn check(w: &World, event: &Value) -> Result<(), TestCaseError> {
    match w.rt.block_on(w.wa.handle_event(event, None, Time::from_secs(T0 + 10))) {
        Ok(row) => {
            prop_assert_eq!(row.get("task_id"), event.get("task_id"));
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(!message.trim().is_empty(), "{e:?}");
            if let WorkerAssistantError::Report(r) = &e {
                prop_assert!(message.contains(r.field), "{message}");
            }
        }
    }
    Ok(())
}

#[test]
fn worker_assistant_events_never_panic_and_refusals_say_why() {
    let w = world();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(512),
        ..ProptestConfig::default()
    });
    runner
        .run(&event(), |event| check(&w, &event))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn report_bodies_never_panic() {
    // The body of `POST /report`: text, parsed as JSON, then the event.
    let w = world();
    let body = prop_oneof![
        event().prop_map(|v| v.to_string()),
        "\\PC{0,64}",
        Just("{\"action\": \"mark_task_as_completed\", \"task_id\": \"t1\", \"stats\": {\"n\": 1e999}}".to_string()),
        Just("[".repeat(200)),
    ];
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(512),
        ..ProptestConfig::default()
    });
    runner
        .run(&body, |body| match serde_json::from_str::<Value>(&body) {
            Ok(event) => check(&w, &event),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                Ok(())
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
