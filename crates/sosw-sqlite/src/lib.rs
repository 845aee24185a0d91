//! The embedded store: sosw's live, retry, closed and meta tables in one SQLite file.
//!
//! - One connection per process, used from a blocking thread; several processes may share the file (WAL mode,
//!   a busy timeout). Every write runs in a `BEGIN IMMEDIATE` transaction, so a conditional move (claim, archive,
//!   retry, requeue) checks its condition and moves the row with no other writer in between, and a crash at any
//!   instant leaves each task in exactly one table.
//! - The schema version lives in `PRAGMA user_version`; [`TaskStore::init`] creates or migrates it, every other
//!   entry point refuses a store of another version with a message that says what to do.

mod maintenance;
mod schema;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};
use serde_json::{Map, Value};
use sosw_core::breaker::LabourerState;
use sosw_core::greenfield::{is_queue_position, labourer_counts, queued_rows};
use sosw_core::meta::{stamped, MetaAction, MetaEvent, Recorded, Stamp};
use sosw_core::ports::{
    report_refusal, retry_refusal, ArchiveExpect, Claim, Completion, CreateReport, JobProgress, LabourerCounts,
    MetaSink, StoreError, StoreResult, Table, TaskQuery, TaskStore,
};
use sosw_core::task::closed_status;
use sosw_core::{Markers, NewTask, Place, StoredTask, Task, Time, WorkerReport};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use maintenance::{BackupReport, BadFile, FileProblem};
pub use schema::SCHEMA_VERSION;

/// The columns every task table shares, in the order [`task_from_row`] reads them.
const COLS: &str =
    "task_id, labourer_id, created_at, greenfield, attempts, payload, completed_at, failed_attempts, stats, result";

/// A [`TaskStore`] and [`MetaSink`] on one SQLite file.
///
/// Writes go to one writer thread that owns the write connection and **group-commits**: it takes every write
/// queued at that moment, runs them in one transaction, commits once, and only then answers each caller.
/// Concurrent single-task writes (completions, moves) thus share one commit instead of paying one each.
///
/// Every write checks its conditions before it writes anything, so a refused write (a conflict, a missing task)
/// leaves nothing behind and needs no rollback. A write that fails in SQLite itself, or a commit that fails, rolls
/// the group back; each write of the group is then run again alone, so only the broken one reports an error.
/// Reads use their own connection; WAL lets them run beside the writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: Arc<Mutex<Connection>>,
    writer: std::sync::mpsc::Sender<Box<dyn WriteJob>>,
    path: PathBuf,
}

/// At most this many writes share one commit.
const GROUP_COMMIT_MAX: usize = 4096;

/// How a write went, as far as its transaction is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Done, or refused before writing anything: the transaction may commit.
    Clean,
    /// SQLite failed part-way: the transaction must roll back.
    Broken,
}

/// A write waiting for the writer thread.
trait WriteJob: Send {
    /// Runs inside the open transaction and keeps the result. May run again (alone) if its group rolls back.
    fn run(&mut self, conn: &Connection) -> Status;
    /// Answers the caller: the kept result if the transaction committed, else why it did not.
    fn deliver(self: Box<Self>, failure: Option<&str>);
}

impl std::fmt::Debug for dyn WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteJob")
    }
}

struct Job<F, T> {
    f: F,
    result: Option<StoreResult<T>>,
    reply: tokio::sync::oneshot::Sender<StoreResult<T>>,
}

/// Errors a write returns before writing anything.
fn is_refusal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::NotFound(_) | StoreError::Conflict { .. } | StoreError::Invalid(_) | StoreError::Schema(_)
    )
}

impl<F, T> WriteJob for Job<F, T>
where
    F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> Status {
        let result = (self.f)(conn);
        let status = match &result {
            Err(e) if !is_refusal(e) => Status::Broken,
            _ => Status::Clean,
        };
        self.result = Some(result);
        status
    }

    fn deliver(self: Box<Self>, failure: Option<&str>) {
        let result = match (self.result, failure) {
            (Some(Err(e)), Some(_)) if !is_refusal(&e) => Err(e),
            (_, Some(why)) => Err(StoreError::Unavailable(format!("the write was rolled back: {why}"))),
            (Some(r), None) => r,
            (None, None) => Err(StoreError::Unavailable("the write was never run".into())),
        };
        let _ = self.reply.send(result);
    }
}

/// Runs one of the writer's control statements (`BEGIN IMMEDIATE`, `COMMIT`, ...), parsed once.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `jobs` in one transaction; `Err` means it was rolled back.
fn run_group(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), String> {
    control(conn, "BEGIN IMMEDIATE").map_err(|e| format!("the transaction could not start: {e}"))?;
    for job in jobs.iter_mut() {
        if job.run(conn) == Status::Broken {
            let _ = conn.execute_batch("ROLLBACK");
            return Err("a write in the same transaction failed".into());
        }
    }
    control(conn, "COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        format!("the transaction could not commit: {e}")
    })
}

fn writer_loop(conn: Connection, jobs: std::sync::mpsc::Receiver<Box<dyn WriteJob>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        match run_group(&conn, &mut batch) {
            Ok(()) => batch.into_iter().for_each(|j| j.deliver(None)),
            Err(e) if batch.len() == 1 => batch.into_iter().for_each(|j| j.deliver(Some(&e))),
            Err(e) => {
                tracing::warn!(writes = batch.len(), error = %e, "a group commit failed; running its writes one by one");
                for job in batch {
                    let mut one = [job];
                    let outcome = run_group(&conn, &mut one);
                    let [job] = one;
                    job.deliver(outcome.err().as_deref());
                }
            }
        }
    }
}

impl SqliteStore {
    /// Opens an initialised store; fails if the file is missing or its schema is not this version.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(StoreError::Schema(format!(
                "no store at `{}`; create it with `sosw init`",
                path.display()
            )));
        }
        maintenance::inspect_file(path)?;
        let store = SqliteStore::connect(path, false).map_err(|e| maintenance::name_file(e, path))?;
        {
            let conn = store.lock()?;
            schema::check(&conn, path).map_err(|e| maintenance::name_file(e, path))?;
        }
        Ok(store)
    }

    /// Opens the file, creating it if needed, without checking the schema: call [`TaskStore::init`] next. An
    /// existing file that cannot be a store (empty, not SQLite, truncated, damaged) is refused untouched.
    pub fn open_or_create(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let path = path.as_ref();
        maintenance::inspect_file(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create the directory of `{}`: {e}", path.display()))
            })?;
        }
        SqliteStore::connect(path, true).map_err(|e| maintenance::name_file(e, path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_connection(path: &Path, create: bool) -> StoreResult<Connection> {
        let mut flags =
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::Unavailable(format!("cannot open `{}`: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(backend)?;
        // WAL lets readers run beside the one writer; NORMAL sync is durable across process crashes (the WAL is
        // only at risk on power loss, where the last transactions may roll back, never corrupt).
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn connect(path: &Path, create: bool) -> StoreResult<SqliteStore> {
        let reader = SqliteStore::open_connection(path, create)?;
        let write_conn = SqliteStore::open_connection(path, false)?;
        let (writer, jobs) = std::sync::mpsc::channel::<Box<dyn WriteJob>>();
        std::thread::Builder::new()
            .name("sosw-sqlite-writer".into())
            .spawn(move || writer_loop(write_conn, jobs))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            reader: Arc::new(Mutex::new(reader)),
            writer,
            path: path.to_path_buf(),
        })
    }

    fn lock(&self) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
        self.reader
            .lock()
            .map_err(|_| StoreError::Unavailable("the store connection was poisoned by a panic".into()))
    }

    /// Runs a read on the read connection in a blocking thread.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Unavailable("the store connection was poisoned by a panic".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Runs `f` in the writer's group-committed transaction. `f` must check its conditions before it writes (a
    /// refusal must leave nothing behind), and may run twice if its group is rolled back.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writer
            .send(Box::new(Job { f, result: None, reply }))
            .map_err(|_| StoreError::Unavailable("the store's writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer thread stopped before answering".into()))?
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    map_err(e)
}

fn map_err(e: rusqlite::Error) -> StoreError {
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

fn json_text(m: &Map<String, Value>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

fn parse_map(text: &str, task_id: &str, column: &str) -> rusqlite::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("column `{column}` of task `{task_id}` is not a JSON object").into(),
        )),
    }
}

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let task_id: String = row.get(0)?;
    let stats: String = row.get(8)?;
    let result: String = row.get(9)?;
    Ok(Task {
        labourer_id: row.get(1)?,
        created_at: row.get(2)?,
        greenfield: row.get(3)?,
        attempts: row.get(4)?,
        payload: row.get(5)?,
        completed_at: row.get(6)?,
        failed_attempts: row.get(7)?,
        stats: parse_map(&stats, &task_id, "stats")?,
        result: parse_map(&result, &task_id, "result")?,
        task_id,
    })
}

fn select_one(tx: &Connection, table: &str, task_id: &str) -> StoreResult<Option<Task>> {
    tx.prepare_cached(&format!("SELECT {COLS} FROM {table} WHERE task_id = ?1"))
        .map_err(map_err)?
        .query_row([task_id], task_from_row)
        .optional()
        .map_err(map_err)
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        into.insert(k.clone(), v.clone());
    }
}

/// The closed row of a task, if it was archived.
fn closed_place(tx: &Connection, task_id: &str) -> StoreResult<Option<Place>> {
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

fn already_closed(tx: &Connection, task_id: &str) -> StoreResult<StoreError> {
    Ok(match closed_place(tx, task_id)? {
        Some(Place::Closed { closed_at, completed }) => StoreError::conflict(
            task_id,
            format!(
                "is already closed as {} (closed_at {closed_at})",
                if completed { "completed" } else { "dead" }
            ),
        ),
        _ => StoreError::NotFound(task_id.to_string()),
    })
}

/// Moves one live task to closed if it meets `expect`. The outer `Err` is an SQL failure (the caller's whole
/// transaction is rolled back); the inner one is this task's condition failing, with nothing written.
/// On success, the inner `Ok` holds the task's labourer.
fn archive_one(tx: &Connection, id: &str, expect: ArchiveExpect, now: Time) -> StoreResult<StoreResult<String>> {
    let row: Option<(String, i64, bool)> = tx
        .prepare_cached("SELECT labourer_id, greenfield, completed_at IS NOT NULL FROM tasks WHERE task_id = ?1")
        .map_err(map_err)?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(map_err)?;
    let Some((labourer, greenfield, completed)) = row else {
        return Ok(Err(already_closed(tx, id)?));
    };
    let refused = expect.refusal(completed, greenfield);
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

/// The ids of `tasks` that exist in any table. A large batch whose ids are in ascending order (a Scheduler batch:
/// one job's consecutive ids) is checked with one range scan per table instead of a lookup per task per table.
fn existing_ids(tx: &Connection, tasks: &[NewTask]) -> StoreResult<HashSet<String>> {
    let mut found = HashSet::new();
    let sorted = tasks.windows(2).all(|w| w[0].task_id < w[1].task_id);
    if let (true, Some(first), Some(last)) = (tasks.len() >= 64 && sorted, tasks.first(), tasks.last()) {
        let wanted: HashSet<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        for table in ["tasks", "retry_tasks", "closed_tasks"] {
            let mut st = tx
                .prepare_cached(&format!("SELECT task_id FROM {table} WHERE task_id BETWEEN ?1 AND ?2"))
                .map_err(map_err)?;
            let rows = st
                .query_map([&first.task_id, &last.task_id], |r| r.get::<_, String>(0))
                .map_err(map_err)?;
            for id in rows {
                let id = id.map_err(map_err)?;
                if wanted.contains(id.as_str()) {
                    found.insert(id);
                }
            }
        }
        return Ok(found);
    }
    let mut exists = tx
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM tasks WHERE task_id = ?1) OR EXISTS(SELECT 1 FROM retry_tasks \
             WHERE task_id = ?1) OR EXISTS(SELECT 1 FROM closed_tasks WHERE task_id = ?1)",
        )
        .map_err(map_err)?;
    for t in tasks {
        if exists
            .query_row([&t.task_id], |r| r.get::<_, bool>(0))
            .map_err(map_err)?
        {
            found.insert(t.task_id.clone());
        }
    }
    Ok(found)
}

/// Moves `t` (already merged with its report) from `table` to closed as completed at `now`.
fn close_completed(tx: &Connection, table: &str, t: &mut Task, now: Time) -> StoreResult<()> {
    t.completed_at = Some(now.secs());
    tx.prepare_cached(&format!(
        "INSERT INTO closed_tasks ({COLS}, closed_at, labourer_id_task_status) SELECT task_id, labourer_id, created_at, \
         greenfield, attempts, payload, ?2, failed_attempts, ?3, ?4, ?2, ?5 FROM {table} WHERE task_id = ?1"
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
    Ok(())
}

/// The lowest (`MIN`) or highest (`MAX`) queue position of a labourer (`greenfield < now`).
fn queue_end(conn: &Connection, labourer: &str, now: i64, end: &str) -> StoreResult<Option<i64>> {
    conn.prepare_cached(&format!(
        "SELECT {end}(greenfield) FROM tasks WHERE labourer_id = ?1 AND greenfield < ?2"
    ))
    .map_err(map_err)?
    .query_row(params![labourer, now], |r| r.get(0))
    .map_err(map_err)
}

/// WorkerAssistant's completion, inside the writer's transaction (see [`TaskStore::complete`]).
fn complete_in(tx: &Connection, id: &str, now: Time, report: &WorkerReport) -> StoreResult<Completion> {
    if report.stats.is_empty() && report.result.is_empty() {
        // Nothing to merge, and the task is where an invocation put it: one conditional statement does it.
        let done = tx
            .prepare_cached(&format!(
                "UPDATE tasks SET completed_at = COALESCE(completed_at, ?2) WHERE task_id = ?1 AND attempts >= 1 \
                 AND greenfield >= ?2 RETURNING {COLS}"
            ))
            .map_err(map_err)?
            .query_row(params![id, now.secs()], task_from_row)
            .optional()
            .map_err(map_err)?;
        if let Some(t) = done {
            return Ok(Completion::Live(t));
        }
    }
    if let Some(mut t) = select_one(tx, "tasks", id)? {
        report_refusal(id, t.attempts)?;
        merge(&mut t.stats, &report.stats);
        merge(&mut t.result, &report.result);
        if is_queue_position(t.greenfield, now) {
            // Queued again after an expired attempt: that attempt finished after all.
            close_completed(tx, "tasks", &mut t, now)?;
            return Ok(Completion::Closed(t));
        }
        let completed_at = t.completed_at.unwrap_or(now.secs());
        t.completed_at = Some(completed_at);
        tx.prepare_cached("UPDATE tasks SET completed_at = ?2, stats = ?3, result = ?4 WHERE task_id = ?1")
            .map_err(map_err)?
            .execute(params![id, completed_at, json_text(&t.stats), json_text(&t.result)])
            .map_err(map_err)?;
        return Ok(Completion::Live(t));
    }
    if let Some(mut t) = select_one(tx, "retry_tasks", id)? {
        merge(&mut t.stats, &report.stats);
        merge(&mut t.result, &report.result);
        close_completed(tx, "retry_tasks", &mut t, now)?;
        return Ok(Completion::Closed(t));
    }
    Err(already_closed(tx, id)?)
}

/// WorkerAssistant's failure report, inside the writer's transaction (see [`TaskStore::fail`]).
fn fail_in(tx: &Connection, id: &str, report: &WorkerReport) -> StoreResult<Task> {
    for table in ["tasks", "retry_tasks"] {
        if let Some(mut t) = select_one(tx, table, id)? {
            report_refusal(id, t.attempts)?;
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
fn insert_events(tx: &Connection, events: &[MetaEvent]) -> StoreResult<()> {
    if events.is_empty() {
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
        let tasks = tasks.to_vec();
        let stamp = stamp.cloned();
        self.write(move |tx| {
            let mut report = CreateReport::default();
            let mut seen: HashSet<&str> = HashSet::new();
            let mut fresh: Vec<&NewTask> = Vec::with_capacity(tasks.len());
            let existing = existing_ids(tx, &tasks)?;
            for t in &tasks {
                if t.task_id.is_empty() {
                    return Err(StoreError::Invalid("a task id must not be empty".into()));
                }
                if existing.contains(t.task_id.as_str()) || !seen.insert(t.task_id.as_str()) {
                    report.existing.push(t.task_id.clone());
                } else {
                    fresh.push(t);
                }
            }
            // Every position is allocated (and checked) before anything is written.
            let mut tails = Vec::new();
            for (labourer, _) in labourer_counts(fresh.iter().copied()) {
                tails.push((labourer, queue_end(tx, labourer, now.secs(), "MAX")?));
            }
            let rows = queued_rows(&fresh, &tails, step, now).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO tasks (task_id, labourer_id, created_at, greenfield, attempts, payload) \
                     VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                )
                .map_err(map_err)?;
            for t in &rows {
                insert
                    .execute(params![t.task_id, t.labourer_id, t.created_at, t.greenfield, t.payload])
                    .map_err(map_err)?;
                insert_events(
                    tx,
                    &stamped(stamp.as_ref(), &t.task_id, &t.labourer_id, Recorded::Created),
                )?;
            }
            report.created = rows;
            Ok(report)
        })
        .await
    }

    async fn next_queued(&self, labourer: &str, start: i64, limit: usize) -> StoreResult<Vec<Task>> {
        let labourer = labourer.to_string();
        self.run(move |conn| {
            let mut st = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM tasks WHERE labourer_id = ?1 AND greenfield < ?2 AND completed_at IS NULL \
                     ORDER BY greenfield, task_id LIMIT ?3"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map(params![labourer, start, limit as i64], task_from_row)
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn claim_recorded(
        &self,
        labourer: &str,
        tasks: &[(String, i64)],
        start: i64,
        invoked_greenfield: i64,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Vec<Claim>> {
        let labourer = labourer.to_string();
        let tasks = tasks.to_vec();
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
                    .execute(params![id, labourer, read, invoked_greenfield, start])
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
        invoked_greenfield: i64,
        previous_greenfield: i64,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        let id = task_id.to_string();
        let events = events.to_vec();
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET greenfield = ?3, attempts = MAX(attempts - 1, 0) WHERE task_id = ?1 \
                     AND greenfield = ?2 AND completed_at IS NULL",
                )
                .map_err(map_err)?
                .execute(params![id, invoked_greenfield, previous_greenfield])
                .map_err(map_err)?;
            match (n, select_one(tx, "tasks", &id)?) {
                (1, _) => insert_events(tx, &events),
                (_, Some(_)) => Err(StoreError::conflict(&id, "moved or completed since it was claimed")),
                (_, None) => Err(StoreError::NotFound(id.clone())),
            }
        })
        .await
    }

    async fn count_running(&self, labourer: &str, expired: i64) -> StoreResult<u64> {
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

    async fn list_expired(&self, labourer: &str, start: i64, expired: i64, limit: usize) -> StoreResult<Vec<Task>> {
        let labourer = labourer.to_string();
        self.run(move |conn| {
            let mut st = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM tasks WHERE labourer_id = ?1 AND greenfield BETWEEN ?2 AND ?3 \
                     AND completed_at IS NULL ORDER BY greenfield, task_id LIMIT ?4"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map(params![labourer, start, expired, limit as i64], task_from_row)
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn list_completed(&self, labourer: &str, now: i64, limit: usize) -> StoreResult<Vec<Task>> {
        let labourer = labourer.to_string();
        self.run(move |conn| {
            let mut st = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM tasks WHERE labourer_id = ?1 AND completed_at IS NOT NULL AND greenfield >= ?2 \
                     ORDER BY completed_at, task_id LIMIT ?3"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map(params![labourer, now, limit as i64], task_from_row)
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
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

    async fn fail_recorded(
        &self,
        task_id: &str,
        _now: Time,
        report: &WorkerReport,
        stamp: Option<&Stamp>,
    ) -> StoreResult<Task> {
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
            archive_one(tx, &id, expect, now)??;
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
            for (id, expect) in &moves {
                let done = archive_one(tx, id, *expect, now)?;
                if let Ok(labourer) = &done {
                    let dead = matches!(expect, ArchiveExpect::Dead { .. });
                    insert_events(tx, &stamped(stamp.as_ref(), id, labourer, Recorded::Archived { dead }))?;
                }
                out.push(done.map(|_| ()));
            }
            Ok(out)
        })
        .await
    }

    async fn move_to_retry_recorded(
        &self,
        task_id: &str,
        expected_greenfield: i64,
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

    async fn due_retries(&self, labourer: &str, now: i64, limit: usize) -> StoreResult<Vec<Task>> {
        let labourer = labourer.to_string();
        self.run(move |conn| {
            let mut st = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM retry_tasks WHERE labourer_id = ?1 AND desired_launch_time <= ?2 \
                     ORDER BY desired_launch_time, task_id LIMIT ?3"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map(params![labourer, now, limit as i64], task_from_row)
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn requeue_recorded(
        &self,
        task_id: &str,
        labourer: &str,
        greenfield: i64,
        events: &[MetaEvent],
    ) -> StoreResult<()> {
        let id = task_id.to_string();
        let labourer = labourer.to_string();
        let events = events.to_vec();
        self.write(move |tx| {
            let n = tx
                .prepare_cached(&format!(
                    "INSERT INTO tasks ({COLS}) SELECT task_id, labourer_id, created_at, ?3, attempts, payload, \
                     completed_at, failed_attempts, stats, result FROM retry_tasks WHERE task_id = ?1 AND labourer_id = ?2"
                ))
                .map_err(map_err)?
                .execute(params![id, labourer, greenfield])
                .map_err(map_err)?;
            if n == 0 {
                return Err(match select_one(tx, "tasks", &id)? {
                    Some(_) => StoreError::conflict(&id, "is not waiting for retry (it is live)"),
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

    async fn newest_queued(&self, labourer: &str, now: i64) -> StoreResult<Option<i64>> {
        let labourer = labourer.to_string();
        self.run(move |conn| queue_end(conn, &labourer, now, "MAX")).await
    }

    async fn oldest_queued(&self, labourer: &str, now: i64) -> StoreResult<Option<i64>> {
        let labourer = labourer.to_string();
        self.run(move |conn| queue_end(conn, &labourer, now, "MIN")).await
    }

    async fn get(&self, task_id: &str) -> StoreResult<Option<StoredTask>> {
        let id = task_id.to_string();
        self.run(move |conn| {
            if let Some(task) = select_one(conn, "tasks", &id)? {
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
                .query_row([&id], |r| Ok((task_from_row(r)?, r.get::<_, i64>(10)?)))
                .optional()
                .map_err(map_err)?;
            if let Some((task, desired_launch_time)) = retry {
                return Ok(Some(StoredTask {
                    task,
                    place: Place::Retry { desired_launch_time },
                }));
            }
            match (select_one(conn, "closed_tasks", &id)?, closed_place(conn, &id)?) {
                (Some(task), Some(place)) => Ok(Some(StoredTask { task, place })),
                _ => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, query: &TaskQuery) -> StoreResult<Vec<StoredTask>> {
        let q = query.clone();
        self.run(move |conn| {
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
                args.push(r.lo.into());
                args.push(r.hi.into());
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
                            desired_launch_time: r.get(10)?,
                        },
                        Table::Closed => Place::Closed {
                            closed_at: r.get(10)?,
                            completed: task.completed_at.is_some(),
                        },
                    };
                    Ok(StoredTask { task, place })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn labourer_ids(&self) -> StoreResult<Vec<String>> {
        self.run(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT labourer_id FROM tasks UNION SELECT labourer_id FROM retry_tasks \
                     UNION SELECT labourer_id FROM closed_tasks ORDER BY 1",
                )
                .map_err(map_err)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<String>>>().map_err(map_err)
        })
        .await
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

    async fn labourer_states(&self) -> StoreResult<Vec<LabourerState>> {
        self.run(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT labourer_id, dead_in_row, trips, held_until, reason, held_since, suspect \
                     FROM labourer_states ORDER BY labourer_id",
                )
                .map_err(map_err)?;
            let rows = st.query_map([], labourer_state_from_row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn save_labourer_state(&self, state: &LabourerState) -> StoreResult<()> {
        let s = state.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO labourer_states (labourer_id, dead_in_row, trips, held_until, reason, \
                 held_since, suspect) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(map_err)?
            .execute(params![
                s.labourer_id,
                s.dead_in_row,
                s.trips,
                s.held_until.map(Time::millis),
                s.reason,
                s.held_since.map(Time::millis),
                s.suspect
            ])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn clear_labourer_state(&self, labourer_id: &str) -> StoreResult<()> {
        let id = labourer_id.to_string();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM labourer_states WHERE labourer_id = ?1")
                .map_err(map_err)?
                .execute([&id])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn counts(&self, labourer: &str, markers: &Markers) -> StoreResult<LabourerCounts> {
        let labourer = labourer.to_string();
        let m = *markers;
        self.run(move |conn| {
            let mut c = conn
                .prepare_cached(
                    "SELECT \
                       COALESCE(SUM(completed_at IS NULL AND greenfield < ?2), 0), \
                       COALESCE(SUM(completed_at IS NULL AND greenfield > ?3), 0), \
                       COALESCE(SUM(completed_at IS NULL AND greenfield BETWEEN ?2 AND ?3), 0), \
                       COALESCE(SUM(completed_at IS NOT NULL), 0) \
                     FROM tasks WHERE labourer_id = ?1",
                )
                .map_err(map_err)?
                .query_row(params![labourer, m.start, m.expired], |r| {
                    Ok(LabourerCounts {
                        queued: r.get::<_, i64>(0)? as u64,
                        running: r.get::<_, i64>(1)? as u64,
                        expired: r.get::<_, i64>(2)? as u64,
                        completed: r.get::<_, i64>(3)? as u64,
                        ..LabourerCounts::default()
                    })
                })
                .map_err(map_err)?;
            c.retry_waiting = conn
                .prepare_cached("SELECT COUNT(*) FROM retry_tasks WHERE labourer_id = ?1")
                .map_err(map_err)?
                .query_row([&labourer], |r| r.get::<_, i64>(0))
                .map_err(map_err)? as u64;
            let mut closed = conn
                .prepare_cached("SELECT COUNT(*) FROM closed_tasks WHERE labourer_id_task_status = ?1")
                .map_err(map_err)?;
            c.closed_completed = closed
                .query_row([closed_status(&labourer, true)], |r| r.get::<_, i64>(0))
                .map_err(map_err)? as u64;
            c.closed_dead = closed
                .query_row([closed_status(&labourer, false)], |r| r.get::<_, i64>(0))
                .map_err(map_err)? as u64;
            Ok(c)
        })
        .await
    }
}

fn labourer_state_from_row(r: &Row<'_>) -> rusqlite::Result<LabourerState> {
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

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<JobProgress> {
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

const JOB_COLS: &str = "job_id, labourer_id, total, scheduled, started_at, updated_at, finished_at";

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
        self.run(move |conn| {
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
                let (task_id, labourer_id, at, action, author, details): (
                    String,
                    String,
                    f64,
                    String,
                    String,
                    Option<String>,
                ) = row.map_err(map_err)?;
                let action: MetaAction = serde_json::from_value(Value::String(action.clone()))
                    .map_err(|_| StoreError::Backend(format!("unknown meta action `{action}` in the store").into()))?;
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
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open_or_create(dir.path().join("t.db")).expect("open");
        store.init().await.expect("init");
        (dir, store)
    }

    fn insert(conn: &Connection, id: &str) -> StoreResult<()> {
        conn.execute(
            "INSERT INTO tasks (task_id, labourer_id, created_at, greenfield, payload) VALUES (?1, 'w', 0, 1, '{}')",
            [id],
        )
        .map(|_| ())
        .map_err(map_err)
    }

    #[tokio::test]
    async fn an_old_store_is_refused_until_migrated_and_keeps_its_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).expect("create");
            conn.execute_batch(schema::migrations()[0]).expect("version 1");
            conn.pragma_update(None, "user_version", 1).expect("version");
            insert(&conn, "kept").expect("a task");
        }
        let err = SqliteStore::open(&path).expect_err("old");
        assert!(err.to_string().contains("run `sosw init` to migrate"), "{err}");
        let store = SqliteStore::open_or_create(&path).expect("open");
        store.init().await.expect("migrate");
        let store = SqliteStore::open(&path).expect("current now");
        assert!(
            store.get("kept").await.expect("get").is_some(),
            "data survives the migration"
        );
        assert!(store.list_jobs(10).await.expect("jobs table").is_empty());
        store.init().await.expect("init is idempotent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_write_fails_alone_when_its_group_rolls_back() {
        let (_dir, store) = store().await;
        // The first write is queued before the others and holds the writer until they are queued too, so the
        // broken and the good write always share a group (with or without the first).
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        let (reply, first) = tokio::sync::oneshot::channel();
        let hold = move |c: &Connection| {
            let _ = wait.lock().expect("lock").recv();
            insert(c, "first")
        };
        store
            .writer
            .send(Box::new(Job {
                f: hold,
                result: None,
                reply,
            }))
            .expect("writer running");
        let broken = store.write(|c| {
            insert(c, "broken_twin")?;
            // A duplicate primary key: SQLite fails after this job has already written a row.
            insert(c, "broken_twin")
        });
        let good = store.write(|c| insert(c, "good"));
        // `move`: the sender must be dropped, or a re-run of the first write (after the group rolls back) would
        // wait forever.
        let (broken, good, ()) = tokio::join!(broken, good, async move {
            let _ = release.send(());
        });
        assert!(first.await.expect("answered").is_ok());
        assert!(matches!(broken, Err(StoreError::Backend(_))), "{broken:?}");
        assert!(good.is_ok(), "{good:?}");
        assert!(store.get("good").await.expect("get").is_some());
        assert!(
            store.get("broken_twin").await.expect("get").is_none(),
            "the broken write left nothing"
        );
    }
}
