//! The HTTP invoker and the HTTP metric sources against a real server on 127.0.0.1.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sosw_core::config::{HttpMode, HttpSpec, MetricDetails};
use sosw_core::decide::FailureKind;
use sosw_core::ports::{InvokeOutcome, Invoker, MetricSource};
use sosw_core::task::ReportKind;
use sosw_core::Time;
use sosw_local::http::HttpInvoker;
use sosw_local::metrics::LocalMetrics;
use sosw_testkit::fakes::sample_task;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Seen = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// What `/endless` sends, for ever.
static CHUNK: [u8; 65536] = [b'x'; 65536];

async fn server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/accept", post(|State(s): State<Seen>, h: HeaderMap, Json(v): Json<Value>| async move {
            s.lock().expect("lock").push((h, v));
            StatusCode::ACCEPTED
        }))
        .route("/sync", post(|| async { Json(json!({"rows": 3})) }))
        .route("/sync-report", post(|| async { Json(json!({"stats": {"t": 1}, "result": "{\"r\": 2}"})) }))
        .route("/throttle", post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down") }))
        .route("/unavailable", post(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route("/endless", post(|| async {
            axum::body::Body::from_stream(futures::stream::repeat_with(|| {
                Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(&CHUNK))
            }))
        }))
        .route("/bad", post(|| async { (StatusCode::BAD_REQUEST, "missing field `x`") }))
        .route("/boom", post(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/slow", post(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }))
        .route("/health", get(|| async { Json(json!({"db": {"cpu": 37.5, "name": "primary"}, "lag": "12"})) }))
        .route("/api/v1/query", get(|Query(q): Query<HashMap<String, String>>| async move {
            let value = if q.get("query").map(String::as_str) == Some("max(rate(x[5m]))") { "0.25" } else { "-1" };
            Json(json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, value]}]}}))
                .into_response()
        }))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}"), seen)
}

fn invoker(url: String, mode: HttpMode, timeout: f64) -> HttpInvoker {
    HttpInvoker::new(HttpSpec {
        url,
        mode,
        timeout_secs: timeout,
        headers: vec![("x-token".into(), "secret".into())],
        ca_file: None,
    })
    .expect("invoker")
}

#[tokio::test]
async fn responses_map_to_outcomes() {
    let (base, seen) = server().await;
    let call = |path: &str, mode| {
        let inv = invoker(format!("{base}{path}"), mode, 0.5);
        async move { inv.invoke(&sample_task("t1"), r#"{"task_id": "t1", "a": 1}"#).await }
    };
    assert_eq!(call("/accept", HttpMode::Async).await, Ok(InvokeOutcome::Accepted));
    let (headers, body) = seen.lock().expect("lock")[0].clone();
    assert_eq!(body, json!({"task_id": "t1", "a": 1}));
    assert_eq!(headers["x-token"], "secret");
    assert_eq!(headers["content-type"], "application/json");

    match call("/sync", HttpMode::Sync).await {
        Ok(InvokeOutcome::Finished(ReportKind::Completed, r)) => {
            assert_eq!(Value::Object(r.result), json!({"rows": 3}))
        }
        other => panic!("{other:?}"),
    }
    match call("/sync-report", HttpMode::Sync).await {
        Ok(InvokeOutcome::Finished(ReportKind::Completed, r)) => {
            assert_eq!(
                (Value::Object(r.stats), Value::Object(r.result)),
                (json!({"t": 1}), json!({"r": 2}))
            );
        }
        other => panic!("{other:?}"),
    }
    // A worker that answers without end: the first MiB is read, the start of it kept, the rest cut.
    match call("/endless", HttpMode::Sync).await {
        Ok(InvokeOutcome::Finished(ReportKind::Completed, r)) => {
            assert_eq!(r.result["body_truncated"], json!(true));
            assert_eq!(r.result["body"].as_str().map(str::len), Some(4096));
        }
        other => panic!("{other:?}"),
    }
    let throttled = call("/throttle", HttpMode::Async).await.expect_err("throttled");
    assert_eq!(
        (throttled.kind, throttled.retry_after),
        (FailureKind::Throttled, Some(Duration::from_secs(7)))
    );
    assert_eq!(
        call("/unavailable", HttpMode::Async).await.expect_err("throttled").kind,
        FailureKind::Throttled
    );
    let bad = call("/bad", HttpMode::Async).await.expect_err("permanent");
    assert_eq!(bad.kind, FailureKind::Permanent);
    assert!(bad.message.contains("missing field"), "{}", bad.message);
    assert_eq!(
        call("/boom", HttpMode::Async).await.expect_err("transient").kind,
        FailureKind::Transient
    );
    // A wrong path is the labourer's fault, not the task's: its tasks must not die of it.
    assert_eq!(
        call("/missing", HttpMode::Async).await.expect_err("404").kind,
        FailureKind::Labourer
    );
    let slow = call("/slow", HttpMode::Async).await.expect_err("timeout");
    assert_eq!(slow.kind, FailureKind::Unknown, "{}", slow.message);
}

#[tokio::test]
async fn a_refused_connection_is_the_labourers_fault() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = invoker(format!("http://{addr}/run"), HttpMode::Async, 1.0)
        .invoke(&sample_task("t1"), "{}")
        .await
        .expect_err("refused");
    assert_eq!(err.kind, FailureKind::Labourer, "{}", err.message);
}

/// A throwaway CA, and an HTTPS worker on loopback with a certificate it signed: reached with the labourer's
/// `ca_file`, refused without it (its certificate is not the system's to trust).
#[tokio::test]
async fn https_workers_are_checked_against_the_ca_file() {
    use hyper::body::Bytes;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "sosw test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write the CA");

    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake: nothing to serve.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    hyper::Response::builder()
                        .status(202)
                        .body(http_body_util::Full::new(Bytes::new()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let spec = |ca_file: Option<String>| HttpSpec {
        url: format!("https://127.0.0.1:{}/run", addr.port()),
        mode: HttpMode::Async,
        timeout_secs: 5.0,
        headers: vec![],
        ca_file,
    };
    let trusted = HttpInvoker::new(spec(Some(ca_file.display().to_string()))).expect("invoker");
    assert!(matches!(
        trusted.invoke(&sample_task("t1"), "{}").await,
        Ok(InvokeOutcome::Accepted)
    ));
    let untrusted = HttpInvoker::new(spec(None)).expect("invoker");
    let err = untrusted
        .invoke(&sample_task("t2"), "{}")
        .await
        .expect_err("an unknown CA");
    assert_ne!(err.kind, FailureKind::Permanent, "{}", err.message);

    // A `ca_file` that cannot be used is an error up front, naming it.
    let missing = dir.path().join("nope.pem").display().to_string();
    let e = HttpInvoker::new(spec(Some(missing.clone()))).expect_err("missing");
    assert!(e.contains(&missing) && e.contains("cannot be read"), "{e}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let e = HttpInvoker::new(spec(Some(junk.display().to_string()))).expect_err("junk");
    assert!(e.contains("holds no certificate") || e.contains("not a PEM"), "{e}");
}

#[tokio::test]
async fn metric_sources() {
    let (base, _) = server().await;
    let m = LocalMetrics::new();
    let now = Time::from_secs(0);
    let fetch = |d: MetricDetails| {
        let m = m.clone();
        async move { m.fetch(&d, now).await }
    };
    let json = |pointer: &str| MetricDetails::HttpJson {
        url: format!("{base}/health"),
        pointer: pointer.into(),
        timeout_secs: 2.0,
    };
    assert_eq!(fetch(json("/db/cpu")).await, Ok(37.5));
    assert_eq!(fetch(json("/lag")).await, Ok(12.0), "numeric strings count");
    assert!(fetch(json("/db/name"))
        .await
        .expect_err("text")
        .0
        .contains("not a number"));
    assert!(fetch(json("/nope"))
        .await
        .expect_err("missing")
        .0
        .contains("nothing at pointer"));
    let prom = MetricDetails::Prometheus {
        base_url: format!("{base}/"),
        query: "max(rate(x[5m]))".into(),
        timeout_secs: 2.0,
    };
    assert_eq!(fetch(prom).await, Ok(0.25), "the query is sent URL-encoded");
    let cmd = |c: &str| MetricDetails::Command {
        command: vec!["sh".into(), "-c".into(), c.into()],
        timeout_secs: 2.0,
    };
    assert_eq!(fetch(cmd("echo 42")).await, Ok(42.0));
    assert!(fetch(cmd("echo oops >&2; exit 2"))
        .await
        .expect_err("fails")
        .0
        .contains("oops"));
    assert!(fetch(cmd("echo many words"))
        .await
        .expect_err("nan")
        .0
        .contains("not a number"));
    assert!(fetch(cmd("sleep 5")).await.expect_err("slow").0.contains("timed out"));
    let refused = MetricDetails::HttpJson {
        url: "http://127.0.0.1:9/x".into(),
        pointer: String::new(),
        timeout_secs: 1.0,
    };
    assert!(fetch(refused).await.is_err());
}
