//! The four essentials' Lambda handlers against moto_server, end to end: schedule → orchestrate (the worker's
//! asynchronous invocations recorded by the server) → worker assistant → scavenge archives; and for the tasks that
//! never report, expire → retry → invoked again → dead, with the SNS notification. The time is a manual clock.
//! Every request each handler sends is checked against its function's IAM policy in `deploy/template.yaml`.

mod common;

use common::iam::Policies;
use common::{config, container, place, Moto};
use lambda_runtime::Context;
use serde_json::{json, Value};
use sosw_core::meta::MetaAction;
use sosw_core::{Essential, Place};
use sosw_lambda::Container;
use sosw_testkit::moto::invocations_in;
use sosw_testkit::ManualClock;
use std::collections::BTreeSet;

const T0: i64 = 1_700_000_000;

fn ids(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["task_id"].as_str().expect("task_id").to_string())
        .collect()
}

/// One handler call with the server recording: fails unless the template's policy for `e`'s function grants
/// every request the handler sent. Returns the handler's answer and the requests.
async fn handled(moto: &Moto, policies: &Policies, c: &Container, e: Essential, event: Value) -> (Value, Vec<Value>) {
    moto.start_recording().await;
    let answer = c.handle(event, &Context::default()).await;
    let requests = moto.recorded_requests().await;
    let answer = answer.unwrap_or_else(|err| panic!("{e:?}: {err}"));
    let checked = policies.assert_granted(e.function_name(), &requests);
    assert!(checked > 0, "{e:?} sent no request the recorder saw");
    (answer, requests)
}

#[tokio::test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
async fn schedule_orchestrate_complete_scavenge_and_expire_retry_die() {
    let Some(moto) = common::moto().await else {
        return;
    };
    let tables = moto.tables("e2e").await;
    let (topic, queue) = moto.topic("sosw-e2e-dead");
    let worker = format!("e2e_worker_{}", std::process::id());
    let arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{worker}");
    let config = config(
        &tables,
        json!({
            "task_config": {"labourers": {&worker: {
                "arn": arn, "max_simultaneous_invocations": 10, "duration": 60, "cooldown": 30, "max_attempts": 2,
                // Adaptive: the WorkerAssistant adds each report to the labourer's counts (and its policy must let it).
                "adaptive": {"min": 5}
            }}},
            "sns_config": {"recipient": topic},
            "job_schema": {"chunkable_attrs": [["item", {}]]},
        }),
    );
    let clock = ManualClock::at_secs(T0);
    let [scheduler, orchestrator, assistant, scavenger] = [
        Essential::Scheduler,
        Essential::Orchestrator,
        Essential::WorkerAssistant,
        Essential::Scavenger,
    ]
    .map(|e| container(&moto, &config, e, clock.clone()));
    let store = scheduler.store().clone();
    let policies = Policies::of_template(&tables, &arn, Some(&topic), None);
    use Essential::{Orchestrator as O, Scavenger as S, Scheduler as Sch, WorkerAssistant as W};

    // The Scheduler: a job (the labourer named by its ARN, as Python sosw's callers do) → five tasks.
    let job =
        json!({"job": {"lambda_name": arn, "isolate_items": true, "items": [1, 2, 3, 4, 5], "day": "2023-11-14"}});
    let (report, _) = handled(&moto, &policies, &scheduler, Sch, job).await;
    assert_eq!(
        (report["created"].clone(), report["finished"].clone()),
        (json!(5), json!(true)),
        "{report}"
    );

    // The Orchestrator invokes all five asynchronously, each once, with the flat worker event.
    let (report, orchestrator_requests) =
        handled(&moto, &policies, &orchestrator, O, json!({"source": "aws.events"})).await;
    let events = invocations_in(&orchestrator_requests, &worker);
    assert_eq!(report["labourers"][&worker]["invoked"], json!(5), "{report}");
    assert_eq!(events.len(), 5, "{events:?}");
    let tasks = ids(&events);
    assert_eq!(tasks.len(), 5, "five different tasks");
    let items: BTreeSet<i64> = events
        .iter()
        .map(|e| e["items"][0].as_i64().expect("one item per task"))
        .collect();
    assert_eq!(items, (1..=5).collect());
    for e in &events {
        assert_eq!(
            (e["labourer_id"].as_str(), e["attempts"].as_i64()),
            (Some(worker.as_str()), Some(0)),
            "{e}"
        );
        assert_eq!(e["day"], json!("2023-11-14"));
    }
    let tasks: Vec<String> = tasks.into_iter().collect();

    // Three workers report through the WorkerAssistant (stats as an object and as a JSON string, as sosw allows).
    clock.advance_secs(10);
    for (i, id) in tasks[..3].iter().enumerate() {
        let stats: Value = if i == 0 {
            json!({"rows": 7})
        } else {
            json!("{\"rows\": 8}")
        };
        let report = json!({"action": "mark_task_as_completed", "task_id": id, "stats": stats, "result": {"ok": true}});
        handled(&moto, &policies, &assistant, W, report).await;
    }
    // A failure report is informational: the task stays invoked until it expires.
    let report = json!({"action": "mark_task_as_failed", "task_id": tasks[3], "stats": {"error": 1}});
    handled(&moto, &policies, &assistant, W, report).await;

    // The Scavenger archives the completed ones.
    let (report, _) = handled(&moto, &policies, &scavenger, S, json!({})).await;
    assert_eq!(report["labourers"][&worker]["archived"], json!(3), "{report}");
    for id in &tasks[..3] {
        assert!(
            matches!(place(&store, id).await, Place::Closed { completed: true, .. }),
            "{id}"
        );
    }
    let done = store.get(&tasks[0]).await.expect("get").expect("archived");
    assert_eq!(done.task.stats.get("rows"), Some(&json!(7)));

    // The other two never complete: expired 90 s after invocation → the retry table for 60 s.
    clock.set(sosw_core::Time::from_secs(T0 + 90));
    let (report, _) = handled(&moto, &policies, &scavenger, S, json!({})).await;
    assert_eq!(report["labourers"][&worker]["retried"], json!(2), "{report}");
    // A late report of a task waiting for retry is recorded on its retry row (found through its audit trail).
    let late = json!({"action": "mark_task_as_failed", "task_id": tasks[3], "stats": {"error": 2}});
    handled(&moto, &policies, &assistant, W, late).await;
    assert!(matches!(place(&store, &tasks[3]).await, Place::Retry { .. }));
    clock.advance_secs(60);
    let (report, _) = handled(&moto, &policies, &scavenger, S, json!({})).await;
    assert_eq!(report["labourers"][&worker]["requeued"], json!(2), "{report}");

    let (_, requests) = handled(&moto, &policies, &orchestrator, O, json!({})).await;
    let again = invocations_in(&requests, &worker);
    assert_eq!(
        ids(&again),
        tasks[3..].iter().cloned().collect(),
        "the two retries, once each"
    );
    assert!(again.iter().all(|e| e["attempts"] == json!(1)), "{again:?}");

    // Their second attempt expires too: dead, closed as not completed, one SNS message naming both.
    clock.advance_secs(90);
    let (report, _) = handled(&moto, &policies, &scavenger, S, json!({})).await;
    assert_eq!(report["labourers"][&worker]["dead"], json!(2), "{report}");
    for id in &tasks[3..] {
        assert!(
            matches!(place(&store, id).await, Place::Closed { completed: false, .. }),
            "{id}"
        );
    }
    let sent = moto.notifications(&queue);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["Subject"], json!("``sosw`` Dead Task"));
    let message = sent[0]["Message"].as_str().expect("message");
    assert!(tasks[3..].iter().all(|id| message.contains(id.as_str())), "{message}");

    // The audit trail of a dead task, written by the essentials as they worked.
    let actions: Vec<MetaAction> =
        sosw_core::ports::MetaSink::events_of(&sosw_aws::DynamoStore::from_aws(&moto.aws, tables.clone()), &tasks[4])
            .await
            .expect("meta")
            .iter()
            .map(|e| e.action.clone())
            .collect();
    use MetaAction::*;
    assert_eq!(
        actions,
        vec![
            Created,
            Invoked,
            ScheduledForRetry,
            ReadyForRetry,
            Invoked,
            ArchivedDead
        ]
    );

    // The check can fail: the WorkerAssistant's policy does not let it do what the Orchestrator did.
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        policies.assert_granted(W.function_name(), &orchestrator_requests)
    }));
    assert!(refused.is_err(), "the WorkerAssistant may not invoke labourers");
}
