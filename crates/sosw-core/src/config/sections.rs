//! Config sections other components read, validated once here with key paths (no component re-reads raw JSON):
//! the DynamoDB table names, the Scheduler's S3 queue location, and the job schemas.

use super::reader::{join, Reader};
use crate::schedule::{JobError, Schema};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Table and index names a config gives (Python sosw's keys); `None` keeps the default name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableNames {
    /// `task_config.dynamo_db_config.table_name`
    pub tasks: Option<String>,
    /// `task_config.dynamo_db_config.index_greenfield`
    pub greenfield_index: Option<String>,
    /// `task_config.sosw_closed_tasks_table`
    pub closed: Option<String>,
    /// `task_config.sosw_closed_tasks_labourer_status_index`
    pub closed_index: Option<String>,
    /// `task_config.sosw_retry_tasks_table`
    pub retry: Option<String>,
    /// `task_config.sosw_retry_tasks_greenfield_index`
    pub retry_index: Option<String>,
    /// `meta_handler_config.dynamo_db_config.table_name`
    pub meta: Option<String>,
    /// `jobs_table` (sosw-rs)
    pub jobs: Option<String>,
    /// `labourers_table` (sosw-rs)
    pub labourers: Option<String>,
}

/// Where the Scheduler's continuation files go: `queue_bucket`, `s3_prefix`, `queue_file` (Python sosw's keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub bucket: String,
    /// Without surrounding slashes.
    pub prefix: String,
    pub file: String,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            bucket: "autotest-bucket".into(),
            prefix: "sosw/scheduler".into(),
            file: "tasks_queue.txt".into(),
        }
    }
}

/// `job_schema` and `job_schema_variants`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSchemas {
    pub job_schema: Option<Schema>,
    pub variants: BTreeMap<String, Schema>,
}

impl JobSchemas {
    /// The schema a job asks for: `job_schema_variants.<name>` if it names one (an unknown name is an error), else
    /// `job_schema`, else `job_schema_variants.default`, else none (one task per job).
    pub fn schema(&self, name: Option<&str>) -> Result<Schema, JobError> {
        match name {
            Some(n) => self
                .variants
                .get(n)
                .cloned()
                .ok_or_else(|| JobError::UnknownSchema(n.to_string())),
            None => Ok(self
                .job_schema
                .clone()
                .or_else(|| self.variants.get("default").cloned())
                .unwrap_or_default()),
        }
    }
}

pub(super) fn read_table_names(r: &mut Reader, top: &Map<String, Value>, tc: &Map<String, Value>) -> TableNames {
    let empty = Map::new();
    let ddb = r.object(tc, "dynamo_db_config", "task_config").unwrap_or(&empty);
    // Its type is checked where `write_meta_to_ddb` is read.
    let meta = top
        .get("meta_handler_config")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let meta_ddb = r
        .object(meta, "dynamo_db_config", "meta_handler_config")
        .unwrap_or(&empty);
    let ddb_path = "task_config.dynamo_db_config";
    TableNames {
        tasks: r.string(ddb, "table_name", ddb_path),
        greenfield_index: r.string(ddb, "index_greenfield", ddb_path),
        closed: r.string(tc, "sosw_closed_tasks_table", "task_config"),
        closed_index: r.string(tc, "sosw_closed_tasks_labourer_status_index", "task_config"),
        retry: r.string(tc, "sosw_retry_tasks_table", "task_config"),
        retry_index: r.string(tc, "sosw_retry_tasks_greenfield_index", "task_config"),
        meta: r.string(meta_ddb, "table_name", "meta_handler_config.dynamo_db_config"),
        jobs: r.string(top, "jobs_table", ""),
        labourers: r.string(top, "labourers_table", ""),
    }
}

pub(super) fn read_queue(r: &mut Reader, top: &Map<String, Value>) -> QueueSettings {
    let d = QueueSettings::default();
    let prefix = match top.get("s3_prefix") {
        // An empty prefix is meaningful: files at the bucket's root.
        Some(Value::String(p)) => p.trim_matches('/').to_string(),
        None | Some(Value::Null) => d.prefix,
        Some(other) => {
            r.error("s3_prefix", format!("expected a string, got {other}"));
            d.prefix
        }
    };
    QueueSettings {
        bucket: r.string(top, "queue_bucket", "").unwrap_or(d.bucket),
        prefix,
        file: r.string(top, "queue_file", "").unwrap_or(d.file),
    }
}

pub(super) fn read_job_schemas(r: &mut Reader, top: &Map<String, Value>) -> JobSchemas {
    let mut schemas = JobSchemas::default();
    if let Some(schema) = top.get("job_schema").filter(|v| !v.is_null()) {
        match Schema::parse(schema, "job_schema") {
            Ok(s) => schemas.job_schema = Some(s),
            Err(e) => r.error("job_schema", e.to_string()),
        }
    }
    if let Some(variants) = r.object(top, "job_schema_variants", "") {
        for (name, schema) in variants {
            let path = join("job_schema_variants", name);
            match Schema::parse(schema, &path) {
                Ok(s) => {
                    schemas.variants.insert(name.clone(), s);
                }
                Err(e) => r.error(path, e.to_string()),
            }
        }
    }
    schemas
}
