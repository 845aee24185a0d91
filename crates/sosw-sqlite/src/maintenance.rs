//! Looking after the file: online backups, `sosw check`, a damaged file refused on open, and a size cap.
//!
//! - [`SqliteStore::backup_to`] copies the store with SQLite's online backup API in **one step**: the copy reads
//!   one snapshot (a WAL read transaction, which never blocks the writer), so it is consistent however busy the
//!   daemon is, and it cannot be restarted forever by a writer that never stops (as a paged backup would be).
//! - `sosw check` is in `check.rs`.
//! - [`inspect_file`] refuses, before SQLite touches it, a file that cannot be a sosw store: empty, not SQLite, or
//!   shorter than its header says.

use super::{map_err, SqliteStore};
use rusqlite::{Connection, OpenFlags};
use sosw_core::ports::{StoreError, StoreResult};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a file is not a usable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileProblem {
    /// Zero bytes: SQLite would treat it as a new database, but sosw did not create it.
    Empty,
    /// Not an SQLite database at all.
    NotSqlite(String),
    /// Shorter than its header says: a copy that stopped part-way.
    Truncated { header_bytes: u64, file_bytes: u64 },
    /// SQLite found it malformed.
    Damaged(String),
}

/// A store file that cannot be used; the error names it and says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFile {
    /// The file, when known (errors of later reads and writes do not carry it).
    pub path: Option<PathBuf>,
    pub problem: FileProblem,
}

impl std::fmt::Display for BadFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.path {
            Some(p) => format!("`{}`", p.display()),
            None => "the store file".to_string(),
        };
        match &self.problem {
            FileProblem::Empty => write!(
                f,
                "{name} is an empty file (0 bytes), not a store sosw created: if it held tasks it was truncated \
                 (restore it from a backup); if it is new, delete it and run `sosw init`"
            ),
            FileProblem::NotSqlite(why) => {
                write!(
                    f,
                    "{name} is not an SQLite database ({why}); refusing to use or change it"
                )
            }
            FileProblem::Truncated {
                header_bytes,
                file_bytes,
            } => write!(
                f,
                "{name} is truncated: its header says {header_bytes} bytes, the file has {file_bytes}; restore it \
                 from a backup"
            ),
            FileProblem::Damaged(why) => write!(
                f,
                "{name} is damaged ({why}); restore it from a backup (`sosw check` lists what is wrong)"
            ),
        }
    }
}

impl std::error::Error for BadFile {}

impl BadFile {
    fn store_error(self) -> StoreError {
        StoreError::Backend(Box::new(self))
    }
}

/// The error of a read or write that found the file damaged or not a database (from [`map_err`]).
pub(crate) fn damaged(e: &rusqlite::Error, not_a_database: bool) -> StoreError {
    BadFile {
        path: None,
        problem: if not_a_database {
            FileProblem::NotSqlite(e.to_string())
        } else {
            FileProblem::Damaged(e.to_string())
        },
    }
    .store_error()
}

/// On open: a [`BadFile`] error of `path` becomes the refusal to open it, naming it. A refusal
/// ([`StoreError::Invalid`]): nothing was written, and trying again cannot help.
pub(crate) fn name_file(e: StoreError, path: &Path) -> StoreError {
    match e {
        StoreError::Backend(source) => match source.downcast::<BadFile>() {
            Ok(mut bad) => {
                bad.path.get_or_insert_with(|| path.to_path_buf());
                StoreError::Invalid(bad.to_string())
            }
            Err(other) => StoreError::Backend(other),
        },
        other => other,
    }
}

const HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Refuses ([`StoreError::Invalid`], naming the file) a file that exists but cannot be a sosw store, before SQLite
/// opens (and possibly writes) it. A missing file is fine here: the callers decide what that means.
pub(crate) fn inspect_file(path: &Path) -> StoreResult<()> {
    let bad = |problem| {
        Err(StoreError::Invalid(
            BadFile {
                path: Some(path.to_path_buf()),
                problem,
            }
            .to_string(),
        ))
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "cannot read `{}`: {e}",
                path.display()
            )))
        }
    };
    let len = file
        .metadata()
        .map_err(|e| StoreError::Unavailable(format!("cannot read `{}`: {e}", path.display())))?
        .len();
    if len == 0 {
        return bad(FileProblem::Empty);
    }
    let mut header = [0u8; 100];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot read `{}`: {e}",
                    path.display()
                )))
            }
        }
    }
    if read < header.len() || &header[..16] != HEADER {
        return bad(FileProblem::NotSqlite(
            "it does not start with the SQLite header".into(),
        ));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        n => {
            return bad(FileProblem::NotSqlite(format!(
                "its header has an invalid page size, {n}"
            )))
        }
    };
    let be32 = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let (pages, change_counter, valid_for) = (be32(28), be32(24), be32(92));
    // The header's page count is only meaningful when SQLite marks it valid; with a WAL that holds frames, the
    // file's own header may be older than the database, so a short file is only damage without one.
    let wal_frames = std::fs::metadata(wal_path(path)).map(|m| m.len() > 0).unwrap_or(false);
    let header_bytes = u64::from(pages).saturating_mul(page_size);
    if pages > 0 && change_counter == valid_for && !wal_frames && header_bytes > len {
        return bad(FileProblem::Truncated {
            header_bytes,
            file_bytes: len,
        });
    }
    Ok(())
}

fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// What [`SqliteStore::backup_to`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Rows in the copy: live, retry, closed tasks and meta events.
    pub live: u64,
    pub retry: u64,
    pub closed: u64,
    pub meta: u64,
}

/// `p` made absolute and, where the file or its directory exists, with symbolic links resolved.
fn resolved(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    match (p.parent().map(Path::canonicalize), p.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot {what} `{}`: {e}", path.display()))
}

fn count(conn: &Connection, table: &str) -> StoreResult<u64> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(map_err)
}

/// Copies `src` into the new file `tmp` in one backup step, and makes the copy a self-contained file.
fn copy_into(src: &Connection, tmp: &Path) -> StoreResult<BackupReport> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut dst = Connection::open_with_flags(tmp, flags).map_err(map_err)?;
    {
        let backup = rusqlite::backup::Backup::new(src, &mut dst).map_err(map_err)?;
        // One step copies every page under one read transaction of the source: a consistent snapshot. The busy
        // timeout of `src` already waited inside each call; a few more tries cover a WAL being reset meanwhile.
        let mut tries = 0;
        loop {
            match backup.step(-1).map_err(map_err)? {
                rusqlite::backup::StepResult::Done => break,
                _ if tries < 10 => tries += 1,
                other => {
                    return Err(StoreError::Unavailable(format!(
                        "the backup could not read the store ({other:?}); try again"
                    )))
                }
            }
        }
    }
    // The copy carries the source's WAL flag: back to a rollback journal, so the backup is one file.
    dst.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0))
        .map_err(map_err)?;
    let version: i64 = dst
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(map_err)?;
    if version != super::SCHEMA_VERSION {
        return Err(StoreError::Schema(format!(
            "the copy has schema version {version}, expected {}",
            super::SCHEMA_VERSION
        )));
    }
    Ok(BackupReport {
        path: tmp.to_path_buf(),
        bytes: 0,
        live: count(&dst, "tasks")?,
        retry: count(&dst, "retry_tasks")?,
        closed: count(&dst, "closed_tasks")?,
        meta: count(&dst, "tasks_meta")?,
    })
}

impl SqliteStore {
    /// Caps the file at `pages` pages (`PRAGMA max_page_count` on the writer's connection); returns the cap SQLite
    /// set (never below the current size). A write that would grow the file past it fails with "the database is
    /// full" and writes nothing. For tests of a full disk, and for capping a store's size.
    pub async fn set_max_page_count(&self, pages: u64) -> StoreResult<u64> {
        let pages = pages.min(i64::MAX as u64) as i64;
        self.write(move |conn| {
            conn.pragma_update_and_check(None, "max_page_count", pages, |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(map_err)
        })
        .await
    }

    /// The file's size in pages, as the writer sees it (committed data).
    pub async fn page_count(&self) -> StoreResult<u64> {
        self.write(|conn| {
            conn.pragma_query_value(None, "page_count", |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(map_err)
        })
        .await
    }

    /// Writes a consistent copy of the store to `dest` while it is in use (SQLite's online backup API, one
    /// snapshot). The copy goes to a temporary file beside `dest` and is renamed into place only when complete, so
    /// `dest` is never a partial copy. Refuses an existing `dest` unless `overwrite`, and never writes over the store
    /// itself.
    pub async fn backup_to(&self, dest: &Path, overwrite: bool) -> StoreResult<BackupReport> {
        let src_path = self.path.clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || backup_blocking(&src_path, &dest, overwrite))
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

fn backup_blocking(src_path: &Path, dest: &Path, overwrite: bool) -> StoreResult<BackupReport> {
    let target = resolved(dest);
    let store = resolved(src_path);
    let store_files = [store.clone(), wal_path(&store), {
        let mut p = store.as_os_str().to_owned();
        p.push("-shm");
        PathBuf::from(p)
    }];
    if store_files.contains(&target) {
        return Err(StoreError::Invalid(format!(
            "`{}` is the store itself (or one of its files); back it up to another path",
            dest.display()
        )));
    }
    if target.is_dir() {
        return Err(StoreError::Invalid(format!(
            "`{}` is a directory; give the backup's file name",
            dest.display()
        )));
    }
    if !overwrite && target.exists() {
        return Err(StoreError::Invalid(format!(
            "`{}` exists; pass --force to overwrite it",
            dest.display()
        )));
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let tmp = target.with_file_name(format!(".{name}.sosw-backup-{}", std::process::id()));
    for p in [&tmp, &wal_path(&tmp)] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error("remove", p, e)),
            _ => {}
        }
    }
    let result = (|| {
        let src = SqliteStore::open_connection(src_path, false)?;
        let mut report = copy_into(&src, &tmp)?;
        let file = std::fs::File::open(&tmp).map_err(|e| io_error("open", &tmp, e))?;
        file.sync_all().map_err(|e| io_error("sync", &tmp, e))?;
        report.bytes = file.metadata().map_err(|e| io_error("read", &tmp, e))?.len();
        if !overwrite && target.exists() {
            return Err(StoreError::Invalid(format!(
                "`{}` appeared while the backup ran; pass --force to overwrite it",
                dest.display()
            )));
        }
        std::fs::rename(&tmp, &target).map_err(|e| io_error("write", &target, e))?;
        if let Some(dir) = target.parent().and_then(|d| std::fs::File::open(d).ok()) {
            // The rename survives a power loss only once the directory is synced; best-effort where unsupported.
            let _ = dir.sync_all();
        }
        report.path = dest.to_path_buf();
        Ok(report)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::{Job, NewTask, TaskStore};
    use super::*;
    use sosw_core::Time;
    use std::sync::Mutex;

    fn tasks(prefix: &str, n: usize, pad: usize) -> Vec<NewTask> {
        let payload = format!("{{\"pad\": \"{}\"}}", "x".repeat(pad));
        (0..n)
            .map(|i| NewTask {
                task_id: format!("{prefix}{i:05}"),
                labourer_id: "w".into(),
                payload: payload.clone(),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_database_fails_only_the_write_that_does_not_fit_in_its_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open_or_create(dir.path().join("t.db")).expect("open");
        store.init().await.expect("init");
        let now = Time::from_secs(1_700_000_000);
        store
            .create_tasks(&tasks("a", 10, 10), 1000, now)
            .await
            .expect("create");
        let pages = store.page_count().await.expect("pages");
        store.set_max_page_count(pages + 4).await.expect("cap");
        // The first write holds the writer until the others are queued, so that they share one group.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        let (reply, first) = tokio::sync::oneshot::channel();
        let hold = move |_: &Connection| {
            let _ = wait.lock().expect("lock").recv();
            Ok(())
        };
        store
            .writer
            .send(Box::new(Job {
                f: hold,
                result: None,
                reply,
            }))
            .expect("writer running");
        let small = tasks("s", 2, 10);
        let big = tasks("b", 500, 1000);
        let (small_result, big_result, ()) = tokio::join!(
            store.create_tasks(&small, 1000, now),
            store.create_tasks(&big, 1000, now),
            async move {
                let _ = release.send(());
            }
        );
        assert!(first.await.expect("answered").is_ok());
        let err = big_result.expect_err("does not fit");
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("the database is full")),
            "{err:?}"
        );
        assert_eq!(small_result.expect("fits alone").created.len(), 2);
        assert!(store.get("b00000").await.expect("get").is_none());
        assert!(store.get("b00499").await.expect("get").is_none());
        assert!(store.get("s00001").await.expect("get").is_some());
    }
}
