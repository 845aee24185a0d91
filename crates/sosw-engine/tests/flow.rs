//! Flow control on the real engine and the SQLite store, with a manual clock: pauses and live limits set by an
//! operator, the dispatch lease, Retry-After, rate limits, adaptive concurrency — and the simulation of eight
//! orchestrators sharing one store while their labourer's downstream degrades and recovers.

mod common;

use async_trait::async_trait;
use common::{one_labourer, World, T0};
use futures::future::join_all;
use serde_json::json;
use sosw_core::config::{Config, Labourer};
use sosw_core::decide::FailureKind;
use sosw_core::flow::HeldReason;
use sosw_core::ports::{InvokeError, InvokeOutcome, Invoker, InvokerFactory, LabourerStore, MetaSink, TaskStore};
use sosw_core::{Clock, MetaAction, NewTask, Place, Task, WorkerReport};
use sosw_engine::control::{change, ControlChange};
use sosw_engine::{Orchestrator, Scavenger, Wiring};
use sosw_sqlite::SqliteStore;
use sosw_testkit::fakes::{FakeMetrics, RecordingNotifier};
use sosw_testkit::ManualClock;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[tokio::test]
async fn a_paused_labourer_invokes_nothing_until_resumed_or_its_time() {
    let w = World::new(one_labourer(json!({"max_simultaneous_invocations": 5}))).await;
    w.create("w", &["a", "b", "c"]).await;
    let pause = ControlChange::Pause {
        until: Some(w.now().plus_secs(60)),
        reason: Some("the billing API is being migrated".into()),
    };
    change(&w.config, &w.wiring, "w", pause, "ops@host", w.now())
        .await
        .expect("pause");
    let r = w.orchestrator().run_once(w.now()).await;
    let held = r.labourers[0].held_back.clone().expect("held back");
    assert_eq!((held.code, held.until), (HeldReason::Paused, Some(T0 + 60)));
    assert_eq!(held.reason, "paused by ops@host: the billing API is being migrated");
    assert!(w.invokers.of("w").invoked_ids().is_empty());

    // The pause ends at its time by itself.
    w.clock.advance_secs(60);
    let r = w.orchestrator().run_once(w.now()).await;
    assert_eq!((r.labourers[0].invoked, r.labourers[0].held_back.clone()), (3, None));

    // Paused until resumed; the resume takes effect at the next pass; both are in the labourer's audit trail.
    w.create("w", &["d"]).await;
    let forever = ControlChange::Pause {
        until: None,
        reason: None,
    };
    change(&w.config, &w.wiring, "w", forever, "ops@host", w.now())
        .await
        .expect("pause");
    w.clock.advance_secs(3600);
    assert_eq!(w.orchestrator().run_once(w.now()).await.labourers[0].invoked, 0);
    change(&w.config, &w.wiring, "w", ControlChange::Resume, "ops@host", w.now())
        .await
        .expect("resume");
    assert_eq!(w.orchestrator().run_once(w.now()).await.labourers[0].invoked, 1);
    assert!(w.store.labourer_controls().await.expect("controls").is_empty());
    let trail: Vec<MetaAction> = w
        .store
        .events_of("labourer:w")
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        trail,
        [
            MetaAction::LabourerPaused,
            MetaAction::LabourerPaused,
            MetaAction::LabourerResumed
        ]
    );
    // An unknown labourer is refused: a typo must not pause nothing.
    let err = change(&w.config, &w.wiring, "W", ControlChange::Resume, "ops", w.now())
        .await
        .expect_err("unknown");
    assert!(err.to_string().contains("unknown labourer `W`"), "{err}");
}

#[tokio::test]
async fn an_operators_limit_replaces_the_configured_one_until_cleared() {
    let w = World::new(one_labourer(json!({"max_simultaneous_invocations": 2}))).await;
    let ids: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    w.create("w", &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    change(&w.config, &w.wiring, "w", ControlChange::Limit(5), "ops", w.now())
        .await
        .expect("limit");
    let l = w.orchestrator().run_once(w.now()).await.labourers[0].clone();
    assert_eq!(l.invoked, 5);
    let a = l.allowance.expect("allowance");
    assert_eq!((a.max, a.max_from_operator), (5, true));
    change(&w.config, &w.wiring, "w", ControlChange::Limit(0), "ops", w.now())
        .await
        .expect("limit");
    assert_eq!(w.orchestrator().run_once(w.now()).await.labourers[0].invoked, 0);
    change(&w.config, &w.wiring, "w", ControlChange::ClearLimit, "ops", w.now())
        .await
        .expect("clear");
    // Back to 2: five run already, so nothing more.
    let l = w.orchestrator().run_once(w.now()).await.labourers[0].clone();
    assert_eq!((l.invoked, l.running), (0, 5));
    assert_eq!(l.allowance.and_then(|a| a.limited_by), Some(HeldReason::Limit));
}

#[tokio::test]
async fn a_lease_held_by_another_orchestrator_leaves_the_labourer_to_it() {
    let w = World::new(one_labourer(json!({}))).await;
    w.create("w", &["a"]).await;
    let until = w.now().plus_secs(120);
    assert!(w
        .store
        .take_dispatch("w", "someone else", w.now(), until)
        .await
        .expect("take")
        .is_some());
    let l = w.orchestrator().run_once(w.now()).await.labourers[0].clone();
    assert_eq!((l.dispatched_elsewhere, l.invoked), (true, 0));
    // A lease that ran out (its orchestrator died) is taken over.
    w.clock.advance_secs(120);
    let l = w.orchestrator().run_once(w.now()).await.labourers[0].clone();
    assert_eq!((l.dispatched_elsewhere, l.invoked), (false, 1));
}

#[tokio::test]
async fn a_throttle_without_retry_after_holds_for_throttle_hold_and_stops_the_pass() {
    let mut config = one_labourer(json!({"max_simultaneous_invocations": 10}));
    config["circuit_breaker"] = json!({"throttle_hold": 7});
    let w = World::new(config).await;
    w.create("w", &["a", "b", "c"]).await;
    w.invokers.of("w").then([Err(InvokeError::new(
        FailureKind::Throttled,
        "TooManyRequestsException: Rate Exceeded",
    ))]);
    let l = w.orchestrator().run_once(w.now()).await.labourers[0].clone();
    assert_eq!((l.throttled, l.put_back, l.invoked), (1, 2, 0), "{l:?}");
    assert_eq!(
        w.invokers.of("w").invoked_ids(),
        ["a"],
        "the rest of the pass was not sent"
    );
    w.clock.advance_secs(6);
    let l = w.orchestrator().run_once(w.now()).await.labourers[0].clone();
    let held = l.held_back.expect("held");
    assert_eq!((held.code, held.until), (HeldReason::InvokerThrottled, Some(T0 + 7)));
    assert!(held.reason.contains("Rate Exceeded"), "{}", held.reason);
    w.clock.advance_secs(1);
    assert_eq!(w.orchestrator().run_once(w.now()).await.labourers[0].invoked, 3);
    // Nothing was spent on the throttle.
    assert_eq!(w.task("a").await.attempts, 1);
}

/// Every invocation is accepted, so only the workers' reports tell that the downstream is in trouble: their failures
/// and their slowing durations lower the adaptive limit, and fast successes raise it again.
#[tokio::test]
async fn workers_failures_and_slowing_tasks_lower_the_adaptive_limit() {
    let w = World::new(one_labourer(
        json!({"max_simultaneous_invocations": 16, "adaptive": {"interval": 1}}),
    ))
    .await;
    let ids: Vec<String> = (0..200).map(|i| format!("t{i:03}")).collect();
    w.create("w", &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let wa = w.assistant();
    // Runs a pass; the workers then report its tasks after `secs`, the first `failures` of them as failed.
    let pass = |secs: i64, failures: usize| {
        let (w, wa) = (&w, &wa);
        async move {
            let l = w.orchestrator().run_once(w.now()).await.labourers[0].clone();
            w.clock.advance_secs(secs);
            let sent = w.invokers.of("w").invoked_ids();
            let fresh: Vec<String> = sent[sent.len() - l.invoked as usize..].to_vec();
            for (i, id) in fresh.iter().enumerate() {
                if i < failures {
                    wa.fail(id, &WorkerReport::default(), w.now()).await.expect("fail");
                } else {
                    wa.complete(id, &WorkerReport::default(), w.now())
                        .await
                        .expect("complete");
                }
            }
            l
        }
    };
    let limit = || async {
        let records = w.store.dispatch_records().await.expect("records");
        records[0].flow.adaptive_limit
    };
    // Two healthy rounds of 2 s tasks: the baseline is 2 s, the limit stays at the ceiling.
    assert_eq!(pass(2, 0).await.invoked, 16);
    assert_eq!(pass(2, 0).await.invoked, 16);
    assert_eq!(limit().await, None);
    // Ten of sixteen fail: more than `failure_ratio` (0.2). A failed task holds its slot until it expires (90 s),
    // then the Scavenger retries it; the next pass's lesson halves the limit.
    assert_eq!(pass(2, 10).await.invoked, 16);
    w.clock.advance_secs(90);
    assert_eq!(w.scavenger().run_once(w.now()).await.labourers[0].retried, 10);
    // The tasks now take 10 s, five times the baseline.
    assert_eq!(
        pass(10, 0).await.invoked,
        16,
        "the failures are learned at the end of this pass"
    );
    assert_eq!(limit().await, Some(8));
    let l = pass(2, 0).await;
    assert_eq!((l.invoked, l.allowance.and_then(|a| a.adaptive)), (8, Some(8)));
    assert_eq!(limit().await, Some(4), "the slow tasks halved it again");
    // Fast again: each saturated pass without trouble adds one.
    assert_eq!(pass(2, 0).await.invoked, 4);
    assert_eq!(limit().await, Some(5));
    let record = &w.store.dispatch_records().await.expect("records")[0];
    assert_eq!(
        record.flow.duration_baseline_ms,
        Some(2000),
        "slow windows do not move the baseline"
    );
    assert_eq!(
        record.flow.reports.completed, 4,
        "the last pass's reports wait for the next lesson"
    );
}

#[tokio::test]
async fn the_rate_limit_holds_across_passes() {
    let w = World::new(one_labourer(
        json!({"max_simultaneous_invocations": 1000, "max_invocations_per_minute": 30, "rate_burst": 5}),
    ))
    .await;
    let ids: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
    w.create("w", &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut sent = Vec::new();
    for _ in 0..30 {
        let l = w.orchestrator().run_once(w.now()).await.labourers[0].clone();
        sent.push(l.invoked);
        w.clock.advance_secs(1);
    }
    // A burst of 5, then one every 2 s.
    assert_eq!(&sent[..6], &[5, 0, 1, 0, 1, 0]);
    let total: u32 = sent.iter().sum();
    assert_eq!(total, 5 + 14, "{sent:?}");
}

#[tokio::test]
async fn retry_delays_come_from_the_labourers_table() {
    let w = World::new(one_labourer(json!({"retry_delays": [7, 40], "max_attempts": 5}))).await;
    w.create("w", &["a"]).await;
    for (pass, delay) in [(0, 7), (1, 40), (2, 40)] {
        w.invokers
            .of("w")
            .then([Err(InvokeError::new(FailureKind::Transient, "HTTP 500"))]);
        w.orchestrator().run_once(w.now()).await;
        assert_eq!(
            w.place("a").await,
            Place::Retry {
                desired_launch_time: w.now().secs() + delay
            },
            "pass {pass}"
        );
        w.clock.advance_secs(delay);
        w.scavenger().run_once(w.now()).await;
    }
}

/// A downstream whose health the simulation scripts: healthy, or throttling and failing a share of invocations.
#[derive(Debug, Default)]
struct Downstream {
    degraded: Mutex<bool>,
    /// Accepted and not reported yet: a task invoked again meanwhile is a double invocation.
    outstanding: Mutex<HashSet<String>>,
    doubles: Mutex<Vec<String>>,
    /// Accepted and not reported yet, by labourer.
    running: Mutex<HashMap<String, Vec<String>>>,
    counter: Mutex<u64>,
}

#[async_trait]
impl Invoker for Downstream {
    async fn invoke(&self, task: &Task, _event: &str) -> Result<InvokeOutcome, InvokeError> {
        if lock(&self.outstanding).contains(&task.task_id) {
            lock(&self.doubles).push(task.task_id.clone());
        }
        let n = {
            let mut c = lock(&self.counter);
            *c += 1;
            *c
        };
        if *lock(&self.degraded) && task.labourer_id == "w" {
            // One in three throttled, one in five failing.
            if n % 3 == 0 {
                return Err(InvokeError {
                    kind: FailureKind::Throttled,
                    message: "HTTP 429 Too Many Requests".into(),
                    retry_after: Some(Duration::from_secs(1)),
                });
            }
            if n % 5 == 0 {
                return Err(InvokeError::new(FailureKind::Transient, "HTTP 500"));
            }
        }
        lock(&self.outstanding).insert(task.task_id.clone());
        lock(&self.running)
            .entry(task.labourer_id.clone())
            .or_default()
            .push(task.task_id.clone());
        Ok(InvokeOutcome::Accepted)
    }
}

#[derive(Debug)]
struct Shared(Arc<Downstream>);

impl InvokerFactory for Shared {
    fn invoker_for(&self, _labourer: &Labourer) -> Result<Arc<dyn Invoker>, String> {
        Ok(self.0.clone())
    }
}

/// Eight orchestrators, each with its own connection to one SQLite file, run every tick of a manual clock over
/// 10,000 tasks of three labourers: `w` (adaptive, max 100) whose downstream throttles and fails for 15 ticks,
/// `r` (a rate limit of 40/s) and `p` (paused for the first 20 ticks). Asserted every tick: no labourer runs more
/// than the limit that was in force (0 overshoot), no attempt is invoked twice, a paused labourer invokes
/// nothing; the adaptive limit falls within a few ticks of the degradation and climbs back after it; the rate
/// limit holds. In the end every task is archived as completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_orchestrators_hold_every_limit_while_the_downstream_degrades_and_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sosw.db");
    let first = SqliteStore::open_or_create(&path).expect("open");
    first.init().await.expect("init");
    let clock = ManualClock::at_secs(T0);
    let config = Arc::new(
        Config::from_value(&json!({
            "task_config": {"labourers": {
                "w": {"command": ["true"], "max_simultaneous_invocations": 100, "duration": 10, "cooldown": 5,
                      "max_attempts": 100, "retry_delays": [1],
                      "adaptive": {"min": 4, "increase": 8, "decrease": 0.5}},
                "r": {"command": ["true"], "max_simultaneous_invocations": 500, "duration": 60, "cooldown": 30,
                      "max_invocations_per_second": 40},
                "p": {"command": ["true"], "max_simultaneous_invocations": 50, "duration": 60, "cooldown": 30}
            }},
            "circuit_breaker": {"max_dead_in_row": 1000}
        }))
        .expect("config"),
    );
    let downstream = Arc::new(Downstream::default());
    let mut orchestrators = Vec::new();
    for _ in 0..8 {
        let store = Arc::new(SqliteStore::open(&path).expect("open"));
        let wiring = Wiring {
            store: store.clone(),
            meta: Some(store),
            metrics: FakeMetrics::new(),
            notifier: RecordingNotifier::new(),
            clock: clock.clone(),
        };
        orchestrators.push(Orchestrator::new(config.clone(), &wiring, &Shared(downstream.clone())).expect("orc"));
    }
    let store = Arc::new(first);
    let wiring = Wiring {
        store: store.clone(),
        meta: Some(store.clone()),
        metrics: FakeMetrics::new(),
        notifier: RecordingNotifier::new(),
        clock: clock.clone(),
    };
    let scavenger = Scavenger::new(config.clone(), &wiring);
    let assistant = wiring.worker_assistant(config.clone());
    let tm = wiring.task_manager(config.clone());
    let mut total = 0;
    for (labourer, n) in [("w", 6000), ("r", 3000), ("p", 1000)] {
        let tasks: Vec<NewTask> = (0..n)
            .map(|i| NewTask {
                task_id: format!("{labourer}{i:05}"),
                labourer_id: labourer.into(),
                payload: "{}".into(),
            })
            .collect();
        tm.create(&tasks, clock.now()).await.expect("create");
        total += n;
    }
    change(
        &config,
        &wiring,
        "p",
        ControlChange::Pause {
            until: Some(clock.now().plus_secs(20)),
            reason: Some("simulated maintenance".into()),
        },
        "sim",
        clock.now(),
    )
    .await
    .expect("pause");

    let (degrade_at, recover_at) = (10, 25);
    let limit_of = |records: &[sosw_core::flow::DispatchRecord], id: &str, max: u32| {
        records
            .iter()
            .find(|r| r.labourer_id == id)
            .and_then(|r| r.flow.adaptive_limit)
            .map_or(max, |a| a.max(4).min(max))
    };
    let mut adaptive = Vec::new();
    let mut r_invoked = 0u64;
    let mut tick = 0i64;
    loop {
        *lock(&downstream.degraded) = (degrade_at..recover_at).contains(&tick);
        let now = clock.now();
        let records = store.dispatch_records().await.expect("records");
        let w_limit = limit_of(&records, "w", 100);
        let markers = |id: &str| config.markers_for(id, now);
        let running_before = store.count_running("w", markers("w").expired).await.expect("count");

        let reports = join_all(orchestrators.iter().map(|o| o.run_once(now))).await;

        // The adaptive limit changes at most once a second, so every claim of the tick was made under the limit
        // before it or the one after it.
        let running = store.count_running("w", markers("w").expired).await.expect("count");
        let after = store.dispatch_records().await.expect("records");
        let w_limit_after = limit_of(&after, "w", 100);
        assert!(
            running <= u64::from(w_limit.max(w_limit_after)).max(running_before),
            "tick {tick}: {running} running, the limit was {w_limit} then {w_limit_after} ({running_before} before)"
        );
        let r_running = store.count_running("r", markers("r").expired).await.expect("count");
        assert!(r_running <= 500, "tick {tick}: r overshot: {r_running}");
        let invoked_now: u64 = reports
            .iter()
            .flat_map(|r| &r.labourers)
            .filter(|l| l.labourer_id == "r")
            .map(|l| u64::from(l.invoked))
            .sum();
        r_invoked += invoked_now;
        assert!(
            r_invoked as f64 <= 40.0 + 40.0 * tick as f64,
            "tick {tick}: the rate limit let {r_invoked} through"
        );
        let p_invoked: u32 = reports
            .iter()
            .flat_map(|r| &r.labourers)
            .filter(|l| l.labourer_id == "p")
            .map(|l| l.invoked)
            .sum();
        if tick < 20 {
            assert_eq!(p_invoked, 0, "tick {tick}: a paused labourer invoked tasks");
        }
        adaptive.push(w_limit_after);

        // The workers report what they were sent in the previous tick; a few fail while degraded.
        let finished: Vec<(String, String)> = std::mem::take(&mut *lock(&downstream.running))
            .into_iter()
            .flat_map(|(l, ids)| ids.into_iter().map(move |id| (l.clone(), id)))
            .collect();
        for (i, (_, id)) in finished.iter().enumerate() {
            let failing = *lock(&downstream.degraded) && i % 7 == 0;
            let reported = if failing {
                assistant.fail(id, &WorkerReport::default(), now).await.map(|_| ())
            } else {
                assistant.complete(id, &WorkerReport::default(), now).await.map(|_| ())
            };
            reported.unwrap_or_else(|e| panic!("report of {id}: {e}"));
            lock(&downstream.outstanding).remove(id);
        }
        clock.advance_secs(1);
        scavenger.run_once(clock.now()).await;
        tick += 1;
        let closed = store.counts("w", &markers("w")).await.expect("counts").closed_completed
            + store.counts("r", &markers("r")).await.expect("counts").closed_completed
            + store.counts("p", &markers("p")).await.expect("counts").closed_completed;
        if closed == total as u64 {
            break;
        }
        assert!(tick < 2000, "not done after {tick} ticks: {closed} of {total} closed");
    }
    assert!(
        lock(&downstream.doubles).is_empty(),
        "invoked twice: {:?}",
        lock(&downstream.doubles)
    );
    // The adaptive limit halved at the first tick of the degradation and fell to a quarter within five (a small
    // pass that happens to meet no throttle may raise it by one step meanwhile: which invocations the downstream
    // throttles depends on how the eight orchestrators interleave); it never climbed back to 100 while degraded,
    // and was back at 100 soon after: once the tasks whose workers reported failure (they hold their slots until
    // they expire, 15 s) have expired.
    let (degraded, recovering) = (degrade_at as usize, recover_at as usize);
    assert_eq!(adaptive[degraded - 1], 100, "{adaptive:?}");
    assert!(adaptive[degraded] <= 50, "{adaptive:?}");
    assert!(
        adaptive[degraded..degraded + 5].iter().any(|&a| a <= 25),
        "{adaptive:?}"
    );
    assert!(adaptive[degraded..recovering].iter().all(|&a| a < 100), "{adaptive:?}");
    let recovered = adaptive[recovering..].iter().position(|&a| a == 100);
    assert!(recovered.is_some_and(|t| t <= 30), "{adaptive:?}");
}

#[tokio::test]
async fn heartbeats_keep_a_long_task_running_and_their_timeout_expires_it_when_they_stop() {
    // A 90 s window; heartbeats every 60 s keep the task for 10 minutes.
    let w = World::new(one_labourer(json!({}))).await;
    w.create("w", &["long"]).await;
    w.orchestrator().run_once(w.now()).await;
    let wa = w.assistant();
    for _ in 0..10 {
        w.clock.advance_secs(60);
        let until = wa.heartbeat("long", None, w.now()).await.expect("heartbeat");
        assert_eq!(until, w.now().plus_secs(90), "the whole window again");
        assert_eq!(w.scavenger().run_once(w.now()).await.labourers[0].retried, 0);
    }
    // The heartbeats stop: 90 s later the task expires and is retried, as without them.
    w.clock.advance_secs(90);
    assert_eq!(w.scavenger().run_once(w.now()).await.labourers[0].retried, 1);
    let err = wa.heartbeat("long", None, w.now()).await.expect_err("not running");
    assert_eq!(
        err.to_string(),
        "task `long`: it is not running (it is waiting for a retry): a heartbeat only extends a running task"
    );

    // With `heartbeat_timeout` 20 s, a task whose worker stops beating expires 20 s after the last beat, long
    // before its 15-minute window.
    let w = World::new(one_labourer(
        json!({"duration": 900, "cooldown": 0, "heartbeat_timeout": 20}),
    ))
    .await;
    w.create("w", &["hung"]).await;
    w.orchestrator().run_once(w.now()).await;
    w.clock.advance_secs(5);
    let until = w.assistant().heartbeat("hung", None, w.now()).await.expect("heartbeat");
    assert_eq!(until, w.now().plus_secs(20));
    w.clock.advance_secs(19);
    assert_eq!(w.scavenger().run_once(w.now()).await.labourers[0].retried, 0);
    w.clock.advance_secs(1);
    assert_eq!(w.scavenger().run_once(w.now()).await.labourers[0].retried, 1);

    // The WorkerAssistant event, as the report endpoint and the Lambda take it.
    let w = World::new(one_labourer(json!({}))).await;
    w.create("w", &["t"]).await;
    let queued = w
        .assistant()
        .handle_event(&json!({"action": "heartbeat", "task_id": "t"}), None, w.now())
        .await
        .expect_err("queued");
    assert!(queued.to_string().contains("it is queued"), "{queued}");
    w.orchestrator().run_once(w.now()).await;
    w.clock.advance_secs(30);
    let row = w
        .assistant()
        .handle_event(&json!({"action": "heartbeat", "task_id": "t"}), None, w.now())
        .await
        .expect("heartbeat");
    assert_eq!(row["greenfield"], json!(w.now().secs() + w.config.greenfield.delta));
}
