//! Property test of the engine on a real SQLite file: random sequences of creations, passes, worker reports,
//! invocation failures and clock jumps, with the invariants checked after every step.

use proptest::prelude::*;
use serde_json::json;
use sosw_core::config::Config;
use sosw_core::decide::FailureKind;
use sosw_core::ports::{InvokeError, MetaSink, TaskStore};
use sosw_core::{Clock, MetaAction, NewTask, Place, StoredTask, WorkerReport};
use sosw_engine::{Orchestrator, Scavenger, Wiring};
use sosw_sqlite::SqliteStore;
use sosw_testkit::fakes::{FakeInvokers, FakeMetrics, RecordingNotifier};
use sosw_testkit::{all_rows, ManualClock};
use std::collections::HashMap;
use std::sync::Arc;

const MAX_SIMULTANEOUS: u64 = 3;
const MAX_ATTEMPTS: u32 = 2;

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Orchestrate,
    /// The next invocations fail this way.
    Script(FailureKind),
    Complete(u8),
    Fail(u8),
    Advance(u16),
    Scavenge,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u8..5).prop_map(Op::Create),
        4 => Just(Op::Orchestrate),
        1 => prop_oneof![
            Just(FailureKind::Throttled),
            Just(FailureKind::Transient),
            Just(FailureKind::Permanent),
            Just(FailureKind::Unknown)
        ].prop_map(Op::Script),
        3 => any::<u8>().prop_map(Op::Complete),
        1 => any::<u8>().prop_map(Op::Fail),
        4 => (0u16..200).prop_map(Op::Advance),
        3 => Just(Op::Scavenge),
    ]
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open_or_create(dir.path().join("p.db")).expect("open"));
    store.init().await.expect("init");
    let clock = ManualClock::at_secs(1_700_000_000);
    let wiring = Wiring {
        store: store.clone(),
        meta: Some(store.clone()),
        metrics: FakeMetrics::new(),
        notifier: RecordingNotifier::new(),
        clock: clock.clone(),
    };
    let config = Arc::new(
        Config::from_value(&json!({"task_config": {"labourers": {"w": {
            "command": "true", "max_simultaneous_invocations": MAX_SIMULTANEOUS, "duration": 60, "cooldown": 30,
            "max_duration": 10, "max_attempts": MAX_ATTEMPTS
        }}}}))
        .expect("config"),
    );
    let invokers = FakeInvokers::new();
    let orchestrator = Orchestrator::new(config.clone(), &wiring, invokers.as_ref()).expect("orchestrator");
    let scavenger = Scavenger::new(config.clone(), &wiring);
    let tm = wiring.task_manager(config.clone());
    let assistant = wiring.worker_assistant(config.clone());
    let mut ids: Vec<String> = Vec::new();
    let mut last_attempts: HashMap<String, u32> = HashMap::new();
    let mut closed: HashMap<String, StoredTask> = HashMap::new();

    for op in ops {
        let now = clock.now();
        match &op {
            Op::Create(n) => {
                let tasks: Vec<NewTask> = (0..usize::from(*n))
                    .map(|i| NewTask {
                        task_id: format!("t{:04}", ids.len() + i),
                        labourer_id: "w".into(),
                        payload: "{}".into(),
                    })
                    .collect();
                tm.create(&tasks, now).await.expect("create");
                ids.extend(tasks.into_iter().map(|t| t.task_id));
            }
            Op::Orchestrate => {
                let r = orchestrator.run_once(now).await;
                let l = &r.labourers[0];
                prop_assert!(l.errors.is_empty(), "{:?}", l.errors);
                prop_assert!(
                    l.running + u64::from(l.invoked + l.finished_sync + l.uncertain) <= MAX_SIMULTANEOUS.max(l.running),
                    "over the limit: {l:?}"
                );
            }
            Op::Script(kind) => {
                let mut e = InvokeError::new(*kind, "scripted");
                if *kind == FailureKind::Throttled {
                    e.retry_after = None;
                }
                invokers.of("w").then([Err(e)]);
            }
            Op::Complete(i) | Op::Fail(i) if !ids.is_empty() => {
                let id = &ids[usize::from(*i) % ids.len()];
                let before = store.get(id).await.expect("get").expect("exists");
                let reportable = match before.place {
                    Place::Live => before.task.attempts >= 1,
                    Place::Retry { .. } => true,
                    Place::Closed { .. } => false,
                };
                let result = if matches!(op, Op::Complete(_)) {
                    assistant.complete(id, &WorkerReport::default(), now).await.map(|_| ())
                } else {
                    assistant.fail(id, &WorkerReport::default(), now).await.map(|_| ())
                };
                prop_assert_eq!(result.is_ok(), reportable, "report on {:?}: {:?}", before, result);
            }
            Op::Complete(_) | Op::Fail(_) => {}
            Op::Advance(s) => clock.advance_secs(i64::from(*s)),
            Op::Scavenge => {
                let r = scavenger.run_once(now).await;
                prop_assert!(r.labourers[0].errors.is_empty(), "{:?}", r.labourers[0].errors);
            }
        }

        // Invariants.
        let rows = all_rows(store.as_ref()).await;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for r in &rows {
            *seen.entry(r.task.task_id.as_str()).or_default() += 1;
        }
        for id in &ids {
            prop_assert_eq!(
                seen.get(id.as_str()).copied(),
                Some(1),
                "`{}` must be in exactly one table after {:?}",
                id,
                op
            );
        }
        prop_assert_eq!(rows.len(), ids.len());
        let invocations = invokers.of("w").invoked_ids();
        for r in &rows {
            let id = &r.task.task_id;
            let previous = last_attempts.insert(id.clone(), r.task.attempts).unwrap_or(0);
            prop_assert!(r.task.attempts >= previous, "attempts of `{}` went down", id);
            prop_assert!(
                r.task.attempts <= MAX_ATTEMPTS,
                "`{}` was invoked more than max_attempts",
                id
            );
            let throttled = store
                .events_of(id)
                .await
                .expect("events")
                .iter()
                .filter(|e| e.action == MetaAction::InvocationThrottled)
                .count();
            let invoked = invocations.iter().filter(|i| *i == id).count();
            prop_assert_eq!(
                invoked,
                r.task.attempts as usize + throttled,
                "every invocation of `{}` is one attempt",
                id
            );
            if let Place::Closed { .. } = r.place {
                match closed.get(id) {
                    Some(before) => prop_assert_eq!(before, r, "a closed task never changes"),
                    None => {
                        closed.insert(id.clone(), r.clone());
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run(ops))?;
    }
}
