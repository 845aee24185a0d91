//! Loading what every command needs: the config layers, the store, the adapters.

use crate::UsageError;
use anyhow::{Context, Result};
use serde_json::Value;
use sosw_core::ports::{InvokerFactory, MetaSink, MetricSource, Notifier, TaskStore};
use sosw_core::{Clock, Config, Essential, SystemClock};
use sosw_engine::Wiring;
use sosw_local::metrics::LocalMetrics;
use sosw_local::notify::LocalNotifier;
use sosw_local::process::Supervisor;
use sosw_local::LocalInvokers;
use sosw_sqlite::SqliteStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::Global;

/// Reads the config layers at `path` ([`sosw_local::config_files::read_layers`]); a missing or unreadable
/// config is a usage error.
pub fn read_layers(path: &Path) -> Result<Vec<Value>> {
    use sosw_local::config_files::ConfigFileError;
    sosw_local::config_files::read_layers(path).map_err(|e| match e {
        ConfigFileError::Missing(_) => UsageError(format!(
            "{e}; pass --config PATH or set SOSW_CONFIG (see docs/config.md)"
        ))
        .into(),
        // A file that is not UTF-8 text is a bad config (exit 2), not a failure to read it.
        ConfigFileError::Unreadable { ref source, .. } if source.kind() == std::io::ErrorKind::InvalidData => {
            UsageError(format!("{e} (a config is UTF-8 JSON text)")).into()
        }
        ConfigFileError::Unreadable { .. } => anyhow::Error::from(e),
        other => UsageError(other.to_string()).into(),
    })
}

/// The config layers of `essential` from AWS (`ssm:` or `dynamodb:[TABLE]`), if `path` names such a source.
async fn aws_layers(path: &Path, essential: Essential) -> Result<Option<Vec<Value>>> {
    let text = path.to_string_lossy();
    let kind = match text.split_once(':') {
        Some((k @ ("ssm" | "dynamodb"), _)) => k,
        _ => return Ok(None),
    };
    #[cfg(feature = "aws")]
    {
        let _ = kind;
        let aws = sosw_aws::Aws::from_env().await;
        match sosw_aws::ConfigSource::from_spec(&aws, &text).map_err(UsageError)? {
            // A config that is missing, malformed or refused is the user's to fix (exit 2); AWS unreachable,
            // throttling or failing is not (exit 1).
            Some(source) => match source.layers(essential).await {
                Ok(layers) => Ok(Some(layers)),
                Err(e @ sosw_aws::ConfigSourceError::Unavailable { .. }) => Err(anyhow::Error::from(e)),
                Err(e) => Err(UsageError(e.to_string()).into()),
            },
            None => Ok(None),
        }
    }
    #[cfg(not(feature = "aws"))]
    {
        let _ = essential;
        Err(UsageError(format!(
            "config `{kind}:` is read from AWS, which needs sosw's AWS build (`cargo build --release -p sosw-cli --features aws`)"
        ))
        .into())
    }
}

/// Loads and validates the config for `essential`: files (a JSON file or a Python-style directory), or in the AWS
/// build `ssm:` / `dynamodb:[TABLE]` (Python sosw's config rows). Warnings go to the log.
pub async fn load_config(path: &Path, essential: Essential) -> Result<Config> {
    let layers = match aws_layers(path, essential).await? {
        Some(layers) => layers,
        None => read_layers(path)?,
    };
    let config = Config::from_layers(&layers, essential).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    for w in &config.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    Ok(config)
}

/// Where the tasks live: an SQLite file, or DynamoDB (the AWS build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Sqlite(PathBuf),
    /// `dynamodb:` (AWS as configured by the environment) or `dynamodb:http://127.0.0.1:PORT` (a local endpoint).
    DynamoDb {
        endpoint: Option<String>,
    },
}

/// The directory a config's relative paths are relative to: the config itself for a Python-style config directory,
/// else the file's directory (`.` for a bare file name).
fn config_dir_of(config: &Path) -> PathBuf {
    if config.is_dir() {
        return config.to_path_buf();
    }
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The store a command uses: `--store`, else the config's `store`, else `sosw.db` beside the config. Relative SQLite
/// paths in the config are relative to the config's directory; on the command line, to the working directory.
pub fn store_spec(global: &Global, config: Option<&Config>) -> Result<StoreSpec> {
    let config_dir = config_dir_of(&global.config);
    let (url, base) = match (&global.store, config.and_then(|c| c.store.clone())) {
        (Some(url), _) => (url.clone(), PathBuf::from(".")),
        (None, Some(url)) => (url, config_dir),
        (None, None) => return Ok(StoreSpec::Sqlite(config_dir.join("sosw.db"))),
    };
    match url.split_once(':') {
        Some(("sqlite", path)) if !path.is_empty() => {
            let p = PathBuf::from(path);
            Ok(StoreSpec::Sqlite(if p.is_absolute() { p } else { base.join(p) }))
        }
        Some(("dynamodb", endpoint)) => Ok(StoreSpec::DynamoDb {
            endpoint: (!endpoint.is_empty()).then(|| endpoint.to_string()),
        }),
        _ => Err(UsageError(format!(
            "store `{url}` is not understood; expected `sqlite:PATH` or `dynamodb:[ENDPOINT]`"
        ))
        .into()),
    }
}

/// An open store.
#[derive(Debug, Clone)]
pub struct OpenStore {
    pub tasks: Arc<dyn TaskStore>,
    pub meta: Arc<dyn MetaSink>,
    /// The store as a URL any sosw process can open (`sqlite:/abs/path`, `dynamodb:ENDPOINT`).
    pub url: String,
    /// What `sosw init` says it made ready.
    pub describe: String,
    /// The AWS configuration the store was opened with (a DynamoDB store), for the other AWS clients to share.
    #[cfg(feature = "aws")]
    pub aws: Option<sosw_aws::Aws>,
}

fn schema_usage(e: sosw_core::ports::StoreError) -> anyhow::Error {
    match e {
        sosw_core::ports::StoreError::Schema(m) => UsageError(m).into(),
        other => other.into(),
    }
}

/// Opens the store; with `init`, creates or migrates it first.
pub async fn open_store(spec: &StoreSpec, config: Option<&Config>, init: bool) -> Result<OpenStore> {
    match spec {
        StoreSpec::Sqlite(path) => {
            let store = if init {
                // `init` makes the file, never the directories above it: a mistyped path is refused, not created.
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
                    return Err(UsageError(format!(
                        "the directory `{}` of the store `{}` does not exist; create it first",
                        dir.display(),
                        path.display()
                    ))
                    .into());
                }
                let s = SqliteStore::open_or_create(path).with_context(|| format!("opening `{}`", path.display()))?;
                s.init().await.map_err(schema_usage)?;
                s
            } else {
                SqliteStore::open(path).map_err(|e| match e {
                    sosw_core::ports::StoreError::Schema(m) => anyhow::Error::from(UsageError(m)),
                    other => anyhow::Error::from(other).context(format!("opening the store `{}`", path.display())),
                })?
            };
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let store = Arc::new(store);
            Ok(OpenStore {
                tasks: store.clone(),
                meta: store,
                url: format!("sqlite:{}", abs.display()),
                describe: format!("{} (schema version {})", path.display(), sosw_sqlite::SCHEMA_VERSION),
                #[cfg(feature = "aws")]
                aws: None,
            })
        }
        #[cfg(feature = "aws")]
        StoreSpec::DynamoDb { endpoint } => {
            let tables = config.map_or_else(sosw_aws::Tables::default, |c| sosw_aws::Tables::from_names(&c.tables));
            let aws = sosw_aws::Aws::for_store(endpoint.as_deref()).await;
            let store = sosw_aws::DynamoStore::from_aws(&aws, tables.clone());
            if init {
                store.init().await.map_err(schema_usage)?;
            }
            let store = Arc::new(store);
            Ok(OpenStore {
                tasks: store.clone(),
                meta: store,
                url: format!("dynamodb:{}", endpoint.clone().unwrap_or_default()),
                describe: format!(
                    "DynamoDB tables {}, {}, {}, {}, {}",
                    tables.tasks, tables.closed, tables.retry, tables.meta, tables.jobs
                ),
                aws: Some(aws),
            })
        }
        #[cfg(not(feature = "aws"))]
        StoreSpec::DynamoDb { .. } => {
            let _ = config;
            Err(UsageError(
                "the DynamoDB store needs sosw's AWS build (`cargo build --release -p sosw-cli --features aws`); this \
                 build has `sqlite:PATH`"
                    .into(),
            )
            .into())
        }
    }
}

/// A command's config, store and clock.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<dyn TaskStore>,
    pub meta: Arc<dyn MetaSink>,
    /// Health metric values: the local sources, and CloudWatch in the AWS build.
    pub metrics: Arc<dyn MetricSource>,
    /// Dead-task notifications: the log and `notify.command`, or SNS (`sns_config.recipient`) in the AWS build.
    pub notifier: Arc<dyn Notifier>,
    pub clock: Arc<dyn Clock>,
    /// The store as a URL any sosw process can open (`sqlite:/abs/path`).
    pub store_url: String,
    pub config_path: PathBuf,
    /// The AWS configuration (the AWS build), loaded only when the store or the config uses AWS
    /// ([`sosw_core::config::AwsServices`]): the store's, else AWS as the environment configures it.
    #[cfg(feature = "aws")]
    pub aws: Option<sosw_aws::Aws>,
}

impl App {
    pub async fn load(global: &Global, essential: Essential) -> Result<App> {
        let config = load_config(&global.config, essential).await?;
        let spec = store_spec(global, Some(&config))?;
        let store = open_store(&spec, Some(&config), false).await?;
        #[cfg(feature = "aws")]
        let store_aws = store.aws.clone();
        #[allow(unused_mut)]
        let mut app = App::new(config, store, global);
        #[cfg(feature = "aws")]
        {
            let uses = app.config.aws_services();
            app.aws = match store_aws {
                Some(aws) => Some(aws),
                None if uses.any() => Some(sosw_aws::Aws::from_env().await),
                None => None,
            };
            if let Some(aws) = &app.aws {
                if uses.cloudwatch {
                    app.metrics = Arc::new(sosw_aws::CloudWatchMetrics::from_aws(aws, app.metrics.clone()));
                }
                if let Some(topic) = app.config.notify.recipient.clone() {
                    app.notifier = Arc::new(sosw_aws::SnsNotifier::from_aws(aws, topic));
                }
            }
        }
        Ok(app)
    }

    pub fn new(config: Config, store: OpenStore, global: &Global) -> App {
        let config_path = std::path::absolute(&global.config).unwrap_or_else(|_| global.config.clone());
        let config_dir = config_dir_of(&config_path);
        let notify_command = config.notify.command.clone();
        App {
            config: Arc::new(config),
            store_url: store.url,
            store: store.tasks,
            meta: store.meta,
            metrics: Arc::new(LocalMetrics::new().in_dir(config_dir.clone())),
            notifier: Arc::new(LocalNotifier::new(notify_command).in_dir(config_dir)),
            clock: Arc::new(SystemClock),
            config_path,
            #[cfg(feature = "aws")]
            aws: None,
        }
    }

    pub fn wiring(&self) -> Wiring {
        let store: Arc<dyn TaskStore> = self.store.clone();
        let notifier = self.notifier.clone();
        Wiring {
            store,
            meta: if self.config.write_meta {
                Some(self.meta.clone())
            } else {
                None
            },
            metrics: self.metrics.clone(),
            notifier,
            clock: self.clock.clone(),
        }
    }

    /// Every labourer's invoker: local processes and HTTP endpoints, with the environment a worker needs to report
    /// back with `sosw complete`, and in the AWS build Lambda functions too.
    pub async fn invokers(&self, wiring: &Wiring) -> (Box<dyn InvokerFactory>, Arc<Supervisor>) {
        self.invokers_reporting_to(wiring, None, None).await
    }

    /// [`App::invokers`] for a process that exits right after its pass (`orchestrate --no-wait`): local workers
    /// are started detached ([`Supervisor::detached`]).
    pub async fn detached_invokers(&self, wiring: &Wiring) -> Box<dyn InvokerFactory> {
        let supervisor = Supervisor::detached(Arc::new(wiring.worker_assistant(self.config.clone())));
        self.invokers_with(supervisor, None, None).await
    }

    /// [`App::invokers`] whose workers are told to POST their reports to `report_url` (`sosw run --listen`), each
    /// with its invocation's report token from `signer`.
    pub async fn invokers_reporting_to(
        &self,
        wiring: &Wiring,
        report_url: Option<String>,
        signer: Option<Arc<dyn sosw_core::ports::ReportSigner>>,
    ) -> (Box<dyn InvokerFactory>, Arc<Supervisor>) {
        let supervisor = Supervisor::new(Arc::new(wiring.worker_assistant(self.config.clone())));
        (
            self.invokers_with(supervisor.clone(), report_url, signer).await,
            supervisor,
        )
    }

    async fn invokers_with(
        &self,
        supervisor: Arc<Supervisor>,
        report_url: Option<String>,
        signer: Option<Arc<dyn sosw_core::ports::ReportSigner>>,
    ) -> Box<dyn InvokerFactory> {
        let mut env = vec![
            ("SOSW_CONFIG".to_string(), self.config_path.display().to_string()),
            ("SOSW_STORE".to_string(), self.store_url.clone()),
        ];
        if let Ok(exe) = std::env::current_exe() {
            env.push(("SOSW_BIN".to_string(), exe.display().to_string()));
        }
        let mut local = LocalInvokers::new(supervisor, env, Some(self.config_dir()));
        if let Some(url) = report_url {
            local = local.with_report_url(url);
        }
        if let Some(signer) = signer {
            local = local.with_report_signer(signer);
        }
        let local: Box<dyn InvokerFactory> = Box::new(local);
        #[cfg(feature = "aws")]
        let local: Box<dyn InvokerFactory> = if self.config.aws_services().lambda {
            let aws = match &self.aws {
                Some(aws) => aws.clone(),
                None => sosw_aws::Aws::from_env().await,
            };
            Box::new(sosw_aws::AwsInvokers::from_aws(&aws, local))
        } else {
            local
        };
        local
    }

    /// The directory of the config (the config itself, for a Python-style config directory).
    pub fn config_dir(&self) -> PathBuf {
        config_dir_of(&self.config_path)
    }
}
