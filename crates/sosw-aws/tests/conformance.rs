//! The DynamoDB store runs the shared store conformance suite against a local AWS-compatible server
//! (`moto_server`; `.ci/run` starts one). Point `SOSW_TEST_DYNAMODB` at it, e.g. `http://127.0.0.1:5123`.
//! Each case gets its own tables (a unique name prefix), created by `init`.

use sosw_aws::{DynamoStore, Tables};
use sosw_core::ports::TaskStore;
use sosw_testkit::Harness;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

static CASE: AtomicUsize = AtomicUsize::new(0);

/// Read directly: `store_conformance!` applies the skip-or-require rule itself.
fn endpoint() -> Option<String> {
    std::env::var("SOSW_TEST_DYNAMODB").ok().filter(|e| !e.is_empty())
}

fn missing() -> Option<String> {
    endpoint()
        .is_none()
        .then(|| "SOSW_TEST_DYNAMODB is not set (the URL of a local moto_server)".to_string())
}

async fn harness() -> Harness {
    let prefix = format!("c{}_{}_", std::process::id(), CASE.fetch_add(1, Ordering::SeqCst));
    let tables = Tables::prefixed(&prefix);
    let store = DynamoStore::connect(endpoint().as_deref(), tables).await;
    store.init().await.expect("create tables");
    let store = Arc::new(store);
    Harness {
        store: store.clone(),
        meta: store,
        keep_alive: Box::new(()),
        // moto_server's transactions are not isolated (see `Harness`); `tests/create.rs` covers the race here.
        isolated_transactions: false,
    }
}

sosw_testkit::store_conformance!(
    harness(),
    ignore: "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests",
    skip_unless: missing()
);
