//! `sosw run --listen ADDR`: worker reports over HTTP, for workers that cannot run `sosw complete` on this machine's
//! store (an HTTP worker elsewhere, a container). `POST /report` takes the WorkerAssistant event, exactly what the
//! Lambda WorkerAssistant takes: `{"action": "mark_task_as_completed" | "mark_task_as_failed", "task_id", "stats"?,
//! "result"?}`.
//!
//! Answers: 200 with the task as stored; 400 for a bad event; 404 for an unknown task; 409 when the task cannot take
//! the report (never invoked, or moved meanwhile: report again); 503 when the store is busy or unavailable (retry).

use crate::UsageError;
use anyhow::Result;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use sosw_core::ports::StoreError;
use sosw_core::Clock;
use sosw_engine::{WorkerAssistant, WorkerAssistantError};
use std::net::SocketAddr;
use std::sync::Arc;

/// The running report endpoint; dropping it stops the server.
#[derive(Debug)]
pub struct ReportServer {
    /// `http://ADDR/report`, with the port the system chose for `:0`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReportServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Assistant {
    wa: Arc<WorkerAssistant>,
    clock: Arc<dyn Clock>,
}

/// The HTTP status of a refused report.
fn status_of(e: &WorkerAssistantError) -> StatusCode {
    match e {
        WorkerAssistantError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
        WorkerAssistantError::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
        WorkerAssistantError::Store(e) if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        WorkerAssistantError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn report(State(a): State<Assistant>, body: String) -> (StatusCode, Json<Value>) {
    let event: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("the report is not JSON: {e}")})),
            )
        }
    };
    match a.wa.handle_event(&event, a.clock.now()).await {
        Ok(row) => (StatusCode::OK, Json(Value::Object(row))),
        Err(e) => (status_of(&e), Json(json!({"error": e.to_string()}))),
    }
}

/// Binds `addr` and serves reports through `wa` until the returned server is dropped.
pub async fn serve(addr: SocketAddr, wa: WorkerAssistant, clock: Arc<dyn Clock>) -> Result<ReportServer> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {addr} for worker reports: {e}")))?;
    let local = listener.local_addr()?;
    let app = Router::new().route("/report", post(report)).with_state(Assistant {
        wa: Arc::new(wa),
        clock,
    });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the worker report endpoint stopped: {e}");
        }
    });
    Ok(ReportServer {
        url: format!("http://{local}/report"),
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_http_statuses() {
        let cases = [
            (WorkerAssistantError::MissingAction, StatusCode::BAD_REQUEST),
            (WorkerAssistantError::UnknownAction("x".into()), StatusCode::BAD_REQUEST),
            (
                WorkerAssistantError::Store(StoreError::NotFound("t".into())),
                StatusCode::NOT_FOUND,
            ),
            (
                WorkerAssistantError::Store(StoreError::conflict("t", "has not been invoked yet")),
                StatusCode::CONFLICT,
            ),
            (
                WorkerAssistantError::Store(StoreError::Throttled { retry_after: None }),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e), status, "{e}");
        }
    }
}
