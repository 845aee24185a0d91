//! The writer thread: one write connection, and group commits (every write queued at that moment in one
//! `BEGIN IMMEDIATE … COMMIT`, each caller answered after the commit; a group that fails is re-run write by write).

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

pub(crate) fn writer_loop(conn: Connection, jobs: std::sync::mpsc::Receiver<Box<dyn WriteJob>>) {
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
