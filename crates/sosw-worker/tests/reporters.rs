//! The reporters with real peers: a child process standing in for `sosw` (what it is called with, and a refusal
//! surfacing as an error), and the WorkerAssistant invocation on moto_server (`SOSW_TEST_DYNAMODB`), read back
//! from the server's request recorder.

use base64::Engine;
use serde_json::{json, Value};
use sosw_worker::{Report, Reporter, WorkerError};

#[tokio::test]
async fn the_cli_reporter_runs_sosw_complete_and_fail() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("calls");
    let bin = dir.path().join("sosw");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n[ \"$2\" = refused ] && {{ echo 'task `refused` not found' >&2; exit 1; }}\nexit 0\n",
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
    let err = reporter
        .completed("refused", &Report::new())
        .await
        .expect_err("refused");
    assert!(matches!(err, WorkerError::Report { .. }), "{err}");
    assert!(err.to_string().contains("task `refused` not found"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&log).expect("log"),
        "complete t1 --stats {\"rows\":3} --result {\"url\":\"s3://b/k\"}\nfail t2\ncomplete refused\n"
    );
}

#[tokio::test]
async fn the_lambda_reporter_invokes_the_worker_assistant_as_python_sosw_does() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let http = reqwest::Client::new();
    let moto = |path: &str| format!("{endpoint}/moto-api/{path}");
    http.post(moto("config"))
        .json(&json!({"lambda": {"use_docker": false}}))
        .send()
        .await
        .expect("moto");
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
    for path in ["recorder/reset-recording", "recorder/start-recording"] {
        http.post(moto(path)).send().await.expect("recorder");
    }
    reporter
        .completed("t1", &Report::new().stat("rows", 3))
        .await
        .expect("completed");
    reporter.failed("t2", &Report::new()).await.expect("failed");
    http.post(moto("recorder/stop-recording"))
        .send()
        .await
        .expect("recorder");
    let text = http
        .get(moto("recorder/download-recording"))
        .send()
        .await
        .expect("recording")
        .text()
        .await
        .expect("text");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.contains(&function) && u.ends_with("/invocations"))
        })
        .map(|e| {
            let body = e["body"].as_str().unwrap_or_default();
            let bytes = if e["body_encoded"] == json!(true) {
                base64::engine::general_purpose::STANDARD.decode(body).expect("base64")
            } else {
                body.as_bytes().to_vec()
            };
            serde_json::from_slice(&bytes).expect("json")
        })
        .collect();
    assert_eq!(
        events,
        vec![
            json!({"action": "mark_task_as_completed", "task_id": "t1", "stats": {"rows": 3}}),
            json!({"action": "mark_task_as_failed", "task_id": "t2"}),
        ]
    );
}
