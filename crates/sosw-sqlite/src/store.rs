//! The store contract (`TaskStore`, `MetaSink`) on SQLite: one method per port operation, each a read on the read
//! connection or one closure run in the writer's group-committed transaction. The longer reads are in `queries.rs`,
//! the moves' SQL in `moves.rs`, row mapping in `rows.rs`. Longer than 500 lines because the port is (some 25
//! operations, each a short method here).

use super::*;

#[async_trait]
impl TaskStore for SqliteStore {
    async fn init(&self) -> StoreResult<()> {
        let path = self.path.clone();
        self.run(move |conn| schema::migrate(conn, &path).map_err(|e| maintenance::name_file(e, &path)))
            .await
    }

    async fn create_tasks_recorded(
        &self,
        tasks: &[NewTask],
        step: i64,
        now: Time,
        stamp: Option<&Stamp>,
    ) -> StoreResult<CreateReport> {
        // What does not need the transaction is done here, off the writer thread: the rows and the `created`
        // events are built from the positions the write allocated.
        let tasks = Arc::new(tasks.to_vec());
        let events: Arc<Vec<Vec<MetaEvent>>> = Arc::new(
            tasks
                .iter()
                .map(|t| stamped(stamp, &t.task_id, &t.labourer_id, Recorded::Created))
                .collect(),
        );
        let (batch, recorded) = (tasks.clone(), events.clone());
        let (fresh, positions, existing) = self
            .write(move |tx| {
                let (fresh, skipped) = partition_new_indices(&batch, &existing_ids(tx, &batch)?)?;
                let new: Vec<&NewTask> = fresh.iter().map(|&i| &batch[i]).collect();
                // Every position is allocated (and checked) before anything is written.
                let mut tails = Vec::new();
                for (labourer, _) in labourer_counts(new.iter().copied()) {
                    tails.push((labourer, queue_end(tx, labourer, Greenfield::start(now), "MAX")?));
                }
                let positions =
                    queued_positions(&new, &tails, step, now).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO tasks (task_id, labourer_id, created_at, greenfield, attempts, payload) \
                         VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                    )
                    .map_err(map_err)?;
                for (t, g) in new.iter().zip(&positions) {
                    insert
                        .execute(params![t.task_id, t.labourer_id, now.as_secs_f64(), g.get(), t.payload])
                        .map_err(map_err)?;
                }
                insert_events_of(tx, fresh.iter().flat_map(|&i| &recorded[i]))?;
                Ok((fresh, positions, skipped))
            })
            .await?;
        Ok(CreateReport {
            created: fresh
                .iter()
                .zip(positions)
                .map(|(&i, g)| new_row(&tasks[i], g, now))
                .collect(),
            existing,
        })
    }

    async fn next_queued(&self, labourer: &str, start: Greenfield, limit: usize) -> StoreResult<Vec<Task>> {
        let start = start.get();
        let labourer = labourer.to_string();
        self.run(move |conn| {
            select_tasks(
                conn,
                &format!(
                    "SELECT {COLS} FROM tasks WHERE labourer_id = ?1 AND greenfield < ?2 AND completed_at IS NULL \
                 ORDER BY greenfield, task_id LIMIT ?3"
                ),
                params![labourer, start, limit as i64],
            )
        })
        .await
    }

    async fn claim_recorded(
        &self,
        labourer: &str,
        tasks: &[(String, Greenfield)],
        start: Greenfield,
        invoked_greenfield: Greenfield,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Vec<Claim>> {
        let labourer = labourer.to_string();
        let tasks = tasks.to_vec();
        let (start, invoked_greenfield) = (start.get(), invoked_greenfield.get());
        let stamp = stamp.cloned();
        self.write(move |tx| {
            let mut update = tx
                .prepare_cached(
                    "UPDATE tasks SET greenfield = ?4, attempts = attempts + 1 WHERE task_id = ?1 AND labourer_id = ?2 \
                     AND greenfield = ?3 AND greenfield < ?5 AND completed_at IS NULL",
                )
                .map_err(map_err)?;
            let mut out = Vec::with_capacity(tasks.len());
            for (id, read) in &tasks {
                let changed = update
                    .execute(params![id, labourer, read.get(), invoked_greenfield, start])
                    .map_err(map_err)?;
                out.push(if changed == 1 {
                    insert_events(tx, &stamped(stamp.as_ref(), id, &labourer, Recorded::Invoked))?;
                    Claim::Claimed {
                        task_id: id.clone(),
                        previous_greenfield: *read,
                    }
                } else {
                    Claim::Lost { task_id: id.clone() }
                });
            }
            Ok(out)
        })
        .await
    }

    async fn release_claim_recorded(
        &self,
        task_id: &str,
        invoked_greenfield: Greenfield,
        previous_greenfield: Greenfield,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        let (invoked_greenfield, previous_greenfield) = (invoked_greenfield.get(), previous_greenfield.get());
        let id = task_id.to_string();
        let events = events.to_vec();
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET greenfield = ?3, attempts = MAX(attempts - 1, 0), \
                     refunded_attempts = refunded_attempts + 1 WHERE task_id = ?1 AND greenfield = ?2 \
                     AND completed_at IS NULL",
                )
                .map_err(map_err)?
                .execute(params![id, invoked_greenfield, previous_greenfield])
                .map_err(map_err)?;
            match (n, select_one(tx, "tasks", &id)?) {
                (1, _) => insert_events(tx, &events),
                (_, Some(_)) => Err(moved_since_claimed(&id)),
                (_, None) => Err(StoreError::NotFound(id.clone())),
            }
        })
        .await
    }

    async fn count_running(&self, labourer: &str, expired: Greenfield) -> StoreResult<u64> {
        let expired = expired.get();
        let labourer = labourer.to_string();
        self.run(move |conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FROM tasks WHERE labourer_id = ?1 AND greenfield > ?2 AND completed_at IS NULL",
            )
            .map_err(map_err)?
            .query_row(params![labourer, expired], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }

    async fn list_expired(
        &self,
        labourer: &str,
        start: Greenfield,
        expired: Greenfield,
        limit: usize,
    ) -> StoreResult<Vec<Task>> {
        let (start, expired) = (start.get(), expired.get());
        let labourer = labourer.to_string();
        self.run(move |conn| {
            select_tasks(
                conn,
                &format!(
                    "SELECT {COLS} FROM tasks WHERE labourer_id = ?1 AND greenfield BETWEEN ?2 AND ?3 \
                 AND completed_at IS NULL ORDER BY greenfield, task_id LIMIT ?4"
                ),
                params![labourer, start, expired, limit as i64],
            )
        })
        .await
    }

    async fn list_completed(&self, labourer: &str, start: Greenfield, limit: usize) -> StoreResult<Vec<Task>> {
        let now = start.get();
        let labourer = labourer.to_string();
        self.run(move |conn| {
            select_tasks(
                conn,
                &format!(
                "SELECT {COLS} FROM tasks WHERE labourer_id = ?1 AND completed_at IS NOT NULL AND greenfield >= ?2 \
                 ORDER BY completed_at, task_id LIMIT ?3"
                ),
                params![labourer, now, limit as i64],
            )
        })
        .await
    }

    async fn complete_recorded(
        &self,
        task_id: &str,
        now: Time,
        report: &WorkerReport,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Completion> {
        let id = task_id.to_string();
        let report = report.clone();
        let stamp = stamp.cloned();
        self.write(move |tx| {
            let completion = complete_in(tx, &id, now, &report)?;
            let (t, closed) = match &completion {
                Completion::Live(t) => (t, false),
                Completion::Closed(t) => (t, true),
            };
            insert_events(
                tx,
                &stamped(stamp.as_ref(), &id, &t.labourer_id, Recorded::Completed { closed }),
            )?;
            Ok(completion)
        })
        .await
    }

    async fn fail_recorded(&self, task_id: &str, report: &WorkerReport, stamp: Option<&Stamp>) -> StoreResult<Task> {
        let id = task_id.to_string();
        let report = report.clone();
        let stamp = stamp.cloned();
        self.write(move |tx| {
            let t = fail_in(tx, &id, &report)?;
            insert_events(tx, &stamped(stamp.as_ref(), &id, &t.labourer_id, Recorded::Failed))?;
            Ok(t)
        })
        .await
    }
    async fn archive_recorded(
        &self,
        task_id: &str,
        expect: ArchiveExpect,
        now: Time,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        let id = task_id.to_string();
        let events = events.to_vec();
        self.write(move |tx| {
            let labourer = archive_one(tx, &id, expect, now)??;
            let mut tally = ClosedTally::default();
            tally.add(&labourer, matches!(expect, ArchiveExpect::Completed));
            tally.write(tx)?;
            insert_events(tx, &events)
        })
        .await
    }

    async fn archive_many_recorded(
        &self,
        moves: &[(String, ArchiveExpect)],
        now: Time,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let moves = moves.to_vec();
        let stamp = stamp.cloned();
        self.write(move |tx| {
            let mut out = Vec::with_capacity(moves.len());
            let mut tally = ClosedTally::default();
            for (id, expect) in &moves {
                let done = archive_one(tx, id, *expect, now)?;
                if let Ok(labourer) = &done {
                    let dead = matches!(expect, ArchiveExpect::Dead { .. });
                    tally.add(labourer, !dead);
                    insert_events(tx, &stamped(stamp.as_ref(), id, labourer, Recorded::Archived { dead }))?;
                }
                out.push(done.map(|_| ()));
            }
            tally.write(tx)?;
            Ok(out)
        })
        .await
    }

    async fn move_to_retry_recorded(
        &self,
        task_id: &str,
        expected_greenfield: Greenfield,
        desired_launch_time: i64,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        let id = task_id.to_string();
        let events = events.to_vec();
        self.write(move |tx| {
            let Some(t) = select_one(tx, "tasks", &id)? else {
                return Err(already_closed(tx, &id)?);
            };
            if let Some(reason) = retry_refusal(t.completed_at.is_some(), t.greenfield, expected_greenfield) {
                return Err(StoreError::conflict(&id, reason));
            }
            tx.prepare_cached(&format!(
                "INSERT INTO retry_tasks ({COLS}, desired_launch_time) SELECT {COLS}, ?2 FROM tasks WHERE task_id = ?1"
            ))
            .map_err(map_err)?
            .execute(params![id, desired_launch_time])
            .map_err(map_err)?;
            tx.prepare_cached("DELETE FROM tasks WHERE task_id = ?1")
                .map_err(map_err)?
                .execute([&id])
                .map_err(map_err)?;
            insert_events(tx, &events)
        })
        .await
    }

    async fn due_retries(&self, labourer: &str, now: Time, limit: usize) -> StoreResult<Vec<Task>> {
        let now = now.secs();
        let labourer = labourer.to_string();
        self.run(move |conn| {
            select_tasks(
                conn,
                &format!(
                    "SELECT {COLS} FROM retry_tasks WHERE labourer_id = ?1 AND desired_launch_time <= ?2 \
                 ORDER BY desired_launch_time, task_id LIMIT ?3"
                ),
                params![labourer, now, limit as i64],
            )
        })
        .await
    }

    async fn revive_recorded(&self, task_id: &str, greenfield: Greenfield, events: &[MetaEvent]) -> StoreResult<()> {
        let greenfield = greenfield.get();
        let id = task_id.to_string();
        let events = events.to_vec();
        self.write(move |tx| {
            let n = tx
                .prepare_cached(&format!(
                    "INSERT INTO tasks ({COLS}) SELECT task_id, labourer_id, created_at, ?2, attempts, payload, NULL, \
                     failed_attempts, stats, result, refunded_attempts FROM closed_tasks WHERE task_id = ?1 \
                     AND completed_at IS NULL \
                     AND labourer_id_task_status = labourer_id || '_0'"
                ))
                .map_err(map_err)?
                .execute(params![id, greenfield])
                .map_err(map_err)?;
            if n == 0 {
                return Err(match queries::get(tx, &id)? {
                    Some(t) => sosw_core::moves::revive_refusal(&id, &t.place),
                    None => StoreError::NotFound(id.clone()),
                });
            }
            // The closed_counts_delete trigger takes it off the archive's count.
            tx.prepare_cached("DELETE FROM closed_tasks WHERE task_id = ?1")
                .map_err(map_err)?
                .execute([&id])
                .map_err(map_err)?;
            insert_events(tx, &events)
        })
        .await
    }

    async fn requeue_recorded(
        &self,
        task_id: &str,
        labourer: &str,
        greenfield: Greenfield,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        let greenfield = greenfield.get();
        let id = task_id.to_string();
        let labourer = labourer.to_string();
        let events = events.to_vec();
        self.write(move |tx| {
            let n = tx
                .prepare_cached(&format!(
                    "INSERT INTO tasks ({COLS}) SELECT task_id, labourer_id, created_at, ?3, attempts, payload, \
                     completed_at, failed_attempts, stats, result, refunded_attempts FROM retry_tasks \
                     WHERE task_id = ?1 AND labourer_id = ?2"
                ))
                .map_err(map_err)?
                .execute(params![id, labourer, greenfield])
                .map_err(map_err)?;
            if n == 0 {
                return Err(match select_one(tx, "tasks", &id)? {
                    Some(_) => not_waiting_for_retry(&id),
                    None => already_closed(tx, &id)?,
                });
            }
            tx.prepare_cached("DELETE FROM retry_tasks WHERE task_id = ?1")
                .map_err(map_err)?
                .execute([&id])
                .map_err(map_err)?;
            insert_events(tx, &events)
        })
        .await
    }

    async fn newest_queued(&self, labourer: &str, start: Greenfield) -> StoreResult<Option<Greenfield>> {
        let labourer = labourer.to_string();
        self.run(move |conn| queue_end(conn, &labourer, start, "MAX")).await
    }

    async fn heartbeat(
        &self,
        task_id: &str,
        expired: Greenfield,
        greenfield: Greenfield,
        of: Option<Invocation>,
    ) -> StoreResult<()> {
        let (expired, greenfield) = (expired.get(), greenfield.get());
        let id = task_id.to_string();
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE tasks SET greenfield = ?3 WHERE task_id = ?1 AND completed_at IS NULL AND greenfield > ?2 \
                     AND (?4 IS NULL OR (attempts = ?4 AND refunded_attempts = ?5))",
                )
                .map_err(map_err)?
                .execute(params![
                    id,
                    expired,
                    greenfield,
                    of.map(|o| o.attempts),
                    of.map(|o| o.refunded)
                ])
                .map_err(map_err)?;
            if changed == 1 {
                Ok(())
            } else {
                if let Some(t) = select_one(tx, "tasks", &id)? {
                    stale_report(&id, t.invocation(), of)?;
                }
                Err(StoreError::Conflict {
                    task_id: id.clone(),
                    reason: "it is not running".into(),
                })
            }
        })
        .await
    }

    async fn oldest_queued(&self, labourer: &str, start: Greenfield) -> StoreResult<Option<Greenfield>> {
        let labourer = labourer.to_string();
        self.run(move |conn| queue_end(conn, &labourer, start, "MIN")).await
    }

    async fn get(&self, task_id: &str) -> StoreResult<Option<StoredTask>> {
        let id = task_id.to_string();
        self.run(move |conn| queries::get(conn, &id)).await
    }

    async fn list(&self, query: &TaskQuery) -> StoreResult<Vec<StoredTask>> {
        let q = query.clone();
        self.run(move |conn| queries::list(conn, &q)).await
    }

    async fn labourer_ids(&self) -> StoreResult<Vec<String>> {
        self.run(|conn| queries::labourer_ids(conn)).await
    }

    async fn save_job(&self, job: &JobProgress) -> StoreResult<()> {
        let j = job.clone();
        self.write(move |tx| {
            tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO jobs ({JOB_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .map_err(map_err)?
            .execute(params![
                j.job_id,
                j.labourer_id,
                j.total as i64,
                j.scheduled as i64,
                j.started_at.millis(),
                j.updated_at.millis(),
                j.finished_at.map(Time::millis)
            ])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<JobProgress>> {
        let id = job_id.to_string();
        self.run(move |conn| {
            conn.prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE job_id = ?1"))
                .map_err(map_err)?
                .query_row([&id], job_from_row)
                .optional()
                .map_err(map_err)
        })
        .await
    }

    async fn list_jobs(&self, limit: usize) -> StoreResult<Vec<JobProgress>> {
        self.run(move |conn| {
            let mut st = conn
                .prepare_cached(&format!(
                    "SELECT {JOB_COLS} FROM jobs ORDER BY updated_at DESC, job_id LIMIT ?1"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map([limit.min(i64::MAX as usize) as i64], job_from_row)
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn counts(&self, labourer: &str, markers: &Markers) -> StoreResult<LabourerCounts> {
        let labourer = labourer.to_string();
        let m = *markers;
        self.run(move |conn| queries::counts(conn, &labourer, &m)).await
    }

    async fn counts_many(&self, labourers: &[(String, Markers)]) -> StoreResult<Vec<LabourerCounts>> {
        let labourers = labourers.to_vec();
        // One read transaction: every labourer's counts from one snapshot, in one trip to the reader.
        self.run(move |conn| {
            let tx = conn.transaction().map_err(map_err)?;
            let counts = labourers
                .iter()
                .map(|(l, m)| queries::counts(&tx, l, m))
                .collect::<StoreResult<Vec<_>>>()?;
            tx.commit().map_err(map_err)?;
            Ok(counts)
        })
        .await
    }
}

#[async_trait]
impl MetaSink for SqliteStore {
    async fn record(&self, events: &[MetaEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.write(move |tx| insert_events(tx, &events)).await
    }

    async fn events_of(&self, task_id: &str) -> StoreResult<Vec<MetaEvent>> {
        let id = task_id.to_string();
        self.run(move |conn| queries::events_of(conn, &id)).await
    }
}
