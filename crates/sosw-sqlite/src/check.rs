//! `sosw check` on SQLite: `integrity_check` (or `quick_check`) and the store's invariants ([`sosw_core::check`]),
//! read in one snapshot on a connection of its own, beside a running daemon.

use super::{map_err, SqliteStore};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use sosw_core::check::{
    json_object_problem, meta_problem, row_problems, table_name, Check, CheckReport, Problem, RowFacts,
};
use sosw_core::ports::{StoreError, StoreResult, Table};
use sosw_core::Time;
use std::collections::BTreeMap;
use std::path::Path;

/// A column's value as an integer, or why it is not one.
fn integer(column: &str, v: ValueRef<'_>) -> Result<i64, String> {
    match v {
        ValueRef::Integer(i) => Ok(i),
        other => Err(format!("`{column}` holds {}, not an integer", type_name(other))),
    }
}

fn type_name(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "null",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    }
}

/// Checks every row of one task table.
fn check_table(
    conn: &Connection,
    table: Table,
    now: i64,
    delta: i64,
    report: &mut CheckReport,
) -> rusqlite::Result<()> {
    let name = table_name(table);
    let closed_col = if table == Table::Closed {
        ", labourer_id_task_status"
    } else {
        ", NULL"
    };
    let mut st = conn.prepare(&format!(
        "SELECT task_id, labourer_id, greenfield, attempts, failed_attempts, completed_at, payload, stats, result\
         {closed_col}, refunded_attempts FROM {name}"
    ))?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        match table {
            Table::Live => report.rows.live += 1,
            Table::Retry => report.rows.retry += 1,
            Table::Closed => report.rows.closed += 1,
        }
        let task_id = match r.get_ref(0)? {
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            other => format!("<{}>", type_name(other)),
        };
        let problem = |check, message: String| Problem::new(check, Some(&task_id), Some(name), message);
        let labourer_id = text(r.get_ref(1)?).unwrap_or_default();
        let mut typed = |i: usize, column: &str| match integer(column, r.get_ref(i)?) {
            Ok(v) => Ok(Some(v)),
            Err(m) => {
                report.push(problem(Check::ColumnType, m));
                Ok::<_, rusqlite::Error>(None)
            }
        };
        let greenfield = typed(2, "greenfield")?;
        let attempts = typed(3, "attempts")?;
        let failed_attempts = typed(4, "failed_attempts")?;
        let refunded_attempts = typed(10, "refunded_attempts")?;
        let completed_at = match r.get_ref(5)? {
            ValueRef::Null => Some(None),
            _ => typed(5, "completed_at")?.map(Some),
        };
        for (i, column) in [(6, "payload"), (7, "stats"), (8, "result")] {
            let v = r.get_ref(i)?;
            let m = match text(v) {
                Some(t) => json_object_problem(column, &t),
                None => Some(format!("`{column}` holds {}, not text", type_name(v))),
            };
            if let Some(m) = m {
                report.push(problem(Check::NotJsonObject, m));
            }
        }
        let closed_status = text(r.get_ref(9)?);
        if let (Some(greenfield), Some(attempts), Some(failed_attempts), Some(refunded_attempts), Some(completed_at)) =
            (greenfield, attempts, failed_attempts, refunded_attempts, completed_at)
        {
            let facts = RowFacts {
                table,
                task_id: &task_id,
                labourer_id: &labourer_id,
                greenfield,
                attempts,
                failed_attempts,
                refunded_attempts,
                completed_at,
                closed_status: closed_status.as_deref(),
            };
            for (check, m) in row_problems(&facts, now, delta) {
                report.push(problem(check, m));
            }
        }
    }
    Ok(())
}

/// Ids in more than one task table.
fn check_duplicates(conn: &Connection, report: &mut CheckReport) -> rusqlite::Result<()> {
    let mut found: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (a, b) in [
        ("tasks", "retry_tasks"),
        ("tasks", "closed_tasks"),
        ("retry_tasks", "closed_tasks"),
    ] {
        let mut st = conn.prepare(&format!("SELECT task_id FROM {a} JOIN {b} USING (task_id)"))?;
        let ids = st.query_map([], |r| r.get::<_, String>(0))?;
        for id in ids {
            let tables = found.entry(id?).or_default();
            for t in [a, b] {
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
    }
    for (id, tables) in found {
        report.push(Problem::new(
            Check::InSeveralTables,
            Some(&id),
            None,
            format!("is in {}; a task is in exactly one table", tables.join(" and ")),
        ));
    }
    Ok(())
}

/// The trigger-kept `closed_counts` against the closed rows they count.
fn check_closed_counts(conn: &Connection, report: &mut CheckReport) -> rusqlite::Result<()> {
    let mut st = conn.prepare(
        "WITH actual AS (SELECT labourer_id, labourer_id_task_status, COUNT(*) AS n FROM closed_tasks GROUP BY 1, 2) \
         SELECT labourer_id, labourer_id_task_status, COALESCE(a.n, 0), COALESCE(c.n, 0) \
         FROM actual a FULL JOIN closed_counts c USING (labourer_id, labourer_id_task_status) \
         WHERE COALESCE(a.n, 0) != COALESCE(c.n, 0) ORDER BY 1, 2",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (labourer, status, actual, stored) = row?;
        report.push(Problem::new(
            Check::StoredCount,
            None,
            Some("closed_counts"),
            format!(
                "labourer `{labourer}` has {actual} closed task(s) with status `{status}`, but `closed_counts` says \
                 {stored}; `status` shows the stored count"
            ),
        ));
    }
    Ok(())
}

/// Meta events of tasks in no table, and meta rows `task show` cannot read.
fn check_meta(conn: &Connection, report: &mut CheckReport) -> rusqlite::Result<()> {
    report.rows.meta = conn
        .query_row("SELECT COUNT(*) FROM tasks_meta", [], |r| r.get::<_, i64>(0))?
        .max(0) as u64;
    let mut st = conn.prepare(
        "SELECT task_id, COUNT(*) FROM tasks_meta m WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = m.task_id) \
         AND NOT EXISTS (SELECT 1 FROM retry_tasks r WHERE r.task_id = m.task_id) \
         AND NOT EXISTS (SELECT 1 FROM closed_tasks c WHERE c.task_id = m.task_id) GROUP BY task_id ORDER BY task_id",
    )?;
    let orphans = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for o in orphans {
        let (id, n) = o?;
        report.push(Problem::new(
            Check::OrphanMeta,
            Some(&id),
            Some("tasks_meta"),
            format!("{n} meta event(s) of a task that is in no task table"),
        ));
    }
    // Distinct actions first: a store has millions of events and a handful of actions.
    let mut actions = conn.prepare("SELECT DISTINCT action FROM tasks_meta")?;
    let bad: Vec<(String, String)> = actions
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter_map(|a| meta_problem(&a, None).map(|m| (a, m)))
        .collect();
    let mut of_action = conn.prepare("SELECT task_id FROM tasks_meta WHERE action = ?1 ORDER BY id")?;
    for (action, message) in bad {
        let ids = of_action.query_map([&action], |r| r.get::<_, String>(0))?;
        for id in ids {
            report.push(Problem::new(
                Check::BadMeta,
                Some(&id?),
                Some("tasks_meta"),
                message.clone(),
            ));
        }
    }
    let mut details = conn.prepare(
        "SELECT task_id, action, details FROM tasks_meta WHERE details IS NOT NULL AND NOT json_valid(details) \
         ORDER BY id",
    )?;
    let rows = details.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
    })?;
    for row in rows {
        let (id, action, d) = row?;
        if let Some(m) = meta_problem(&action, Some(&d)) {
            report.push(Problem::new(Check::BadMeta, Some(&id), Some("tasks_meta"), m));
        }
    }
    Ok(())
}

/// The whole check on its own connection, in one read transaction.
pub(crate) fn check_file(path: &Path, now: i64, delta: i64, quick: bool) -> StoreResult<CheckReport> {
    let mut conn = SqliteStore::open_connection(path, false)?;
    let tx = conn.transaction().map_err(map_err)?;
    let mut report = CheckReport::default();
    let pragma = if quick { "quick_check" } else { "integrity_check" };
    report.integrity = Some(pragma.to_string());
    let unreadable = |what: &str, e: rusqlite::Error| {
        Problem::new(Check::Unreadable, None, Some(what), format!("could not be read: {e}"))
    };
    let integrity: rusqlite::Result<Vec<String>> = tx
        .prepare(&format!("PRAGMA {pragma}(100)"))
        .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect());
    match integrity {
        Ok(lines) => {
            for line in lines.into_iter().filter(|l| l != "ok") {
                report.push(Problem::new(Check::Integrity, None, None, format!("{pragma}: {line}")));
            }
        }
        Err(e) => report.push(unreadable(pragma, e)),
    }
    for table in [Table::Live, Table::Retry, Table::Closed] {
        if let Err(e) = check_table(&tx, table, now, delta, &mut report) {
            report.push(unreadable(table_name(table), e));
        }
    }
    if let Err(e) = check_duplicates(&tx, &mut report) {
        report.push(unreadable("task tables (looking for ids in several)", e));
    }
    if let Err(e) = check_meta(&tx, &mut report) {
        report.push(unreadable("tasks_meta", e));
    }
    if let Err(e) = check_closed_counts(&tx, &mut report) {
        report.push(unreadable("closed_counts", e));
    }
    Ok(report)
}

impl SqliteStore {
    /// `sosw check`: SQLite's `integrity_check` (`quick_check` with `quick`) and the store's invariants at `now`,
    /// with `delta` = `greenfield_invocation_delta`. Reads one snapshot on its own connection, so it can run beside
    /// a daemon. Problems are in the report; `Err` only when the check could not run at all.
    pub async fn check(&self, now: Time, delta: i64, quick: bool) -> StoreResult<CheckReport> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || check_file(&path, now.secs(), delta, quick))
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}
