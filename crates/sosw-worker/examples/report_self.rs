//! An embedded sosw process worker in Rust that reports for itself (`"report": "self"`): it reads the task's event
//! from stdin, "counts" its items, and reports completion with stats and a result through `sosw complete` — or,
//! for an event with `"fail": true`, failure.
//!
//! ```json
//! "labourers": {"counter": {"command": ["target/release/examples/report_self"], "report": "self"}}
//! ```

use sosw_worker::{Report, Reporter, Task, WorkerError};

#[tokio::main]
async fn main() -> Result<(), WorkerError> {
    let task = Task::from_stdin()?;
    let items: Vec<serde_json::Value> = task.get("items").unwrap_or_default();
    let reporter = Reporter::from_env().await?;
    let report = Report::new()
        .stat("items", items.len())
        .result("labourer", task.labourer_id().unwrap_or_default());
    if task.get::<bool>("fail").unwrap_or(false) {
        reporter.failed(task.task_id(), &report).await
    } else {
        reporter.completed(task.task_id(), &report).await
    }
}
