//! What the Lambda handler tests share: a moto_server (`SOSW_TEST_DYNAMODB`, with Lambda without Docker), a Python
//! with boto3 (`SOSW_TEST_PYTHON_SOSW`) for the SNS topic and its SQS subscriber, fresh tables per test, and the
//! server's request recorder, which shows what the handlers invoked.
#![allow(dead_code)]

pub mod iam;

use serde_json::{json, Value};
use sosw_aws::{Aws, DynamoStore, Tables};
use sosw_core::ports::TaskStore;
use sosw_core::{Clock, Config, Essential};
use sosw_lambda::Container;
use std::process::Command;
use std::sync::Arc;

pub struct Moto {
    pub endpoint: String,
    pub python: String,
    pub aws: Aws,
}

/// The server, or `None` (skipped) when `SOSW_TEST_DYNAMODB` is unset outside CI.
pub async fn moto() -> Option<Moto> {
    let endpoint = sosw_testkit::service("SOSW_TEST_DYNAMODB")?;
    let python = sosw_testkit::service("SOSW_TEST_PYTHON_SOSW")?;
    sosw_testkit::moto::lambda_without_docker(&endpoint).await;
    let aws = Aws::local(&endpoint).await;
    Some(Moto { endpoint, python, aws })
}

impl Moto {
    /// A fresh set of sosw tables, named `<prefix>sosw_*`.
    pub async fn tables(&self, prefix: &str) -> Tables {
        let tables = Tables::prefixed(&format!("{prefix}{}_", std::process::id()));
        DynamoStore::from_aws(&self.aws, tables.clone())
            .init()
            .await
            .expect("tables");
        tables
    }

    pub async fn bucket(&self, name: &str) -> String {
        let bucket = format!("{name}-{}", std::process::id());
        self.aws
            .s3()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("bucket");
        bucket
    }

    /// An SNS topic with an SQS queue subscribed: (topic ARN, queue URL).
    pub fn topic(&self, name: &str) -> (String, String) {
        let v = self.python_sns(&["setup", &self.endpoint, &format!("{name}-{}", std::process::id())]);
        (
            v["topic"].as_str().expect("topic").to_string(),
            v["queue"].as_str().expect("queue").to_string(),
        )
    }

    /// The notifications the queue received since the last call: `[{"Subject", "Message"}]`.
    pub fn notifications(&self, queue: &str) -> Vec<Value> {
        match self.python_sns(&["read", &self.endpoint, queue]) {
            Value::Array(a) => a,
            other => panic!("not a list: {other}"),
        }
    }

    fn python_sns(&self, args: &[&str]) -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../sosw-aws/tests/python/moto_sns.py");
        let out = Command::new(&self.python)
            .arg(script)
            .args(args)
            .output()
            .expect("python runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }

    pub async fn start_recording(&self) {
        sosw_testkit::moto::start_recording(&self.endpoint).await;
    }

    pub async fn recorded_invocations(&self, function: &str) -> Vec<Value> {
        sosw_testkit::moto::recorded_invocations(&self.endpoint, function).await
    }

    /// Stops recording; every request recorded since [`Moto::start_recording`].
    pub async fn recorded_requests(&self) -> Vec<Value> {
        sosw_testkit::moto::recorded_requests(&self.endpoint).await
    }
}

/// A config on `tables` with `extra` merged over it at the top level.
pub fn config(tables: &Tables, extra: Value) -> Value {
    let mut c = json!({
        "task_config": {
            "dynamo_db_config": {"table_name": tables.tasks},
            "sosw_closed_tasks_table": tables.closed,
            "sosw_retry_tasks_table": tables.retry,
        },
        "meta_handler_config": {"dynamo_db_config": {"table_name": tables.meta}},
        "jobs_table": tables.jobs,
        "labourers_table": tables.labourers,
    });
    if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
        for (k, v) in extra {
            match (c.get_mut(&k), v) {
                (Some(Value::Object(into)), Value::Object(v)) => into.extend(v),
                (_, v) => {
                    c.insert(k, v);
                }
            }
        }
    }
    c
}

/// The container of `essential` for `config`, on the test clock.
pub fn container(moto: &Moto, config: &Value, essential: Essential, clock: Arc<dyn Clock>) -> Container {
    let config = Config::from_layers(std::slice::from_ref(config), essential).expect("config");
    Container::new(moto.aws.clone(), config, essential, clock).expect("container")
}

pub async fn place(store: &Arc<dyn TaskStore>, id: &str) -> sosw_core::Place {
    store.get(id).await.expect("get").expect("the task exists").place
}
