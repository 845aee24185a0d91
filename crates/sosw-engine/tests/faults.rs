//! The engine over injected faults (issue #8): a store whose calls fail before they reach it or after they took
//! effect (the ambiguous case), invokers that throttle, fail, time out, hang or say the labourer is broken, and a
//! clock that jumps backwards and forwards. After every step: each task in exactly one table, no task ever lost,
//! attempts never going down nor past `max_attempts`, no worker invocation without a spent (or refunded) attempt.
//! Then, with the faults gone, every task finishes: nothing stays stuck.

use proptest::prelude::*;
use serde_json::json;
use sosw_core::config::Config;
use sosw_core::decide::FailureKind;
use sosw_core::ports::{InvokeError, MetaSink, TaskStore};
use sosw_core::{Clock, MetaAction, NewTask, Place, StoredTask, WorkerReport};
use sosw_engine::{Orchestrator, Scavenger, Wiring};
use sosw_sqlite::SqliteStore;
use sosw_testkit::fakes::{FakeInvokers, FakeMetrics, RecordingNotifier};
use sosw_testkit::faults::{Fault, FaultyStore};
use sosw_testkit::{all_rows, ManualClock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Orchestrate,
    Scavenge,
    /// The next invocation fails this way.
    Invocation(FailureKind),
    /// The next invocation never answers.
    Hang,
    /// The next store call fails.
    StoreFault(Fault),
    /// A share (per mille) of store calls fail from now on.
    RandomFaults(u64),
    Complete(u8),
    Fail(u8),
    Forward(u16),
    Back(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u8..6).prop_map(Op::Create),
        4 => Just(Op::Orchestrate),
        3 => Just(Op::Scavenge),
        2 => prop_oneof![
            Just(FailureKind::Throttled),
            Just(FailureKind::Transient),
            Just(FailureKind::Permanent),
            Just(FailureKind::Unknown),
            Just(FailureKind::Labourer),
            Just(FailureKind::Local),
        ]
        .prop_map(Op::Invocation),
        1 => Just(Op::Hang),
        2 => prop_oneof![Just(Fault::Before), Just(Fault::After)].prop_map(Op::StoreFault),
        1 => prop_oneof![Just(0u64), Just(50), Just(200)].prop_map(Op::RandomFaults),
        3 => any::<u8>().prop_map(Op::Complete),
        1 => any::<u8>().prop_map(Op::Fail),
        3 => (0u16..400).prop_map(Op::Forward),
        1 => (0u16..400).prop_map(Op::Back),
    ]
}

struct Rig {
    _dir: tempfile::TempDir,
    inner: Arc<SqliteStore>,
    faulty: Arc<FaultyStore>,
    clock: Arc<ManualClock>,
    invokers: Arc<FakeInvokers>,
    orchestrator: Orchestrator,
    scavenger: Scavenger,
    wiring: Wiring,
    config: Arc<Config>,
}

async fn rig(seed: u64) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let inner = Arc::new(SqliteStore::open_or_create(dir.path().join("f.db")).expect("open"));
    inner.init().await.expect("init");
    let faulty = FaultyStore::new(inner.clone(), seed);
    let clock = ManualClock::at_secs(1_700_000_000);
    let wiring = Wiring {
        store: faulty.clone(),
        meta: Some(inner.clone()),
        metrics: FakeMetrics::new(),
        notifier: RecordingNotifier::new(),
        clock: clock.clone(),
    };
    let config = Arc::new(
        Config::from_value(&json!({
            "task_config": {"labourers": {"w": {
                "command": "true", "max_simultaneous_invocations": 4, "duration": 60, "cooldown": 30,
                "max_duration": 10, "max_attempts": MAX_ATTEMPTS
            }}},
            "invocation_timeout": 0.05,
            "circuit_breaker": {"initial_hold": 30, "max_hold": 120}
        }))
        .expect("config"),
    );
    let invokers = FakeInvokers::new();
    let orchestrator = Orchestrator::new(config.clone(), &wiring, invokers.as_ref()).expect("orchestrator");
    let scavenger = Scavenger::new(config.clone(), &wiring);
    Rig {
        _dir: dir,
        inner,
        faulty,
        clock,
        invokers,
        orchestrator,
        scavenger,
        wiring,
        config,
    }
}

/// The invariants that hold after any step, faults or not (read from the store itself, past the faults).
async fn check(r: &Rig, known: &mut HashSet<String>, attempts: &mut HashMap<String, u32>) -> Result<(), TestCaseError> {
    let rows = all_rows(r.inner.as_ref()).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *seen.entry(row.task.task_id.as_str()).or_default() += 1;
    }
    for (id, n) in &seen {
        prop_assert_eq!(*n, 1, "`{}` is in {} tables", id, n);
    }
    for id in known.iter() {
        prop_assert!(seen.contains_key(id.as_str()), "`{}` was lost", id);
    }
    known.extend(seen.keys().map(|k| k.to_string()));
    let invoked = r.invokers.of("w").invoked_ids();
    for row in &rows {
        let id = &row.task.task_id;
        let before = attempts.insert(id.clone(), row.task.attempts).unwrap_or(0);
        prop_assert!(row.task.attempts >= before, "attempts of `{}` went down", id);
        prop_assert!(row.task.attempts <= MAX_ATTEMPTS, "`{}` past max_attempts", id);
        let refunds = r
            .inner
            .events_of(id)
            .await
            .expect("events")
            .iter()
            .filter(|e| {
                matches!(
                    e.action,
                    MetaAction::InvocationThrottled | MetaAction::InvocationHeldBack
                )
            })
            .count();
        let calls = invoked.iter().filter(|i| *i == id).count();
        prop_assert!(
            calls <= row.task.attempts as usize + refunds,
            "`{}` invoked {} times with {} attempts and {} refunds",
            id,
            calls,
            row.task.attempts,
            refunds
        );
    }
    Ok(())
}

async fn run(seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let r = rig(seed).await;
    let tm = r.wiring.task_manager(r.config.clone());
    let assistant = r.wiring.worker_assistant(r.config.clone());
    let mut known = HashSet::new();
    let mut attempts = HashMap::new();
    let mut next_id = 0usize;
    for op in &ops {
        let now = r.clock.now();
        match op {
            Op::Create(n) => {
                let tasks: Vec<NewTask> = (0..usize::from(*n))
                    .map(|i| NewTask {
                        task_id: format!("t{:04}", next_id + i),
                        labourer_id: "w".into(),
                        payload: "{}".into(),
                    })
                    .collect();
                next_id += tasks.len();
                let _ = tm.create(&tasks, now).await;
            }
            Op::Orchestrate => {
                let report = r.orchestrator.run_once(now).await;
                prop_assert_eq!(report.labourers.len(), 1);
            }
            Op::Scavenge => {
                let report = r.scavenger.run_once(now).await;
                prop_assert_eq!(report.labourers.len(), 1);
            }
            Op::Invocation(kind) => r.invokers.of("w").then([Err(InvokeError::new(*kind, "scripted"))]),
            Op::Hang => r.invokers.of("w").hang_next(1),
            Op::StoreFault(f) => r.faulty.script([Some(*f)]),
            Op::RandomFaults(p) => r.faulty.fail_randomly(*p),
            Op::Complete(i) | Op::Fail(i) if next_id > 0 => {
                let id = format!("t{:04}", usize::from(*i) % next_id);
                let _ = if matches!(op, Op::Complete(_)) {
                    assistant.complete(&id, &WorkerReport::default(), now).await.map(|_| ())
                } else {
                    assistant.fail(&id, &WorkerReport::default(), now).await.map(|_| ())
                };
            }
            Op::Complete(_) | Op::Fail(_) => {}
            Op::Forward(s) => r.clock.advance_secs(i64::from(*s)),
            Op::Back(s) => r.clock.advance_secs(-i64::from(*s)),
        }
        check(&r, &mut known, &mut attempts).await?;
    }

    // The faults go away: every task finishes, with workers that report what they were given.
    r.faulty.heal();
    let fake = r.invokers.of("w");
    fake.heal();
    for round in 0..60 {
        let live = all_rows(r.inner.as_ref())
            .await
            .into_iter()
            .filter(|t| !matches!(t.place, Place::Closed { .. }))
            .count();
        if live == 0 {
            return Ok(());
        }
        r.clock.advance_secs(200);
        let now = r.clock.now();
        let report = r.orchestrator.run_once(now).await;
        prop_assert!(
            report.labourers[0].errors.is_empty(),
            "round {}: {:?}",
            round,
            report.labourers[0].errors
        );
        for t in all_rows(r.inner.as_ref()).await {
            if t.place == Place::Live
                && t.task.attempts >= 1
                && t.task.completed_at.is_none()
                && t.task.greenfield.get() >= now.secs()
            {
                let _ = assistant.complete(&t.task.task_id, &WorkerReport::default(), now).await;
            }
        }
        let report = r.scavenger.run_once(now).await;
        prop_assert!(
            report.labourers[0].errors.is_empty(),
            "{:?}",
            report.labourers[0].errors
        );
        check(&r, &mut known, &mut attempts).await?;
    }
    let stuck: Vec<StoredTask> = all_rows(r.inner.as_ref())
        .await
        .into_iter()
        .filter(|t| !matches!(t.place, Place::Closed { .. }))
        .collect();
    prop_assert!(stuck.is_empty(), "stuck after the faults went away: {:?}", stuck);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn nothing_is_lost_or_stuck_whatever_fails(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..100)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run(seed, ops))?;
    }
}

/// A failed store call is reported in the labourer's row of the pass report, and the next pass carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_fault_is_reported_per_labourer_and_the_next_pass_recovers() {
    let r = rig(7).await;
    let tm = r.wiring.task_manager(r.config.clone());
    let now = r.clock.now();
    let tasks: Vec<NewTask> = (0..3)
        .map(|i| NewTask {
            task_id: format!("t{i}"),
            labourer_id: "w".into(),
            payload: "{}".into(),
        })
        .collect();
    tm.create(&tasks, now).await.expect("create");
    // The claim takes effect, then its reply is lost: nothing is invoked, the error is in the labourer's row.
    r.faulty.fail_next("claim", Fault::After);
    let report = r.orchestrator.run_once(now).await;
    let l = &report.labourers[0];
    assert_eq!(l.invoked, 0, "{l:?}");
    assert!(
        l.errors
            .iter()
            .any(|e| e.contains("claiming tasks") && e.contains("injected fault")),
        "{l:?}"
    );
    assert!(r.invokers.of("w").invoked_ids().is_empty());
    // Those tasks were claimed (their attempts spent) without a worker: they expire and are retried.
    r.clock.advance_secs(91);
    let s = r.scavenger.run_once(r.clock.now()).await;
    assert_eq!(s.labourers[0].retried, 3, "{:?}", s.labourers[0]);
    r.clock.advance_secs(30);
    let s = r.scavenger.run_once(r.clock.now()).await;
    assert_eq!(s.labourers[0].requeued, 3, "{:?}", s.labourers[0]);
    let report = r.orchestrator.run_once(r.clock.now()).await;
    assert_eq!(report.labourers[0].invoked, 3, "{:?}", report.labourers[0]);
    assert!(report.labourers[0].errors.is_empty());
}

/// A hung invoker never stalls a pass: past `invocation_timeout` the task is left running (it may have arrived).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_invocation_is_cut_off_and_left_running() {
    let r = rig(9).await;
    let tm = r.wiring.task_manager(r.config.clone());
    let task = NewTask {
        task_id: "t".into(),
        labourer_id: "w".into(),
        payload: "{}".into(),
    };
    tm.create(&[task], r.clock.now()).await.expect("create");
    r.invokers.of("w").hang_next(1);
    let report = r.orchestrator.run_once(r.clock.now()).await;
    assert_eq!(report.labourers[0].uncertain, 1, "{:?}", report.labourers[0]);
    let t = r.inner.get("t").await.expect("get").expect("task");
    assert_eq!((t.place, t.task.attempts), (Place::Live, 1));
}
