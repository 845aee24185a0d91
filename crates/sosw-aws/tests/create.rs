//! Creating tasks never overwrites one: the conditional transactional puts behind `create_tasks`, driven directly
//! (as a second writer whose lookup missed what a first writer created meanwhile), against moto_server
//! (`SOSW_TEST_DYNAMODB`). The conformance suite covers the lookup; moto's transactions are not isolated enough to
//! race two writers there (see `sosw_testkit::Harness::isolated_transactions`).

use sosw_aws::{DynamoStore, Tables};
use sosw_core::ports::{Claim, TaskStore};
use sosw_core::{NewTask, Task, Time};

const NOW: i64 = 1_700_000_000;

#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn a_second_writer_never_overwrites_a_task_or_requeues_an_invoked_one() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let tables = Tables::prefixed(&format!("cr{}_", std::process::id()));
    let store = DynamoStore::connect(Some(&endpoint), tables).await;
    store.init().await.expect("tables");
    let now = Time::from_secs(NOW);
    let first: Vec<NewTask> = (0..150)
        .map(|i| NewTask {
            task_id: format!("t{i:04}"),
            labourer_id: "w".into(),
            payload: format!(r#"{{"i": {i}}}"#),
        })
        .collect();
    let written = store
        .create_tasks(&first, 1000, now)
        .await
        .expect("first writer")
        .created;
    // The orchestrator invokes one of them (in the second transaction's range).
    let target = &written[120];
    let claims = store
        .claim(
            "w",
            &[(target.task_id.clone(), target.greenfield)],
            sosw_core::Greenfield::new(NOW),
            sosw_core::Greenfield::new(NOW + 1),
        )
        .await
        .expect("claim");
    assert!(matches!(claims[0], Claim::Claimed { .. }), "{claims:?}");

    // The second writer's rows: the same 150 (positions of its own) and 10 new ones.
    let mut second: Vec<Task> = written
        .iter()
        .map(|t| Task {
            greenfield: t.greenfield.saturating_add(500_000),
            ..t.clone()
        })
        .collect();
    for i in 150..160 {
        second.push(Task {
            task_id: format!("t{i:04}"),
            greenfield: sosw_core::Greenfield::new(2000 + i * 1000 + 500_000),
            ..written[0].clone()
        });
    }
    let (created, existing) = store.put_new_tasks(&second).await.expect("second writer");
    let created: Vec<&str> = created.iter().map(|t| t.task_id.as_str()).collect();
    let new: Vec<String> = (150..160).map(|i| format!("t{i:04}")).collect();
    assert_eq!(created, new.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(existing.len(), 150);
    let invoked = store.get(&target.task_id).await.expect("get").expect("task").task;
    assert_eq!(
        (invoked.attempts, invoked.greenfield.get()),
        (1, NOW + 1),
        "the invoked task is untouched"
    );
    let other = store.get("t0007").await.expect("get").expect("task").task;
    assert_eq!(other.greenfield, written[7].greenfield, "queued tasks keep their place");
}

#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn a_task_dynamodb_cannot_store_is_refused_by_name_and_large_batches_are_split_by_size() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let tables = Tables::prefixed(&format!("cs{}_", std::process::id()));
    let store = DynamoStore::connect(Some(&endpoint), tables).await;
    store.init().await.expect("tables");
    let now = Time::from_secs(NOW);
    let task = |i: usize, bytes: usize| NewTask {
        task_id: format!("s{i:04}"),
        labourer_id: "w".into(),
        payload: format!(r#"{{"blob": "{}"}}"#, "x".repeat(bytes)),
    };
    // One task of 500 KB among small ones: the batch is refused, naming it, and nothing is created.
    let batch = vec![task(0, 10), task(1, 500 * 1024), task(2, 10)];
    let err = store.create_tasks(&batch, 1000, now).await.expect_err("refused");
    assert!(
        matches!(err, sosw_core::ports::StoreError::Invalid(_)) && err.to_string().contains("`s0001`"),
        "{err}"
    );
    for i in 0..3 {
        assert!(store.get(&format!("s{i:04}")).await.expect("get").is_none());
    }
    // 100 tasks of 60 KB (6 MB, over a transaction's 4 MB): written in transactions small enough, all created.
    let batch: Vec<NewTask> = (10..110).map(|i| task(i, 60 * 1024)).collect();
    let report = store.create_tasks(&batch, 1000, now).await.expect("created");
    assert_eq!(report.created.len(), 100);
}
