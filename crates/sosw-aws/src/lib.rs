//! sosw on AWS: the [`LambdaInvoker`], [`CloudWatchMetrics`], the [`SnsNotifier`], and the DynamoDB store: the same tables, keys, indexes and attribute types as Python
//! sosw (reference §2), so that Rust and Python essentials can share them, passing the same conformance suite as
//! the SQLite store.
//!
//! Every move between tables is one `TransactWriteItems` whose conditions make it atomic and conditional (archive:
//! Put closed + Delete live if still completed, or still at the greenfield read; retry: Put retry + Delete live if
//! not completed and still at the greenfield read), and a claim is Python sosw's conditional update, stricter only
//! in also requiring the greenfield as read. Reads of live tasks go through the `sosw_tasks_greenfield` index.
//!
//! Costs worth knowing: finding a task in the retry table by its id alone is a Scan (the table is keyed by
//! labourer, then task), which `get`, `complete` and `fail` do only after the live table missed; listing every
//! labourer scans the three tables.

pub mod cloudwatch;
pub mod config_source;
mod item;
pub mod lambda;
pub mod s3;
mod sdk;
pub mod sns;
mod tables;

pub use cloudwatch::CloudWatchMetrics;
pub use config_source::{ConfigSource, ConfigSourceError};
pub use lambda::{AwsInvokers, LambdaInvoker};
pub use sdk::{is_throttling, retry_config, Aws, MAX_ATTEMPTS};
pub use sns::SnsNotifier;
pub use tables::Tables;

/// Re-exported for the binary, so that it does not name the AWS SDK crates itself.
pub use aws_config::SdkConfig;
pub use aws_sdk_dynamodb::Client as DynamoDbClient;
pub use aws_sdk_ssm::Client as SsmClient;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, PutRequest, ReturnValue, Select, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures::stream::{self, StreamExt};
use item::{get_i64, item_of, n, n_f64, s, task_from_item, Item};
use serde_json::Value;
use sosw_core::breaker::LabourerState;
use sosw_core::greenfield::{is_queue_position, labourer_counts, queued_rows};
use sosw_core::meta::{stamped, MetaAction, MetaEvent, Recorded, Stamp};
use sosw_core::ports::{
    report_refusal, retry_refusal, ArchiveExpect, Claim, Completion, CreateReport, JobProgress, LabourerCounts,
    MetaSink, StoreError, StoreResult, Table, TaskQuery, TaskStore,
};
use sosw_core::task::closed_status;
use sosw_core::{Markers, NewTask, Place, StoredTask, Task, Time, WorkerReport};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tables::build_err;

/// Sub-millisecond offsets that keep meta keys (`task_id`, `created_at`) of same-millisecond events apart: one
/// sequence per process, so that the essentials of one process (each with its own store) never collide.
static META_SEQ: AtomicU64 = AtomicU64::new(0);

/// Bumped by every worker report (`complete`, `fail`) on a live task: an item copy with the same `completed_at`,
/// greenfield and revision is the item as it is, whatever index it was read from. (Python sosw's WorkerAssistant
/// does not bump it; its reports change `completed_at`, except a second report within the same second.)
const REVISION: &str = "sosw_rev";

/// Completed items kept between `list_completed` and `archive` (a bound, not a cache size to tune).
const MAX_COMPLETED_COPIES: usize = 100_000;

/// Actions in one `TransactWriteItems` (DynamoDB's limit).
const TRANSACTION_ITEMS: usize = 100;

/// Requests of one labourer in flight at once (claims, archive moves).
const IN_FLIGHT: usize = 16;

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
}

impl DynamoStore {
    /// A store on `client`; throttling is not counted unless the client comes from [`DynamoStore::from_aws`].
    pub fn new(client: Client, tables: Tables) -> DynamoStore {
        DynamoStore {
            client,
            tables,
            throttled: std::sync::Arc::default(),
            completed_copies: std::sync::Arc::default(),
        }
    }

    /// A store on `aws`'s DynamoDB client, which counts throttled responses ([`TaskStore::throttled_requests`]).
    pub fn from_aws(aws: &Aws, tables: Tables) -> DynamoStore {
        DynamoStore {
            client: aws.dynamodb(),
            tables,
            throttled: aws.throttle_counter(),
            completed_copies: std::sync::Arc::default(),
        }
    }

    /// A store on AWS as the environment configures it, or on a local endpoint (`http://127.0.0.1:5000`) with
    /// dummy credentials.
    pub async fn connect(endpoint: Option<&str>, tables: Tables) -> DynamoStore {
        DynamoStore::from_aws(&Aws::connect(endpoint).await, tables)
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Writes new tasks (their queue positions already allocated), each only if no task with its id is in the live
    /// table: conditional puts, 100 to a transaction. Returns (created, ids that existed). A task that another
    /// writer created meanwhile (the same job delivered twice and run at once) is never overwritten — an overwrite
    /// would put an invoked task back in the queue, to be invoked again. `create_tasks` uses it after its lookup.
    pub async fn put_new_tasks(&self, tasks: &[Task]) -> StoreResult<(Vec<Task>, Vec<String>)> {
        let mut created = Vec::with_capacity(tasks.len());
        let mut existing = Vec::new();
        for chunk in tasks.chunks(TRANSACTION_ITEMS) {
            let mut pending: Vec<&Task> = chunk.iter().collect();
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
                    _ => return Err(sdk_err(e)),
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
            _ => StoreError::Backend(Box::new(e)),
        },
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

/// One paginated Query or Scan.
#[derive(Debug, Default, Clone)]
struct Read {
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

impl DynamoStore {
    async fn read(&self, r: Read) -> StoreResult<(Vec<Item>, u64)> {
        let mut items = Vec::new();
        let mut count = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let names: HashMap<String, String> = r.names.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let values: HashMap<String, AttributeValue> =
                r.values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            let page_limit = r.limit.map(|l| (l.saturating_sub(items.len())).clamp(1, 1000) as i32);
            let (page_items, page_count, next) = match &r.key {
                Some(key) => {
                    let out = self
                        .client
                        .query()
                        .table_name(&r.table)
                        .set_index_name(r.index.clone())
                        .key_condition_expression(key)
                        .set_filter_expression(r.filter.clone())
                        .set_expression_attribute_names((!names.is_empty()).then_some(names))
                        .set_expression_attribute_values((!values.is_empty()).then_some(values))
                        .scan_index_forward(!r.backwards)
                        .set_limit(if r.count { None } else { page_limit })
                        .set_select(r.count.then_some(Select::Count))
                        .set_projection_expression(r.projection.clone())
                        .set_consistent_read(r.consistent.then_some(true))
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(sdk_err)?;
                    (out.items().to_vec(), out.count(), out.last_evaluated_key().cloned())
                }
                None => {
                    let out = self
                        .client
                        .scan()
                        .table_name(&r.table)
                        .set_filter_expression(r.filter.clone())
                        .set_expression_attribute_names((!names.is_empty()).then_some(names))
                        .set_expression_attribute_values((!values.is_empty()).then_some(values))
                        .set_select(r.count.then_some(Select::Count))
                        .set_projection_expression(r.projection.clone())
                        .set_consistent_read(r.consistent.then_some(true))
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(sdk_err)?;
                    (out.items().to_vec(), out.count(), out.last_evaluated_key().cloned())
                }
            };
            count += u64::try_from(page_count).unwrap_or(0);
            items.extend(page_items);
            if let Some(l) = r.limit {
                if items.len() >= l {
                    items.truncate(l);
                    return Ok((items, count));
                }
            }
            match next {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok((items, count)),
            }
        }
    }

    /// A page of one labourer's rows through an index whose range key is `attr` (`base` queries the labourer's
    /// partition): the rows with `attr` in `range` that sort after `after` (`(order, task_id)` of the last row of
    /// the previous page), at least `limit` of them when there are, and every row tying in `attr` with the last —
    /// so that, sorted by `(attr, task_id)` and cut to `limit`, the page is exact. It reads the page and the ties,
    /// never the rest of the listing.
    async fn ordered_page(
        &self,
        base: Read,
        attr: &'static str,
        range: (i64, i64),
        after: Option<(i64, String)>,
        limit: usize,
    ) -> StoreResult<Vec<Item>> {
        let with = |key: &str, values: Vec<(&'static str, AttributeValue)>, after_id: bool, limit: Option<usize>| {
            let mut r = base.clone();
            r.key = Some(format!("{} AND {key}", base.key.as_deref().unwrap_or("#l = :l")));
            r.names.push(("#o", attr));
            r.values.extend(values);
            if after_id {
                r.filter = Some(match &base.filter {
                    Some(f) => format!("({f}) AND #t > :t"),
                    None => "#t > :t".into(),
                });
                r.names.push(("#t", "task_id"));
            }
            r.limit = limit;
            r
        };
        let (mut lo, hi) = range;
        let mut items = Vec::new();
        if let Some((order, task_id)) = after {
            if order > hi {
                return Ok(items);
            }
            if order >= lo {
                let ties = with("#o = :o", vec![(":o", n(order)), (":t", s(task_id))], true, None);
                items.extend(self.read(ties).await?.0);
                match order.checked_add(1) {
                    Some(next) => lo = next,
                    None => return Ok(items),
                }
            }
        }
        if lo > hi || limit == 0 {
            return Ok(items);
        }
        let page = with(
            "#o BETWEEN :lo AND :hi",
            vec![(":lo", n(lo)), (":hi", n(hi))],
            false,
            Some(limit),
        );
        let page = self.read(page).await?.0;
        let last = (page.len() >= limit)
            .then(|| page.last().and_then(|i| get_i64(i, attr)))
            .flatten();
        items.extend(page);
        if let Some(last) = last {
            let ties = self.read(with("#o = :e", vec![(":e", n(last))], false, None)).await?.0;
            let seen: HashSet<String> = items.iter().filter_map(|i| get_s_attr(i, "task_id")).collect();
            items.extend(
                ties.into_iter()
                    .filter(|i| get_s_attr(i, "task_id").is_some_and(|id| !seen.contains(&id))),
            );
        }
        Ok(items)
    }

    /// Live tasks of a labourer in a greenfield range, by the greenfield index.
    fn by_greenfield(&self, labourer: &str, key: &str, filter: Option<&str>) -> Read {
        Read {
            table: self.tables.tasks.clone(),
            index: Some(self.tables.greenfield_index.clone()),
            key: Some(format!("#l = :l AND {key}")),
            filter: filter.map(str::to_string),
            names: vec![("#l", "labourer_id"), ("#g", "greenfield"), ("#c", "completed_at")],
            values: vec![(":l", s(labourer))],
            ..Read::default()
        }
    }

    async fn tasks_of(&self, r: Read) -> StoreResult<Vec<Task>> {
        self.read(r).await?.0.iter().map(task_from_item).collect()
    }

    /// A task's item in a table keyed by `task_id` alone (live or closed), read consistently.
    async fn get_by_id(&self, table: &str, task_id: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("task_id", s(task_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(out.item().cloned())
    }

    async fn get_live(&self, task_id: &str) -> StoreResult<Option<Item>> {
        self.get_by_id(&self.tables.tasks, task_id).await
    }

    async fn get_closed(&self, task_id: &str) -> StoreResult<Option<Item>> {
        self.get_by_id(&self.tables.closed, task_id).await
    }

    /// A retry row by task id alone: the retry table's key starts with the labourer, so this is a Scan.
    async fn find_retry(&self, task_id: &str) -> StoreResult<Option<Item>> {
        let r = Read {
            table: self.tables.retry.clone(),
            filter: Some("#t = :t".into()),
            names: vec![("#t", "task_id")],
            values: vec![(":t", s(task_id))],
            consistent: true,
            ..Read::default()
        };
        Ok(self.read(r).await?.0.into_iter().next())
    }

    async fn already_closed(&self, task_id: &str) -> StoreResult<StoreError> {
        Ok(match self.get_closed(task_id).await? {
            Some(item) => StoreError::conflict(
                task_id,
                format!(
                    "is already closed as {} (closed_at {})",
                    if item.contains_key("completed_at") {
                        "completed"
                    } else {
                        "dead"
                    },
                    get_i64(&item, "closed_at").unwrap_or_default()
                ),
            ),
            None => StoreError::NotFound(task_id.to_string()),
        })
    }

    /// Runs a transaction; a failed condition is a [`StoreError::Conflict`] about `task_id`.
    async fn transact(&self, task_id: &str, items: Vec<TransactWriteItem>, reason: &str) -> StoreResult<()> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
                    let conditional = c
                        .cancellation_reasons()
                        .iter()
                        .any(|r| r.code() == Some("ConditionalCheckFailed"));
                    if conditional || c.cancellation_reasons().is_empty() {
                        return Err(StoreError::conflict(task_id, reason));
                    }
                }
                Err(sdk_err(e))
            }
        }
    }

    fn put(&self, table: &str, item: Item, condition: Option<&str>) -> StoreResult<TransactWriteItem> {
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn delete(
        &self,
        table: &str,
        key: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<TransactWriteItem> {
        let del = Delete::builder()
            .table_name(table)
            .set_key(Some(key))
            .condition_expression(condition)
            .set_expression_attribute_names(
                (!names.is_empty()).then(|| names.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            )
            .set_expression_attribute_values(
                (!values.is_empty()).then(|| values.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
            )
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().delete(del).build())
    }

    /// One `BatchWriteItem` (at most 25 requests), its unprocessed items retried with backoff.
    async fn write_batch(&self, table: String, requests: Vec<WriteRequest>) -> StoreResult<()> {
        let mut pending = HashMap::from([(table, requests)]);
        let mut attempt = 0;
        while !pending.is_empty() {
            let out = self
                .client
                .batch_write_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(sdk_err)?;
            pending = out.unprocessed_items().cloned().unwrap_or_default();
            pending.retain(|_, v| !v.is_empty());
            if !pending.is_empty() {
                self.back_off(&mut attempt).await?;
            }
        }
        Ok(())
    }

    fn task_key(task_id: &str) -> Item {
        HashMap::from([("task_id".to_string(), s(task_id))])
    }

    fn retry_key(labourer: &str, task_id: &str) -> Item {
        HashMap::from([
            ("labourer_id".to_string(), s(labourer)),
            ("task_id".to_string(), s(task_id)),
        ])
    }

    /// The live item moved to closed, completed or dead, at `now`.
    fn closed_item(mut item: Item, completed: bool, now: Time) -> Item {
        let labourer = labourer_of(&item);
        item.insert("closed_at".into(), n(now.secs()));
        item.insert("labourer_id_task_status".into(), s(closed_status(&labourer, completed)));
        item
    }

    /// Archives one live task; returns its labourer.
    async fn archive_one(&self, task_id: &str, expect: ArchiveExpect, now: Time) -> StoreResult<String> {
        let copy = match expect {
            ArchiveExpect::Completed => self.completed_copies.lock().map_or(None, |mut c| c.remove(task_id)),
            ArchiveExpect::Dead { .. } => None,
        };
        if let Some(copy) = copy {
            let labourer = labourer_of(&copy);
            match self.archive_copy(task_id, copy, now).await {
                // Changed since it was listed: read it again below.
                Err(StoreError::Conflict { .. }) => {}
                done => return done.map(|()| labourer),
            }
        }
        let Some(item) = self.get_live(task_id).await? else {
            return Err(self.already_closed(task_id).await?);
        };
        let labourer = labourer_of(&item);
        let completed = item.contains_key("completed_at");
        let greenfield = get_i64(&item, "greenfield").unwrap_or_default();
        if let Some(reason) = expect.refusal(completed, greenfield) {
            return Err(StoreError::conflict(task_id, reason));
        }
        let (condition, values) = match expect {
            ArchiveExpect::Completed => ("attribute_exists(#c)", vec![]),
            ArchiveExpect::Dead { greenfield } => ("attribute_not_exists(#c) AND #g = :g", vec![(":g", n(greenfield))]),
        };
        let names: &[(&str, &str)] = if values.is_empty() {
            &[("#c", "completed_at")]
        } else {
            &[("#c", "completed_at"), ("#g", "greenfield")]
        };
        let items = vec![
            self.put(
                &self.tables.closed,
                DynamoStore::closed_item(item, completed, now),
                None,
            )?,
            self.delete(
                &self.tables.tasks,
                DynamoStore::task_key(task_id),
                condition,
                names,
                values,
            )?,
        ];
        self.transact(task_id, items, "moved or completed while it was being archived")
            .await
            .map(|()| labourer)
    }

    /// Archives a completed task from the item `list_completed` read (from the greenfield index, which may lag the
    /// table): one `TransactWriteItems`, conditional on the live item still having that item's `completed_at`,
    /// greenfield and revision. A `Conflict` means the item changed (or went): the caller reads it again.
    async fn archive_copy(&self, task_id: &str, item: Item, now: Time) -> StoreResult<()> {
        let (Some(completed_at), Some(greenfield)) =
            (item.get("completed_at").cloned(), item.get("greenfield").cloned())
        else {
            return Err(StoreError::conflict(task_id, "its listed copy is not completed"));
        };
        let (revision, condition) = match item.get(REVISION) {
            Some(r) => (Some(r.clone()), "#c = :c AND #g = :g AND #r = :r"),
            None => (None, "#c = :c AND #g = :g AND attribute_not_exists(#r)"),
        };
        let mut values = vec![(":c", completed_at), (":g", greenfield)];
        values.extend(revision.map(|r| (":r", r)));
        let items = vec![
            self.put(&self.tables.closed, DynamoStore::closed_item(item, true, now), None)?,
            self.delete(
                &self.tables.tasks,
                DynamoStore::task_key(task_id),
                condition,
                &[("#c", "completed_at"), ("#g", "greenfield"), ("#r", REVISION)],
                values,
            )?,
        ];
        self.transact(task_id, items, "changed after it was listed").await
    }

    /// Closes a task as completed at `now` from `table` (`key` is its key there), with its report merged.
    async fn close_completed(
        &self,
        task_id: &str,
        mut item: Item,
        table: &str,
        key: Item,
        report: &WorkerReport,
        now: Time,
    ) -> StoreResult<Task> {
        merge_report(&mut item, report);
        item.insert("completed_at".into(), n(now.secs()));
        let task = task_from_item(&item)?;
        let g = get_i64(&item, "greenfield").unwrap_or_default();
        let items = vec![
            self.put(&self.tables.closed, DynamoStore::closed_item(item, true, now), None)?,
            self.delete(table, key, "#g = :g", &[("#g", "greenfield")], vec![(":g", n(g))])?,
        ];
        self.transact(task_id, items, "moved while its completion was being recorded")
            .await?;
        Ok(task)
    }
}

fn merge_report(item: &mut Item, report: &WorkerReport) {
    for (k, v) in &report.stats {
        item.insert(format!("stat_{k}"), item::json_to_attr(v));
    }
    for (k, v) in &report.result {
        item.insert(format!("result_{k}"), item::json_to_attr(v));
    }
}

/// `SET` clauses for a report's `stat_<k>` / `result_<k>` attributes, with placeholders.
/// The `SET` clauses of a worker report: its `stat_<k>` / `result_<k>` attributes, and the revision bump.
fn report_updates(
    report: &WorkerReport,
    names: &mut HashMap<String, String>,
    values: &mut HashMap<String, AttributeValue>,
) -> Vec<String> {
    names.insert("#rev".into(), REVISION.into());
    values.insert(":rev_zero".into(), n(0));
    values.insert(":rev_one".into(), n(1));
    let mut sets = vec!["#rev = if_not_exists(#rev, :rev_zero) + :rev_one".to_string()];
    for (i, (prefix, map)) in [("stat_", &report.stats), ("result_", &report.result)]
        .into_iter()
        .enumerate()
    {
        for (j, (k, v)) in map.iter().enumerate() {
            let (name, value) = (format!("#r{i}_{j}"), format!(":r{i}_{j}"));
            names.insert(name.clone(), format!("{prefix}{k}"));
            values.insert(value.clone(), item::json_to_attr(v));
            sets.push(format!("{name} = {value}"));
        }
    }
    sets
}

/// A worker report's update of one task item: `SET` `sets` plus the report's own clauses, if `condition` holds.
/// The item as it is after the update, or `None` when the condition failed.
struct ReportUpdate<'a> {
    table: &'a str,
    key: Item,
    sets: Vec<&'a str>,
    condition: &'a str,
    names: Vec<(&'a str, &'a str)>,
    values: Vec<(&'a str, AttributeValue)>,
}

impl DynamoStore {
    async fn apply_report(&self, u: ReportUpdate<'_>, report: &WorkerReport) -> StoreResult<Option<Task>> {
        let mut names: HashMap<String, String> = u.names.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut values: HashMap<String, AttributeValue> =
            u.values.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut sets: Vec<String> = u.sets.iter().map(|s| s.to_string()).collect();
        sets.extend(report_updates(report, &mut names, &mut values));
        let out = self
            .client
            .update_item()
            .table_name(u.table)
            .set_key(Some(u.key))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(u.condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(o) => {
                let item = o
                    .attributes()
                    .ok_or_else(|| StoreError::Backend("no attributes returned".into()))?;
                Ok(Some(task_from_item(item)?))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_err(e)),
        }
    }
}

impl DynamoStore {
    /// Counts a throttled response and waits before re-sending what DynamoDB left undone — the unprocessed part of a
    /// batch request, or a transaction cancelled by a conflicting one (neither is an error the SDK retries; failed
    /// requests are retried by the SDK alone, see [`sdk`]). After 8 waits (6.4 s in all): `Throttled`.
    async fn back_off(&self, attempt: &mut u32) -> StoreResult<()> {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        if *attempt >= 8 {
            return Err(StoreError::Throttled { retry_after: None });
        }
        tokio::time::sleep(Duration::from_millis(25 << *attempt)).await;
        *attempt += 1;
        Ok(())
    }
}

/// The moves themselves; the `TaskStore` methods add the audit trail ([`DynamoStore::recorded`]).
impl DynamoStore {
    async fn create_tasks_move(&self, tasks: &[NewTask], step: i64, now: Time) -> StoreResult<CreateReport> {
        if tasks.iter().any(|t| t.task_id.is_empty()) {
            return Err(StoreError::Invalid("a task id must not be empty".into()));
        }
        // Which ids exist already, in any table (BatchGetItem, 100 keys a request).
        let mut existing: HashSet<String> = HashSet::new();
        let mut seen = HashSet::new();
        let unique: Vec<&NewTask> = tasks.iter().filter(|t| seen.insert(t.task_id.clone())).collect();
        for chunk in unique.chunks(33) {
            let mut request: HashMap<String, KeysAndAttributes> = HashMap::new();
            for (table, keys) in [
                (
                    &self.tables.tasks,
                    chunk
                        .iter()
                        .map(|t| DynamoStore::task_key(&t.task_id))
                        .collect::<Vec<_>>(),
                ),
                (
                    &self.tables.closed,
                    chunk.iter().map(|t| DynamoStore::task_key(&t.task_id)).collect(),
                ),
                (
                    &self.tables.retry,
                    chunk
                        .iter()
                        .map(|t| DynamoStore::retry_key(&t.labourer_id, &t.task_id))
                        .collect(),
                ),
            ] {
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .projection_expression("task_id")
                    .consistent_read(true)
                    .build()
                    .map_err(build_err)?;
                request.insert(table.clone(), ka);
            }
            let mut attempt = 0;
            while !request.is_empty() {
                let out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(request))
                    .send()
                    .await
                    .map_err(sdk_err)?;
                for items in out.responses().map(|r| r.values()).into_iter().flatten() {
                    for item in items {
                        if let Some(AttributeValue::S(id)) = item.get("task_id") {
                            existing.insert(id.clone());
                        }
                    }
                }
                request = out.unprocessed_keys().cloned().unwrap_or_default();
                if !request.is_empty() {
                    self.back_off(&mut attempt).await?;
                }
            }
        }
        let mut report = CreateReport::default();
        let mut fresh: Vec<&NewTask> = Vec::new();
        let mut taken = HashSet::new();
        for t in tasks {
            if existing.contains(&t.task_id) || !taken.insert(t.task_id.as_str()) {
                report.existing.push(t.task_id.clone());
            } else {
                fresh.push(t);
            }
        }
        // Every position is allocated (and checked) before anything is written.
        let mut tails = Vec::new();
        for (labourer, _) in labourer_counts(fresh.iter().copied()) {
            tails.push((labourer, self.newest_queued(labourer, now.secs()).await?));
        }
        report.created = queued_rows(&fresh, &tails, step, now).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let (created, existing) = self.put_new_tasks(&report.created).await?;
        report.created = created;
        report.existing.extend(existing);
        Ok(report)
    }

    async fn claim_move(
        &self,
        labourer: &str,
        tasks: &[(String, i64)],
        start: i64,
        invoked_greenfield: i64,
    ) -> StoreResult<Vec<Claim>> {
        let results: Vec<StoreResult<Claim>> = stream::iter(tasks.to_vec())
            .map(|(id, read)| async move {
                let out = self
                    .client
                    .update_item()
                    .table_name(&self.tables.tasks)
                    .key("task_id", s(&id))
                    .update_expression("SET #g = :inv, #a = if_not_exists(#a, :zero) + :one")
                    .condition_expression("#l = :l AND #g = :read AND #g < :s AND attribute_not_exists(#c)")
                    .expression_attribute_names("#g", "greenfield")
                    .expression_attribute_names("#a", "attempts")
                    .expression_attribute_names("#l", "labourer_id")
                    .expression_attribute_names("#c", "completed_at")
                    .expression_attribute_values(":inv", n(invoked_greenfield))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":l", s(labourer))
                    .expression_attribute_values(":read", n(read))
                    .expression_attribute_values(":s", n(start))
                    .send()
                    .await;
                match out {
                    Ok(_) => Ok(Claim::Claimed {
                        task_id: id,
                        previous_greenfield: read,
                    }),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                    {
                        Ok(Claim::Lost { task_id: id })
                    }
                    Err(e) => Err(sdk_err(e)),
                }
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn release_claim_move(
        &self,
        task_id: &str,
        invoked_greenfield: i64,
        previous_greenfield: i64,
    ) -> StoreResult<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.tasks)
            .key("task_id", s(task_id))
            .update_expression("SET #g = :prev, #a = #a - :one")
            .condition_expression("#g = :inv AND attribute_not_exists(#c) AND #a >= :one")
            .expression_attribute_names("#g", "greenfield")
            .expression_attribute_names("#a", "attempts")
            .expression_attribute_names("#c", "completed_at")
            .expression_attribute_values(":prev", n(previous_greenfield))
            .expression_attribute_values(":inv", n(invoked_greenfield))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                match self.get_live(task_id).await? {
                    Some(_) => Err(StoreError::conflict(task_id, "moved or completed since it was claimed")),
                    None => Err(StoreError::NotFound(task_id.to_string())),
                }
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn complete_move(&self, task_id: &str, now: Time, report: &WorkerReport) -> StoreResult<Completion> {
        // The common case, in one request: the task is where its invocation put it.
        let fast = ReportUpdate {
            table: &self.tables.tasks,
            key: DynamoStore::task_key(task_id),
            sets: vec!["#c = if_not_exists(#c, :now)"],
            condition: "attribute_exists(task_id) AND #a >= :one AND #g >= :now",
            names: vec![("#c", "completed_at"), ("#g", "greenfield"), ("#a", "attempts")],
            values: vec![(":now", n(now.secs())), (":one", n(1))],
        };
        if let Some(task) = self.apply_report(fast, report).await? {
            return Ok(Completion::Live(task));
        }
        if let Some(item) = self.get_live(task_id).await? {
            let task = task_from_item(&item)?;
            report_refusal(task_id, task.attempts)?;
            if is_queue_position(task.greenfield, now) {
                let closed = self
                    .close_completed(
                        task_id,
                        item,
                        &self.tables.tasks,
                        DynamoStore::task_key(task_id),
                        report,
                        now,
                    )
                    .await?;
                return Ok(Completion::Closed(closed));
            }
            let update = ReportUpdate {
                table: &self.tables.tasks,
                key: DynamoStore::task_key(task_id),
                sets: vec!["#c = if_not_exists(#c, :now)"],
                condition: "attribute_exists(task_id) AND #g = :g",
                names: vec![("#c", "completed_at"), ("#g", "greenfield")],
                values: vec![(":now", n(now.secs())), (":g", n(task.greenfield))],
            };
            return match self.apply_report(update, report).await? {
                Some(task) => Ok(Completion::Live(task)),
                None => Err(StoreError::conflict(
                    task_id,
                    "moved while its completion was being recorded; report again",
                )),
            };
        }
        if let Some(item) = self.find_retry(task_id).await? {
            let labourer = match item.get("labourer_id") {
                Some(AttributeValue::S(l)) => l.clone(),
                _ => String::new(),
            };
            let key = DynamoStore::retry_key(&labourer, task_id);
            let closed = self
                .close_completed(task_id, item, &self.tables.retry, key, report, now)
                .await?;
            return Ok(Completion::Closed(closed));
        }
        Err(self.already_closed(task_id).await?)
    }

    async fn fail_move(&self, task_id: &str, _now: Time, report: &WorkerReport) -> StoreResult<Task> {
        let (table, key, item) = match self.get_live(task_id).await? {
            Some(item) => (&self.tables.tasks, DynamoStore::task_key(task_id), item),
            None => match self.find_retry(task_id).await? {
                Some(item) => {
                    let labourer = task_from_item(&item)?.labourer_id;
                    (&self.tables.retry, DynamoStore::retry_key(&labourer, task_id), item)
                }
                None => return Err(self.already_closed(task_id).await?),
            },
        };
        report_refusal(task_id, task_from_item(&item)?.attempts)?;
        let update = ReportUpdate {
            table,
            key,
            sets: vec!["#f = if_not_exists(#f, :zero) + :one"],
            condition: "attribute_exists(task_id)",
            names: vec![("#f", "failed_attempts")],
            values: vec![(":zero", n(0)), (":one", n(1))],
        };
        self.apply_report(update, report)
            .await?
            .ok_or_else(|| StoreError::conflict(task_id, "moved while its failure was being recorded; report again"))
    }

    async fn archive_move(&self, task_id: &str, expect: ArchiveExpect, now: Time) -> StoreResult<()> {
        self.archive_one(task_id, expect, now).await.map(|_| ())
    }

    /// Per task: its labourer, or why it was not archived.
    async fn archive_many_move(
        &self,
        moves: &[(String, ArchiveExpect)],
        now: Time,
    ) -> StoreResult<Vec<StoreResult<String>>> {
        let results: Vec<StoreResult<String>> = stream::iter(moves.to_vec())
            .map(|(id, expect)| async move { self.archive_one(&id, expect, now).await })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        // Per-task outcomes; a failure of the service itself fails the call, as in the SQLite store.
        if let Some(pos) = results
            .iter()
            .position(|r| matches!(r, Err(e) if !matches!(e, StoreError::Conflict { .. } | StoreError::NotFound(_))))
        {
            let mut results = results;
            return Err(results.swap_remove(pos).expect_err("an error at this position"));
        }
        Ok(results)
    }

    async fn move_to_retry_move(
        &self,
        task_id: &str,
        expected_greenfield: i64,
        desired_launch_time: i64,
    ) -> StoreResult<()> {
        let Some(mut item) = self.get_live(task_id).await? else {
            return Err(self.already_closed(task_id).await?);
        };
        let g = get_i64(&item, "greenfield").unwrap_or_default();
        if let Some(reason) = retry_refusal(item.contains_key("completed_at"), g, expected_greenfield) {
            return Err(StoreError::conflict(task_id, reason));
        }
        item.insert("desired_launch_time".into(), n(desired_launch_time));
        let items = vec![
            self.put(&self.tables.retry, item, None)?,
            self.delete(
                &self.tables.tasks,
                DynamoStore::task_key(task_id),
                "attribute_not_exists(#c) AND #g = :g",
                &[("#c", "completed_at"), ("#g", "greenfield")],
                vec![(":g", n(g))],
            )?,
        ];
        self.transact(
            task_id,
            items,
            "was completed or moved while it was being parked for retry",
        )
        .await
    }

    async fn requeue_move(&self, task_id: &str, labourer: &str, greenfield: i64) -> StoreResult<()> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.retry)
            .set_key(Some(DynamoStore::retry_key(labourer, task_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        let Some(mut item) = out.item().cloned() else {
            return Err(match self.get_live(task_id).await? {
                Some(_) => StoreError::conflict(task_id, "is not waiting for retry (it is live)"),
                None => self.already_closed(task_id).await?,
            });
        };
        item.remove("desired_launch_time");
        item.insert("greenfield".into(), n(greenfield));
        let items = vec![
            self.put(&self.tables.tasks, item, Some("attribute_not_exists(task_id)"))?,
            self.delete(
                &self.tables.retry,
                DynamoStore::retry_key(labourer, task_id),
                "attribute_exists(task_id)",
                &[],
                vec![],
            )?,
        ];
        self.transact(task_id, items, "was moved by someone else first").await
    }
}

/// The labourer of a task item ("" if it has none).
fn labourer_of(item: &Item) -> String {
    match item.get("labourer_id") {
        Some(AttributeValue::S(l)) => l.clone(),
        _ => String::new(),
    }
}

impl DynamoStore {
    /// Records a move's audit events right after it (best-effort: DynamoDB's meta table is separate, and a
    /// transaction with it would double the write cost of every move). A failure is logged; the move stands.
    async fn recorded(&self, events: Vec<MetaEvent>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.record(&events).await {
            tracing::warn!(count = events.len(), error = %e, "could not write meta events; the moves they record stand");
        }
    }
}

#[async_trait]
impl TaskStore for DynamoStore {
    async fn create_tasks_recorded(
        &self,
        tasks: &[NewTask],
        step: i64,
        now: Time,
        stamp: Option<&Stamp>,
    ) -> StoreResult<CreateReport> {
        let report = self.create_tasks_move(tasks, step, now).await?;
        let events = report
            .created
            .iter()
            .flat_map(|t| stamped(stamp, &t.task_id, &t.labourer_id, Recorded::Created))
            .collect();
        self.recorded(events).await;
        Ok(report)
    }

    async fn claim_recorded(
        &self,
        labourer: &str,
        tasks: &[(String, i64)],
        start: i64,
        invoked_greenfield: i64,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Vec<Claim>> {
        let claims = self.claim_move(labourer, tasks, start, invoked_greenfield).await?;
        let events = claims
            .iter()
            .filter_map(|c| match c {
                Claim::Claimed { task_id, .. } => Some(stamped(stamp, task_id, labourer, Recorded::Invoked)),
                Claim::Lost { .. } => None,
            })
            .flatten()
            .collect();
        self.recorded(events).await;
        Ok(claims)
    }

    async fn release_claim_recorded(
        &self,
        task_id: &str,
        invoked_greenfield: i64,
        previous_greenfield: i64,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        self.release_claim_move(task_id, invoked_greenfield, previous_greenfield)
            .await?;
        self.recorded(events.to_vec()).await;
        Ok(())
    }

    async fn complete_recorded(
        &self,
        task_id: &str,
        now: Time,
        report: &WorkerReport,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Completion> {
        let completion = self.complete_move(task_id, now, report).await?;
        let (t, closed) = match &completion {
            Completion::Live(t) => (t, false),
            Completion::Closed(t) => (t, true),
        };
        self.recorded(stamped(stamp, task_id, &t.labourer_id, Recorded::Completed { closed }))
            .await;
        Ok(completion)
    }

    async fn fail_recorded(
        &self,
        task_id: &str,
        now: Time,
        report: &WorkerReport,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Task> {
        let t = self.fail_move(task_id, now, report).await?;
        self.recorded(stamped(stamp, task_id, &t.labourer_id, Recorded::Failed))
            .await;
        Ok(t)
    }

    async fn archive_recorded(
        &self,
        task_id: &str,
        expect: ArchiveExpect,
        now: Time,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        self.archive_move(task_id, expect, now).await?;
        self.recorded(events.to_vec()).await;
        Ok(())
    }

    async fn archive_many_recorded(
        &self,
        moves: &[(String, ArchiveExpect)],
        now: Time,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let results = self.archive_many_move(moves, now).await?;
        let mut events = Vec::new();
        for ((id, expect), result) in moves.iter().zip(&results) {
            if let Ok(labourer) = result {
                let dead = matches!(expect, ArchiveExpect::Dead { .. });
                events.extend(stamped(stamp, id, labourer, Recorded::Archived { dead }));
            }
        }
        self.recorded(events).await;
        Ok(results.into_iter().map(|r| r.map(|_| ())).collect())
    }

    async fn move_to_retry_recorded(
        &self,
        task_id: &str,
        expected_greenfield: i64,
        desired_launch_time: i64,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        self.move_to_retry_move(task_id, expected_greenfield, desired_launch_time)
            .await?;
        self.recorded(events.to_vec()).await;
        Ok(())
    }

    async fn requeue_recorded(
        &self,
        task_id: &str,
        labourer: &str,
        greenfield: i64,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        self.requeue_move(task_id, labourer, greenfield).await?;
        self.recorded(events.to_vec()).await;
        Ok(())
    }

    async fn init(&self) -> StoreResult<()> {
        tables::ensure(&self.client, &self.tables).await
    }

    async fn next_queued(&self, labourer: &str, start: i64, limit: usize) -> StoreResult<Vec<Task>> {
        let mut r = self.by_greenfield(labourer, "#g < :s", Some("attribute_not_exists(#c)"));
        r.values.push((":s", n(start)));
        r.limit = Some(limit);
        self.tasks_of(r).await
    }

    async fn count_running(&self, labourer: &str, expired: i64) -> StoreResult<u64> {
        let mut r = self.by_greenfield(labourer, "#g > :e", Some("attribute_not_exists(#c)"));
        r.values.push((":e", n(expired)));
        r.count = true;
        Ok(self.read(r).await?.1)
    }

    async fn list_expired(&self, labourer: &str, start: i64, expired: i64, limit: usize) -> StoreResult<Vec<Task>> {
        let mut r = self.by_greenfield(labourer, "#g BETWEEN :s AND :e", Some("attribute_not_exists(#c)"));
        r.values.push((":s", n(start)));
        r.values.push((":e", n(expired)));
        r.limit = Some(limit);
        self.tasks_of(r).await
    }

    async fn list_completed(&self, labourer: &str, now: i64, limit: usize) -> StoreResult<Vec<Task>> {
        let mut r = self.by_greenfield(labourer, "#g >= :now", Some("attribute_exists(#c)"));
        r.values.push((":now", n(now)));
        r.limit = Some(limit);
        let items = self.read(r).await?.0;
        let tasks = items.iter().map(task_from_item).collect::<StoreResult<Vec<Task>>>()?;
        if let Ok(mut copies) = self.completed_copies.lock() {
            if copies.len() + items.len() > MAX_COMPLETED_COPIES {
                copies.clear();
            }
            for (task, item) in tasks.iter().zip(items) {
                copies.insert(task.task_id.clone(), item);
            }
        }
        Ok(tasks)
    }

    async fn due_retries(&self, labourer: &str, now: i64, limit: usize) -> StoreResult<Vec<Task>> {
        let r = Read {
            table: self.tables.retry.clone(),
            index: Some(self.tables.retry_index.clone()),
            key: Some("#l = :l AND #d <= :now".into()),
            names: vec![("#l", "labourer_id"), ("#d", "desired_launch_time")],
            values: vec![(":l", s(labourer)), (":now", n(now))],
            limit: Some(limit),
            consistent: true,
            ..Read::default()
        };
        self.tasks_of(r).await
    }

    async fn oldest_queued(&self, labourer: &str, now: i64) -> StoreResult<Option<i64>> {
        let mut r = self.by_greenfield(labourer, "#g < :now", None);
        r.values.push((":now", n(now)));
        r.names.retain(|(k, _)| *k != "#c");
        r.limit = Some(1);
        Ok(self.read(r).await?.0.first().and_then(|i| get_i64(i, "greenfield")))
    }

    async fn newest_queued(&self, labourer: &str, now: i64) -> StoreResult<Option<i64>> {
        let mut r = self.by_greenfield(labourer, "#g < :now", None);
        r.values.push((":now", n(now)));
        r.names.retain(|(k, _)| *k != "#c");
        r.limit = Some(1);
        r.backwards = true;
        Ok(self.read(r).await?.0.first().and_then(|i| get_i64(i, "greenfield")))
    }

    async fn get(&self, task_id: &str) -> StoreResult<Option<StoredTask>> {
        if let Some(item) = self.get_live(task_id).await? {
            return Ok(Some(StoredTask {
                task: task_from_item(&item)?,
                place: Place::Live,
            }));
        }
        if let Some(item) = self.find_retry(task_id).await? {
            let desired_launch_time = get_i64(&item, "desired_launch_time").unwrap_or_default();
            return Ok(Some(StoredTask {
                task: task_from_item(&item)?,
                place: Place::Retry { desired_launch_time },
            }));
        }
        match self.get_closed(task_id).await? {
            Some(item) => Ok(Some(stored_closed(&item)?)),
            None => Ok(None),
        }
    }

    async fn list(&self, q: &TaskQuery) -> StoreResult<Vec<StoredTask>> {
        let mut rows: Vec<StoredTask> = match q.table {
            Table::Live => {
                let filter = match q.completed {
                    Some(true) => Some("attribute_exists(#c)"),
                    Some(false) => Some("attribute_not_exists(#c)"),
                    None => None,
                };
                let items = match &q.labourer {
                    Some(l) => {
                        let (lo, hi) = q.greenfield.map_or((i64::MIN, i64::MAX), |g| (g.lo, g.hi));
                        let base = Read {
                            table: self.tables.tasks.clone(),
                            index: Some(self.tables.greenfield_index.clone()),
                            key: Some("#l = :l".into()),
                            filter: filter.map(str::to_string),
                            names: if filter.is_some() {
                                vec![("#l", "labourer_id"), ("#c", "completed_at")]
                            } else {
                                vec![("#l", "labourer_id")]
                            },
                            values: vec![(":l", s(l))],
                            ..Read::default()
                        };
                        self.ordered_page(base, "greenfield", (lo, hi), cursor_within(q, l), q.limit)
                            .await?
                    }
                    None => {
                        self.read(Read {
                            table: self.tables.tasks.clone(),
                            filter: filter.map(str::to_string),
                            names: if filter.is_some() {
                                vec![("#c", "completed_at")]
                            } else {
                                vec![]
                            },
                            ..Read::default()
                        })
                        .await?
                        .0
                    }
                };
                items
                    .iter()
                    .map(|i| {
                        Ok(StoredTask {
                            task: task_from_item(i)?,
                            place: Place::Live,
                        })
                    })
                    .collect::<StoreResult<_>>()?
            }
            Table::Retry => {
                let items = match &q.labourer {
                    Some(l) => {
                        let base = Read {
                            table: self.tables.retry.clone(),
                            index: Some(self.tables.retry_index.clone()),
                            key: Some("#l = :l".into()),
                            names: vec![("#l", "labourer_id")],
                            values: vec![(":l", s(l))],
                            ..Read::default()
                        };
                        self.ordered_page(
                            base,
                            "desired_launch_time",
                            (i64::MIN, i64::MAX),
                            cursor_within(q, l),
                            q.limit,
                        )
                        .await?
                    }
                    None => {
                        self.read(Read {
                            table: self.tables.retry.clone(),
                            ..Read::default()
                        })
                        .await?
                        .0
                    }
                };
                items
                    .iter()
                    .map(|i| {
                        let desired_launch_time = get_i64(i, "desired_launch_time").unwrap_or_default();
                        Ok(StoredTask {
                            task: task_from_item(i)?,
                            place: Place::Retry { desired_launch_time },
                        })
                    })
                    .collect::<StoreResult<_>>()?
            }
            Table::Closed => {
                let mut filters = Vec::new();
                let mut names = vec![];
                let mut values = vec![];
                if q.labourer.is_some() {
                    filters.push("#l = :l");
                    names.push(("#l", "labourer_id"));
                    values.push((":l", s(q.labourer.clone().unwrap_or_default())));
                }
                match q.completed {
                    Some(true) => {
                        filters.push("attribute_exists(#c)");
                        names.push(("#c", "completed_at"));
                    }
                    Some(false) => {
                        filters.push("attribute_not_exists(#c)");
                        names.push(("#c", "completed_at"));
                    }
                    None => {}
                }
                let r = Read {
                    table: self.tables.closed.clone(),
                    filter: (!filters.is_empty()).then(|| filters.join(" AND ")),
                    names,
                    values,
                    ..Read::default()
                };
                self.read(r)
                    .await?
                    .0
                    .iter()
                    .map(stored_closed)
                    .collect::<StoreResult<_>>()?
            }
        };
        let order = |t: &StoredTask| match t.place {
            Place::Live => t.task.greenfield,
            Place::Retry { desired_launch_time } => desired_launch_time,
            Place::Closed { closed_at, .. } => closed_at,
        };
        // The closed table and listings of every labourer are Scans: read whole, then cut to the page here.
        if let Some(after) = &q.after {
            rows.retain(|t| after.precedes(t));
        }
        rows.sort_by(|a, b| {
            (&a.task.labourer_id, order(a), &a.task.task_id).cmp(&(&b.task.labourer_id, order(b), &b.task.task_id))
        });
        rows.dedup_by(|a, b| a.task.task_id == b.task.task_id);
        rows.truncate(q.limit);
        Ok(rows)
    }

    async fn labourer_ids(&self) -> StoreResult<Vec<String>> {
        let mut ids: Vec<String> = Vec::new();
        for table in [&self.tables.tasks, &self.tables.retry, &self.tables.closed] {
            let r = Read {
                table: table.clone(),
                projection: Some("#l".into()),
                names: vec![("#l", "labourer_id")],
                ..Read::default()
            };
            for item in self.read(r).await?.0 {
                if let Some(AttributeValue::S(l)) = item.get("labourer_id") {
                    ids.push(l.clone());
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn counts(&self, labourer: &str, m: &Markers) -> StoreResult<LabourerCounts> {
        let count = |key: &str, filter: Option<&str>, values: Vec<(&'static str, AttributeValue)>| {
            let mut r = self.by_greenfield(labourer, key, filter);
            r.values.extend(values);
            r.count = true;
            async move { self.read(r).await.map(|(_, c)| c) }
        };
        let queued = count("#g < :s", Some("attribute_not_exists(#c)"), vec![(":s", n(m.start))]).await?;
        let running = count("#g > :e", Some("attribute_not_exists(#c)"), vec![(":e", n(m.expired))]).await?;
        let expired = count(
            "#g BETWEEN :s AND :e",
            Some("attribute_not_exists(#c)"),
            vec![(":s", n(m.start)), (":e", n(m.expired))],
        )
        .await?;
        let completed = count("#g >= :s", Some("attribute_exists(#c)"), vec![(":s", n(m.start))]).await?;
        let retry = Read {
            table: self.tables.retry.clone(),
            key: Some("#l = :l".into()),
            names: vec![("#l", "labourer_id")],
            values: vec![(":l", s(labourer))],
            count: true,
            ..Read::default()
        };
        let closed = |done: bool| Read {
            table: self.tables.closed.clone(),
            index: Some(self.tables.closed_index.clone()),
            key: Some("#s = :s".into()),
            names: vec![("#s", "labourer_id_task_status")],
            values: vec![(":s", s(closed_status(labourer, done)))],
            count: true,
            ..Read::default()
        };
        Ok(LabourerCounts {
            queued,
            running,
            expired,
            completed,
            retry_waiting: self.read(retry).await?.1,
            closed_completed: self.read(closed(true)).await?.1,
            closed_dead: self.read(closed(false)).await?.1,
        })
    }

    async fn save_job(&self, job: &JobProgress) -> StoreResult<()> {
        let mut item = Item::from([
            ("job_id".to_string(), s(&job.job_id)),
            ("labourer_id".to_string(), s(&job.labourer_id)),
            ("total".to_string(), n(job.total)),
            ("scheduled".to_string(), n(job.scheduled)),
            ("started_at".to_string(), n(job.started_at.millis())),
            ("updated_at".to_string(), n(job.updated_at.millis())),
        ]);
        if let Some(f) = job.finished_at {
            item.insert("finished_at".into(), n(f.millis()));
        }
        self.client
            .put_item()
            .table_name(&self.tables.jobs)
            .set_item(Some(item))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<JobProgress>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.jobs)
            .key("job_id", s(job_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        out.item().map(job_from_item).transpose()
    }

    async fn list_jobs(&self, limit: usize) -> StoreResult<Vec<JobProgress>> {
        let r = Read {
            table: self.tables.jobs.clone(),
            ..Read::default()
        };
        let mut jobs: Vec<JobProgress> = self
            .read(r)
            .await?
            .0
            .iter()
            .map(job_from_item)
            .collect::<StoreResult<_>>()?;
        jobs.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.job_id.cmp(&b.job_id)));
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn labourer_states(&self) -> StoreResult<Vec<LabourerState>> {
        let r = Read {
            table: self.tables.labourers.clone(),
            ..Read::default()
        };
        let mut states: Vec<LabourerState> = self
            .read(r)
            .await?
            .0
            .iter()
            .map(labourer_state_from_item)
            .collect::<StoreResult<_>>()?;
        states.sort_by(|a, b| a.labourer_id.cmp(&b.labourer_id));
        Ok(states)
    }

    async fn save_labourer_state(&self, state: &LabourerState) -> StoreResult<()> {
        let mut item = Item::from([
            ("labourer_id".to_string(), s(&state.labourer_id)),
            ("dead_in_row".to_string(), n(state.dead_in_row)),
            ("trips".to_string(), n(state.trips)),
        ]);
        if let Some(t) = state.held_until {
            item.insert("held_until".into(), n(t.millis()));
        }
        if let Some(t) = state.held_since {
            item.insert("held_since".into(), n(t.millis()));
        }
        if let Some(r) = &state.reason {
            item.insert("reason".into(), s(r));
        }
        if let Some(t) = &state.suspect {
            item.insert("suspect".into(), s(t));
        }
        self.client
            .put_item()
            .table_name(&self.tables.labourers)
            .set_item(Some(item))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn clear_labourer_state(&self, labourer_id: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.tables.labourers)
            .key("labourer_id", s(labourer_id))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    fn throttled_requests(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

fn labourer_state_from_item(item: &Item) -> StoreResult<LabourerState> {
    let labourer_id = match item.get("labourer_id") {
        Some(AttributeValue::S(v)) => v.clone(),
        _ => return Err(StoreError::Backend("labourer state item without `labourer_id`".into())),
    };
    let count = |k: &str| get_i64(item, k).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    Ok(LabourerState {
        dead_in_row: count("dead_in_row"),
        trips: count("trips"),
        held_until: get_i64(item, "held_until").map(Time::from_millis),
        held_since: get_i64(item, "held_since").map(Time::from_millis),
        reason: get_s_attr(item, "reason"),
        suspect: get_s_attr(item, "suspect"),
        labourer_id,
    })
}

/// The part of a listing's cursor that bounds a page of labourer `l`: `(order, task_id)` when the cursor is in
/// `l`'s rows; `(i64::MAX, "")` — nothing left — when it is past them; `None` when they all come after it.
fn cursor_within(q: &TaskQuery, l: &str) -> Option<(i64, String)> {
    let c = q.after.as_ref()?;
    match c.labourer_id.as_str().cmp(l) {
        std::cmp::Ordering::Less => None,
        std::cmp::Ordering::Equal => Some((c.order, c.task_id.clone())),
        std::cmp::Ordering::Greater => Some((i64::MAX, String::new())),
    }
}

fn get_s_attr(item: &Item, key: &str) -> Option<String> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

fn stored_closed(item: &Item) -> StoreResult<StoredTask> {
    let task = task_from_item(item)?;
    let completed = match item.get("labourer_id_task_status") {
        Some(AttributeValue::S(st)) => st.ends_with("_1"),
        _ => task.completed_at.is_some(),
    };
    let closed_at = get_i64(item, "closed_at").unwrap_or_default();
    Ok(StoredTask {
        task,
        place: Place::Closed { closed_at, completed },
    })
}

fn job_from_item(item: &Item) -> StoreResult<JobProgress> {
    let text = |k: &str| match item.get(k) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(StoreError::Backend(format!("job item without `{k}`").into())),
    };
    let num = |k: &str| get_i64(item, k).ok_or_else(|| StoreError::Backend(format!("job item without `{k}`").into()));
    Ok(JobProgress {
        job_id: text("job_id")?,
        labourer_id: text("labourer_id")?,
        total: num("total")? as u64,
        scheduled: num("scheduled")? as u64,
        started_at: Time::from_millis(num("started_at")?),
        updated_at: Time::from_millis(num("updated_at")?),
        finished_at: get_i64(item, "finished_at").map(Time::from_millis),
    })
}

#[async_trait]
impl MetaSink for DynamoStore {
    async fn record(&self, events: &[MetaEvent]) -> StoreResult<()> {
        for chunk in events.chunks(25) {
            let mut requests = Vec::with_capacity(chunk.len());
            for e in chunk {
                // `created_at` is the range key: events of one millisecond are kept apart by a few microseconds
                // (less than half a millisecond, so `at` reads back unchanged), in the order recorded.
                let seq = META_SEQ.fetch_add(1, Ordering::Relaxed) % 400;
                let mut item = Item::from([
                    ("task_id".to_string(), s(&e.task_id)),
                    (
                        "created_at".to_string(),
                        n_f64(e.at.as_secs_f64() + seq as f64 * 1e-6 + 1e-6),
                    ),
                    ("action".to_string(), s(e.action.as_str())),
                    ("author".to_string(), s(&e.author)),
                    ("labourer_id".to_string(), s(&e.labourer_id)),
                    ("invocation_id".to_string(), s("")),
                    ("log_stream_name".to_string(), s("")),
                ]);
                if let Some(d) = &e.details {
                    item.insert("details".into(), s(d.to_string()));
                }
                let put = PutRequest::builder().set_item(Some(item)).build().map_err(build_err)?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            self.write_batch(self.tables.meta.clone(), requests).await?;
        }
        Ok(())
    }

    async fn events_of(&self, task_id: &str) -> StoreResult<Vec<MetaEvent>> {
        let r = Read {
            table: self.tables.meta.clone(),
            key: Some("#t = :t".into()),
            names: vec![("#t", "task_id")],
            values: vec![(":t", s(task_id))],
            consistent: true,
            ..Read::default()
        };
        let mut out = Vec::new();
        for item in self.read(r).await?.0 {
            let text = |k: &str| match item.get(k) {
                Some(AttributeValue::S(v)) => v.clone(),
                _ => String::new(),
            };
            let created = match item.get("created_at") {
                Some(AttributeValue::N(v)) => v.parse::<f64>().unwrap_or_default(),
                _ => 0.0,
            };
            let action = text("action");
            let action: MetaAction = serde_json::from_value(Value::String(action.clone()))
                .map_err(|_| StoreError::Backend(format!("unknown meta action `{action}` in the store").into()))?;
            out.push(MetaEvent {
                task_id: text("task_id"),
                labourer_id: text("labourer_id"),
                action,
                at: Time::from_millis((created * 1000.0).floor() as i64),
                author: text("author"),
                details: item.get("details").and_then(|d| match d {
                    AttributeValue::S(t) => serde_json::from_str(t).ok(),
                    other => Some(item::attr_to_json(other)),
                }),
            });
        }
        Ok(out)
    }
}
