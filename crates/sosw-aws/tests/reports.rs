//! Worker reports DynamoDB cannot store are refused by name, with nothing written, against moto_server
//! (`SOSW_TEST_DYNAMODB`): a number outside DynamoDB's range, more keys than one update expression holds.

use serde_json::{json, Map, Value};
use sosw_aws::{DynamoStore, Tables};
use sosw_core::ports::{Claim, StoreError, TaskStore};
use sosw_core::{Greenfield, NewTask, Time, WorkerReport};

const NOW: i64 = 1_700_000_000;

fn report(result: Map<String, Value>) -> WorkerReport {
    WorkerReport {
        result,
        ..WorkerReport::default()
    }
}

#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn a_report_dynamodb_cannot_store_is_refused_by_name_and_the_task_is_unchanged() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let store = DynamoStore::connect(Some(&endpoint), Tables::prefixed(&format!("rp{}_", std::process::id()))).await;
    store.init().await.expect("tables");
    let now = Time::from_secs(NOW);
    let task = NewTask {
        task_id: "r1".into(),
        labourer_id: "w".into(),
        payload: "{}".into(),
    };
    let created = store.create_tasks(&[task], 1000, now).await.expect("created").created;
    let claims = store
        .claim(
            "w",
            &[("r1".into(), created[0].greenfield)],
            Greenfield::new(NOW),
            Greenfield::new(NOW + 60),
        )
        .await
        .expect("claim");
    assert!(matches!(claims[0], Claim::Claimed { .. }), "{claims:?}");

    let huge = json!({"rows": 3, "ratio": 1e300})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let many: Map<String, Value> = (0..400).map(|i| (format!("k{i}"), json!(i))).collect();
    for (result, named) in [(huge, "`result_ratio`"), (many, "400 keys")] {
        for outcome in [
            store.complete("r1", now, &report(result.clone())).await.map(|_| ()),
            store.fail("r1", &report(result)).await.map(|_| ()),
        ] {
            let err = outcome.expect_err("refused");
            assert!(
                matches!(err, StoreError::Invalid(_)) && err.to_string().contains(named),
                "{err}"
            );
        }
    }
    let t = store.get("r1").await.expect("get").expect("task").task;
    assert_eq!((t.completed_at, t.failed_attempts), (None, 0), "nothing was recorded");
    assert!(t.result.is_empty() && t.stats.is_empty(), "{t:?}");
}
