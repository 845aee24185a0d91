//! The writer thread: one write connection, and group commits (every write queued at that moment in one
//! `BEGIN IMMEDIATE … COMMIT`, each caller answered after the commit; a group that fails is re-run write by write).
//! Beside it, the checkpoint thread copies the WAL into the database file ([`checkpoint_loop`], [`WalBound`]).

use super::*;

/// At most this many writes share one commit.
pub(crate) const GROUP_COMMIT_MAX: usize = 4096;

/// How a write went, as far as its transaction is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Done, or refused before writing anything: the transaction may commit.
    Clean,
    /// SQLite failed part-way: the transaction must roll back.
    Broken,
}

/// A write waiting for the writer thread.
pub(crate) trait WriteJob: Send {
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

pub(crate) struct Job<F, T> {
    pub(crate) f: F,
    pub(crate) result: Option<StoreResult<T>>,
    pub(crate) reply: tokio::sync::oneshot::Sender<StoreResult<T>>,
}

impl<F, T> WriteJob for Job<F, T>
where
    F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> Status {
        let result = (self.f)(conn);
        let status = match &result {
            Err(e) if !e.is_refusal() => Status::Broken,
            _ => Status::Clean,
        };
        self.result = Some(result);
        status
    }

    fn deliver(self: Box<Self>, failure: Option<&str>) {
        let result = match (self.result, failure) {
            (Some(Err(e)), Some(_)) if !e.is_refusal() => Err(e),
            (_, Some(why)) => Err(StoreError::Unavailable(format!("the write was rolled back: {why}"))),
            (Some(r), None) => r,
            (None, None) => Err(StoreError::Unavailable("the write was never run".into())),
        };
        let _ = self.reply.send(result);
    }
}

/// Runs one of the writer's control statements (`BEGIN IMMEDIATE`, `COMMIT`, ...), parsed once.
pub(crate) fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `jobs` in one transaction; `Err` means it was rolled back.
pub(crate) fn run_group(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), String> {
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

pub(crate) fn writer_loop(
    conn: Connection,
    jobs: std::sync::mpsc::Receiver<Box<dyn WriteJob>>,
    checkpoint: std::sync::mpsc::SyncSender<()>,
    wal: WalBound,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // After every commit: the WAL kept within its bound, then a checkpoint due (one pending is enough).
        let committed = || {
            wal.keep(&conn);
            let _ = checkpoint.try_send(());
        };
        match run_group(&conn, &mut batch) {
            Ok(()) => {
                committed();
                batch.into_iter().for_each(|j| j.deliver(None));
            }
            Err(e) if batch.len() == 1 => batch.into_iter().for_each(|j| j.deliver(Some(&e))),
            Err(e) => {
                tracing::warn!(writes = batch.len(), error = %e, "a group commit failed; running its writes one by one");
                for job in batch {
                    let mut one = [job];
                    let outcome = run_group(&conn, &mut one);
                    if outcome.is_ok() {
                        committed();
                    }
                    let [job] = one;
                    job.deliver(outcome.err().as_deref());
                }
            }
        }
    }
}

/// The bound on the WAL: the checkpoint thread's PASSIVE checkpoints copy the WAL into the database beside the
/// commits, but cannot restart a WAL that keeps growing. So after a commit that leaves it larger than `max_bytes`,
/// the writer empties it (a TRUNCATE checkpoint: the rest of the pages, most already copied), unless a reader holds
/// an older snapshot: then it does not wait (a long read must never stall the writes) and tries after a later commit.
/// The bound therefore holds between long reads (`sosw backup`, `sosw check`, a long listing), and for one process:
/// a checkpoint that another process runs at that moment also makes the attempt wait for a later commit.
#[derive(Debug, Clone)]
pub(crate) struct WalBound {
    pub(crate) path: PathBuf,
    pub(crate) max_bytes: u64,
    /// Held by the checkpoint thread during each of its checkpoints, and by the writer to empty the WAL: otherwise
    /// a PASSIVE checkpoint in progress would make every attempt to empty it fail.
    pub(crate) checkpointing: Arc<Mutex<()>>,
}

impl WalBound {
    /// 64 MiB: a few seconds of the heaviest load.
    pub(crate) const DEFAULT_MAX_BYTES: u64 = 64 << 20;

    /// The bound of the WAL of `database` — the file's name as SQLite resolved it (through symbolic links: the WAL
    /// lies beside the real file).
    pub(crate) fn of(database: &Path, max_bytes: u64) -> WalBound {
        let mut path = database.as_os_str().to_os_string();
        path.push("-wal");
        WalBound {
            path: PathBuf::from(path),
            max_bytes,
            checkpointing: Arc::default(),
        }
    }

    fn keep(&self, conn: &Connection) {
        if !std::fs::metadata(&self.path).is_ok_and(|m| m.len() > self.max_bytes) {
            return;
        }
        // A checkpoint in progress on the other thread finishes first (it has copied most of the pages by then).
        let _checkpointing = self
            .checkpointing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let emptied = conn
            .busy_timeout(Duration::ZERO)
            .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)));
        if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::warn!(error = %e, "cannot restore the writer's busy timeout");
        }
        match emptied {
            Ok(0) => {}
            Ok(_) => tracing::debug!("the WAL is still in use by a reader; emptied after a later commit"),
            Err(e) => tracing::warn!(error = %e, "emptying the WAL failed; tried again after a later commit"),
        }
    }
}

/// The WAL checkpoints, on a thread and connection of their own: the writer's connection has
/// `wal_autocheckpoint = 0`, so copying the WAL into the database file (and its fsync) runs beside the commits
/// instead of inside them. Each nudge after a commit runs a PASSIVE checkpoint, which neither waits for nor blocks
/// the writer or the readers (nudges that arrive meanwhile fold into one). Ends when the writer ends.
pub(crate) fn checkpoint_loop(conn: Connection, nudges: std::sync::mpsc::Receiver<()>, checkpointing: Arc<Mutex<()>>) {
    while nudges.recv().is_ok() {
        let _checkpointing = checkpointing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "a WAL checkpoint failed; the next commit tries again");
        }
    }
}
