//! Engine tests: whole task lifecycles on a real SQLite file, driven by a manual clock and scripted fakes.

mod common;

use common::{one_labourer, World, T0};
use serde_json::{json, Value};
use sosw_core::config::MetricDetails;
use sosw_core::decide::FailureKind;
use sosw_core::flow::HeldReason;
use sosw_core::ports::{InvokeError, InvokeOutcome, MetaSink, TaskStore};
use sosw_core::task::ReportKind;
use sosw_core::{MetaAction, NewTask, Place, WorkerReport};
use sosw_engine::{Orchestrator, Wiring};
use sosw_sqlite::SqliteStore;
use sosw_testkit::fakes::FakeInvokers;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn expire_retry_with_delay_head_of_queue_then_dead() {
    let w = World::new(one_labourer(json!({}))).await;
    let (orch, scav) = (w.orchestrator(), w.scavenger());
    w.create("w", &["a", "b", "c"]).await;

    let r = orch.run_once(w.now()).await;
    let l = &r.labourers[0];
    assert_eq!(
        (l.eco_status, l.desired, l.running, l.requested, l.invoked),
        (4, 2, 0, 2, 2)
    );
    let fake = w.invokers.of("w");
    assert_eq!(fake.invoked_ids(), vec!["a", "b"], "FIFO");
    let event = fake.events.lock().expect("lock")[0].1.clone();
    assert_eq!(event["n"], json!("a"));
    assert_eq!(event["task_id"], json!("a"), "task fields overwrite payload keys");
    assert_eq!(
        (event["greenfield"].clone(), event["attempts"].clone()),
        (json!(2000), json!(0)),
        "values before invoking"
    );

    // Full: nothing more until something finishes.
    assert_eq!(orch.run_once(w.now()).await.labourers[0].invoked, 0);
    w.assistant()
        .complete("a", &WorkerReport::default(), w.now())
        .await
        .expect("complete a");
    assert_eq!(
        orch.run_once(w.now()).await.labourers[0].invoked,
        1,
        "c takes the freed slot"
    );
    assert_eq!(scav.run_once(w.now()).await.labourers[0].archived, 1);
    assert!(matches!(w.place("a").await, Place::Closed { completed: true, .. }));

    // b and c never report: after duration + cooldown (90 s) they expire and wait max_duration × attempts.
    w.clock.advance_secs(89);
    assert_eq!(
        scav.run_once(w.now()).await.labourers[0].retried,
        0,
        "still running 89 s after invocation"
    );
    w.clock.advance_secs(1);
    let s = scav.run_once(w.now()).await;
    assert_eq!(
        s.labourers[0].retried, 2,
        "exactly duration + cooldown after invocation (the E tie) is expired: {s:?}"
    );
    assert_eq!(
        w.place("b").await,
        Place::Retry {
            desired_launch_time: T0 + 90 + 60
        }
    );

    // A new task arrives meanwhile; the retries go to the head of the queue when due.
    w.create("w", &["d"]).await;
    w.clock.advance_secs(59);
    assert_eq!(scav.run_once(w.now()).await.labourers[0].requeued, 0);
    w.clock.advance_secs(1);
    assert_eq!(scav.run_once(w.now()).await.labourers[0].requeued, 2);
    assert_eq!(w.task("d").await.greenfield.get(), 2000);
    assert_eq!(
        (w.task("b").await.greenfield.get(), w.task("c").await.greenfield.get()),
        (1999, 1998)
    );
    fake.events.lock().expect("lock").clear();
    orch.run_once(w.now()).await;
    assert_eq!(
        fake.invoked_ids(),
        vec!["c", "b"],
        "retries first, the last requeued at the very head"
    );
    assert_eq!(w.task("b").await.attempts, 2);

    // Attempt 2 expires (delay 2 × 60), attempt 3 expires: dead, one notification for both.
    for attempt in 2..=3 {
        w.clock.advance_secs(91);
        let s = scav.run_once(w.now()).await;
        if attempt == 3 {
            assert_eq!(s.labourers[0].dead, 2, "{s:?}");
            break;
        }
        assert_eq!(s.labourers[0].retried, 2);
        assert_eq!(
            w.place("b").await,
            Place::Retry {
                desired_launch_time: w.now().secs() + 120
            }
        );
        w.clock.advance_secs(120);
        assert_eq!(scav.run_once(w.now()).await.labourers[0].requeued, 2);
        fake.events.lock().expect("lock").clear();
        orch.run_once(w.now()).await;
        assert_eq!(fake.invoked_ids(), vec!["c", "b"]);
    }
    assert!(matches!(w.place("b").await, Place::Closed { completed: false, .. }));
    let mut messages = w.notifier.messages();
    messages.sort();
    assert_eq!(messages, vec!["Closing dead task: b ", "Closing dead task: c "]);
    assert_eq!(w.notifier.notifications(), 1, "one notification per pass");
    use MetaAction::*;
    assert_eq!(
        w.actions("b").await,
        vec![
            Created,
            Invoked,
            ScheduledForRetry,
            ReadyForRetry,
            Invoked,
            ScheduledForRetry,
            ReadyForRetry,
            Invoked,
            ArchivedDead
        ]
    );
    assert_eq!(
        w.actions("a").await,
        vec![Created, Invoked, MarkedAsCompleted, Archived]
    );
}

#[tokio::test]
async fn a_completion_that_races_the_scavenger_is_not_lost() {
    let w = World::new(one_labourer(json!({}))).await;
    w.create("w", &["a"]).await;
    w.orchestrator().run_once(w.now()).await;
    w.clock.advance_secs(200);
    // The worker reports after expiry but before the Scavenger runs: completed wins.
    w.assistant()
        .complete("a", &WorkerReport::default(), w.now())
        .await
        .expect("complete");
    let s = w.scavenger().run_once(w.now()).await;
    assert_eq!((s.labourers[0].archived, s.labourers[0].retried), (1, 0));
    // Reported after the move to retry: the task closes as completed and is not run again.
    w.create("w", &["b"]).await;
    w.orchestrator().run_once(w.now()).await;
    w.clock.advance_secs(200);
    assert_eq!(w.scavenger().run_once(w.now()).await.labourers[0].retried, 1);
    w.assistant()
        .complete("b", &WorkerReport::default(), w.now())
        .await
        .expect("late completion");
    assert!(matches!(w.place("b").await, Place::Closed { completed: true, .. }));
    w.clock.advance_secs(10_000);
    assert_eq!(w.scavenger().run_once(w.now()).await.labourers[0].requeued, 0);
}

#[tokio::test]
async fn invocation_failures_are_handled_per_task() {
    let w = World::new(one_labourer(json!({"max_simultaneous_invocations": 10}))).await;
    // "ok" goes alone first; the throttle comes last, since a throttle stops the rest of a pass.
    let positions = w
        .create("w", &["ok", "transient", "permanent", "uncertain", "throttled"])
        .await;
    let throttled = InvokeError {
        kind: FailureKind::Throttled,
        message: "429".into(),
        retry_after: Some(Duration::from_secs(5)),
    };
    w.invokers.of("w").then([
        Ok(InvokeOutcome::Accepted),
        Err(InvokeError::new(FailureKind::Transient, "connection refused")),
        Err(InvokeError::new(FailureKind::Permanent, "400 bad request")),
        Err(InvokeError::new(FailureKind::Unknown, "timed out")),
        Err(throttled),
    ]);
    let r = w.orchestrator().run_once(w.now()).await;
    let l = &r.labourers[0];
    assert_eq!(
        (l.invoked, l.throttled, l.retry_later, l.dead, l.uncertain),
        (1, 1, 1, 1, 1),
        "{l:?}"
    );
    let t = w.store.get("throttled").await.expect("get").expect("task");
    assert_eq!(
        (t.place, t.task.greenfield.get(), t.task.attempts),
        (Place::Live, positions[4], 0),
        "back in place, attempt refunded"
    );
    assert_eq!(
        w.place("transient").await,
        Place::Retry {
            desired_launch_time: T0 + 60
        }
    );
    assert!(matches!(
        w.place("permanent").await,
        Place::Closed { completed: false, .. }
    ));
    assert_eq!(w.notifier.messages(), vec!["Closing dead task: permanent "]);
    let u = w.store.get("uncertain").await.expect("get").expect("task");
    assert_eq!((u.place, u.task.attempts), (Place::Live, 1));
    assert!(u.task.greenfield.get() > T0, "left running");
    // `invoked` is recorded with the claim that spends the attempt (so a crash never loses it); what became of
    // the invocation follows it.
    assert_eq!(
        w.actions("throttled").await,
        vec![
            MetaAction::Created,
            MetaAction::Invoked,
            MetaAction::InvocationThrottled
        ]
    );
    assert_eq!(
        w.actions("permanent").await,
        vec![
            MetaAction::Created,
            MetaAction::Invoked,
            MetaAction::InvocationFailed,
            MetaAction::ArchivedDead
        ]
    );
    // The labourer is held back for its Retry-After (5 s); then the throttled task is first again.
    w.invokers.of("w").events.lock().expect("lock").clear();
    let held = w.orchestrator().run_once(w.now()).await;
    assert_eq!(
        held.labourers[0].held_back.as_ref().map(|h| (h.code, h.until)),
        Some((HeldReason::InvokerThrottled, Some(T0 + 5)))
    );
    w.clock.advance_secs(5);
    w.orchestrator().run_once(w.now()).await;
    assert_eq!(w.invokers.of("w").invoked_ids(), vec!["throttled"]);
}

#[tokio::test]
async fn a_poison_payload_is_closed_as_dead_without_invoking() {
    let w = World::new(one_labourer(json!({}))).await;
    w.store
        .create_tasks(
            &[NewTask {
                task_id: "poison".into(),
                labourer_id: "w".into(),
                payload: "{'a': 1}".into(),
            }],
            1000,
            w.now(),
        )
        .await
        .expect("create");
    let r = w.orchestrator().run_once(w.now()).await;
    assert_eq!(r.labourers[0].dead, 1);
    assert!(w.invokers.of("w").invoked_ids().is_empty());
    assert!(matches!(
        w.place("poison").await,
        Place::Closed { completed: false, .. }
    ));
}

#[tokio::test]
async fn sync_workers_report_on_the_spot() {
    let w = World::new(one_labourer(json!({}))).await;
    w.create("w", &["a", "b"]).await;
    let mut result = serde_json::Map::new();
    result.insert("rows".into(), json!(7));
    w.invokers.of("w").then([
        Ok(InvokeOutcome::Finished(
            ReportKind::Completed,
            WorkerReport::with_result(result),
        )),
        Ok(InvokeOutcome::Finished(ReportKind::Failed, WorkerReport::default())),
    ]);
    let r = w.orchestrator().run_once(w.now()).await;
    assert_eq!(r.labourers[0].finished_sync, 2);
    let a = w.store.get("a").await.expect("get").expect("a").task;
    assert_eq!((a.completed_at, a.result.get("rows")), (Some(T0), Some(&json!(7))));
    let b = w.store.get("b").await.expect("get").expect("b").task;
    assert_eq!(
        (b.completed_at, b.failed_attempts),
        (None, 1),
        "a failure leaves the task to expire and retry"
    );
    assert_eq!(w.scavenger().run_once(w.now()).await.labourers[0].archived, 1);
}

fn metric(details: Value, feelings: Value, op: &str) -> Value {
    json!({"details": details, "feelings": feelings, "feeling_comparison_operator": op})
}

#[tokio::test]
async fn ecology_throttles_and_isolates_labourers() {
    let cpu = json!({"command": ["cpu"]});
    let queue = json!({"url": "http://127.0.0.1:1/q", "pointer": "/depth"});
    let config = json!({"task_config": {"labourers": {
        "busy": {"command": "true", "max_simultaneous_invocations": 10, "health_metrics": {
            "cpu": metric(cpu.clone(), json!({"3": 50, "4": 25}), "<="),
            "queue": metric(queue.clone(), json!({"2": 10, "4": 100}), ">=")
        }},
        "shares_cpu": {"command": "true", "max_simultaneous_invocations": 10, "health_metrics": {
            "cpu": metric(cpu, json!({"3": 50, "4": 25}), "<=")
        }},
        "broken": {"command": "true", "max_simultaneous_invocations": 10, "health_metrics": {
            "gone": metric(json!({"command": ["missing"]}), json!({"4": 1}), "<")
        }},
        "lenient": {"command": "true", "max_simultaneous_invocations": 10, "health_metrics": {
            "gone": {"details": {"command": ["missing"]}, "feelings": {"4": 1}, "feeling_comparison_operator": "<", "failure_status": 2}
        }}
    }}});
    let w = World::new(config).await;
    let details = |l: &str, m: usize| -> MetricDetails {
        w.config.labourer(l).expect("labourer").health_metrics[m]
            .details
            .clone()
    };
    w.metrics.set(&details("busy", 0), Ok(30.0));
    w.metrics.set(&details("busy", 1), Ok(500.0));
    w.metrics.set(&details("broken", 0), Err("exit status 127".into()));
    for l in ["busy", "shares_cpu", "broken", "lenient"] {
        let ids: Vec<String> = (0..12).map(|i| format!("{l}{i}")).collect();
        w.create(l, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }
    let r = w.orchestrator().run_once(w.now()).await;
    let by_id = |id: &str| {
        r.labourers
            .iter()
            .find(|l| l.labourer_id == id)
            .expect("labourer")
            .clone()
    };
    let busy = by_id("busy");
    assert_eq!(
        (busy.eco_status, busy.desired, busy.invoked),
        (3, 7, 7),
        "worst of Good (cpu 30) and High (queue 500)"
    );
    assert_eq!(by_id("shares_cpu").invoked, 7);
    let broken = by_id("broken");
    assert_eq!((broken.eco_status, broken.desired, broken.invoked), (0, 0, 0));
    assert!(
        broken.metric_errors[0].contains("exit status 127"),
        "{:?}",
        broken.metric_errors
    );
    let lenient = by_id("lenient");
    assert_eq!(
        (lenient.eco_status, lenient.invoked),
        (2, 5),
        "failure_status 2 → coefficient 0.5"
    );
    assert_eq!(w.metrics.fetch_count(), 3, "one fetch per distinct metric per pass");
    // The metric recovers: full speed, minus the running ones.
    w.metrics.set(&details("busy", 0), Ok(10.0));
    let busy = w.orchestrator().run_once(w.now()).await.labourers[0].clone();
    assert_eq!(
        (busy.eco_status, busy.desired, busy.running, busy.invoked),
        (4, 10, 7, 3)
    );
}

#[tokio::test]
async fn two_orchestrators_on_one_file_never_invoke_a_task_twice() {
    let w = World::new(one_labourer(json!({"max_simultaneous_invocations": 1000}))).await;
    let ids: Vec<String> = (0..300).map(|i| format!("t{i:03}")).collect();
    w.create("w", &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // A second process: its own connection to the same file, its own invokers.
    let other_store = Arc::new(SqliteStore::open(&w.path).expect("open"));
    let other_wiring = Wiring {
        store: other_store.clone(),
        meta: Some(other_store),
        ..w.wiring.clone()
    };
    let other_invokers = FakeInvokers::new();
    let first = w.orchestrator();
    let second = Orchestrator::new(w.config.clone(), &other_wiring, other_invokers.as_ref()).expect("orchestrator");
    let (a, b) = tokio::join!(first.run_once(w.now()), second.run_once(w.now()));
    let mut all = w.invokers.of("w").invoked_ids();
    all.extend(other_invokers.of("w").invoked_ids());
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no task invoked twice");
    assert_eq!(all.len(), 300);
    assert_eq!(a.total_invoked() + b.total_invoked(), 300);
    // How many each read depends on timing (one may finish before the other reads the queue); what always holds:
    // a task lost to the other is counted, never invoked, and never more than the tasks there are.
    let (ca, cb) = (a.labourers[0].skipped_conflict, b.labourers[0].skipped_conflict);
    assert!(ca + cb <= 300, "{ca} + {cb} conflicts");
    for r in [&a, &b] {
        let l = &r.labourers[0];
        assert!(l.invoked + l.skipped_conflict <= l.requested, "{l:?}");
    }
}

/// A report that names its invocation (as `sosw run`'s report tokens do) is written only while the task is still at
/// that invocation: the write itself checks it, so a re-invocation between a server's token check and the write
/// cannot let the earlier worker's report through.
#[tokio::test]
async fn a_report_naming_a_superseded_invocation_writes_nothing() {
    let w = World::new(one_labourer(json!({"max_simultaneous_invocations": 1}))).await;
    let positions = w.create("w", &["a"]).await;
    w.orchestrator().run_once(w.now()).await;
    let invoked = w.store.get("a").await.expect("get").expect("a").task;
    let first = invoked.invocation();
    // Given back unsent (as after a 429), then invoked again: attempts is 1 again, the invocation is not.
    w.store
        .release_claim("a", invoked.greenfield, sosw_core::Greenfield::new(positions[0]))
        .await
        .expect("refund");
    w.orchestrator().run_once(w.now()).await;
    let second = w.store.get("a").await.expect("get").expect("a").task.invocation();
    assert_eq!((first.attempts, second.attempts), (1, 1));
    assert_ne!(first, second);
    let wa = w.assistant();
    for action in ["mark_task_as_completed", "mark_task_as_failed", "heartbeat"] {
        let before = w.store.get("a").await.expect("get");
        let event = json!({"action": action, "task_id": "a", "result": {"late": true}});
        let err = wa.handle_event(&event, Some(first), w.now()).await.expect_err("stale");
        assert!(
            matches!(
                err,
                sosw_engine::WorkerAssistantError::Store(sosw_core::ports::StoreError::StaleReport { .. })
            ),
            "{action}: {err}"
        );
        assert_eq!(w.store.get("a").await.expect("get"), before, "{action} wrote nothing");
    }
    let events = w.store.events_of("a").await.expect("events");
    assert!(
        events
            .iter()
            .all(|e| e.action != MetaAction::MarkedAsCompleted && e.action != MetaAction::MarkedAsFailed),
        "no audit event: {events:?}"
    );
    let row = wa
        .handle_event(
            &json!({"action": "mark_task_as_completed", "task_id": "a"}),
            Some(second),
            w.now(),
        )
        .await
        .expect("the latest invocation's report");
    assert_eq!(row["completed_at"], json!(T0));
}

#[tokio::test]
async fn worker_assistant_events() {
    let w = World::new(one_labourer(json!({"max_simultaneous_invocations": 1}))).await;
    w.create("w", &["a", "queued"]).await;
    w.orchestrator().run_once(w.now()).await;
    let wa = w.assistant();
    let row = wa
        .handle_event(
            &json!({"action": "mark_task_as_failed", "task_id": "a", "result": "{\"some_info\": 33}"}),
            None,
            w.now(),
        )
        .await
        .expect("failed");
    assert_eq!(
        (row["failed_attempts"].clone(), row["result_some_info"].clone()),
        (json!(1), json!(33))
    );
    let row = wa
        .handle_event(
            &json!({"action": "mark_task_as_completed", "task_id": "a", "stats": {"s_key": "value"}}),
            None,
            w.now(),
        )
        .await
        .expect("completed");
    assert_eq!(row["completed_at"], json!(T0));
    assert_eq!(row["stat_s_key"], json!("value"));
    for (event, want) in [
        (json!({"action": "unknown_action"}), "not supported"),
        (json!({"task_id": "a"}), "no `action`"),
        (json!({"action": "mark_task_as_completed"}), "needs a string `task_id`"),
        (
            json!({"action": "mark_task_as_completed", "task_id": "nope"}),
            "not found",
        ),
        (
            json!({"action": "mark_task_as_completed", "task_id": "queued"}),
            "has not been invoked",
        ),
        (
            json!({"action": "mark_task_as_completed", "task_id": "a", "stats": "[1]"}),
            "`stats` must be a JSON object",
        ),
        (json!("text"), "JSON object"),
    ] {
        let err = wa
            .handle_event(&event, None, w.now())
            .await
            .expect_err("rejected")
            .to_string();
        assert!(err.contains(want), "{event}: {err}");
    }
    assert!(w.store.get("nope").await.expect("get").is_none(), "no ghost row");
}

#[tokio::test]
async fn unknown_labourers_are_refused_before_writing() {
    let w = World::new(one_labourer(json!({}))).await;
    let tm = w.wiring.task_manager(w.config.clone());
    let tasks = [
        NewTask {
            task_id: "a".into(),
            labourer_id: "w".into(),
            payload: "{}".into(),
        },
        NewTask {
            task_id: "b".into(),
            labourer_id: "nobody".into(),
            payload: "{}".into(),
        },
    ];
    let err = tm.create(&tasks, w.now()).await.expect_err("refused").to_string();
    assert!(err.contains("`nobody`"), "{err}");
    assert!(w.store.get("a").await.expect("get").is_none());
}
