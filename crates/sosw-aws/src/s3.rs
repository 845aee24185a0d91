//! The Scheduler's continuation files in S3 (reference §2.6, §5.9.6).
//!
//! A job that does not fit in one Lambda invocation leaves one object, `<s3_prefix>/<stem>_<job_id>.json`, in the
//! `queue_bucket`, and invokes the Scheduler again with `{"file_name": "<key>"}`. The object holds the job and the day
//! it was planned on ([`Continuation`]); the job's progress is in the store, so the next invocation plans the same
//! tasks with the same ids, skips the ones recorded as written and goes on. The object is deleted when the job is
//! finished. (Python sosw passed its local `/tmp` path instead of the key, so its continuations never ran.)

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use serde_json::{json, Map, Value};
use sosw_core::config::QueueSettings;

/// Where the continuation files are: sosw's config keys `queue_bucket` and `s3_prefix`, `queue_file` for the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLocation {
    pub bucket: String,
    /// Without surrounding slashes.
    pub prefix: String,
    /// The stem and extension of `queue_file` (`tasks_queue`, `txt`): continuation names start with the stem.
    pub stem: String,
}

impl QueueLocation {
    /// From the Scheduler's config (`queue_bucket`, `s3_prefix`, `queue_file`, validated with it).
    pub fn from_settings(q: &QueueSettings) -> QueueLocation {
        QueueLocation {
            bucket: q.bucket.clone(),
            prefix: q.prefix.trim_matches('/').to_string(),
            stem: q
                .file
                .rsplit_once('.')
                .map_or(q.file.as_str(), |(stem, _)| stem)
                .to_string(),
        }
    }

    /// The key of `job_id`'s continuation.
    pub fn key(&self, job_id: &str) -> String {
        let name = format!("{}_{job_id}.json", self.stem);
        if self.prefix.is_empty() {
            name
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

/// What the next invocation needs to continue a job: the job itself (its `job_id` set) and the day (`YYYY-MM-DD`) its
/// relative periods resolved against.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    pub job: Map<String, Value>,
    pub today: String,
}

impl Continuation {
    pub fn to_json(&self) -> Value {
        json!({"version": 1, "job": self.job, "today": self.today})
    }

    pub fn from_json(v: &Value) -> Result<Continuation, QueueError> {
        let bad = |what: &str| QueueError::Invalid(format!("a continuation file needs {what}"));
        if v.get("version").and_then(Value::as_u64) != Some(1) {
            return Err(bad("`\"version\": 1`"));
        }
        Ok(Continuation {
            job: v
                .get("job")
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| bad("a `job` object"))?,
            today: v
                .get("today")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad("`today` (YYYY-MM-DD)"))?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "s3://{bucket}/{key} does not exist (the job was finished by another invocation, or the file was removed)"
    )]
    Missing { bucket: String, key: String },
    #[error("{0}")]
    Invalid(String),
    #[error("S3: {0}")]
    S3(String),
}

/// Continuation files in one bucket.
#[derive(Debug, Clone)]
pub struct QueueFiles {
    client: aws_sdk_s3::Client,
    pub location: QueueLocation,
}

fn s3_err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> QueueError {
    QueueError::S3(DisplayErrorContext(&e).to_string())
}

impl QueueFiles {
    pub fn new(client: aws_sdk_s3::Client, location: QueueLocation) -> QueueFiles {
        QueueFiles { client, location }
    }

    /// Writes `job_id`'s continuation; returns its key.
    pub async fn save(&self, job_id: &str, c: &Continuation) -> Result<String, QueueError> {
        let key = self.location.key(job_id);
        self.client
            .put_object()
            .bucket(&self.location.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(c.to_json().to_string().into_bytes()))
            .send()
            .await
            .map_err(s3_err)?;
        Ok(key)
    }

    /// Reads the continuation at `key`.
    pub async fn load(&self, key: &str) -> Result<Continuation, QueueError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(QueueError::Missing {
                    bucket: self.location.bucket.clone(),
                    key: key.to_string(),
                })
            }
            Err(e) => return Err(s3_err(e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| QueueError::S3(e.to_string()))?
            .into_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| QueueError::Invalid(format!("s3://{}/{key} is not JSON: {e}", self.location.bucket)))?;
        Continuation::from_json(&v).map_err(|e| {
            QueueError::Invalid(format!(
                "s3://{}/{key} is not a continuation: {e}",
                self.location.bucket
            ))
        })
    }

    /// Removes the continuation at `key` (a missing object is not an error).
    pub async fn delete(&self, key: &str) -> Result<(), QueueError> {
        self.client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_reads_sosw_keys_and_strips_slashes() {
        let config = |v: serde_json::Value| sosw_core::Config::from_value(&v).expect("config").queue;
        let l = QueueLocation::from_settings(&config(json!({"queue_bucket": "b", "s3_prefix": "/x/y/"})));
        assert_eq!(l.key("j1"), "x/y/tasks_queue_j1.json");
        assert_eq!(l.bucket, "b");
        let d = QueueLocation::from_settings(&config(json!({})));
        assert_eq!(
            (d.bucket.as_str(), d.key("j")),
            ("autotest-bucket", "sosw/scheduler/tasks_queue_j.json".to_string())
        );
        let flat = QueueLocation::from_settings(&config(json!({"s3_prefix": "", "queue_file": "q.txt"})));
        assert_eq!(flat.key("j"), "q_j.json");
    }

    #[test]
    fn continuations_round_trip_and_refuse_other_documents() {
        let c = Continuation {
            job: json!({"lambda_name": "w", "job_id": "j"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            today: "2019-01-30".into(),
        };
        assert_eq!(Continuation::from_json(&c.to_json()).ok(), Some(c));
        for bad in [
            json!({"job": {}, "today": "x"}),
            json!({"version": 1, "today": "x"}),
            json!([1]),
        ] {
            assert!(
                matches!(Continuation::from_json(&bad), Err(QueueError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
