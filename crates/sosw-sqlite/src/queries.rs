//! The store's reads that are more than one statement: a task wherever it is, listings by keyset page, a
//! labourer's counts, a task's audit trail. Each runs on the read connection ([`SqliteStore::run`]).

use super::*;

pub(crate) fn get(conn: &Connection, id: &str) -> StoreResult<Option<StoredTask>> {
    if let Some(task) = select_one(conn, "tasks", id)? {
        return Ok(Some(StoredTask {
            task,
            place: Place::Live,
        }));
    }
    let retry = conn
        .prepare_cached(&format!(
            "SELECT {COLS}, desired_launch_time FROM retry_tasks WHERE task_id = ?1"
        ))
        .map_err(map_err)?
        .query_row([&id], |r| Ok((task_from_row(r)?, r.get::<_, i64>(AFTER_COLS)?)))
        .optional()
        .map_err(map_err)?;
    if let Some((task, desired_launch_time)) = retry {
        return Ok(Some(StoredTask {
            task,
            place: Place::Retry { desired_launch_time },
        }));
    }
    match (select_one(conn, "closed_tasks", id)?, closed_place(conn, id)?) {
        (Some(task), Some(place)) => Ok(Some(StoredTask { task, place })),
        _ => Ok(None),
    }
}

pub(crate) fn list(conn: &Connection, q: &TaskQuery) -> StoreResult<Vec<StoredTask>> {
    let (table, extra, by) = match q.table {
        Table::Live => ("tasks", "", "greenfield"),
        Table::Retry => ("retry_tasks", ", desired_launch_time", "desired_launch_time"),
        Table::Closed => ("closed_tasks", ", closed_at", "closed_at"),
    };
    let order = format!("labourer_id, {by}, task_id");
    // `cond`: the filters, as ` AND …` clauses over `args`.
    let mut cond = String::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    // A closed listing of one labourer reads the index ordered by close time, once per status asked for
    // (two of them merged in order when both are), rather than sorting all the labourer's closed rows.
    let mut statuses: Vec<usize> = Vec::new();
    if let Some(l) = &q.labourer {
        args.push(l.clone().into());
        cond.push_str(&format!(" AND labourer_id = ?{}", args.len()));
        if q.table == Table::Closed {
            for done in q.completed.map_or(vec![true, false], |d| vec![d]) {
                args.push(sosw_core::task::closed_status(l, done).into());
                statuses.push(args.len());
            }
        }
    }
    // Keyset pagination. With one labourer the bound is on (order, task id) alone, which the labourer's
    // index serves as a range, so every page costs its own size, however deep into the listing it is.
    match (&q.after, &q.labourer) {
        (None, _) => {}
        (Some(c), Some(l)) if *l == c.labourer_id => {
            args.push(c.order.into());
            args.push(c.task_id.clone().into());
            cond.push_str(&format!(
                " AND ({by}, task_id) > (?{}, ?{})",
                args.len() - 1,
                args.len()
            ));
        }
        (Some(c), Some(l)) => {
            if *l < c.labourer_id {
                cond.push_str(" AND 0");
            }
        }
        (Some(c), None) => {
            args.push(c.labourer_id.clone().into());
            args.push(c.order.into());
            args.push(c.task_id.clone().into());
            cond.push_str(&format!(
                " AND (labourer_id, {by}, task_id) > (?{}, ?{}, ?{})",
                args.len() - 2,
                args.len() - 1,
                args.len()
            ));
        }
    }
    if let (Table::Live, Some(r)) = (q.table, q.greenfield) {
        args.push(r.lo.get().into());
        args.push(r.hi.get().into());
        cond.push_str(&format!(
            " AND greenfield BETWEEN ?{} AND ?{}",
            args.len() - 1,
            args.len()
        ));
    }
    match (q.table, q.completed) {
        (Table::Retry, _) | (_, None) => {}
        (_, Some(true)) => cond.push_str(" AND completed_at IS NOT NULL"),
        (_, Some(false)) => cond.push_str(" AND completed_at IS NULL"),
    }
    let select = |status: String| format!("SELECT {COLS}{extra} FROM {table} WHERE 1 = 1{cond}{status}");
    let mut sql = if statuses.is_empty() {
        select(String::new())
    } else {
        statuses
            .iter()
            .map(|i| select(format!(" AND labourer_id_task_status = ?{i}")))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    };
    args.push((q.limit.min(i64::MAX as usize) as i64).into());
    sql.push_str(&format!(" ORDER BY {order} LIMIT ?{}", args.len()));
    let mut st = conn.prepare(&sql).map_err(map_err)?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args), |r| {
            let task = task_from_row(r)?;
            let place = match q.table {
                Table::Live => Place::Live,
                Table::Retry => Place::Retry {
                    desired_launch_time: r.get(AFTER_COLS)?,
                },
                Table::Closed => Place::Closed {
                    closed_at: r.get(AFTER_COLS)?,
                    completed: task.completed_at.is_some(),
                },
            };
            Ok(StoredTask { task, place })
        })
        .map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
}

/// A labourer's counts, each read from an index alone: the queue is a range of `tasks_greenfield`, the invoked tasks — running, expired, completed, a few thousand at most — are read row by row,
/// the retry table is a range of its index, and the closed tasks are the trigger-kept `closed_counts`: O(1) however
/// large the archive, O(queue) index entries for the live tables (about 35 ms per million on a laptop core).
pub(crate) fn counts(conn: &Connection, labourer: &str, m: &Markers) -> StoreResult<LabourerCounts> {
    let one = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> StoreResult<u64> {
        conn.prepare_cached(sql)
            .map_err(map_err)?
            .query_row(p, |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(map_err)
    };
    let mut c = conn
        .prepare_cached(
            "SELECT \
               COALESCE(SUM(completed_at IS NULL AND greenfield > ?3), 0), \
               COALESCE(SUM(completed_at IS NULL AND greenfield <= ?3), 0), \
               COALESCE(SUM(completed_at IS NOT NULL), 0) \
             FROM tasks WHERE labourer_id = ?1 AND greenfield >= ?2",
        )
        .map_err(map_err)?
        .query_row(params![labourer, m.start.get(), m.expired.get()], |r| {
            Ok(LabourerCounts {
                running: r.get::<_, i64>(0)? as u64,
                expired: r.get::<_, i64>(1)? as u64,
                completed: r.get::<_, i64>(2)? as u64,
                ..LabourerCounts::default()
            })
        })
        .map_err(map_err)?;
    // A completed row at a queue position is an inconsistency (`sosw check`: completed_at_queue_position) but is
    // counted as completed, as before: the completed rows are few, and read on their own index.
    let misplaced = one(
        "SELECT COUNT(*) FROM tasks INDEXED BY tasks_completed \
         WHERE labourer_id = ?1 AND completed_at IS NOT NULL AND greenfield < ?2",
        &[&labourer, &m.start.get()],
    )?;
    c.completed += misplaced;
    c.queued = one(
        "SELECT COUNT(*) FROM tasks WHERE labourer_id = ?1 AND greenfield < ?2",
        &[&labourer, &m.start.get()],
    )?
    .saturating_sub(misplaced);
    c.retry_waiting = one("SELECT COUNT(*) FROM retry_tasks WHERE labourer_id = ?1", &[&labourer])?;
    let closed =
        "SELECT COALESCE(SUM(n), 0) FROM closed_counts WHERE labourer_id = ?1 AND labourer_id_task_status = ?2";
    c.closed_completed = one(closed, &[&labourer, &closed_status(labourer, true)])?;
    c.closed_dead = one(closed, &[&labourer, &closed_status(labourer, false)])?;
    Ok(c)
}

/// The distinct labourer ids of a table's index, one index seek per labourer (a "loose index scan": SQLite would
/// otherwise read every entry).
pub(crate) fn labourer_ids(conn: &Connection) -> StoreResult<Vec<String>> {
    let mut st = conn
        .prepare_cached(
            "WITH RECURSIVE \
               live(id) AS (SELECT MIN(labourer_id) FROM tasks \
                 UNION ALL SELECT (SELECT MIN(labourer_id) FROM tasks WHERE labourer_id > live.id) FROM live \
                 WHERE live.id IS NOT NULL), \
               retry(id) AS (SELECT MIN(labourer_id) FROM retry_tasks \
                 UNION ALL SELECT (SELECT MIN(labourer_id) FROM retry_tasks WHERE labourer_id > retry.id) FROM retry \
                 WHERE retry.id IS NOT NULL) \
             SELECT id FROM live WHERE id IS NOT NULL UNION SELECT id FROM retry WHERE id IS NOT NULL \
             UNION SELECT labourer_id FROM closed_counts WHERE n > 0 ORDER BY 1",
        )
        .map_err(map_err)?;
    let rows = st.query_map([], |r| r.get(0)).map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<String>>>().map_err(map_err)
}

pub(crate) fn events_of(conn: &Connection, id: &str) -> StoreResult<Vec<MetaEvent>> {
    let mut st = conn
        .prepare_cached(
            "SELECT task_id, labourer_id, created_at, action, author, details FROM tasks_meta \
             WHERE task_id = ?1 ORDER BY created_at, id",
        )
        .map_err(map_err)?;
    let rows = st
        .query_map([&id], |r| {
            let action: String = r.get(3)?;
            let details: Option<String> = r.get(5)?;
            let at: f64 = r.get(2)?;
            Ok((r.get(0)?, r.get(1)?, at, action, r.get(4)?, details))
        })
        .map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (task_id, labourer_id, at, action, author, details): (String, String, f64, String, String, Option<String>) =
            row.map_err(map_err)?;
        let action = MetaAction::parse(&action);
        out.push(MetaEvent {
            task_id,
            labourer_id,
            action,
            at: Time::from_millis((at * 1000.0).round() as i64),
            author,
            details: details.and_then(|d| serde_json::from_str(&d).ok()),
        });
    }
    Ok(out)
}
