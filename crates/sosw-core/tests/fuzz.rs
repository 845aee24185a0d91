//! Property tests over arbitrary JSON for every parser a user feeds in the core: the config, the Scheduler's job and
//! schema, and the payload / report functions behind the CLI's JSON arguments (`--payload`, `--stats`, `--result`)
//! and the WorkerAssistant event. Nothing may panic, and every refusal must say something (for the config: where).
//!
//! Longer runs: `PROPTEST_CASES=100000 cargo test -p sosw-core --test fuzz`, or the cargo-fuzz targets in `fuzz/`
//! (docs/fuzzing.md).

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sosw_core::config::Config;
use sosw_core::payload::{construct_payload, report_part, worker_event, worker_report};
use sosw_core::schedule::{chunk_each, extract_job, Date, Schema};
use sosw_core::{Essential, Task};
use std::ops::ControlFlow;

/// Keys sosw reads, so that generated objects reach the validation beyond "unknown key".
const KEYS: &[&str] = &[
    "task_config",
    "labourers",
    "w",
    "command",
    "timeout",
    "duration",
    "cooldown",
    "max_attempts",
    "max_simultaneous_invocations",
    "greenfield_invocation_delta",
    "greenfield_task_step",
    "health_metrics",
    "feelings",
    "details",
    "invoker",
    "http",
    "url",
    "mode",
    "daemon",
    "orchestrator_interval",
    "scavenger_interval",
    "shutdown_grace",
    "store",
    "job",
    "lambda_name",
    "job_id",
    "period",
    "isolate_days",
    "sections",
    "section",
    "stores",
    "isolate_sections",
    "max_stores_per_batch",
    "job_schema",
    "job_schema_name",
    "job_schema_variants",
    "chunkable_attrs",
    "action",
    "task_id",
    "stats",
    "result",
    "payload",
    "sosw_scheduler_config",
    "sosw_orchestrator_config",
    "max_duration",
    "invocation_timeout",
    "circuit_breaker",
    "initial_hold",
    "max_hold",
    "max_dead_in_row",
    "retry_backoff",
    "",
];

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(i64::MAX)),
        Just(json!(1e300)),
        Just(json!(-1e300)),
        Just(json!(f64::MAX)),
        Just(json!(1e-300)),
        Just(json!(-0.0)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(0.5)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("  ".to_string()),
        Just("é日本🙂\u{0}\u{202e}".to_string()),
        Just("last_99999999999999_days".to_string()),
        Just("last_3_days".to_string()),
        Just("2020-01-01..2020-01-03".to_string()),
        Just("9999-12-31..0000-01-01".to_string()),
        Just("arn:aws:lambda:us-west-2:000000000000:function:w".to_string()),
        Just("mark_task_as_completed".to_string()),
        Just("mark_task_as_failed".to_string()),
        Just("{\"a\": 1}".to_string()),
        Just("[1, 2]".to_string()),
        Just("true".to_string()),
        prop::sample::select(KEYS).prop_map(str::to_string),
        "\\PC{0,16}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(KEYS).prop_map(str::to_string), 1 => text()]
}

/// Arbitrary JSON: mostly small, with sosw's keys, up to 8 levels deep.
fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(8, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A value nested `depth` times in arrays or objects.
fn deep() -> impl Strategy<Value = Value> {
    (1usize..400, any::<bool>(), leaf(), prop::sample::select(KEYS)).prop_map(|(depth, arrays, leaf, k)| {
        let mut v = leaf;
        for _ in 0..depth {
            v = if arrays { Value::Array(vec![v]) } else { json!({ k: v }) };
        }
        v
    })
}

fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![8 => value(), 1 => deep()]
}

/// A config shaped like sosw's, with arbitrary values where sosw reads them.
fn config() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((key(), any_json()), 0..6),
        prop::collection::vec((key(), any_json()), 0..4),
        prop::collection::vec((key(), any_json()), 0..4),
        any_json(),
    )
        .prop_map(|(labourer, task_config, top, daemon)| {
            let mut tc: Map<String, Value> = task_config.into_iter().collect();
            tc.insert(
                "labourers".into(),
                json!({"w": Value::Object(labourer.into_iter().collect())}),
            );
            let mut top: Map<String, Value> = top.into_iter().collect();
            top.insert("task_config".into(), Value::Object(tc));
            top.insert("daemon".into(), daemon);
            Value::Object(top)
        })
}

/// A job shaped like a Scheduler event.
fn job() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((key(), any_json()), 0..6),
        prop_oneof![Just(json!("w")), leaf()],
        any::<u8>(),
    )
        .prop_map(|(body, name, wrap)| {
            let mut m: Map<String, Value> = body.into_iter().collect();
            m.insert("lambda_name".into(), name);
            let job = Value::Object(m);
            match wrap % 3 {
                0 => job,
                1 => json!({ "job": job }),
                _ => json!({ "job": job.to_string() }),
            }
        })
}

/// A config that loaded is used as the engine uses it: every number becomes a timer or a marker without a panic
/// (tests run with overflow checks), at any time the clock may say.
fn use_config(c: &Config) {
    use sosw_core::config::{InvokerSpec, MetricDetails};
    use sosw_core::greenfield::{head_positions, tail_positions};
    use sosw_core::time::duration_secs;
    for now in [0, 1_700_000_000_000, i64::MAX, i64::MIN] {
        let now = sosw_core::Time::from_millis(now);
        for l in &c.labourers {
            let m = l.markers(now, c.greenfield.delta);
            assert!(m.expired <= m.invoked);
            let _ = duration_secs(l.invocation_deadline_secs(c.invocation_timeout));
            let _ = tail_positions(&l.id, Some(m.start), c.greenfield.step, 3, now);
            let _ = head_positions(Some(m.start), c.greenfield.step, 3);
            let _ = sosw_core::decide::decide_expired(u32::MAX, &l.retry_policy(c.retry_backoff), now.secs());
            match &l.invoker {
                InvokerSpec::Process(p) => drop(duration_secs(p.timeout_secs)),
                InvokerSpec::Http(h) => drop(duration_secs(h.timeout_secs)),
                InvokerSpec::Lambda { .. } => {}
            }
            for metric in &l.health_metrics {
                if let MetricDetails::Command { timeout_secs, .. }
                | MetricDetails::HttpJson { timeout_secs, .. }
                | MetricDetails::Prometheus { timeout_secs, .. } = &metric.details
                {
                    let _ = duration_secs(*timeout_secs);
                }
            }
        }
    }
    for secs in [
        c.daemon.orchestrator_interval,
        c.daemon.scavenger_interval,
        c.daemon.shutdown_grace,
    ] {
        let _ = duration_secs(secs);
    }
    let _ = sosw_core::breaker::hold_secs(&c.breaker, u32::MAX);
}

fn check_config_errors(input: &Value, result: Result<Config, sosw_core::ConfigErrors>) -> Result<(), TestCaseError> {
    if let Ok(c) = &result {
        use_config(c);
    }
    if let Err(errors) = result {
        prop_assert!(!errors.0.is_empty(), "a refusal lists its errors");
        for e in &errors.0 {
            prop_assert!(!e.message.trim().is_empty(), "an error says what: {e:?}");
            if input.is_object() {
                prop_assert!(!e.path.is_empty(), "an error in an object names its key path: {e:?}");
            }
        }
    }
    Ok(())
}

/// `PROPTEST_CASES` if set (a longer run), else `default`: a few seconds in CI.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

const TODAY: (i64, u32, u32) = (2024, 2, 29);

fn config_with_schema(schema: &Value) -> Value {
    json!({ "job_schema": schema })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn config_from_value_never_panics_and_names_the_key(v in prop_oneof![config(), any_json()]) {
        let r = Config::from_value(&v);
        check_config_errors(&v, r)?;
    }

    #[test]
    fn config_from_layers_never_panics_and_names_the_key(
        layers in prop::collection::vec(prop_oneof![config(), any_json()], 0..4),
        essential in prop::sample::select(&[
            Essential::Orchestrator, Essential::Scavenger, Essential::Scheduler, Essential::WorkerAssistant,
        ][..]),
    ) {
        let r = Config::from_layers(&layers, essential);
        if let Err(errors) = &r {
            for e in &errors.0 {
                prop_assert!(!e.message.trim().is_empty(), "{e:?}");
            }
        }
    }

    #[test]
    fn a_job_is_extracted_and_walked_without_panic(event in prop_oneof![3 => job(), 1 => any_json()],
                                                   schema in prop_oneof![any_json(), Just(json!({"chunkable_attrs": [["section", {}], ["store", {}]]})), Just(json!({"chunkable_attrs": ["section", "store", "product"]}))]) {
        match extract_job(&event) {
            Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
            Ok(job) => {
                prop_assert!(!job.labourer.is_empty());
                let today = Date::from_ymd(TODAY.0, TODAY.1, TODAY.2).expect("a date");
                let schema = match Schema::from_config(&config_with_schema(&schema), None) {
                    Ok(s) => s,
                    Err(e) => {
                        prop_assert!(!e.to_string().trim().is_empty());
                        return Ok(());
                    }
                };
                // A tiny budget: the walk stops after a few tasks, whatever the job describes.
                let mut seen = 0;
                let walked = chunk_each(&job.body, &schema, today, &mut |task| {
                    seen += 1;
                    assert!(!task.contains_key("lambda_name"));
                    if seen >= 50 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                });
                match walked {
                    Ok(n) => prop_assert!(n <= 50, "{n}"),
                    Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
                }
            }
        }
    }

    #[test]
    fn a_schema_parses_or_says_where(schema in any_json(), path in text()) {
        if let Err(e) = Schema::parse(&schema, &path) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }

    #[test]
    fn cli_json_arguments_parse_or_say_why(text in prop_oneof![any_json().prop_map(|v| v.to_string()), text()]) {
        // `--payload`, `--stats`, `--result`: JSON text → construct_payload / report_part, as the CLI does.
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => {
                let payload = construct_payload(Some(v.clone()), Map::new());
                prop_assert!(serde_json::to_string(&payload).is_ok());
                for field in ["stats", "result"] {
                    if let Err(e) = report_part(field, Some(&v)) {
                        prop_assert!(e.to_string().contains(field), "{e}");
                    }
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn worker_events_and_reports_never_panic(event in prop_oneof![any_json(), (any_json(), any_json()).prop_map(|(s, r)| json!({
        "action": "mark_task_as_completed", "task_id": "t", "stats": s, "result": r,
    }))], payload in prop_oneof![any_json().prop_map(|v| v.to_string()), text()]) {
        if let Value::Object(m) = &event {
            if let Err(e) = worker_report(m) {
                prop_assert!(!e.to_string().trim().is_empty());
            }
        }
        let task = Task {
            task_id: "t".into(),
            labourer_id: "w".into(),
            created_at: 1.0,
            greenfield: sosw_core::Greenfield::new(2000),
            attempts: 1,
            payload,
            completed_at: None,
            failed_attempts: 0,
            refunded_attempts: 0,
            stats: Map::new(),
            result: Map::new(),
        };
        if let Err(e) = worker_event(&task) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }
}
