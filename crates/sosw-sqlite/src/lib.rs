//! The embedded store: sosw's live, retry, closed and meta tables in one SQLite file.
//!
//! - Three connections per store: reads on one, writes on a writer thread that group-commits, WAL checkpoints on a
//!   thread beside it (`writer.rs`); several
//!   processes may share the file (WAL mode, a busy timeout). Every write runs in a `BEGIN IMMEDIATE` transaction,
//!   so a conditional move (claim, archive, retry, requeue) checks its condition and moves the row with no other
//!   writer in between, with its audit events, and a crash at any instant leaves each task in exactly one table.
//! - The schema version lives in `PRAGMA user_version`; [`TaskStore::init`] creates or migrates it, every other
//!   entry point refuses a store of another version with a message that says what to do.
//!
//! Modules: `store.rs` (the task port), `labourers.rs` (breaker states, controls, dispatch leases), `moves.rs` (the moves inside a transaction), `queries.rs` (the longer reads),
//! `rows.rs` (rows and errors), `writer.rs` (the group-commit thread), `schema.rs` (migrations), `maintenance.rs`
//! (backup, damaged files, size cap), `check.rs` (`sosw check`).

mod check;
mod labourers;
mod maintenance;
mod moves;
mod queries;
mod rows;
mod schema;
mod store;
mod writer;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};
use serde_json::{Map, Value};
use sosw_core::breaker::LabourerState;
use sosw_core::greenfield::{labourer_counts, new_row, queued_positions};
use sosw_core::meta::{stamped, MetaAction, MetaEvent, Recorded, Stamp};
use sosw_core::moves::{
    check_report, closed_refusal, moved_since_claimed, not_waiting_for_retry, partition_new_indices, plan_completion,
    stale_report, CompletionPlan, Found,
};
use sosw_core::ports::{
    retry_refusal, ArchiveExpect, Claim, Completion, CreateReport, JobProgress, LabourerCounts, MetaSink, StoreError,
    StoreResult, Table, TaskQuery, TaskStore,
};
use sosw_core::task::closed_status;
use sosw_core::{Greenfield, Invocation, Markers, NewTask, Place, StoredTask, Task, Time, WorkerReport};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use maintenance::{BackupReport, BadFile, FileProblem};
pub use schema::SCHEMA_VERSION;

use moves::*;
use rows::*;
use writer::*;

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
///
/// Dropping the last handle closes the store: it waits for the queued writes and the final checkpoint (so, in an
/// async context, it blocks that thread for as long; drop it where a short wait is acceptable, as at shutdown).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: Arc<Mutex<Connection>>,
    writer: std::sync::mpsc::Sender<Box<dyn WriteJob>>,
    /// Declared after `writer`: when the last handle of a store goes, the writer's channel closes first, then this
    /// waits for the writer and checkpoint threads to finish and close their connections — a dropped store is
    /// closed, as one connection would be.
    _threads: Arc<Threads>,
    path: PathBuf,
}

/// The store's threads, joined when the last handle goes.
#[derive(Debug)]
struct Threads(Vec<std::thread::JoinHandle<()>>);

impl Drop for Threads {
    fn drop(&mut self) {
        for thread in self.0.drain(..) {
            // A panicked thread has nothing left to close.
            let _ = thread.join();
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
        // (Several processes may share one file: a write waits up to BUSY_TIMEOUT for another's.)
        let mut flags =
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::Unavailable(format!("cannot open `{}`: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        // WAL lets readers run beside the one writer; NORMAL sync is durable across process crashes (the WAL is
        // only at risk on power loss, where the last transactions may roll back, never corrupt).
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn connect(path: &Path, create: bool) -> StoreResult<SqliteStore> {
        SqliteStore::connect_with(path, create, WalBound::DEFAULT_MAX_BYTES)
    }

    /// The writer thread, with its WAL bound, and the checkpoint thread beside it ([`writer`]).
    fn connect_with(path: &Path, create: bool, wal_max_bytes: u64) -> StoreResult<SqliteStore> {
        let reader = SqliteStore::open_connection(path, create)?;
        let write_conn = SqliteStore::open_connection(path, false)?;
        write_conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend)?;
        let checkpoint_conn = SqliteStore::open_connection(path, false)?;
        // PASSIVE checkpoints never wait; nor does loading the schema for one.
        checkpoint_conn.busy_timeout(Duration::ZERO).map_err(backend)?;
        let resolved = write_conn.path().map_or_else(|| path.to_path_buf(), PathBuf::from);
        let wal = WalBound::of(&resolved, wal_max_bytes);
        let (nudge, nudges) = std::sync::mpsc::sync_channel::<()>(1);
        let checkpointing = wal.checkpointing.clone();
        let checkpointer = std::thread::Builder::new()
            .name("sosw-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, nudges, checkpointing))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
        let (writer, jobs) = std::sync::mpsc::channel::<Box<dyn WriteJob>>();
        let writer_thread = std::thread::Builder::new()
            .name("sosw-sqlite-writer".into())
            .spawn(move || writer_loop(write_conn, jobs, nudge, wal))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            reader: Arc::new(Mutex::new(reader)),
            writer,
            // The writer first: the checkpoint thread ends when the writer does.
            _threads: Arc::new(Threads(vec![writer_thread, checkpointer])),
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

/// How long a statement waits for another connection's lock (another process's writer, a checkpoint).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

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

    /// `existing_ids` takes a bounded range scan per table for a batch of ids close together and a lookup per id
    /// for ids spread over the key space (where the range would hold most of the table): both find every id that
    /// exists, in whichever table, and nothing else.
    #[tokio::test]
    async fn large_batches_find_existing_ids_in_every_table_close_together_or_spread() {
        let (dir, store) = store().await;
        let conn = Connection::open(dir.path().join("t.db")).expect("second connection");
        // 2,000 rows spread over the key space (a multiplicative hash in front), as uuid4 ids would be.
        let spread = |i: u32| format!("{:08x}{:024x}", i.wrapping_mul(2_654_435_761), i);
        for i in 0..2000 {
            insert(&conn, &spread(i)).expect("a live task");
        }
        let put = |table: &str, extra: &str, id: &str| {
            conn.execute(
                &format!(
                    "INSERT INTO {table} (task_id, labourer_id, created_at, greenfield, attempts, payload{extra}) \
                     VALUES (?1, 'w', 0, 1, 1, '{{}}'{})",
                    if extra.is_empty() {
                        ""
                    } else if table == "retry_tasks" {
                        ", 5"
                    } else {
                        ", 5, 'w_1'"
                    }
                ),
                [id],
            )
            .expect("a row");
        };
        let close = |i: u32| format!("01a2{i:028x}");
        for i in [3, 40] {
            put("retry_tasks", ", desired_launch_time", &close(i));
        }
        for i in [7, 90] {
            put("closed_tasks", ", closed_at, labourer_id_task_status", &close(i));
        }
        insert(&conn, &close(50)).expect("a live task among the close ids");
        let batch = |ids: Vec<String>| -> Vec<NewTask> {
            ids.into_iter()
                .map(|task_id| NewTask {
                    task_id,
                    labourer_id: "w".into(),
                    payload: "{}".into(),
                })
                .collect()
        };
        let found = |tasks: &[NewTask]| -> Vec<String> {
            let mut ids: Vec<String> = existing_ids(&conn, tasks).expect("checked").into_iter().collect();
            ids.sort();
            ids
        };

        // Close together (one millisecond's time-ordered ids, in any order): the range path.
        let near: Vec<String> = (0..100).rev().map(close).collect();
        assert_eq!(found(&batch(near)), [3, 7, 40, 50, 90].map(close));

        // Spread, 100 ids of which every tenth exists: the range would hold nearly all 2,000 rows, so the lookups.
        let far: Vec<String> = (0..100)
            .map(|k| if k % 10 == 0 { spread(k * 13) } else { spread(5000 + k) })
            .collect();
        let mut expected: Vec<String> = (0..10).map(|k| spread(k * 130)).collect();
        expected.sort();
        assert_eq!(found(&batch(far)), expected);

        // Small batches always look up.
        assert_eq!(found(&batch(vec![close(3), close(4), spread(1)])), {
            let mut v = vec![close(3), spread(1)];
            v.sort();
            v
        });
        drop(store);
    }

    /// The WAL is copied into the database beside the commits; it grows while a reader pins an old snapshot (and
    /// the writer does not wait for that reader), and once the reader is gone the next commit empties it.
    #[tokio::test]
    async fn the_wal_is_emptied_past_its_bound_once_no_reader_pins_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        wal_bound_holds(&path, &path).await;
    }

    /// The same through a symbolic link: the WAL lies beside the real file, and that is the one kept in bounds.
    #[cfg(unix)]
    #[tokio::test]
    async fn the_wal_bound_holds_through_a_symbolic_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = dir.path().join("real").join("t.db");
        std::fs::create_dir(dir.path().join("real")).expect("dir");
        let link = dir.path().join("link.db");
        std::fs::File::create(&real).expect("the file");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        wal_bound_holds(&link, &real).await;
    }

    async fn wal_bound_holds(open: &Path, real: &Path) {
        let path = real;
        let bound = 256 << 10;
        let store = SqliteStore::connect_with(open, true, bound).expect("open");
        store.init().await.expect("init");
        let wal = WalBound::of(real, bound).path;
        let batch = |k: usize| -> Vec<NewTask> {
            (0..200)
                .map(|i| NewTask {
                    task_id: format!("t{k:04}{i:04}"),
                    labourer_id: "w".into(),
                    payload: format!(r#"{{"pad": "{}"}}"#, "x".repeat(500)),
                })
                .collect()
        };
        let now = Time::from_secs(1_700_000_000);
        let reader = Connection::open(path).expect("a reader");
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM tasks;")
            .expect("a read snapshot");
        for k in 0..20 {
            store.create_tasks(&batch(k), 1000, now).await.expect("create");
        }
        let pinned = std::fs::metadata(&wal).expect("wal").len();
        assert!(pinned > bound, "a pinned WAL grows: {pinned} bytes");
        reader.execute_batch("COMMIT").expect("the reader is done");
        store.create_tasks(&batch(20), 1000, now).await.expect("create");
        let after = std::fs::metadata(&wal).map_or(0, |m| m.len());
        assert!(
            after < bound,
            "emptied after the next commit: {after} bytes (was {pinned})"
        );
        let stored: i64 = reader
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .expect("count");
        assert_eq!(stored, 21 * 200, "every commit kept");
    }

    /// Dropping the last handle closes the store: its threads finish their writes and close their connections, so
    /// SQLite folds the WAL into the file and removes it, as when one connection closes.
    #[tokio::test]
    async fn a_dropped_store_is_closed() {
        let (dir, store) = store().await;
        let copy = store.clone();
        let tasks = [NewTask {
            task_id: "a".into(),
            labourer_id: "w".into(),
            payload: "{}".into(),
        }];
        store
            .create_tasks(&tasks, 1000, Time::from_secs(1_700_000_000))
            .await
            .expect("create");
        let wal = WalBound::of(&dir.path().join("t.db"), 0).path;
        drop(store);
        assert!(wal.exists(), "another handle keeps the store open");
        drop(copy);
        assert!(!wal.exists(), "closed: the WAL is folded into the file");
        let conn = Connection::open(dir.path().join("t.db")).expect("reopen");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1);
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

    #[tokio::test]
    async fn a_version_4_store_keeps_its_flow_state_starts_with_no_reports_and_counts_its_archive() {
        use sosw_core::ports::LabourerStore;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v4.db");
        {
            let conn = Connection::open(&path).expect("create");
            for sql in &schema::migrations()[..4] {
                conn.execute_batch(sql).expect("migration");
            }
            conn.pragma_update(None, "user_version", 4).expect("version");
            conn.execute("INSERT INTO dispatch (labourer_id, adaptive_limit) VALUES ('w', 3)", [])
                .expect("a record");
            for (id, status) in [("a", "w_1"), ("b", "w_1"), ("c", "w_0")] {
                conn.execute(
                    "INSERT INTO closed_tasks (task_id, labourer_id, created_at, greenfield, attempts, payload, \
                     closed_at, labourer_id_task_status) VALUES (?1, 'w', 0, 5, 1, '{}', 5, ?2)",
                    [id, status],
                )
                .expect("an archived task");
            }
        }
        let store = SqliteStore::open_or_create(&path).expect("open");
        store.init().await.expect("migrate");
        let now = Time::from_secs(1_700_000_000);
        let flow = store
            .take_dispatch("w", "A", now, now.plus_secs(60))
            .await
            .expect("take")
            .expect("free");
        assert_eq!(flow.adaptive_limit, Some(3));
        assert!(flow.reports.is_empty());
        assert_eq!(flow.duration_baseline_ms, None);
        // Version 6 counted the archive that was there.
        let counts = store
            .counts("w", &sosw_core::greenfield::Markers::new(now, 1000, 60, 30))
            .await
            .expect("counts");
        assert_eq!((counts.closed_completed, counts.closed_dead), (2, 1));
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
