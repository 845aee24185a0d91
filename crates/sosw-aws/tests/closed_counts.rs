//! The DynamoDB store's closed counts (`src/dynamo/closed_counts/`): what closed long ago is counted once and kept
//! on the labourer's counts item, so a poll reads only what closed since; a rescan counts everything again.
//! Against a local moto_server (`SOSW_TEST_DYNAMODB`); the shared conformance case
//! `closed_counts_stay_right_as_time_passes` covers the counts themselves on every store.

use sosw_aws::{DynamoStore, Tables};
use sosw_core::ports::{ArchiveExpect, Claim, TaskStore};
use sosw_core::{Greenfield, Markers, NewTask, Time, WorkerReport};

const NOW: i64 = 1_800_000_000;
const HOUR: i64 = 3600;

fn endpoint() -> String {
    std::env::var("SOSW_TEST_DYNAMODB").expect("SOSW_TEST_DYNAMODB: the URL of a local moto_server")
}

/// (A real delta: the config keeps it above duration + cooldown, and DynamoDB refuses the expired count's BETWEEN
/// otherwise.)
async fn closed_counts(store: &DynamoStore, at: i64) -> (u64, u64) {
    let c = store
        .counts("w", &Markers::new(Time::from_secs(at), 3600, 60, 30))
        .await
        .expect("counts");
    (c.closed_completed, c.closed_dead)
}

#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn what_closed_long_ago_is_not_read_again_until_a_rescan() {
    let endpoint = endpoint();
    let tables = Tables::prefixed(&format!("cc{}_", std::process::id()));
    let closed_table = tables.closed.clone();
    let labourers_table = tables.labourers.clone();
    let store = DynamoStore::connect(Some(&endpoint), tables).await;
    store.init().await.expect("tables");
    let at = Time::from_secs(NOW);

    // Ten tasks closed at NOW: four completed, six dead.
    let tasks: Vec<NewTask> = (0..10)
        .map(|i| NewTask {
            task_id: format!("t{i}"),
            labourer_id: "w".into(),
            payload: "{}".into(),
        })
        .collect();
    let created = store.create_tasks(&tasks, 1, at).await.expect("create").created;
    let m = Markers::new(at, 1, 60, 30);
    let reads: Vec<(String, Greenfield)> = created.iter().map(|t| (t.task_id.clone(), t.greenfield)).collect();
    let claims = store.claim("w", &reads, m.start, m.invoked).await.expect("claim");
    assert!(claims.iter().all(|c| matches!(c, Claim::Claimed { .. })));
    for (i, task) in created.iter().enumerate() {
        if i < 4 {
            store
                .complete(&task.task_id, at, &WorkerReport::default())
                .await
                .expect("complete");
            store
                .archive(&task.task_id, ArchiveExpect::Completed, at)
                .await
                .expect("archive");
        } else {
            store
                .archive(&task.task_id, ArchiveExpect::Dead { greenfield: m.invoked }, at)
                .await
                .expect("close as dead");
        }
    }
    assert_eq!(closed_counts(&store, NOW).await, (4, 6));
    // An hour later they are settled: this poll counts them once more and keeps the counts.
    assert_eq!(closed_counts(&store, NOW + HOUR).await, (4, 6));

    // Another program deletes two settled items (one of each): polls keep the stored counts, so they did not
    // read the settled range again...
    let raw = aws_sdk_dynamodb::Client::new(sosw_aws::Aws::local(&endpoint).await.sdk());
    for id in [&created[0].task_id, &created[9].task_id] {
        raw.delete_item()
            .table_name(&closed_table)
            .key("task_id", aws_sdk_dynamodb::types::AttributeValue::S(id.clone()))
            .send()
            .await
            .expect("delete");
    }
    assert_eq!(closed_counts(&store, NOW + HOUR).await, (4, 6));
    assert_eq!(
        closed_counts(&store, NOW + 2 * HOUR).await,
        (4, 6),
        "the mark moved again"
    );
    // ...until a rescan counts the whole archive again.
    store
        .rescan_labourers(Time::from_secs(NOW + 3 * HOUR))
        .await
        .expect("rescan");
    assert_eq!(closed_counts(&store, NOW + 3 * HOUR).await, (3, 5));
    assert_eq!(closed_counts(&store, NOW + 30 * HOUR).await, (3, 5));

    // A revival of a settled task: the closed index may still show it for a moment, so the mark waits a minute
    // after a poll first notices the revival before it moves again.
    let mark = || async {
        let item = raw
            .get_item()
            .table_name(&labourers_table)
            .key(
                "labourer_id",
                aws_sdk_dynamodb::types::AttributeValue::S("\u{1}closed counts\u{1}w".into()),
            )
            .consistent_read(true)
            .send()
            .await
            .expect("counts item")
            .item
            .expect("a counts item");
        match item.get("closed_counted_to") {
            Some(aws_sdk_dynamodb::types::AttributeValue::N(n)) => n.parse::<i64>().expect("a number"),
            other => panic!("no mark: {other:?}"),
        }
    };
    let before = mark().await;
    store
        .revive_recorded(&created[5].task_id, created[5].greenfield, &[])
        .await
        .expect("revive");
    let later = NOW + 40 * HOUR;
    for (at, moved) in [(later, false), (later + 59, false), (later + 60, true)] {
        assert_eq!(closed_counts(&store, at).await, (3, 4));
        assert_eq!(mark().await != before, moved, "{} s after the first poll", at - later);
    }
    assert_eq!(mark().await, later + 60 - 20 * 60);
}

/// The count queries are ones DynamoDB accepts (a query's filter may not name the index's keys, which moto does not
/// check and dynalite does), and a fractional `closed_at` just below a mark is counted once. Closed items are
/// written raw: dynalite has no transactions, which the moves use.
#[tokio::test]
#[ignore = "needs dynalite (SOSW_TEST_DYNALITE); `.ci/run` starts it and runs ignored tests"]
async fn the_count_queries_are_ones_dynamodb_accepts() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNALITE") else {
        return;
    };
    let tables = Tables::prefixed(&format!("ccq{}_", std::process::id()));
    let closed_table = tables.closed.clone();
    let store = DynamoStore::connect(Some(&endpoint), tables).await;
    store.init().await.expect("tables");
    let raw = aws_sdk_dynamodb::Client::new(sosw_aws::Aws::local(&endpoint).await.sdk());
    // The mark of a poll at NOW + 2 h is 20 minutes before it.
    let mark = (NOW + 2 * HOUR - 20 * 60).to_string();
    let closes = [
        ("a", "1", NOW.to_string()),
        ("b", "0", NOW.to_string()),
        ("c", "1", format!("{}.5", NOW + 2 * HOUR - 20 * 60 - 1)),
        ("d", "1", mark.clone()),
        ("e", "0", format!("{mark}.25")),
    ];
    for (id, done, closed_at) in closes {
        raw.put_item()
            .table_name(&closed_table)
            .item("task_id", S(id.into()))
            .item("labourer_id", S("w".into()))
            .item("labourer_id_task_status", S(format!("w_{done}")))
            .item("closed_at", N(closed_at))
            .send()
            .await
            .expect("put");
    }
    for at in [NOW, NOW + HOUR, NOW + 2 * HOUR, NOW + 2 * HOUR + 1, NOW + 30 * HOUR] {
        assert_eq!(closed_counts(&store, at).await, (3, 2), "{at}");
    }
    store
        .rescan_labourers(Time::from_secs(NOW + 31 * HOUR))
        .await
        .expect("rescan");
    assert_eq!(closed_counts(&store, NOW + 31 * HOUR).await, (3, 2));
}
