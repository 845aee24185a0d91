//! The dispatch lease on a server whose conditional writes are atomic, as DynamoDB's are: dynalite (npm), which
//! locks per item. (moto_server evaluates a condition and writes without a lock: two Python sosw orchestrators on
//! it invoke tasks twice, so a race test there proves nothing.) `.ci/run` starts dynalite and sets
//! `SOSW_TEST_DYNALITE`. dynalite has no transactions, so only the lease's requests — single conditional
//! `UpdateItem`s — run here; the moves have their conformance cases on moto_server.

use sosw_aws::{DynamoStore, Tables};
use sosw_core::ports::{LabourerStore, TaskStore};
use sosw_core::Time;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs dynalite (SOSW_TEST_DYNALITE); `.ci/run` starts it and runs ignored tests"]
async fn of_many_concurrent_takers_exactly_one_gets_the_lease() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNALITE") else {
        return;
    };
    let tables = Tables::prefixed(&format!("atomic{}_", std::process::id()));
    let store = DynamoStore::connect(Some(&endpoint), tables).await;
    store.init().await.expect("create tables");
    let store = Arc::new(store);
    let now = Time::from_secs(1_700_000_000);
    for round in 0..40 {
        let labourer = Arc::new(format!("w{round}"));
        let takers: Vec<_> = (0..16)
            .map(|i| {
                let (store, labourer) = (store.clone(), labourer.clone());
                tokio::spawn(async move {
                    store
                        .take_dispatch(&labourer, &format!("orchestrator-{i}"), now, now.plus_secs(60))
                        .await
                        .expect("take")
                        .is_some()
                })
            })
            .collect();
        let mut winners = 0;
        for t in takers {
            winners += usize::from(t.await.expect("join"));
        }
        assert_eq!(
            winners, 1,
            "round {round}: {winners} orchestrators hold one labourer's lease"
        );
    }
    // And the lease runs out, is given back only by its holder, and hands the flow state on (fresh tables).
    let tables = Tables::prefixed(&format!("atomic{}b_", std::process::id()));
    let store = DynamoStore::connect(Some(&endpoint), tables).await;
    store.init().await.expect("create tables");
    let store = Arc::new(store);
    sosw_testkit::conformance::dispatch_lease_is_exclusive(&sosw_testkit::Harness {
        store: store.clone(),
        meta: store,
        keep_alive: Box::new(()),
        isolated_transactions: false,
    })
    .await;
}
