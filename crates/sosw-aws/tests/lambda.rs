//! The Lambda invoker against a local moto_server (Lambda without Docker), which records what it was sent. Needs
//! `SOSW_TEST_DYNAMODB` (the moto endpoint) and `SOSW_TEST_PYTHON_SOSW` (a Python with boto3, to create the
//! function); `.ci/run` provides both.

use sosw_aws::LambdaInvoker;
use sosw_core::decide::FailureKind;
use sosw_core::ports::{InvokeOutcome, Invoker};
use sosw_testkit::fakes::sample_task;
use std::process::Command;

#[tokio::test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
async fn invokes_asynchronously_and_refuses_oversized_events() {
    let (Some(endpoint), Some(python)) = (
        sosw_testkit::service("SOSW_TEST_DYNAMODB"),
        sosw_testkit::service("SOSW_TEST_PYTHON_SOSW"),
    ) else {
        return;
    };
    let name = format!("worker{}", std::process::id());
    let out = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/moto_lambda.py"))
        .args([&endpoint, &name])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let arn = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(arn.ends_with(&format!(":function:{name}")), "{arn}");

    let client = sosw_aws::Aws::local(&endpoint).await.lambda();
    let task = sample_task("t1");
    let event = r#"{"task_id": "t1", "labourer_id": "w", "n": 1}"#;
    let invoker = LambdaInvoker::new(client.clone(), &arn);
    sosw_testkit::moto::start_recording(&endpoint).await;
    assert_eq!(invoker.invoke(&task, event).await, Ok(InvokeOutcome::Accepted));
    assert_eq!(
        sosw_testkit::moto::recorded_invocations(&endpoint, &name).await,
        vec![serde_json::json!({"task_id": "t1", "labourer_id": "w", "n": 1})],
        "delivered once, asynchronously, as sent"
    );

    // (moto accepts an asynchronous invocation even of a function that does not exist, so the classification of
    // Lambda's error codes is unit-tested in `lambda.rs`.)
    let huge = format!(r#"{{"blob": "{}"}}"#, "x".repeat(300 * 1024));
    let err = invoker.invoke(&task, &huge).await.expect_err("too large");
    assert_eq!(err.kind, FailureKind::Permanent);
    assert!(
        err.message.contains("256 KiB") && err.message.contains("not sent"),
        "{}",
        err.message
    );
}

/// Issue #8.9: a Lambda endpoint that does not speak Lambda's API (here a web server answering 404 with HTML), or
/// that refuses connections, is the labourer's fault: its tasks must wait, not die. (No moto needed.)
#[tokio::test]
async fn an_endpoint_that_is_not_lambda_is_the_labourers_fault() {
    use axum::http::StatusCode;
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            [("content-type", "text/html")],
            "<html><body>Not Found</body></html>",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let task = sample_task("t1");
    let event = r#"{"task_id": "t1"}"#;
    let web = sosw_aws::Aws::local(&format!("http://{addr}")).await.lambda();
    let err = LambdaInvoker::new(web, "arn:aws:lambda:us-west-2:000000000000:function:typo")
        .invoke(&task, event)
        .await
        .expect_err("not Lambda");
    assert_eq!(err.kind, FailureKind::Labourer, "{}", err.message);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let nobody = sosw_aws::Aws::local(&refused).await.lambda();
    let err = LambdaInvoker::new(nobody, "worker")
        .invoke(&task, event)
        .await
        .expect_err("refused");
    assert_eq!(err.kind, FailureKind::Labourer, "{}", err.message);
}
