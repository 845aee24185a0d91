//! The SNS notifier against a local moto_server: the topic's SQS subscriber receives the notification. Needs
//! `SOSW_TEST_DYNAMODB` (the moto endpoint) and `SOSW_TEST_PYTHON_SOSW` (a Python with boto3).

use serde_json::Value;
use sosw_aws::SnsNotifier;
use sosw_core::ports::Notifier;
use std::process::Command;

fn python(interpreter: &str, args: &[&str]) -> Value {
    let out = Command::new(interpreter)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/moto_sns.py"))
        .args(args)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
async fn dead_tasks_reach_the_topic_in_one_message() {
    let (Some(endpoint), Some(py)) = (
        sosw_testkit::service("SOSW_TEST_DYNAMODB"),
        sosw_testkit::service("SOSW_TEST_PYTHON_SOSW"),
    ) else {
        return;
    };
    let name = format!("sosw-dead-{}", std::process::id());
    let setup = python(&py, &["setup", &endpoint, &name]);
    let topic = setup["topic"].as_str().expect("topic");
    let queue = setup["queue"].as_str().expect("queue");
    let client = sosw_aws::Aws::local(&endpoint).await.sns();
    let notifier = SnsNotifier::new(client, topic);
    let messages = vec!["Closing dead task: a ".to_string(), "Closing dead task: b ".to_string()];
    notifier
        .notify("``sosw`` Dead Task", &messages)
        .await
        .expect("published");
    let got = python(&py, &["read", &endpoint, queue]);
    assert_eq!(got.as_array().map(Vec::len), Some(1), "{got}");
    assert_eq!(got[0]["Subject"], Value::String("``sosw`` Dead Task".into()));
    assert_eq!(
        got[0]["Message"],
        Value::String("Closing dead task: a \n\n#####\n\nClosing dead task: b ".into())
    );
}
