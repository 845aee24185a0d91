//! Every route and every refusal, through the router itself (`tower::ServiceExt::oneshot`), on a real SQLite file
//! and a manual clock. Each refusal also checks that nothing was written.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use sosw_core::config::{token_sha256, Config};
use sosw_core::ports::{LabourerStore, MetaSink, TaskStore};
use sosw_core::Clock;
use sosw_engine::Wiring;
use sosw_server::auth::{hex, Auth};
use sosw_server::{api, Limits, Service};
use sosw_sqlite::SqliteStore;
use sosw_testkit::fakes::{FakeMetrics, RecordingNotifier};
use sosw_testkit::ManualClock;
use std::sync::Arc;
use tower::ServiceExt;

const T0: i64 = 1_700_000_000;
const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

struct World {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    metrics: Arc<FakeMetrics>,
    service: Arc<Service>,
}

impl World {
    async fn new(tokens: bool) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SqliteStore::open_or_create(dir.path().join("sosw.db")).expect("open"));
        store.init().await.expect("init");
        let clock = ManualClock::at_secs(T0);
        let metrics = FakeMetrics::new();
        let wiring = Wiring {
            store: store.clone(),
            meta: Some(store.clone()),
            metrics: metrics.clone(),
            notifier: RecordingNotifier::new(),
            clock: clock.clone(),
        };
        let token =
            |name: &str, scope: &str, t: &str| json!({"name": name, "scope": scope, "sha256": hex(&token_sha256(t))});
        let server = if tokens {
            json!({"tokens": [token("grafana", "read", READ), token("ci", "write", WRITE), token("ops", "admin", ADMIN)], "max_body": 4096})
        } else {
            json!({})
        };
        let config = Config::from_value(&json!({
            "task_config": {"labourers": {
                "w": {"command": "true", "max_simultaneous_invocations": 4, "health_metrics": {
                    "cpu": {"details": {"command": ["cpu"]}, "feelings": {"3": 50, "4": 25}, "feeling_comparison_operator": "<="}
                }},
                "v": {"command": "true", "max_simultaneous_invocations": 2}
            }},
            "server": server,
            "job_schema": {"chunkable_attrs": ["store"]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let config = Arc::new(config);
        let section = config.server.clone().unwrap_or_default();
        let limits = Limits {
            max_body: section.max_body,
            ..Limits::DEFAULT
        };
        let auth = Auth::new(section.tokens, |_| None);
        let service = Arc::new(Service::new(config, wiring, auth, limits));
        World {
            _dir: dir,
            store,
            clock,
            metrics,
            service,
        }
    }

    /// One Orchestrator pass now, with workers that accept every invocation.
    async fn orchestrate(&self) -> sosw_engine::OrchestratorReport {
        self.orchestrate_with(&sosw_testkit::fakes::FakeInvokers::new()).await
    }

    /// One Orchestrator pass now, with these workers.
    async fn orchestrate_with(&self, invokers: &sosw_testkit::fakes::FakeInvokers) -> sosw_engine::OrchestratorReport {
        sosw_engine::Orchestrator::new(self.service.config.clone(), &self.service.wiring, invokers)
            .expect("orchestrator")
            .run_once(self.clock.now())
            .await
    }

    /// Creates `count` tasks of `labourer` through the API (as `token`); their ids.
    async fn create(&self, labourer: &str, count: u32, token: Option<&str>) -> Vec<String> {
        let body = json!({"labourer_id": labourer, "count": count}).to_string();
        let (status, v) = self.call("POST", "/api/tasks", token, Some(body)).await;
        assert!(status.is_success(), "{status}: {v}");
        v["created"]
            .as_array()
            .expect("created")
            .iter()
            .map(|t| t["task_id"].as_str().expect("id").to_string())
            .collect()
    }

    fn app(&self) -> Router {
        api::router(self.service.clone())
    }

    async fn call(&self, method: &str, uri: &str, token: Option<&str>, body: Option<String>) -> (StatusCode, Value) {
        let (status, text) = self.raw(method, uri, token, body).await;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn raw(&self, method: &str, uri: &str, token: Option<&str>, body: Option<String>) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).expect("request");
        let resp = self.app().oneshot(req).await.expect("answer");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn task_count(&self) -> u64 {
        let mut n = 0;
        for l in ["w", "v"] {
            let c = self
                .store
                .counts(l, &self.service.config.markers_for(l, self.clock.now()))
                .await
                .expect("counts");
            n += c.queued + c.running + c.expired + c.completed + c.retry_waiting + c.closed_completed + c.closed_dead;
        }
        n
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The ids of the tasks a POST /api/tasks answer says it created, in its order.
fn created_ids(v: &Value) -> Vec<&str> {
    v["created"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["task_id"].as_str())
        .collect()
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let w = World::new(true).await;
    assert_eq!(
        w.call("GET", "/healthz", None, None).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        w.call("GET", "/readyz", None, None).await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
    let (status, v) = w.call("GET", "/nope", None, None).await;
    assert_eq!((status, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn the_dashboard_is_served_and_its_chart_reads_the_sampled_history() {
    let w = World::new(true).await;
    let req = Request::builder().uri("/").body(Body::empty()).expect("request");
    let resp = w.app().oneshot(req).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::OK, "the page itself holds no data: no token");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/html"));
    assert!(resp.headers()["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .contains("default-src 'none'"));
    let page = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("/api/labourers") && page.contains("/api/history"),
        "the page reads the API"
    );
    // Nothing is loaded from elsewhere (the SVG namespace is a name, not a request).
    let elsewhere: Vec<&str> = page
        .split(['"', '\'', '(', ' '])
        .filter(|w| (w.starts_with("http://") || w.starts_with("https://")) && *w != "http://www.w3.org/2000/svg")
        .collect();
    assert!(elsewhere.is_empty(), "{elsewhere:?}");

    assert_eq!(
        w.call("GET", "/api/history", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    w.call(
        "POST",
        "/api/tasks",
        Some(WRITE),
        Some(json!({"labourer_id": "w", "count": 4}).to_string()),
    )
    .await;
    w.service.sample().await.expect("sample");
    w.clock.advance_secs(30);
    w.call(
        "POST",
        "/api/tasks",
        Some(WRITE),
        Some(json!({"labourer_id": "w", "count": 2}).to_string()),
    )
    .await;
    w.service.sample().await.expect("sample");
    let (status, v) = w.call("GET", "/api/history", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["interval_seconds"], 30);
    assert_eq!(v["samples"][0]["at"], "2023-11-14T22:13:20Z");
    assert_eq!(v["samples"][0]["labourers"]["w"], json!({"queued": 4, "running": 0}));
    assert_eq!(v["samples"][1]["at"], "2023-11-14T22:13:50Z");
    assert_eq!(v["samples"][1]["labourers"]["w"], json!({"queued": 6, "running": 0}));
}

#[tokio::test]
async fn tokens_and_scopes_are_enforced_and_a_refusal_writes_nothing() {
    let w = World::new(true).await;
    let create = || Some(json!({"labourer_id": "w", "payload": {"n": 1}}).to_string());
    // No token, a malformed header, an unknown token: 401 with WWW-Authenticate.
    for token in [None, Some("not-a-token")] {
        let (status, v) = w.call("POST", "/api/tasks", token, create()).await;
        assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{v}");
    }
    let req = Request::builder()
        .uri("/api/labourers")
        .header("authorization", "Basic abc")
        .body(Body::empty())
        .expect("request");
    let resp = w.app().oneshot(req).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    // A read token cannot write; its refusal names the holder and the scope needed, never the token.
    let (status, v) = w.call("POST", "/api/tasks", Some(READ), create()).await;
    assert_eq!((status, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`grafana` has scope `read`; this needs `write`"),
        "{message}"
    );
    assert!(!message.contains(READ));
    let (status, _) = w.call("POST", "/api/labourers/w/pause", Some(READ), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(w.task_count().await, 0, "nothing was created");
    assert!(
        w.store.labourer_controls().await.expect("controls").is_empty(),
        "nothing was paused"
    );
    // Read tokens read; write and admin tokens do both.
    for token in [READ, WRITE, ADMIN] {
        assert_eq!(
            w.call("GET", "/api/labourers", Some(token), None).await.0,
            StatusCode::OK
        );
        assert_eq!(w.call("GET", "/metrics", Some(token), None).await.0, StatusCode::OK);
    }
    assert_eq!(w.call("GET", "/metrics", None, None).await.0, StatusCode::UNAUTHORIZED);
    for token in [WRITE, ADMIN] {
        assert_eq!(
            w.call("POST", "/api/tasks", Some(token), create()).await.0,
            StatusCode::CREATED
        );
    }
    assert_eq!(w.task_count().await, 2);
}

#[tokio::test]
async fn tasks_are_created_shown_and_listed_in_cursor_pages_stable_under_inserts() {
    let w = World::new(false).await;
    let (status, v) = w
        .call(
            "POST",
            "/api/tasks",
            None,
            Some(json!({"labourer_id": "w", "payload": {"day": "2026-11-30"}, "count": 5}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["created"].as_array().map(Vec::len), Some(5));
    // The ids a request makes sort in its order (and so do its tasks' queue positions).
    let ids = created_ids(&v);
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "{ids:?}");
    let batch = json!({"tasks": [
        {"labourer_id": "v", "task_id": "mine-1"},
        {"labourer_id": "v", "task_id": "mine-2", "payload": {"x": [1, 2]}}
    ]});
    let (status, v) = w.call("POST", "/api/tasks", None, Some(batch.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // The same ids again: nothing new, reported as existing.
    let (_, v) = w.call("POST", "/api/tasks", None, Some(batch.to_string())).await;
    assert_eq!(v["existing"], json!(["mine-1", "mine-2"]));
    assert_eq!(w.task_count().await, 7);

    let (status, v) = w.call("GET", "/api/tasks/mine-2", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["state"], "queued");
    assert_eq!(v["task"]["labourer_id"], "v");
    assert_eq!(v["events"][0]["action"], "created", "{v}");
    assert_eq!(
        w.call("GET", "/api/tasks/nope", None, None).await.0,
        StatusCode::NOT_FOUND
    );

    // Pages of 2 over all labourers; a task inserted after the first page, sorting after it, still comes.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/tasks?limit=2&cursor={c}"),
            None => "/api/tasks?limit=2".to_string(),
        };
        let (status, v) = w.call("GET", &uri, None, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        for t in v["tasks"].as_array().expect("tasks") {
            seen.push(t["task_id"].as_str().expect("id").to_string());
            assert!(t["state"].is_string());
        }
        pages += 1;
        if pages == 1 {
            let late = json!({"labourer_id": "w", "task_id": "zz-late"});
            let (status, v) = w.call("POST", "/api/tasks", None, Some(late.to_string())).await;
            assert_eq!(status, StatusCode::CREATED, "{v}");
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 20, "the listing never ends");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no task twice: {seen:?}");
    assert_eq!(seen.len(), 8, "every task, the late one too: {seen:?}");
    // Filters.
    let (_, v) = w.call("GET", "/api/tasks?labourer=v&state=queued", None, None).await;
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(2));
    let (_, v) = w.call("GET", "/api/tasks?labourer=w&state=dead", None, None).await;
    assert_eq!(v["tasks"], json!([]));
    assert_eq!(v["next_cursor"], Value::Null);
}

#[tokio::test]
async fn the_ids_a_list_of_tasks_is_given_sort_in_its_order() {
    let w = World::new(false).await;
    let list = json!({"tasks": [
        {"labourer_id": "w"}, {"labourer_id": "w"}, {"labourer_id": "w", "task_id": "given"},
        {"labourer_id": "w"}, {"labourer_id": "w"}, {"labourer_id": "w"}
    ]});
    let (status, v) = w.call("POST", "/api/tasks", None, Some(list.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let ids = created_ids(&v);
    assert_eq!(ids.len(), 6);
    assert_eq!(ids[2], "given");
    let made: Vec<&str> = ids.iter().copied().filter(|id| *id != "given").collect();
    assert!(made.windows(2).all(|p| p[0] < p[1]), "{made:?}");
}

#[tokio::test]
async fn bad_input_is_refused_with_the_value_named_and_nothing_written() {
    let w = World::new(true).await;
    let cases: Vec<(&str, &str, Option<String>, StatusCode, &str)> = vec![
        (
            "POST",
            "/api/tasks",
            Some("{oops".into()),
            StatusCode::BAD_REQUEST,
            "not JSON",
        ),
        (
            "POST",
            "/api/tasks",
            Some("[1]".into()),
            StatusCode::BAD_REQUEST,
            "expected a JSON object",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"labourer_id": "nobody"}).to_string()),
            StatusCode::NOT_FOUND,
            "unknown labourer `nobody`",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"labourer_id": "w", "count": 0}).to_string()),
            StatusCode::BAD_REQUEST,
            "`count`: expected 1 to 10000, got 0",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"labourer_id": "w", "count": 1e300}).to_string()),
            StatusCode::BAD_REQUEST,
            "`count`",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"labourer_id": "w", "payload": "x"}).to_string()),
            StatusCode::BAD_REQUEST,
            "`payload`: expected a JSON object",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"labourer_id": "w", "colour": 1}).to_string()),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"labourer_id": "w", "task_id": "a", "count": 2}).to_string()),
            StatusCode::BAD_REQUEST,
            "`task_id` names one task",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"labourer_id": "w", "task_id": ""}).to_string()),
            StatusCode::BAD_REQUEST,
            "`task_id`: expected a non-empty string",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"tasks": [{"labourer_id": "w"}, {"labourer_id": "nobody"}]}).to_string()),
            StatusCode::NOT_FOUND,
            "unknown labourer `nobody`",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"tasks": [{"labourer_id": "w"}, 3]}).to_string()),
            StatusCode::BAD_REQUEST,
            "`tasks[1]`: expected an object",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"tasks": []}).to_string()),
            StatusCode::BAD_REQUEST,
            "`tasks`: expected 1 to 10000 tasks, got 0",
        ),
        (
            "POST",
            "/api/tasks",
            Some(format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "over 4096 bytes",
        ),
        (
            "POST",
            "/api/tasks",
            Some(format!("{}1{}", "[".repeat(1_000), "]".repeat(1_000))),
            StatusCode::BAD_REQUEST,
            "recursion limit",
        ),
        (
            "POST",
            "/api/tasks",
            Some(json!({"labourer_id": "w", "payload": {"pad": "x".repeat(5000)}}).to_string()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "`server.max_body`",
        ),
        (
            "GET",
            "/api/tasks?cursor=garbage",
            None,
            StatusCode::BAD_REQUEST,
            "`cursor`: not a cursor this server gave",
        ),
        (
            "GET",
            "/api/tasks?cursor=e30",
            None,
            StatusCode::BAD_REQUEST,
            "`cursor`",
        ),
        (
            "GET",
            "/api/tasks?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "`limit`: expected 1 to 1000, got `0`",
        ),
        (
            "GET",
            "/api/tasks?limit=99999999999999999999999",
            None,
            StatusCode::BAD_REQUEST,
            "`limit`",
        ),
        (
            "GET",
            "/api/tasks?state=sleeping",
            None,
            StatusCode::BAD_REQUEST,
            "`state`: expected queued",
        ),
        (
            "GET",
            "/api/tasks?color=red",
            None,
            StatusCode::BAD_REQUEST,
            "unknown query parameter `color`",
        ),
        (
            "GET",
            "/api/tasks?state=queued&state=dead",
            None,
            StatusCode::BAD_REQUEST,
            "given twice",
        ),
        (
            "GET",
            "/api/tasks?labourer=%ZZ",
            None,
            StatusCode::BAD_REQUEST,
            "not valid URL encoding",
        ),
        (
            "GET",
            "/api/labourers/nobody",
            None,
            StatusCode::NOT_FOUND,
            "unknown labourer `nobody`",
        ),
        (
            "POST",
            "/api/labourers/nobody/pause",
            None,
            StatusCode::NOT_FOUND,
            "unknown labourer `nobody`",
        ),
        (
            "POST",
            "/api/labourers/w/pause",
            Some(json!({"until": "soon"}).to_string()),
            StatusCode::BAD_REQUEST,
            "`until`",
        ),
        (
            "POST",
            "/api/labourers/w/pause",
            Some(json!({"until": "9223372036854775807-01-01"}).to_string()),
            StatusCode::BAD_REQUEST,
            "`until`",
        ),
        (
            "POST",
            "/api/labourers/w/pause",
            Some(json!({"reason": 5}).to_string()),
            StatusCode::BAD_REQUEST,
            "`reason`: expected a string",
        ),
        (
            "POST",
            "/api/labourers/w/pause",
            Some(json!({"why": "x"}).to_string()),
            StatusCode::BAD_REQUEST,
            "unknown field `why`",
        ),
        (
            "PUT",
            "/api/labourers/w/limit",
            Some(json!({"limit": -1}).to_string()),
            StatusCode::BAD_REQUEST,
            "`limit`: expected a whole number",
        ),
        (
            "PUT",
            "/api/labourers/w/limit",
            Some(json!({"limit": 4294967296u64}).to_string()),
            StatusCode::BAD_REQUEST,
            "`limit`: expected a whole number",
        ),
        (
            "PUT",
            "/api/labourers/w/limit",
            Some("{}".into()),
            StatusCode::BAD_REQUEST,
            "`limit` is required",
        ),
        (
            "POST",
            "/api/reports",
            Some(json!({"action": "mark_task_as_completed", "task_id": "nope"}).to_string()),
            StatusCode::NOT_FOUND,
            "task `nope` not found",
        ),
        (
            "POST",
            "/api/reports",
            Some(json!({"action": "launch"}).to_string()),
            StatusCode::BAD_REQUEST,
            "action `launch` is not supported",
        ),
    ];
    for (method, uri, body, want_status, want) in cases {
        let (status, v) = w.call(method, uri, Some(ADMIN), body).await;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, want_status, "{method} {uri}: {v}");
        assert!(message.contains(want), "{method} {uri}: {message}");
        assert!(!code(&v).is_empty(), "{v}");
    }
    // A large wrong value is named by its start, not sent back whole (3 KB here; `server.max_body` up to 64 MiB).
    let huge = serde_json::to_string(&vec![7; 1500]).expect("json");
    for body in [
        huge.clone(),
        json!({"labourer_id": "w", "payload": vec![7; 1500]}).to_string(),
    ] {
        let (status, v) = w.call("POST", "/api/tasks", Some(ADMIN), Some(body)).await;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        assert!(
            message.contains("[7,7,7") && message.contains('…') && message.len() < 300,
            "{message}"
        );
    }
    assert_eq!(w.task_count().await, 0, "nothing was created");
    assert!(
        w.store.labourer_controls().await.expect("controls").is_empty(),
        "nothing was paused"
    );
}

#[tokio::test]
async fn labourers_are_shown_paused_limited_and_resumed_with_the_reason() {
    let w = World::new(true).await;
    let cpu = w.service.config.labourer("w").expect("w").health_metrics[0]
        .details
        .clone();
    w.metrics.set(&cpu, Ok(40.0));
    w.call(
        "POST",
        "/api/tasks",
        Some(WRITE),
        Some(json!({"labourer_id": "w", "count": 3}).to_string()),
    )
    .await;
    let (status, v) = w.call("GET", "/api/labourers/w", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["counts"]["queued"], 3);
    assert_eq!(v["limit"]["eco_status"], 3);
    assert_eq!(v["limit"]["desired"], 3, "floor(4 × 0.75)");
    assert_eq!(
        v["limit"]["health_metrics"],
        json!([{"name": "cpu", "value": 40.0, "status": 3}])
    );

    let (status, v) = w
        .call(
            "POST",
            "/api/labourers/w/pause",
            Some(WRITE),
            Some(json!({"until": "2h", "reason": "deploying billing"}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["paused"]["reason"], "deploying billing");
    assert_eq!(v["updated_by"], "ci", "the token's holder is the author");
    let (_, v) = w.call("GET", "/api/labourers", Some(READ), None).await;
    let ws = v["labourers"]
        .as_array()
        .expect("list")
        .iter()
        .find(|l| l["labourer_id"] == "w")
        .cloned()
        .expect("w");
    assert_eq!(ws["held_back"][0]["code"], "paused");
    assert!(
        ws["held_back"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("deploying billing"),
        "{ws}"
    );
    assert_eq!(ws["held_back"][0]["until"], "2023-11-15T00:13:20Z");
    let (status, v) = w
        .call(
            "PUT",
            "/api/labourers/w/limit",
            Some(ADMIN),
            Some(json!({"limit": 1}).to_string()),
        )
        .await;
    assert_eq!((status, v["limit"].clone()), (StatusCode::OK, json!(1)));
    let (_, v) = w.call("POST", "/api/labourers/w/resume", Some(WRITE), None).await;
    assert_eq!(v["paused"], Value::Null);
    let (_, v) = w
        .call(
            "PUT",
            "/api/labourers/w/limit",
            Some(WRITE),
            Some(json!({"limit": null}).to_string()),
        )
        .await;
    assert_eq!(v["limit"], Value::Null);
    assert!(
        w.store.labourer_controls().await.expect("controls").is_empty(),
        "an empty control is forgotten"
    );
}

#[tokio::test]
async fn worker_reports_are_recorded_on_both_routes_and_counted() {
    let w = World::new(true).await;
    let ids = w.create("v", 2, Some(WRITE)).await;
    let report = w.orchestrate().await;
    w.service.counters.observe_pass(
        &sosw_engine::daemon::PassReport::Orchestrator(report),
        std::time::Duration::from_millis(12),
    );
    for (route, id) in [("/report", &ids[0]), ("/api/reports", &ids[1])] {
        let at = w.store.get(id).await.expect("get").expect("task").task.invocation();
        let token = sosw_core::ports::ReportSigner::sign(&w.service.report_tokens, id, at);
        let event =
            json!({"action": "mark_task_as_completed", "task_id": id, "stats": {"rows": 3}, "report_token": token});
        let (status, v) = w.call("POST", route, None, Some(event.to_string())).await;
        assert_eq!(status, StatusCode::OK, "{route}: {v}");
        assert_eq!(v["stat_rows"], 3);
    }
    let (_, text) = w.raw("GET", "/metrics", Some(READ), None).await;
    assert!(text.contains("sosw_reports_total{kind=\"completed\"} 2"), "{text}");
    assert!(
        text.contains("sosw_invocations_total{labourer=\"v\",outcome=\"invoked\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("sosw_pass_duration_seconds_count{essential=\"orchestrator\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_say_per_labourer_what_status_says_and_pass_promtool() {
    let w = World::new(false).await;
    let cpu = w.service.config.labourer("w").expect("w").health_metrics[0]
        .details
        .clone();
    w.metrics.set(&cpu, Ok(60.0));
    w.call(
        "POST",
        "/api/tasks",
        None,
        Some(json!({"labourer_id": "w", "count": 3}).to_string()),
    )
    .await;
    w.clock.advance_secs(90);
    w.call(
        "POST",
        "/api/labourers/v/pause",
        None,
        Some(json!({"reason": "maintenance"}).to_string()),
    )
    .await;
    // Counters and a histogram with samples, so that promtool sees every kind of family.
    let report = w.orchestrate().await;
    w.service.counters.observe_pass(
        &sosw_engine::daemon::PassReport::Orchestrator(report),
        std::time::Duration::from_millis(3),
    );
    w.service.counters.observe_report("completed");
    let (status, text) = w.raw("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "sosw_tasks{labourer=\"w\",state=\"queued\"} 3",
        "sosw_oldest_queued_age_seconds{labourer=\"w\"} 90.0",
        "sosw_eco_status{labourer=\"w\"} 0",
        "sosw_health_metric_value{labourer=\"w\",metric=\"cpu\"} 60.0",
        "sosw_health_metric_status{labourer=\"w\",metric=\"cpu\"} 0",
        "sosw_held_back{labourer=\"v\",reason=\"paused\"} 1",
        "sosw_held_back{labourer=\"w\",reason=\"eco\"} 1",
        "sosw_held_back{labourer=\"w\",reason=\"paused\"} 0",
        "sosw_max_simultaneous_invocations{labourer=\"w\"} 4",
        "sosw_desired{labourer=\"w\"} 0",
        "# TYPE sosw_reports_total counter",
        "sosw_reports_total{kind=\"completed\"} 1",
        "sosw_invocations_total{labourer=\"w\",outcome=\"invoked\"} 0",
        "# TYPE sosw_pass_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    assert!(
        !text.contains("# EOF"),
        "the classic text format unless OpenMetrics is asked for"
    );
    let req = Request::builder()
        .uri("/metrics")
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .body(Body::empty())
        .expect("request");
    let resp = w.app().oneshot(req).await.expect("answer");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("application/openmetrics-text"));
    let open = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    let open = String::from_utf8_lossy(&open);
    assert!(
        open.ends_with("# EOF\n") && open.contains("# TYPE sosw_reports counter"),
        "{open}"
    );
    let Some(promtool) = sosw_testkit::service("SOSW_TEST_PROMTOOL") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("scrape.txt");
    std::fs::write(&path, &text).expect("write");
    let out = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).expect("open"))
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_dead_task_is_requeued_once_at_the_head_with_who_did_it() {
    use sosw_core::ports::ArchiveExpect;
    let w = World::new(true).await;
    let (_, v) = w
        .call(
            "POST",
            "/api/tasks",
            Some(WRITE),
            Some(
                json!({"tasks": [{"labourer_id": "w", "task_id": "gone"}, {"labourer_id": "w", "task_id": "next"}]})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(v["created"].as_array().map(Vec::len), Some(2), "{v}");
    let now = w.clock.now();
    let m = w.service.config.markers_for("w", now);
    let g = w.store.get("gone").await.expect("get").expect("gone").task.greenfield;
    w.store
        .claim("w", &[("gone".to_string(), g)], m.start, m.invoked)
        .await
        .expect("claim");
    w.store
        .archive("gone", ArchiveExpect::Dead { greenfield: m.invoked }, now)
        .await
        .expect("dead");

    assert_eq!(
        w.call("POST", "/api/tasks/gone/requeue", Some(READ), None).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, v) = w.call("POST", "/api/tasks/gone/requeue", Some(WRITE), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "queued");
    assert_eq!(v["task"]["attempts"], 1, "its attempts are kept: one more follows");
    let next = w
        .store
        .get("next")
        .await
        .expect("get")
        .expect("next")
        .task
        .greenfield
        .get();
    assert!(
        v["task"]["greenfield"].as_i64().expect("greenfield") < next,
        "at the head of the queue"
    );
    let (_, shown) = w.call("GET", "/api/tasks/gone", Some(READ), None).await;
    let last = shown["events"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .expect("events");
    assert_eq!(
        (last["action"].as_str(), last["author"].as_str()),
        (Some("requeued_by_operator"), Some("sosw_operator ci"))
    );
    // Again: it is not dead any more. Unknown: 404. Neither writes anything.
    let (status, v) = w.call("POST", "/api/tasks/gone/requeue", Some(WRITE), None).await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "conflict"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("it is live"),
        "{v}"
    );
    assert_eq!(
        w.call("POST", "/api/tasks/nope/requeue", Some(WRITE), None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, again) = w.call("GET", "/api/tasks/gone", Some(READ), None).await;
    assert_eq!(again["events"], shown["events"]);
}

#[tokio::test]
async fn a_job_is_planned_before_the_answer_and_written_in_the_background() {
    let w = World::new(true).await;
    let job = json!({"lambda_name": "w", "isolate_stores": true, "stores": ["a", "b", "c"]});
    assert_eq!(
        w.call("POST", "/api/jobs", Some(READ), Some(job.to_string())).await.0,
        StatusCode::FORBIDDEN
    );
    for (bad, status, want) in [
        (
            json!({"lambda_name": "nobody", "stores": ["a"]}),
            StatusCode::NOT_FOUND,
            "unknown labourer `nobody`",
        ),
        (json!({"stores": ["a"]}), StatusCode::BAD_REQUEST, "invalid job"),
        (json!([1, 2]), StatusCode::BAD_REQUEST, "invalid job"),
    ] {
        let (got, v) = w.call("POST", "/api/jobs", Some(WRITE), Some(bad.to_string())).await;
        assert_eq!(got, status, "{bad}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or_default().contains(want),
            "{bad}: {v}"
        );
    }
    assert_eq!(w.task_count().await, 0);
    let (status, v) = w.call("POST", "/api/jobs", Some(WRITE), Some(job.to_string())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["total"], 3);
    let id = v["job_id"].as_str().expect("job id").to_string();
    assert_eq!(v["progress"], format!("/api/jobs/{id}"));
    // The background run finishes on this runtime while the test waits for it.
    let mut state = Value::Null;
    for _ in 0..10_000 {
        let (status, p) = w.call("GET", &format!("/api/jobs/{id}"), Some(READ), None).await;
        if status == StatusCode::OK && p["state"] == "finished" {
            state = p;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        (state["scheduled"].clone(), state["total"].clone()),
        (json!(3), json!(3)),
        "{state}"
    );
    assert!(
        state["finished_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "ISO times: {state}"
    );
    assert_eq!(w.task_count().await, 3);
    let (_, list) = w.call("GET", "/api/jobs", Some(READ), None).await;
    assert_eq!(list["jobs"][0]["job_id"], json!(id));
    assert_eq!(
        w.call("GET", "/api/jobs/nope", Some(READ), None).await.0,
        StatusCode::NOT_FOUND
    );
}

/// A worker that refused its invocation (429) got a token; the refunded attempt must not let that token report on
/// the task's next invocation, even though `attempts` is the same again.
#[tokio::test]
async fn a_refused_invocations_token_is_stale_once_the_task_is_invoked_again() {
    use sosw_core::decide::FailureKind;
    use sosw_core::ports::{InvokeError, InvokeOutcome, ReportSigner};
    let w = World::new(true).await;
    let id = w.create("v", 1, Some(WRITE)).await.remove(0);
    let invokers = sosw_testkit::fakes::FakeInvokers::new();
    invokers
        .of("v")
        .then([Err(InvokeError::new(FailureKind::Throttled, "HTTP 429"))]);
    let refused = w.orchestrate_with(&invokers).await;
    let v_pass = refused
        .labourers
        .iter()
        .find(|l| l.labourer_id == "v")
        .expect("v's pass");
    assert_eq!(v_pass.throttled, 1, "{refused:?}");
    let after_refusal = w.store.get(&id).await.expect("get").expect("task").task;
    assert_eq!(
        (after_refusal.attempts, after_refusal.refunded_attempts),
        (0, 1),
        "the attempt is refunded"
    );
    // What the refusing worker was given: the token of invocation 1.
    let refusers_token = w.service.report_tokens.sign(
        &id,
        sosw_core::Invocation {
            attempts: 1,
            refunded: 0,
        },
    );
    w.clock.advance_secs(3600);
    invokers.of("v").always(Ok(InvokeOutcome::Accepted));
    w.orchestrate_with(&invokers).await;
    let again = w.store.get(&id).await.expect("get").expect("task").task;
    assert_eq!((again.attempts, again.invocation().number()), (1, 2), "invoked again");
    let report = |token: String| {
        json!({"action": "mark_task_as_completed", "task_id": id, "report_token": token, "result": {"by": "refuser"}})
            .to_string()
    };
    let (status, v) = w.call("POST", "/api/reports", None, Some(report(refusers_token))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let unchanged = w.store.get(&id).await.expect("get").expect("task").task;
    assert_eq!(
        (unchanged.completed_at, unchanged.result.get("by")),
        (None, None),
        "nothing written"
    );
    let own = w.service.report_tokens.sign(&id, again.invocation());
    let (status, v) = w.call("POST", "/api/reports", None, Some(report(own))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_report_needs_its_invocations_token_and_a_stale_or_forged_one_writes_nothing() {
    use sosw_core::ports::{ReportSigner, REPORT_TOKEN_HEADER};
    let w = World::new(true).await;
    let ids = w.create("v", 2, Some(WRITE)).await;
    w.orchestrate().await;
    let (a, b) = (&ids[0], &ids[1]);
    let at = w.store.get(a).await.expect("get").expect("a").task.invocation();
    assert_eq!(at.number(), 1, "invoked once");
    let tokens = &w.service.report_tokens;
    let w = &w;
    let send = |id: &str, token: Option<String>, bearer: Option<&str>| {
        let event = json!({"action": "mark_task_as_completed", "task_id": id});
        let mut req = Request::builder().method("POST").uri("/api/reports");
        if let Some(t) = token {
            req = req.header(REPORT_TOKEN_HEADER, t);
        }
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let req = req.body(Body::from(event.to_string())).expect("request");
        async move {
            let resp = w.app().oneshot(req).await.expect("answer");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
            (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
        }
    };
    let completed = |id: String| async move { w.store.get(&id).await.expect("get").expect("task").task.completed_at };
    // Refused, and nothing written: no credential at all, a read token, a stale token, a forged one, another
    // task's token.
    assert_eq!(send(a, None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(a, None, Some(READ)).await.0, StatusCode::FORBIDDEN);
    let earlier = sosw_core::Invocation {
        attempts: at.attempts - 1,
        ..at
    };
    let (status, v) = send(a, Some(tokens.sign(a, earlier)), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        v["error"]["message"].as_str().unwrap_or_default().contains("stale"),
        "{v}"
    );
    assert_eq!(send(a, Some("f".repeat(64)), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(send(a, Some(tokens.sign(b, at)), None).await.0, StatusCode::FORBIDDEN);
    let forged_by_another_server = sosw_server::report_token::ReportTokens::new("elsewhere").sign(a, at);
    assert_eq!(
        send(a, Some(forged_by_another_server), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(completed(a.clone()).await, None, "nothing was recorded");
    let events = w.store.events_of(a).await.expect("events");
    assert!(
        events
            .iter()
            .all(|e| e.action != sosw_core::MetaAction::MarkedAsCompleted),
        "no audit event either: {events:?}"
    );
    // Its own invocation's token: recorded. So is a report by a caller with a write token.
    let (status, v) = send(a, Some(tokens.sign(a, at)), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(completed(a.clone()).await.is_some());
    assert_eq!(send(b, None, Some(WRITE)).await.0, StatusCode::OK);
    // The token may also come in the event itself.
    let open = World::new(false).await;
    let id = open.create("v", 1, None).await.remove(0);
    let forged = json!({"action": "heartbeat", "task_id": id, "report_token": "0".repeat(64)});
    assert_eq!(
        open.call("POST", "/report", None, Some(forged.to_string())).await.0,
        StatusCode::FORBIDDEN,
        "even an open server checks a token it is given"
    );
}

/// The committed OpenAPI document lists exactly the routes the router serves: each of its operations is routed
/// (neither the fallback's 404 nor a 405), and each route is in it.
#[tokio::test]
async fn the_openapi_document_and_the_routes_agree() {
    let w = World::new(false).await;
    let doc: Value = serde_json::from_str(api::OPENAPI).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut routed: Vec<(String, String)> = api::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    routed.sort();
    assert_eq!(documented, routed, "the document and the route table");
    for (method, path) in routed {
        let method = method.as_str();
        let uri = path.replace("{id}", "x");
        let (status, body) = w.raw(method, &uri, None, Some("{}".into())).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(!body.contains("no such route"), "{method} {uri} is not routed: {body}");
    }
    let (status, served) = w.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(
        (status, served),
        (StatusCode::OK, doc),
        "the served document is the committed one"
    );
    // And an operation the document does not have is not routed.
    let (status, _) = w.raw("DELETE", "/api/tasks/x", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

/// An open server (no token) answers only loopback names, and refuses what a browser sends from another origin (a
/// cross-site form, DNS rebinding); its own pages, tools without an Origin, and servers with tokens are unaffected.
#[tokio::test]
async fn an_open_server_refuses_other_origins_and_names() {
    let w = World::new(false).await;
    let send = |host: &str, origin: Option<&str>| {
        let mut req = Request::builder()
            .method("POST")
            .uri("/api/tasks")
            .header("host", host)
            .header("content-type", "text/plain");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let req = req
            .body(Body::from(json!({"labourer_id": "w"}).to_string()))
            .expect("request");
        let app = w.app();
        async move { app.oneshot(req).await.expect("answer").status() }
    };
    assert_eq!(
        send("evil.example:8787", None).await,
        StatusCode::FORBIDDEN,
        "DNS rebinding"
    );
    assert_eq!(
        send("127.0.0.1:8787", Some("http://evil.example")).await,
        StatusCode::FORBIDDEN,
        "a cross-site form"
    );
    assert_eq!(
        send("localhost:8787", Some("null")).await,
        StatusCode::FORBIDDEN,
        "an opaque origin"
    );
    assert_eq!(w.task_count().await, 0, "nothing was written");
    assert_eq!(
        send("127.0.0.1:8787", Some("http://127.0.0.1:8787")).await,
        StatusCode::CREATED,
        "its own page"
    );
    assert_eq!(
        send("[::1]:8787", None).await,
        StatusCode::CREATED,
        "a tool, on IPv6 loopback"
    );
    assert_eq!(send("localhost", None).await, StatusCode::CREATED);
    // With tokens, a browser sends no credential by itself: the origin is not the question.
    let t = World::new(true).await;
    let req = Request::builder()
        .uri("/api/labourers")
        .header("host", "sosw.internal:8787")
        .header("origin", "https://grafana.internal")
        .header("authorization", format!("Bearer {READ}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(t.app().oneshot(req).await.expect("answer").status(), StatusCode::OK);
}

#[tokio::test]
async fn a_cursor_resumes_only_its_own_listing_and_a_huge_batch_is_refused() {
    let w = World::new(false).await;
    w.call(
        "POST",
        "/api/tasks",
        None,
        Some(json!({"labourer_id": "w", "count": 3}).to_string()),
    )
    .await;
    let (_, v) = w.call("GET", "/api/tasks?labourer=w&limit=1", None, None).await;
    let c = v["next_cursor"].as_str().expect("a next page").to_string();
    assert_eq!(
        w.call("GET", &format!("/api/tasks?labourer=w&limit=1&cursor={c}"), None, None)
            .await
            .0,
        StatusCode::OK
    );
    for other in [
        format!("/api/tasks?labourer=v&cursor={c}"),
        format!("/api/tasks?labourer=w&state=queued&cursor={c}"),
        format!("/api/tasks?cursor={c}"),
    ] {
        let (status, v) = w.call("GET", &other, None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{other}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("another listing"),
            "{v}"
        );
    }
    // 10,000 copies of a 10 KB payload would be 100 MB in memory: refused before any is made.
    let big = json!({"labourer_id": "w", "count": 10000, "payload": {"pad": "x".repeat(10_000)}});
    let (status, v) = w.call("POST", "/api/tasks", None, Some(big.to_string())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("10000 tasks of a"),
        "{v}"
    );
    assert_eq!(w.task_count().await, 3);
}
