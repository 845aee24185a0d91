//! The tables of Python sosw (reference §2.1–2.5), with their configurable names, and their creation.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, LocalSecondaryIndex, Projection,
    ProjectionType, ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use sosw_core::config::TableNames;
use sosw_core::ports::StoreError;

/// Table and index names; the defaults are Python sosw's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub tasks: String,
    pub greenfield_index: String,
    pub closed: String,
    pub closed_index: String,
    pub retry: String,
    pub retry_index: String,
    pub meta: String,
    /// New in sosw-rs: the Scheduler's job progress.
    pub jobs: String,
    /// New in sosw-rs: the dispatch state of labourers (the circuit breaker).
    pub labourers: String,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            tasks: "sosw_tasks".into(),
            greenfield_index: "sosw_tasks_greenfield".into(),
            closed: "sosw_closed_tasks".into(),
            closed_index: "labourer_task_status_with_time".into(),
            retry: "sosw_retry_tasks".into(),
            retry_index: "labourer_id_greenfield".into(),
            meta: "sosw_tasks_meta".into(),
            jobs: "sosw_jobs".into(),
            labourers: "sosw_labourers".into(),
        }
    }
}

impl Tables {
    /// Python sosw's names with a prefix on every table (indexes keep their names), e.g. one set per environment.
    pub fn prefixed(prefix: &str) -> Tables {
        let d = Tables::default();
        Tables {
            tasks: format!("{prefix}{}", d.tasks),
            closed: format!("{prefix}{}", d.closed),
            retry: format!("{prefix}{}", d.retry),
            meta: format!("{prefix}{}", d.meta),
            jobs: format!("{prefix}{}", d.jobs),
            labourers: format!("{prefix}{}", d.labourers),
            ..d
        }
    }

    /// The names a config gives ([`sosw_core::config::TableNames`], validated with the config); the others keep
    /// Python sosw's defaults.
    /// Every table's name (not the indexes').
    pub fn all(&self) -> [&str; 6] {
        [
            &self.tasks,
            &self.closed,
            &self.retry,
            &self.meta,
            &self.labourers,
            &self.jobs,
        ]
    }

    pub fn from_names(names: &TableNames) -> Tables {
        let d = Tables::default();
        let pick = |given: &Option<String>, default: String| given.clone().unwrap_or(default);
        Tables {
            tasks: pick(&names.tasks, d.tasks),
            greenfield_index: pick(&names.greenfield_index, d.greenfield_index),
            closed: pick(&names.closed, d.closed),
            closed_index: pick(&names.closed_index, d.closed_index),
            retry: pick(&names.retry, d.retry),
            retry_index: pick(&names.retry_index, d.retry_index),
            meta: pick(&names.meta, d.meta),
            jobs: pick(&names.jobs, d.jobs),
            labourers: pick(&names.labourers, d.labourers),
        }
    }
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(build_err)
}

fn attr(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(build_err)
}

pub(crate) fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Creates the tables that do not exist yet (on-demand billing). Existing tables are left as they are.
pub async fn ensure(client: &Client, t: &Tables) -> Result<(), StoreError> {
    use KeyType::{Hash, Range};
    use ScalarAttributeType::{N, S};
    let existing = crate::existing_tables(client).await?;
    let all = Projection::builder().projection_type(ProjectionType::All).build();
    if !existing.contains(&t.tasks) {
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(&t.greenfield_index)
            .key_schema(key("labourer_id", Hash)?)
            .key_schema(key("greenfield", Range)?)
            .projection(all.clone())
            .build()
            .map_err(build_err)?;
        client
            .create_table()
            .table_name(&t.tasks)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("task_id", Hash)?)
            .attribute_definitions(attr("task_id", S)?)
            .attribute_definitions(attr("labourer_id", S)?)
            .attribute_definitions(attr("greenfield", N)?)
            .global_secondary_indexes(gsi)
            .send()
            .await
            .map_err(crate::sdk_err)?;
    }
    if !existing.contains(&t.closed) {
        let projection = Projection::builder()
            .projection_type(ProjectionType::Include)
            .non_key_attributes("completed_at")
            .non_key_attributes("greenfield")
            .non_key_attributes("attempts")
            .build();
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(&t.closed_index)
            .key_schema(key("labourer_id_task_status", Hash)?)
            .key_schema(key("closed_at", Range)?)
            .projection(projection)
            .build()
            .map_err(build_err)?;
        client
            .create_table()
            .table_name(&t.closed)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("task_id", Hash)?)
            .attribute_definitions(attr("task_id", S)?)
            .attribute_definitions(attr("labourer_id_task_status", S)?)
            .attribute_definitions(attr("closed_at", N)?)
            .global_secondary_indexes(gsi)
            .send()
            .await
            .map_err(crate::sdk_err)?;
    }
    if !existing.contains(&t.retry) {
        let lsi = LocalSecondaryIndex::builder()
            .index_name(&t.retry_index)
            .key_schema(key("labourer_id", Hash)?)
            .key_schema(key("desired_launch_time", Range)?)
            .projection(all.clone())
            .build()
            .map_err(build_err)?;
        client
            .create_table()
            .table_name(&t.retry)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("labourer_id", Hash)?)
            .key_schema(key("task_id", Range)?)
            .attribute_definitions(attr("labourer_id", S)?)
            .attribute_definitions(attr("task_id", S)?)
            .attribute_definitions(attr("desired_launch_time", N)?)
            .local_secondary_indexes(lsi)
            .send()
            .await
            .map_err(crate::sdk_err)?;
    }
    if !existing.contains(&t.meta) {
        client
            .create_table()
            .table_name(&t.meta)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("task_id", Hash)?)
            .key_schema(key("created_at", Range)?)
            .attribute_definitions(attr("task_id", S)?)
            .attribute_definitions(attr("created_at", N)?)
            .send()
            .await
            .map_err(crate::sdk_err)?;
    }
    if !existing.contains(&t.labourers) {
        client
            .create_table()
            .table_name(&t.labourers)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("labourer_id", Hash)?)
            .attribute_definitions(attr("labourer_id", S)?)
            .send()
            .await
            .map_err(crate::sdk_err)?;
    }
    if !existing.contains(&t.jobs) {
        client
            .create_table()
            .table_name(&t.jobs)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("job_id", Hash)?)
            .attribute_definitions(attr("job_id", S)?)
            .send()
            .await
            .map_err(crate::sdk_err)?;
    }
    for table in t.all() {
        wait_until_active(client, table).await?;
    }
    Ok(())
}

/// A table just created is `CREATING` for a while (seconds on DynamoDB), and refuses reads and writes until it is
/// `ACTIVE`, with its indexes: `init` returns only when every table can be used.
async fn wait_until_active(client: &Client, table: &str) -> Result<(), StoreError> {
    use aws_sdk_dynamodb::types::{IndexStatus, TableStatus};
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);
    const POLL: std::time::Duration = std::time::Duration::from_millis(200);
    let mut waited = std::time::Duration::ZERO;
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(crate::sdk_err)?;
        let Some(d) = out.table() else {
            return Err(StoreError::Unavailable(format!(
                "DescribeTable `{table}` returned no table"
            )));
        };
        let indexes_active = d
            .global_secondary_indexes()
            .iter()
            .all(|i| i.index_status().is_none_or(|s| *s == IndexStatus::Active));
        if d.table_status() == Some(&TableStatus::Active) && indexes_active {
            return Ok(());
        }
        if waited >= PATIENCE {
            return Err(StoreError::Unavailable(format!(
                "table `{table}` is still {:?} after {} s",
                d.table_status(),
                PATIENCE.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
        waited += POLL;
    }
}
