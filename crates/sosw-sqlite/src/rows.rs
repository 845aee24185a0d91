//! Rows to values and back: the column lists, row readers, error mapping, and the reads every move starts with.

use super::*;

/// The columns every task table shares, in the order [`task_from_row`] reads them.
pub(crate) const COLS: &str =
    "task_id, labourer_id, created_at, greenfield, attempts, payload, completed_at, failed_attempts, stats, result, \
     refunded_attempts";

/// The index of the first column a query selects after [`COLS`] (`desired_launch_time`, `closed_at`).
pub(crate) const AFTER_COLS: usize = 11;

pub(crate) fn backend(e: rusqlite::Error) -> StoreError {
    map_err(e)
}

pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            StoreError::Unavailable(format!("the database is locked by another process: {e}"))
        }
        // SQLITE_FULL: the disk, or `max_page_count`. The transaction is rolled back (see `writer_loop`); the
        // store keeps serving reads, and writes succeed again once there is room.
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => {
            StoreError::Unavailable(format!("the database is full: {e}"))
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            maintenance::damaged(&e, f.code == ErrorCode::NotADatabase)
        }
        _ => StoreError::Backend(Box::new(e)),
    }
}

pub(crate) fn json_text(m: &Map<String, Value>) -> String {
    // A map of JSON values always serialises: there is no non-string key and no non-finite number in a `Value`.
    serde_json::to_string(m).expect("a JSON object always serialises")
}

pub(crate) fn parse_map(text: &str, task_id: &str, column: &str) -> rusqlite::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("column `{column}` of task `{task_id}` is not a JSON object").into(),
        )),
    }
}

pub(crate) fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let task_id: String = row.get(0)?;
    let stats: String = row.get(8)?;
    let result: String = row.get(9)?;
    Ok(Task {
        labourer_id: row.get(1)?,
        created_at: row.get(2)?,
        greenfield: Greenfield::new(row.get(3)?),
        attempts: row.get(4)?,
        payload: row.get(5)?,
        completed_at: row.get(6)?,
        failed_attempts: row.get(7)?,
        refunded_attempts: row.get(10)?,
        stats: parse_map(&stats, &task_id, "stats")?,
        result: parse_map(&result, &task_id, "result")?,
        task_id,
    })
}

/// The tasks a query selects (its columns are [`COLS`], in that order).
pub(crate) fn select_tasks(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<Vec<Task>> {
    let mut st = conn.prepare_cached(sql).map_err(map_err)?;
    let rows = st.query_map(params, task_from_row).map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
}

pub(crate) fn select_one(tx: &Connection, table: &str, task_id: &str) -> StoreResult<Option<Task>> {
    tx.prepare_cached(&format!("SELECT {COLS} FROM {table} WHERE task_id = ?1"))
        .map_err(map_err)?
        .query_row([task_id], task_from_row)
        .optional()
        .map_err(map_err)
}

pub(crate) fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        into.insert(k.clone(), v.clone());
    }
}

/// The closed row of a task, if it was archived.
pub(crate) fn closed_place(tx: &Connection, task_id: &str) -> StoreResult<Option<Place>> {
    tx.prepare_cached("SELECT closed_at, completed_at IS NOT NULL FROM closed_tasks WHERE task_id = ?1")
        .map_err(map_err)?
        .query_row([task_id], |r| {
            Ok(Place::Closed {
                closed_at: r.get(0)?,
                completed: r.get(1)?,
            })
        })
        .optional()
        .map_err(map_err)
}

pub(crate) fn already_closed(tx: &Connection, task_id: &str) -> StoreResult<StoreError> {
    Ok(match closed_place(tx, task_id)? {
        Some(Place::Closed { closed_at, completed }) => closed_refusal(task_id, completed, closed_at),
        _ => StoreError::NotFound(task_id.to_string()),
    })
}

pub(crate) fn labourer_state_from_row(r: &Row<'_>) -> rusqlite::Result<LabourerState> {
    Ok(LabourerState {
        labourer_id: r.get(0)?,
        dead_in_row: r.get(1)?,
        trips: r.get(2)?,
        held_until: r.get::<_, Option<i64>>(3)?.map(Time::from_millis),
        reason: r.get(4)?,
        held_since: r.get::<_, Option<i64>>(5)?.map(Time::from_millis),
        suspect: r.get(6)?,
    })
}

pub(crate) fn job_from_row(r: &Row<'_>) -> rusqlite::Result<JobProgress> {
    Ok(JobProgress {
        job_id: r.get(0)?,
        labourer_id: r.get(1)?,
        total: r.get::<_, i64>(2)? as u64,
        scheduled: r.get::<_, i64>(3)? as u64,
        started_at: Time::from_millis(r.get(4)?),
        updated_at: Time::from_millis(r.get(5)?),
        finished_at: r.get::<_, Option<i64>>(6)?.map(Time::from_millis),
    })
}

pub(crate) const JOB_COLS: &str = "job_id, labourer_id, total, scheduled, started_at, updated_at, finished_at";
