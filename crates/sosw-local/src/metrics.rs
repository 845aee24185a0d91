//! Health metric values from local sources: a command, a JSON document over HTTP, a Prometheus instant query.

use async_trait::async_trait;
use serde_json::Value;
use sosw_core::config::MetricDetails;
use sosw_core::ports::{MetricError, MetricSource};
use sosw_core::Time;
use std::process::Stdio;

#[derive(Debug, Clone)]
pub struct LocalMetrics {
    client: reqwest::Client,
    /// Where metric commands run (the config's directory).
    cwd: Option<std::path::PathBuf>,
}

impl Default for LocalMetrics {
    fn default() -> Self {
        LocalMetrics::new()
    }
}

impl LocalMetrics {
    pub fn new() -> LocalMetrics {
        LocalMetrics {
            client: reqwest::Client::new(),
            cwd: None,
        }
    }

    /// Runs metric commands in `dir`.
    #[must_use]
    pub fn in_dir(mut self, dir: std::path::PathBuf) -> LocalMetrics {
        self.cwd = Some(dir);
        self
    }

    async fn get_json(&self, url: &str, timeout: f64) -> Result<Value, MetricError> {
        let resp = self
            .client
            .get(url)
            .timeout(sosw_core::time::duration_secs(timeout))
            .send()
            .await
            .map_err(|e| MetricError(format!("GET {url}: {e}")))?;
        let status = resp.status();
        let (body, cut) = crate::http::read_capped(resp, MAX_METRIC_ANSWER_BYTES)
            .await
            .map_err(|e| MetricError(format!("GET {url}: {e}")))?;
        if cut {
            return Err(MetricError(format!(
                "GET {url}: the answer is larger than {MAX_METRIC_ANSWER_BYTES} bytes; ask for one value"
            )));
        }
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(MetricError(format!("GET {url}: {status}: {text}")));
        }
        serde_json::from_slice(&body).map_err(|e| MetricError(format!("GET {url}: the body is not JSON: {e}")))
    }
}

/// The most of a metric source's answer that is read.
const MAX_METRIC_ANSWER_BYTES: usize = 16 << 20;

/// A number, or a string holding one (Prometheus sends values as strings).
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parse_output(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())?
        .parse()
        .ok()
}

/// The value of a Prometheus instant-query response: a scalar, or a vector with exactly one sample.
pub fn prometheus_value(body: &Value) -> Result<f64, String> {
    if body.get("status").and_then(Value::as_str) != Some("success") {
        let err = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no `status: success`");
        return Err(format!("the query failed: {err}"));
    }
    let data = body.get("data").ok_or("the response has no `data`")?;
    let sample = match data.get("resultType").and_then(Value::as_str) {
        Some("scalar") => data.get("result"),
        Some("vector") => match data.get("result").and_then(Value::as_array).map(Vec::as_slice) {
            Some([one]) => one.get("value"),
            Some([]) => return Err("the query returned no data".into()),
            Some(many) => {
                return Err(format!(
                    "the query returned {} series; aggregate it to one (e.g. max(...))",
                    many.len()
                ))
            }
            None => None,
        },
        other => {
            return Err(format!(
                "unsupported result type {other:?}; use a scalar or an instant vector"
            ))
        }
    };
    sample
        .and_then(|s| s.get(1))
        .and_then(as_number)
        .ok_or_else(|| "the sample has no numeric value".to_string())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl MetricSource for LocalMetrics {
    async fn fetch(&self, details: &MetricDetails, _now: Time) -> Result<f64, MetricError> {
        match details {
            MetricDetails::Command { command, timeout_secs } => {
                let mut cmd = tokio::process::Command::new(&command[0]);
                cmd.args(&command[1..]).stdin(Stdio::null()).kill_on_drop(true);
                if let Some(dir) = &self.cwd {
                    cmd.current_dir(dir);
                }
                let run = cmd.output();
                let out = tokio::time::timeout(sosw_core::time::duration_secs(*timeout_secs), run)
                    .await
                    .map_err(|_| MetricError(format!("`{}` timed out after {timeout_secs} s", command.join(" "))))?
                    .map_err(|e| MetricError(format!("cannot run `{}`: {e}", command.join(" "))))?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    return Err(MetricError(format!(
                        "`{}` failed ({}): {}",
                        command.join(" "),
                        out.status,
                        stderr.trim()
                    )));
                }
                parse_output(&stdout).ok_or_else(|| {
                    MetricError(format!(
                        "`{}` printed {:?}, not a number",
                        command.join(" "),
                        stdout.trim()
                    ))
                })
            }
            MetricDetails::HttpJson {
                url,
                pointer,
                timeout_secs,
            } => {
                let body = self.get_json(url, *timeout_secs).await?;
                let v = body
                    .pointer(pointer)
                    .ok_or_else(|| MetricError(format!("GET {url}: nothing at pointer `{pointer}`")))?;
                as_number(v).ok_or_else(|| MetricError(format!("GET {url}: `{pointer}` is {v}, not a number")))
            }
            MetricDetails::Prometheus {
                base_url,
                query,
                timeout_secs,
            } => {
                let url = format!(
                    "{}/api/v1/query?query={}",
                    base_url.trim_end_matches('/'),
                    percent_encode(query)
                );
                let body = self.get_json(&url, *timeout_secs).await?;
                prometheus_value(&body).map_err(|e| MetricError(format!("prometheus `{query}`: {e}")))
            }
            MetricDetails::CloudWatch(m) => Err(MetricError(format!(
                "CloudWatch metric `{}/{}` needs sosw's AWS build; the embedded build reads command, url and \
                 prometheus metrics",
                m.namespace, m.metric_name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prometheus_responses() {
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "42.5"]}]}});
        assert_eq!(prometheus_value(&vector), Ok(42.5));
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}});
        assert_eq!(prometheus_value(&scalar), Ok(3.0));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert!(prometheus_value(&empty).expect_err("no data").contains("no data"));
        let two = json!({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]}});
        assert!(prometheus_value(&two).expect_err("two series").contains("2 series"));
        let failed = json!({"status": "error", "error": "parse error"});
        assert!(prometheus_value(&failed).expect_err("failed").contains("parse error"));
    }

    #[test]
    fn command_output() {
        assert_eq!(parse_output("42\n"), Some(42.0));
        assert_eq!(parse_output("warming up\n 17.5 \n\n"), Some(17.5));
        assert_eq!(parse_output("nope"), None);
        assert_eq!(percent_encode("max(up{job=\"x\"})"), "max%28up%7Bjob%3D%22x%22%7D%29");
    }
}
