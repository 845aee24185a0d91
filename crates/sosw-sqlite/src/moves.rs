//! The moves inside the writer's transaction: each checks its condition before it writes (a refusal leaves
//! nothing behind), and records its audit events in the same transaction.

use super::*;

/// Moves one live task to closed if it meets `expect`. The outer `Err` is an SQL failure (the caller's whole
/// transaction is rolled back); the inner one is this task's condition failing, with nothing written.
/// On success, the inner `Ok` holds the task's labourer; the caller adds the task to `closed_counts`
/// ([`ClosedTally`]).
pub(crate) fn archive_one(
    tx: &Connection,
    id: &str,
    expect: ArchiveExpect,
    now: Time,
) -> StoreResult<StoreResult<String>> {
    let row: Option<(String, i64, bool)> = tx
        .prepare_cached("SELECT labourer_id, greenfield, completed_at IS NOT NULL FROM tasks WHERE task_id = ?1")
        .map_err(map_err)?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(map_err)?;
    let Some((labourer, greenfield, completed)) = row else {
        return Ok(Err(already_closed(tx, id)?));
    };
    let refused = expect.refusal(completed, Greenfield::new(greenfield));
    if let Some(reason) = refused {
        return Ok(Err(StoreError::conflict(id, reason)));
    }
    tx.prepare_cached(&format!(
        "INSERT INTO closed_tasks ({COLS}, closed_at, labourer_id_task_status) SELECT {COLS}, ?2, ?3 FROM tasks \
         WHERE task_id = ?1"
    ))
    .map_err(map_err)?
    .execute(params![id, now.secs(), closed_status(&labourer, completed)])
    .map_err(map_err)?;
    tx.prepare_cached("DELETE FROM tasks WHERE task_id = ?1")
        .map_err(map_err)?
        .execute([id])
        .map_err(map_err)?;
    Ok(Ok(labourer))
}

/// The tasks a write closed, by labourer and status, added to `closed_counts` once per write: an archive of a
/// page costs one upsert per labourer, not one per task.
#[derive(Debug, Default)]
pub(crate) struct ClosedTally(Vec<(String, bool, i64)>);

impl ClosedTally {
    pub(crate) fn add(&mut self, labourer: &str, completed: bool) {
        match self.0.iter_mut().find(|(l, c, _)| l == labourer && *c == completed) {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((labourer.to_string(), completed, 1)),
        }
    }

    pub(crate) fn write(self, tx: &Connection) -> StoreResult<()> {
        let mut st = tx
            .prepare_cached(
                "INSERT INTO closed_counts (labourer_id, labourer_id_task_status, n) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (labourer_id, labourer_id_task_status) DO UPDATE SET n = n + excluded.n",
            )
            .map_err(map_err)?;
        for (labourer, completed, n) in &self.0 {
            st.execute(params![labourer, closed_status(labourer, *completed), n])
                .map_err(map_err)?;
        }
        Ok(())
    }
}

/// The ids of `tasks` that exist in any table. A large batch whose ids lie close together — one job's consecutive
/// ids, or time-ordered ids made together — is checked with one range scan per table, bounded to four rows per id
/// in the batch; a table whose range holds more than that (ids spread over the key space) is checked with one
/// lookup per id instead, so the cost stays proportional to the batch either way.
pub(crate) fn existing_ids(tx: &Connection, tasks: &[NewTask]) -> StoreResult<HashSet<String>> {
    let wanted: HashSet<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
    let mut found = HashSet::new();
    let (Some(first), Some(last)) = (wanted.iter().min(), wanted.iter().max()) else {
        return Ok(found);
    };
    for table in ["tasks", "retry_tasks", "closed_tasks"] {
        if wanted.len() >= 64 {
            let cap = wanted.len() * 4;
            let mut st = tx
                .prepare_cached(&format!(
                    "SELECT task_id FROM {table} WHERE task_id BETWEEN ?1 AND ?2 LIMIT ?3"
                ))
                .map_err(map_err)?;
            let in_range = st
                .query_map(params![first, last, cap as i64 + 1], |r| r.get::<_, String>(0))
                .map_err(map_err)?
                .collect::<Result<Vec<String>, _>>()
                .map_err(map_err)?;
            if in_range.len() <= cap {
                found.extend(in_range.into_iter().filter(|id| wanted.contains(id.as_str())));
                continue;
            }
        }
        let mut exists = tx
            .prepare_cached(&format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE task_id = ?1)"))
            .map_err(map_err)?;
        for id in &wanted {
            if !found.contains(*id) && exists.query_row([id], |r| r.get::<_, bool>(0)).map_err(map_err)? {
                found.insert((*id).to_string());
            }
        }
    }
    Ok(found)
}

/// Moves `t` (already merged with its report) from `table` to closed as completed at `now`.
pub(crate) fn close_completed(tx: &Connection, table: &str, t: &mut Task, now: Time) -> StoreResult<()> {
    t.completed_at = Some(now.secs());
    tx.prepare_cached(&format!(
        "INSERT INTO closed_tasks ({COLS}, closed_at, labourer_id_task_status) SELECT task_id, labourer_id, created_at, \
         greenfield, attempts, payload, ?2, failed_attempts, ?3, ?4, refunded_attempts, ?2, ?5 FROM {table} \
         WHERE task_id = ?1"
    ))
    .map_err(map_err)?
    .execute(params![
        t.task_id,
        now.secs(),
        json_text(&t.stats),
        json_text(&t.result),
        closed_status(&t.labourer_id, true)
    ])
    .map_err(map_err)?;
    tx.prepare_cached(&format!("DELETE FROM {table} WHERE task_id = ?1"))
        .map_err(map_err)?
        .execute([&t.task_id])
        .map_err(map_err)?;
    let mut tally = ClosedTally::default();
    tally.add(&t.labourer_id, true);
    tally.write(tx)
}

/// The lowest (`MIN`) or highest (`MAX`) queue position of a labourer (`greenfield < now`).
pub(crate) fn queue_end(
    conn: &Connection,
    labourer: &str,
    start: Greenfield,
    end: &str,
) -> StoreResult<Option<Greenfield>> {
    conn.prepare_cached(&format!(
        "SELECT {end}(greenfield) FROM tasks WHERE labourer_id = ?1 AND greenfield < ?2"
    ))
    .map_err(map_err)?
    .query_row(params![labourer, start.get()], |r| r.get::<_, Option<i64>>(0))
    .map(|g| g.map(Greenfield::new))
    .map_err(map_err)
}

/// WorkerAssistant's completion, inside the writer's transaction (see [`TaskStore::complete`]).
pub(crate) fn complete_in(tx: &Connection, id: &str, now: Time, report: &WorkerReport) -> StoreResult<Completion> {
    if report.stats.is_empty() && report.result.is_empty() {
        // Nothing to merge, and the task is where an invocation put it: one conditional statement does it.
        let done = tx
            .prepare_cached(&format!(
                "UPDATE tasks SET completed_at = COALESCE(completed_at, ?2) WHERE task_id = ?1 AND attempts >= 1 \
                 AND greenfield >= ?2 AND (?3 IS NULL OR (attempts = ?3 AND refunded_attempts = ?4)) RETURNING {COLS}"
            ))
            .map_err(map_err)?
            .query_row(
                params![
                    id,
                    now.secs(),
                    report.of.map(|o| o.attempts),
                    report.of.map(|o| o.refunded)
                ],
                task_from_row,
            )
            .optional()
            .map_err(map_err)?;
        if let Some(t) = done {
            return Ok(Completion::Live(t));
        }
    }
    let live = select_one(tx, "tasks", id)?;
    let retry = match live {
        Some(_) => None,
        None => select_one(tx, "retry_tasks", id)?,
    };
    let found = match (&live, &retry) {
        (Some(t), _) => Found::Live {
            at: t.invocation(),
            greenfield: t.greenfield,
        },
        (None, Some(t)) => Found::Retry { at: t.invocation() },
        (None, None) => Found::Nowhere,
    };
    let with_report = |mut t: Task| {
        merge(&mut t.stats, &report.stats);
        merge(&mut t.result, &report.result);
        t
    };
    match (plan_completion(id, found, report.of, now)?, live, retry) {
        (CompletionPlan::MarkLive, Some(t), _) => {
            let mut t = with_report(t);
            let completed_at = t.completed_at.unwrap_or(now.secs());
            t.completed_at = Some(completed_at);
            tx.prepare_cached("UPDATE tasks SET completed_at = ?2, stats = ?3, result = ?4 WHERE task_id = ?1")
                .map_err(map_err)?
                .execute(params![id, completed_at, json_text(&t.stats), json_text(&t.result)])
                .map_err(map_err)?;
            Ok(Completion::Live(t))
        }
        (CompletionPlan::CloseLive, Some(t), _) => {
            let mut t = with_report(t);
            close_completed(tx, "tasks", &mut t, now)?;
            Ok(Completion::Closed(t))
        }
        (CompletionPlan::CloseRetry, _, Some(t)) => {
            let mut t = with_report(t);
            close_completed(tx, "retry_tasks", &mut t, now)?;
            Ok(Completion::Closed(t))
        }
        _ => Err(already_closed(tx, id)?),
    }
}

/// WorkerAssistant's failure report, inside the writer's transaction (see [`TaskStore::fail`]).
pub(crate) fn fail_in(tx: &Connection, id: &str, report: &WorkerReport) -> StoreResult<Task> {
    for table in ["tasks", "retry_tasks"] {
        if let Some(mut t) = select_one(tx, table, id)? {
            check_report(id, t.invocation(), report.of)?;
            merge(&mut t.stats, &report.stats);
            merge(&mut t.result, &report.result);
            t.failed_attempts = t.failed_attempts.saturating_add(1);
            tx.prepare_cached(&format!(
                "UPDATE {table} SET failed_attempts = ?2, stats = ?3, result = ?4 WHERE task_id = ?1"
            ))
            .map_err(map_err)?
            .execute(params![
                id,
                t.failed_attempts,
                json_text(&t.stats),
                json_text(&t.result)
            ])
            .map_err(map_err)?;
            return Ok(t);
        }
    }
    Err(already_closed(tx, id)?)
}

/// Records audit events in the caller's transaction (the move they record commits with them, or neither does).
pub(crate) fn insert_events(tx: &Connection, events: &[MetaEvent]) -> StoreResult<()> {
    insert_events_of(tx, events)
}

/// [`insert_events`] of events from anywhere.
pub(crate) fn insert_events_of<'a>(
    tx: &Connection,
    events: impl IntoIterator<Item = &'a MetaEvent>,
) -> StoreResult<()> {
    let mut events = events.into_iter().peekable();
    if events.peek().is_none() {
        return Ok(());
    }
    let mut st = tx
        .prepare_cached(
            "INSERT INTO tasks_meta (task_id, labourer_id, created_at, action, author, details) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(map_err)?;
    for e in events {
        let details = e.details.as_ref().map(Value::to_string);
        st.execute(params![
            e.task_id,
            e.labourer_id,
            e.at.as_secs_f64(),
            e.action.as_str(),
            e.author,
            details
        ])
        .map_err(map_err)?;
    }
    Ok(())
}
