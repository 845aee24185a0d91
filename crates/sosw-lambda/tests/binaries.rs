//! The Lambda binaries as Lambda runs them: a child process polling a Lambda Runtime API (a stand-in on 127.0.0.1
//! that hands out one event and records the answer), on moto_server (`SOSW_TEST_DYNAMODB`), with its config from a
//! file (`SOSW_CONFIG`). Also: outside Lambda, or with an unreadable config, they exit with a plain message.

// Deadlines for waiting on real processes and servers read the monotonic clock (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use sosw_core::ports::{Table, TaskQuery};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone)]
struct Runtime {
    event: Arc<Mutex<Option<Value>>>,
    answers: mpsc::UnboundedSender<(String, Value)>,
}

async fn next(State(rt): State<Runtime>) -> (HeaderMap, String) {
    let event = rt.event.lock().expect("lock").take();
    let Some(event) = event else {
        // One event per test: later polls wait until the process is killed.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let mut h = HeaderMap::new();
    h.insert("lambda-runtime-aws-request-id", "req-1".parse().expect("header"));
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(900))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis();
    h.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().expect("header"),
    );
    h.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:sosw_scheduler"
            .parse()
            .expect("header"),
    );
    (h, event.to_string())
}

async fn answer(State(rt): State<Runtime>, Path((_id, kind)): Path<(String, String)>, body: String) -> &'static str {
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let _ = rt.answers.send((kind, v));
    "{}"
}

/// Runs `binary` for one `event` with `config`; returns ("response" | "error", body).
async fn invoke_once(moto: &common::Moto, binary: &str, config: &Value, event: Value) -> (String, Value) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = Runtime {
        event: Arc::new(Mutex::new(Some(event))),
        answers: tx,
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
        .with_state(rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("sosw.json");
    std::fs::write(&file, config.to_string()).expect("config");
    let mut child = Command::new(binary)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "sosw_scheduler")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SOSW_CONFIG", &file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let got = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
    let _ = child.kill();
    let _ = child.wait();
    got.expect("an answer within a minute").expect("an answer")
}

#[tokio::test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
async fn the_scheduler_binary_serves_lambda_invocations() {
    let Some(moto) = common::moto().await else {
        return;
    };
    let tables = moto.tables("bin").await;
    let config = common::config(
        &tables,
        json!({"task_config": {"labourers": {"w": {"arn": "arn:aws:lambda:us-east-1:123456789012:function:w"}}}}),
    );
    let bin = env!("CARGO_BIN_EXE_sosw_scheduler");
    let job = json!({"job": {"lambda_name": "arn:aws:lambda:us-east-1:123456789012:function:w:live", "n": 1}});
    let (kind, body) = invoke_once(&moto, bin, &config, job).await;
    assert_eq!(kind, "response", "{body}");
    assert_eq!(
        (body["created"].clone(), body["finished"].clone()),
        (json!(1), json!(true)),
        "{body}"
    );
    let store = sosw_aws::DynamoStore::from_aws(&moto.aws, tables.clone());
    let live = sosw_core::ports::TaskStore::list(
        &store,
        &TaskQuery {
            table: Table::Live,
            labourer: Some("w".into()),
            greenfield: None,
            completed: None,
            limit: 10,
            after: None,
        },
    )
    .await
    .expect("list");
    assert_eq!(live.len(), 1);

    // A job for a labourer the config does not have: the invocation fails, saying why.
    let (kind, body) = invoke_once(&moto, bin, &config, json!({"job": {"lambda_name": "nope"}})).await;
    assert_eq!(kind, "error", "{body}");
    assert!(body.to_string().contains("unknown labourer `nope`"), "{body}");
}

#[test]
fn outside_lambda_or_without_config_the_binaries_say_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_sosw_orchestrator"))
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_LAMBDA_RUNTIME_API is not set"));

    let out = Command::new(env!("CARGO_BIN_EXE_sosw_worker_assistant"))
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("SOSW_CONFIG", "/nonexistent/sosw.json")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sosw_worker_assistant: no config at `/nonexistent/sosw.json`"),
        "{err}"
    );
}
