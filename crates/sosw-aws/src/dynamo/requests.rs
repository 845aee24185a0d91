//! Reads, writes and transactions against the tables: pagination, batches, conditional transactions.
//! Longer than 500 lines because every request shape the store sends is here, each with its retries of
//! unprocessed parts; the task keys they use are in `items.rs`.

use super::*;

impl DynamoStore {
    /// Every item `r` reads (at most `r.limit`), and the count DynamoDB gave.
    pub(crate) async fn read(&self, r: Read) -> StoreResult<(Vec<Item>, u64)> {
        let mut items = Vec::new();
        let count = self.read_pages(r, |page| items.extend(page)).await?;
        Ok((items, count))
    }

    /// The paginated Query or Scan `r`, each page handed to `each` and not kept (memory is one page), at most
    /// `r.limit` items in all; the count DynamoDB gave.
    pub(crate) async fn read_pages(&self, r: Read, mut each: impl FnMut(Vec<Item>)) -> StoreResult<u64> {
        let mut taken = 0usize;
        let mut count = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let names: HashMap<String, String> = r.names.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let values: HashMap<String, AttributeValue> =
                r.values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            let page_limit = r.limit.map(|l| (l.saturating_sub(taken)).clamp(1, 1000) as i32);
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
            let mut page_items = page_items;
            let full = r.limit.is_some_and(|l| {
                page_items.truncate(l.saturating_sub(taken));
                taken + page_items.len() >= l
            });
            let n = page_items.len();
            each(page_items);
            taken += n;
            match next {
                Some(k) if !k.is_empty() && !full => start = Some(k),
                _ => return Ok(count),
            }
        }
    }

    /// A page of one labourer's rows through an index whose range key is `attr` (`base` queries the labourer's
    /// partition): the rows with `attr` in `range` that sort after `after` (`(order, task_id)` of the last row of
    /// the previous page), at least `limit` of them when there are, and every row tying in `attr` with the last —
    /// so that, sorted by `(attr, task_id)` and cut to `limit`, the page is exact. It reads the page and the ties,
    /// never the rest of the listing.
    pub(crate) async fn ordered_page(
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
    pub(crate) fn by_greenfield(&self, labourer: &str, key: &str, filter: Option<&str>) -> Read {
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

    /// The lowest (or, `newest`, the highest) queue position of a labourer below `start`: one item from the
    /// greenfield index, either end.
    pub(crate) async fn queue_end(
        &self,
        labourer: &str,
        start: Greenfield,
        newest: bool,
    ) -> StoreResult<Option<Greenfield>> {
        let mut r = self.by_greenfield(labourer, "#g < :start", None);
        r.values.push((":start", n(start.get())));
        r.names.retain(|(k, _)| *k != "#c");
        r.limit = Some(1);
        r.backwards = newest;
        let items = self.read(r).await?.0;
        Ok(items
            .first()
            .and_then(|i| get_i64(i, "greenfield"))
            .map(Greenfield::new))
    }

    pub(crate) async fn tasks_of(&self, r: Read) -> StoreResult<Vec<Task>> {
        self.read(r).await?.0.iter().map(task_from_item).collect()
    }

    /// Up to `limit` of labourer `l`'s closed tasks of one status after `after`, in `(closed_at, task_id)` order:
    /// the status index read a page at a time (keys only, ordered by close time), then just the page's items
    /// whole. A task whose item is gone by then (requeued since, or the index lagging) is skipped and the index
    /// read on, so that a short page still means the end of the listing.
    pub(crate) async fn closed_page(
        &self,
        l: &str,
        done: bool,
        mut after: Option<(i64, String)>,
        limit: usize,
    ) -> StoreResult<Vec<StoredTask>> {
        let base = Read {
            table: self.tables.closed.clone(),
            index: Some(self.tables.closed_index.clone()),
            key: Some("#s = :s".into()),
            names: vec![("#s", "labourer_id_task_status")],
            values: vec![(":s", s(closed_status(l, done)))],
            ..Read::default()
        };
        let mut rows = Vec::new();
        while rows.len() < limit {
            let want = limit - rows.len();
            let page = self
                .ordered_page(base.clone(), "closed_at", (i64::MIN, i64::MAX), after.clone(), want)
                .await?;
            let mut keys: Vec<(i64, String)> = page
                .iter()
                .filter_map(|i| Some((get_i64(i, "closed_at")?, get_s_attr(i, "task_id")?)))
                .filter(|k| after.as_ref().is_none_or(|a| k > a))
                .collect();
            keys.sort();
            keys.dedup();
            // Fewer than asked for after the cursor: the index has no more.
            let last_page = keys.len() < want;
            keys.truncate(want);
            let ids: Vec<String> = keys.iter().map(|(_, id)| id.clone()).collect();
            for item in self.get_many(&self.tables.closed, &ids).await? {
                rows.push(stored_closed(&item)?);
            }
            match keys.pop() {
                Some(last) if !last_page => after = Some(last),
                _ => break,
            }
        }
        Ok(rows)
    }

    /// A listing of every labourer: each labourer's listing ([`TaskStore::list`] with the labourer) in labourer
    /// order from the cursor's, until the page is full — the order one listing of all would have.
    pub(crate) async fn list_every_labourer(&self, q: &TaskQuery) -> StoreResult<Vec<StoredTask>> {
        let mut rows = Vec::new();
        for l in self.labourer_ids().await? {
            if q.after.as_ref().is_some_and(|c| l < c.labourer_id) {
                continue;
            }
            let left = q.limit.saturating_sub(rows.len());
            if left == 0 {
                break;
            }
            let one = TaskQuery {
                labourer: Some(l),
                limit: left,
                ..q.clone()
            };
            rows.extend(self.list(&one).await?);
        }
        Ok(rows)
    }

    /// One `BatchGetItem` request (at most 100 keys over its tables) to its end: the items found, by table, with
    /// the keys DynamoDB leaves unprocessed asked again after a back-off.
    pub(crate) async fn batch_get(
        &self,
        mut request: HashMap<String, KeysAndAttributes>,
    ) -> StoreResult<HashMap<String, Vec<Item>>> {
        let mut found: HashMap<String, Vec<Item>> = HashMap::new();
        let mut attempt = 0;
        while !request.is_empty() {
            let out = self
                .client
                .batch_get_item()
                .set_request_items(Some(request))
                .send()
                .await
                .map_err(sdk_err)?;
            let mut progress = false;
            for (table, items) in out.responses().into_iter().flatten() {
                progress |= !items.is_empty();
                found.entry(table.clone()).or_default().extend(items.iter().cloned());
            }
            request = out.unprocessed_keys().cloned().unwrap_or_default();
            if !request.is_empty() {
                // Keys left over from a response that made progress (its size cap) are asked again at once.
                if progress {
                    attempt = 0;
                } else {
                    self.back_off(&mut attempt).await?;
                }
            }
        }
        Ok(found)
    }

    /// The items of `ids` in `table` (keyed by `task_id` alone), in the order of `ids`; an id not there is left out.
    pub(crate) async fn get_many(&self, table: &str, ids: &[String]) -> StoreResult<Vec<Item>> {
        let mut by_id: HashMap<String, Item> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let keys = KeysAndAttributes::builder()
                .set_keys(Some(chunk.iter().map(|id| DynamoStore::task_key(id)).collect()))
                .build()
                .map_err(build_err)?;
            let found = self.batch_get(HashMap::from([(table.to_string(), keys)])).await?;
            for item in found.into_values().flatten() {
                if let Some(id) = get_s_attr(&item, "task_id") {
                    by_id.insert(id, item);
                }
            }
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    /// A task's item in a table keyed by `task_id` alone (live or closed), read consistently.
    pub(crate) async fn get_by_id(&self, table: &str, task_id: &str) -> StoreResult<Option<Item>> {
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

    pub(crate) async fn get_live(&self, task_id: &str) -> StoreResult<Option<Item>> {
        self.get_by_id(&self.tables.tasks, task_id).await
    }

    pub(crate) async fn get_closed(&self, task_id: &str) -> StoreResult<Option<Item>> {
        self.get_by_id(&self.tables.closed, task_id).await
    }

    /// A retry row by task id alone. The retry table's key starts with the labourer, which the task's audit trail
    /// names: one Query of the meta table (its first event) and one GetItem. Only a task with no audit trail (meta
    /// writing off, a meta table that does not exist or cannot be queried by task id) costs a Scan of the retry
    /// table.
    pub(crate) async fn find_retry(&self, task_id: &str) -> StoreResult<Option<Item>> {
        let trail = Read {
            table: self.tables.meta.clone(),
            key: Some("#t = :t".into()),
            names: vec![("#t", "task_id")],
            values: vec![(":t", s(task_id))],
            limit: Some(1),
            projection: Some("labourer_id".into()),
            ..Read::default()
        };
        let labourer = match self.read(trail).await {
            Ok((items, _)) => items.first().and_then(|item| match item.get("labourer_id") {
                Some(AttributeValue::S(l)) if !l.is_empty() => Some(l.clone()),
                _ => None,
            }),
            // Only a shortcut: a meta table that is missing or keyed otherwise (another writer's) means the scan.
            Err(e) if !e.is_retryable() => None,
            Err(e) => return Err(e),
        };
        if let Some(labourer) = labourer {
            // A task's labourer never changes: not under it in the retry table means not there at all.
            let out = self
                .client
                .get_item()
                .table_name(&self.tables.retry)
                .set_key(Some(DynamoStore::retry_key(&labourer, task_id)))
                .consistent_read(true)
                .send()
                .await
                .map_err(sdk_err)?;
            return Ok(out.item().cloned());
        }
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

    pub(crate) async fn already_closed(&self, task_id: &str) -> StoreResult<StoreError> {
        Ok(match self.get_closed(task_id).await? {
            Some(item) => closed_refusal(
                task_id,
                item.contains_key("completed_at"),
                get_i64(&item, "closed_at").unwrap_or_default(),
            ),
            None => StoreError::NotFound(task_id.to_string()),
        })
    }

    /// Runs a transaction; a failed condition is a [`StoreError::Conflict`] about `task_id`.
    pub(crate) async fn transact(&self, task_id: &str, items: Vec<TransactWriteItem>, reason: &str) -> StoreResult<()> {
        match self.transact_reasons(items).await? {
            None => Ok(()),
            Some(Cancelled::Conditions(_)) => Err(StoreError::conflict(task_id, reason)),
            Some(Cancelled::Conflict(e)) => Err(e),
        }
    }

    /// A transaction: `None` if it took effect, else why DynamoDB cancelled it.
    pub(crate) async fn transact_reasons(&self, items: Vec<TransactWriteItem>) -> StoreResult<Option<Cancelled>> {
        let request = self.client.transact_write_items().set_transact_items(Some(items));
        let Err(e) = request.send().await else {
            return Ok(None);
        };
        let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() else {
            return Err(sdk_err(e));
        };
        let failed: Vec<bool> = c
            .cancellation_reasons()
            .iter()
            .map(|r| r.code() == Some("ConditionalCheckFailed"))
            .collect();
        let conflict = c
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("TransactionConflict"));
        if failed.is_empty() || failed.contains(&true) {
            Ok(Some(Cancelled::Conditions(failed)))
        } else if conflict {
            Ok(Some(Cancelled::Conflict(sdk_err(e))))
        } else {
            Err(sdk_err(e))
        }
    }

    pub(crate) fn put(&self, table: &str, item: Item, condition: Option<&str>) -> StoreResult<TransactWriteItem> {
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    pub(crate) fn delete(
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
    pub(crate) async fn write_batch(&self, table: String, requests: Vec<WriteRequest>) -> StoreResult<()> {
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

    /// The live item moved to closed, completed or dead, at `now`.
    pub(crate) fn closed_item(mut item: Item, completed: bool, now: Time) -> Item {
        let labourer = labourer_of(&item);
        item.insert("closed_at".into(), n(now.secs()));
        item.insert("labourer_id_task_status".into(), s(closed_status(&labourer, completed)));
        item
    }

    /// Archives one live task; returns its labourer.
    pub(crate) async fn archive_one(&self, task_id: &str, expect: ArchiveExpect, now: Time) -> StoreResult<String> {
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
        let greenfield = greenfield_of(&item)?;
        if let Some(reason) = expect.refusal(completed, Greenfield::new(greenfield)) {
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
    pub(crate) async fn archive_copy(&self, task_id: &str, item: Item, now: Time) -> StoreResult<()> {
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
    pub(crate) async fn close_completed(
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
        let g = greenfield_of(&item)?;
        // Deleted only if still at the greenfield and the invocation it was read at (the caller checked the report
        // against that invocation).
        let InvocationGuard {
            condition: guard,
            names: guard_names,
            values: guard_values,
        } = at_invocation(task.invocation());
        let mut names = vec![("#g", "greenfield")];
        names.extend(guard_names);
        let mut values = vec![(":g", n(g))];
        values.extend(guard_values);
        let items = vec![
            self.put(&self.tables.closed, DynamoStore::closed_item(item, true, now), None)?,
            self.delete(table, key, &format!("#g = :g AND {guard}"), &names, values)?,
        ];
        self.transact(task_id, items, "moved while its completion was being recorded")
            .await?;
        Ok(task)
    }
}
