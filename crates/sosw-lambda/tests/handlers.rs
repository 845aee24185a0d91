//! The Lambda handlers called as the runtime calls them (a default context), against moto_server: the events
//! Python sosw sends, bad events refused with a clear error and nothing written, and cold-start configuration.

mod common;

use common::{config, container};
use lambda_runtime::Context;
use serde_json::json;
use sosw_core::{Config, Essential, NewTask, Place, Time};
use sosw_lambda::{config_layers, Container, HandlerError, InitError};
use sosw_testkit::ManualClock;

const T0: i64 = 1_700_000_000;

#[tokio::test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
async fn the_worker_assistant_takes_sosw_events_and_refuses_bad_ones() {
    let Some(moto) = common::moto().await else {
        return;
    };
    let tables = moto.tables("wa").await;
    let config = config(
        &tables,
        json!({"task_config": {"labourers": {"w": {"arn": "arn:aws:lambda:us-east-1:1:function:w"}}}}),
    );
    let clock = ManualClock::at_secs(T0);
    let wa = container(&moto, &config, Essential::WorkerAssistant, clock.clone());
    let orchestrator = container(&moto, &config, Essential::Orchestrator, clock.clone());
    let store = wa.store().clone();
    store
        .create_tasks(
            &[NewTask {
                task_id: "a".repeat(32),
                labourer_id: "w".into(),
                payload: "{}".into(),
            }],
            1000,
            Time::from_secs(T0),
        )
        .await
        .expect("created");
    let ctx = Context::default();
    let id = "a".repeat(32);

    let refused = [
        (json!({"task_id": id}), "no `action`"),
        (json!({"action": "mark_task_as_done", "task_id": id}), "not supported"),
        (json!({"action": "mark_task_as_completed"}), "needs a string `task_id`"),
        (json!(["mark_task_as_completed"]), "JSON object"),
    ];
    for (event, says) in refused {
        let err = wa.handle(event.clone(), &ctx).await.expect_err("refused");
        assert!(matches!(err, HandlerError::WorkerAssistant(_)), "{event}: {err}");
        assert!(err.to_string().contains(says), "{event}: {err}");
    }
    // A report on a task that was never invoked is refused, and leaves it queued (no ghost, unlike Python sosw).
    let err = wa
        .handle(json!({"action": "mark_task_as_completed", "task_id": id}), &ctx)
        .await
        .expect_err("not invoked yet");
    assert!(err.to_string().contains("has not been invoked"), "{err}");
    let ghost = wa
        .handle(
            json!({"action": "mark_task_as_completed", "task_id": "f".repeat(32)}),
            &ctx,
        )
        .await
        .expect_err("no such task");
    assert!(matches!(ghost, HandlerError::WorkerAssistant(_)), "{ghost}");
    assert!(
        store.get(&"f".repeat(32)).await.expect("get").is_none(),
        "no ghost item"
    );
    assert!(matches!(
        store.get(&id).await.expect("get").expect("task").place,
        Place::Live
    ));

    // Once invoked: a report with unreadable stats is refused before anything is written.
    orchestrator.handle(json!({}), &ctx).await.expect("orchestrated");
    let err = wa
        .handle(
            json!({"action": "mark_task_as_completed", "task_id": id, "stats": "{not json", "result": {"x": 1}}),
            &ctx,
        )
        .await
        .expect_err("bad stats");
    assert!(err.to_string().contains("stats"), "{err}");
    let untouched = store.get(&id).await.expect("get").expect("task").task;
    assert_eq!(
        (untouched.completed_at, untouched.result.len(), untouched.attempts),
        (None, 0, 1),
        "nothing of the refused report was written"
    );
    // The sosw event completes it; the answer is the row as stored.
    let row = wa
        .handle(
            json!({"action": "mark_task_as_completed", "task_id": id, "stats": "{\"rows\": 3}", "result": {"file": "s3://x"}}),
            &ctx,
        )
        .await
        .expect("completed");
    assert_eq!(
        (
            row["completed_at"].clone(),
            row["stat_rows"].clone(),
            row["result_file"].clone()
        ),
        (json!(T0), json!(3), json!("s3://x")),
        "{row}"
    );
}

#[tokio::test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
async fn cold_start_config_comes_from_the_config_table_or_a_file_and_errors_are_plain() {
    let Some(moto) = common::moto().await else {
        return;
    };
    // A source that is not one.
    let err = config_layers(&moto.aws, "etcd:cluster", Essential::Scheduler)
        .await
        .expect_err("unknown");
    assert!(matches!(err, InitError::Source(_)), "{err}");
    // A missing config table is an error, not an empty config.
    let err = config_layers(
        &moto.aws,
        &format!("dynamodb:nope_{}", std::process::id()),
        Essential::Orchestrator,
    )
    .await
    .expect_err("no table");
    assert!(err.to_string().contains("cannot be read"), "{err}");
    // A file packaged with the function.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("sosw.json");
    std::fs::write(
        &file,
        r#"{"task_config": {"labourers": {"w": {"arn": "arn:aws:lambda:us-east-1:1:function:w"}}}}"#,
    )
    .expect("write");
    let layers = config_layers(&moto.aws, &file.display().to_string(), Essential::Orchestrator)
        .await
        .expect("file");
    let config = Config::from_layers(&layers, Essential::Orchestrator).expect("valid");
    assert_eq!(config.labourers[0].id, "w");
    std::fs::write(&file, "{").expect("write");
    let err = config_layers(&moto.aws, &file.display().to_string(), Essential::Orchestrator)
        .await
        .expect_err("bad json");
    assert!(err.to_string().contains("not valid JSON"), "{err}");

    // An orchestrator cannot start with a labourer it cannot invoke from Lambda.
    let config =
        Config::from_value(&json!({"task_config": {"labourers": {"local": {"command": ["true"]}}}})).expect("config");
    let err = Container::new(
        moto.aws.clone(),
        config,
        Essential::Orchestrator,
        ManualClock::at_secs(T0),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("has no `arn`"), "{err}");
}
