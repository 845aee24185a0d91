//! The listener's limits, on a real socket: half-sent requests are timed out, connections are capped, slow and
//! oversized bodies are refused — and a worker's report is still answered meanwhile.

// A deadline on a real server reads the monotonic clock (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

use sosw_server::{api, serve, Auth, Limits, Server, Service};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upper bound for what should take well under a second; never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(20);

async fn server(limits: Limits) -> (Server, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(sosw_sqlite::SqliteStore::open_or_create(dir.path().join("sosw.db")).expect("store"));
    sosw_core::ports::TaskStore::init(store.as_ref()).await.expect("init");
    let clock = sosw_testkit::ManualClock::at_secs(1_700_000_000);
    let config = Arc::new(sosw_core::Config::from_value(&serde_json::json!({})).expect("config"));
    let wiring = sosw_engine::Wiring {
        store: store.clone(),
        meta: None,
        metrics: sosw_testkit::fakes::FakeMetrics::new(),
        notifier: sosw_testkit::fakes::RecordingNotifier::new(),
        clock,
    };
    let service = Arc::new(Service::new(config, wiring, Auth::default(), limits));
    let server = serve("127.0.0.1:0".parse().expect("addr"), api::router(service), limits)
        .await
        .expect("serve");
    let addr = server.url.trim_start_matches("http://").parse().expect("addr");
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
        "POST /report HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
