//! The Scheduler on a real SQLite file: validation before writing, order, idempotency, resumption, progress.

use serde_json::{json, Value};
use sosw_core::config::Config;
use sosw_core::ports::{MetaSink, Table, TaskQuery, TaskStore};
use sosw_core::schedule::task_id;
use sosw_core::{Clock, MetaAction, NewTask, Time};
use sosw_engine::{ScheduleError, Scheduler, Wiring};
use sosw_sqlite::SqliteStore;
use sosw_testkit::fakes::{FakeMetrics, RecordingNotifier};
use sosw_testkit::ManualClock;
use std::ops::ControlFlow;
use std::sync::Arc;

const T0: i64 = 1_548_806_400; // 2019-01-30T00:00:00Z

struct World {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    scheduler: Scheduler,
    clock: Arc<ManualClock>,
}

async fn world() -> World {
    world_with(json!({}), T0).await
}

/// [`world`] with more config keys (at the top level) and the clock at `now`.
async fn world_with(extra: Value, now: i64) -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open_or_create(dir.path().join("s.db")).expect("open"));
    store.init().await.expect("init");
    let clock = ManualClock::at_secs(now);
    let wiring = Wiring {
        store: store.clone(),
        meta: Some(store.clone()),
        metrics: FakeMetrics::new(),
        notifier: RecordingNotifier::new(),
        clock: clock.clone(),
    };
    let mut config = json!({
        "task_config": {"labourers": {"w": {"command": "true"}}},
        "job_schema": {"chunkable_attrs": [["item", {}]]},
        "job_schema_variants": {"by_section": {"chunkable_attrs": ["section", "store"]}}
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        config[k] = v.clone();
    }
    let config = Config::from_value(&config).expect("config");
    World {
        _dir: dir,
        scheduler: Scheduler::new(Arc::new(config), &wiring),
        store,
        clock,
    }
}

fn big_job(n: u64) -> Value {
    json!({"lambda_name": "arn:aws:lambda:us-west-2:000000000000:function:w", "job_id": "big", "isolate_items": true,
           "items": (0..n).collect::<Vec<u64>>()})
}

async fn live_in_queue_order(store: &SqliteStore) -> Vec<(String, u64)> {
    let q = TaskQuery {
        table: Table::Live,
        labourer: Some("w".into()),
        greenfield: None,
        completed: None,
        limit: 1_000_000,
        after: None,
    };
    store
        .list(&q)
        .await
        .expect("list")
        .into_iter()
        .map(|t| {
            let payload: Value = serde_json::from_str(&t.task.payload).expect("payload");
            (t.task.task_id, payload["items"][0].as_u64().expect("item"))
        })
        .collect()
}

#[tokio::test]
async fn a_job_goes_in_whole_in_order_and_only_once() {
    let w = world().await;
    let plan = w
        .scheduler
        .plan(&big_job(25_000), Time::from_secs(T0))
        .await
        .expect("plan");
    assert_eq!(
        (plan.job_id.as_str(), plan.labourer.as_str(), plan.total),
        ("big", "w", 25_000)
    );
    let mut seen = Vec::new();
    let report = w
        .scheduler
        .run(&plan, w.clock.as_ref(), |p| {
            seen.push((p.scheduled, p.finished_at.is_some()))
        })
        .await
        .expect("run");
    assert_eq!((report.created, report.existing), (25_000, 0));
    assert_eq!(
        seen,
        vec![(10_000, false), (20_000, false), (25_000, false), (25_000, true)]
    );
    let queue = live_in_queue_order(&w.store).await;
    assert_eq!(queue.len(), 25_000);
    for (i, (id, item)) in queue.iter().enumerate() {
        assert_eq!(
            (*item, id.clone()),
            (i as u64, task_id("big", i as u64)),
            "FIFO in generation order"
        );
    }
    let events = w.store.events_of(&queue[7].0).await.expect("events");
    assert_eq!(
        events.iter().map(|e| e.action.clone()).collect::<Vec<_>>(),
        vec![MetaAction::Created]
    );
    let job = w.store.get_job("big").await.expect("get").expect("recorded");
    assert_eq!(
        (job.total, job.scheduled, job.finished_at.is_some()),
        (25_000, 25_000, true)
    );

    // Submitted again: nothing new.
    let again = w
        .scheduler
        .run(&plan, w.clock.as_ref(), |_| {})
        .await
        .expect("run again");
    assert_eq!((again.created, again.existing), (0, 25_000));
    assert_eq!(live_in_queue_order(&w.store).await.len(), 25_000);
}

#[tokio::test]
async fn a_run_cut_short_resumes_with_only_the_missing_tasks() {
    let w = world().await;
    let plan = w
        .scheduler
        .plan(&big_job(25_000), Time::from_secs(T0))
        .await
        .expect("plan");
    // What a crashed run had committed: its first 12,345 tasks.
    let mut first = Vec::new();
    Scheduler::each_task(&plan, &mut |t: NewTask| {
        first.push(t);
        if first.len() == 12_345 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("tasks");
    for chunk in first.chunks(5_000) {
        w.store
            .create_tasks(chunk, 1000, Time::from_secs(T0))
            .await
            .expect("partial");
    }
    let report = w.scheduler.run(&plan, w.clock.as_ref(), |_| {}).await.expect("resume");
    assert_eq!((report.created, report.existing), (25_000 - 12_345, 12_345));
    let queue = live_in_queue_order(&w.store).await;
    let items: Vec<u64> = queue.iter().map(|(_, i)| *i).collect();
    assert_eq!(items, (0..25_000).collect::<Vec<_>>(), "each task once, in order");
}

#[tokio::test]
async fn a_run_stopped_at_its_deadline_is_continued_by_a_later_run_even_the_next_day() {
    let w = world().await;
    // No `job_id`: the id derives from the job and its day, which a continuation must keep.
    let job = json!({"lambda_name": "w", "isolate_items": true, "items": (0..25_000).collect::<Vec<u64>>()});
    let plan = w.scheduler.plan(&job, Time::from_secs(T0)).await.expect("plan");
    // Each batch of 10,000 takes 6 s by the clock; the deadline is 10 s away: the run stops after two batches.
    let clock = w.clock.clone();
    let first = w
        .scheduler
        .run_until(&plan, w.clock.as_ref(), Some(Time::from_secs(T0 + 10)), |_| {
            clock.advance_secs(6)
        })
        .await
        .expect("first part");
    assert_eq!((first.created, first.existing, first.finished), (20_000, 0, false));
    let progress = w.store.get_job(&plan.job_id).await.expect("get").expect("recorded");
    assert_eq!((progress.scheduled, progress.finished_at), (20_000, None));
    assert_eq!(live_in_queue_order(&w.store).await.len(), 20_000);

    // Continued the next day, with the day the job was planned on.
    w.clock.advance_secs(86_400);
    let now = w.clock.now();
    let resumed = w
        .scheduler
        .plan_for(&job, now, Some(plan.today))
        .await
        .expect("plan again");
    assert_eq!(resumed.job_id, plan.job_id);
    let rest = w
        .scheduler
        .run_until(&resumed, w.clock.as_ref(), Some(now), |_| {})
        .await
        .expect("rest");
    assert_eq!((rest.created, rest.existing, rest.finished), (5_000, 20_000, true));
    let items: Vec<u64> = live_in_queue_order(&w.store).await.iter().map(|(_, i)| *i).collect();
    assert_eq!(items, (0..25_000).collect::<Vec<_>>(), "each task once, in order");
    let done = w.store.get_job(&plan.job_id).await.expect("get").expect("recorded");
    assert_eq!((done.scheduled, done.finished_at.is_some()), (25_000, true));
}

#[tokio::test]
async fn an_invalid_job_writes_nothing() {
    let w = world().await;
    let now = Time::from_secs(T0);
    // The bad value comes after 5,000 good tasks: the counting pass finds it before anything is written.
    let mut sections = serde_json::Map::new();
    for i in 0..5_000 {
        sections.insert(format!("s{i:05}"), Value::Null);
    }
    sections.insert(
        "zzz".into(),
        json!({"isolate_stores": true, "stores": {"bad": "a string"}}),
    );
    let cases = [
        (
            json!({"lambda_name": "w", "job_schema_name": "by_section", "isolate_sections": true, "sections": sections}),
            "`sections.zzz.stores.bad`",
        ),
        (json!({"lambda_name": "nobody"}), "unknown labourer `nobody`"),
        (json!({"lambda_name": "w", "period": "fortnight"}), "`fortnight`"),
        (json!({"lambda_name": "w", "job_schema_name": "weekly"}), "`weekly`"),
        (json!({"lambda_name": "w", "job_schema_name": 7}), "`job_schema_name`"),
        (json!({"job": "not json"}), "JSON object"),
    ];
    for (job, want) in cases {
        let err = w.scheduler.plan(&job, now).await.expect_err("invalid");
        assert!(err.to_string().contains(want), "{job}: {err}");
        assert!(
            matches!(err, ScheduleError::Job(_) | ScheduleError::Config(_)),
            "{err:?}"
        );
    }
    // A job too big for the queue at this step (positions would reach the timestamp range): refused up front.
    let early = Time::from_secs(1_000_000);
    let err = w.scheduler.plan(&big_job(999), early).await.expect_err("too big");
    assert!(
        matches!(err, ScheduleError::QueueFull(_)) && err.to_string().contains("greenfield_task_step"),
        "{err}"
    );
    assert!(
        w.store.labourer_ids().await.expect("ids").is_empty(),
        "nothing was written"
    );
    assert!(w.store.list_jobs(10).await.expect("jobs").is_empty());
}

#[tokio::test]
async fn schema_variants_and_dates_come_from_config_and_the_clock() {
    let w = world().await;
    let job = json!({"job": {"lambda_name": "w", "job_schema_name": "by_section", "period": "last_2_days", "isolate_days": true,
                             "isolate_sections": true, "sections": {"a": null, "b": null}}});
    let plan = w.scheduler.plan(&job, Time::from_secs(T0 + 3600)).await.expect("plan");
    assert_eq!(plan.total, 4);
    let mut tasks = Vec::new();
    Scheduler::each_task(&plan, &mut |t| {
        tasks.push(serde_json::from_str::<Value>(&t.payload).expect("payload"));
        ControlFlow::Continue(())
    })
    .expect("tasks");
    assert_eq!(
        tasks[0],
        json!({"job_schema_name": "by_section", "isolate_sections": true, "sections": ["a"], "date_list": ["2019-01-28"]})
    );
    assert_eq!(tasks[3]["date_list"], json!(["2019-01-29"]));
    // Without `job_id`, the id is derived from the content and the date: the same job tomorrow is another job.
    let tomorrow = w
        .scheduler
        .plan(&job, Time::from_secs(T0 + 86_400))
        .await
        .expect("plan");
    assert_ne!(plan.job_id, tomorrow.job_id);
    assert_eq!(
        plan.job_id,
        w.scheduler
            .plan(&job, Time::from_secs(T0 + 7200))
            .await
            .expect("plan")
            .job_id
    );
}

/// A queue with room for 1,300 tasks: at a step of 1,000,000 positions run from 2,000,000 (the first task of an
/// empty queue) and must stay below `now`.
const STEP: i64 = 1_000_000;
const NEAR_FULL_NOW: i64 = 1_301 * STEP + 1;

async fn near_full_world() -> World {
    world_with(
        json!({"greenfield_task_step": STEP, "schedule_batch_size": 500}),
        NEAR_FULL_NOW,
    )
    .await
}

async fn queued(store: &SqliteStore) -> usize {
    live_in_queue_order(store).await.len()
}

#[tokio::test]
async fn a_job_near_a_full_queue_resumes_and_resubmits_counting_only_what_it_writes() {
    // Defect 3 of issue #8: the capacity check counted the whole job, so these were refused ("queue ... is full").
    let w = near_full_world().await;
    let now = Time::from_secs(NEAR_FULL_NOW);
    let job = big_job(1_200);
    let plan = w.scheduler.plan(&job, now).await.expect("1,200 tasks fit in 1,300");
    // A run stopped after two batches of 500: 1,000 written and recorded; the queue has room for 300 more.
    let first = w
        .scheduler
        .run_until(&plan, w.clock.as_ref(), Some(now), |_| {})
        .await
        .expect("first part");
    assert_eq!((first.created, first.finished), (500, false));
    let second = w
        .scheduler
        .run_until(&plan, w.clock.as_ref(), Some(now), |_| {})
        .await
        .expect("second part");
    assert_eq!((second.created, second.finished), (500, false));
    assert_eq!(queued(&w.store).await, 1_000);

    // Re-planned (as `sosw schedule` again, or the Lambda's continuation does): only the 200 missing tasks count.
    let resumed = w
        .scheduler
        .plan(&job, now)
        .await
        .expect("the 200 missing tasks fit in 300");
    let rest = w.scheduler.run(&resumed, w.clock.as_ref(), |_| {}).await.expect("rest");
    assert_eq!((rest.created, rest.existing, rest.finished), (200, 1_000, true));
    assert_eq!(queued(&w.store).await, 1_200);

    // Resubmitted when finished, with room for 100 more: nothing to write, so nothing to refuse.
    let again = w
        .scheduler
        .plan(&job, now)
        .await
        .expect("a finished job writes nothing");
    let report = w
        .scheduler
        .run(&again, w.clock.as_ref(), |_| {})
        .await
        .expect("resubmitted");
    assert_eq!((report.created, report.existing, report.finished), (0, 1_200, true));
    assert_eq!(queued(&w.store).await, 1_200);

    // A new job that needs more than the room left is still refused before anything is written.
    let other =
        json!({"lambda_name": "w", "job_id": "other", "isolate_items": true, "items": (0..101).collect::<Vec<u64>>()});
    let err = w.scheduler.plan(&other, now).await.expect_err("101 > 100");
    assert!(
        matches!(err, ScheduleError::QueueFull(_))
            && err.to_string().contains("101 tasks")
            && err.to_string().contains("room for 100"),
        "{err}"
    );
    assert_eq!(queued(&w.store).await, 1_200);
}

#[tokio::test]
async fn a_job_whose_progress_was_not_saved_is_measured_in_the_store() {
    // A run killed after its batch was committed but before its progress was saved, or tasks written by another
    // process: the store has more of the job than its progress says.
    let w = near_full_world().await;
    let now = Time::from_secs(NEAR_FULL_NOW);
    let plan = w.scheduler.plan(&big_job(1_200), now).await.expect("plan");
    let mut first = Vec::new();
    Scheduler::each_task(&plan, &mut |t: NewTask| {
        first.push(t);
        if first.len() == 1_150 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("tasks");
    w.store.create_tasks(&first, STEP, now).await.expect("partial");
    // Room for 150; 50 missing.
    let resumed = w
        .scheduler
        .plan(&big_job(1_200), now)
        .await
        .expect("the 50 missing tasks fit");
    let rest = w.scheduler.run(&resumed, w.clock.as_ref(), |_| {}).await.expect("rest");
    assert_eq!((rest.created, rest.existing, rest.finished), (50, 1_150, true));
    let items: Vec<u64> = live_in_queue_order(&w.store).await.iter().map(|(_, i)| *i).collect();
    assert_eq!(items, (0..1_200).collect::<Vec<_>>(), "each task once, in order");

    // Every task there and no progress at all (recorded by nobody): resubmitting writes nothing and is accepted.
    let w2 = near_full_world().await;
    let all: Vec<NewTask> = {
        let mut v = Vec::new();
        Scheduler::each_task(&plan, &mut |t| {
            v.push(t);
            ControlFlow::Continue(())
        })
        .expect("tasks");
        v
    };
    w2.store.create_tasks(&all, STEP, now).await.expect("all");
    let again = w2.scheduler.plan(&big_job(1_200), now).await.expect("nothing to write");
    let report = w2
        .scheduler
        .run(&again, w2.clock.as_ref(), |_| {})
        .await
        .expect("resubmitted");
    assert_eq!((report.created, report.existing, report.finished), (0, 1_200, true));
}

#[tokio::test]
async fn a_job_too_big_is_refused_from_its_count_before_any_task_is_made() {
    // Defect 4 of issue #8: a small job describing a huge number of tasks was walked task by task (~16 minutes for
    // a billion) before it was refused. Now it is counted from its structure: 999,999 dates × 1,001 items.
    let w = world().await;
    let now = Time::from_secs(T0);
    let huge = json!({"lambda_name": "w", "job_id": "huge", "period": "last_999999_days", "isolate_days": true,
                      "isolate_items": true, "items": (0..1_001).collect::<Vec<u64>>()});
    let err = w.scheduler.plan(&huge, now).await.expect_err("too big");
    assert!(
        matches!(
            err,
            ScheduleError::TooBig {
                total: 1_000_998_999,
                max: 10_000_000
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("1000998999 tasks") && err.to_string().contains("`schedule_max_tasks` (10000000)"),
        "{err}"
    );

    // Under the limit but not fitting in the queue (room for 1,300 at this step and time): refused as promptly.
    let w = world_with(
        json!({"greenfield_task_step": STEP, "schedule_max_tasks": 100_000_000}),
        NEAR_FULL_NOW,
    )
    .await;
    let now = Time::from_secs(NEAR_FULL_NOW);
    let err = w.scheduler.plan(&huge, now).await.expect_err("does not fit");
    assert!(
        matches!(
            err,
            ScheduleError::TooBig {
                total: 1_000_998_999,
                max: 100_000_000
            }
        ),
        "{err:?}"
    );
    let big = json!({"lambda_name": "w", "job_id": "big", "period": "last_5000_days", "isolate_days": true,
                     "isolate_items": true, "items": (0..1_000).collect::<Vec<u64>>()});
    let err = w.scheduler.plan(&big, now).await.expect_err("does not fit");
    assert!(
        matches!(err, ScheduleError::QueueFull(_))
            && err.to_string().contains("writes 5000000 tasks")
            && err.to_string().contains("room for 1300 more"),
        "{err}"
    );
    assert!(
        w.store.labourer_ids().await.expect("ids").is_empty(),
        "nothing was written"
    );
}

#[tokio::test]
async fn a_job_at_the_limit_is_accepted_and_one_over_it_is_not() {
    let w = world_with(json!({"schedule_max_tasks": 1_000}), T0).await;
    let now = Time::from_secs(T0);
    assert_eq!(
        w.scheduler
            .plan(&big_job(1_000), now)
            .await
            .expect("at the limit")
            .total,
        1_000
    );
    let err = w.scheduler.plan(&big_job(1_001), now).await.expect_err("over");
    assert!(
        matches!(
            err,
            ScheduleError::TooBig {
                total: 1_001,
                max: 1_000
            }
        ),
        "{err:?}"
    );
}
