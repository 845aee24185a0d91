//! The DynamoDB store: Python sosw's tables, keys, indexes and attribute types (see the crate's documentation).
//!
//! - `mod.rs`: the store, its constructors and limits;
//! - `requests.rs`: reads, writes and transactions (pagination, batching, retries of unprocessed parts);
//! - `report.rs`: the one conditional update every worker report is;
//! - `moves.rs`: each move between tables, conditional and atomic;
//! - `store.rs`: the port (`TaskStore`), adding the audit trail to the moves;
//! - `labourers.rs`: the labourers' items (`LabourerStore`: breaker, controls, dispatch lease);
//! - `registry.rs`: which labourers have tasks (`labourer_ids` without reading the task tables);
//! - `closed_counts/`: the closed tasks counted without reading the whole archive (`plan.rs` its decisions);
//! - `items.rs`, `meta.rs`: items to values, and the audit trail.

mod closed_counts;
mod items;
mod labourers;
mod meta;
mod moves;
mod registry;
mod report;
mod requests;
mod store;

use crate::{item, sdk, tables};
use closed_counts::Settled;
use items::*;
use moves::*;
use report::*;

use crate::item::{get_i64, greenfield_of, item_of, n, n_f64, s, task_from_item, Item};
use crate::tables::build_err;
use crate::{Aws, Tables};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, PutRequest, ReturnValue, Select, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures::stream::{self, StreamExt, TryStreamExt};
use sosw_core::breaker::LabourerState;
use sosw_core::greenfield::{labourer_counts, queued_rows};
use sosw_core::meta::{stamped, MetaAction, MetaEvent, Recorded, Stamp};
use sosw_core::moves::{
    check_report, closed_refusal, moved_since_claimed, not_waiting_for_retry, partition_new, plan_completion,
    stale_report, CompletionPlan, Found,
};
use sosw_core::ports::{
    retry_refusal, ArchiveExpect, Claim, Completion, CreateReport, JobProgress, LabourerCounts, MetaSink, StoreError,
    StoreResult, Table, TaskQuery, TaskStore,
};
use sosw_core::task::closed_status;
use sosw_core::{Greenfield, Invocation, Markers, NewTask, Place, StoredTask, Task, Time, WorkerReport};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-millisecond offsets that keep meta keys (`task_id`, `created_at`) of same-millisecond events apart: one
/// sequence per process, so that the essentials of one process (each with its own store) never collide.
pub(crate) static META_SEQ: AtomicU64 = AtomicU64::new(0);

/// Bumped by every worker report (`complete`, `fail`) on a live task: an item copy with the same `completed_at`,
/// greenfield and revision is the item as it is, whatever index it was read from. (Python sosw's WorkerAssistant
/// does not bump it; its reports change `completed_at`, except a second report within the same second.)
pub(crate) const REVISION: &str = "sosw_rev";

/// Completed items kept between `list_completed` and `archive` (a bound, not a cache size to tune).
pub(crate) const MAX_COMPLETED_COPIES: usize = 100_000;

/// How long a claim may stay invisible to `count_running`, which reads the greenfield index (eventually
/// consistent; DynamoDB replicates it usually within a fraction of a second).
pub(crate) const COUNT_SETTLE: Duration = Duration::from_secs(1);

/// Actions in one `TransactWriteItems` (DynamoDB's limit).
pub(crate) const TRANSACTION_ITEMS: usize = 100;

/// What a task's item gains over its life, beyond a second copy of its labourer id: `completed_at`,
/// `desired_launch_time`, `closed_at`, `labourer_id_task_status`, the revision and attempt counters, with margin.
pub(crate) const LIFE_ATTRIBUTE_BYTES: usize = 1024;

/// Bytes of items in one `TransactWriteItems`: DynamoDB's limit is 4 MB, less a margin for what our estimate
/// ([`crate::item::item_size`]) does not count.
pub(crate) const TRANSACTION_BYTES: usize = 3_500_000;

/// Requests of one labourer in flight at once (claims, archive moves).
pub(crate) const IN_FLIGHT: usize = 16;

/// Labourers counted at once by `counts_many` (five live queries and two or four closed ones each).
pub(crate) const COUNTING_LABOURERS: usize = 4;

/// A [`TaskStore`] and [`MetaSink`] on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: Tables,
    /// Throttled responses: counted by the client's interceptor, and here for unprocessed batch items.
    throttled: std::sync::Arc<AtomicU64>,
    /// The completed tasks' items as `list_completed` read them, so that archiving one is a single request when
    /// its item has not changed since (see `archive_one`).
    completed_copies: std::sync::Arc<std::sync::Mutex<HashMap<String, Item>>>,
    /// Moves' audit events on their way to the meta table (group commit, see [`MetaQueue`]).
    meta_queue: std::sync::Arc<MetaQueue>,
    /// When this store last registered each labourer it created tasks of (milliseconds; see `registry.rs`).
    registered: std::sync::Arc<std::sync::Mutex<HashMap<String, i64>>>,
    /// Held by the one rescan that the first `labourer_ids` on never-scanned tables runs (see `registry.rs`).
    first_rescan: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl DynamoStore {
    /// A store on `client`; throttling is not counted unless the client comes from [`DynamoStore::from_aws`].
    pub fn new(client: Client, tables: Tables) -> DynamoStore {
        DynamoStore {
            client,
            tables,
            throttled: std::sync::Arc::default(),
            completed_copies: std::sync::Arc::default(),
            meta_queue: std::sync::Arc::default(),
            registered: std::sync::Arc::default(),
            first_rescan: std::sync::Arc::default(),
        }
    }

    /// A store on `aws`'s DynamoDB client, which counts throttled responses ([`TaskStore::throttled_requests`]).
    pub fn from_aws(aws: &Aws, tables: Tables) -> DynamoStore {
        DynamoStore {
            client: aws.dynamodb(),
            tables,
            throttled: aws.throttle_counter(),
            completed_copies: std::sync::Arc::default(),
            meta_queue: std::sync::Arc::default(),
            registered: std::sync::Arc::default(),
            first_rescan: std::sync::Arc::default(),
        }
    }

    /// A store on AWS as the environment configures it, or with DynamoDB at `endpoint` (`http://127.0.0.1:5000`;
    /// [`Aws::for_store`]).
    pub async fn connect(endpoint: Option<&str>, tables: Tables) -> DynamoStore {
        DynamoStore::from_aws(&Aws::for_store(endpoint).await, tables)
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Writes new tasks (their queue positions already allocated), each only if no task with its id is in the live
    /// table: conditional puts, 100 to a transaction. Returns (created, ids that existed). A task that another
    /// writer created meanwhile (the same job delivered twice and run at once) is never overwritten — an overwrite
    /// would put an invoked task back in the queue, to be invoked again. `create_tasks` uses it after its lookup.
    pub async fn put_new_tasks(&self, tasks: &[Task]) -> StoreResult<(Vec<Task>, Vec<String>)> {
        // A task DynamoDB could not store is refused before anything is written.
        // Room is left for what its life adds (invocation, completion, retry and archive attributes).
        let sizes: Vec<usize> = tasks.iter().map(|t| crate::item::item_size(&item_of(t))).collect();
        let room = |t: &Task| crate::item::MAX_ITEM_BYTES - LIFE_ATTRIBUTE_BYTES - t.labourer_id.len().min(2048);
        if let Some((t, size)) = tasks.iter().zip(&sizes).find(|(t, s)| **s > room(t)) {
            return Err(StoreError::Invalid(format!(
                "task `{}` would be a DynamoDB item of about {size} bytes (its payload is {} bytes): over the {} \
                 bytes a task may start with (DynamoDB's {} per item, less room for what its life adds); nothing \
                 was created",
                t.task_id,
                t.payload.len(),
                room(t),
                crate::item::MAX_ITEM_BYTES
            )));
        }
        let mut created = Vec::with_capacity(tasks.len());
        let mut existing = Vec::new();
        for group in crate::item::groups(&sizes, TRANSACTION_ITEMS, TRANSACTION_BYTES) {
            let mut pending: Vec<&Task> = tasks[group].iter().collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let items = pending
                    .iter()
                    .map(|t| self.put(&self.tables.tasks, item_of(t), Some("attribute_not_exists(task_id)")))
                    .collect::<StoreResult<Vec<_>>>()?;
                let e = match self
                    .client
                    .transact_write_items()
                    .set_transact_items(Some(items))
                    .send()
                    .await
                {
                    Ok(_) => {
                        created.extend(pending.drain(..).cloned());
                        break;
                    }
                    Err(e) => e,
                };
                let reasons = match e.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(c)) => c.cancellation_reasons().to_vec(),
                    _ => return Err(refused_err(e, "the new tasks")),
                };
                let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
                if reasons.len() == pending.len() && (0..pending.len()).any(|i| code(i) == "ConditionalCheckFailed") {
                    let mut rest = Vec::with_capacity(pending.len());
                    for (i, t) in pending.into_iter().enumerate() {
                        if code(i) == "ConditionalCheckFailed" {
                            existing.push(t.task_id.clone());
                        } else {
                            rest.push(t);
                        }
                    }
                    pending = rest;
                } else if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                    self.back_off(&mut attempt).await?;
                } else {
                    return Err(sdk_err(e));
                }
            }
        }
        Ok((created, existing))
    }
}

/// Whether `id` can be a DynamoDB key at all (1 to 2,048 bytes): one that cannot names nothing stored.
pub(crate) fn storable_key(id: &str) -> bool {
    (1..=2048).contains(&id.len())
}

/// Whether a conditional request was refused because its condition did not hold (a lost race, a refusal): the
/// one test every conditional write of the store makes.
pub(crate) fn failed_condition<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

pub(crate) fn sdk_err<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.code() {
        Some(code) if sdk::THROTTLING_CODES.contains(&code) => StoreError::Throttled { retry_after: None },
        Some("ResourceNotFoundException") => StoreError::Schema(format!(
            "a sosw table is missing ({}); create them with `sosw init`",
            e.message().unwrap_or("no message")
        )),
        _ => match &e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                StoreError::Unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())
            }
            // The SDK's own message is only "service error": the context carries the code and DynamoDB's words.
            _ => StoreError::Backend(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string().into()),
        },
    }
}

/// [`sdk_err`] for a request that carries values from a user (new tasks, a worker's report): DynamoDB's
/// `ValidationException` there is about those values (a number out of its range, an item over 400 KB, nesting over
/// 32 levels), so it is the user's to fix — `Invalid`, in DynamoDB's words. Elsewhere the same exception means
/// sosw's tables are not what it expects, and stays a backend error.
pub(crate) fn refused_err<E, R>(e: SdkError<E, R>, what: &str) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.code() {
        Some("ValidationException") => StoreError::Invalid(format!(
            "DynamoDB refused {what}: {}",
            e.message().unwrap_or("no message")
        )),
        _ => sdk_err(e),
    }
}

pub(crate) async fn existing_tables(client: &Client) -> StoreResult<HashSet<String>> {
    let mut out = HashSet::new();
    let mut start: Option<String> = None;
    loop {
        let page = client
            .list_tables()
            .set_exclusive_start_table_name(start)
            .send()
            .await
            .map_err(sdk_err)?;
        out.extend(page.table_names().iter().cloned());
        match page.last_evaluated_table_name() {
            Some(next) => start = Some(next.to_string()),
            None => return Ok(out),
        }
    }
}

/// Why DynamoDB cancelled a transaction.
#[derive(Debug)]
pub(crate) enum Cancelled {
    /// Which of its items' conditions failed (empty when the server does not say).
    Conditions(Vec<bool>),
    /// Another transaction or write held one of its items at that moment (as an error, for who does not retry).
    Conflict(StoreError),
}

/// One paginated Query or Scan.
#[derive(Debug, Default, Clone)]
pub(crate) struct Read {
    table: String,
    index: Option<String>,
    /// `None` makes it a Scan.
    key: Option<String>,
    filter: Option<String>,
    names: Vec<(&'static str, &'static str)>,
    values: Vec<(&'static str, AttributeValue)>,
    backwards: bool,
    limit: Option<usize>,
    count: bool,
    consistent: bool,
    projection: Option<String>,
}
