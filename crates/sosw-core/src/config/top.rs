//! The top level of a config: its known keys, and the small sections read straight from it (the circuit breaker,
//! the eco-status coefficients, the time zone), with the bounds of per-pass counts. Used by [`super::Config`]'s
//! reader; each section with more to it has a module of its own (labourers, metrics, flow, server, tables).

use super::metrics::status_key;
use super::reader::{join, show, Reader};
use crate::breaker::BreakerConfig;
use crate::decide::Coefficients;
use crate::time::MAX_SECONDS;
use serde_json::{Map, Value};

/// The largest count a per-pass or per-call setting may have (`retry_tasks_limit`, `invocation_concurrency`,
/// `schedule_batch_size`): beyond it a value only exhausts memory.
pub(super) const MAX_PAGE: i64 = 1_000_000;

/// The most bytes of a process worker's stdout kept as its result (`result_limit`): 64 MiB.
pub(super) const MAX_RESULT_LIMIT: i64 = 64 * 1024 * 1024;

pub(super) fn read_breaker(r: &mut Reader, top: &Map<String, Value>) -> BreakerConfig {
    let d = BreakerConfig::default();
    let Some(obj) = r.object(top, "circuit_breaker", "") else {
        return d;
    };
    let path = "circuit_breaker";
    r.unknown_keys(
        obj,
        path,
        &["initial_hold", "max_hold", "max_dead_in_row", "throttle_hold"],
        |_| false,
    );
    let initial_hold = r
        .int_in(obj, "initial_hold", path, 1, MAX_SECONDS)
        .unwrap_or(d.initial_hold);
    let max_hold = r
        .int_in(obj, "max_hold", path, 1, MAX_SECONDS)
        .unwrap_or(d.max_hold.max(initial_hold));
    if max_hold < initial_hold {
        r.error(
            join(path, "max_hold"),
            format!("must be at least `initial_hold` ({initial_hold}), got {max_hold}"),
        );
    }
    BreakerConfig {
        initial_hold,
        max_hold,
        max_dead_in_row: r.u32(obj, "max_dead_in_row", path, 1).unwrap_or(d.max_dead_in_row),
        throttle_hold: r
            .int_in(obj, "throttle_hold", path, 0, MAX_SECONDS)
            .unwrap_or(d.throttle_hold),
    }
}

/// Keys of the top level that sosw-rs reads, or that Python sosw's essentials read and sosw-rs accepts.
pub(super) const TOP_KEYS: &[&str] = &[
    "store",
    "task_config",
    "invocation_number_coefficient",
    "retry_tasks_limit",
    "retry_backoff",
    "invocation_concurrency",
    "invocation_timeout",
    "daemon",
    "notify",
    "sns_config",
    "meta_handler_config",
    "ecology_config",
    "labourers",
    "max_attempts",
    "max_simultaneous_invocations",
    "greenfield_invocation_delta",
    "greenfield_task_step",
    // Python sosw keys that mean nothing to the embedded engine but keep a shared config valid.
    "init_clients",
    "default_simultaneous_invocations",
    "dynamo_db_config",
    "job_schema",
    "job_schema_variants",
    "queue_bucket",
    "s3_prefix",
    "queue_file",
    "shutdown_period",
    "schedule_batch_size",
    "schedule_max_tasks",
    "rows_to_process",
    "task_operational_overhead_for_ddb",
    "custom_period_patterns",
    "siblings_config",
    "lifetime_stats_params",
    "dead_sns_topic",
    "sosw_worker_assistant_lambda",
    "scheduler",
    "time_zone",
    "jobs_table",
    "labourers_table",
    "circuit_breaker",
    "dispatch_lease",
    "server",
];

/// `UTC`, `Z`, or `±HH:MM` → seconds east of UTC.
pub(super) fn parse_utc_offset(tz: &str) -> Option<i64> {
    let tz = tz.trim();
    if tz.eq_ignore_ascii_case("utc") || tz == "Z" {
        return Some(0);
    }
    let (sign, rest) = match tz.as_bytes().first()? {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

pub(super) const TASK_CONFIG_KEYS: &[&str] = &[
    "labourers",
    "max_attempts",
    "max_simultaneous_invocations",
    "greenfield_invocation_delta",
    "greenfield_task_step",
    "ecology_config",
    "dynamo_db_config",
    "sosw_closed_tasks_table",
    "sosw_closed_tasks_labourer_status_index",
    "sosw_retry_tasks_table",
    "sosw_retry_tasks_greenfield_index",
    "init_clients",
    "max_closed_to_analyse_for_duration",
    "meta_handler_config",
];

pub(super) fn read_coefficients(r: &mut Reader, top: &Map<String, Value>) -> Coefficients {
    let mut c = Coefficients::default();
    let Some(obj) = r.object(top, "invocation_number_coefficient", "") else {
        return c;
    };
    for (k, v) in obj {
        let path = join("invocation_number_coefficient", k);
        let Some(status) = status_key(k) else {
            r.error(path, format!("keys are eco statuses 0..4, got \"{k}\""));
            continue;
        };
        match v.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => c.0[status as usize] = f,
            _ => r.error(path, format!("expected a non-negative number, got {}", show(v))),
        }
    }
    c
}
