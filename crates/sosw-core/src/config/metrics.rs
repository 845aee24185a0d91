//! `health_metrics.<name>`: where a health metric comes from and how its value feels.

use super::reader::{join, show, Reader};
use super::*;

/// Where a health metric's value comes from (`details`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum MetricDetails {
    /// A command whose stdout is a number.
    Command { command: Vec<String>, timeout_secs: f64 },
    /// A JSON document over HTTP GET; `pointer` (RFC 6901) selects the number.
    HttpJson {
        url: String,
        pointer: String,
        timeout_secs: f64,
    },
    /// A Prometheus instant query; the first sample's value.
    Prometheus {
        base_url: String,
        query: String,
        timeout_secs: f64,
    },
    /// CloudWatch `GetMetricStatistics`, the shape of Python sosw's `details`.
    CloudWatch(CloudWatchMetric),
}

impl MetricDetails {
    /// Two metrics with equal details are fetched once per pass.
    pub fn cache_key(&self) -> String {
        // Strings, finite numbers and pairs of strings: these details always serialise.
        serde_json::to_string(self).expect("metric details always serialise")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudWatchMetric {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<(String, String)>,
    pub period: i64,
    pub statistic: String,
    pub unit: Option<String>,
    /// `MetricAggregationTimeSlice`: the window `[now − slice, now]`.
    pub time_slice: i64,
}

/// One entry of a labourer's `health_metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthMetric {
    pub name: String,
    pub details: MetricDetails,
    pub feelings: Feelings,
    /// The status to assume when the value cannot be fetched (else the config-wide `metric_failure_status`).
    pub failure_status: Option<EcoStatus>,
}

pub(super) fn read_status(r: &mut Reader, obj: &Map<String, Value>, key: &str, path: &str) -> Option<EcoStatus> {
    let n = r.int(obj, key, path, 0)?;
    match u8::try_from(n).ok().and_then(|n| EcoStatus::try_from(n).ok()) {
        Some(s) => Some(s),
        None => {
            r.error(join(path, key), format!("an eco status is 0..4, got {n}"));
            None
        }
    }
}

/// A status key of `feelings` or `invocation_number_coefficient`: an integer 0..4, given as a JSON string key.
pub(super) fn status_key(k: &str) -> Option<EcoStatus> {
    let t = k.trim();
    let n: u8 = t.parse().ok().or_else(|| {
        t.parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && (0.0..=4.0).contains(f))
            .map(|f| f as u8)
    })?;
    EcoStatus::try_from(n).ok()
}

pub(super) fn read_metric(r: &mut Reader, name: &str, mv: &Value, path: &str) -> Option<HealthMetric> {
    let Value::Object(m) = mv else {
        r.error(
            path,
            format!(
                "expected an object with `details`, `feelings` and `feeling_comparison_operator`, got {}",
                show(mv)
            ),
        );
        return None;
    };
    r.unknown_keys(
        m,
        path,
        &["details", "feelings", "feeling_comparison_operator", "failure_status"],
        |_| false,
    );
    let details = match r.object(m, "details", path) {
        Some(d) => read_details(r, d, &join(path, "details")),
        None => {
            r.error(join(path, "details"), "a health metric needs `details`");
            None
        }
    };
    let op = match m.get("feeling_comparison_operator") {
        Some(Value::String(s)) => match Comparison::parse(s) {
            Some(op) => Some(op),
            None => {
                r.error(
                    join(path, "feeling_comparison_operator"),
                    format!("expected one of <, <=, >, >= (or lt, le, gt, ge), got \"{s}\""),
                );
                None
            }
        },
        Some(other) => {
            r.error(
                join(path, "feeling_comparison_operator"),
                format!("expected a string such as \"<=\", got {}", show(other)),
            );
            None
        }
        None => {
            r.error(
                join(path, "feeling_comparison_operator"),
                "a health metric needs `feeling_comparison_operator` (e.g. \"<=\")",
            );
            None
        }
    };
    let fpath = join(path, "feelings");
    let mut levels = Vec::new();
    match r.object(m, "feelings", path) {
        Some(f) => {
            for (k, v) in f {
                let Some(status) = status_key(k) else {
                    r.error(join(&fpath, k), format!("keys are eco statuses 0..4, got \"{k}\""));
                    continue;
                };
                match v.as_f64() {
                    Some(t) => levels.push((status, t)),
                    None => r.error(join(&fpath, k), format!("expected a number, got {}", show(v))),
                }
            }
        }
        None => r.error(
            fpath.clone(),
            "a health metric needs `feelings`, e.g. {\"3\": 50, \"4\": 25}",
        ),
    }
    let failure_status = read_status(r, m, "failure_status", path);
    let op = op?;
    let feelings = match Feelings::new(levels, op) {
        Ok(f) => f,
        Err(e) => {
            r.error(fpath, e.to_string());
            return None;
        }
    };
    Some(HealthMetric {
        name: name.to_string(),
        details: details?,
        feelings,
        failure_status,
    })
}

pub(super) fn read_details(r: &mut Reader, d: &Map<String, Value>, path: &str) -> Option<MetricDetails> {
    let timeout = |r: &mut Reader| r.positive_secs(d, "timeout", path).unwrap_or(10.0);
    if d.contains_key("command") {
        r.unknown_keys(d, path, &["command", "timeout"], |_| false);
        let command = r.command(d, "command", path)?;
        return Some(MetricDetails::Command {
            command,
            timeout_secs: timeout(r),
        });
    }
    if d.contains_key("prometheus") {
        r.unknown_keys(d, path, &["prometheus", "query", "timeout"], |_| false);
        let base_url = r.string(d, "prometheus", path);
        let query = r.string(d, "query", path);
        if query.is_none() && !d.contains_key("query") {
            r.error(join(path, "query"), "a prometheus metric needs `query` (PromQL)");
        }
        return Some(MetricDetails::Prometheus {
            base_url: base_url?,
            query: query?,
            timeout_secs: timeout(r),
        });
    }
    if d.contains_key("url") {
        r.unknown_keys(d, path, &["url", "pointer", "timeout"], |_| false);
        let url = r.string(d, "url", path)?;
        let pointer = match d.get("pointer") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(p)) if p.is_empty() || p.starts_with('/') => p.clone(),
            Some(other) => {
                r.error(
                    join(path, "pointer"),
                    format!("expected a JSON pointer such as \"/cpu\", got {}", show(other)),
                );
                return None;
            }
        };
        return Some(MetricDetails::HttpJson {
            url,
            pointer,
            timeout_secs: timeout(r),
        });
    }
    if d.contains_key("Namespace") || d.contains_key("MetricName") || d.contains_key("Name") {
        return read_cloudwatch(r, d, path).map(MetricDetails::CloudWatch);
    }
    r.error(
        path,
        "unknown metric source: give `command`, `url` (+ `pointer`), `prometheus` (+ `query`), or CloudWatch's \
         `Namespace` and `MetricName`",
    );
    None
}

pub(super) fn read_cloudwatch(r: &mut Reader, d: &Map<String, Value>, path: &str) -> Option<CloudWatchMetric> {
    r.unknown_keys(
        d,
        path,
        &[
            "Namespace",
            "MetricName",
            "Name",
            "Dimensions",
            "Period",
            "Statistics",
            "Unit",
            "MetricAggregationTimeSlice",
        ],
        |_| false,
    );
    let namespace = r.string(d, "Namespace", path);
    if namespace.is_none() && !d.contains_key("Namespace") {
        r.error(join(path, "Namespace"), "a CloudWatch metric needs `Namespace`");
    }
    let metric_name = r.string(d, "MetricName", path).or_else(|| r.string(d, "Name", path));
    if metric_name.is_none() && !d.contains_key("MetricName") && !d.contains_key("Name") {
        r.error(
            join(path, "MetricName"),
            "a CloudWatch metric needs `MetricName` (or `Name`)",
        );
    }
    let mut dimensions = Vec::new();
    match d.get("Dimensions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let ipath = format!("{}[{i}]", join(path, "Dimensions"));
                match (
                    item.get("Name").and_then(Value::as_str),
                    item.get("Value").and_then(Value::as_str),
                ) {
                    (Some(n), Some(v)) => dimensions.push((n.to_string(), v.to_string())),
                    _ => r.error(
                        ipath,
                        format!("expected {{\"Name\": ..., \"Value\": ...}}, got {}", show(item)),
                    ),
                }
            }
        }
        Some(other) => r.error(
            join(path, "Dimensions"),
            format!("expected an array, got {}", show(other)),
        ),
    }
    let period = r.int_in(d, "Period", path, 1, MAX_SECONDS).unwrap_or(60);
    let time_slice = r
        .int_in(d, "MetricAggregationTimeSlice", path, 1, MAX_SECONDS)
        .unwrap_or(300);
    let statistic = match d.get("Statistics") {
        None | Some(Value::Null) => Some("Average".to_string()),
        Some(Value::Array(items)) if items.len() == 1 => match items[0].as_str() {
            Some(s @ ("Average" | "Maximum" | "Minimum" | "Sum" | "SampleCount")) => Some(s.to_string()),
            _ => {
                r.error(
                    join(path, "Statistics"),
                    format!(
                        "expected one of Average, Maximum, Minimum, Sum, SampleCount, got {}",
                        show(&items[0])
                    ),
                );
                None
            }
        },
        Some(other) => {
            r.error(
                join(path, "Statistics"),
                format!("expected a list of exactly one statistic, got {}", show(other)),
            );
            None
        }
    };
    let unit = r.string(d, "Unit", path);
    Some(CloudWatchMetric {
        namespace: namespace?,
        metric_name: metric_name?,
        dimensions,
        period,
        statistic: statistic?,
        unit,
        time_slice,
    })
}
