//! `sosw run --listen ADDR`: worker reports over HTTP, for workers that cannot run `sosw complete` on this machine's
//! store (an HTTP worker elsewhere, a container). `POST /report` takes the WorkerAssistant event, exactly what the
//! Lambda WorkerAssistant takes: `{"action": "mark_task_as_completed" | "mark_task_as_failed", "task_id", "stats"?,
//! "result"?}`.
//!
//! Answers: 200 with the task as stored; 400 for a bad event; 404 for an unknown task; 409 when the task cannot take
//! the report (never invoked, or moved meanwhile: report again); 408 / 413 for a body sent too slowly / too large;
//! 503 when the store is busy or unavailable (retry).
//!
//! A client cannot starve the listener ([`Limits`]): a connection that does not send a request's headers in time —
//! a new one, or a kept-alive one gone idle — is closed; a body must arrive in time and be small; and at most
//! `max_connections` are served at once, the rest waiting in the kernel's listen backlog, so the daemon's file
//! descriptors (which its workers need) are never exhausted by report clients.

use crate::UsageError;
use anyhow::Result;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use sosw_core::ports::StoreError;
use sosw_core::Clock;
use sosw_engine::{WorkerAssistant, WorkerAssistantError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What one client may take of the report listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers, counted from the connection's start or, on a kept-alive connection, from
    /// the end of the previous response — so it is the idle timeout too.
    pub header_read: Duration,
    /// Time to send a request's body once its headers are in.
    pub body_read: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
}

impl Limits {
    /// `sosw run --listen`'s limits: 10 s for headers (and idle), 30 s for a body, 256 connections, 1 MiB bodies.
    pub const DEFAULT: Limits = Limits {
        header_read: Duration::from_secs(10),
        body_read: Duration::from_secs(30),
        max_connections: 256,
        max_body: 1024 * 1024,
    };
}

/// The running report endpoint; dropping it stops the server.
#[derive(Debug)]
pub struct ReportServer {
    /// `http://ADDR/report`, with the port the system chose for `:0`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
    /// Connections being served; each holds a clone.
    served: Arc<()>,
}

impl ReportServer {
    /// Connections being served now (at most `max_connections`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn connections(&self) -> usize {
        Arc::strong_count(&self.served) - 1
    }
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
    limits: Limits,
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

fn refused(status: StatusCode, error: String) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": error })))
}

async fn report(State(a): State<Assistant>, body: Body) -> (StatusCode, Json<Value>) {
    let max = a.limits.max_body;
    let body = match tokio::time::timeout(a.limits.body_read, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                return refused(StatusCode::PAYLOAD_TOO_LARGE, format!("the report is over {max} bytes"));
            }
            return refused(StatusCode::BAD_REQUEST, format!("reading the report: {e}"));
        }
        Err(_) => {
            return refused(
                StatusCode::REQUEST_TIMEOUT,
                format!("the report's body did not arrive within {:?}", a.limits.body_read),
            )
        }
    };
    let event: Value = match serde_json::from_slice(&body) {
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

/// Binds `addr` and serves reports through `wa` until the returned server is dropped, with [`Limits::DEFAULT`].
pub async fn serve(addr: SocketAddr, wa: WorkerAssistant, clock: Arc<dyn Clock>) -> Result<ReportServer> {
    serve_with(addr, wa, clock, Limits::DEFAULT).await
}

/// [`serve`] with chosen limits.
pub async fn serve_with(
    addr: SocketAddr,
    wa: WorkerAssistant,
    clock: Arc<dyn Clock>,
    limits: Limits,
) -> Result<ReportServer> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {addr} for worker reports: {e}")))?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/report", post(report))
        // The body limit is applied (with its own answer) while reading the body in `report`.
        .layer(DefaultBodyLimit::disable())
        .with_state(Assistant {
            wa: Arc::new(wa),
            clock,
            limits,
        });
    let served = Arc::new(());
    let task = tokio::spawn(accept_loop(listener, app, Arc::downgrade(&served), limits));
    Ok(ReportServer {
        url: format!("http://{local}/report"),
        task,
        served,
    })
}

/// Accepts a connection only when a slot is free, and serves each with hyper's header-read timeout. Connections
/// live in a `JoinSet` owned here, so stopping the server stops them too.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, served: std::sync::Weak<()>, limits: Limits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors or memory: say so and let closing connections make room, without spinning.
                tracing::warn!("the worker report endpoint cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let Some(serving) = served.upgrade() else {
            return;
        };
        connections.spawn(async move {
            let _slot = (slot, serving);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("a worker report connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// An upper bound for what should take well under a second; never a synchronisation.
    const PATIENCE: Duration = Duration::from_secs(20);

    async fn server(limits: Limits) -> (ReportServer, SocketAddr, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = sosw_sqlite::SqliteStore::open_or_create(dir.path().join("sosw.db")).expect("store");
        sosw_core::ports::TaskStore::init(&store).await.expect("init");
        let clock: Arc<dyn Clock> = sosw_testkit::ManualClock::at_secs(1_700_000_000);
        let config = sosw_core::Config::from_value(&serde_json::json!({})).expect("config");
        let wa = WorkerAssistant::new(
            Arc::new(store),
            sosw_engine::MetaHandler::new(None, "test"),
            clock.clone(),
            Arc::new(config),
        );
        let server = serve_with("127.0.0.1:0".parse().expect("addr"), wa, clock, limits)
            .await
            .expect("serve");
        let addr = server
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/report")
            .parse()
            .expect("addr");
        (server, addr, dir)
    }

    /// Everything the server sends until it closes the connection (a reset counts as closed).
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            Err(_) => panic!("the server kept the connection open for {PATIENCE:?}"),
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    fn report_request(body: &str) -> String {
        format!(
            "POST /report HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // A deadline on a real server: the monotonic clock (`clippy.toml`).
    #[allow(clippy::disallowed_methods)]
    async fn half_requests_are_timed_out_and_capped_and_reports_still_answered() {
        // Long enough for 200 connections to be opened before the first are timed out, so the cap is seen.
        let limits = Limits {
            header_read: Duration::from_secs(2),
            body_read: Duration::from_millis(300),
            max_connections: 64,
            max_body: 1024,
        };
        let (server, addr, _dir) = server(limits).await;
        let started = Instant::now();
        let mut starved = Vec::new();
        for _ in 0..200 {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(b"POST /rep").await.expect("half a request line");
            starved.push(c);
        }
        // The cap: the server serves 64 of them, the rest wait in the backlog (the listener holds no more).
        while server.connections() < 64 {
            assert!(server.connections() <= 64);
            assert!(started.elapsed() < PATIENCE, "only {} served", server.connections());
            tokio::task::yield_now().await;
        }
        // (No exact count from here on: on a loaded machine the first connections may already be timing out.)

        // A worker's report gets its answer meanwhile (404: no such task), and its kept-alive connection is
        // closed once idle for the header timeout.
        let event = r#"{"action": "mark_task_as_completed", "task_id": "nope"}"#;
        let mut worker = TcpStream::connect(addr).await.expect("connect");
        worker.write_all(report_request(event).as_bytes()).await.expect("send");
        let answer = until_closed(&mut worker).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(answer.contains("not found"), "{answer}");

        // Every half request is closed by the header timeout.
        for c in &mut starved {
            assert!(server.connections() <= 64);
            let got = until_closed(c).await;
            assert!(!got.starts_with("HTTP/1.1 2"), "{got}");
        }
        while server.connections() > 0 {
            assert!(started.elapsed() < PATIENCE, "{} still served", server.connections());
            tokio::task::yield_now().await;
        }

        // A body that stalls is answered 408, one over the limit 413.
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let head = report_request(&"x".repeat(100));
        slow.write_all(&head.as_bytes()[..head.len() - 90]).await.expect("send");
        let answer = until_closed(&mut slow).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let mut big = TcpStream::connect(addr).await.expect("connect");
        big.write_all(report_request(&"x".repeat(2000)).as_bytes())
            .await
            .expect("send");
        let answer = until_closed(&mut big).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }

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
