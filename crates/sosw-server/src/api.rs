//! The routes. Each checks the caller's scope first, then validates its input completely, then calls the engine:
//! a refused request writes nothing.

use crate::error::ApiError;
use crate::metrics::{self, Scrape};
use crate::{read_json, Service};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};
use sosw_core::config::Scope;
use sosw_core::payload::construct_payload;
use sosw_core::ports::{Table, TaskQuery};
use sosw_core::task::Whereabouts;
use sosw_core::{NewTask, Place, StoredTask, TaskState};
use sosw_engine::control::{change, ControlChange};
use sosw_engine::status::{labourer_status, status};
use sosw_engine::tasks::{list_page, listed_labourers, PageCursor};
use std::sync::Arc;

type Shared = State<Arc<Service>>;
type ApiResult = Result<Response, ApiError>;

/// The most tasks one request may create, and the most rows one listing page may hold.
pub const MAX_BATCH: usize = 10_000;
pub const MAX_PAGE: usize = 1_000;
const DEFAULT_PAGE: usize = 100;

/// Every route (method, path) the router serves: the committed OpenAPI document (`assets/openapi.json`) lists exactly
/// these, and a test checks both ways.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/report"),
    ("POST", "/api/reports"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/history"),
    ("GET", "/api/labourers"),
    ("GET", "/api/labourers/{id}"),
    ("POST", "/api/labourers/{id}/pause"),
    ("POST", "/api/labourers/{id}/resume"),
    ("PUT", "/api/labourers/{id}/limit"),
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks"),
    ("GET", "/api/tasks/{id}"),
    ("POST", "/api/tasks/{id}/requeue"),
    ("GET", "/api/jobs"),
    ("POST", "/api/jobs"),
    ("GET", "/api/jobs/{id}"),
];

/// The OpenAPI document of [`ROUTES`].
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

/// Every route of the service.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route(
            "/api/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/api/history", get(history))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/report", post(report))
        .route("/api/reports", post(report))
        .route("/api/labourers", get(labourers))
        .route("/api/labourers/{id}", get(labourer))
        .route("/api/labourers/{id}/pause", post(pause))
        .route("/api/labourers/{id}/resume", post(resume))
        .route("/api/labourers/{id}/limit", put(set_limit))
        .route("/api/tasks", get(list_tasks).post(create_tasks))
        .route("/api/tasks/{id}", get(task))
        .route("/api/tasks/{id}/requeue", post(requeue))
        .route("/api/jobs", get(list_jobs).post(submit_job))
        .route("/api/jobs/{id}", get(job))
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
    if !host.is_empty() && !is_loopback_host(host) {
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

/// `127.0.0.1:8787`, `localhost`, `[::1]:8787`, …
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn ok(value: Value) -> ApiResult {
    Ok(Json(value).into_response())
}

/// The dashboard: one page, embedded in the binary; it reads the API with the token the user gives it.
const DASHBOARD: &str = include_str!("../assets/dashboard.html");

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

async fn prometheus(State(s): Shared, headers: HeaderMap) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let now = s.clock.now();
    let statuses = status(&s.config, &s.wiring, now).await?;
    let mut scrapes = Vec::with_capacity(statuses.len());
    for st in &statuses {
        let oldest_queued = if st.counts.queued == 0 {
            None
        } else {
            head_of_queue(&s, &st.labourer_id, now).await?
        };
        scrapes.push(Scrape {
            status: st,
            oldest_queued,
        });
    }
    let text = metrics::render(&s.counters, &scrapes, now)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        return Ok(([(header::CONTENT_TYPE, metrics::OPENMETRICS)], text).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, metrics::TEXT_FORMAT)],
        metrics::text_format(&text),
    )
        .into_response())
}

/// When the task at the head of the labourer's queue was created.
async fn head_of_queue(s: &Service, labourer: &str, now: sosw_core::Time) -> Result<Option<sosw_core::Time>, ApiError> {
    let (range, completed) = TaskState::Queued.range(&s.config.markers_for(labourer, now));
    let q = TaskQuery {
        table: Table::Live,
        labourer: Some(labourer.to_string()),
        greenfield: Some(range),
        completed: Some(completed),
        limit: 1,
        after: None,
    };
    let head = s.wiring.store.list(&q).await?;
    Ok(head
        .first()
        .map(|t| sosw_core::Time::from_millis((t.task.created_at * 1000.0) as i64)))
}

/// A WorkerAssistant event (`mark_task_as_completed`, `mark_task_as_failed`, `heartbeat`), as `sosw run` has always
/// taken it on `/report`. Who may report ([`report_allowed`]): the worker of the task's latest invocation, with the
/// report token it was given; a caller with a `write` token; anyone on an open (loopback) server.
async fn report(State(s): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let event = read_json(&s.limits, body).await?;
    report_allowed(&s, &headers, &event).await?;
    let kind = match event
        .get("action")
        .or_else(|| event.get("actions"))
        .and_then(Value::as_str)
    {
        Some("mark_task_as_completed") => "completed",
        Some("mark_task_as_failed") => "failed",
        _ => "heartbeat",
    };
    let row = s.wa.handle_event(&event, s.clock.now()).await?;
    s.counters.observe_report(kind);
    ok(Value::Object(row))
}

/// Refuses (403, nothing written) a report whose token is not the task's latest invocation's: stale (the task was
/// invoked again since) or forged. Without a report token, the caller's bearer token needs `write` on a server with
/// tokens.
async fn report_allowed(s: &Service, headers: &HeaderMap, event: &Value) -> Result<(), ApiError> {
    let token = headers
        .get(sosw_core::ports::REPORT_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| event.get("report_token").and_then(Value::as_str));
    let Some(token) = token else {
        return s.auth.require(headers, Scope::Write).map(|_| ());
    };
    let task_id = event.get("task_id").and_then(Value::as_str).unwrap_or_default();
    let attempts = match s.wiring.store.get(task_id).await? {
        Some(t) => t.task.attempts,
        // Unknown: the WorkerAssistant says so (404).
        None => return Ok(()),
    };
    if s.report_tokens.verify(task_id, attempts, token) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "the report token is not the one of task `{task_id}`'s latest invocation: it is stale (the task was \
             invoked again since) or forged; nothing was recorded"
        ),
    ))
}

async fn labourers(State(s): Shared, headers: HeaderMap) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let all = status(&s.config, &s.wiring, s.clock.now()).await?;
    ok(json!({"labourers": all}))
}

async fn labourer(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    match labourer_status(&s.config, &s.wiring, &id, s.clock.now()).await? {
        Some(st) => ok(serde_json::to_value(st).unwrap_or(Value::Null)),
        None => Err(ApiError::not_found(format!(
            "unknown labourer `{id}`: it is not in `task_config.labourers`"
        ))),
    }
}

/// `{"until": "2h" | "2026-12-01T09:30:00Z", "reason": "..."}`, both optional.
async fn pause(State(s): Shared, headers: HeaderMap, Path(id): Path<String>, body: Body) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let body = object_or_empty(read_json(&s.limits, body).await?)?;
    known_keys(&body, &["until", "reason"])?;
    let now = s.clock.now();
    let until = match body.get("until") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => {
            Some(sosw_core::time::parse_until(t, now).map_err(|e| ApiError::bad_request(format!("`until`: {e}")))?)
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`until`: expected a time such as \"2h\" or \"2026-12-01T09:30:00Z\", got {other}"
            )))
        }
    };
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r.chars().count() <= 500 => Some(r.clone()),
        Some(Value::String(_)) => return Err(ApiError::bad_request("`reason`: at most 500 characters")),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`reason`: expected a string, got {other}"
            )))
        }
    };
    let control = change(
        &s.config,
        &s.wiring,
        &id,
        ControlChange::Pause { until, reason },
        &caller.name,
        now,
    )
    .await?;
    tracing::info!(labourer = %id, by = %caller.name, "paused through the API");
    ok(serde_json::to_value(control).unwrap_or(Value::Null))
}

async fn resume(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let control = change(
        &s.config,
        &s.wiring,
        &id,
        ControlChange::Resume,
        &caller.name,
        s.clock.now(),
    )
    .await?;
    tracing::info!(labourer = %id, by = %caller.name, "resumed through the API");
    ok(serde_json::to_value(control).unwrap_or(Value::Null))
}

/// `{"limit": N}` replaces `max_simultaneous_invocations` until `{"limit": null}` clears it.
async fn set_limit(State(s): Shared, headers: HeaderMap, Path(id): Path<String>, body: Body) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let body = object_or_empty(read_json(&s.limits, body).await?)?;
    known_keys(&body, &["limit"])?;
    let what = match body.get("limit") {
        Some(Value::Null) => ControlChange::ClearLimit,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => ControlChange::Limit(n),
            None => {
                return Err(ApiError::bad_request(format!(
                    "`limit`: expected a whole number from 0 to {}, or null to clear it, got {v}",
                    u32::MAX
                )))
            }
        },
        None => {
            return Err(ApiError::bad_request(
                "`limit` is required: a whole number, or null to clear it",
            ))
        }
    };
    let control = change(&s.config, &s.wiring, &id, what, &caller.name, s.clock.now()).await?;
    tracing::info!(labourer = %id, by = %caller.name, "limit changed through the API");
    ok(serde_json::to_value(control).unwrap_or(Value::Null))
}

async fn task(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let now = s.clock.now();
    let Some(t) = s.wiring.store.get(&id).await? else {
        return Err(ApiError::not_found(format!("task `{id}` not found")));
    };
    let events = match &s.wiring.meta {
        Some(meta) => meta.events_of(&id).await?,
        None => Vec::new(),
    };
    ok(json!({"state": s.config.state_of(&t, now).as_str(), "task": Value::Object(t.to_row()), "events": events}))
}

/// A task closed as dead, back at the head of its queue for one more attempt (`requeued_by_operator`).
async fn requeue(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let now = s.clock.now();
    let t = sosw_engine::tasks::requeue_dead(&s.config, &s.wiring, &id, &caller.name, now).await?;
    tracing::info!(task = %id, by = %caller.name, "dead task re-queued through the API");
    ok(json!({"state": s.config.state_of(&t, now).as_str(), "task": Value::Object(t.to_row())}))
}

/// `?labourer=ID&state=queued&limit=100&cursor=…`; `next_cursor` resumes after the last row.
async fn list_tasks(State(s): Shared, headers: HeaderMap, RawQuery(query): RawQuery) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let (mut labourer, mut state, mut limit, mut cursor) = (None, None, DEFAULT_PAGE, None);
    for (k, v) in form_pairs(query.as_deref().unwrap_or(""))? {
        match k.as_str() {
            "labourer" => labourer = Some(v),
            "state" => state = Some(parse_state(&v)?),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::bad_request(format!("`limit`: expected 1 to {MAX_PAGE}, got `{v}`")))?
            }
            "cursor" => cursor = Some(decode_cursor(&v)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`; expected labourer, state, limit, cursor"
                )))
            }
        }
    }
    let now = s.clock.now();
    let store = s.wiring.store.as_ref();
    let filters = Filters {
        labourer: labourer.clone(),
        state: state.map(|s| s.as_str().to_string()),
    };
    let cursor =
        match cursor {
            Some(c) if c.filters != filters => return Err(ApiError::bad_request(
                "`cursor`: it belongs to another listing (other `labourer` or `state` filters); pass it back with the \
                 filters it was given with",
            )),
            other => other.map(|c| c.at),
        };
    let labourers = match labourer {
        Some(l) => vec![l],
        None => listed_labourers(&s.config, store).await?,
    };
    let page = list_page(&s.config, store, &labourers, state, cursor.as_ref(), limit, now).await?;
    let next = page.next.map(|at| Cursor {
        filters: filters.clone(),
        at,
    });
    let tasks: Vec<Value> = page
        .tasks
        .iter()
        .map(|(t, state)| {
            let mut row = t.to_row();
            row.insert("state".into(), state.as_str().into());
            Value::Object(row)
        })
        .collect();
    ok(json!({"tasks": tasks, "next_cursor": next.as_ref().map(encode_cursor)}))
}

/// `{"labourer_id", "payload"?, "count"?}` or `{"tasks": [{"labourer_id", "payload"?, "task_id"?}, …]}`.
async fn create_tasks(State(s): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    s.auth.require(&headers, Scope::Write)?;
    let body = object_or_empty(read_json(&s.limits, body).await?)?;
    let tasks = match body.get("tasks") {
        Some(Value::Array(items)) => {
            known_keys(&body, &["tasks"])?;
            if items.is_empty() || items.len() > MAX_BATCH {
                return Err(ApiError::bad_request(format!(
                    "`tasks`: expected 1 to {MAX_BATCH} tasks, got {}",
                    items.len()
                )));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Value::Object(t) = item else {
                    return Err(ApiError::bad_request(format!("`tasks[{i}]`: expected an object")));
                };
                known_keys(t, &["labourer_id", "payload", "task_id"])
                    .map_err(|e| prefix(&format!("`tasks[{i}]`"), e))?;
                out.push(
                    new_task(t, 1)
                        .map_err(|e| prefix(&format!("`tasks[{i}]`"), e))?
                        .remove(0),
                );
            }
            out
        }
        Some(_) => return Err(ApiError::bad_request("`tasks`: expected a list of tasks")),
        None => {
            known_keys(&body, &["labourer_id", "payload", "count", "task_id"])?;
            let count = match body.get("count") {
                None => 1,
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=MAX_BATCH as u64).contains(n))
                    .ok_or_else(|| ApiError::bad_request(format!("`count`: expected 1 to {MAX_BATCH}, got {v}")))?
                    as usize,
            };
            new_task(&body, count)?
        }
    };
    let report = s
        .wiring
        .task_manager(s.config.clone())
        .create(&tasks, s.clock.now())
        .await?;
    let created: Vec<Value> = report
        .created
        .into_iter()
        .map(|task| {
            Value::Object(
                StoredTask {
                    task,
                    place: Place::Live,
                }
                .to_row(),
            )
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({"created": created, "existing": report.existing})),
    )
        .into_response())
}

/// The most bytes of payload one request may make (`count` copies of one payload): 64 MiB.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// `count` tasks of one `{"labourer_id", "payload"?, "task_id"?}` (a `task_id` only with a count of 1).
fn new_task(t: &Map<String, Value>, count: usize) -> Result<Vec<NewTask>, ApiError> {
    let labourer = match t.get("labourer_id") {
        Some(Value::String(l)) if !l.is_empty() => l.clone(),
        _ => {
            return Err(ApiError::bad_request(
                "`labourer_id` is required: a labourer of `task_config.labourers`",
            ))
        }
    };
    let base = match t.get("payload") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => Some(p.clone()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`payload`: expected a JSON object, got {other}"
            )))
        }
    };
    let payload = Value::Object(construct_payload(base, Map::new())).to_string();
    if payload.len().saturating_mul(count) > MAX_PAYLOAD_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{count} tasks of a {}-byte payload make more than {MAX_PAYLOAD_BYTES} bytes: send fewer per request",
                payload.len()
            ),
        ));
    }
    let id = match t.get("task_id") {
        None => None,
        Some(_) if count != 1 => return Err(ApiError::bad_request("`task_id` names one task: not with a `count`")),
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 256 => Some(id.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "`task_id`: expected a non-empty string of at most 256 bytes",
            ))
        }
    };
    Ok((0..count)
        .map(|_| NewTask {
            task_id: id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            labourer_id: labourer.clone(),
            payload: payload.clone(),
        })
        .collect())
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
        other => Err(ApiError::bad_request(format!("expected a JSON object, got {other}"))),
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

fn parse_state(v: &str) -> Result<Whereabouts, ApiError> {
    use Whereabouts as W;
    [
        W::Queued,
        W::Running,
        W::Expired,
        W::Completed,
        W::Retry,
        W::Closed,
        W::Dead,
    ]
    .into_iter()
    .find(|w| w.as_str() == v)
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "`state`: expected queued, running, expired, completed, retry, closed or dead, got `{v}`"
        ))
    })
}

/// `application/x-www-form-urlencoded` pairs, each decoded; a parameter given twice is refused.
fn form_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k)?, percent_decode(v)?);
        if out.iter().any(|(o, _)| *o == k) {
            return Err(ApiError::bad_request(format!("query parameter `{k}` given twice")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("the query is not valid URL encoding: `{s}`"));
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        match b {
            b'%' => {
                let hi = it.next().and_then(|c| (c as char).to_digit(16)).ok_or_else(bad)?;
                let lo = it.next().and_then(|c| (c as char).to_digit(16)).ok_or_else(bad)?;
                bytes.push((hi * 16 + lo) as u8);
            }
            b'+' => bytes.push(b' '),
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// The filters a listing was asked with: a cursor resumes only the listing it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Filters {
    labourer: Option<String>,
    state: Option<String>,
}

/// Where a listing resumes, and which listing it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Cursor {
    filters: Filters,
    at: PageCursor,
}

/// A cursor is opaque to clients: URL-safe base64 of its JSON.
fn encode_cursor(c: &Cursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

fn decode_cursor(text: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::bad_request("`cursor`: not a cursor this server gave (pass `next_cursor` back unchanged)");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// A business job for the Scheduler, as `sosw schedule` takes it. Planned (validated, counted, checked against the
/// queue's room) before the answer — a refusal writes nothing — then written in the background: 202 with where to
/// follow its progress.
async fn submit_job(State(s): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let event = read_json(&s.limits, body).await?;
    let scheduler = sosw_engine::Scheduler::new(s.scheduler_config.clone(), &s.wiring);
    let plan = scheduler.plan(&event, s.clock.now()).await?;
    let answer = json!({
        "job_id": plan.job_id,
        "labourer_id": plan.labourer,
        "total": plan.total,
        "warnings": plan.warnings,
        "progress": format!("/api/jobs/{}", plan.job_id),
    });
    tracing::info!(job = %plan.job_id, by = %caller.name, total = plan.total, "job submitted through the API");
    let clock = s.clock.clone();
    tokio::spawn(async move {
        match scheduler.run(&plan, clock.as_ref(), |_| {}).await {
            Ok(r) => tracing::info!(job = %r.job_id, created = r.created, existing = r.existing, "job scheduled"),
            Err(e) => tracing::error!(job = %plan.job_id, "scheduling the job failed (submit it again to resume): {e}"),
        }
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

fn job_json(p: &sosw_core::ports::JobProgress) -> Value {
    use sosw_core::time::iso8601;
    json!({
        "job_id": p.job_id,
        "labourer_id": p.labourer_id,
        "total": p.total,
        "scheduled": p.scheduled,
        "state": if p.finished_at.is_some() { "finished" } else { "incomplete" },
        "started_at": iso8601(p.started_at),
        "updated_at": iso8601(p.updated_at),
        "finished_at": p.finished_at.map(iso8601),
    })
}

async fn job(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    match s.wiring.store.get_job(&id).await? {
        Some(p) => ok(job_json(&p)),
        None => Err(ApiError::not_found(format!("job `{id}` not found"))),
    }
}

/// The 50 most recently updated jobs.
async fn list_jobs(State(s): Shared, headers: HeaderMap) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let jobs = s.wiring.store.list_jobs(50).await?;
    ok(json!({"jobs": jobs.iter().map(job_json).collect::<Vec<_>>()}))
}
