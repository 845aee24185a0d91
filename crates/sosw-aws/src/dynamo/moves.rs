//! The moves between tables, each conditional and atomic; the port methods add the audit trail.

use super::*;

/// The moves themselves; the `TaskStore` methods add the audit trail ([`DynamoStore::recorded`]).
impl DynamoStore {
    pub(crate) async fn create_tasks_move(&self, tasks: &[NewTask], step: i64, now: Time) -> StoreResult<CreateReport> {
        if tasks.iter().any(|t| t.task_id.is_empty()) {
            return Err(StoreError::Invalid("a task id must not be empty".into()));
        }
        // Which ids exist already, in any table (BatchGetItem, 100 keys a request).
        let mut existing: HashSet<String> = HashSet::new();
        let mut seen = HashSet::new();
        let unique: Vec<&NewTask> = tasks.iter().filter(|t| seen.insert(t.task_id.clone())).collect();
        for chunk in unique.chunks(33) {
            let request = self.lookup(chunk.iter().map(|t| (t.labourer_id.as_str(), t.task_id.as_str())))?;
            for item in self.batch_get(request).await?.into_values().flatten() {
                if let Some(AttributeValue::S(id)) = item.get("task_id") {
                    existing.insert(id.clone());
                }
            }
        }
        let (fresh, skipped) = partition_new(tasks, &existing)?;
        let mut report = CreateReport {
            existing: skipped,
            ..CreateReport::default()
        };
        // Every position is allocated (and checked) before anything is written.
        let mut tails = Vec::new();
        for (labourer, _) in labourer_counts(fresh.iter().copied()) {
            tails.push((labourer, self.newest_queued(labourer, Greenfield::start(now)).await?));
        }
        report.created = queued_rows(&fresh, &tails, step, now).map_err(|e| StoreError::Invalid(e.to_string()))?;
        // Registered before any task is written: a labourer with tasks is always listed (see `registry.rs`).
        self.register_labourers(tails.iter().map(|(l, _)| *l), now).await?;
        let (created, existing) = self.put_new_tasks(&report.created).await?;
        report.created = created;
        report.existing.extend(existing);
        Ok(report)
    }

    pub(crate) async fn claim_move(
        &self,
        labourer: &str,
        tasks: &[(String, Greenfield)],
        start: Greenfield,
        invoked_greenfield: Greenfield,
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
                    .expression_attribute_values(":inv", n(invoked_greenfield.get()))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":l", s(labourer))
                    .expression_attribute_values(":read", n(read.get()))
                    .expression_attribute_values(":s", n(start.get()))
                    .send()
                    .await;
                match out {
                    Ok(_) => Ok(Claim::Claimed {
                        task_id: id,
                        previous_greenfield: read,
                    }),
                    Err(e) if failed_condition(&e) => Ok(Claim::Lost { task_id: id }),
                    Err(e) => Err(sdk_err(e)),
                }
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    pub(crate) async fn release_claim_move(
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
            .update_expression("SET #g = :prev, #a = #a - :one ADD #r :one")
            .condition_expression("#g = :inv AND attribute_not_exists(#c) AND #a >= :one")
            .expression_attribute_names("#g", "greenfield")
            .expression_attribute_names("#a", "attempts")
            .expression_attribute_names("#r", "refunded_attempts")
            .expression_attribute_names("#c", "completed_at")
            .expression_attribute_values(":prev", n(previous_greenfield))
            .expression_attribute_values(":inv", n(invoked_greenfield))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if failed_condition(&e) => match self.get_live(task_id).await? {
                Some(_) => Err(moved_since_claimed(task_id)),
                None => Err(StoreError::NotFound(task_id.to_string())),
            },
            Err(e) => Err(sdk_err(e)),
        }
    }

    pub(crate) async fn complete_move(
        &self,
        task_id: &str,
        now: Time,
        report: &WorkerReport,
    ) -> StoreResult<Completion> {
        // The common case, in one request: the task is where its invocation put it.
        let fast = ReportUpdate {
            table: &self.tables.tasks,
            key: DynamoStore::task_key(task_id),
            sets: vec!["#c = if_not_exists(#c, :now)"],
            condition: "attribute_exists(task_id) AND #a >= :one AND #g >= :now",
            at: report.of,
            names: vec![("#c", "completed_at"), ("#g", "greenfield"), ("#a", "attempts")],
            values: vec![(":now", n(now.secs())), (":one", n(1))],
        };
        if let Some(task) = self.apply_report(fast, report).await? {
            return Ok(Completion::Live(task));
        }
        if let Some(item) = self.get_live(task_id).await? {
            let task = task_from_item(&item)?;
            let found = Found::Live {
                at: task.invocation(),
                greenfield: task.greenfield,
            };
            if plan_completion(task_id, found, report.of, now)? == CompletionPlan::CloseLive {
                let closed = self
                    .close_reported(
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
                at: Some(task.invocation()),
                names: vec![("#c", "completed_at"), ("#g", "greenfield")],
                values: vec![(":now", n(now.secs())), (":g", n(task.greenfield))],
            };
            return match self.apply_report(update, report).await? {
                Some(task) => Ok(Completion::Live(task)),
                None => Err(self.lost_report(task_id, report.of, "completion").await),
            };
        }
        if let Some(item) = self.find_retry(task_id).await? {
            let found = Found::Retry {
                at: task_from_item(&item)?.invocation(),
            };
            plan_completion(task_id, found, report.of, now)?;
            let key = DynamoStore::retry_key(&labourer_of(&item), task_id);
            let closed = self
                .close_reported(task_id, item, &self.tables.retry, key, report, now)
                .await?;
            return Ok(Completion::Closed(closed));
        }
        Err(self.already_closed(task_id).await?)
    }

    pub(crate) async fn fail_move(&self, task_id: &str, report: &WorkerReport) -> StoreResult<Task> {
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
        let at = task_from_item(&item)?.invocation();
        check_report(task_id, at, report.of)?;
        let update = ReportUpdate {
            table,
            key,
            sets: vec!["#f = if_not_exists(#f, :zero) + :one"],
            condition: "attribute_exists(task_id)",
            at: Some(at),
            names: vec![("#f", "failed_attempts")],
            values: vec![(":zero", n(0)), (":one", n(1))],
        };
        match self.apply_report(update, report).await? {
            Some(task) => Ok(task),
            None => Err(self.lost_report(task_id, report.of, "failure").await),
        }
    }

    /// Why a report's conditional write failed: [`StoreError::StaleReport`] when the report names an invocation the
    /// task has left meanwhile (read again), else a conflict that asks the reporter to report again.
    pub(crate) async fn lost_report(&self, task_id: &str, of: Option<Invocation>, what: &str) -> StoreError {
        if of.is_some() {
            let item = match self.get_live(task_id).await {
                Ok(Some(item)) => Some(item),
                Ok(None) => self.find_retry(task_id).await.ok().flatten(),
                Err(_) => None,
            };
            if let Some(Ok(task)) = item.as_ref().map(task_from_item) {
                if let Err(stale) = stale_report(task_id, task.invocation(), of) {
                    return stale;
                }
            }
        }
        StoreError::conflict(
            task_id,
            format!("moved while its {what} was being recorded; report again"),
        )
    }

    /// [`DynamoStore::close_completed`], whose lost race is told as [`DynamoStore::lost_report`] tells it.
    async fn close_reported(
        &self,
        task_id: &str,
        item: Item,
        table: &str,
        key: Item,
        report: &WorkerReport,
        now: Time,
    ) -> StoreResult<Task> {
        match self.close_completed(task_id, item, table, key, report, now).await {
            Err(StoreError::Conflict { .. }) => Err(self.lost_report(task_id, report.of, "completion").await),
            other => other,
        }
    }

    pub(crate) async fn archive_move(&self, task_id: &str, expect: ArchiveExpect, now: Time) -> StoreResult<()> {
        self.archive_one(task_id, expect, now).await.map(|_| ())
    }

    /// Per task: its labourer, or why it was not archived.
    pub(crate) async fn archive_many_move(
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
        if let Some(pos) = results.iter().position(|r| matches!(r, Err(e) if !e.is_lost_race())) {
            let mut results = results;
            return Err(results.swap_remove(pos).expect_err("an error at this position"));
        }
        Ok(results)
    }

    pub(crate) async fn move_to_retry_move(
        &self,
        task_id: &str,
        expected_greenfield: Greenfield,
        desired_launch_time: i64,
    ) -> StoreResult<()> {
        let Some(mut item) = self.get_live(task_id).await? else {
            return Err(self.already_closed(task_id).await?);
        };
        let g = greenfield_of(&item)?;
        if let Some(reason) = retry_refusal(
            item.contains_key("completed_at"),
            Greenfield::new(g),
            expected_greenfield,
        ) {
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

    pub(crate) async fn requeue_move(&self, task_id: &str, labourer: &str, greenfield: i64) -> StoreResult<()> {
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
                Some(_) => not_waiting_for_retry(task_id),
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

impl DynamoStore {
    /// A dead task back to the live table at `greenfield`: one transaction that puts the live item (if none) and
    /// deletes the closed one (if still dead).
    pub(crate) async fn revive_move(&self, task_id: &str, greenfield: i64) -> StoreResult<()> {
        let Some(mut item) = self.get_closed(task_id).await? else {
            return Err(match self.get(task_id).await? {
                Some(t) => sosw_core::moves::revive_refusal(task_id, &t.place),
                None => StoreError::NotFound(task_id.to_string()),
            });
        };
        if item.contains_key("completed_at") {
            return Err(sosw_core::moves::revive_refusal(
                task_id,
                &sosw_core::Place::Closed {
                    closed_at: get_i64(&item, "closed_at").unwrap_or_default(),
                    completed: true,
                },
            ));
        }
        let closed_at = get_i64(&item, "closed_at");
        let labourer = labourer_of(&item);
        item.remove("closed_at");
        item.remove("labourer_id_task_status");
        item.insert("greenfield".into(), n(greenfield));
        let mut key = Item::new();
        key.insert("task_id".into(), s(task_id));
        let items = vec![
            self.put(&self.tables.tasks, item, Some("attribute_not_exists(task_id)"))?,
            self.delete(
                &self.tables.closed,
                key,
                "attribute_exists(task_id) AND attribute_not_exists(#c)",
                &[("#c", "completed_at")],
                vec![],
            )?,
        ];
        self.revive_counted(task_id, &labourer, closed_at, items).await
    }
}

/// The labourer of a task item ("" if it has none).
pub(crate) fn labourer_of(item: &Item) -> String {
    match item.get("labourer_id") {
        Some(AttributeValue::S(l)) => l.clone(),
        _ => String::new(),
    }
}

/// Moves' audit events waiting for the meta table, written by group commit: while one caller writes, the events
/// of the moves that finish meanwhile wait, and the next caller to write takes them, one `BatchWriteItem` (25
/// events) at a time. Concurrent reports (a fleet of workers reporting to one `sosw run`) thus share requests, while
/// a lone move still costs one. Every caller returns only once its own events were sent (never later, in the
/// background: a Lambda function may be frozen as soon as it returns). Each write runs as a task of its own, so a
/// caller whose future is dropped mid-write (a client that hung up) loses nobody's events.
#[derive(Debug, Default)]
pub(crate) struct MetaQueue {
    pending: std::sync::Mutex<std::collections::VecDeque<(Vec<MetaEvent>, tokio::sync::oneshot::Sender<()>)>>,
    writer: tokio::sync::Mutex<()>,
}

/// Events one group write takes from the queue (one `BatchWriteItem`), unless a single move brought more.
const META_BATCH: usize = 25;

impl DynamoStore {
    /// Records a move's audit events right after it (best-effort: DynamoDB's meta table is separate, and a
    /// transaction with it would double the write cost of every move), sharing requests with concurrent moves
    /// ([`MetaQueue`]). A failure is logged; the move stands.
    pub(crate) async fn recorded(&self, events: Vec<MetaEvent>) {
        if events.is_empty() {
            return;
        }
        let (sent, mut written) = tokio::sync::oneshot::channel();
        lock(&self.meta_queue.pending).push_back((events, sent));
        let _writer = self.meta_queue.writer.lock().await;
        loop {
            if written.try_recv().is_ok() {
                // A write before ours took our events.
                return;
            }
            let batch = take_batch(&mut lock(&self.meta_queue.pending));
            if batch.is_empty() {
                // Ours were taken by a write that failed to answer (it cannot: it answers after logging).
                return;
            }
            let store = self.clone();
            let write = tokio::spawn(async move {
                let events: Vec<MetaEvent> = batch.iter().flat_map(|(events, _)| events.iter().cloned()).collect();
                if let Err(e) = store.record(&events).await {
                    tracing::warn!(count = events.len(), error = %e, "could not write meta events; the moves they record stand");
                }
                for (_, sent) in batch {
                    // A caller that is gone (its future dropped) needs no answer.
                    let _ = sent.send(());
                }
            });
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "the meta event writer stopped; the moves it was recording stand");
            }
        }
    }
}

/// The oldest waiting moves, up to [`META_BATCH`] events (at least one move, however many events it brought).
fn take_batch(
    pending: &mut std::collections::VecDeque<(Vec<MetaEvent>, tokio::sync::oneshot::Sender<()>)>,
) -> Vec<(Vec<MetaEvent>, tokio::sync::oneshot::Sender<()>)> {
    let mut batch = Vec::new();
    let mut events = 0;
    while let Some((next, _)) = pending.front() {
        if !batch.is_empty() && events + next.len() > META_BATCH {
            break;
        }
        events += next.len();
        batch.extend(pending.pop_front());
    }
    batch
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The queue's state is a plain Vec: a panic elsewhere cannot leave it half-changed.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
