//! Write sosw workers in Rust.
//!
//! A worker receives one task's event — the task's payload with its own fields (`task_id`, `labourer_id`,
//! `created_at`, `greenfield`, `attempts`) on top, Python sosw's flat event — does the work, and reports the outcome
//! with optional `stats` and `result` (stored as `stat_<k>` / `result_<k>` on the task). Where the report goes:
//!
//! - **embedded sosw, over HTTP** (`sosw run --listen ADDR`): a POST of the WorkerAssistant event to the URL a process
//!   worker finds in `SOSW_REPORT_URL` and an HTTP worker in the `X-Sosw-Report-Url` header ([`Reporter::Http`]);
//! - **embedded sosw, through the binary** (a process worker with `"report": "self"`): the `sosw` binary the
//!   orchestrator named in `SOSW_BIN`, on the store and config in `SOSW_STORE` / `SOSW_CONFIG` ([`Reporter::Cli`]);
//! - **AWS Lambda** (feature `lambda`): an asynchronous invocation of the WorkerAssistant function
//!   (`sosw_worker_assistant`, or `SOSW_WORKER_ASSISTANT_LAMBDA`) with sosw's event
//!   `{"action": "mark_task_as_completed" | "mark_task_as_failed", "task_id", "stats"?, "result"?}`, exactly as
//!   Python's `sosw.Worker` sends it, so a Rust worker works with a Python WorkerAssistant and the other way round.
//!
//! ```no_run
//! # async fn work() -> Result<(), sosw_worker::WorkerError> {
//! let task = sosw_worker::Task::from_stdin()?;
//! let day: String = task.get("day")?;
//! // … the work …
//! let report = sosw_worker::Report::new().stat("rows", 42).result("file", format!("s3://out/{day}.csv"));
//! sosw_worker::Reporter::from_env().await?.completed(task.task_id(), &report).await?;
//! # Ok(())
//! # }
//! ```
//!
//! An embedded process worker that does not use `"report": "self"` is reported by its exit status instead (and a JSON
//! object on stdout is its result), so it needs no reporter at all; an HTTP worker in `sync` mode answers with its
//! result.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::PathBuf;

/// The WorkerAssistant function Python sosw's workers report to (`sosw_worker_assistant_lambda`).
pub const DEFAULT_WORKER_ASSISTANT: &str = "sosw_worker_assistant";

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the task event is not a JSON object: {0}")]
    NotAnEvent(String),
    #[error("the task event has no string `task_id`")]
    NoTaskId,
    #[error("the task event has no `{0}`")]
    Missing(String),
    #[error("`{key}` in the task event: {reason}")]
    BadField { key: String, reason: String },
    #[error("reading the event from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("nowhere to report to: {0}")]
    NoReporter(String),
    #[error("reporting task {task_id}: {reason}")]
    Report { task_id: String, reason: String },
}

/// One task's event.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    event: Map<String, Value>,
    task_id: String,
}

impl Task {
    pub fn from_value(event: Value) -> Result<Task, WorkerError> {
        let Value::Object(event) = event else {
            return Err(WorkerError::NotAnEvent(event.to_string()));
        };
        let task_id = event
            .get("task_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(WorkerError::NoTaskId)?
            .to_string();
        Ok(Task { event, task_id })
    }

    pub fn from_json(text: &str) -> Result<Task, WorkerError> {
        let v: Value = serde_json::from_str(text).map_err(|e| WorkerError::NotAnEvent(e.to_string()))?;
        Task::from_value(v)
    }

    /// The event an embedded process worker receives on stdin.
    pub fn from_stdin() -> Result<Task, WorkerError> {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(WorkerError::Stdin)?;
        Task::from_json(&text)
    }

    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    pub fn labourer_id(&self) -> Option<&str> {
        self.event.get("labourer_id").and_then(Value::as_str)
    }

    /// Invocations before this one (0 on the first).
    pub fn attempts(&self) -> u64 {
        self.event.get("attempts").and_then(Value::as_u64).unwrap_or(0)
    }

    /// One field of the event, typed.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T, WorkerError> {
        let v = self
            .event
            .get(key)
            .ok_or_else(|| WorkerError::Missing(key.to_string()))?;
        T::deserialize(v).map_err(|e| WorkerError::BadField {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// The whole event as the worker's own type (unknown fields are ignored unless the type says otherwise).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, WorkerError> {
        T::deserialize(Value::Object(self.event.clone())).map_err(|e| WorkerError::BadField {
            key: "<event>".into(),
            reason: e.to_string(),
        })
    }

    /// Extends this task's running window through `reporter` ([`Reporter::heartbeat`]).
    pub async fn heartbeat(&self, reporter: &Reporter) -> Result<(), WorkerError> {
        reporter.heartbeat(self.task_id()).await
    }

    pub fn event(&self) -> &Map<String, Value> {
        &self.event
    }
}

/// What a worker reports with its outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub stats: Map<String, Value>,
    pub result: Map<String, Value>,
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    /// Stored as `stat_<key>`.
    pub fn stat(mut self, key: impl Into<String>, value: impl Into<Value>) -> Report {
        self.stats.insert(key.into(), value.into());
        self
    }

    /// Stored as `result_<key>`.
    pub fn result(mut self, key: impl Into<String>, value: impl Into<Value>) -> Report {
        self.result.insert(key.into(), value.into());
        self
    }
}

/// The outcome of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    /// Not an outcome: the task is still running, and its running window is extended (sosw-rs only).
    Heartbeat,
}

impl Outcome {
    /// The WorkerAssistant's action name.
    pub fn action(self) -> &'static str {
        match self {
            Outcome::Completed => "mark_task_as_completed",
            Outcome::Failed => "mark_task_as_failed",
            Outcome::Heartbeat => "heartbeat",
        }
    }

    fn cli_command(self) -> &'static str {
        match self {
            Outcome::Completed => "complete",
            Outcome::Failed => "fail",
            Outcome::Heartbeat => "heartbeat",
        }
    }
}

/// The WorkerAssistant event for a report (reference §2.8): `stats` and `result` only when not empty.
pub fn assistant_event(outcome: Outcome, task_id: &str, report: &Report) -> Value {
    let mut e = Map::new();
    e.insert("action".into(), Value::String(outcome.action().into()));
    e.insert("task_id".into(), Value::String(task_id.into()));
    if !report.stats.is_empty() {
        e.insert("stats".into(), Value::Object(report.stats.clone()));
    }
    if !report.result.is_empty() {
        e.insert("result".into(), Value::Object(report.result.clone()));
    }
    Value::Object(e)
}

/// The header in which `sosw run --listen` tells an HTTP worker where to report.
pub const REPORT_URL_HEADER: &str = "X-Sosw-Report-Url";

/// The header in which `sosw run` gives an HTTP worker the report token of its invocation (a process worker finds
/// it in `SOSW_REPORT_TOKEN`); a report carries it back in the same header. A token is good for that task's
/// latest invocation only.
pub const REPORT_TOKEN_HEADER: &str = "X-Sosw-Report-Token";

/// Where reports go.
#[derive(Debug, Clone)]
pub enum Reporter {
    /// A POST of the WorkerAssistant event to `sosw run --listen`'s `/report` (`http://` or `https://`), with the
    /// invocation's report token when it has one ([`REPORT_TOKEN_HEADER`]).
    Http { url: String, token: Option<String> },
    /// `<bin> complete|fail TASK_ID --stats JSON --result JSON`, the `sosw` binary (`SOSW_BIN`), which finds the
    /// store and config in the environment the orchestrator gave the worker.
    Cli { bin: PathBuf },
    /// An asynchronous invocation of the WorkerAssistant function.
    #[cfg(feature = "lambda")]
    Lambda {
        client: aws_sdk_lambda::Client,
        function: String,
    },
}

impl Reporter {
    /// `SOSW_REPORT_URL` set: [`Reporter::Http`]; else `SOSW_BIN` set (an embedded process worker):
    /// [`Reporter::Cli`]; else, with the `lambda` feature and in AWS Lambda (`AWS_LAMBDA_FUNCTION_NAME` set):
    /// [`Reporter::Lambda`] to `SOSW_WORKER_ASSISTANT_LAMBDA` or `sosw_worker_assistant`.
    pub async fn from_env() -> Result<Reporter, WorkerError> {
        if let Some(url) = std::env::var("SOSW_REPORT_URL").ok().filter(|u| !u.is_empty()) {
            let token = std::env::var("SOSW_REPORT_TOKEN").ok().filter(|t| !t.is_empty());
            return Ok(Reporter::Http { url, token });
        }
        if let Some(bin) = std::env::var_os("SOSW_BIN").filter(|b| !b.is_empty()) {
            return Ok(Reporter::Cli { bin: bin.into() });
        }
        #[cfg(feature = "lambda")]
        if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let function =
                std::env::var("SOSW_WORKER_ASSISTANT_LAMBDA").unwrap_or_else(|_| DEFAULT_WORKER_ASSISTANT.to_string());
            return Ok(Reporter::Lambda {
                client: aws_sdk_lambda::Client::new(&sdk),
                function,
            });
        }
        Err(WorkerError::NoReporter(
            "none of SOSW_REPORT_URL, SOSW_BIN (set by embedded sosw for its process workers) or, with the `lambda` \
             feature, AWS_LAMBDA_FUNCTION_NAME is set"
                .into(),
        ))
    }

    pub async fn completed(&self, task_id: &str, report: &Report) -> Result<(), WorkerError> {
        self.send(Outcome::Completed, task_id, report).await
    }

    pub async fn failed(&self, task_id: &str, report: &Report) -> Result<(), WorkerError> {
        self.send(Outcome::Failed, task_id, report).await
    }

    /// Tells sosw the task is alive: its running window starts again (or lasts the labourer's
    /// `heartbeat_timeout`), so a long task is not expired and retried while it works. Refused for a task that is
    /// no longer running (expired, completed, closed). Python sosw's WorkerAssistant does not know this action.
    pub async fn heartbeat(&self, task_id: &str) -> Result<(), WorkerError> {
        self.send(Outcome::Heartbeat, task_id, &Report::new()).await
    }

    pub async fn send(&self, outcome: Outcome, task_id: &str, report: &Report) -> Result<(), WorkerError> {
        let fail = |reason: String| WorkerError::Report {
            task_id: task_id.to_string(),
            reason,
        };
        match self {
            Reporter::Http { url, token } => {
                let mut request = reqwest::Client::new()
                    .post(url)
                    .json(&assistant_event(outcome, task_id, report));
                if let Some(token) = token {
                    request = request.header(REPORT_TOKEN_HEADER, token);
                }
                let response = request.send().await.map_err(|e| fail(format!("POST {url}: {e}")))?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                // `{"error": {"code", "message"}}` (sosw-rs 0.2 on), or `{"error": "message"}` before it.
                let error = body.get("error");
                let why = error
                    .and_then(|e| e.get("message"))
                    .or(error)
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                Err(fail(format!("POST {url}: {status}: {why}")))
            }
            Reporter::Cli { bin } => {
                let mut cmd = tokio::process::Command::new(bin);
                cmd.arg(outcome.cli_command());
                if !report.stats.is_empty() {
                    cmd.arg("--stats").arg(Value::Object(report.stats.clone()).to_string());
                }
                if !report.result.is_empty() {
                    cmd.arg("--result")
                        .arg(Value::Object(report.result.clone()).to_string());
                }
                // After `--`, an id that looks like an option (`-h`, `--help`) is still the task's id.
                cmd.arg("--").arg(task_id);
                let out = cmd
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .map_err(|e| fail(format!("running `{}`: {e}", bin.display())))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(fail(format!(
                        "`{} {}` exited with {}: {}",
                        bin.display(),
                        outcome.cli_command(),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )))
                }
            }
            #[cfg(feature = "lambda")]
            Reporter::Lambda { client, function } => {
                let event = assistant_event(outcome, task_id, report).to_string();
                client
                    .invoke()
                    .function_name(function)
                    .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
                    .payload(aws_sdk_lambda::primitives::Blob::new(event))
                    .send()
                    .await
                    .map_err(|e| fail(aws_sdk_lambda::error::DisplayErrorContext(&e).to_string()))?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_assistant_event_is_python_sosws() {
        assert_eq!(
            assistant_event(Outcome::Completed, "t1", &Report::new()),
            json!({"action": "mark_task_as_completed", "task_id": "t1"}),
            "no empty stats or result"
        );
        assert_eq!(
            assistant_event(Outcome::Failed, "t1", &Report::new().stat("rows", 3).result("f", "x")),
            json!({"action": "mark_task_as_failed", "task_id": "t1", "stats": {"rows": 3}, "result": {"f": "x"}})
        );
        assert_eq!(
            assistant_event(Outcome::Heartbeat, "t1", &Report::new()),
            json!({"action": "heartbeat", "task_id": "t1"})
        );
    }

    #[test]
    fn events_are_read_and_typed() {
        let t = Task::from_json(
            r#"{"day": "2019-01-30", "items": [1, 2], "task_id": "t", "labourer_id": "w", "attempts": 1}"#,
        )
        .expect("event");
        assert_eq!((t.task_id(), t.labourer_id(), t.attempts()), ("t", Some("w"), 1));
        assert_eq!(t.get::<Vec<u32>>("items").expect("items"), vec![1, 2]);
        #[derive(serde::Deserialize)]
        struct Job {
            day: String,
        }
        assert_eq!(t.parse::<Job>().expect("typed").day, "2019-01-30");
        assert!(matches!(t.get::<u32>("day"), Err(WorkerError::BadField { .. })));
        assert!(matches!(t.get::<u32>("nope"), Err(WorkerError::Missing(_))));
        assert!(matches!(Task::from_json(r#"{"a": 1}"#), Err(WorkerError::NoTaskId)));
        assert!(matches!(Task::from_json("[1]"), Err(WorkerError::NotAnEvent(_))));
        assert!(matches!(Task::from_json("{"), Err(WorkerError::NotAnEvent(_))));
    }
}
