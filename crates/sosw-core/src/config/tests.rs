use super::*;
use crate::ecology::EcoStatus::*;
use serde_json::json;

const SEED: &str = include_str!("../../../../examples/seed-orchestrator.json");

fn load(v: Value) -> Config {
    match Config::from_value(&v) {
        Ok(c) => c,
        Err(e) => panic!("config should load: {e}"),
    }
}

fn errors(v: Value) -> Vec<String> {
    match Config::from_value(&v) {
        Ok(_) => panic!("config should be rejected: {v}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn process(extra: Value) -> Value {
    let mut l = json!({"command": ["sh", "w.sh"]});
    if let (Value::Object(l), Value::Object(e)) = (&mut l, extra) {
        l.extend(e);
    }
    json!({"task_config": {"labourers": {"w": l}}})
}

#[test]
fn the_seed_orchestrator_config_loads_unchanged() {
    let seed: Value = serde_json::from_str(SEED).expect("the seed is JSON");
    let c = Config::from_layers(&[seed], Essential::Orchestrator).expect("the seed loads");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let l = c.labourer("some_function").expect("labourer");
    assert_eq!(l.max_simultaneous_invocations, 10);
    assert_eq!(l.max_attempts, 3);
    assert_eq!((l.duration, l.cooldown, l.max_duration), (900, 300, 900));
    assert!(matches!(&l.invoker, InvokerSpec::Lambda { arn } if arn.ends_with(":function:some_function")));
    let m = &l.health_metrics[0];
    assert_eq!(m.name, "SomeDBCPU");
    assert_eq!(m.feelings.health(30.0), Good);
    assert_eq!(m.feelings.health(20.0), High);
    assert_eq!(m.feelings.health(51.0), Bad);
    let MetricDetails::CloudWatch(cw) = &m.details else {
        panic!("cloudwatch details")
    };
    assert_eq!(cw.metric_name, "CPUUtilization");
    assert_eq!(cw.namespace, "AWS/RDS");
    assert_eq!(cw.statistic, "Average");
    assert_eq!(
        cw.dimensions,
        vec![("DBInstanceIdentifier".to_string(), "YOUR-DB".to_string())]
    );
    assert_eq!((cw.period, cw.time_slice), (60, 300));
    assert_eq!(c.coefficients, Coefficients::default());
    assert_eq!(c.greenfield, GreenfieldParams::default());
}

#[test]
fn defaults() {
    let c = load(process(json!({})));
    let l = &c.labourers[0];
    assert_eq!(l.max_simultaneous_invocations, 1);
    assert_eq!(l.max_attempts, 3);
    assert_eq!(c.retry_tasks_limit, 20);
    assert_eq!(c.metric_failure_status, Bad);
    assert!(c.write_meta);
    assert_eq!(c.daemon.orchestrator_interval, 60.0);
    let InvokerSpec::Process(p) = &l.invoker else {
        panic!("process")
    };
    assert_eq!(p.report, ReportMode::ExitCode);
    assert_eq!(p.timeout_secs, 900.0);
}

#[test]
fn string_keyed_coefficients_override_defaults() {
    // Reference §7.14: JSON keys are strings; Python never matches them.
    let mut v = process(json!({}));
    v["invocation_number_coefficient"] = json!({"2": 0.3, "4": 0.9});
    let c = load(v);
    assert_eq!(c.coefficients.0, [0.0, 0.0, 0.3, 0.75, 0.9]);
}

#[test]
fn max_attempts_precedence() {
    let v = json!({
        "max_attempts": 7,
        "max_attempts_b": 4,
        "task_config": {
            "max_attempts": 5,
            "labourers": {
                "a": {"command": "true", "max_attempts": 9},
                "b": {"command": "true"},
                "c": {"command": "true"}
            }
        }
    });
    let c = load(v);
    let attempts: Vec<u32> = c.labourers.iter().map(|l| l.max_attempts).collect();
    assert_eq!(attempts, vec![9, 4, 5]);
}

#[test]
fn labourers_keep_config_order() {
    // TM-3
    let c = load(json!({"task_config": {"labourers": {
        "some_lambda": {"arn": "123"}, "some_lambda2": {"url": "http://127.0.0.1:1/x"}
    }}}));
    let ids: Vec<&str> = c.labourers.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, vec!["some_lambda", "some_lambda2"]);
}

#[test]
fn duration_and_cooldown_are_accepted() {
    // TM-4 raised in Python; fixed.
    let c = load(process(json!({"duration": 600, "cooldown": 60, "max_duration": 300})));
    let l = &c.labourers[0];
    assert_eq!((l.duration, l.cooldown, l.max_duration), (600, 60, 300));
}

#[test]
fn essential_sections_merge_over_the_shared_config() {
    let shared = json!({
        "task_config": {"labourers": {"w": {"command": "true", "max_simultaneous_invocations": 2}}},
        "sosw_orchestrator_config": {"task_config": {"labourers": {"w": {"max_simultaneous_invocations": 5}}}},
        "sosw_scavenger_config": {"retry_tasks_limit": 3}
    });
    let local = json!({"sosw_orchestrator_config": {"invocation_concurrency": 8}});
    let orch = Config::from_layers(&[shared.clone(), local.clone()], Essential::Orchestrator).expect("loads");
    assert_eq!(orch.labourers[0].max_simultaneous_invocations, 5);
    assert_eq!(orch.invocation_concurrency, 8);
    assert_eq!(orch.retry_tasks_limit, 20);
    let scav = Config::from_layers(&[shared, local], Essential::Scavenger).expect("loads");
    assert_eq!(scav.labourers[0].max_simultaneous_invocations, 2);
    assert_eq!(scav.retry_tasks_limit, 3);
}

#[test]
fn errors_name_the_path_and_the_value() {
    let errs = errors(process(json!({"max_attempts": "three", "health_metrics": {"cpu": {
        "details": {"command": ["echo", "1"]},
        "feelings": {"1": 40, "3": 50, "4": 25},
        "feeling_comparison_operator": "=="
    }}})));
    assert!(
        errs.iter()
            .any(|e| e.contains("`task_config.labourers.w.max_attempts`") && e.contains("\"three\"")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(
            |e| e.contains("`task_config.labourers.w.health_metrics.cpu.feeling_comparison_operator`")
                && e.contains("\"==\"")
        ),
        "{errs:?}"
    );

    let errs = errors(process(json!({"health_metrics": {"cpu": {
        "details": {"command": ["echo", "1"]},
        "feelings": {"1": 40, "3": 50, "4": 25},
        "feeling_comparison_operator": "<="
    }}})));
    assert!(
        errs.iter()
            .any(|e| e.contains("health_metrics.cpu.feelings`") && e.contains("out of order")),
        "{errs:?}"
    );

    let errs = errors(json!({"invocation_number_coefficient": {"7": 1, "2": -1}}));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("`invocation_number_coefficient.7`"), "{errs:?}");
    assert!(
        errs[1].contains("`invocation_number_coefficient.2`") && errs[1].contains("-1"),
        "{errs:?}"
    );
}

#[test]
fn a_labourer_needs_a_way_to_be_invoked() {
    let errs = errors(json!({"task_config": {"labourers": {"w": {"max_simultaneous_invocations": 2}}}}));
    assert!(
        errs[0].contains("`task_config.labourers.w`") && errs[0].contains("command"),
        "{errs:?}"
    );
    let errs = errors(json!({"task_config": {"labourers": {"w": {"command": "x", "url": "http://a"}}}}));
    assert!(errs[0].contains("not both"), "{errs:?}");
    let errs = errors(json!({"task_config": {"labourers": {"w": {"url": "ftp://a"}}}}));
    assert!(errs[0].contains("ftp://a"), "{errs:?}");
    let errs = errors(json!({"task_config": {"labourers": {"w": {"command": [1, 2]}}}}));
    assert!(errs[0].contains("`task_config.labourers.w.command`"), "{errs:?}");
}

/// A labourer id is shown in terminals and metric labels, and DynamoDB's labourer registry keeps an item whose key
/// starts with a NUL (see sosw-aws `registry.rs`): no control character, and the error shows the id escaped.
#[test]
fn a_labourer_id_has_no_control_characters() {
    for id in ["\u{0}sosw labourer registry", "a\nb", "tab\there", "\u{1b}[31mred"] {
        let errs = errors(json!({"task_config": {"labourers": {id: {"command": "true"}}}}));
        assert_eq!(errs.len(), 1, "{id:?}: {errs:?}");
        assert!(errs[0].contains("control characters"), "{errs:?}");
        assert!(errs[0].contains(&id.escape_debug().to_string()), "{errs:?}");
        assert!(!errs[0].contains(id), "shown escaped: {errs:?}");
    }
    let config = load(json!({"task_config": {"labourers": {"ünïcode labourer ✓": {"command": "true"}}}}));
    assert!(config.labourer("ünïcode labourer ✓").is_some());
}

#[test]
fn metric_sources() {
    let c = load(process(json!({"health_metrics": {
        "a": {"details": {"url": "http://127.0.0.1:1/h", "pointer": "/cpu"}, "feelings": {"4": 10}, "feeling_comparison_operator": "<"},
        "b": {"details": {"prometheus": "http://127.0.0.1:9090", "query": "up"}, "feelings": {"4": 1}, "feeling_comparison_operator": ">=", "failure_status": 2},
        "c": {"details": {"command": "echo 5"}, "feelings": {"4": 10}, "feeling_comparison_operator": "le"}
    }})));
    let m = &c.labourers[0].health_metrics;
    assert!(matches!(&m[0].details, MetricDetails::HttpJson { pointer, .. } if pointer == "/cpu"));
    assert!(matches!(&m[1].details, MetricDetails::Prometheus { query, .. } if query == "up"));
    assert_eq!(m[1].failure_status, Some(Moderate));
    assert!(matches!(&m[2].details, MetricDetails::Command { command, .. } if command == &["sh", "-c", "echo 5"]));
    assert_ne!(m[0].details.cache_key(), m[1].details.cache_key());

    let errs = errors(process(
        json!({"health_metrics": {"x": {"details": {"foo": 1}, "feelings": {"4": 1}, "feeling_comparison_operator": "<"}}}),
    ));
    assert!(errs[0].contains("unknown metric source"), "{errs:?}");
    let errs = errors(process(
        json!({"health_metrics": {"x": {"details": {"Namespace": "AWS/RDS", "MetricName": "CPU", "Statistics": ["p99"]}, "feelings": {"4": 1}, "feeling_comparison_operator": "<"}}}),
    ));
    assert!(errs[0].contains("Statistics") && errs[0].contains("p99"), "{errs:?}");
}

#[test]
fn unknown_keys_warn_and_python_keys_do_not() {
    let mut v = process(json!({"colour": "blue", "start": 5}));
    v["init_clients"] = json!(["Task"]);
    v["tpyo"] = json!(1);
    v["labourers"] = json!({});
    let c = load(v);
    let w = c.warnings.join("\n");
    assert!(w.contains("`task_config.labourers.w.colour`"), "{w}");
    assert!(w.contains("`tpyo`"), "{w}");
    assert!(w.contains("`task_config.labourers.w.start` is computed"), "{w}");
    assert!(w.contains("`labourers` at the top level"), "{w}");
    assert!(!w.contains("init_clients"), "{w}");
}

#[test]
fn a_non_object_layer_is_an_error() {
    let err = Config::from_layers(&[json!([1])], Essential::Orchestrator).expect_err("rejected");
    assert!(err.to_string().contains("must be a JSON object"), "{err}");
}

#[test]
fn scheduler_keys_are_validated_up_front() {
    let c = load(json!({"time_zone": "+05:30", "job_schema": {"chunkable_attrs": [["section", {}]]}}));
    assert_eq!(c.utc_offset_secs, 5 * 3600 + 1800);
    assert_eq!(load(json!({"time_zone": "UTC"})).utc_offset_secs, 0);
    assert_eq!(load(json!({"time_zone": "-08:00"})).utc_offset_secs, -8 * 3600);
    for bad in [
        "Europe/Paris",
        "+-1:-5",
        "+1:30",
        "+05:+3",
        "+15:00",
        "+05:60",
        "+٠٥:٣٠",
    ] {
        let errs = errors(json!({"time_zone": bad}));
        assert!(
            errs[0].contains("`time_zone`") && errs[0].contains(bad),
            "{bad}: {errs:?}"
        );
    }
    let errs = errors(json!({"job_schema_variants": {"daily": {"chunkable_attrs": ["stores"]}}}));
    assert!(
        errs[0].contains("job_schema_variants.daily") && errs[0].contains("`stores`"),
        "{errs:?}"
    );
}

/// Issue #8 (1, 2): values that passed validation and then panicked in a timer or wrapped a greenfield around.
#[test]
fn absurd_numbers_are_refused_naming_the_key() {
    let cases: &[(Value, &str)] = &[
        (process(json!({"timeout": 1e300})), "task_config.labourers.w.timeout"),
        (
            json!({"task_config": {"labourers": {"w": {"url": "http://127.0.0.1:1/", "timeout": 1e300}}}}),
            "task_config.labourers.w.timeout",
        ),
        (
            process(json!({"health_metrics": {"m": {
                "details": {"command": ["true"], "timeout": 1e300},
                "feelings": {"3": 50, "4": 25}, "feeling_comparison_operator": "<="}}})),
            "task_config.labourers.w.health_metrics.m.details.timeout",
        ),
        (
            json!({"daemon": {"orchestrator_interval": 1e300}}),
            "daemon.orchestrator_interval",
        ),
        (
            json!({"daemon": {"scavenger_interval": 1e300}}),
            "daemon.scavenger_interval",
        ),
        (json!({"daemon": {"shutdown_grace": 1e300}}), "daemon.shutdown_grace"),
        (
            json!({"task_config": {"greenfield_invocation_delta": 9_223_372_036_854_775_000_i64}}),
            "task_config.greenfield_invocation_delta",
        ),
        (
            json!({"greenfield_task_step": 9_223_372_036_854_775_000_i64}),
            "greenfield_task_step",
        ),
        (process(json!({"duration": 1e18})), "task_config.labourers.w.duration"),
        (
            process(json!({"cooldown": 9_000_000_000_000_000_000_u64})),
            "task_config.labourers.w.cooldown",
        ),
        (
            process(json!({"max_duration": 1e15})),
            "task_config.labourers.w.max_duration",
        ),
        (
            process(json!({"result_limit": 1e15})),
            "task_config.labourers.w.result_limit",
        ),
        (json!({"invocation_concurrency": 1e15}), "invocation_concurrency"),
        (json!({"retry_tasks_limit": 1e15}), "retry_tasks_limit"),
        (json!({"schedule_batch_size": 1e15}), "schedule_batch_size"),
        (json!({"shutdown_period": 1e15}), "shutdown_period"),
    ];
    for (config, key) in cases {
        let errs = errors(config.clone());
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("`{key}`: must be at most"))),
            "{key}: {errs:?}"
        );
    }
}

#[test]
fn the_running_window_must_stay_below_the_invocation_delta() {
    let errs = errors(json!({"task_config": {
        "greenfield_invocation_delta": 1000,
        "labourers": {"w": {"command": ["true"], "duration": 900, "cooldown": 100}}}}));
    assert!(
        errs.iter().any(|e| e.starts_with("`task_config.labourers.w`: `duration` + `cooldown` (900 + 100 = 1000 s) must be less than `greenfield_invocation_delta` (1000 s)")),
        "{errs:?}"
    );
    let c = load(json!({"task_config": {
        "greenfield_invocation_delta": 1001,
        "labourers": {"w": {"command": ["true"], "duration": 900, "cooldown": 100}}}}));
    assert_eq!(c.greenfield.delta, 1001);
}

#[test]
fn where_a_stored_task_is() {
    use crate::task::{Place, StoredTask, Task, Whereabouts};
    let c = load(process(json!({"duration": 60, "cooldown": 30})));
    let now = Time::from_secs(1_700_000_000);
    let invoked = now.secs() + c.greenfield.delta;
    let task = |greenfield: i64, completed: bool, place: Place| StoredTask {
        task: Task {
            task_id: "t".into(),
            labourer_id: "w".into(),
            created_at: 0.0,
            greenfield: crate::Greenfield::new(greenfield),
            attempts: 1,
            payload: "{}".into(),
            completed_at: completed.then_some(now.secs()),
            failed_attempts: 0,
            refunded_attempts: 0,
            stats: Map::new(),
            result: Map::new(),
        },
        place,
    };
    let table = [
        (task(2000, false, Place::Live), Whereabouts::Queued),
        (task(invoked, false, Place::Live), Whereabouts::Running),
        (task(invoked - 90, false, Place::Live), Whereabouts::Expired),
        (task(invoked, true, Place::Live), Whereabouts::Completed),
        (
            task(2000, false, Place::Retry { desired_launch_time: 0 }),
            Whereabouts::Retry,
        ),
        (
            task(
                invoked,
                true,
                Place::Closed {
                    closed_at: 0,
                    completed: true,
                },
            ),
            Whereabouts::Closed,
        ),
        (
            task(
                invoked,
                false,
                Place::Closed {
                    closed_at: 0,
                    completed: false,
                },
            ),
            Whereabouts::Dead,
        ),
    ];
    for (t, want) in table {
        assert_eq!(c.state_of(&t, now), want, "{t:?}");
    }
    // A labourer the config does not know is read with the default window (900 + 300 s).
    let stranger = c.markers_for("gone", now);
    assert_eq!(stranger.expired.get(), invoked - 1200);
    assert_eq!(Whereabouts::Dead.as_str(), "dead");
}

/// Issue #9.3: the sections other components use are validated here once, with key paths; nothing re-reads raw JSON.
#[test]
fn table_names_queue_and_job_schemas_are_typed_sections() {
    let c = load(json!({
        "task_config": {
            "dynamo_db_config": {"table_name": "prod_tasks", "row_mapper": {"task_id": "S"}},
            "sosw_retry_tasks_table": "prod_retry"
        },
        "meta_handler_config": {"dynamo_db_config": {"table_name": "prod_meta"}},
        "labourers_table": "prod_labourers",
        "queue_bucket": "jobs-bucket", "s3_prefix": "/a/b/",
        "job_schema": {"chunkable_attrs": [["store", {}]]},
        "job_schema_variants": {"daily": {"chunkable_attrs": ["section", "store"]}}
    }));
    assert_eq!(c.tables.tasks.as_deref(), Some("prod_tasks"));
    assert_eq!(c.tables.retry.as_deref(), Some("prod_retry"));
    assert_eq!(c.tables.meta.as_deref(), Some("prod_meta"));
    assert_eq!(c.tables.labourers.as_deref(), Some("prod_labourers"));
    assert_eq!(c.tables.closed, None, "the default name");
    assert_eq!(
        (c.queue.bucket.as_str(), c.queue.prefix.as_str()),
        ("jobs-bucket", "a/b")
    );
    assert_eq!(c.queue.file, "tasks_queue.txt");
    let names = |s: crate::schedule::Schema| s.chunkable_attrs;
    assert_eq!(names(c.job_schemas.schema(None).expect("default")), vec!["store"]);
    assert_eq!(
        names(c.job_schemas.schema(Some("daily")).expect("variant")),
        vec!["section", "store"]
    );
    assert!(c.job_schemas.schema(Some("weekly")).is_err());
    // A table name that is not a string is an error naming its key, not a silent fallback to the default.
    let errs = errors(json!({"task_config": {"sosw_closed_tasks_table": 42}}));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("`task_config.sosw_closed_tasks_table`: expected a non-empty string")),
        "{errs:?}"
    );
    let errs = errors(json!({"queue_bucket": ""}));
    assert!(errs.iter().any(|e| e.starts_with("`queue_bucket`")), "{errs:?}");
}

#[test]
fn flow_control_keys_are_read_and_checked() {
    let c = load(process(json!({
        "adaptive": {"min": 2, "increase": 4, "decrease": 0.7, "interval": 2.5, "failure_ratio": 0.5, "slowdown": 3},
        "max_invocations_per_minute": 120,
        "retry_delays": [20, 300, 1800]
    })));
    let f = &c.labourers[0].flow;
    assert_eq!(
        f.adaptive,
        Some(crate::flow::Adaptive {
            min: 2,
            increase: 4,
            decrease: 0.7,
            interval_ms: 2500,
            failure_ratio: 0.5,
            slowdown: 3.0,
        })
    );
    assert_eq!(
        f.rate,
        Some(crate::flow::RateLimit {
            per_second: 2.0,
            burst: 2
        })
    );
    assert_eq!(f.retry_delays.as_deref(), Some(&[20, 300, 1800][..]));
    assert_eq!(c.dispatch_lease, 120);
    let plain = load(process(json!({"adaptive": true, "max_invocations_per_second": 0.5})));
    assert_eq!(plain.labourers[0].flow.adaptive, Some(crate::flow::Adaptive::default()));
    assert_eq!(plain.labourers[0].flow.rate.map(|r| r.burst), Some(1));
    assert_eq!(
        load(process(json!({}))).labourers[0].flow,
        crate::flow::FlowConfig::default()
    );

    let cases: &[(Value, &str)] = &[
        (json!({"adaptive": 3}), "`task_config.labourers.w.adaptive`: expected true, false or an object"),
        (json!({"adaptive": {"decrease": 1.5}}), "`task_config.labourers.w.adaptive.decrease`: must be between 0 and 1"),
        (json!({"adaptive": {"min": 0}}), "`task_config.labourers.w.adaptive.min`: must be at least 1, got 0"),
        (json!({"adaptive": {"increase": 0}}), "`task_config.labourers.w.adaptive.increase`: must be at least 1, got 0"),
        (json!({"adaptive": {"interval": 1e300}}), "`task_config.labourers.w.adaptive.interval`: must be at most"),
        (json!({"adaptive": {"failure_ratio": 1.5}}), "`task_config.labourers.w.adaptive.failure_ratio`: must be between 0 and 1"),
        (json!({"adaptive": {"failure_ratio": -0.1}}), "`task_config.labourers.w.adaptive.failure_ratio`: must be between 0 and 1"),
        (json!({"adaptive": {"slowdown": 1}}), "`task_config.labourers.w.adaptive.slowdown`: must be more than 1: the limit is lowered when tasks take this many times their usual duration, got 1"),
        (json!({"adaptive": {"slowdown": "x"}}), "`task_config.labourers.w.adaptive.slowdown`"),
        (json!({"max_invocations_per_second": 0}), "`task_config.labourers.w.max_invocations_per_second`: must be a positive number"),
        (json!({"max_invocations_per_second": 1e300}), "`task_config.labourers.w.max_invocations_per_second`: must be a positive number of at most 1000000, got 1e+300"),
        (json!({"max_invocations_per_second": 1, "max_invocations_per_minute": 60}), "not both"),
        (json!({"max_invocations_per_minute": 1e-300}), "takes more than 10 years to refill"),
        (json!({"max_invocations_per_second": 1e-8, "rate_burst": 10}), "takes more than 10 years to refill"),
        (json!({"rate_burst": 5}), "`task_config.labourers.w.rate_burst`: has no effect without"),
        (json!({"retry_delays": []}), "`task_config.labourers.w.retry_delays`: expected at least one delay"),
        (json!({"retry_delays": [10, -1]}), "`task_config.labourers.w.retry_delays[1]`: expected whole seconds between 0 and 315576000, got -1"),
        (json!({"retry_delays": "20,300"}), "`task_config.labourers.w.retry_delays`: expected a list of seconds"),
    ];
    for (extra, want) in cases {
        let got = errors(process(extra.clone()));
        assert!(got.iter().any(|e| e.contains(want)), "{extra}: {got:?}");
    }
    let mut short = process(json!({}));
    short["dispatch_lease"] = json!(30);
    assert!(errors(short)[0].starts_with("`dispatch_lease`: must be at least twice `invocation_timeout` (30 s)"));
    let mut breaker = process(json!({}));
    breaker["circuit_breaker"] = json!({"throttle_hold": -1});
    assert!(errors(breaker)[0].contains("`circuit_breaker.throttle_hold`: must be at least 0"));
}

#[test]
fn the_server_section_holds_hashes_of_scoped_tokens() {
    use super::{token_sha256, Scope, ServerConfig};
    assert_eq!(
        load(json!({})).server,
        None,
        "no section: nothing is served unless `--listen` asks"
    );
    assert_eq!(load(json!({"server": {}})).server, Some(ServerConfig::default()));
    let hash = |t: &str| token_sha256(t).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let c = load(json!({"server": {
        "listen": "0.0.0.0:9000",
        "max_body": 4096,
        "tokens": [
            {"name": "grafana", "scope": "read", "sha256": hash("r")},
            {"name": "ops", "scope": "admin", "sha256": hash("a").to_uppercase()}
        ]
    }}));
    let s = c.server.expect("server");
    assert_eq!(s.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(s.max_body, 4096);
    assert_eq!(
        s.tokens
            .iter()
            .map(|t| (t.name.as_str(), t.scope, t.sha256))
            .collect::<Vec<_>>(),
        [
            ("grafana", Scope::Read, token_sha256("r")),
            ("ops", Scope::Admin, token_sha256("a"))
        ]
    );
    assert!(Scope::Admin > Scope::Write && Scope::Write > Scope::Read);

    let h = hash("x");
    let cases: &[(Value, &str)] = &[
        (
            json!({"server": {"listen": "localhost"}}),
            "`server.listen`: expected an address such as",
        ),
        (json!({"server": {"max_body": 10}}), "`server.max_body`"),
        (json!({"server": {"max_body": 1e12}}), "`server.max_body`"),
        (
            json!({"server": {"tokens": "secret"}}),
            "`server.tokens`: expected a list",
        ),
        (
            json!({"server": {"tokens": [7]}}),
            "`server.tokens[0]`: expected an object",
        ),
        (
            json!({"server": {"tokens": [{"name": "a", "scope": "root", "sha256": h}]}}),
            "`server.tokens[0].scope`: expected \"read\", \"write\" or \"admin\", got \"root\"",
        ),
        (
            json!({"server": {"tokens": [{"name": "a", "scope": "read", "sha256": "s3cret"}]}}),
            "`server.tokens[0].sha256`: expected the token's SHA-256 as 64 hex digits",
        ),
        (
            json!({"server": {"tokens": [{"name": "a", "scope": "read", "sha256": "é".repeat(32)}]}}),
            "`server.tokens[0].sha256`",
        ),
        (
            json!({"server": {"tokens": [{"scope": "read", "sha256": h}]}}),
            "`server.tokens[0].name`: is required",
        ),
        (
            json!({"server": {"tokens": [{"name": "a", "sha256": h}]}}),
            "`server.tokens[0].scope`: is required",
        ),
        (
            json!({"server": {"tokens": [{"name": "a", "scope": "read", "sha256": h}, {"name": "a", "scope": "read", "sha256": hash("y")}]}}),
            "`server.tokens[1].name`: `a` is the name of another token",
        ),
        (
            json!({"server": {"tokens": [{"name": "a", "scope": "read", "sha256": h}, {"name": "b", "scope": "admin", "sha256": h}]}}),
            "`server.tokens[1].sha256`: is the hash of another token",
        ),
    ];
    for (v, want) in cases {
        let errs = errors(v.clone());
        assert!(errs.iter().any(|e| e.starts_with(want)), "{v}: {errs:?}");
    }
    let c = load(json!({"server": {"listne": "1.2.3.4:1"}}));
    assert!(
        c.warnings.iter().any(|w| w.contains("server.listne")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn an_https_labourer_may_name_its_ca_file() {
    let c = load(
        json!({"task_config": {"labourers": {"w": {"url": "https://worker.internal/run", "ca_file": "certs/ca.pem"}}}}),
    );
    match &c.labourers[0].invoker {
        super::InvokerSpec::Http(spec) => assert_eq!(spec.ca_file.as_deref(), Some("certs/ca.pem")),
        other => panic!("{other:?}"),
    }
    let errs = errors(json!({"task_config": {"labourers": {"w": {"url": "https://w/run", "ca_file": 3}}}}));
    assert!(
        errs.iter().any(|e| e.starts_with("`task_config.labourers.w.ca_file`")),
        "{errs:?}"
    );
}

#[test]
fn the_aws_services_a_config_uses() {
    let cloudwatch = json!({"details": {"Namespace": "AWS/RDS", "MetricName": "CPUUtilization"}, "feelings": {"4": 90}, "feeling_comparison_operator": ">="});
    let command = json!({"details": {"command": ["true"]}, "feelings": {"4": 90}, "feeling_comparison_operator": ">="});
    let none = AwsServices::default();
    // (config, the services it uses)
    let table = [
        (json!({"task_config": {"labourers": {"p": {"command": "true"}}}}), none),
        (
            json!({"task_config": {"labourers": {"h": {"url": "http://127.0.0.1:1/x", "health_metrics": {"c": command}}}}}),
            none,
        ),
        (
            json!({"task_config": {"labourers": {"p": {"command": "true"}, "l": {"arn": "arn:aws:lambda:us-east-1:1:function:f"}}}}),
            AwsServices { lambda: true, ..none },
        ),
        (
            json!({"task_config": {"labourers": {"p": {"command": "true", "health_metrics": {"c": cloudwatch}}}}}),
            AwsServices {
                cloudwatch: true,
                ..none
            },
        ),
        (
            json!({"task_config": {"labourers": {"p": {"command": "true"}}}, "sns_config": {"recipient": "arn:aws:sns:us-east-1:1:t"}}),
            AwsServices { sns: true, ..none },
        ),
    ];
    for (config, want) in table {
        let got = load(config.clone()).aws_services();
        assert_eq!(got, want, "{config}");
        assert_eq!(got.any(), want != none);
    }
}

#[test]
fn the_labourers_reporting_by_exit() {
    let config = load(json!({"task_config": {"labourers": {
        "a": {"command": "true"},
        "b": {"command": "true", "report": "self"},
        "c": {"command": "true", "report": "exit_code"},
        "h": {"url": "http://127.0.0.1:1/x"},
        "l": {"arn": "arn:aws:lambda:us-east-1:1:function:f"}
    }}}));
    let mut got = config.labourers_reporting_by_exit();
    got.sort_unstable();
    assert_eq!(got, ["a", "c"]);
}

#[test]
fn loopback_hosts_and_urls() {
    for (host, local) in [
        ("127.0.0.1:8787", true),
        ("localhost", true),
        ("LOCALHOST:80", true),
        ("[::1]:8787", true),
        ("127.0.0.2", true),
        ("http://127.0.0.1:5599", true),
        ("http://localhost:8000/x?y", true),
        ("http://[::1]", true),
        ("example.com", false),
        ("evil.localhost.example:80", false),
        ("https://dynamodb.us-east-1.amazonaws.com", false),
        ("http://10.0.0.5:8000", false),
        ("", false),
    ] {
        assert_eq!(is_loopback_host(host), local, "{host}");
    }
}
