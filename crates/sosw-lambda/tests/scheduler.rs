//! The Scheduler's Lambda handler on moto_server: a job that does not fit before the invocation's deadline is saved
//! to S3 and continued by an asynchronous invocation of the function itself (recorded by the server); the
//! continuation finishes the job with each task once, in order, and removes the file. What both invocations send
//! is checked against the Scheduler's IAM policy in `deploy/template.yaml`.

mod common;

use common::iam::{template_function, Policies};
use common::{config, container};
use lambda_runtime::Context;
use serde_json::{json, Value};
use sosw_aws::s3::{QueueFiles, QueueLocation};
use sosw_core::ports::{Table, TaskQuery};
use sosw_core::{Clock, Essential};
use sosw_lambda::HandlerError;
use sosw_testkit::ManualClock;

const T0: i64 = 1_700_000_000;

#[tokio::test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
async fn a_job_cut_by_the_deadline_continues_in_a_new_invocation() {
    let Some(moto) = common::moto().await else {
        return;
    };
    let tables = moto.tables("sch").await;
    let bucket = moto.bucket("sosw-queue").await;
    let config = config(
        &tables,
        json!({
            "task_config": {"labourers": {"w": {"arn": "arn:aws:lambda:us-east-1:123456789012:function:w"}}},
            "job_schema": {"chunkable_attrs": [["item", {}]]},
            "queue_bucket": bucket,
            "schedule_batch_size": 10,
            "shutdown_period": 60,
        }),
    );
    let clock = ManualClock::at_secs(T0);
    let scheduler = container(&moto, &config, Essential::Scheduler, clock.clone());
    let job = json!({"job": {"lambda_name": "w", "isolate_items": true, "items": (0..25).collect::<Vec<i64>>()}});

    // 60 s before the deadline already: one batch of 10, then the hand-over.
    let function = format!(
        "arn:aws:lambda:us-east-1:123456789012:function:sosw_scheduler_{}",
        std::process::id()
    );
    let mut ctx = Context::default();
    ctx.deadline = u64::try_from(clock.now().millis()).expect("positive") + 60_000;
    ctx.invoked_function_arn = function.clone();
    let policies = Policies::of_template(
        &tables,
        "arn:aws:lambda:us-east-1:123456789012:function:w",
        None,
        Some(&bucket),
    )
    .naming(&function, &template_function("sosw_scheduler"));
    moto.start_recording().await;
    let first = scheduler.handle(job.clone(), &ctx).await.expect("first part");
    let requests = moto.recorded_requests().await;
    assert!(policies.assert_granted("sosw_scheduler", &requests) > 0);
    let sibling = sosw_testkit::moto::invocations_in(&requests, &format!("sosw_scheduler_{}", std::process::id()));
    assert_eq!(
        (first["created"].clone(), first["finished"].clone()),
        (json!(10), json!(false)),
        "{first}"
    );
    let key = first["continued_in"]["file_name"]
        .as_str()
        .expect("continued")
        .to_string();
    assert_eq!(first["continued_in"]["function"], json!(function));
    assert_eq!(
        sibling,
        vec![json!({"file_name": key})],
        "the function invoked itself, once"
    );
    let settings = sosw_core::Config::from_value(&config).expect("config").queue;
    let queue = QueueFiles::new(moto.aws.s3(), QueueLocation::from_settings(&settings));
    let saved = queue.load(&key).await.expect("the continuation is in S3");
    assert_eq!(saved.job["lambda_name"], json!("w"));
    assert_eq!(saved.job["job_id"], first["job_id"]);

    // The sibling, a day later (the job keeps its day and so its id), with time to spare.
    clock.advance_secs(86_400);
    moto.start_recording().await;
    let rest = scheduler.handle(json!({"file_name": key}), &Context::default()).await;
    assert!(policies.assert_granted("sosw_scheduler", &moto.recorded_requests().await) > 0);
    let rest = rest.expect("the rest");
    assert_eq!(
        (
            rest["created"].clone(),
            rest["existing"].clone(),
            rest["finished"].clone(),
            rest["job_id"].clone()
        ),
        (json!(15), json!(10), json!(true), first["job_id"].clone()),
        "{rest}"
    );
    assert!(rest.get("continued_in").is_none());
    let live = scheduler
        .store()
        .list(&TaskQuery {
            table: Table::Live,
            labourer: Some("w".into()),
            greenfield: None,
            completed: None,
            limit: 100,
            after: None,
        })
        .await
        .expect("list");
    let mut queued: Vec<(i64, i64)> = live
        .iter()
        .map(|t| {
            let payload: Value = serde_json::from_str(&t.task.payload).expect("payload");
            (t.task.greenfield.get(), payload["items"][0].as_i64().expect("item"))
        })
        .collect();
    queued.sort();
    assert_eq!(
        queued.iter().map(|(_, item)| *item).collect::<Vec<_>>(),
        (0..25).collect::<Vec<_>>(),
        "each task once, in queue order"
    );
    assert!(
        matches!(queue.load(&key).await, Err(sosw_aws::s3::QueueError::Missing { .. })),
        "the finished job's file is removed"
    );

    // Delivered twice (Lambda retries asynchronous events): the file is gone, which is said plainly.
    let err = scheduler
        .handle(json!({"file_name": key}), &Context::default())
        .await
        .expect_err("gone");
    assert!(matches!(err, HandlerError::Queue(_)), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    // A file that is not a continuation is refused, naming it, and nothing is written.
    let foreign = "sosw/scheduler/tasks_queue_not-ours.txt";
    moto.aws
        .s3()
        .put_object()
        .bucket(&bucket)
        .key(foreign)
        .body(r#"{"labourer_id": "w", "n": 1}"#.as_bytes().to_vec().into())
        .send()
        .await
        .expect("put");
    let before = scheduler
        .store()
        .counts("w", &sosw_core::Markers::new(clock.now(), 1, 60, 30))
        .await
        .expect("counts");
    let err = scheduler
        .handle(json!({"file_name": foreign}), &Context::default())
        .await
        .expect_err("not a continuation");
    assert!(err.to_string().contains(&format!("s3://{bucket}/{foreign}")), "{err}");
    let after = scheduler
        .store()
        .counts("w", &sosw_core::Markers::new(clock.now(), 1, 60, 30))
        .await
        .expect("counts");
    assert_eq!(before, after, "nothing written");
}
