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
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open_or_create(dir.path().join("s.db")).expect("open"));
    store.init().await.expect("init");
    let clock = ManualClock::at_secs(T0);
    let wiring = Wiring {
        store: store.clone(),
        meta: Some(store.clone()),
        metrics: FakeMetrics::new(),
        notifier: RecordingNotifier::new(),
        clock: clock.clone(),
    };
    let config = Config::from_value(&json!({
        "task_config": {"labourers": {"w": {"command": "true"}}},
        "job_schema": {"chunkable_attrs": [["item", {}]]},
        "job_schema_variants": {"by_section": {"chunkable_attrs": ["section", "store"]}}
    }))
    .expect("config");
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
        .run(&plan, |p| seen.push((p.scheduled, p.finished_at.is_some())))
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
        events.iter().map(|e| e.action).collect::<Vec<_>>(),
        vec![MetaAction::Created]
    );
    let job = w.store.get_job("big").await.expect("get").expect("recorded");
    assert_eq!(
        (job.total, job.scheduled, job.finished_at.is_some()),
        (25_000, 25_000, true)
    );

    // Submitted again: nothing new.
    let again = w.scheduler.run(&plan, |_| {}).await.expect("run again");
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
    let report = w.scheduler.run(&plan, |_| {}).await.expect("resume");
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
        .run_until(&plan, Some(Time::from_secs(T0 + 10)), |_| clock.advance_secs(6))
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
    let rest = w.scheduler.run_until(&resumed, Some(now), |_| {}).await.expect("rest");
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
