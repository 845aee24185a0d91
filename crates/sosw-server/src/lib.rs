//! The service mode of `sosw run`: one axum router over any store — the REST API, Prometheus `/metrics`,
//! `/healthz` / `/readyz`, and worker reports — with scoped bearer tokens ([`auth`]).
//!
//! Every route is a thin adapter over the engine: the status query ([`sosw_engine::status`]), the operator's
//! controls ([`sosw_engine::control`]), task creation and listing ([`sosw_engine::tasks`]), the WorkerAssistant. The
//! routes and their refusals are listed in `docs/api.md`.

pub mod api;
pub mod auth;
pub mod error;
pub mod history;
pub mod listen;
pub mod metrics;
pub mod report_token;

pub use auth::{check_exposure, Auth};
pub use error::ApiError;
pub use listen::{serve, Limits, Server};

use axum::body::Body;
use serde_json::Value;
use sosw_core::{Clock, Config};
use sosw_engine::{Wiring, WorkerAssistant};
use std::sync::Arc;

/// What the routes serve from.
#[derive(Debug)]
pub struct Service {
    pub config: Arc<Config>,
    /// The Scheduler's config (Python sosw's layout may give it its own keys, such as `job_schema`).
    pub scheduler_config: Arc<Config>,
    pub wiring: Wiring,
    pub clock: Arc<dyn Clock>,
    pub wa: WorkerAssistant,
    pub auth: Auth,
    pub counters: metrics::Counters,
    pub history: history::History,
    /// Checks the report tokens its workers were given (the same secret signs them).
    pub report_tokens: report_token::ReportTokens,
    pub limits: Limits,
}

impl Service {
    /// The service over `wiring` with `config`'s tokens (and the environment's, through `auth`).
    pub fn new(config: Arc<Config>, wiring: Wiring, auth: Auth, limits: Limits) -> Service {
        Service {
            wa: wiring.worker_assistant(config.clone()),
            scheduler_config: config.clone(),
            clock: wiring.clock.clone(),
            config,
            wiring,
            auth,
            counters: metrics::Counters::default(),
            history: history::History::default(),
            report_tokens: report_token::ReportTokens::from_env_or_random(|_| None),
            limits,
        }
    }

    /// The service with the secret its workers' report tokens are signed with.
    pub fn with_report_tokens(mut self, tokens: report_token::ReportTokens) -> Service {
        self.report_tokens = tokens;
        self
    }

    /// The service with the Scheduler's own config for `POST /api/jobs`.
    pub fn with_scheduler_config(mut self, config: Arc<Config>) -> Service {
        self.scheduler_config = config;
        self
    }

    /// Samples every labourer's queue depth and running tasks now, for the dashboard's chart.
    pub async fn sample(&self) -> Result<(), sosw_core::ports::StoreError> {
        let now = self.clock.now();
        let statuses = sosw_engine::status(&self.config, &self.wiring, now).await?;
        self.history.record(now, &statuses);
        Ok(())
    }
}

/// Samples `service` every [`history::SAMPLE_EVERY`] until dropped (spawn it beside the server).
pub async fn sample_history(service: Arc<Service>) {
    let mut every = tokio::time::interval(history::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = service.sample().await {
            tracing::warn!("sampling the labourers for the dashboard's chart: {e}");
        }
    }
}

/// Reads a request body of at most `max_body` bytes within `body_read`, as a JSON value (an empty body is `null`).
pub(crate) async fn read_json(limits: &Limits, body: Body) -> Result<Value, ApiError> {
    let max = limits.max_body;
    let bytes = match tokio::time::timeout(limits.body_read, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the request body is over {max} bytes (`server.max_body`)"),
                ));
            }
            return Err(ApiError::bad_request(format!("reading the request body: {e}")));
        }
        Err(_) => {
            return Err(ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request body did not arrive within {:?}", limits.body_read),
            ))
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))
}
