//! `task_config.labourers.<id>`: a labourer, how it is invoked (process, HTTP, Lambda) and its timing.

use super::metrics::read_metric;
use super::reader::{join, Reader};
use super::top::MAX_RESULT_LIMIT;
use super::*;

/// Whether a process worker's exit reports the task, or the worker reports itself (`sosw complete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportMode {
    /// Exit status 0 reports completed (stdout, if JSON, is the result), anything else failed.
    ExitCode,
    /// The worker calls `sosw complete` / `sosw fail`; its exit status is only logged.
    #[serde(rename = "self")]
    SelfReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub command: Vec<String>,
    pub report: ReportMode,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Bytes of stdout kept as the result.
    pub result_limit: usize,
    /// The worker is killed (and reported failed) after this many seconds.
    pub timeout_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpMode {
    /// 2xx means accepted; the worker reports later.
    Async,
    /// 2xx means completed; the response body (if a JSON object) is the result.
    Sync,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpSpec {
    pub url: String,
    pub mode: HttpMode,
    pub timeout_secs: f64,
    pub headers: Vec<(String, String)>,
    /// `ca_file`: a PEM file of the CA certificates an `https://` worker's certificate is checked against, instead
    /// of the system's (a private CA); relative to the config's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// How a labourer is invoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "invoker")]
pub enum InvokerSpec {
    Process(ProcessSpec),
    Http(HttpSpec),
    /// An AWS Lambda function (`arn`), invoked asynchronously.
    Lambda {
        arn: String,
    },
}

/// A labourer (a worker function) with every setting resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labourer {
    pub id: String,
    pub invoker: InvokerSpec,
    pub max_simultaneous_invocations: u32,
    pub max_attempts: u32,
    pub duration: i64,
    pub cooldown: i64,
    /// The longest a worker may run; the base of the retry delay.
    pub max_duration: i64,
    pub health_metrics: Vec<HealthMetric>,
    /// Adaptive concurrency, the rate limit and the retry delay table ([`crate::flow`]).
    pub flow: FlowConfig,
    /// Seconds a heartbeat keeps a task running (`heartbeat_timeout`); without it, a heartbeat grants the whole
    /// window again (`duration + cooldown`).
    pub heartbeat_timeout: Option<i64>,
}

impl Labourer {
    pub fn markers(&self, now: Time, delta: i64) -> Markers {
        Markers::new(now, delta, self.duration, self.cooldown)
    }

    /// How this labourer's tasks are retried (`retry_delays`, or `retry_backoff` over `max_duration`).
    pub fn retry_policy(&self, backoff: crate::decide::Backoff) -> crate::decide::RetryPolicy<'_> {
        crate::decide::RetryPolicy {
            max_attempts: self.max_attempts,
            max_duration: self.max_duration,
            backoff,
            delays: self.flow.retry_delays.as_deref(),
        }
    }

    /// How long the Orchestrator waits for one invocation of this labourer: `invocation_timeout`, or an HTTP
    /// labourer's own timeout + 1 s when that is longer (a sync worker answers when done).
    pub fn invocation_deadline_secs(&self, invocation_timeout: f64) -> f64 {
        match &self.invoker {
            InvokerSpec::Http(h) => invocation_timeout.max(h.timeout_secs + 1.0),
            InvokerSpec::Process(_) | InvokerSpec::Lambda { .. } => invocation_timeout,
        }
    }
}

/// A task invoked at `I = now + delta` counts as running until `I − (duration + cooldown)` and expired after; it
/// must leave the invoked range before it could be read as a queue position again (`g < now`), or it would be
/// invoked twice. So `duration + cooldown` must stay below `greenfield_invocation_delta`.
pub(super) fn check_window(r: &mut Reader, l: &Labourer, path: &str, delta: i64) {
    let window = l.duration.saturating_add(l.cooldown);
    if window >= delta {
        r.error(
            path,
            format!(
                "`duration` + `cooldown` ({} + {} = {window} s) must be less than `greenfield_invocation_delta` \
                 ({delta} s), or an invoked task would read as queued again and be invoked twice",
                l.duration, l.cooldown
            ),
        );
    }
}

pub(super) const LABOURER_KEYS: &[&str] = &[
    "arn",
    "command",
    "url",
    "invoker",
    "mode",
    "report",
    "env",
    "cwd",
    "result_limit",
    "timeout",
    "headers",
    "ca_file",
    "max_simultaneous_invocations",
    "health_metrics",
    "max_attempts",
    "max_duration",
    "duration",
    "cooldown",
    "adaptive",
    "max_invocations_per_second",
    "max_invocations_per_minute",
    "rate_burst",
    "retry_delays",
    "heartbeat_timeout",
];

/// Labourer attributes Python sosw computes at run time; a config value for them is ignored with a warning.
pub(super) const COMPUTED_LABOURER_KEYS: &[&str] = &["start", "invoked", "expired", "health", "average_duration", "id"];

pub(super) fn read_labourer(
    r: &mut Reader,
    id: &str,
    lc: &Map<String, Value>,
    path: &str,
    fallback_attempts: u32,
    default_max_inv: u32,
) -> Option<Labourer> {
    let errors_before = r.errors.len();
    if id.trim().is_empty() {
        r.error(path, "a labourer id must not be empty");
    } else if id.chars().any(char::is_control) {
        let escaped = id.escape_debug();
        r.error(
            format!("task_config.labourers.\"{escaped}\""),
            format!("a labourer id must not contain control characters (\"{escaped}\")"),
        );
    }
    r.unknown_keys(lc, path, LABOURER_KEYS, |k| COMPUTED_LABOURER_KEYS.contains(&k));
    for k in COMPUTED_LABOURER_KEYS {
        if lc.contains_key(*k) {
            r.warn(format!(
                "`{}` is computed at run time; the configured value is ignored",
                join(path, k)
            ));
        }
    }
    let duration = r
        .int_in(lc, "duration", path, 1, MAX_SECONDS)
        .unwrap_or(DEFAULT_DURATION);
    let cooldown = r
        .int_in(lc, "cooldown", path, 0, MAX_SECONDS)
        .unwrap_or(DEFAULT_COOLDOWN);
    let max_duration = r.int_in(lc, "max_duration", path, 1, MAX_SECONDS).unwrap_or(duration);
    let max_attempts = r.u32(lc, "max_attempts", path, 1).unwrap_or(fallback_attempts);
    let max_simultaneous_invocations = r
        .u32(lc, "max_simultaneous_invocations", path, 0)
        .unwrap_or(default_max_inv);
    let invoker = read_invoker(r, lc, path, max_duration);
    let mut health_metrics = Vec::new();
    if let Some(metrics) = r.object(lc, "health_metrics", path) {
        let mpath = join(path, "health_metrics");
        for (name, mv) in metrics {
            if let Some(m) = read_metric(r, name, mv, &join(&mpath, name)) {
                health_metrics.push(m);
            }
        }
    }
    let flow = super::flow::read_flow(r, lc, path);
    let heartbeat_timeout = r.int_in(lc, "heartbeat_timeout", path, 1, MAX_SECONDS);
    if r.errors.len() > errors_before {
        return None;
    }
    Some(Labourer {
        flow,
        heartbeat_timeout,
        id: id.to_string(),
        invoker: invoker?,
        max_simultaneous_invocations,
        max_attempts,
        duration,
        cooldown,
        max_duration,
        health_metrics,
    })
}

pub(super) fn read_invoker(
    r: &mut Reader,
    lc: &Map<String, Value>,
    path: &str,
    max_duration: i64,
) -> Option<InvokerSpec> {
    let explicit = r.string(lc, "invoker", path);
    let has = |k: &str| lc.get(k).is_some_and(|v| !v.is_null());
    let kind = match explicit.as_deref() {
        Some(k @ ("process" | "http" | "lambda")) => k,
        Some(other) => {
            r.error(
                join(path, "invoker"),
                format!("expected \"process\", \"http\" or \"lambda\", got \"{other}\""),
            );
            return None;
        }
        None => match (has("command"), has("url")) {
            (true, true) => {
                r.error(path, "give either `command` (a local process) or `url` (an HTTP worker), not both; or say which with `invoker`");
                return None;
            }
            (true, false) => "process",
            (false, true) => "http",
            (false, false) if has("arn") => "lambda",
            (false, false) => {
                r.error(path, "no way to invoke this labourer: give `command` (a local process), `url` (an HTTP worker) or `arn` (AWS Lambda)");
                return None;
            }
        },
    };
    match kind {
        "process" => {
            let Some(command) = r.command(lc, "command", path) else {
                if !has("command") {
                    r.error(join(path, "command"), "a process labourer needs `command`");
                }
                return None;
            };
            let report = match r.string(lc, "report", path).as_deref() {
                None | Some("exit_code") => ReportMode::ExitCode,
                Some("self") => ReportMode::SelfReport,
                Some(other) => {
                    r.error(
                        join(path, "report"),
                        format!("expected \"exit_code\" or \"self\", got \"{other}\""),
                    );
                    ReportMode::ExitCode
                }
            };
            Some(InvokerSpec::Process(ProcessSpec {
                command,
                report,
                env: r.string_map(lc, "env", path),
                cwd: r.string(lc, "cwd", path),
                result_limit: r
                    .int_in(lc, "result_limit", path, 0, MAX_RESULT_LIMIT)
                    .unwrap_or(64 * 1024) as usize,
                timeout_secs: r.positive_secs(lc, "timeout", path).unwrap_or(max_duration as f64),
            }))
        }
        "http" => {
            let Some(url) = r.string(lc, "url", path) else {
                if !has("url") {
                    r.error(join(path, "url"), "an http labourer needs `url`");
                }
                return None;
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                r.error(
                    join(path, "url"),
                    format!("expected an http:// or https:// URL, got \"{url}\""),
                );
            }
            let mode = match r.string(lc, "mode", path).as_deref() {
                None | Some("async") => HttpMode::Async,
                Some("sync") => HttpMode::Sync,
                Some(other) => {
                    r.error(
                        join(path, "mode"),
                        format!("expected \"async\" or \"sync\", got \"{other}\""),
                    );
                    HttpMode::Async
                }
            };
            let default_timeout = if mode == HttpMode::Sync {
                max_duration as f64
            } else {
                10.0
            };
            Some(InvokerSpec::Http(HttpSpec {
                url,
                mode,
                timeout_secs: r.positive_secs(lc, "timeout", path).unwrap_or(default_timeout),
                headers: r.string_map(lc, "headers", path),
                ca_file: r.string(lc, "ca_file", path),
            }))
        }
        _ => match r.string(lc, "arn", path) {
            Some(arn) => Some(InvokerSpec::Lambda { arn }),
            None => {
                r.error(join(path, "arn"), "a lambda labourer needs `arn`");
                None
            }
        },
    }
}
