//! The port (`TaskStore`) on DynamoDB: each move with its audit trail, the queries and jobs.
//! Longer than 500 lines because the port is; the requests and moves it uses live beside it.

use super::*;

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
        tasks: &[(String, Greenfield)],
        start: Greenfield,
        invoked_greenfield: Greenfield,
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
        invoked_greenfield: Greenfield,
        previous_greenfield: Greenfield,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        self.release_claim_move(task_id, invoked_greenfield.get(), previous_greenfield.get())
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

    async fn fail_recorded(&self, task_id: &str, report: &WorkerReport, stamp: Option<&Stamp>) -> StoreResult<Task> {
        let t = self.fail_move(task_id, report).await?;
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
        expected_greenfield: Greenfield,
        desired_launch_time: i64,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        self.move_to_retry_move(task_id, expected_greenfield, desired_launch_time)
            .await?;
        self.recorded(events.to_vec()).await;
        Ok(())
    }

    async fn revive_recorded(&self, task_id: &str, greenfield: Greenfield, events: &[MetaEvent]) -> StoreResult<()> {
        self.revive_move(task_id, greenfield.get()).await?;
        self.recorded(events.to_vec()).await;
        Ok(())
    }

    async fn requeue_recorded(
        &self,
        task_id: &str,
        labourer: &str,
        greenfield: Greenfield,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        self.requeue_move(task_id, labourer, greenfield.get()).await?;
        self.recorded(events.to_vec()).await;
        Ok(())
    }

    async fn init(&self) -> StoreResult<()> {
        tables::ensure(&self.client, &self.tables).await
    }

    async fn next_queued(&self, labourer: &str, start: Greenfield, limit: usize) -> StoreResult<Vec<Task>> {
        let mut r = self.by_greenfield(labourer, "#g < :s", Some("attribute_not_exists(#c)"));
        r.values.push((":s", n(start.get())));
        r.limit = Some(limit);
        self.tasks_of(r).await
    }

    async fn count_running(&self, labourer: &str, expired: Greenfield) -> StoreResult<u64> {
        let mut r = self.by_greenfield(labourer, "#g > :e", Some("attribute_not_exists(#c)"));
        r.values.push((":e", n(expired.get())));
        r.count = true;
        Ok(self.read(r).await?.1)
    }

    async fn list_expired(
        &self,
        labourer: &str,
        start: Greenfield,
        expired: Greenfield,
        limit: usize,
    ) -> StoreResult<Vec<Task>> {
        let mut r = self.by_greenfield(labourer, "#g BETWEEN :s AND :e", Some("attribute_not_exists(#c)"));
        r.values.push((":s", n(start.get())));
        r.values.push((":e", n(expired.get())));
        r.limit = Some(limit);
        self.tasks_of(r).await
    }

    async fn list_completed(&self, labourer: &str, start: Greenfield, limit: usize) -> StoreResult<Vec<Task>> {
        let mut r = self.by_greenfield(labourer, "#g >= :now", Some("attribute_exists(#c)"));
        r.values.push((":now", n(start.get())));
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

    async fn due_retries(&self, labourer: &str, now: Time, limit: usize) -> StoreResult<Vec<Task>> {
        let r = Read {
            table: self.tables.retry.clone(),
            index: Some(self.tables.retry_index.clone()),
            key: Some("#l = :l AND #d <= :now".into()),
            names: vec![("#l", "labourer_id"), ("#d", "desired_launch_time")],
            values: vec![(":l", s(labourer)), (":now", n(now.secs()))],
            limit: Some(limit),
            consistent: true,
            ..Read::default()
        };
        self.tasks_of(r).await
    }

    async fn heartbeat(
        &self,
        task_id: &str,
        expired: Greenfield,
        greenfield: Greenfield,
        of: Option<Invocation>,
    ) -> StoreResult<()> {
        self.heartbeat_move(task_id, expired.get(), greenfield.get(), of).await
    }

    async fn oldest_queued(&self, labourer: &str, start: Greenfield) -> StoreResult<Option<Greenfield>> {
        self.queue_end(labourer, start, false).await
    }

    async fn newest_queued(&self, labourer: &str, start: Greenfield) -> StoreResult<Option<Greenfield>> {
        self.queue_end(labourer, start, true).await
    }

    async fn get(&self, task_id: &str) -> StoreResult<Option<StoredTask>> {
        if !storable_key(task_id) {
            return Ok(None);
        }
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

    /// One consistent `BatchGetItem` of the task's three possible keys (its labourer's is the retry table's).
    async fn has_task(&self, labourer: &str, task_id: &str) -> StoreResult<bool> {
        if !storable_key(task_id) || !storable_key(labourer) {
            return Ok(false);
        }
        let found = self.batch_get(self.lookup([(labourer, task_id)])?).await?;
        Ok(found
            .values()
            .flatten()
            .any(|item| get_s_attr(item, "labourer_id").as_deref() == Some(labourer)))
    }

    /// One labourer's listing reads that labourer's index page by page (a page, and the rows tying with its last
    /// in queue position or close time); every labourer's is theirs one after another
    /// ([`DynamoStore::list_every_labourer`], over the registered labourers: see `registry.rs`).
    async fn list(&self, q: &TaskQuery) -> StoreResult<Vec<StoredTask>> {
        let Some(l) = q.labourer.as_deref() else {
            return self.list_every_labourer(q).await;
        };
        let after = cursor_within(q, l);
        let mut rows: Vec<StoredTask> = match q.table {
            Table::Live => {
                let filter = match q.completed {
                    Some(true) => Some("attribute_exists(#c)"),
                    Some(false) => Some("attribute_not_exists(#c)"),
                    None => None,
                };
                let (lo, hi) = q.greenfield.map_or((i64::MIN, i64::MAX), |g| (g.lo.get(), g.hi.get()));
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
                self.ordered_page(base, "greenfield", (lo, hi), after, q.limit)
                    .await?
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
                let base = Read {
                    table: self.tables.retry.clone(),
                    index: Some(self.tables.retry_index.clone()),
                    key: Some("#l = :l".into()),
                    names: vec![("#l", "labourer_id")],
                    values: vec![(":l", s(l))],
                    ..Read::default()
                };
                self.ordered_page(base, "desired_launch_time", (i64::MIN, i64::MAX), after, q.limit)
                    .await?
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
                let mut rows = Vec::new();
                for done in q.completed.map_or(vec![true, false], |d| vec![d]) {
                    rows.extend(self.closed_page(l, done, after.clone(), q.limit).await?);
                }
                rows
            }
        };
        let order = |t: &StoredTask| match t.place {
            Place::Live => t.task.greenfield.get(),
            Place::Retry { desired_launch_time } => desired_launch_time,
            Place::Closed { closed_at, .. } => closed_at,
        };
        if let Some(after) = &q.after {
            rows.retain(|t| after.precedes(t));
        }
        rows.sort_by(|a, b| (order(a), &a.task.task_id).cmp(&(order(b), &b.task.task_id)));
        rows.dedup_by(|a, b| a.task.task_id == b.task.task_id);
        rows.truncate(q.limit);
        Ok(rows)
    }

    /// The registered labourers (see `registry.rs`): one consistent Scan of the labourers' table, whatever the
    /// tasks stored.
    async fn labourer_ids(&self) -> StoreResult<Vec<String>> {
        self.registered_labourers().await
    }

    async fn rescan_labourers(&self, now: Time) -> StoreResult<Vec<String>> {
        self.rescan(now).await
    }

    /// See [`DynamoStore::counts_of`].
    async fn counts(&self, labourer: &str, m: &Markers) -> StoreResult<LabourerCounts> {
        self.counts_of(labourer, m, None).await
    }

    /// [`TaskStore::counts`] of a few labourers at once (each sends its queries at once), in their order, their
    /// stored closed counts read first in one request.
    async fn counts_many(&self, labourers: &[(String, Markers)]) -> StoreResult<Vec<LabourerCounts>> {
        let ids: Vec<&str> = labourers.iter().map(|(l, _)| l.as_str()).collect();
        let settled = self.settled_of_many(&ids).await?;
        let each: Vec<_> = labourers
            .iter()
            .map(|(l, m)| self.counts_of(l, m, Some(settled.get(l).copied().unwrap_or_default())))
            .collect();
        stream::iter(each).buffered(COUNTING_LABOURERS).try_collect().await
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
        if !storable_key(job_id) {
            return Ok(None);
        }
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

    /// The greenfield index is replicated asynchronously, usually well within a second.
    fn count_settle(&self) -> Duration {
        COUNT_SETTLE
    }

    fn throttled_requests(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

impl DynamoStore {
    /// Five `Select=COUNT` queries of the live tables, sent at once beside the closed counts (`closed_counts/`:
    /// the labourer's `stored` counts, read here unless given, then only the tasks closed since their mark): the
    /// latency of one poll is that of the slowest, not their sum, and the archive's size does not matter.
    async fn counts_of(&self, labourer: &str, m: &Markers, stored: Option<Settled>) -> StoreResult<LabourerCounts> {
        let live = |key: &str, filter: &str, values: Vec<(&'static str, AttributeValue)>| {
            let mut r = self.by_greenfield(labourer, key, Some(filter));
            r.values.extend(values);
            r.count = true;
            r
        };
        let retry = Read {
            table: self.tables.retry.clone(),
            key: Some("#l = :l".into()),
            names: vec![("#l", "labourer_id")],
            values: vec![(":l", s(labourer))],
            count: true,
            ..Read::default()
        };
        let live_task = "attribute_not_exists(#c)";
        let reads = [
            live("#g < :s", live_task, vec![(":s", n(m.start))]),
            live("#g > :e", live_task, vec![(":e", n(m.expired))]),
            live(
                "#g BETWEEN :s AND :e",
                live_task,
                vec![(":s", n(m.start)), (":e", n(m.expired))],
            ),
            live("#g >= :s", "attribute_exists(#c)", vec![(":s", n(m.start))]),
            retry,
        ];
        let (counted, (closed_completed, closed_dead)) = futures::try_join!(
            futures::future::try_join_all(reads.map(|r| async move { self.read(r).await.map(|(_, c)| c) })),
            // The markers' start is the poll's `now`, in seconds.
            async {
                match stored {
                    Some(stored) => self.closed_counts_from(labourer, stored, m.start.get()).await,
                    None => self.closed_counts(labourer, m.start.get()).await,
                }
            },
        )?;
        let [queued, running, expired, completed, retry_waiting] =
            <[u64; 5]>::try_from(counted).map_err(|_| StoreError::Backend("five counts, not five".into()))?;
        Ok(LabourerCounts {
            queued,
            running,
            expired,
            completed,
            retry_waiting,
            closed_completed,
            closed_dead,
        })
    }
}
