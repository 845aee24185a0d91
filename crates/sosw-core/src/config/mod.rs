//! sosw configuration: the JSON shape of Python sosw (reference §4), layered, validated up front.
//!
//! A config is built from layers (files) merged with [`recursive_update`]: first every layer's essential-wide
//! keys, then every layer's section for the essential being run (`sosw_orchestrator_config`, …), which is how
//! Python sosw merges `sosw_essential_config` with `<function>_config`. Unlike Python, class defaults never
//! override the shared config (§7.25): defaults fill only what no layer says.
//!
//! Validation collects every problem at once; each error names the key path and the bad value. Keys sosw-rs does
//! not know produce warnings; keys that only mean something to Python sosw on AWS (table names, `init_clients`,
//! …) are accepted silently so one config can serve a mixed fleet. See `docs/config.md`.

mod flow;
mod labourers;
mod merge;
mod metrics;
mod reader;
mod sections;
mod server;
mod top;

pub use labourers::{HttpMode, HttpSpec, InvokerSpec, Labourer, ProcessSpec, ReportMode};
pub use merge::recursive_update;
pub use metrics::{CloudWatchMetric, HealthMetric, MetricDetails};
pub use sections::{JobSchemas, QueueSettings, TableNames};
pub use server::{is_loopback_host, token_sha256, Scope, ServerConfig, TokenConfig, DEFAULT_LISTEN, DEFAULT_MAX_BODY};

use labourers::{check_window, read_labourer};
use metrics::read_status;
use top::{parse_utc_offset, read_breaker, read_coefficients, MAX_PAGE, TASK_CONFIG_KEYS, TOP_KEYS};

use crate::breaker::BreakerConfig;
use crate::decide::{Backoff, Coefficients};
use crate::ecology::{Comparison, EcoStatus, Feelings};
use crate::flow::FlowConfig;
use crate::greenfield::{
    GreenfieldParams, Markers, DEFAULT_COOLDOWN, DEFAULT_DURATION, MAX_INVOCATION_DELTA, MAX_TASK_STEP,
};
use crate::time::{Time, MAX_SECONDS};
use reader::{join, show, Reader};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// One error in a config: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

/// Every error found in a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "invalid config ({n} error{})", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// The essentials; each reads its own section of the config on top of the shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Essential {
    Orchestrator,
    Scavenger,
    Scheduler,
    WorkerAssistant,
}

impl Essential {
    pub const ALL: [Essential; 4] = [
        Essential::Orchestrator,
        Essential::Scavenger,
        Essential::Scheduler,
        Essential::WorkerAssistant,
    ];

    /// The Lambda function name of the essential in Python sosw, used as the meta `author`.
    pub fn function_name(self) -> &'static str {
        match self {
            Essential::Orchestrator => "sosw_orchestrator",
            Essential::Scavenger => "sosw_scavenger",
            Essential::Scheduler => "sosw_scheduler",
            Essential::WorkerAssistant => "sosw_worker_assistant",
        }
    }

    /// The name of its config row / section: `<function>_config`.
    pub fn config_key(self) -> &'static str {
        match self {
            Essential::Orchestrator => "sosw_orchestrator_config",
            Essential::Scavenger => "sosw_scavenger_config",
            Essential::Scheduler => "sosw_scheduler_config",
            Essential::WorkerAssistant => "sosw_worker_assistant_config",
        }
    }
}

/// The daemon's loop (`sosw run`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DaemonConfig {
    pub orchestrator_interval: f64,
    pub scavenger_interval: f64,
    /// How long shutdown waits for running local workers to finish.
    pub shutdown_grace: f64,
}

/// Dead-task notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyConfig {
    /// `sns_config.recipient` (an SNS topic ARN, used by the AWS build).
    pub recipient: Option<String>,
    pub subject: String,
    /// `notify.command`: run with the subject as `$SOSW_SUBJECT` and the message on stdin.
    pub command: Option<Vec<String>>,
}

/// The validated config of one essential.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `store`: `sqlite:PATH` (the embedded default), or a backend a later build adds.
    pub store: Option<String>,
    pub greenfield: GreenfieldParams,
    /// In config order.
    pub labourers: Vec<Labourer>,
    pub coefficients: Coefficients,
    pub retry_tasks_limit: usize,
    pub retry_backoff: Backoff,
    pub metric_failure_status: EcoStatus,
    /// How many invocations run at once across all labourers in one pass.
    pub invocation_concurrency: usize,
    /// The longest the Orchestrator waits for one invocation to be accepted (`invocation_timeout`, seconds; an HTTP
    /// labourer's own `timeout` + 1 s when longer): past it the task is left running, since it may have been
    /// delivered, and expires if nobody reports. A hung invoker never stalls a pass.
    pub invocation_timeout: f64,
    pub daemon: DaemonConfig,
    pub notify: NotifyConfig,
    /// `meta_handler_config.write_meta_to_ddb`.
    pub write_meta: bool,
    /// `time_zone`: the Scheduler's dates are taken this many seconds east of UTC.
    pub utc_offset_secs: i64,
    /// What validation had to say short of an error (unknown keys, ignored keys).
    pub warnings: Vec<String>,
    /// Tasks the Scheduler writes per store call, and between its deadline checks (`schedule_batch_size`, sosw-rs;
    /// default 10,000).
    pub schedule_batch_size: usize,
    /// The most tasks one job may make (`schedule_max_tasks`, sosw-rs; default 10,000,000): a bigger job is
    /// refused before anything is written.
    pub schedule_max_tasks: u64,
    /// Seconds before a Lambda invocation's deadline at which the Scheduler stops and continues the job in a new
    /// invocation (`shutdown_period`, as Python sosw; default 60).
    pub shutdown_period: i64,
    /// `circuit_breaker`: holding back labourers whose invocations fail for reasons that are not the tasks'.
    pub breaker: BreakerConfig,
    /// `dispatch_lease` (seconds, sosw-rs; default 120): how long an orchestrator may hold a labourer's dispatch
    /// lease ([`crate::flow`]). An orchestrator that dies holding one delays the labourer's dispatch this long.
    pub dispatch_lease: i64,
    /// `job_schema`, `job_schema_variants`: the Scheduler's chunking levels.
    pub job_schemas: JobSchemas,
    /// The DynamoDB table names (Python sosw's keys).
    pub tables: TableNames,
    /// The Scheduler's continuation files in S3.
    pub queue: QueueSettings,
    /// `server`: what `sosw run` serves over HTTP (`None`: no such section; `sosw run` serves only with
    /// `--listen`, then with the defaults).
    pub server: Option<ServerConfig>,
}

/// The AWS services a config uses besides its store. The AWS build loads AWS's configuration only for a config
/// (or a store) that needs it, so that a config with local labourers, metrics and notifications never waits on
/// the instance metadata service nor warns about a missing region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AwsServices {
    /// A labourer is a Lambda function.
    pub lambda: bool,
    /// A health metric is read from CloudWatch.
    pub cloudwatch: bool,
    /// Dead tasks are notified to an SNS topic (`sns_config.recipient`).
    pub sns: bool,
}

impl AwsServices {
    pub fn any(self) -> bool {
        self.lambda || self.cloudwatch || self.sns
    }
}

/// The subject of dead-task notifications, as Python sosw sends them.
pub const DEAD_TASK_SUBJECT: &str = "``sosw`` Dead Task";

impl Config {
    pub fn labourer(&self, id: &str) -> Option<&Labourer> {
        self.labourers.iter().find(|l| l.id == id)
    }

    /// The AWS services this config uses (its store aside).
    pub fn aws_services(&self) -> AwsServices {
        AwsServices {
            lambda: self
                .labourers
                .iter()
                .any(|l| matches!(l.invoker, InvokerSpec::Lambda { .. })),
            cloudwatch: self
                .labourers
                .iter()
                .flat_map(|l| &l.health_metrics)
                .any(|m| matches!(m.details, MetricDetails::CloudWatch(_))),
            sns: self.notify.recipient.is_some(),
        }
    }

    /// The labourers whose workers are local processes reporting by their exit (`report: "exit_code"`): only a
    /// process that outlives them can record their outcome (`sosw orchestrate --no-wait` refuses them).
    pub fn labourers_reporting_by_exit(&self) -> Vec<&str> {
        self.labourers
            .iter()
            .filter(|l| matches!(&l.invoker, InvokerSpec::Process(p) if p.report == ReportMode::ExitCode))
            .map(|l| l.id.as_str())
            .collect()
    }

    /// The markers of labourer `id` at `now`; a labourer the store knows but the config does not is read with
    /// the default `duration` and `cooldown`.
    pub fn markers_for(&self, id: &str, now: Time) -> Markers {
        match self.labourer(id) {
            Some(l) => l.markers(now, self.greenfield.delta),
            None => Markers::new(now, self.greenfield.delta, DEFAULT_DURATION, DEFAULT_COOLDOWN),
        }
    }

    /// Where a stored task is at `now`, as `sosw task show` / `task list` name it.
    pub fn state_of(&self, t: &crate::task::StoredTask, now: Time) -> crate::task::Whereabouts {
        use crate::task::Whereabouts;
        match t.place {
            crate::task::Place::Retry { .. } => Whereabouts::Retry,
            crate::task::Place::Closed { completed: true, .. } => Whereabouts::Closed,
            crate::task::Place::Closed { completed: false, .. } => Whereabouts::Dead,
            crate::task::Place::Live => match self
                .markers_for(&t.task.labourer_id, now)
                .classify(t.task.greenfield, t.task.completed_at.is_some())
            {
                crate::TaskState::Queued => Whereabouts::Queued,
                crate::TaskState::Running => Whereabouts::Running,
                crate::TaskState::Expired => Whereabouts::Expired,
                crate::TaskState::Completed => Whereabouts::Completed,
            },
        }
    }

    /// Merges `layers` for `essential` and validates the result.
    pub fn from_layers(layers: &[Value], essential: Essential) -> Result<Config, ConfigErrors> {
        let mut r = Reader::default();
        let mut shared = Value::Object(Map::new());
        let mut section = Value::Object(Map::new());
        for (i, layer) in layers.iter().enumerate() {
            let Value::Object(obj) = layer else {
                r.error(
                    format!("<layer {}>", i + 1),
                    format!("a config must be a JSON object, got {}", show(layer)),
                );
                continue;
            };
            let mut essential_wide = obj.clone();
            for e in Essential::ALL {
                if let Some(sec) = essential_wide.remove(e.config_key()) {
                    if !sec.is_object() {
                        r.error(e.config_key(), format!("expected an object, got {}", show(&sec)));
                    } else if e == essential {
                        section = recursive_update(&section, &sec);
                    }
                }
            }
            shared = recursive_update(&shared, &Value::Object(essential_wide));
        }
        if !r.errors.is_empty() {
            return Err(ConfigErrors(r.errors));
        }
        Config::read(&recursive_update(&shared, &section), r)
    }

    /// Validates one already-merged config.
    pub fn from_value(value: &Value) -> Result<Config, ConfigErrors> {
        Config::read(value, Reader::default())
    }

    fn read(value: &Value, mut r: Reader) -> Result<Config, ConfigErrors> {
        let empty = Map::new();
        let top = match value {
            Value::Object(m) => m,
            other => {
                r.error("", format!("a config must be a JSON object, got {}", show(other)));
                return Err(ConfigErrors(r.errors));
            }
        };
        r.unknown_keys(top, "", TOP_KEYS, |k| {
            k.starts_with("max_attempts_") || k.ends_with("_dynamo_db_config") || k.ends_with("_config")
        });
        if top.contains_key("labourers") {
            r.warn(
                "`labourers` at the top level is not read (Python sosw does not read it either); move it under \
                 `task_config.labourers`",
            );
        }
        let tc = r.object(top, "task_config", "").unwrap_or(&empty);
        r.unknown_keys(tc, "task_config", TASK_CONFIG_KEYS, |k| k.starts_with("max_attempts_"));

        // TaskManager settings: `task_config.X`, else top-level `X` (Python's nested processors see both).
        let tm_int = |r: &mut Reader, key: &str, min: i64, max: i64| -> Option<i64> {
            r.int_in(tc, key, "task_config", min, max)
                .or_else(|| r.int_in(top, key, "", min, max))
        };
        let greenfield = GreenfieldParams {
            delta: tm_int(&mut r, "greenfield_invocation_delta", 1, MAX_INVOCATION_DELTA)
                .unwrap_or(GreenfieldParams::default().delta),
            step: tm_int(&mut r, "greenfield_task_step", 1, MAX_TASK_STEP).unwrap_or(GreenfieldParams::default().step),
        };
        let u32_max = i64::from(u32::MAX);
        let default_max_attempts = tm_int(&mut r, "max_attempts", 1, u32_max).map_or(3, |n| n as u32);
        let default_max_inv = tm_int(&mut r, "max_simultaneous_invocations", 0, u32_max).map_or(1, |n| n as u32);

        let ecology = r
            .object(tc, "ecology_config", "task_config")
            .map(|m| (m, "task_config.ecology_config"))
            .or_else(|| r.object(top, "ecology_config", "").map(|m| (m, "ecology_config")));
        let metric_failure_status = ecology
            .and_then(|(m, p)| read_status(&mut r, m, "metric_failure_status", p))
            .unwrap_or(EcoStatus::Bad);

        let mut labourers = Vec::new();
        if let Some(ls) = r.object(tc, "labourers", "task_config") {
            for (id, lv) in ls {
                let path = join("task_config.labourers", id);
                let Value::Object(lc) = lv else {
                    r.error(path, format!("expected an object, got {}", show(lv)));
                    continue;
                };
                let max_attempts_key = format!("max_attempts_{id}");
                let fallback_attempts = r
                    .u32(tc, &max_attempts_key, "task_config", 1)
                    .or_else(|| r.u32(top, &max_attempts_key, "", 1))
                    .unwrap_or(default_max_attempts);
                if let Some(l) = read_labourer(&mut r, id, lc, &path, fallback_attempts, default_max_inv) {
                    check_window(&mut r, &l, &path, greenfield.delta);
                    labourers.push(l);
                }
            }
        }

        let coefficients = read_coefficients(&mut r, top);
        let retry_tasks_limit = r.int_in(top, "retry_tasks_limit", "", 1, MAX_PAGE).unwrap_or(20) as usize;
        let retry_backoff = match r.string(top, "retry_backoff", "").as_deref() {
            None | Some("linear") => Backoff::Linear,
            Some("exponential") => Backoff::Exponential,
            Some(other) => {
                r.error(
                    "retry_backoff",
                    format!("expected \"linear\" or \"exponential\", got \"{other}\""),
                );
                Backoff::Linear
            }
        };
        // Below the Orchestrator Lambda's own timeout (60 s in the deployment template), so that it can act on it.
        let invocation_timeout = r.positive_secs(top, "invocation_timeout", "").unwrap_or(30.0);
        let invocation_concurrency = r.int_in(top, "invocation_concurrency", "", 1, MAX_PAGE).unwrap_or(64) as usize;

        let daemon_obj = r.object(top, "daemon", "").unwrap_or(&empty);
        r.unknown_keys(
            daemon_obj,
            "daemon",
            &["orchestrator_interval", "scavenger_interval", "shutdown_grace"],
            |_| false,
        );
        let daemon = DaemonConfig {
            orchestrator_interval: r
                .positive_secs(daemon_obj, "orchestrator_interval", "daemon")
                .unwrap_or(60.0),
            scavenger_interval: r
                .positive_secs(daemon_obj, "scavenger_interval", "daemon")
                .unwrap_or(60.0),
            shutdown_grace: r.positive_secs(daemon_obj, "shutdown_grace", "daemon").unwrap_or(30.0),
        };

        let breaker = read_breaker(&mut r, top);
        let dispatch_lease = r.int_in(top, "dispatch_lease", "", 1, MAX_SECONDS).unwrap_or(120);
        if (dispatch_lease as f64) < 2.0 * invocation_timeout {
            r.error(
                "dispatch_lease",
                format!(
                    "must be at least twice `invocation_timeout` ({invocation_timeout} s), got {dispatch_lease}: a \
                     pass holds the lease while it invokes"
                ),
            );
        }
        let sns = r.object(top, "sns_config", "").unwrap_or(&empty);
        let notify_obj = r.object(top, "notify", "").unwrap_or(&empty);
        r.unknown_keys(notify_obj, "notify", &["command"], |_| false);
        let notify = NotifyConfig {
            recipient: r.string(sns, "recipient", "sns_config"),
            subject: DEAD_TASK_SUBJECT.to_string(),
            command: r.command(notify_obj, "command", "notify"),
        };
        let meta = r.object(top, "meta_handler_config", "").unwrap_or(&empty);
        let write_meta = r.bool(meta, "write_meta_to_ddb", "meta_handler_config").unwrap_or(true);
        let store = r.string(top, "store", "");
        let schedule_batch_size = r
            .int_in(top, "schedule_batch_size", "", 1, MAX_PAGE)
            .map_or(10_000, |n| n as usize);
        let schedule_max_tasks = r
            .int(top, "schedule_max_tasks", "", 1)
            .map_or(10_000_000, |n| n.unsigned_abs());
        let shutdown_period = r.int_in(top, "shutdown_period", "", 0, MAX_SECONDS).unwrap_or(60);
        let utc_offset_secs = match r.string(top, "time_zone", "") {
            None => 0,
            Some(tz) => match parse_utc_offset(&tz) {
                Some(secs) => secs,
                None => {
                    r.error(
                        "time_zone",
                        format!("expected \"UTC\" or an offset such as \"+02:00\", got \"{tz}\""),
                    );
                    0
                }
            },
        };
        let job_schemas = sections::read_job_schemas(&mut r, top);
        let tables = sections::read_table_names(&mut r, top, tc);
        let queue = sections::read_queue(&mut r, top);
        let server = server::read_server(&mut r, top);

        if r.errors.is_empty() {
            Ok(Config {
                store,
                greenfield,
                labourers,
                coefficients,
                retry_tasks_limit,
                retry_backoff,
                metric_failure_status,
                invocation_concurrency,
                invocation_timeout,
                daemon,
                notify,
                write_meta,
                utc_offset_secs,
                schedule_batch_size,
                schedule_max_tasks,
                shutdown_period,
                breaker,
                dispatch_lease,
                warnings: r.warnings,
                job_schemas,
                tables,
                queue,
                server,
            })
        } else {
            Err(ConfigErrors(r.errors))
        }
    }
}

#[cfg(test)]
mod tests;
