//! The reporters with real peers: a child process standing in for `sosw` (what it is called with, and a refusal
//! surfacing as an error), and the WorkerAssistant invocation on moto_server (`SOSW_TEST_DYNAMODB`), read back
//! from the server's request recorder.

use serde_json::json;
use sosw_worker::{Report, Reporter, WorkerError};

#[tokio::test]
async fn the_cli_reporter_runs_sosw_complete_fail_and_heartbeat() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("calls");
    let bin = dir.path().join("sosw");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nfor id; do :; done\n[ \"$id\" = refused ] && {{ echo 'task `refused` not found' >&2; exit 1; }}\nexit 0\n",
            log.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let reporter = Reporter::Cli { bin };
    reporter
        .completed("t1", &Report::new().stat("rows", 3).result("url", "s3://b/k"))
        .await
        .expect("completed");
    reporter.failed("t2", &Report::new()).await.expect("failed");
    reporter.heartbeat("t3").await.expect("heartbeat");
    // An id that looks like an option stays the task's id.
    reporter.completed("--help", &Report::new()).await.expect("completed");
    let err = reporter
        .completed("refused", &Report::new())
        .await
        .expect_err("refused");
    assert!(matches!(err, WorkerError::Report { .. }), "{err}");
    assert!(err.to_string().contains("task `refused` not found"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&log).expect("log"),
        "complete --stats {\"rows\":3} --result {\"url\":\"s3://b/k\"} -- t1\nfail -- t2\nheartbeat -- t3\n\
         complete -- --help\ncomplete -- refused\n"
    );
}
#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn the_lambda_reporter_invokes_the_worker_assistant_as_python_sosw_does() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    sosw_testkit::moto::lambda_without_docker(&endpoint).await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_lambda::config::Credentials::new("x", "x", None, None, "test"))
        .load()
        .await;
    let function = format!("wa_{}", std::process::id());
    let reporter = Reporter::Lambda {
        client: aws_sdk_lambda::Client::new(&sdk),
        function: function.clone(),
    };
    sosw_testkit::moto::start_recording(&endpoint).await;
    reporter
        .completed("t1", &Report::new().stat("rows", 3))
        .await
        .expect("completed");
    reporter.failed("t2", &Report::new()).await.expect("failed");
    let events = sosw_testkit::moto::recorded_invocations(&endpoint, &function).await;
    assert_eq!(
        events,
        vec![
            json!({"action": "mark_task_as_completed", "task_id": "t1", "stats": {"rows": 3}}),
            json!({"action": "mark_task_as_failed", "task_id": "t2"}),
        ]
    );
}
