//! The routes. Each checks the caller's scope first, then validates its input completely, then calls the engine:
//! a refused request writes nothing.

use crate::error::ApiError;
use crate::metrics::{self, Scrape};
use crate::{read_json, Service};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};
use sosw_core::config::Scope;
use sosw_core::payload::construct_payload;
use sosw_core::ports::{Table, TaskQuery};
use sosw_core::task::Whereabouts;
use sosw_core::{Invocation, NewTask, TaskState};
use sosw_engine::control::{change, ControlChange};
use sosw_engine::status::{labourer_status, status};
use sosw_engine::tasks::{list_page, listed_labourers, PageCursor};
use std::sync::Arc;

mod jobs;
mod labourers;
mod observe;
mod reports;
mod tasks;

use jobs::*;
use labourers::*;
use observe::*;
use reports::*;
use tasks::*;

type Shared = State<Arc<Service>>;
type ApiResult = Result<Response, ApiError>;

/// The most tasks one request may create, and the most rows one listing page may hold.
pub const MAX_BATCH: usize = 10_000;
pub const MAX_PAGE: usize = 1_000;
const DEFAULT_PAGE: usize = 100;

/// One route: its method, its path, and what serves it.
#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    handler: MethodRouter<Arc<Service>>,
}

/// A route serving `handler` for `method` only: the method is named once, for the table and the router alike.
fn route<H, T>(method: &'static str, path: &'static str, handler: H) -> Route
where
    H: axum::handler::Handler<T, Arc<Service>>,
    T: 'static,
{
    let filter = match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        other => unreachable!("the route table names no method `{other}`"),
    };
    Route {
        method,
        path,
        handler: on(filter, handler),
    }
}

/// Every route the router serves, and nothing else: [`router`] is built from this table, the committed OpenAPI
/// document (`assets/openapi.json`) lists exactly these (a test checks both ways), and a method a path does not
/// list is a 405.
pub fn routes() -> Vec<Route> {
    let openapi = || async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) };
    vec![
        route("GET", "/", dashboard),
        route("GET", "/healthz", healthz),
        route("GET", "/readyz", readyz),
        route("GET", "/metrics", prometheus),
        route("POST", "/report", report),
        route("POST", "/api/reports", report),
        route("GET", "/api/openapi.json", openapi),
        route("GET", "/api/history", history),
        route("GET", "/api/labourers", labourers),
        route("GET", "/api/labourers/{id}", labourer),
        route("POST", "/api/labourers/{id}/pause", pause),
        route("POST", "/api/labourers/{id}/resume", resume),
        route("PUT", "/api/labourers/{id}/limit", set_limit),
        route("GET", "/api/tasks", list_tasks),
        route("POST", "/api/tasks", create_tasks),
        route("GET", "/api/tasks/{id}", task),
        route("POST", "/api/tasks/{id}/requeue", requeue),
        route("GET", "/api/jobs", list_jobs),
        route("POST", "/api/jobs", submit_job),
        route("GET", "/api/jobs/{id}", job),
    ]
}

/// The OpenAPI document of [`routes`].
pub const OPENAPI: &str = include_str!("../../assets/openapi.json");

/// Every route of the service ([`routes`]).
pub fn router(service: Arc<Service>) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<Arc<Service>>)> = Vec::new();
    for r in routes() {
        match by_path.iter_mut().find(|(path, _)| *path == r.path) {
            Some((_, methods)) => *methods = std::mem::take(methods).merge(r.handler),
            None => by_path.push((r.path, r.handler)),
        }
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| router.route(path, methods))
        .fallback(|| async { ApiError::not_found("no such route; see docs/api.md") })
        // Bodies are read (with their own limit and answer) by `read_json`.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(service.clone(), same_origin))
        .with_state(service)
}

/// An open server (no token configured, so on loopback) trusts whoever reaches it — which a web page in the
/// operator's browser also can: a cross-site form POST, or DNS rebinding (a hostile name pointed at 127.0.0.1).
/// So an open server answers only requests addressed to a loopback name, and refuses any request a browser sent from
/// another origin. (With tokens, a browser never sends one by itself: nothing to check.)
async fn same_origin(State(s): Shared, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !s.auth.is_open() {
        return next.run(req).await;
    }
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !host.is_empty() && !sosw_core::config::is_loopback_host(host) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this server has no token, so it answers loopback names only, not `{host}`"),
        )
        .into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        if origin != format!("http://{host}") {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("a request from the web origin `{origin}`: this server has no token, so only its own pages may call it"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn ok(value: Value) -> ApiResult {
    Ok(Json(value).into_response())
}

/// The dashboard: one page, embedded in the binary; it reads the API with the token the user gives it.
const DASHBOARD: &str = include_str!("../../assets/dashboard.html");

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
                 img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DASHBOARD,
    )
        .into_response()
}

async fn history(State(s): Shared, headers: HeaderMap) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    ok(json!({
        "interval_seconds": crate::history::SAMPLE_EVERY.as_secs(),
        "samples": s.history.samples(),
    }))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers a read.
async fn readyz(State(s): Shared) -> Response {
    match s.wiring.store.get("sosw-readyz-probe").await {
        Ok(_) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the store: {e}"),
        )
        .into_response(),
    }
}

fn prefix(at: &str, e: ApiError) -> ApiError {
    ApiError {
        message: format!("{at}: {}", e.message),
        ..e
    }
}

fn object_or_empty(v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(format!(
            "expected a JSON object, got {}",
            sosw_core::payload::shown(&other)
        ))),
    }
}

fn known_keys(obj: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown field `{k}`; expected {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}
