//! The labourers' side of the contract ([`sosw_core::ports::LabourerStore`]): breaker states, operator controls,
//! dispatch leases.

use super::now;
use crate::Harness;
use sosw_core::breaker::LabourerState;
use sosw_core::flow::{DispatchRecord, FlowState, LabourerControl, Pause, Reports};
use sosw_core::Time;

use std::sync::Arc;

pub async fn labourer_states_round_trip(h: &Harness) {
    let s = h.store.as_ref();
    assert!(s.labourer_states().await.expect("states").is_empty());
    let held = LabourerState {
        labourer_id: "w".into(),
        dead_in_row: 0,
        trips: 2,
        held_until: Some(Time::from_millis(1_700_000_060_000)),
        reason: Some("POST http://127.0.0.1:9/run: 404 Not Found".into()),
        held_since: Some(Time::from_millis(1_700_000_000_000)),
        suspect: Some("t1".into()),
    };
    let counting = LabourerState {
        dead_in_row: 3,
        ..LabourerState::new("a")
    };
    s.save_labourer_state(&held).await.expect("save");
    s.save_labourer_state(&counting).await.expect("save");
    assert_eq!(
        s.labourer_states().await.expect("states"),
        vec![counting.clone(), held.clone()],
        "by labourer id"
    );
    let healed = LabourerState {
        trips: 3,
        held_until: Some(Time::from_millis(1_700_000_120_000)),
        ..held.clone()
    };
    s.save_labourer_state(&healed).await.expect("replace");
    s.clear_labourer_state("a").await.expect("clear");
    s.clear_labourer_state("never-stored")
        .await
        .expect("clearing nothing is fine");
    assert_eq!(s.labourer_states().await.expect("states"), vec![healed]);
}

/// Controls are stored per labourer, replaced whole, forgotten when empty, and independent of breaker states.
pub async fn labourer_controls_round_trip(h: &Harness) {
    let s = h.store.as_ref();
    assert!(s.labourer_controls().await.expect("controls").is_empty());
    let paused = LabourerControl {
        paused: Some(Pause {
            since: now(),
            until: Some(now().plus_secs(3600)),
            reason: Some("the billing API is down".into()),
        }),
        ..LabourerControl::new("w", now(), "ops@host")
    };
    let limited = LabourerControl {
        limit: Some(7),
        ..LabourerControl::new("a", now(), "ops@host")
    };
    let forever = LabourerControl {
        paused: Some(Pause {
            since: now(),
            until: None,
            reason: None,
        }),
        limit: Some(0),
        ..LabourerControl::new("z", now(), "root")
    };
    for c in [&paused, &limited, &forever] {
        s.save_labourer_control(c).await.expect("save");
    }
    assert_eq!(
        s.labourer_controls().await.expect("controls"),
        vec![limited.clone(), paused.clone(), forever.clone()],
        "by labourer id"
    );
    // A breaker state of the same labourer, saved and cleared, leaves its control alone — and the other way round.
    let held = LabourerState {
        trips: 1,
        held_until: Some(now().plus_secs(30)),
        reason: Some("404".into()),
        ..LabourerState::new("w")
    };
    s.save_labourer_state(&held).await.expect("save state");
    s.clear_labourer_state("w").await.expect("clear state");
    s.save_labourer_state(&held).await.expect("save state");
    let resumed = LabourerControl {
        paused: None,
        ..paused.clone()
    };
    s.save_labourer_control(&resumed)
        .await
        .expect("resume: empty, forgotten");
    s.save_labourer_control(&LabourerControl::new("never-stored", now(), "x"))
        .await
        .expect("forgetting nothing is fine");
    let relimited = LabourerControl {
        limit: Some(3),
        paused: None,
        updated_at: now().plus_secs(5),
        ..forever.clone()
    };
    s.save_labourer_control(&relimited).await.expect("replace");
    assert_eq!(s.labourer_controls().await.expect("controls"), vec![limited, relimited]);
    assert_eq!(s.labourer_states().await.expect("states"), vec![held]);
}

/// One holder at a time; the holder may renew; a lease runs out at its time; only the holder gives it back, and
/// the flow state it gives back is what the next holder gets.
pub async fn dispatch_lease_is_exclusive(h: &Harness) {
    let s = h.store.as_ref();
    let t = |secs: i64| now().plus_secs(secs);
    assert_eq!(
        s.take_dispatch("w", "A", t(0), t(60)).await.expect("take"),
        Some(FlowState::default())
    );
    assert_eq!(
        s.take_dispatch("w", "B", t(1), t(61)).await.expect("take"),
        None,
        "A holds it"
    );
    assert_eq!(
        s.take_dispatch("w", "B", t(59), t(119)).await.expect("take"),
        None,
        "until 60"
    );
    assert!(s.take_dispatch("w", "A", t(2), t(62)).await.expect("renew").is_some());
    assert!(s
        .take_dispatch("v", "B", t(2), t(62))
        .await
        .expect("another labourer")
        .is_some());
    let records = s.dispatch_records().await.expect("records");
    let holders: Vec<_> = records
        .iter()
        .map(|r| (r.labourer_id.as_str(), r.holder.as_deref(), r.lease_until))
        .collect();
    assert_eq!(holders, [("v", Some("B"), Some(t(62))), ("w", Some("A"), Some(t(62)))]);

    let flow = FlowState {
        adaptive_limit: Some(4),
        adaptive_at: Some(now().plus_millis(250)),
        rate_tat: Some(now().plus_millis(1500)),
        claimed_at: Some(now().plus_millis(20)),
        throttled_until: Some(t(30)),
        throttle_reason: Some("HTTP 429 Too Many Requests; Retry-After 30 s".into()),
        duration_baseline_ms: Some(1250),
        ..FlowState::default()
    };
    assert!(
        !s.give_back_dispatch("w", "B", &FlowState::default())
            .await
            .expect("give back"),
        "B does not hold it"
    );
    assert!(s.give_back_dispatch("w", "A", &flow).await.expect("give back"));
    assert_eq!(
        s.take_dispatch("w", "B", t(3), t(63)).await.expect("take"),
        Some(flow.clone())
    );
    // B's lease runs out; A takes it over; B's late give-back writes nothing.
    assert_eq!(
        s.take_dispatch("w", "A", t(63), t(123)).await.expect("take"),
        Some(flow.clone())
    );
    assert!(!s
        .give_back_dispatch("w", "B", &FlowState::default())
        .await
        .expect("late give back"));
    assert!(s
        .give_back_dispatch("w", "A", &FlowState::default())
        .await
        .expect("give back"));
    assert!(s
        .give_back_dispatch("v", "B", &FlowState::default())
        .await
        .expect("give back"));
    assert_eq!(
        s.dispatch_records().await.expect("records"),
        Vec::<DispatchRecord>::new(),
        "no lease and an empty flow state: nothing to show"
    );
    assert_eq!(
        s.take_dispatch("w", "C", t(64), t(124)).await.expect("take"),
        Some(FlowState::default())
    );
}

/// Of many orchestrators taking one labourer's lease at once, exactly one gets it.
pub async fn concurrent_takers_get_one_lease(h: &Harness) {
    let store = h.store.clone();
    for round in 0..5 {
        let labourer = Arc::new(format!("w{round}"));
        let takers = (0..8).map(|i| {
            let (store, labourer) = (store.clone(), labourer.clone());
            tokio::spawn(async move {
                store
                    .take_dispatch(&labourer, &format!("orchestrator-{i}"), now(), now().plus_secs(60))
                    .await
                    .expect("take")
                    .is_some()
            })
        });
        let mut winners = 0;
        for taker in takers {
            winners += usize::from(taker.await.expect("join"));
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

/// Workers' reports add up, also when added concurrently; a give-back subtracts only what its lesson learned (the
/// reports added meanwhile are kept for the next), and only by the lease's holder.
pub async fn reports_add_up_and_give_back_subtracts_what_was_learned(h: &Harness) {
    let s = h.store.clone();
    let t = |secs: i64| now().plus_secs(secs);
    for _ in 0..3 {
        s.add_reports("w", &Reports::completed(Some(1000))).await.expect("add");
    }
    s.add_reports("w", &Reports::completed(None)).await.expect("add");
    s.add_reports("w", &Reports::failed()).await.expect("add");
    let records = s.dispatch_records().await.expect("records");
    assert_eq!(
        records.len(),
        1,
        "a labourer with reports only has a record: {records:?}"
    );
    let read = Reports {
        completed: 4,
        failed: 1,
        timed: 3,
        duration_ms: 3000,
    };
    assert_eq!(records[0].flow.reports, read);
    let mut flow = s
        .take_dispatch("w", "A", t(0), t(60))
        .await
        .expect("take")
        .expect("free");
    assert_eq!(flow.reports, read);
    // A report comes in while A learns from what it read.
    s.add_reports("w", &Reports::failed()).await.expect("add");
    flow.reports_learned = flow.reports;
    flow.duration_baseline_ms = Some(1000);
    assert!(
        !s.give_back_dispatch("w", "B", &flow).await.expect("give back"),
        "B does not hold it"
    );
    assert!(s.give_back_dispatch("w", "A", &flow).await.expect("give back"));
    let after = s
        .take_dispatch("w", "B", t(1), t(61))
        .await
        .expect("take")
        .expect("free");
    assert_eq!(
        after.reports,
        Reports::failed(),
        "the report added during the lesson is kept"
    );
    assert_eq!(after.duration_baseline_ms, Some(1000));
    assert!(after.reports_learned.is_empty(), "what was learned is not stored");
    assert!(
        s.give_back_dispatch("w", "B", &after).await.expect("give back"),
        "nothing learned: nothing subtracted"
    );

    // Concurrent reports, as from WorkerAssistants in several processes: none is lost.
    let adders = (0..8).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                let r = if i % 2 == 0 {
                    Reports::completed(Some(7))
                } else {
                    Reports::failed()
                };
                s.add_reports("v", &r).await.expect("add");
            }
        })
    });
    for a in adders {
        a.await.expect("join");
    }
    let v = s
        .take_dispatch("v", "A", t(2), t(62))
        .await
        .expect("take")
        .expect("free");
    assert_eq!(
        v.reports,
        Reports {
            completed: 40,
            failed: 40,
            timed: 40,
            duration_ms: 280
        }
    );
}
