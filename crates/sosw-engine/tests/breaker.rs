//! A misconfigured labourer never destroys work (issue #8.9): labourer-level failures put the tasks back without
//! spending an attempt and hold the labourer back (a stored circuit breaker, half-open with one task, a hold that
//! grows, one notification); only task-level failures close tasks as dead, and too many of those in a row hold the
//! labourer back too.

mod common;

use common::{one_labourer, World, T0};
use serde_json::json;
use sosw_core::decide::FailureKind;
use sosw_core::ports::{InvokeError, InvokeOutcome, LabourerStore, TaskStore};
use sosw_core::{MetaAction, Place};
use sosw_engine::orchestrator::HELD_BACK_SUBJECT;

fn not_found() -> Result<InvokeOutcome, InvokeError> {
    Err(InvokeError::new(
        FailureKind::Labourer,
        "POST http://127.0.0.1:9/wrong/path: 404 Not Found",
    ))
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i:02}")).collect()
}

async fn twenty_queued(w: &World) -> Vec<String> {
    let ids = ids(20);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    w.create("w", &refs).await;
    ids
}

#[tokio::test]
async fn a_broken_labourer_holds_its_queue_instead_of_killing_it() {
    let w = World::new(one_labourer(json!({"max_simultaneous_invocations": 20}))).await;
    let ids = twenty_queued(&w).await;
    let fake = w.invokers.of("w");
    fake.always(not_found());
    let orch = w.orchestrator();

    let r = orch.run_once(w.now()).await;
    let l = &r.labourers[0];
    assert_eq!((l.dead, l.retry_later, l.invoked), (0, 0, 0), "{l:?}");
    assert_eq!(l.put_back, 20, "every claimed task goes back: {l:?}");
    assert_eq!(
        fake.invoked_ids(),
        vec!["t00"],
        "the first task goes alone; the others are not sent"
    );
    let held = l.held_back.as_ref().expect("held back");
    assert!(held.reason.contains("404 Not Found"), "{held:?}");
    assert_eq!(held.until, Some(T0 + 30), "the first hold is `initial_hold`");
    for (position, id) in ids.iter().enumerate() {
        let t = w.store.get(id).await.expect("get").expect("task");
        assert_eq!(t.place, Place::Live, "{id}");
        assert_eq!(t.task.attempts, 0, "{id}: no attempt spent");
        assert_eq!(
            t.task.greenfield.get(),
            2000 + 1000 * position as i64,
            "{id}: back at its queue position"
        );
    }
    assert!(
        w.actions("t00").await.contains(&MetaAction::InvocationHeldBack),
        "{:?}",
        w.actions("t00").await
    );
    let sent = w.notifier.sent.lock().expect("lock").clone();
    assert_eq!(
        sent.len(),
        1,
        "one notification for the labourer, none per task: {sent:?}"
    );
    assert_eq!(sent[0].0, HELD_BACK_SUBJECT);
    assert!(sent[0].1[0].contains("Labourer `w` is held back until"), "{sent:?}");
    let state = w.store.labourer_states().await.expect("states");
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].trips, 1);

    // Held: nothing is dispatched, nothing is even read.
    let before = fake.invoked_ids().len();
    w.clock.advance_secs(10);
    let r = orch.run_once(w.now()).await;
    assert_eq!(r.labourers[0].requested, 0);
    assert!(r.labourers[0].held_back.is_some());
    assert_eq!(fake.invoked_ids().len(), before, "no invocation while held back");

    // The hold ends: one task probes, fails, and the hold doubles, with no second notification.
    w.clock.advance_secs(20);
    let r = orch.run_once(w.now()).await;
    let l = &r.labourers[0];
    assert_eq!((l.requested, l.put_back, l.dead), (1, 1, 0), "{l:?}");
    assert_eq!(fake.invoked_ids().len(), before + 1, "exactly one probe");
    assert_eq!(
        l.held_back.as_ref().map(|h| (h.until, h.probing)),
        Some((Some(T0 + 30 + 60), true))
    );
    assert_eq!(w.notifier.notifications(), 1);

    // The probe avoids the task whose failure held the labourer back.
    assert_eq!(fake.invoked_ids().last().map(String::as_str), Some("t01"));
    // The endpoint is fixed: the next probe succeeds, the breaker closes, and the queue drains.
    fake.heal();
    w.clock.advance_secs(60);
    let r = orch.run_once(w.now()).await;
    assert_eq!(r.labourers[0].invoked, 1, "{:?}", r.labourers[0]);
    let state = w.store.labourer_states().await.expect("states");
    assert_eq!(state[0].held_until, None, "no longer held: {state:?}");
    w.clock.advance_secs(1);
    let r = orch.run_once(w.now()).await;
    assert_eq!(r.labourers[0].invoked, 19, "{:?}", r.labourers[0]);
    assert_eq!(r.labourers[0].held_back, None);
    for id in &ids {
        assert_eq!(
            w.task(id).await.attempts,
            1,
            "{id}: invoked once, its attempt spent once"
        );
    }
    assert!(
        w.store.labourer_states().await.expect("states").is_empty(),
        "healthy again: nothing stored"
    );
}

/// One task that always draws a labourer-level answer (a REST worker's 404 for its resource) must not hold its
/// queue forever: once another task proved the labourer healthy, the suspect's failure is its own.
#[tokio::test]
async fn one_task_that_always_draws_a_404_cannot_block_its_queue() {
    let w = World::new(one_labourer(
        json!({"max_simultaneous_invocations": 5, "max_attempts": 2}),
    ))
    .await;
    let ids = ids(4);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    w.create("w", &refs).await;
    let fake = w.invokers.of("w");
    let orch = w.orchestrator();
    // t00, at the head, is sent alone and draws a 404: the labourer is held back, t00 is the suspect.
    fake.then([not_found()]);
    let r = orch.run_once(w.now()).await;
    assert!(r.labourers[0].held_back.is_some(), "{:?}", r.labourers[0]);
    // The probe takes t01, which is accepted: the breaker closes, t00 stays suspect.
    w.clock.advance_secs(30);
    let r = orch.run_once(w.now()).await;
    assert_eq!(r.labourers[0].invoked, 1, "{:?}", r.labourers[0]);
    assert_eq!(fake.invoked_ids(), vec!["t00", "t01"]);
    // t00 draws its 404 again: now it is the task's fault (an attempt spent, a retry later), and the pass goes on.
    fake.then([not_found()]);
    w.clock.advance_secs(1);
    let r = orch.run_once(w.now()).await;
    let l = &r.labourers[0];
    assert_eq!((l.retry_later, l.invoked, l.held_back.clone()), (1, 2, None), "{l:?}");
    assert!(matches!(w.place("t00").await, Place::Retry { .. }));
    assert!(w.store.labourer_states().await.expect("states").is_empty());
}

#[tokio::test]
async fn our_own_lack_of_resources_spends_no_attempt_and_holds_nothing() {
    let w = World::new(one_labourer(json!({"max_simultaneous_invocations": 5}))).await;
    w.create("w", &["a", "b", "c"]).await;
    let fake = w.invokers.of("w");
    fake.then([Err(InvokeError::new(
        FailureKind::Local,
        "cannot start `worker.sh`: Too many open files (os error 24)",
    ))]);
    let orch = w.orchestrator();
    let r = orch.run_once(w.now()).await;
    let l = &r.labourers[0];
    assert_eq!((l.dead, l.retry_later, l.put_back), (0, 0, 3), "{l:?}");
    assert!(l.errors.iter().any(|e| e.contains("Too many open files")), "{l:?}");
    assert_eq!(l.held_back, None, "not the labourer's fault");
    for id in ["a", "b", "c"] {
        assert_eq!(w.task(id).await.attempts, 0, "{id}");
    }
    w.clock.advance_secs(1);
    let r = orch.run_once(w.now()).await;
    assert_eq!(
        r.labourers[0].invoked, 3,
        "the next pass runs them: {:?}",
        r.labourers[0]
    );
}

#[tokio::test]
async fn too_many_dead_in_a_row_hold_the_labourer_back() {
    let config = {
        let mut c = one_labourer(json!({"max_simultaneous_invocations": 4}));
        c["circuit_breaker"] = json!({"max_dead_in_row": 5, "initial_hold": 60});
        c
    };
    let w = World::new(config).await;
    let ids = ids(12);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    w.create("w", &refs).await;
    let fake = w.invokers.of("w");
    fake.always(Err(InvokeError::new(FailureKind::Permanent, "POST …: 400 Bad Request")));
    let orch = w.orchestrator();
    // 4 dead: under the limit.
    let r = orch.run_once(w.now()).await;
    assert_eq!((r.labourers[0].dead, r.labourers[0].held_back.is_some()), (4, false));
    // One more may die (5 in a row); the other 3 failing tasks go back and the labourer is held back.
    w.clock.advance_secs(1);
    let r = orch.run_once(w.now()).await;
    let l = &r.labourers[0];
    assert_eq!((l.dead, l.put_back), (1, 3), "{l:?}");
    let held = l.held_back.as_ref().expect("held back");
    assert!(
        held.reason.starts_with("8 tasks in a row failed permanently"),
        "{held:?}"
    );
    w.clock.advance_secs(1);
    let r = orch.run_once(w.now()).await;
    assert_eq!(r.labourers[0].dead, 0);
    // Probes never kill: a held labourer must accept a task before it can close another as dead.
    w.clock.advance_secs(60);
    let r = orch.run_once(w.now()).await;
    let l = &r.labourers[0];
    assert_eq!((l.dead, l.put_back), (0, 1), "{l:?}");
    assert_eq!(
        l.held_back.as_ref().and_then(|h| h.until),
        Some(w.now().secs() + 120),
        "the hold doubled"
    );
    let queued = w
        .store
        .next_queued("w", sosw_core::Greenfield::start(w.now()), 100)
        .await
        .expect("queue")
        .len();
    assert_eq!(queued, 7, "the rest of the queue waits: at most `max_dead_in_row` died");
    assert_eq!(
        w.notifier
            .sent
            .lock()
            .expect("lock")
            .iter()
            .filter(|(s, _)| s == HELD_BACK_SUBJECT)
            .count(),
        1
    );
}
