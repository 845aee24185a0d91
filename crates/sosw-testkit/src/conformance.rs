//! The [`TaskStore`] / [`MetaSink`] contract, as executable cases. Each case receives a fresh, initialised store.
//! Written against the ports only, so that every backend runs exactly the same checks.
//! A test suite, not production code: its length is the contract's (one function per case; the labourer-state
//! cases are in `labourers.rs`).

mod labourers;
pub use labourers::*;

use crate::Harness;
use serde_json::{json, Map, Value};
use sosw_core::greenfield::{DEFAULT_INVOCATION_DELTA as D, DEFAULT_TASK_STEP as STEP};
use sosw_core::meta::{MetaAction, MetaEvent, Stamp};
use sosw_core::ports::{
    ArchiveExpect, Claim, Completion, JobProgress, ListCursor, StoreError, StoreResult, Table, TaskQuery, TaskStore,
};
use sosw_core::{Greenfield, Invocation, Markers, NewTask, Place, Time, WorkerReport};
use std::collections::HashSet;
use std::sync::Arc;

/// The time of every case: 2023-11-14.
pub const NOW: i64 = 1_700_000_000;

fn now() -> Time {
    Time::from_secs(NOW)
}

/// A greenfield, for the cases' literal positions and markers.
fn gf(value: i64) -> Greenfield {
    Greenfield::new(value)
}

fn new_task(id: &str, labourer: &str) -> NewTask {
    NewTask {
        task_id: id.to_string(),
        labourer_id: labourer.to_string(),
        payload: format!(r#"{{"id": "{id}", "nested": {{"a": [1, 2.5, "x"]}}}}"#),
    }
}

async fn create(store: &dyn TaskStore, labourer: &str, ids: &[&str]) -> Vec<i64> {
    let tasks: Vec<NewTask> = ids.iter().map(|id| new_task(id, labourer)).collect();
    let report = store.create_tasks(&tasks, STEP, now()).await.expect("create_tasks");
    assert!(
        report.existing.is_empty(),
        "fresh ids reported as existing: {:?}",
        report.existing
    );
    report.created.iter().map(|t| t.greenfield.get()).collect()
}

/// `(task_id, greenfield as stored now)` for `ids` (a missing task gets greenfield 0).
async fn as_read(store: &dyn TaskStore, ids: &[&str]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for id in ids {
        let g = store.get(id).await.expect("get").map_or(0, |t| t.task.greenfield.get());
        out.push((id.to_string(), g));
    }
    out
}

/// Claims `ids` as they are now, for a pass starting at `start`, moving them to `invoked`.
async fn claim(store: &dyn TaskStore, labourer: &str, ids: &[&str], start: i64, invoked: i64) -> Vec<Claim> {
    let read: Vec<(String, Greenfield)> = as_read(store, ids)
        .await
        .into_iter()
        .map(|(id, g)| (id, gf(g)))
        .collect();
    store
        .claim(labourer, &read, gf(start), gf(invoked))
        .await
        .expect("claim")
}

/// Claims `ids` at `at`, asserting each is claimed; returns the invoked greenfield.
async fn claim_all(store: &dyn TaskStore, labourer: &str, ids: &[&str], at: i64) -> i64 {
    let invoked = at + D;
    for c in claim(store, labourer, ids, at, invoked).await {
        assert!(matches!(c, Claim::Claimed { .. }), "expected a claim, got {c:?}");
    }
    invoked
}

fn report(stats: Value, result: Value) -> WorkerReport {
    let obj = |v: Value| v.as_object().cloned().unwrap_or_else(Map::new);
    WorkerReport {
        stats: obj(stats),
        result: obj(result),
        of: None,
    }
}

async fn place(store: &dyn TaskStore, id: &str) -> Option<Place> {
    store.get(id).await.expect("get").map(|s| s.place)
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict { .. }))
}

fn is_not_found<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotFound(_)))
}

pub async fn create_assigns_fifo_positions_per_labourer(h: &Harness) {
    let s = h.store.as_ref();
    assert_eq!(create(s, "w", &["a", "b", "c"]).await, vec![2000, 3000, 4000]);
    assert_eq!(create(s, "w", &["d", "e"]).await, vec![5000, 6000]);
    assert_eq!(create(s, "other", &["x"]).await, vec![2000]);
    let got = s.get("a").await.expect("get").expect("a exists");
    assert_eq!(got.place, Place::Live);
    assert_eq!(got.task.labourer_id, "w");
    assert_eq!(got.task.attempts, 0);
    assert_eq!(got.task.created_at, NOW as f64);
    assert_eq!(
        got.task.payload,
        new_task("a", "w").payload,
        "payload text is stored verbatim"
    );
    assert_eq!(got.task.completed_at, None);
    // Positions keep climbing while the queue is not empty, and restart at 2000 once it has drained.
    let invoked = claim_all(s, "w", &["a", "b", "c", "d", "e"], NOW).await;
    assert!(invoked > NOW);
    assert_eq!(create(s, "w", &["f"]).await, vec![2000]);
    let mixed = s
        .create_tasks(
            &[new_task("g", "w"), new_task("y", "other"), new_task("h", "w")],
            STEP,
            now(),
        )
        .await
        .expect("create");
    let got: Vec<(String, i64)> = mixed
        .created
        .iter()
        .map(|t| (t.task_id.clone(), t.greenfield.get()))
        .collect();
    assert_eq!(got, vec![("g".into(), 3000), ("y".into(), 3000), ("h".into(), 4000)]);
}

pub async fn create_skips_existing_ids(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a"]).await;
    let r = s
        .create_tasks(
            &[new_task("a", "w"), new_task("b", "w"), new_task("b", "w")],
            STEP,
            now(),
        )
        .await
        .expect("create");
    assert_eq!(r.existing, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(r.created.len(), 1);
    assert_eq!(r.created[0].task_id, "b");
    // An id that moved to the closed table still exists.
    let g = claim_all(s, "w", &["a"], NOW).await;
    s.archive("a", ArchiveExpect::Dead { greenfield: gf(g) }, now())
        .await
        .expect("archive");
    let r = s
        .create_tasks(&[new_task("a", "w")], STEP, now())
        .await
        .expect("create");
    assert_eq!(r.existing, vec!["a".to_string()]);
    assert!(r.created.is_empty());
    let err = s.create_tasks(&[new_task("", "w")], STEP, now()).await;
    assert!(matches!(err, Err(StoreError::Invalid(_))), "{err:?}");
}

/// The same job delivered twice and run at once (Lambda delivers asynchronous events at least once): every task is
/// created by exactly one of the writers, and one already invoked is never put back in the queue.
pub async fn concurrent_creates_of_the_same_ids_create_each_once(h: &Harness) {
    let s = h.store.clone();
    create(s.as_ref(), "w", &["first"]).await;
    claim_all(s.as_ref(), "w", &["first"], NOW).await;
    let ids: Vec<String> = std::iter::once("first".to_string())
        .chain((0..300).map(|i| format!("t{i:04}")))
        .collect();
    let tasks: Vec<NewTask> = ids.iter().map(|id| new_task(id, "w")).collect();
    let (a, b) = if h.isolated_transactions {
        tokio::join!(s.create_tasks(&tasks, STEP, now()), s.create_tasks(&tasks, STEP, now()))
    } else {
        let a = s.create_tasks(&tasks, STEP, now()).await;
        (a, s.create_tasks(&tasks, STEP, now()).await)
    };
    let (a, b) = (a.expect("first writer"), b.expect("second writer"));
    let created: Vec<String> = a.created.iter().chain(&b.created).map(|t| t.task_id.clone()).collect();
    let distinct: std::collections::BTreeSet<&String> = created.iter().collect();
    assert_eq!(
        created.len() - distinct.len(),
        0,
        "tasks created by both writers (the second overwrote the first)"
    );
    assert_eq!(distinct, ids[1..].iter().collect(), "each new task created, once");
    assert_eq!(a.created.len() + a.existing.len(), ids.len());
    assert_eq!(b.created.len() + b.existing.len(), ids.len());
    let first = s.get("first").await.expect("get").expect("first").task;
    assert_eq!(first.attempts, 1, "the invoked task was not put back in the queue");
}

pub async fn create_refuses_a_full_queue_and_writes_nothing(h: &Harness) {
    let s = h.store.as_ref();
    let early = Time::from_secs(10_000);
    let seven: Vec<NewTask> = (0..7).map(|i| new_task(&format!("t{i}"), "w")).collect();
    let r = s.create_tasks(&seven, STEP, early).await.expect("seven fit");
    assert_eq!(r.created.last().map(|t| t.greenfield.get()), Some(8000));
    let more = [new_task("t7", "w"), new_task("t8", "w")];
    let err = s.create_tasks(&more, STEP, early).await;
    assert!(
        matches!(&err, Err(StoreError::Invalid(m)) if m.contains("full")),
        "{err:?}"
    );
    assert!(
        s.get("t7").await.expect("get").is_none(),
        "a failed create writes nothing"
    );
    let q = s.next_queued("w", gf(10_000), 100).await.expect("next");
    assert_eq!(q.len(), 7);
}

pub async fn next_queued_is_fifo_with_a_strict_bound(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a", "b", "c"]).await;
    create(s, "v", &["z"]).await;
    let ids = |v: Vec<sosw_core::Task>| v.into_iter().map(|t| t.task_id).collect::<Vec<_>>();
    assert_eq!(ids(s.next_queued("w", gf(NOW), 2).await.expect("next")), vec!["a", "b"]);
    assert_eq!(
        ids(s.next_queued("w", gf(NOW), 5000).await.expect("next")),
        vec!["a", "b", "c"]
    );
    // greenfield < start is strict: the task at 3000 is not queued for a pass starting at 3000.
    assert_eq!(ids(s.next_queued("w", gf(3000), 10).await.expect("next")), vec!["a"]);
    claim_all(s, "w", &["a"], NOW).await;
    assert_eq!(
        ids(s.next_queued("w", gf(NOW), 10).await.expect("next")),
        vec!["b", "c"],
        "invoked tasks are excluded"
    );
    assert!(s.next_queued("nobody", gf(NOW), 10).await.expect("next").is_empty());
}

pub async fn claim_is_conditional(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a", "b"]).await;
    let claims = claim(s, "w", &["a", "missing", "b"], NOW, NOW + D).await;
    assert_eq!(
        claims,
        vec![
            Claim::Claimed {
                task_id: "a".into(),
                previous_greenfield: gf(2000)
            },
            Claim::Lost {
                task_id: "missing".into()
            },
            Claim::Claimed {
                task_id: "b".into(),
                previous_greenfield: gf(3000)
            },
        ]
    );
    let a = s.get("a").await.expect("get").expect("a");
    assert_eq!((a.task.greenfield.get(), a.task.attempts), (NOW + D, 1));
    // Already invoked: lost, and nothing changes.
    assert_eq!(
        claim(s, "w", &["a"], NOW + 1, NOW + 1 + D).await,
        vec![Claim::Lost { task_id: "a".into() }]
    );
    let a = s.get("a").await.expect("get").expect("a");
    assert_eq!((a.task.greenfield.get(), a.task.attempts), (NOW + D, 1));
    // Another labourer's claim on it is lost too.
    create(s, "w", &["c", "d"]).await;
    assert_eq!(
        claim(s, "v", &["c"], NOW, NOW + D).await,
        vec![Claim::Lost { task_id: "c".into() }]
    );
    // Read at another greenfield (it moved since): lost, and nothing changes.
    let stale = s
        .claim("w", &[("c".to_string(), gf(1))], gf(NOW), gf(NOW + D))
        .await
        .expect("claim");
    assert_eq!(stale, vec![Claim::Lost { task_id: "c".into() }]);
    // Not queued for a pass that starts before its position (`greenfield < start` is strict).
    assert_eq!(
        claim(s, "w", &["d"], 2000, 2000 + D).await,
        vec![Claim::Lost { task_id: "d".into() }]
    );
    let c = s.get("c").await.expect("get").expect("c");
    assert_eq!((c.task.attempts, c.place), (0, Place::Live));
}

pub async fn concurrent_claims_never_double(h: &Harness) {
    let ids: Vec<String> = (0..60).map(|i| format!("task{i:03}")).collect();
    let tasks: Vec<NewTask> = ids.iter().map(|id| new_task(id, "w")).collect();
    h.store.create_tasks(&tasks, STEP, now()).await.expect("create");
    // task000 is at 2000, task001 at 3000, ...
    fn position(id: &str) -> i64 {
        2000 + STEP * id.trim_start_matches("task").parse::<i64>().expect("numbered")
    }
    let mut handles = Vec::new();
    for worker in 0..8_i64 {
        let store: Arc<dyn TaskStore> = h.store.clone();
        let mut mine = ids.clone();
        mine.rotate_left((worker as usize * 7) % ids.len());
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for chunk in mine.chunks(5) {
                // Everyone read the queue before anyone claimed: every task at its first position.
                let read: Vec<(String, Greenfield)> = chunk.iter().map(|id| (id.clone(), gf(position(id)))).collect();
                for c in store
                    .claim("w", &read, gf(NOW + worker), gf(NOW + worker + D))
                    .await
                    .expect("claim")
                {
                    if let Claim::Claimed { task_id, .. } = c {
                        won.push(task_id);
                    }
                }
            }
            won
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("claimer"));
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), ids.len(), "every task claimed exactly once");
    assert_eq!(unique.len(), ids.len());
    for id in &ids {
        assert_eq!(
            h.store.get(id).await.expect("get").expect("task").task.attempts,
            1,
            "{id}"
        );
    }
}

pub async fn release_claim_restores_position_and_attempts(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a", "b"]).await;
    let invoked = claim_all(s, "w", &["a"], NOW).await;
    s.release_claim("a", gf(invoked), gf(2000)).await.expect("release");
    let a = s.get("a").await.expect("get").expect("a").task;
    assert_eq!((a.greenfield.get(), a.attempts), (2000, 0));
    let next: Vec<String> = s
        .next_queued("w", gf(NOW), 10)
        .await
        .expect("next")
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(next, vec!["a", "b"], "back at its place at the head");
    assert!(
        is_conflict(&s.release_claim("a", gf(invoked), gf(2000)).await),
        "a second release is a conflict"
    );
    assert!(is_not_found(&s.release_claim("missing", gf(invoked), gf(2000)).await));
    let invoked = claim_all(s, "w", &["b"], NOW).await;
    s.complete("b", now(), &WorkerReport::default())
        .await
        .expect("complete");
    assert!(
        is_conflict(&s.release_claim("b", gf(invoked), gf(3000)).await),
        "a completed task is not released"
    );
}

pub async fn running_and_expired_bounds(h: &Harness) {
    let s = h.store.as_ref();
    let m = Markers::new(now(), D, 900, 300);
    // Invoked at: the E tie (1200 s ago), 1199 s ago, exactly S − D (greenfield = S), a concurrent pass after I.
    let cases = [
        ("tie", m.expired.get()),
        ("fresh", m.expired.get() + 1),
        ("oldest", m.start.get()),
        ("later", m.invoked.get() + 10),
    ];
    create(s, "w", &cases.map(|(id, _)| id)).await;
    for (id, g) in cases {
        let c = claim(s, "w", &[id], NOW, g).await;
        assert!(matches!(c[0], Claim::Claimed { .. }), "{id}");
    }
    create(s, "w", &["queued"]).await;
    assert_eq!(
        s.count_running("w", m.expired).await.expect("count"),
        2,
        "fresh and later are running"
    );
    let expired: Vec<String> = s
        .list_expired("w", m.start, m.expired, 100)
        .await
        .expect("expired")
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(
        expired,
        vec!["oldest", "tie"],
        "oldest invocation first; the tie is expired only"
    );
    assert_eq!(
        s.list_expired("w", m.start, m.expired, 1).await.expect("expired").len(),
        1
    );
    s.complete("fresh", now(), &WorkerReport::default())
        .await
        .expect("complete");
    s.complete("tie", now(), &WorkerReport::default())
        .await
        .expect("complete");
    assert_eq!(
        s.count_running("w", m.expired).await.expect("count"),
        1,
        "completed tasks are not running"
    );
    assert_eq!(
        s.list_expired("w", m.start, m.expired, 100)
            .await
            .expect("expired")
            .len(),
        1
    );
}

pub async fn complete_only_invoked_tasks_and_never_create_rows(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a"]).await;
    assert!(is_not_found(
        &s.complete("ghost", now(), &WorkerReport::default()).await
    ));
    assert!(s.get("ghost").await.expect("get").is_none(), "no ghost row");
    assert!(is_not_found(&s.fail("ghost", &WorkerReport::default()).await));
    assert!(s.get("ghost").await.expect("get").is_none(), "no ghost row");
    assert!(
        is_conflict(&s.complete("a", now(), &WorkerReport::default()).await),
        "a queued task was never invoked"
    );
    assert!(is_conflict(&s.fail("a", &WorkerReport::default()).await));
    claim_all(s, "w", &["a"], NOW).await;
    let r = report(json!({"rows": 5, "nested": {"k": [1]}}), json!({"url": "s3://x"}));
    match s.complete("a", Time::from_secs(NOW + 30), &r).await.expect("complete") {
        Completion::Live(t) => {
            assert_eq!(t.completed_at, Some(NOW + 30));
            assert_eq!(Value::Object(t.stats), json!({"rows": 5, "nested": {"k": [1]}}));
        }
        other => panic!("expected a live completion, got {other:?}"),
    }
    let done = s.list_completed("w", gf(NOW), 10).await.expect("completed");
    assert_eq!(done.len(), 1);
    assert_eq!(Value::Object(done[0].result.clone()), json!({"url": "s3://x"}));
    // Archived: a later report is refused and writes nothing.
    s.archive("a", ArchiveExpect::Completed, now()).await.expect("archive");
    let late = s.complete("a", now(), &r).await;
    assert!(
        matches!(&late, Err(StoreError::Conflict { reason, .. }) if reason.contains("closed")),
        "{late:?}"
    );
    assert!(is_conflict(&s.fail("a", &r).await));
}

pub async fn repeated_completion_keeps_the_first_time(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a"]).await;
    claim_all(s, "w", &["a"], NOW).await;
    s.complete(
        "a",
        Time::from_secs(NOW + 5),
        &report(json!({"x": 1, "y": 1}), json!({})),
    )
    .await
    .expect("complete");
    s.complete(
        "a",
        Time::from_secs(NOW + 9),
        &report(json!({"y": 2}), json!({"r": true})),
    )
    .await
    .expect("complete again");
    let a = s.get("a").await.expect("get").expect("a").task;
    assert_eq!(a.completed_at, Some(NOW + 5));
    assert_eq!(Value::Object(a.stats), json!({"x": 1, "y": 2}));
    assert_eq!(Value::Object(a.result), json!({"r": true}));
}

pub async fn fail_counts_and_keeps_state(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a"]).await;
    let invoked = claim_all(s, "w", &["a"], NOW).await;
    // WA-4
    let t = s
        .fail("a", &report(json!({}), json!({"some_info": 33})))
        .await
        .expect("fail");
    assert_eq!(t.failed_attempts, 1);
    let t = s.fail("a", &report(json!({"s": 1}), json!({}))).await.expect("fail");
    assert_eq!(t.failed_attempts, 2);
    let a = s.get("a").await.expect("get").expect("a");
    assert_eq!(a.place, Place::Live);
    assert_eq!(
        (a.task.greenfield.get(), a.task.attempts, a.task.completed_at),
        (invoked, 1, None)
    );
    assert_eq!(a.task.result.get("some_info"), Some(&json!(33)));
    assert_eq!(a.task.stats.get("s"), Some(&json!(1)));
}

pub async fn archive_is_conditional(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["done", "dead", "raced"]).await;
    let g = claim_all(s, "w", &["done", "dead", "raced"], NOW).await;
    assert!(
        is_conflict(&s.archive("done", ArchiveExpect::Completed, now()).await),
        "not completed yet"
    );
    s.complete("done", now(), &report(json!({"n": 1}), json!({})))
        .await
        .expect("complete");
    let closed_at = Time::from_secs(NOW + 100);
    s.archive("done", ArchiveExpect::Completed, closed_at)
        .await
        .expect("archive");
    let got = s.get("done").await.expect("get").expect("done");
    assert_eq!(
        got.place,
        Place::Closed {
            closed_at: NOW + 100,
            completed: true
        }
    );
    assert_eq!(got.task.stats.get("n"), Some(&json!(1)), "every field is kept");
    assert_eq!(
        got.task.payload,
        new_task("done", "w").payload,
        "the payload stays JSON text"
    );
    assert_eq!(got.to_row()["labourer_id_task_status"], json!("w_1"));
    assert!(s.list_completed("w", gf(NOW), 10).await.expect("completed").is_empty());
    let again = s.archive("done", ArchiveExpect::Completed, closed_at).await;
    assert!(is_conflict(&again), "archiving twice is refused: {again:?}");

    assert!(
        is_conflict(
            &s.archive("dead", ArchiveExpect::Dead { greenfield: gf(g - 1) }, now())
                .await
        ),
        "stale greenfield"
    );
    s.archive("dead", ArchiveExpect::Dead { greenfield: gf(g) }, closed_at)
        .await
        .expect("archive dead");
    let got = s.get("dead").await.expect("get").expect("dead");
    assert_eq!(
        got.place,
        Place::Closed {
            closed_at: NOW + 100,
            completed: false
        }
    );
    assert_eq!(got.to_row()["labourer_id_task_status"], json!("w_0"));

    s.complete("raced", now(), &WorkerReport::default())
        .await
        .expect("complete");
    assert!(
        is_conflict(
            &s.archive("raced", ArchiveExpect::Dead { greenfield: gf(g) }, now())
                .await
        ),
        "a completion wins"
    );
    assert!(is_not_found(
        &s.archive("missing", ArchiveExpect::Completed, now()).await
    ));
}

/// A report that lands after the Scavenger listed a completed task, and before it archives it, is archived too: a
/// store that archives from the listed copy must notice that the task changed.
pub async fn reports_between_listing_and_archiving_are_kept(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a", "b"]).await;
    claim_all(s, "w", &["a", "b"], NOW).await;
    for id in ["a", "b"] {
        s.complete(id, now(), &report(json!({"rows": 1}), json!({})))
            .await
            .expect("complete");
    }
    let listed = s.list_completed("w", gf(NOW), 10).await.expect("completed");
    assert_eq!(listed.len(), 2);
    // The same second: `completed_at` stays as it was, only the report changes.
    s.complete("a", now(), &report(json!({"rows": 2}), json!({"late": true})))
        .await
        .expect("a second completion");
    s.fail("b", &report(json!({"errors": 1}), json!({})))
        .await
        .expect("a failure report");
    let moves = vec![
        ("a".to_string(), ArchiveExpect::Completed),
        ("b".to_string(), ArchiveExpect::Completed),
    ];
    for r in s.archive_many(&moves, now()).await.expect("archive") {
        r.expect("archived");
    }
    let a = s.get("a").await.expect("get").expect("a");
    assert!(matches!(a.place, Place::Closed { completed: true, .. }));
    assert_eq!(
        (a.task.stats.get("rows"), a.task.result.get("late")),
        (Some(&json!(2)), Some(&json!(true)))
    );
    let b = s.get("b").await.expect("get").expect("b");
    assert_eq!(
        (b.task.failed_attempts, b.task.stats.get("errors")),
        (1, Some(&json!(1)))
    );
}

pub async fn move_to_retry_loses_to_a_completion(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a", "b"]).await;
    let g = claim_all(s, "w", &["a", "b"], NOW).await;
    // The Scavenger read `a` as expired; the worker reports before the move: the completion wins.
    s.complete("a", now(), &WorkerReport::default())
        .await
        .expect("complete");
    assert!(is_conflict(&s.move_to_retry("a", gf(g), NOW + 900).await));
    assert_eq!(place(s, "a").await, Some(Place::Live));
    assert!(
        is_conflict(&s.move_to_retry("b", gf(g + 1), NOW + 900).await),
        "stale greenfield"
    );
    s.move_to_retry("b", gf(g), NOW + 900).await.expect("move");
    assert_eq!(
        place(s, "b").await,
        Some(Place::Retry {
            desired_launch_time: NOW + 900
        })
    );
    assert!(is_not_found(&s.move_to_retry("missing", gf(g), NOW).await));
    assert!(s
        .due_retries("w", Time::from_secs(NOW + 899), 10)
        .await
        .expect("due")
        .is_empty());
    let due = s.due_retries("w", Time::from_secs(NOW + 900), 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].task_id, "b");
}

pub async fn retry_round_trip_keeps_every_field(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a", "b", "c"]).await;
    let g = claim_all(s, "w", &["a", "b", "c"], NOW).await;
    s.fail("a", &report(json!({"rows": 3}), json!({"err": "boom"})))
        .await
        .expect("fail");
    for (id, launch) in [("a", NOW + 20), ("b", NOW + 10), ("c", NOW + 99)] {
        s.move_to_retry(id, gf(g), launch).await.expect("move");
    }
    let due: Vec<String> = s
        .due_retries("w", Time::from_secs(NOW + 50), 10)
        .await
        .expect("due")
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(due, vec!["b", "a"], "earliest desired launch time first");
    assert_eq!(
        s.due_retries("w", Time::from_secs(NOW + 50), 1)
            .await
            .expect("due")
            .len(),
        1
    );
    s.requeue("a", "w", gf(999)).await.expect("requeue");
    let a = s.get("a").await.expect("get").expect("a");
    assert_eq!(a.place, Place::Live);
    assert_eq!(
        (a.task.greenfield.get(), a.task.attempts, a.task.failed_attempts),
        (999, 1, 1)
    );
    assert_eq!(a.task.stats.get("rows"), Some(&json!(3)));
    assert_eq!(a.task.result.get("err"), Some(&json!("boom")));
    assert_eq!(a.task.payload, new_task("a", "w").payload);
    assert!(is_conflict(&s.requeue("a", "w", gf(998)).await), "already live");
    assert!(is_not_found(&s.requeue("missing", "w", gf(998)).await));
    let wrong = s.requeue("b", "other", gf(998)).await;
    assert!(wrong.is_err(), "a retry row is requeued only for its own labourer");
    assert_eq!(
        place(s, "b").await,
        Some(Place::Retry {
            desired_launch_time: NOW + 10
        })
    );
    let next: Vec<String> = s
        .next_queued("w", gf(NOW + 50), 10)
        .await
        .expect("next")
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(next, vec!["a"]);
}

pub async fn completion_of_a_task_waiting_for_retry_closes_it(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a"]).await;
    let g = claim_all(s, "w", &["a"], NOW).await;
    s.move_to_retry("a", gf(g), NOW + 900).await.expect("move");
    let late = Time::from_secs(NOW + 60);
    match s
        .complete("a", late, &report(json!({"n": 2}), json!({})))
        .await
        .expect("complete")
    {
        Completion::Closed(t) => assert_eq!(t.completed_at, Some(NOW + 60)),
        other => panic!("expected the retry row to close, got {other:?}"),
    }
    let got = s.get("a").await.expect("get").expect("a");
    assert_eq!(
        got.place,
        Place::Closed {
            closed_at: NOW + 60,
            completed: true
        }
    );
    assert_eq!(got.task.stats.get("n"), Some(&json!(2)));
    assert!(s
        .due_retries("w", Time::from_secs(NOW + 1000), 10)
        .await
        .expect("due")
        .is_empty());
    // A failure report for a waiting retry is recorded there.
    create(s, "w", &["b"]).await;
    let g = claim_all(s, "w", &["b"], NOW).await;
    s.move_to_retry("b", gf(g), NOW + 900).await.expect("move");
    assert_eq!(
        s.fail("b", &WorkerReport::default())
            .await
            .expect("fail")
            .failed_attempts,
        1
    );
    assert_eq!(
        place(s, "b").await,
        Some(Place::Retry {
            desired_launch_time: NOW + 900
        })
    );
}

pub async fn oldest_queued_ignores_invoked_tasks(h: &Harness) {
    let s = h.store.as_ref();
    assert_eq!(s.oldest_queued("w", gf(NOW)).await.expect("oldest"), None);
    assert_eq!(s.newest_queued("w", gf(NOW)).await.expect("newest"), None);
    create(s, "w", &["a", "b", "c"]).await;
    claim_all(s, "w", &["a"], NOW).await;
    assert_eq!(s.oldest_queued("w", gf(NOW)).await.expect("oldest"), Some(gf(3000)));
    assert_eq!(s.newest_queued("w", gf(NOW)).await.expect("newest"), Some(gf(4000)));
    assert_eq!(s.oldest_queued("other", gf(NOW)).await.expect("oldest"), None);
    assert_eq!(s.newest_queued("other", gf(NOW)).await.expect("newest"), None);
}

pub async fn counts_and_listing(h: &Harness) {
    let s = h.store.as_ref();
    let m = Markers::new(now(), D, 900, 300);
    create(
        s,
        "w",
        &["q1", "q2", "run", "exp", "done", "retry", "closed_ok", "closed_dead"],
    )
    .await;
    create(s, "v", &["other"]).await;
    claim_all(s, "w", &["run", "done", "closed_ok"], NOW).await;
    claim(s, "w", &["exp", "retry", "closed_dead"], NOW, m.expired.get()).await;
    s.complete("done", now(), &WorkerReport::default())
        .await
        .expect("complete");
    s.complete("closed_ok", now(), &WorkerReport::default())
        .await
        .expect("complete");
    s.archive("closed_ok", ArchiveExpect::Completed, now())
        .await
        .expect("archive");
    s.archive("closed_dead", ArchiveExpect::Dead { greenfield: m.expired }, now())
        .await
        .expect("archive");
    s.move_to_retry("retry", m.expired, NOW + 60).await.expect("retry");
    let c = s.counts("w", &m).await.expect("counts");
    assert_eq!(
        (
            c.queued,
            c.running,
            c.expired,
            c.completed,
            c.retry_waiting,
            c.closed_completed,
            c.closed_dead
        ),
        (2, 1, 1, 1, 1, 1, 1)
    );
    assert_eq!(s.counts("nobody", &m).await.expect("counts"), Default::default());
    assert_eq!(
        s.labourer_ids().await.expect("ids"),
        vec!["v".to_string(), "w".to_string()]
    );

    let list = |table, labourer: Option<&str>, completed| TaskQuery {
        table,
        labourer: labourer.map(str::to_string),
        greenfield: None,
        completed,
        limit: 100,
        after: None,
    };
    let ids = |v: Vec<sosw_core::StoredTask>| v.into_iter().map(|t| t.task.task_id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list(&list(Table::Live, Some("w"), Some(true))).await.expect("list")),
        vec!["done"]
    );
    assert_eq!(
        ids(s.list(&list(Table::Retry, None, None)).await.expect("list")),
        vec!["retry"]
    );
    assert_eq!(
        ids(s
            .list(&list(Table::Closed, Some("w"), Some(false)))
            .await
            .expect("list")),
        vec!["closed_dead"]
    );
    assert_eq!(s.list(&list(Table::Closed, None, None)).await.expect("list").len(), 2);
    let (range, _) = sosw_core::TaskState::Queued.range(&m);
    let queued = TaskQuery {
        greenfield: Some(range),
        completed: Some(false),
        ..list(Table::Live, Some("w"), None)
    };
    assert_eq!(ids(s.list(&queued).await.expect("list")), vec!["q1", "q2"]);
    assert_eq!(
        ids(s.list(&TaskQuery { limit: 1, ..queued }).await.expect("list")),
        vec!["q1"]
    );
    let all_live = s.list(&list(Table::Live, None, None)).await.expect("list");
    assert_eq!(
        all_live.first().map(|t| t.task.labourer_id.as_str()),
        Some("v"),
        "ordered by labourer"
    );
}

/// Keyset pagination: the pages of a listing, each read after the last row of the one before, concatenate to the
/// whole listing whatever the page size (ties in close and launch times included), and rows created between pages
/// never make a row appear twice or go missing.
pub async fn listing_pages_concatenate_to_the_whole_listing(h: &Harness) {
    let s = h.store.as_ref();
    let m = Markers::new(now(), D, 900, 300);
    let at = |secs: i64| Time::from_secs(NOW + secs);
    create(
        s,
        "w",
        &["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9", "wa"],
    )
    .await;
    create(s, "v", &["v0", "v1", "v2", "v3"]).await;
    // Closed rows, completed and dead, whose close times tie; retry rows whose launch times tie.
    claim_all(s, "w", &["w0", "w1", "w2"], NOW).await;
    for (id, secs) in [("w0", 1), ("w1", 0), ("w2", 1)] {
        s.complete(id, now(), &WorkerReport::default()).await.expect("complete");
        s.archive(id, ArchiveExpect::Completed, at(secs))
            .await
            .expect("archive");
    }
    claim(s, "w", &["w3", "w4", "w5", "w6"], NOW, m.expired.get()).await;
    claim(s, "v", &["v0", "v1"], NOW, m.expired.get()).await;
    for (id, secs) in [("w3", 1), ("w4", 0), ("v0", 1)] {
        let dead = ArchiveExpect::Dead { greenfield: m.expired };
        s.archive(id, dead, at(secs)).await.expect("archive");
    }
    for id in ["w5", "w6", "v1"] {
        s.move_to_retry(id, m.expired, NOW + 60).await.expect("retry");
    }
    claim_all(s, "w", &["w7"], NOW).await;

    let query = |table, labourer: Option<&str>, completed, greenfield| TaskQuery {
        table,
        labourer: labourer.map(str::to_string),
        greenfield,
        completed,
        limit: 1000,
        after: None,
    };
    let (queued, _) = sosw_core::TaskState::Queued.range(&m);
    let queries = [
        query(Table::Live, None, None, None),
        query(Table::Live, Some("w"), None, None),
        query(Table::Live, Some("w"), Some(false), Some(queued)),
        query(Table::Retry, None, None, None),
        query(Table::Retry, Some("w"), None, None),
        query(Table::Closed, None, None, None),
        query(Table::Closed, Some("w"), None, None),
        query(Table::Closed, Some("w"), Some(true), None),
        query(Table::Closed, Some("w"), Some(false), None),
    ];
    let keys = |rows: &[sosw_core::StoredTask]| rows.iter().map(ListCursor::after).collect::<Vec<_>>();
    let paged = |q: TaskQuery, page: usize| async move {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let rows = s
                .list(&TaskQuery {
                    limit: page,
                    after: after.clone(),
                    ..q.clone()
                })
                .await
                .expect("list a page");
            assert!(rows.len() <= page, "{q:?}: a page of {page} had {} rows", rows.len());
            let Some(last) = rows.last() else {
                return all;
            };
            after = Some(ListCursor::after(last));
            all.extend(keys(&rows));
            assert!(all.len() <= 100, "{q:?} in pages of {page} never ends");
        }
    };
    for q in queries {
        let whole = keys(&s.list(&q).await.expect("list"));
        assert!(whole.len() >= 2, "{q:?}: {whole:?}");
        assert!(
            whole.windows(2).all(|p| p[0] < p[1]),
            "{q:?} is not in order: {whole:?}"
        );
        for page in [1, 2, 3] {
            assert_eq!(paged(q.clone(), page).await, whole, "{q:?} in pages of {page}");
        }
    }

    // Tasks created between pages: before the cursor (labourer `a` sorts first) and at the end of `w`'s queue.
    let q = query(Table::Live, None, None, None);
    let before = keys(&s.list(&q).await.expect("list"));
    let mut got = Vec::new();
    let mut after = None;
    for n in 0.. {
        let rows = s
            .list(&TaskQuery {
                limit: 2,
                after: after.clone(),
                ..q.clone()
            })
            .await
            .expect("list a page");
        let Some(last) = rows.last() else { break };
        after = Some(ListCursor::after(last));
        got.extend(keys(&rows));
        if n < 3 {
            create(s, "a", &[&format!("a{n}")]).await;
            create(s, "w", &[&format!("new{n}")]).await;
        }
        assert!(n < 100, "the listing never ends");
    }
    assert!(
        got.windows(2).all(|p| p[0] < p[1]),
        "a row twice or out of order: {got:?}"
    );
    let old: Vec<ListCursor> = got.iter().filter(|k| before.contains(k)).cloned().collect();
    assert_eq!(old, before, "every row of the listing, once, in order");
    assert!(
        got.iter().all(|k| k.labourer_id != "a"),
        "rows before the cursor: {got:?}"
    );
}

pub async fn meta_events_in_order(h: &Harness) {
    let ev = |action, ms| MetaEvent {
        task_id: "a".into(),
        labourer_id: "w".into(),
        action,
        at: Time::from_millis(ms),
        author: "sosw_orchestrator".into(),
        details: Some(json!({"k": 1})),
    };
    let events = vec![
        ev(MetaAction::Created, 1_000),
        ev(MetaAction::Invoked, 2_500),
        ev(MetaAction::Archived, 2_000),
    ];
    h.meta.record(&events).await.expect("record");
    h.meta.record(&[]).await.expect("record nothing");
    let by_time = vec![events[0].clone(), events[2].clone(), events[1].clone()];
    assert_eq!(h.meta.events_of("a").await.expect("events"), by_time, "by time");
    // Two events at the same millisecond are both kept, in the order recorded.
    let same = vec![
        ev(MetaAction::MarkedAsCompleted, 3_000),
        ev(MetaAction::Archived, 3_000),
    ];
    h.meta.record(&same).await.expect("record");
    let all = h.meta.events_of("a").await.expect("events");
    assert_eq!(all.len(), 5);
    assert_eq!(&all[3..], &same[..]);
    assert!(h.meta.events_of("b").await.expect("events").is_empty());
}

pub async fn job_progress_round_trip(h: &Harness) {
    let s = h.store.as_ref();
    assert_eq!(s.get_job("j1").await.expect("get"), None);
    let mut job = JobProgress {
        job_id: "j1".into(),
        labourer_id: "w".into(),
        total: 200_000,
        scheduled: 10_000,
        started_at: Time::from_millis(1_700_000_000_123),
        updated_at: Time::from_millis(1_700_000_001_000),
        finished_at: None,
    };
    s.save_job(&job).await.expect("save");
    assert_eq!(s.get_job("j1").await.expect("get"), Some(job.clone()));
    job.scheduled = 200_000;
    job.updated_at = Time::from_millis(1_700_000_009_000);
    job.finished_at = Some(job.updated_at);
    s.save_job(&job).await.expect("replace");
    assert_eq!(s.get_job("j1").await.expect("get"), Some(job.clone()));
    let other = JobProgress {
        job_id: "j2".into(),
        updated_at: Time::from_millis(1_700_000_005_000),
        finished_at: None,
        ..job.clone()
    };
    s.save_job(&other).await.expect("save");
    let listed: Vec<String> = s
        .list_jobs(10)
        .await
        .expect("list")
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(listed, vec!["j1", "j2"], "most recently updated first");
    assert_eq!(s.list_jobs(1).await.expect("list").len(), 1);
}

/// An id no task or job can have (empty, or longer than any store keeps) names nothing: it is not an error.
pub async fn ids_no_task_can_have_name_nothing(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["t1"]).await;
    let long = "x".repeat(3000);
    for id in ["", long.as_str()] {
        assert!(s.get(id).await.expect("get").is_none(), "{} bytes", id.len());
        assert_eq!(s.get_job(id).await.expect("get"), None, "{} bytes", id.len());
    }
    assert!(s.get("t1").await.expect("get").is_some());
}

pub async fn create_skips_existing_ids_in_large_ordered_batches(h: &Harness) {
    let s = h.store.as_ref();
    // A Scheduler-like batch: 200 ascending ids; some already live, some in retry, some closed, one duplicated.
    let ids: Vec<String> = (0..200).map(|i| format!("job0000000000000{i:016x}")).collect();
    let first: Vec<NewTask> = ids.iter().step_by(10).map(|id| new_task(id, "w")).collect();
    s.create_tasks(&first, STEP, now()).await.expect("create");
    let g = NOW + D;
    let read = vec![(ids[10].clone(), gf(3000)), (ids[20].clone(), gf(4000))];
    s.claim("w", &read, gf(NOW), gf(g)).await.expect("claim");
    s.move_to_retry(&ids[10], gf(g), NOW + 60).await.expect("retry");
    s.archive(&ids[20], ArchiveExpect::Dead { greenfield: gf(g) }, now())
        .await
        .expect("close");
    let mut batch: Vec<NewTask> = ids.iter().map(|id| new_task(id, "w")).collect();
    batch.push(new_task("zzz-after-the-range", "w"));
    let r = s.create_tasks(&batch, STEP, now()).await.expect("create");
    let mut existing = r.existing.clone();
    existing.sort();
    let mut want: Vec<String> = ids.iter().step_by(10).cloned().collect();
    want.sort();
    assert_eq!(
        existing, want,
        "ids in the live, retry and closed tables are all skipped"
    );
    assert_eq!(r.created.len(), 200 - 20 + 1);
    let r = s.create_tasks(&batch, STEP, now()).await.expect("again");
    assert!(r.created.is_empty() && r.existing.len() == batch.len());
}

pub async fn completion_of_a_requeued_task_closes_it(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["a", "b"]).await;
    let g = claim_all(s, "w", &["a", "b"], NOW).await;
    s.move_to_retry("a", gf(g), NOW + 60).await.expect("retry");
    s.requeue("a", "w", gf(999)).await.expect("requeue");
    // Attempt 1's report arrives while attempt 2 waits in the queue: done, closed, never invoked again.
    let late = Time::from_secs(NOW + 30);
    match s
        .complete("a", late, &report(json!({"n": 1}), json!({})))
        .await
        .expect("complete")
    {
        Completion::Closed(t) => assert_eq!((t.completed_at, t.attempts), (Some(NOW + 30), 1)),
        other => panic!("expected the queued task to close, got {other:?}"),
    }
    let got = s.get("a").await.expect("get").expect("a");
    assert_eq!(
        got.place,
        Place::Closed {
            closed_at: NOW + 30,
            completed: true
        }
    );
    assert_eq!(got.task.stats.get("n"), Some(&json!(1)));
    assert!(s.next_queued("w", gf(NOW + 60), 10).await.expect("next").is_empty());
    // A completed live task is listed while its marker is current (greenfield >= now).
    s.complete("b", late, &WorkerReport::default()).await.expect("complete");
    assert_eq!(
        s.list_completed("w", gf(NOW + 30), 10).await.expect("completed").len(),
        1
    );
    assert!(s
        .list_completed("w", gf(g + 1), 10)
        .await
        .expect("completed")
        .is_empty());
}

/// The audit rule of [`TaskStore`]: a `*_recorded` move records its events if and only if it takes effect.
pub async fn moves_record_their_events_only_when_they_take_effect(h: &Harness) {
    let s = h.store.as_ref();
    let stamp = Stamp {
        author: "sosw_test".into(),
        at: now(),
    };
    let actions = |id: &'static str| async move {
        h.meta
            .events_of(id)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.action.as_str().to_string())
            .collect::<Vec<_>>()
    };
    let tasks: Vec<NewTask> = ["a", "b", "c", "d"].iter().map(|id| new_task(id, "w")).collect();
    s.create_tasks_recorded(&tasks[..3], STEP, now(), Some(&stamp))
        .await
        .expect("create");
    // "a" exists already: only "d" is created, and only "d" gets a `created` event from this call.
    s.create_tasks_recorded(&[tasks[0].clone(), tasks[3].clone()], STEP, now(), Some(&stamp))
        .await
        .expect("create");
    assert_eq!(actions("a").await, ["created"]);
    assert_eq!(actions("d").await, ["created"]);
    let g = NOW + D;
    let read = as_read(s, &["a", "b", "c", "d"]).await;
    // "b" is read stale (another orchestrator moved it): its claim is lost and records nothing.
    let mut stale: Vec<(String, Greenfield)> = read.iter().map(|(id, g)| (id.clone(), gf(*g))).collect();
    stale[1].1 = stale[1].1.saturating_add(1);
    let claims = s
        .claim_recorded("w", &stale, gf(NOW), gf(g), Some(&stamp))
        .await
        .expect("claim");
    assert!(matches!(claims[1], Claim::Lost { .. }));
    assert_eq!(actions("a").await, ["created", "invoked"]);
    assert_eq!(actions("b").await, ["created"]);
    let event = |id: &str, action| MetaEvent {
        task_id: id.into(),
        labourer_id: "w".into(),
        action,
        at: now(),
        author: "sosw_test".into(),
        details: Some(json!({"why": "test"})),
    };
    // A refused move records nothing; a move that takes effect records exactly what it was given.
    let wrong = s
        .archive_recorded(
            "a",
            ArchiveExpect::Dead { greenfield: gf(g + 1) },
            now(),
            &[event("a", MetaAction::ArchivedDead)],
        )
        .await;
    assert!(matches!(wrong, Err(StoreError::Conflict { .. })), "{wrong:?}");
    assert_eq!(actions("a").await, ["created", "invoked"]);
    s.move_to_retry_recorded("a", gf(g), NOW + 60, &[event("a", MetaAction::ScheduledForRetry)])
        .await
        .expect("retry");
    s.requeue_recorded("a", "w", gf(999), &[event("a", MetaAction::ReadyForRetry)])
        .await
        .expect("requeue");
    assert_eq!(
        actions("a").await,
        ["created", "invoked", "scheduled_for_retry", "ready_for_retry"]
    );
    let read_c = as_read(s, &["c"]).await[0].1;
    s.release_claim_recorded("c", gf(g), gf(read_c), &[event("c", MetaAction::InvocationThrottled)])
        .await
        .expect("release");
    assert_eq!(actions("c").await, ["created", "invoked", "invocation_throttled"]);
    // Reports: a failure, then a completion; a completion of a task waiting in the queue again closes it.
    s.fail_recorded("d", &WorkerReport::default(), Some(&stamp))
        .await
        .expect("fail");
    s.complete_recorded("d", now(), &WorkerReport::default(), Some(&stamp))
        .await
        .expect("complete");
    assert_eq!(
        actions("d").await,
        ["created", "invoked", "marked_as_failed", "marked_as_completed"]
    );
    s.complete_recorded("a", now(), &WorkerReport::default(), Some(&stamp))
        .await
        .expect("complete");
    assert_eq!(
        actions("a").await,
        [
            "created",
            "invoked",
            "scheduled_for_retry",
            "ready_for_retry",
            "marked_as_completed",
            "archived"
        ]
    );
    let refused = s
        .complete_recorded("b", now(), &WorkerReport::default(), Some(&stamp))
        .await;
    assert!(refused.is_err(), "never invoked");
    assert_eq!(actions("b").await, ["created"]);
    let done = s
        .archive_many_recorded(
            &[
                ("d".into(), ArchiveExpect::Completed),
                ("b".into(), ArchiveExpect::Completed),
            ],
            now(),
            Some(&stamp),
        )
        .await
        .expect("archive");
    assert!(done[0].is_ok() && done[1].is_err());
    assert_eq!(actions("d").await.last().map(String::as_str), Some("archived"));
    assert_eq!(actions("b").await, ["created"]);
    // The plain forms record nothing.
    claim(s, "w", &["b"], NOW, g).await;
    assert_eq!(actions("b").await, ["created"]);
}

/// A heartbeat moves a running task's greenfield and nothing else; a task that is queued, expired, completed,
/// waiting for retry, closed or unknown is refused and unchanged.
pub async fn heartbeat_extends_only_running_tasks(h: &Harness) {
    let s = h.store.as_ref();
    let positions = create(s, "w", &["run", "queued", "done", "late", "retry"]).await;
    let m = Markers::new(now(), D, 60, 30);
    let claims: Vec<(String, Greenfield)> = ["run", "done", "late", "retry"]
        .iter()
        .zip([positions[0], positions[2], positions[3], positions[4]])
        .map(|(id, g)| (id.to_string(), gf(g)))
        .collect();
    s.claim("w", &claims, m.start, m.invoked).await.expect("claim");
    s.complete("done", now(), &WorkerReport::default())
        .await
        .expect("complete");
    s.move_to_retry("retry", m.invoked, NOW + 60).await.expect("retry");
    // 100 s later, a task invoked at `now` with a 90 s window has expired.
    let later = Markers::new(now().plus_secs(100), D, 60, 30);
    let before = s.get("run").await.expect("get").expect("run");
    s.heartbeat("run", m.expired, m.invoked.saturating_add(10), None)
        .await
        .expect("a running task");
    let after = s.get("run").await.expect("get").expect("run");
    assert_eq!(after.task.greenfield.get(), m.invoked.get() + 10);
    assert_eq!(
        (after.task.attempts, after.task.completed_at, after.place),
        (before.task.attempts, None, Place::Live),
        "only the greenfield moves"
    );
    for (id, expired) in [
        ("queued", m.expired),
        ("done", m.expired),
        ("late", later.expired),
        ("retry", m.expired),
        ("nope", m.expired),
    ] {
        let before = s.get(id).await.expect("get");
        let err = s
            .heartbeat(id, expired, later.invoked, None)
            .await
            .expect_err("not running");
        assert!(err.is_refusal(), "{id}: {err}");
        assert_eq!(s.get(id).await.expect("get"), before, "{id} unchanged");
    }
}

/// A report that names its invocation (`WorkerReport::of`, a heartbeat's `of`) is recorded only while the task is
/// at that invocation. Once the task is invoked again, or that invocation was given back unsent, it is a
/// `StaleReport` and nothing changes — in the live table and in the retry table. A refund counts in
/// `refunded_attempts`, so the next invocation's number is new, and every move keeps the count.
pub async fn reports_on_a_superseded_invocation_are_refused(h: &Harness) {
    let s = h.store.as_ref();
    let positions = create(s, "w", &["a", "b"]).await;
    let first_invoked = claim_all(s, "w", &["a"], NOW).await;
    let first = s.get("a").await.expect("get").expect("a").task.invocation();
    s.release_claim("a", gf(first_invoked), gf(positions[0]))
        .await
        .expect("a refund");
    let refunded = s.get("a").await.expect("get").expect("a").task;
    assert_eq!((refunded.attempts, refunded.refunded_attempts), (0, 1));
    let m = Markers::new(now(), D, 60, 30);
    claim_all(s, "w", &["a"], NOW).await;
    let second = s.get("a").await.expect("get").expect("a").task.invocation();
    assert_eq!((first.number(), second.number()), (1, 2), "the number never repeats");

    let stale = |r: &StoreResult<()>| {
        matches!(
            r,
            Err(StoreError::StaleReport {
                reported: 1,
                latest: 2,
                ..
            })
        )
    };
    let of_first = WorkerReport {
        of: Some(first),
        ..report(json!({"late": 1}), json!({}))
    };
    let before = s.get("a").await.expect("get");
    let refused = [
        ("complete", s.complete("a", now(), &of_first).await.map(|_| ())),
        ("fail", s.fail("a", &of_first).await.map(|_| ())),
        (
            "heartbeat",
            s.heartbeat("a", m.expired, m.invoked.saturating_add(10), Some(first))
                .await,
        ),
    ];
    for (what, r) in refused {
        assert!(stale(&r), "{what} of the refunded invocation: {r:?}");
    }
    assert_eq!(s.get("a").await.expect("get"), before, "nothing written");

    let of_second = WorkerReport {
        of: Some(second),
        ..report(json!({"rows": 3}), json!({}))
    };
    s.heartbeat("a", m.expired, m.invoked.saturating_add(10), Some(second))
        .await
        .expect("a heartbeat of the latest invocation");
    s.fail("a", &of_second).await.expect("its failure");
    s.complete("a", now(), &of_second).await.expect("its completion");
    let done = s.get("a").await.expect("get").expect("a").task;
    assert_eq!(
        (done.failed_attempts, done.stats.get("rows"), done.refunded_attempts),
        (1, Some(&json!(3)), 1)
    );
    s.archive("a", ArchiveExpect::Completed, now()).await.expect("archive");
    assert_eq!(
        s.get("a").await.expect("get").expect("a").task.refunded_attempts,
        1,
        "the archive keeps the count"
    );

    // In the retry table: a report naming another invocation than the retry row's is refused as well.
    let invoked = claim_all(s, "w", &["b"], NOW).await;
    s.move_to_retry("b", gf(invoked), NOW + 60).await.expect("retry");
    let waiting = s.get("b").await.expect("get");
    let at = waiting.as_ref().expect("b").task.invocation();
    let other = Invocation {
        attempts: at.attempts + 1,
        ..at
    };
    let of_other = WorkerReport {
        of: Some(other),
        ..WorkerReport::default()
    };
    assert!(matches!(
        s.complete("b", now(), &of_other).await,
        Err(StoreError::StaleReport { .. })
    ));
    assert!(matches!(
        s.fail("b", &of_other).await,
        Err(StoreError::StaleReport { .. })
    ));
    assert_eq!(s.get("b").await.expect("get"), waiting, "nothing written");
    let of_its_own = WorkerReport {
        of: Some(at),
        ..WorkerReport::default()
    };
    assert!(matches!(
        s.complete("b", now(), &of_its_own).await,
        Ok(Completion::Closed(_))
    ));
}

/// Actions another writer recorded (Python sosw's `Worker` writes `completed` and `failed`) are read back verbatim,
/// between sosw-rs's own, never refused.
pub async fn foreign_meta_actions_are_read_verbatim(h: &Harness) {
    let event = |action: MetaAction, ms: i64| MetaEvent {
        task_id: "t".into(),
        labourer_id: "w".into(),
        action,
        at: now().plus_millis(ms),
        author: "sosw_worker".into(),
        details: None,
    };
    h.meta
        .record(&[
            event(MetaAction::Invoked, 0),
            event(MetaAction::Foreign("completed".into()), 10),
            event(MetaAction::parse("a_custom_step"), 20),
        ])
        .await
        .expect("record");
    let actions: Vec<String> = h
        .meta
        .events_of("t")
        .await
        .expect("events")
        .iter()
        .map(|e| e.action.as_str().to_string())
        .collect();
    assert_eq!(actions, ["invoked", "completed", "a_custom_step"]);
}

/// Only a task closed as dead is revived: back to the live table at the given position with every field kept but
/// its close, off the archive's counts, its events recorded; of two concurrent revivals one moves it; every other
/// task is refused unchanged.
pub async fn revive_moves_only_dead_tasks(h: &Harness) {
    let s = h.store.as_ref();
    let positions = create(s, "w", &["dead", "done", "queued", "retry", "twice"]).await;
    let m = Markers::new(now(), D, 60, 30);
    let claims: Vec<(String, Greenfield)> = ["dead", "done", "retry", "twice"]
        .iter()
        .zip([positions[0], positions[1], positions[3], positions[4]])
        .map(|(id, g)| (id.to_string(), gf(g)))
        .collect();
    s.claim("w", &claims, m.start, m.invoked).await.expect("claim");
    s.fail("dead", &report(json!({"why": "boom"}), json!({})))
        .await
        .expect("fail");
    s.complete("done", now(), &WorkerReport::default())
        .await
        .expect("complete");
    s.archive("done", ArchiveExpect::Completed, now())
        .await
        .expect("archive done");
    for id in ["dead", "twice"] {
        s.archive(id, ArchiveExpect::Dead { greenfield: m.invoked }, now())
            .await
            .expect("close as dead");
    }
    s.move_to_retry("retry", m.invoked, NOW + 60).await.expect("retry");
    assert_eq!(s.counts("w", &m).await.expect("counts").closed_dead, 2);
    let before = s.get("dead").await.expect("get").expect("dead");

    let event = MetaEvent {
        task_id: "dead".into(),
        labourer_id: "w".into(),
        action: MetaAction::RequeuedByOperator,
        at: now(),
        author: "sosw_operator ops".into(),
        details: Some(json!({"greenfield": 7})),
    };
    s.revive_recorded("dead", gf(7), std::slice::from_ref(&event))
        .await
        .expect("revive");
    let after = s.get("dead").await.expect("get").expect("dead");
    assert_eq!(after.place, Place::Live);
    assert_eq!(after.task.greenfield.get(), 7);
    assert_eq!(
        (
            after.task.attempts,
            &after.task.payload,
            after.task.failed_attempts,
            &after.task.stats,
            after.task.completed_at
        ),
        (
            before.task.attempts,
            &before.task.payload,
            before.task.failed_attempts,
            &before.task.stats,
            None
        ),
        "every field kept but its close"
    );
    let c = s.counts("w", &m).await.expect("counts");
    assert_eq!((c.closed_dead, c.queued), (1, 2), "off the archive, back in the queue");
    let events = h.meta.events_of("dead").await.expect("events");
    assert_eq!(
        events.last().map(|e| e.action.clone()),
        Some(MetaAction::RequeuedByOperator)
    );

    // Everything that is not dead is refused, unchanged, and records nothing.
    for id in ["dead", "done", "queued", "retry", "nope"] {
        let before = s.get(id).await.expect("get");
        let events_before = h.meta.events_of(id).await.expect("events").len();
        let r = s.revive_recorded(id, gf(5), std::slice::from_ref(&event)).await;
        if id == "nope" {
            assert!(is_not_found(&r), "{id}: {r:?}");
        } else {
            assert!(is_conflict(&r), "{id}: {r:?}");
        }
        assert_eq!(s.get(id).await.expect("get"), before, "{id} unchanged");
        assert_eq!(
            h.meta.events_of(id).await.expect("events").len(),
            events_before,
            "{id}: no event"
        );
    }

    // Operators at once (one after the other where the server does not isolate transactions): one revives it,
    // the others are refused.
    let mut outcomes = Vec::new();
    if h.isolated_transactions {
        let racers: Vec<_> = (0..4)
            .map(|i| {
                let store = h.store.clone();
                tokio::spawn(async move { store.revive_recorded("twice", gf(3 - i), &[]).await })
            })
            .collect();
        for r in racers {
            outcomes.push(r.await.expect("join"));
        }
    } else {
        for i in 0..4 {
            outcomes.push(s.revive_recorded("twice", gf(3 - i), &[]).await);
        }
    }
    let mut moved = 0;
    for r in outcomes {
        match r {
            Ok(()) => moved += 1,
            Err(e) => assert!(e.is_refusal(), "{e}"),
        }
    }
    assert_eq!(moved, 1);
    assert_eq!(place(s, "twice").await, Some(Place::Live));
    assert_eq!(s.counts("w", &m).await.expect("counts").closed_dead, 0);
}

/// The closed counts stay right as time passes (a store may keep what is long closed counted, as the DynamoDB
/// store does): polls hours apart, tasks closed between them, revivals of tasks closed long ago and just now, and
/// a rescan change nothing but what the moves change.
pub async fn closed_counts_stay_right_as_time_passes(h: &Harness) {
    let s = h.store.as_ref();
    const HOUR: i64 = 3600;
    let counts_at = |at: i64| async move {
        let c = s
            .counts("w", &Markers::new(Time::from_secs(at), D, 60, 30))
            .await
            .expect("counts");
        (c.closed_completed, c.closed_dead)
    };
    // Closes `ids` at `at`: the first completed, the others dead.
    let close = |ids: &'static [&'static str], at: i64| async move {
        create(s, "w", ids).await;
        claim_all(s, "w", ids, at).await;
        let m = Markers::new(Time::from_secs(at), D, 60, 30);
        s.complete(ids[0], Time::from_secs(at), &WorkerReport::default())
            .await
            .expect("complete");
        s.archive(ids[0], ArchiveExpect::Completed, Time::from_secs(at))
            .await
            .expect("archive");
        for id in &ids[1..] {
            s.archive(id, ArchiveExpect::Dead { greenfield: m.invoked }, Time::from_secs(at))
                .await
                .expect("close as dead");
        }
    };
    assert_eq!(counts_at(NOW).await, (0, 0));
    close(&["old-done", "old-dead-1", "old-dead-2", "old-dead-3"], NOW).await;
    assert_eq!(counts_at(NOW).await, (1, 3));
    assert_eq!(counts_at(NOW + HOUR).await, (1, 3), "an hour later");
    assert_eq!(counts_at(NOW + HOUR).await, (1, 3), "asked again");
    close(&["new-done", "new-dead-1", "new-dead-2"], NOW + HOUR).await;
    assert_eq!(counts_at(NOW + HOUR).await, (2, 5));

    s.revive_recorded("old-dead-1", gf(NOW + HOUR), &[])
        .await
        .expect("revive old");
    assert_eq!(counts_at(NOW + HOUR).await, (2, 4), "revived, closed an hour before");
    s.revive_recorded("new-dead-1", gf(NOW + HOUR), &[])
        .await
        .expect("revive new");
    assert_eq!(counts_at(NOW + HOUR).await, (2, 3), "revived, closed just now");
    for later in [2 * HOUR, 2 * HOUR + 60, 5 * HOUR, 24 * HOUR] {
        assert_eq!(counts_at(NOW + later).await, (2, 3), "{later} s later");
    }
    s.revive_recorded("new-dead-2", gf(NOW + 2 * HOUR), &[])
        .await
        .expect("revive, now settled");
    assert_eq!(counts_at(NOW + 24 * HOUR).await, (2, 2));
    s.rescan_labourers(Time::from_secs(NOW + 25 * HOUR))
        .await
        .expect("rescan");
    assert_eq!(counts_at(NOW + 25 * HOUR).await, (2, 2), "after a rescan");
    assert_eq!(counts_at(NOW + 48 * HOUR).await, (2, 2), "a day after it");
    // A poll whose clock runs behind the others' sees the same.
    assert_eq!(counts_at(NOW).await, (2, 2), "an earlier clock");

    // Closes a second apart around where the DynamoDB store's mark lands (20 minutes before a poll): each counted
    // once, whichever side of the mark.
    let q = NOW + 72 * HOUR;
    close(&["edge-1-done", "edge-1-dead"], q - 1201).await;
    close(&["edge-2-done", "edge-2-dead"], q - 1200).await;
    close(&["edge-3-done", "edge-3-dead"], q - 1199).await;
    for at in [q, q + 1, q + 600, q + 2 * HOUR] {
        assert_eq!(counts_at(at).await, (5, 5), "{} s after the edge", at - q);
    }
}

/// Task `id` of `labourer`, queued: invoked, completed and archived.
async fn close_completed(s: &dyn TaskStore, labourer: &str, id: &str) {
    claim_all(s, labourer, &[id], NOW).await;
    s.complete(id, now(), &WorkerReport::default()).await.expect("complete");
    s.archive(id, ArchiveExpect::Completed, now()).await.expect("archive");
}

/// Task `id` of `labourer`, queued: invoked, expired and moved to the retry table.
async fn wait_for_retry(s: &dyn TaskStore, labourer: &str, id: &str) {
    let m = Markers::new(now(), D, 60, 30);
    claim(s, labourer, &[id], NOW, m.expired.get()).await;
    s.move_to_retry(id, m.expired, NOW + 60).await.expect("retry");
}

/// `has_task` finds a task of its labourer in each table, and neither an unknown id nor another labourer's task.
pub async fn has_task_looks_in_every_table_for_the_labourers_task(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "w", &["live", "retry", "closed"]).await;
    create(s, "v", &["other"]).await;
    wait_for_retry(s, "w", "retry").await;
    close_completed(s, "w", "closed").await;
    for id in ["live", "retry", "closed"] {
        assert!(s.has_task("w", id).await.expect("has_task"), "{id}");
        assert!(!s.has_task("v", id).await.expect("has_task"), "{id} is w's");
    }
    assert!(s.has_task("v", "other").await.expect("has_task"));
    assert!(!s.has_task("w", "nothing").await.expect("has_task"));
    assert!(!s.has_task("w", "").await.expect("has_task"));
    assert!(!s.has_task("", "live").await.expect("has_task"));
}

/// The labourers with tasks in any table are listed, in order, by `labourer_ids` and by a rescan alike, and a
/// rescan changes nothing the store already knew.
pub async fn labourers_with_tasks_are_listed_and_rescanned(h: &Harness) {
    let s = h.store.as_ref();
    assert!(s.labourer_ids().await.expect("ids").is_empty());
    assert!(s.rescan_labourers(now()).await.expect("rescan").is_empty());
    create(s, "w", &["closed"]).await;
    create(s, "v", &["retry"]).await;
    create(s, "u", &["queued"]).await;
    close_completed(s, "w", "closed").await;
    wait_for_retry(s, "v", "retry").await;
    let every = vec!["u".to_string(), "v".into(), "w".into()];
    assert_eq!(s.labourer_ids().await.expect("ids"), every);
    assert_eq!(s.rescan_labourers(now()).await.expect("rescan"), every);
    assert_eq!(s.labourer_ids().await.expect("ids"), every);
}

/// `counts_many` is `counts` of each labourer, in their order (an empty list, a labourer with no task, one asked
/// twice too), also hours after a task closed.
pub async fn counts_many_is_counts_of_each(h: &Harness) {
    let s = h.store.as_ref();
    create(s, "a", &["a1", "a2", "a3"]).await;
    let positions = create(s, "b", &["b1", "b2"]).await;
    let m = Markers::new(now(), D, 60, 30);
    s.claim("b", &[("b1".to_string(), gf(positions[0]))], m.start, m.invoked)
        .await
        .expect("claim");
    assert!(s.counts_many(&[]).await.expect("none").is_empty());
    let asked: Vec<(String, Markers)> = ["b", "nobody", "a"].iter().map(|l| (l.to_string(), m)).collect();
    let many = s.counts_many(&asked).await.expect("counts_many");
    let mut each = Vec::new();
    for (l, m) in &asked {
        each.push(s.counts(l, m).await.expect("counts"));
    }
    assert_eq!(many, each);
    assert_eq!(
        (many[0].queued, many[0].running, many[1].queued, many[2].queued),
        (1, 1, 0, 3)
    );
    // With a closed task, one labourer asked twice in one call, and hours later (a store may keep it counted).
    close_completed(s, "a", "a1").await;
    for at in [NOW, NOW + 3600, NOW + 7200] {
        let m = Markers::new(Time::from_secs(at), D, 60, 30);
        let asked: Vec<(String, Markers)> = ["a", "b", "a"].iter().map(|l| (l.to_string(), m)).collect();
        let many = s.counts_many(&asked).await.expect("counts_many");
        assert_eq!(many[0], many[2], "the same labourer twice");
        assert_eq!((many[0].closed_completed, many[1].closed_completed), (1, 0), "at {at}");
        assert_eq!(many[0], s.counts("a", &m).await.expect("counts"), "at {at}");
    }
}
