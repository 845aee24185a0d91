//! The job as it arrives: `{"job": <object or JSON text>}` or the job itself, as an object or JSON text.

use super::JobError;
use serde_json::{Map, Value};

/// A job, ready to chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The labourer (`lambda_name`, an ARN trimmed to the function name).
    pub labourer: String,
    /// `job_id` if the job names itself; the engine derives one from the content otherwise.
    pub job_id: Option<String>,
    /// Everything else: what gets chunked into task payloads (`job_schema_name` stays, as in Python sosw).
    pub body: Map<String, Value>,
}

fn describe(v: &Value) -> String {
    crate::payload::shown(v)
}

fn object(v: &Value) -> Result<Map<String, Value>, JobError> {
    match v {
        Value::Object(m) => Ok(m.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(JobError::NotAnObject(describe(v))),
        },
        other => Err(JobError::NotAnObject(describe(other))),
    }
}

/// Reads a Scheduler event (SCH-20).
pub fn extract_job(event: &Value) -> Result<Job, JobError> {
    let outer = object(event)?;
    let mut body = match outer.get("job") {
        Some(job) => object(job)?,
        None => outer,
    };
    let labourer = match body.remove("lambda_name") {
        // A name that trims to nothing (`":"`) names no labourer.
        Some(Value::String(s)) if !trim_arn_to_name(s.trim()).trim().is_empty() => trim_arn_to_name(s.trim()),
        Some(other) => {
            return Err(JobError::BadValue {
                key: "lambda_name".into(),
                expected: "a labourer name or Lambda ARN".into(),
                got: describe(&other),
            })
        }
        None => return Err(JobError::MissingLabourer),
    };
    let job_id = match body.remove("job_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(JobError::Invalid {
                path: "job_id".into(),
                reason: format!(
                    "must not be empty, got {} (leave `job_id` out to have it derived from the job)",
                    describe(&Value::String(s))
                ),
            })
        }
        Some(Value::String(s)) => Some(s),
        // A number is refused too: `42` and `"42"` would be one job, `4.2e1` another.
        Some(other) => {
            return Err(JobError::BadValue {
                key: "job_id".into(),
                expected: "a string".into(),
                got: describe(&other),
            })
        }
    };
    Ok(Job { labourer, job_id, body })
}

/// The resource name of an ARN (a Lambda function without its version or alias, a bucket, a table, a role), or
/// the input if it is not an ARN (HLP-2).
pub fn trim_arn_to_name(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, _, service, _, _, resource] = parts.as_slice() else {
        return arn.rsplit(':').next().unwrap_or(arn).to_string();
    };
    if let Some((_, rest)) = resource.split_once('/') {
        return rest.split(['/', ':']).next().unwrap_or(rest).to_string();
    }
    let mut segments = resource.split(':');
    match (*service, segments.next(), segments.next()) {
        (_, Some(_kind), Some(name)) if !name.is_empty() => name.to_string(),
        (_, Some(name), _) => name.to_string(),
        _ => resource.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sch_20_extract_job() {
        let want = Job {
            labourer: "foo".into(),
            job_id: None,
            body: json!({"payload_attr": "val"}).as_object().cloned().expect("object"),
        };
        let inner = json!({"lambda_name": "foo", "payload_attr": "val"});
        let arn = json!({"lambda_name": "arn:aws:lambda:us-west-2:000000000000:function:foo", "payload_attr": "val"});
        for event in [
            json!({"job": inner.clone()}),
            inner.clone(),
            arn,
            json!(inner.to_string()),
            json!(json!({"job": inner.clone()}).to_string()),
            json!({"job": inner.to_string()}),
        ] {
            assert_eq!(extract_job(&event), Ok(want.clone()), "{event}");
        }
        for bad in [
            json!(42),
            json!({"payload_attr": "val"}),
            json!("{'payload_attr': 'val'}"),
            json!({"job": {"payload_attr": "val"}}),
            json!({"job": "bad one"}),
            json!({"lambda_name": 5}),
            json!({"lambda_name": ":"}),
        ] {
            assert!(extract_job(&bad).is_err(), "{bad}");
        }
        for (bad, want) in [
            (
                json!(""),
                "`job_id`: must not be empty, got \"\" (leave `job_id` out to have it derived from the job)",
            ),
            (
                json!("  "),
                "`job_id`: must not be empty, got \"  \" (leave `job_id` out to have it derived from the job)",
            ),
            (json!(42), "`job_id` must be a string, got 42"),
            (json!(["a"]), "`job_id` must be a string, got [\"a\"]"),
            (json!({"id": 1}), "`job_id` must be a string, got {\"id\":1}"),
            (json!(true), "`job_id` must be a string, got true"),
        ] {
            let err = extract_job(&json!({"lambda_name": "foo", "job_id": bad})).expect_err("refused");
            assert_eq!(err.to_string(), want, "{bad}");
        }
        let with_id = extract_job(&json!({"lambda_name": "foo", "job_id": "daily-2019-01-30"})).expect("job");
        assert_eq!(
            (with_id.job_id.as_deref(), with_id.body.len()),
            (Some("daily-2019-01-30"), 0)
        );
    }

    #[test]
    fn hlp_2_trim_arn_to_name() {
        for (arn, name) in [
            ("bar_with_no_arn", "bar_with_no_arn"),
            ("arn:aws:lambda:us-west-2:000000000000:function:bar", "bar"),
            ("arn:aws:lambda:us-west-2:000000000000:function:bar:", "bar"),
            ("arn:aws:lambda:us-west-2:000000000000:function:bar:$LATEST", "bar"),
            ("arn:aws:lambda:us-west-2:000000000000:function:bar:12", "bar"),
            ("arn:aws:s3:::autotest-sosw", "autotest-sosw"),
            (
                "arn:aws:iam::000000000000:role/aws-code-deploy-role",
                "aws-code-deploy-role",
            ),
            ("arn:aws:dynamodb:us-west-2:000000000000:table/sosw_tasks", "sosw_tasks"),
        ] {
            assert_eq!(trim_arn_to_name(arn), name, "{arn}");
        }
    }
}
