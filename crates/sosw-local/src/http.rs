//! Workers as HTTP endpoints: the event is POSTed as JSON.
//!
//! | response | async mode | sync mode |
//! |---|---|---|
//! | 2xx | accepted (the worker reports later) | completed; a JSON object body is the result |
//! | 429, 503 | throttled: back to the queue, no attempt spent (`Retry-After` seconds kept) | same |
//! | 401, 403, 404, 405, 410 …, connection refused, DNS/TLS | the labourer's fault: back to the queue, no attempt spent, labourer held back | same |
//! | other 4xx | permanent: the task can never succeed, closed as dead | same |
//! | other 5xx | transient: retried later like an expired attempt | same |
//! | timeout after sending | uncertain: left running, expires if nobody reports | same |
//!
//! The classification is `sosw_core::classify`'s table.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sosw_core::classify::{http_status, http_transport, Transport};
use sosw_core::config::{HttpMode, HttpSpec};
use sosw_core::decide::FailureKind;
use sosw_core::payload::worker_report;
use sosw_core::ports::{InvokeError, InvokeOutcome, Invoker, ReportSigner, REPORT_TOKEN_HEADER};
use sosw_core::task::ReportKind;
use sosw_core::{Task, WorkerReport};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct HttpInvoker {
    spec: HttpSpec,
    client: reqwest::Client,
    /// Gives each request the report token of its invocation ([`REPORT_TOKEN_HEADER`]).
    signer: Option<Arc<dyn ReportSigner>>,
}

impl HttpInvoker {
    /// Each request carries the report token of its invocation ([`REPORT_TOKEN_HEADER`]).
    pub fn with_signer(mut self, signer: Option<Arc<dyn ReportSigner>>) -> HttpInvoker {
        self.signer = signer;
        self
    }

    /// `https://` URLs are checked against the system's CA certificates, or only against those of the spec's
    /// `ca_file` (resolved by the caller).
    pub fn new(spec: HttpSpec) -> Result<HttpInvoker, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(sosw_core::time::duration_secs(spec.timeout_secs))
            .connect_timeout(sosw_core::time::duration_secs(spec.timeout_secs.min(10.0)));
        if let Some(path) = &spec.ca_file {
            builder = builder.tls_certs_only(ca_certificates(path)?);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(HttpInvoker {
            spec,
            client,
            signer: None,
        })
    }
}

/// The CA certificates of a PEM file (`ca_file`), with the reason it cannot be used.
pub fn ca_certificates(path: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("`ca_file` `{path}` cannot be read: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("`ca_file` `{path}` is not a PEM file of certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "`ca_file` `{path}` holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)"
        ));
    }
    Ok(certs)
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn classify(e: &reqwest::Error, url: &str) -> InvokeError {
    let transport = if e.is_connect() && our_resources(e) {
        Transport::Resources
    } else if e.is_connect() {
        Transport::Connect
    } else if e.is_builder() {
        Transport::Request
    } else {
        Transport::AfterSending
    };
    InvokeError::new(http_transport(transport), format!("POST {url}: {e}"))
}

/// Whether a connection failed because sosw ran out of file descriptors or memory (not the worker's fault).
fn our_resources(e: &reqwest::Error) -> bool {
    use nix::errno::Errno;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let code = io.raw_os_error();
            return [Errno::EMFILE, Errno::ENFILE, Errno::ENOMEM, Errno::ENOBUFS]
                .iter()
                .any(|r| Some(*r as i32) == code);
        }
        source = err.source();
    }
    false
}

/// The most of a worker's answer that is read: a sync worker's result past it is cut (`result_body_truncated`, the
/// start kept as `result_body`), and a worker that streams without end cannot fill sosw's memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The body of `resp`, up to `limit` bytes, and whether there was more.
pub(crate) async fn read_capped(mut resp: reqwest::Response, limit: usize) -> reqwest::Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn report_from_body(body: &[u8]) -> WorkerReport {
    if body.iter().all(u8::is_ascii_whitespace) {
        return WorkerReport::default();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) if m.contains_key("stats") || m.contains_key("result") => {
            worker_report(&m).unwrap_or_else(|_| WorkerReport::with_result(m))
        }
        Ok(Value::Object(m)) => WorkerReport::with_result(m),
        _ => {
            let mut result = Map::new();
            let text = String::from_utf8_lossy(body);
            result.insert("body".into(), text.chars().take(4096).collect::<String>().into());
            WorkerReport::with_result(result)
        }
    }
}

#[async_trait]
impl Invoker for HttpInvoker {
    async fn invoke(&self, task: &Task, event: &str) -> Result<InvokeOutcome, InvokeError> {
        let mut req = self
            .client
            .post(&self.spec.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(event.to_string());
        if let Some(signer) = &self.signer {
            req = req.header(REPORT_TOKEN_HEADER, signer.sign(&task.task_id, task.invocation()));
        }
        for (k, v) in &self.spec.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| classify(&e, &self.spec.url))?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let (body, truncated) = read_capped(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| classify(&e, &self.spec.url))?;
        let snippet = || String::from_utf8_lossy(&body).chars().take(200).collect::<String>();
        let Some(kind) = http_status(status.as_u16()) else {
            return Ok(match self.spec.mode {
                HttpMode::Async => InvokeOutcome::Accepted,
                HttpMode::Sync => {
                    let mut report = report_from_body(&body);
                    if truncated {
                        report.result.insert("body_truncated".into(), true.into());
                    }
                    InvokeOutcome::Finished(
                        ReportKind::Completed,
                        WorkerReport {
                            of: Some(task.invocation()),
                            ..report
                        },
                    )
                }
            });
        };
        Err(InvokeError {
            kind,
            message: format!("POST {}: {status}: {}", self.spec.url, snippet()),
            retry_after: (kind == FailureKind::Throttled).then_some(after).flatten(),
        })
    }
}
