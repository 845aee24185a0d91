//! The SQLite store runs the shared store conformance suite, each case on a new file.

use sosw_core::ports::TaskStore;
use sosw_sqlite::SqliteStore;
use sosw_testkit::Harness;
use std::sync::Arc;

async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_or_create(dir.path().join("sosw.db")).expect("open");
    store.init().await.expect("init");
    let store = Arc::new(store);
    Harness {
        store: store.clone(),
        meta: store,
        keep_alive: Box::new(dir),
        isolated_transactions: true,
    }
}

sosw_testkit::store_conformance!(harness());
