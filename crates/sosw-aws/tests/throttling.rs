//! DynamoDB throttling against a fake DynamoDB endpoint on 127.0.0.1 that throttles on demand: the SDK is the one
//! layer that retries (exactly `MAX_ATTEMPTS` requests, never attempts × attempts), every throttled response is
//! counted, and the count reaches the Orchestrator's and Scavenger's pass reports.

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::json;
use sosw_aws::{Aws, DynamoStore, Tables, MAX_ATTEMPTS};
use sosw_core::ports::{StoreError, TaskStore};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

const THROTTLED: &str =
    r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}"#;

/// A DynamoDB that throttles the next `throttle` requests, then answers every request with an empty result.
#[derive(Debug, Default)]
struct Fake {
    throttle: AtomicU32,
    requests: AtomicU32,
}

async fn serve(fake: Arc<Fake>) -> String {
    let app = Router::new().route(
        "/",
        post(move |_headers: HeaderMap, _body: String| {
            let fake = fake.clone();
            async move {
                fake.requests.fetch_add(1, Ordering::SeqCst);
                let throttled = fake
                    .throttle
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let (status, body) = if throttled {
                    (StatusCode::BAD_REQUEST, THROTTLED.to_string())
                } else {
                    (StatusCode::OK, json!({"Count": 0, "Items": []}).to_string())
                };
                (status, [("content-type", "application/x-amz-json-1.0")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn throttling_is_retried_once_by_the_sdk_and_counted() {
    let fake = Arc::new(Fake::default());
    let endpoint = serve(fake.clone()).await;
    let aws = Aws::local(&endpoint).await;
    let store = DynamoStore::from_aws(&aws, Tables::default());

    // Two throttled responses, then an answer: three requests, two counted.
    fake.throttle.store(2, Ordering::SeqCst);
    assert_eq!(store.get_job("j").await.expect("answered after retries"), None);
    assert_eq!(fake.requests.load(Ordering::SeqCst), 3);
    assert_eq!((store.throttled_requests(), aws.throttled()), (2, 2));

    // Throttled throughout: exactly MAX_ATTEMPTS requests, then a retryable `Throttled` error.
    fake.requests.store(0, Ordering::SeqCst);
    fake.throttle.store(100, Ordering::SeqCst);
    let err = store
        .count_running("w", sosw_core::Greenfield::new(0))
        .await
        .expect_err("gives up");
    assert!(matches!(err, StoreError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(fake.requests.load(Ordering::SeqCst), MAX_ATTEMPTS);
    assert_eq!(store.throttled_requests(), 2 + u64::from(MAX_ATTEMPTS));
}

#[tokio::test]
async fn the_pass_reports_show_throttling() {
    let fake = Arc::new(Fake::default());
    let endpoint = serve(fake.clone()).await;
    let aws = Aws::local(&endpoint).await;
    let store = Arc::new(DynamoStore::from_aws(&aws, Tables::default()));
    let config = Arc::new(
        sosw_core::Config::from_value(
            &json!({"task_config": {"labourers": {"w": {"arn": "arn:aws:lambda:us-east-1:000000000000:function:w"}}}}),
        )
        .expect("config"),
    );
    let wiring = sosw_engine::Wiring {
        store: store.clone(),
        meta: None,
        metrics: sosw_testkit::fakes::FakeMetrics::new(),
        notifier: sosw_testkit::fakes::RecordingNotifier::new(),
        clock: sosw_testkit::ManualClock::at_secs(1_700_000_000),
    };
    let now = sosw_core::Time::from_secs(1_700_000_000);
    fake.throttle.store(3, Ordering::SeqCst);
    let scavenger = sosw_engine::Scavenger::new(config.clone(), &wiring);
    let report = scavenger.run_once(now).await;
    assert_eq!(report.store_throttled, 3);
    assert_eq!(report.to_json()["store_throttled"], json!(3));

    fake.throttle.store(1, Ordering::SeqCst);
    let invokers = sosw_testkit::fakes::FakeInvokers::new();
    let orchestrator = sosw_engine::Orchestrator::new(config, &wiring, invokers.as_ref()).expect("orchestrator");
    let report = orchestrator.run_once(now).await;
    assert_eq!(report.to_json()["store_throttled"], json!(1));
}
