//! Local adapters: how embedded sosw reaches workers and reads health.
//!
//! - [`process::ProcessInvoker`]: a worker is a local command; the event goes to its stdin. A [`process::Supervisor`]
//!   tracks every child, reaps it, and (in `exit_code` mode) reports its exit through the WorkerAssistant.
//! - [`http::HttpInvoker`]: a worker is an HTTP endpoint; the event is POSTed.
//! - [`metrics::LocalMetrics`]: health from a command, a JSON document over HTTP, or a Prometheus instant query.
//! - [`notify`]: dead-task notifications to the log and, optionally, a command.
//!
//! `https://` workers are reached with rustls, against the system's CA certificates or a labourer's `ca_file`.

pub mod config_files;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod process;

use sosw_core::config::{InvokerSpec, Labourer};
use sosw_core::ports::{Invoker, InvokerFactory, ReportSigner};
use std::sync::Arc;

/// Builds process and HTTP invokers; refuses Lambda labourers with a clear message.
#[derive(Debug, Clone)]
pub struct LocalInvokers {
    supervisor: Arc<process::Supervisor>,
    /// Extra environment for every process worker (e.g. `SOSW_CONFIG`, so that it can run `sosw complete`).
    env: Vec<(String, String)>,
    /// Where process workers run unless their `cwd` says otherwise (a relative `cwd` is relative to it): the
    /// config file's directory, so that a config and its workers travel together.
    base_dir: Option<std::path::PathBuf>,
    /// Where workers may POST their reports (`sosw run --listen`): `SOSW_REPORT_URL` for process workers, the
    /// [`REPORT_URL_HEADER`] of every HTTP invocation.
    report_url: Option<String>,
    /// Gives each worker its invocation's report token, checked by the server its reports go to.
    signer: Option<Arc<dyn ReportSigner>>,
}

/// The header that tells an HTTP worker where to report (when `sosw run --listen` serves reports).
pub const REPORT_URL_HEADER: &str = "X-Sosw-Report-Url";

impl LocalInvokers {
    pub fn new(
        supervisor: Arc<process::Supervisor>,
        env: Vec<(String, String)>,
        base_dir: Option<std::path::PathBuf>,
    ) -> LocalInvokers {
        LocalInvokers {
            supervisor,
            env,
            base_dir,
            report_url: None,
            signer: None,
        }
    }

    /// Gives every worker the report token of its invocation (`SOSW_REPORT_TOKEN`, or the `X-Sosw-Report-Token`
    /// header of an HTTP invocation).
    pub fn with_report_signer(mut self, signer: Arc<dyn ReportSigner>) -> LocalInvokers {
        self.signer = Some(signer);
        self
    }

    /// Tells every worker where to POST its report (the WorkerAssistant event).
    pub fn with_report_url(mut self, url: impl Into<String>) -> LocalInvokers {
        let url = url.into();
        self.env.push(("SOSW_REPORT_URL".into(), url.clone()));
        self.report_url = Some(url);
        self
    }
}

/// `cwd` resolved against `base`.
pub fn resolve_dir(base: Option<&std::path::Path>, cwd: Option<&str>) -> Option<String> {
    match (base, cwd) {
        (Some(b), Some(c)) if std::path::Path::new(c).is_relative() => Some(b.join(c).display().to_string()),
        (_, Some(c)) => Some(c.to_string()),
        (Some(b), None) => Some(b.display().to_string()),
        (None, None) => None,
    }
}

impl InvokerFactory for LocalInvokers {
    fn invoker_for(&self, labourer: &Labourer) -> Result<Arc<dyn Invoker>, String> {
        match &labourer.invoker {
            InvokerSpec::Process(spec) => {
                let mut spec = spec.clone();
                spec.cwd = resolve_dir(self.base_dir.as_deref(), spec.cwd.as_deref());
                Ok(Arc::new(
                    process::ProcessInvoker::new(&labourer.id, spec, self.env.clone(), self.supervisor.clone())?
                        .with_signer(self.signer.clone()),
                ))
            }
            InvokerSpec::Http(spec) => {
                let mut spec = spec.clone();
                // A relative `ca_file` is relative to the config's directory, as a process worker's `cwd` is.
                spec.ca_file = spec
                    .ca_file
                    .as_deref()
                    .map(|f| resolve_dir(self.base_dir.as_deref(), Some(f)).unwrap_or_else(|| f.to_string()));
                if let Some(url) = &self.report_url {
                    spec.headers.push((REPORT_URL_HEADER.into(), url.clone()));
                }
                Ok(Arc::new(http::HttpInvoker::new(spec)?.with_signer(self.signer.clone())))
            }
            InvokerSpec::Lambda { .. } => Err(
                "`arn` (AWS Lambda) labourers cannot be invoked by the embedded build; give `command` (a local \
                 process) or `url` (an HTTP worker), or run sosw's AWS build"
                    .to_string(),
            ),
        }
    }
}
