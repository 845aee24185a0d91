//! Issue #8 at the command line, as a hostile or careless user meets it: absurd numbers in a config, and a
//! misconfigured HTTP labourer that must not destroy its queue.

// Deadlines for waiting on real processes and servers read the monotonic clock (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

use serde_json::{json, Value};

mod common;
use common::{ok_json, run as sosw};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn with_config(config: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("sosw.json"), config.to_string()).expect("config");
    dir
}

/// Defects 1 and 2: values that passed validation, then panicked in a timer (exit 101) or wrapped a greenfield
/// around (one task invoked on every pass). Now: exit 2, the key and the value named, nothing written.
#[test]
fn absurd_numbers_are_config_errors_not_panics() {
    let cases = [
        (
            json!({"task_config": {"labourers": {"w": {"command": "true", "timeout": 1e300}}}}),
            "task_config.labourers.w.timeout",
        ),
        (
            json!({"task_config": {"greenfield_invocation_delta": 9_223_372_036_854_775_000_i64,
                                   "labourers": {"w": {"command": "true"}}}}),
            "task_config.greenfield_invocation_delta",
        ),
        (
            json!({"task_config": {"labourers": {"w": {"command": "true"}}}, "daemon": {"shutdown_grace": 1e300}}),
            "daemon.shutdown_grace",
        ),
    ];
    for (config, key) in cases {
        let dir = with_config(&config);
        let out = sosw(dir.path(), &["init"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key) && stderr.contains("must be at most"), "{stderr}");
        assert!(!dir.path().join("sosw.db").exists(), "nothing written");
    }
    let dir = with_config(&json!({"task_config": {"labourers": {"w": {"command": "true"}}}}));
    assert!(sosw(dir.path(), &["init"]).status.success());
    let out = sosw(dir.path(), &["run", "--interval", "1e300"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--interval` must be at most"));
}

/// A worker endpoint that answers 404 to everything until it is fixed, then accepts.
fn endpoint(fixed: Arc<AtomicBool>, accepted: Arc<AtomicUsize>, requests: Arc<AtomicUsize>) -> String {
    use axum::http::StatusCode;
    use axum::routing::post;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/run",
        post(move || async move {
            requests.fetch_add(1, Ordering::SeqCst);
            if fixed.load(Ordering::SeqCst) {
                accepted.fetch_add(1, Ordering::SeqCst);
                StatusCode::ACCEPTED
            } else {
                StatusCode::NOT_FOUND
            }
        }),
    );
    std::thread::spawn(move || rt.block_on(async move { axum::serve(listener, app).await.expect("serve") }));
    format!("http://{addr}/run")
}

/// Defect 9, as the issue found it: an HTTP labourer whose URL has a wrong path, 20 queued tasks, one
/// `sosw orchestrate` closed all 20 as dead. Now: none dead, no attempt spent, the reason shown, one notification;
/// once the endpoint is fixed, the tasks run.
#[test]
fn a_wrong_url_holds_the_labourer_back_and_kills_nothing() {
    let fixed = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let url = endpoint(fixed.clone(), accepted.clone(), requests.clone());
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let notes = dir.join("notifications.log");
    let config = json!({
        "task_config": {"labourers": {"w": {"url": url, "max_simultaneous_invocations": 20}}},
        "circuit_breaker": {"initial_hold": 1},
        "notify": {"command": ["sh", "-c", format!("cat >> '{}'; echo >> '{}'", notes.display(), notes.display())]}
    });
    std::fs::write(dir.join("sosw.json"), config.to_string()).expect("config");
    assert!(sosw(dir, &["init"]).status.success());
    assert!(sosw(dir, &["task", "create", "w", "--count", "20"]).status.success());

    let pass = ok_json(dir, &["orchestrate"]);
    let l = &pass["labourers"]["w"];
    assert_eq!(
        (l["dead"].clone(), l["put_back"].clone()),
        (json!(0), json!(20)),
        "{pass}"
    );
    assert!(
        l["held_back"]["reason"].as_str().is_some_and(|r| r.contains("404")),
        "{pass}"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "the first task went alone; the other 19 were not sent"
    );
    let status = ok_json(dir, &["status"]);
    let w = &status["w"];
    assert_eq!(
        (w["queued"].clone(), w["closed_dead"].clone()),
        (json!(20), json!(0)),
        "{status}"
    );
    assert!(
        w["held_back"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("404 Not Found")),
        "{status}"
    );
    assert!(
        w["held_back"]["until"].as_str().is_some_and(|u| u.ends_with('Z')),
        "ISO 8601: {status}"
    );
    let table = String::from_utf8_lossy(&sosw(dir, &["status"]).stdout).to_string();
    assert!(table.contains("w: held back (labourer_failing) until"), "{table}");
    let listed = String::from_utf8_lossy(&sosw(dir, &["--json", "task", "list", "--labourer", "w"]).stdout).to_string();
    for line in listed.lines() {
        let t: Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(t["attempts"], json!(0), "no attempt spent: {t}");
    }
    let sent = std::fs::read_to_string(&notes).unwrap_or_default();
    assert_eq!(
        sent.matches("is held back").count(),
        1,
        "one notification, not one per task: {sent}"
    );

    // The endpoint is fixed. Once the hold (1 s) is over, a probe succeeds and the queue drains.
    fixed.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) < 20 {
        assert!(
            Instant::now() < deadline,
            "the queue did not drain: {}",
            ok_json(dir, &["status"])
        );
        let _ = ok_json(dir, &["orchestrate"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = ok_json(dir, &["status"]);
    assert_eq!(
        (status["w"]["running"].clone(), status["w"]["held_back"].clone()),
        (json!(20), Value::Null),
        "{status}"
    );
}
