//! The sosw essentials as AWS Lambda functions, on the DynamoDB tables and wire formats of Python sosw, so that a
//! Rust function can replace its Python twin one at a time.
//!
//! A [`Container`] is what one warm Lambda container keeps between invocations: the config (read once, at the cold
//! start, from the DynamoDB `config` table or SSM as Python sosw does; see [`config_layers`]), the AWS clients and
//! the essential. [`Container::handle`] takes the same events as Python sosw:
//!
//! | function | event | returns |
//! |---|---|---|
//! | `sosw_orchestrator` | anything (the `rate(1 minute)` rule's event) | the pass report |
//! | `sosw_scavenger` | anything | the pass report |
//! | `sosw_scheduler` | `{"job": {...}}` or the job itself; `{"file_name": "<s3 key>"}` to continue a job | the schedule report |
//! | `sosw_worker_assistant` | `{"action": "mark_task_as_completed" \| "mark_task_as_failed", "task_id", "stats"?, "result"?}` | what was done |
//!
//! A job that does not fit in one invocation (the Scheduler stops `shutdown_period` seconds, default 60, before its
//! deadline) leaves a continuation in S3 and invokes its own function with `{"file_name": "<key>"}`; that invocation
//! plans the same tasks, skips the ones written and goes on. See `sosw_aws::s3`.

use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use sosw_aws::s3::{Continuation, QueueError, QueueFiles, QueueLocation};
use sosw_aws::{Aws, AwsInvokers, CloudWatchMetrics, ConfigSource, DynamoStore, LambdaInvoker, SnsNotifier, Tables};
use sosw_core::ports::{InvokerFactory, MetaSink, Notifier, StoreError, TaskStore};
use sosw_core::schedule::{stop_writing_at, Date};
use sosw_core::{Clock, Config, Essential, Labourer, SystemClock, Time};
use sosw_engine::{Orchestrator, Scavenger, ScheduleError, Scheduler, Wiring, WorkerAssistantError};
use sosw_local::metrics::LocalMetrics;
use sosw_local::notify::LocalNotifier;
use std::sync::Arc;

/// Why a container could not start: the function fails its cold start with this message.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Unreadable(#[from] sosw_aws::ConfigSourceError),
    #[error(transparent)]
    File(#[from] sosw_local::config_files::ConfigFileError),
    #[error("the config is invalid: {0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] sosw_engine::EngineError),
}

/// Why an invocation failed. Lambda retries failed asynchronous invocations (twice by default); every handler is
/// safe to run again on the same event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("bad event: {0}")]
    BadEvent(String),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    WorkerAssistant(#[from] WorkerAssistantError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the job's continuation: {0}")]
    Queue(#[from] QueueError),
    #[error("the job was stopped at its deadline and saved to {key}, but continuing it failed: {reason}")]
    Continue { key: String, reason: String },
}

/// Where the config comes from, by `SOSW_CONFIG`: `dynamodb:[TABLE]` (the default, `dynamodb:config`: Python
/// sosw's config table, rows `sosw_essential_config` and `<function>_config` of env `SOSW_CONFIG_ENV`, default
/// `production`), `ssm:` (parameters of the same names), or a JSON file or Python-style `.config` directory
/// packaged with the function.
pub async fn config_layers(aws: &Aws, source: &str, essential: Essential) -> Result<Vec<Value>, InitError> {
    if let Some(from) = ConfigSource::from_spec(aws, source).map_err(InitError::Source)? {
        return Ok(from.layers(essential).await?);
    }
    match source.split_once(':') {
        Some((kind, _)) if !kind.contains('/') && !kind.contains('.') => Err(InitError::Source(format!(
            "SOSW_CONFIG `{source}` is not understood; expected `dynamodb:[TABLE]`, `ssm:` or the path of a JSON file \
             or config directory"
        ))),
        _ => Ok(sosw_local::config_files::read_layers(std::path::Path::new(source))?),
    }
}

/// Labourers in Lambda are Lambda functions: one without an `arn` cannot be invoked from here.
#[derive(Debug)]
struct LambdaOnly;

impl InvokerFactory for LambdaOnly {
    fn invoker_for(&self, labourer: &Labourer) -> Result<Arc<dyn sosw_core::ports::Invoker>, String> {
        Err(format!(
            "labourer `{}` has no `arn`; the Lambda orchestrator invokes Lambda functions only (local processes and \
             HTTP workers need the `sosw` binary)",
            labourer.id
        ))
    }
}

/// What one Lambda container keeps between invocations.
#[derive(Debug)]
pub struct Container {
    role: Role,
    config: Arc<Config>,
    wiring: Wiring,
    aws: Aws,
}

/// The essential a container runs, with what it builds once per container.
#[derive(Debug)]
enum Role {
    /// Its invokers are resolved (and checked) at the cold start.
    Orchestrator(Box<Orchestrator>),
    Scavenger,
    Scheduler,
    WorkerAssistant,
}

impl Container {
    /// The cold start: AWS from the environment, the config from `SOSW_CONFIG` ([`config_layers`]).
    pub async fn from_env(essential: Essential) -> Result<Container, InitError> {
        let aws = Aws::from_env().await;
        let source = std::env::var("SOSW_CONFIG").unwrap_or_else(|_| "dynamodb:config".into());
        let layers = config_layers(&aws, &source, essential).await?;
        let config = Config::from_layers(&layers, essential).map_err(|e| InitError::Config(e.to_string()))?;
        for w in &config.warnings {
            tracing::warn!("config: {w}");
        }
        Container::new(aws, config, essential, Arc::new(SystemClock))
    }

    /// A container for `essential` on `aws` with `config` (tables named by it), reading time from `clock`.
    pub fn new(aws: Aws, config: Config, essential: Essential, clock: Arc<dyn Clock>) -> Result<Container, InitError> {
        let store = Arc::new(DynamoStore::from_aws(&aws, Tables::from_names(&config.tables)));
        let notifier: Arc<dyn Notifier> = match &config.notify.recipient {
            Some(topic) => Arc::new(SnsNotifier::from_aws(&aws, topic.clone())),
            None => Arc::new(LocalNotifier::new(None)),
        };
        let wiring = Wiring {
            store: store.clone(),
            meta: config.write_meta.then(|| store.clone() as Arc<dyn MetaSink>),
            metrics: Arc::new(CloudWatchMetrics::from_aws(&aws, Arc::new(LocalMetrics::new()))),
            notifier,
            clock,
        };
        let config = Arc::new(config);
        let role = match essential {
            Essential::Orchestrator => {
                let invokers = AwsInvokers::from_aws(&aws, Box::new(LambdaOnly));
                Role::Orchestrator(Box::new(Orchestrator::new(config.clone(), &wiring, &invokers)?))
            }
            Essential::Scavenger => Role::Scavenger,
            Essential::Scheduler => Role::Scheduler,
            Essential::WorkerAssistant => Role::WorkerAssistant,
        };
        Ok(Container {
            role,
            config,
            wiring,
            aws,
        })
    }

    pub fn essential(&self) -> Essential {
        match self.role {
            Role::Orchestrator(_) => Essential::Orchestrator,
            Role::Scavenger => Essential::Scavenger,
            Role::Scheduler => Essential::Scheduler,
            Role::WorkerAssistant => Essential::WorkerAssistant,
        }
    }

    pub fn store(&self) -> &Arc<dyn TaskStore> {
        &self.wiring.store
    }

    /// One invocation.
    pub async fn handle(&self, event: Value, context: &Context) -> Result<Value, HandlerError> {
        let now = self.wiring.clock.now();
        match &self.role {
            Role::Orchestrator(o) => Ok(o.run_once(now).await.to_json()),
            Role::Scavenger => Ok(Scavenger::new(self.config.clone(), &self.wiring)
                .run_once(now)
                .await
                .to_json()),
            Role::Scheduler => self.schedule(event, context, now).await,
            Role::WorkerAssistant => {
                let done = self
                    .wiring
                    .worker_assistant(self.config.clone())
                    .handle_event(&event, None, now)
                    .await?;
                Ok(Value::Object(done))
            }
        }
    }

    async fn schedule(&self, event: Value, context: &Context, now: Time) -> Result<Value, HandlerError> {
        let scheduler = Scheduler::new(self.config.clone(), &self.wiring);
        let queue = QueueFiles::new(self.aws.s3(), QueueLocation::from_settings(&self.config.queue));
        let continued = match event.get("file_name") {
            None => None,
            Some(Value::String(key)) => Some(key.clone()),
            Some(other) => {
                return Err(HandlerError::BadEvent(format!(
                    "`file_name` must be an S3 key, got {other}"
                )))
            }
        };
        let plan = match &continued {
            None => scheduler.plan(&event, now).await?,
            Some(key) => {
                let c = queue.load(key).await?;
                let today = Date::parse(&c.today).ok_or_else(|| {
                    HandlerError::BadEvent(format!(
                        "the continuation {key} has `today` {:?}, not YYYY-MM-DD",
                        c.today
                    ))
                })?;
                scheduler.plan_for(&Value::Object(c.job), now, Some(today)).await?
            }
        };
        let stop_at = stop_writing_at(context.deadline, self.config.shutdown_period);
        for w in &plan.warnings {
            tracing::warn!(job_id = %plan.job_id, "{w}");
        }
        let report = scheduler
            .run_until(&plan, self.wiring.clock.as_ref(), stop_at, |_| {})
            .await?;
        let mut out = serde_json::to_value(&report).unwrap_or(Value::Null);
        if report.finished {
            if let Some(key) = &continued {
                queue.delete(key).await?;
            }
            return Ok(out);
        }
        let mut job = plan.body.clone();
        job.insert("lambda_name".into(), Value::String(plan.labourer.clone()));
        job.insert("job_id".into(), Value::String(plan.job_id.clone()));
        let key = queue
            .save(
                &plan.job_id,
                &Continuation {
                    job,
                    today: plan.today.to_string(),
                },
            )
            .await?;
        let function = if context.invoked_function_arn.is_empty() {
            std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default()
        } else {
            context.invoked_function_arn.clone()
        };
        if function.is_empty() {
            return Err(HandlerError::Continue {
                key,
                reason: "the function's own name is unknown (no invoked_function_arn, no AWS_LAMBDA_FUNCTION_NAME)"
                    .into(),
            });
        }
        LambdaInvoker::new(self.aws.lambda(), &function)
            .send_event(&json!({"file_name": key}).to_string())
            .await
            .map_err(|e| HandlerError::Continue {
                key: key.clone(),
                reason: e.message,
            })?;
        tracing::info!(job_id = %plan.job_id, %key, %function, "job continues in a new invocation");
        if let Value::Object(o) = &mut out {
            o.insert("continued_in".into(), json!({"function": function, "file_name": key}));
        }
        Ok(out)
    }
}

/// A Lambda function's `main`: the runtime loop of `essential`, or a plain message and a failure exit status when
/// the container cannot start (outside Lambda, or without a readable config). The binaries run it on tokio's
/// current-thread runtime: a function handles one event at a time, on at most one vCPU below 1,769 MB, and a
/// second thread would only add cross-thread wake-ups (one thread spent a third less CPU per invoked task,
/// `bench/peers/run --only aws`).
pub async fn main(essential: Essential) -> std::process::ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        eprintln!(
            "{}: this is an AWS Lambda function (runtime provided.al2023) and AWS_LAMBDA_RUNTIME_API is not set; deploy \
             it (deploy/template.yaml) or run the essentials locally with the `sosw` binary",
            essential.function_name()
        );
        return std::process::ExitCode::from(2);
    }
    match run(essential).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{}: {e}", essential.function_name());
            std::process::ExitCode::FAILURE
        }
    }
}

/// The Lambda runtime loop of one essential's function.
pub async fn run(essential: Essential) -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .without_time()
        .init();
    let container = Arc::new(Container::from_env(essential).await?);
    lambda_runtime::run(lambda_runtime::service_fn(move |e: LambdaEvent<Value>| {
        let container = container.clone();
        async move {
            container
                .handle(e.payload, &e.context)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
