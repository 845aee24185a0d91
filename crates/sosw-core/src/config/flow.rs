//! A labourer's flow-control keys: `adaptive`, `max_invocations_per_second` / `_per_minute`, `rate_burst`,
//! `retry_delays` ([`crate::flow`]).

use super::reader::{join, show, Reader};
use crate::flow::{Adaptive, FlowConfig, RateLimit};
use crate::time::MAX_SECONDS;
use serde_json::{Map, Value};

/// The highest rate a labourer may be given: beyond it the limit means nothing (the rate is never reached).
const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;

pub(super) fn read_flow(r: &mut Reader, lc: &Map<String, Value>, path: &str) -> FlowConfig {
    FlowConfig {
        adaptive: read_adaptive(r, lc, path),
        rate: read_rate(r, lc, path),
        retry_delays: read_retry_delays(r, lc, path),
    }
}

/// `"adaptive": true` (the defaults) or
/// `{"min": 1, "increase": 1, "decrease": 0.5, "interval": 1, "failure_ratio": 0.2, "slowdown": 2}`.
fn read_adaptive(r: &mut Reader, lc: &Map<String, Value>, path: &str) -> Option<Adaptive> {
    let apath = join(path, "adaptive");
    let d = Adaptive::default();
    let obj = match lc.get("adaptive")? {
        Value::Null | Value::Bool(false) => return None,
        Value::Bool(true) => return Some(d),
        Value::Object(obj) => obj,
        other => {
            r.error(
                apath,
                format!("expected true, false or an object such as {{\"min\": 1, \"increase\": 1, \"decrease\": 0.5}}, got {}", show(other)),
            );
            return None;
        }
    };
    r.unknown_keys(
        obj,
        &apath,
        &["min", "increase", "decrease", "interval", "failure_ratio", "slowdown"],
        |_| false,
    );
    // At least 1: a limit of 0 would never see another invocation to learn from.
    let min = r.u32(obj, "min", &apath, 1).unwrap_or(d.min);
    let increase = r.u32(obj, "increase", &apath, 1).unwrap_or(d.increase);
    let decrease = match r.number(obj, "decrease", &apath) {
        None => d.decrease,
        Some(f) if f > 0.0 && f < 1.0 => f,
        Some(_) => {
            r.error(
                join(&apath, "decrease"),
                format!(
                    "must be between 0 and 1 (exclusive): the limit is multiplied by it after trouble, got {}",
                    show(&obj["decrease"])
                ),
            );
            d.decrease
        }
    };
    let interval_ms = r
        .positive_secs(obj, "interval", &apath)
        .map_or(d.interval_ms, |secs| (secs * 1000.0).round() as i64);
    let failure_ratio = match r.number(obj, "failure_ratio", &apath) {
        None => d.failure_ratio,
        Some(f) if (0.0..=1.0).contains(&f) => f,
        Some(_) => {
            r.error(
                join(&apath, "failure_ratio"),
                format!(
                    "must be between 0 and 1: the share of failure reports above which the limit is lowered, got {}",
                    show(&obj["failure_ratio"])
                ),
            );
            d.failure_ratio
        }
    };
    let slowdown = match r.number(obj, "slowdown", &apath) {
        None => d.slowdown,
        Some(f) if f > 1.0 => f,
        Some(_) => {
            r.error(
                join(&apath, "slowdown"),
                format!(
                    "must be more than 1: the limit is lowered when tasks take this many times their usual \
                     duration, got {}",
                    show(&obj["slowdown"])
                ),
            );
            d.slowdown
        }
    };
    Some(Adaptive {
        min,
        increase,
        decrease,
        interval_ms,
        failure_ratio,
        slowdown,
    })
}

fn read_rate(r: &mut Reader, lc: &Map<String, Value>, path: &str) -> Option<RateLimit> {
    let mut per = |key: &str, scale: f64| {
        let f = r.number(lc, key, path)?;
        if f > 0.0 && f <= MAX_RATE_PER_SECOND * scale {
            Some(f / scale)
        } else {
            let got = lc.get(key).map(show).unwrap_or_default();
            r.error(
                join(path, key),
                format!(
                    "must be a positive number of at most {}, got {got}",
                    MAX_RATE_PER_SECOND * scale
                ),
            );
            None
        }
    };
    let per_second = per("max_invocations_per_second", 1.0);
    let per_minute = per("max_invocations_per_minute", 60.0);
    let burst = r.u32(lc, "rate_burst", path, 1);
    let per_second = match (per_second, per_minute) {
        (Some(_), Some(_)) => {
            r.error(
                path,
                "give `max_invocations_per_second` or `max_invocations_per_minute`, not both",
            );
            return None;
        }
        (Some(rate), None) | (None, Some(rate)) => rate,
        (None, None) => {
            if burst.is_some() {
                r.error(
                    join(path, "rate_burst"),
                    "has no effect without `max_invocations_per_second` or `max_invocations_per_minute`",
                );
            }
            return None;
        }
    };
    // By default, a second's worth (at least one).
    let burst = burst.unwrap_or_else(|| per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
    // A bucket that takes longer than any timer to refill would let one invocation through per pass, forever.
    if f64::from(burst) / per_second > MAX_SECONDS as f64 {
        r.error(
            path,
            format!(
                "a rate of {per_second} invocations per second with a burst of {burst} takes more than 10 years to \
                 refill; give at least {:e} per second",
                f64::from(burst) / MAX_SECONDS as f64
            ),
        );
        return None;
    }
    Some(RateLimit { per_second, burst })
}

/// `[20, 300, 1800, 7200]`: seconds before each retry, the last repeating.
fn read_retry_delays(r: &mut Reader, lc: &Map<String, Value>, path: &str) -> Option<Vec<i64>> {
    let key = join(path, "retry_delays");
    match lc.get("retry_delays")? {
        Value::Null => None,
        Value::Array(items) if items.is_empty() => {
            r.error(key, "expected at least one delay (seconds before the first retry)");
            None
        }
        Value::Array(items) if items.len() > 1000 => {
            r.error(key, format!("expected at most 1000 delays, got {}", items.len()));
            None
        }
        Value::Array(items) => {
            let mut delays = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                match v.as_i64().filter(|d| (0..=MAX_SECONDS).contains(d)) {
                    Some(d) => delays.push(d),
                    None => {
                        r.error(
                            format!("{key}[{i}]"),
                            format!("expected whole seconds between 0 and {MAX_SECONDS}, got {}", show(v)),
                        );
                        return None;
                    }
                }
            }
            Some(delays)
        }
        other => {
            r.error(
                key,
                format!(
                    "expected a list of seconds such as [20, 300, 1800], got {}",
                    show(other)
                ),
            );
            None
        }
    }
}
