//! The file itself: damaged files refused on open, a full disk, online backups, and `check` on stores damaged with
//! raw SQL.

// Deadlines for waiting on real processes and servers read the monotonic clock (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

use rusqlite::Connection;
use sosw_core::check::{Check, CheckReport};
use sosw_core::greenfield::DEFAULT_INVOCATION_DELTA as DELTA;
use sosw_core::meta::{MetaAction, MetaEvent};
use sosw_core::ports::{ArchiveExpect, Claim, MetaSink, StoreError, Table, TaskQuery, TaskStore};
use sosw_core::{Greenfield, NewTask, Time, WorkerReport};
use sosw_sqlite::SqliteStore;
use std::path::{Path, PathBuf};

const NOW: Time = Time::from_secs(1_700_000_000);
const STEP: i64 = 1000;

fn new_tasks(prefix: &str, n: usize, payload_bytes: usize) -> Vec<NewTask> {
    let payload = serde_json::json!({"pad": "x".repeat(payload_bytes)}).to_string();
    (0..n)
        .map(|i| NewTask {
            task_id: format!("{prefix}{i:05}"),
            labourer_id: "w".into(),
            payload: payload.clone(),
        })
        .collect()
}

async fn new_store(dir: &Path) -> SqliteStore {
    let store = SqliteStore::open_or_create(dir.join("sosw.db")).expect("open");
    store.init().await.expect("init");
    store
}

/// Moves everything from the WAL into the file, so that a byte copy of the file alone is the whole store.
fn checkpoint(path: &Path) {
    let c = Connection::open(path).expect("open");
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

fn sql(path: &Path, statement: &str) {
    let c = Connection::open(path).expect("open");
    c.execute_batch(statement)
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

// ---- damaged files ----------------------------------------------------------------------------------------------

/// A real store of a few hundred tasks, checkpointed into its file.
async fn real_store_bytes(dir: &Path) -> Vec<u8> {
    let store = new_store(dir).await;
    store
        .create_tasks(&new_tasks("t", 500, 200), STEP, NOW)
        .await
        .expect("create");
    drop(store);
    let path = dir.join("sosw.db");
    checkpoint(&path);
    std::fs::read(&path).expect("read")
}

#[tokio::test]
async fn a_damaged_file_is_refused_on_open_and_left_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let real = real_store_bytes(dir.path()).await;
    assert!(real.len() > 3 * 4096, "the store spans pages: {}", real.len());
    // Deterministic "random" bytes: a xorshift stream.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let random: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("random bytes", random, "not an SQLite database"),
        (
            "the first 4096 bytes of a real store",
            real[..4096].to_vec(),
            "truncated",
        ),
        ("a zero-length file", Vec::new(), "empty file"),
        (
            "a short text file",
            b"{\"not\": \"a database\"}".to_vec(),
            "not an SQLite database",
        ),
        ("a header and nothing else", real[..100].to_vec(), "truncated"),
    ];
    for (name, bytes, says) in cases {
        let path = dir.path().join("bad.db");
        std::fs::write(&path, &bytes).expect("write");
        let opened = SqliteStore::open(&path).expect_err(name).to_string();
        let created = match SqliteStore::open_or_create(&path) {
            Err(e) => e.to_string(),
            Ok(s) => s.init().await.expect_err(name).to_string(),
        };
        for msg in [&opened, &created] {
            assert!(msg.contains(&path.display().to_string()), "{name}: {msg}");
            assert!(msg.contains(says), "{name}: {msg}");
        }
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bytes,
            "{name}: the file is unchanged"
        );
        assert!(
            !Path::new(&format!("{}-wal", path.display())).exists(),
            "{name}: no WAL was created"
        );
    }
}

#[tokio::test]
async fn a_store_damaged_inside_is_named_and_reported_by_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let real = real_store_bytes(dir.path()).await;
    let path = dir.path().join("bad.db");
    // Garbage over the second half of the pages: the header and the schema (written first, by `init`, on the first
    // pages) are intact; the tasks' pages, written after, are not.
    let mut bytes = real.clone();
    let end = bytes.len() - 4096;
    let start = bytes.len() / 4096 / 2 * 4096;
    for (i, b) in bytes[start..end].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    std::fs::write(&path, &bytes).expect("write");
    let store = SqliteStore::open(&path).expect("the header and schema are readable");
    let err = store
        .list(&TaskQuery {
            table: Table::Live,
            labourer: None,
            greenfield: None,
            completed: None,
            limit: 10_000,
            after: None,
        })
        .await
        .expect_err("the pages are damaged");
    assert!(err.to_string().contains("damaged"), "{err}");
    for quick in [false, true] {
        let report = store.check(NOW, DELTA, quick).await.expect("the check runs");
        assert!(!report.clean(), "{report:?}");
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p.check, Check::Integrity | Check::Unreadable)),
            "{report:?}"
        );
    }
}

// ---- a full disk ------------------------------------------------------------------------------------------------

fn full(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.contains("the database is full"))
}

#[tokio::test]
async fn a_full_database_refuses_whole_writes_keeps_reading_and_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = new_store(dir.path()).await;
    store
        .create_tasks(&new_tasks("a", 100, 100), STEP, NOW)
        .await
        .expect("create");
    let pages = store.page_count().await.expect("pages");
    assert_eq!(store.set_max_page_count(pages + 8).await.expect("cap"), pages + 8);

    // Batches of 200 tasks of 1 KB (~50 pages each) until the cap is reached.
    let mut written = 100;
    let mut failed = None;
    for b in 0..20 {
        let batch = new_tasks(&format!("b{b:02}-"), 200, 1000);
        match store.create_tasks(&batch, STEP, NOW).await {
            Ok(r) => written += r.created.len(),
            Err(e) => {
                failed = Some((batch, e));
                break;
            }
        }
    }
    let (batch, err) = failed.expect("the cap is reached");
    assert!(full(&err), "{err:?}");
    assert!(err.is_retryable(), "room may return: {err}");

    // Nothing of the failed batch was written; every earlier write is whole; reads work.
    for t in [&batch[0], &batch[199]] {
        assert!(store.get(&t.task_id).await.expect("reads work").is_none());
    }
    let live = store
        .list(&TaskQuery {
            table: Table::Live,
            labourer: None,
            greenfield: None,
            completed: None,
            limit: 100_000,
            after: None,
        })
        .await
        .expect("reads work");
    assert_eq!(live.len(), written);
    // The audit trail is refused the same way when it does not fit.
    let events: Vec<MetaEvent> = (0..2000)
        .map(|i| MetaEvent {
            task_id: format!("a{:05}", i % 100),
            labourer_id: "w".into(),
            action: MetaAction::Created,
            at: NOW,
            author: "test".into(),
            details: Some(serde_json::json!({"pad": "y".repeat(500)})),
        })
        .collect();
    let err = store.record(&events).await.expect_err("full");
    assert!(full(&err), "{err:?}");
    assert!(store.events_of("a00000").await.expect("reads").is_empty());

    // Room returns: the same writes succeed, and the store is consistent.
    store.set_max_page_count(1 << 30).await.expect("uncap");
    let created = store.create_tasks(&batch, STEP, NOW).await.expect("room again");
    assert_eq!(created.created.len(), 200);
    store.record(&events).await.expect("room again");
    let report = store.check(NOW, DELTA, false).await.expect("check");
    assert!(report.clean(), "{:?}", report.problems);
}

// ---- backups ----------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_tasks_are_written_is_one_consistent_snapshot() {
    const BATCH: usize = 50;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = new_store(dir.path()).await;
    let writer = {
        let store = store.clone();
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let mut batches = 0usize;
            loop {
                // One transaction per batch: a snapshot holds whole batches only.
                store
                    .create_tasks(&new_tasks(&format!("b{batches:05}-"), BATCH, 300), STEP, NOW)
                    .await
                    .expect("create");
                batches += 1;
                if stop.try_recv().is_ok() {
                    // One more batch after the backup returned, so that the source has moved on from the copy.
                    store
                        .create_tasks(&new_tasks(&format!("b{batches:05}-"), BATCH, 300), STEP, NOW)
                        .await
                        .expect("create");
                    return batches + 1;
                }
            }
        });
        (stop_tx, handle)
    };
    // Let the writer get going: wait until some batches are in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if store.get(&format!("b{:05}-00000", 20)).await.expect("get").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never wrote 20 batches"
        );
        tokio::task::yield_now().await;
    }
    let dest = dir.path().join("backup.db");
    let report = store.backup_to(&dest, false).await.expect("backup");
    let (stop, handle) = writer;
    let _ = stop.send(());
    let total_batches = handle.await.expect("writer");

    assert_eq!(report.path, dest);
    assert!(report.bytes > 0);
    assert_eq!(report.live as usize % BATCH, 0, "whole batches only: {report:?}");
    let copied = report.live as usize / BATCH;
    assert!(copied >= 21 && copied < total_batches, "{copied} of {total_batches}");
    assert!(
        !Path::new(&format!("{}-wal", dest.display())).exists(),
        "the backup is one file"
    );

    let backup = SqliteStore::open(&dest).expect("the backup opens");
    let check = backup.check(NOW, DELTA, false).await.expect("check");
    assert!(check.clean(), "{:?}", check.problems);
    assert_eq!(check.rows.live, report.live);
    // The snapshot is a prefix of the writes: batches 0..copied, each whole.
    for b in [0, copied - 1] {
        for i in [0, BATCH - 1] {
            let id = format!("b{b:05}-{i:05}");
            assert!(backup.get(&id).await.expect("get").is_some(), "{id}");
        }
    }
    assert!(backup.get(&format!("b{copied:05}-00000")).await.expect("get").is_none());
}

#[tokio::test]
async fn a_backup_never_overwrites_unless_told_and_never_the_store_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = new_store(dir.path()).await;
    store
        .create_tasks(&new_tasks("t", 10, 10), STEP, NOW)
        .await
        .expect("create");
    let dest = dir.path().join("b.db");
    std::fs::write(&dest, b"precious").expect("write");
    let err = store.backup_to(&dest, false).await.expect_err("exists");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().contains("--force") && err.to_string().contains("b.db"),
        "{err}"
    );
    assert_eq!(std::fs::read(&dest).expect("read"), b"precious");

    let report = store.backup_to(&dest, true).await.expect("overwrite");
    assert_eq!(report.live, 10);
    assert_eq!(SqliteStore::open(&dest).expect("open").path(), dest.as_path());

    for itself in [
        dir.path().join("sosw.db"),
        dir.path().join("sosw.db-wal"),
        dir.path().join(".").join("sosw.db"),
    ] {
        let err = store.backup_to(&itself, true).await.expect_err("itself");
        assert!(err.to_string().contains("the store itself"), "{err}");
    }
    let err = store
        .backup_to(&dir.path().join("no/such/dir/b.db"), false)
        .await
        .expect_err("no directory");
    assert!(err.to_string().contains("no/such/dir"), "{err}");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains("sosw-backup"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ---- check ------------------------------------------------------------------------------------------------------

/// A store with a task in each state: queued `q`, running `r`, completed `c`, retry `y`, closed `z`, dead `d`.
async fn varied_store(dir: &Path) -> SqliteStore {
    let store = new_store(dir).await;
    let ids = ["q", "r", "c", "y", "z", "d"];
    let tasks: Vec<NewTask> = ids
        .iter()
        .map(|id| NewTask {
            task_id: (*id).into(),
            labourer_id: "w".into(),
            payload: "{}".into(),
        })
        .collect();
    let created = store.create_tasks(&tasks, STEP, NOW).await.expect("create");
    let invoked = Greenfield::new(NOW.secs() + DELTA);
    let claims: Vec<(String, Greenfield)> = created
        .created
        .iter()
        .filter(|t| t.task_id != "q")
        .map(|t| (t.task_id.clone(), t.greenfield))
        .collect();
    let claimed = store
        .claim("w", &claims, Greenfield::start(NOW), invoked)
        .await
        .expect("claim");
    assert!(claimed.iter().all(|c| matches!(c, Claim::Claimed { .. })));
    let report = WorkerReport {
        stats: serde_json::json!({"rows": 3}).as_object().cloned().unwrap_or_default(),
        ..WorkerReport::default()
    };
    for id in ["c", "z"] {
        store.complete(id, NOW, &report).await.expect("complete");
    }
    store
        .archive("z", ArchiveExpect::Completed, NOW)
        .await
        .expect("archive");
    store
        .archive("d", ArchiveExpect::Dead { greenfield: invoked }, NOW)
        .await
        .expect("dead");
    store
        .move_to_retry("y", invoked, NOW.secs() + 900)
        .await
        .expect("retry");
    let events: Vec<MetaEvent> = ids
        .iter()
        .map(|id| MetaEvent {
            task_id: (*id).into(),
            labourer_id: "w".into(),
            action: MetaAction::Created,
            at: NOW,
            author: "test".into(),
            details: Some(serde_json::json!({"greenfield": 2000})),
        })
        .collect();
    store.record(&events).await.expect("meta");
    store
}

fn found(report: &CheckReport) -> Vec<(Check, Option<String>)> {
    report.problems.iter().map(|p| (p.check, p.task_id.clone())).collect()
}

#[tokio::test]
async fn check_finds_each_kind_of_damage_made_with_raw_sql() {
    let invoked = NOW.secs() + DELTA;
    /// (name, the damage as SQL, the problems `check` must find).
    type Case = (&'static str, String, Vec<(Check, &'static str)>);
    let cases: Vec<Case> =
        vec![
        ("nothing", String::new(), vec![]),
        (
            "a live task copied into closed",
            "INSERT INTO closed_tasks SELECT task_id, labourer_id, created_at, greenfield, attempts, payload, \
             completed_at, failed_attempts, stats, result, 5, 'w_1', refunded_attempts FROM tasks WHERE task_id = 'c'"
                .into(),
            // A row inserted by hand is not in `closed_counts` (sosw's moves count what they close).
            vec![(Check::InSeveralTables, "c"), (Check::StoredCount, "")],
        ),
        (
            "a retry row copied back to live",
            "INSERT INTO tasks SELECT task_id, labourer_id, created_at, greenfield, attempts, payload, completed_at, \
             failed_attempts, stats, result, refunded_attempts FROM retry_tasks"
                .into(),
            vec![(Check::InSeveralTables, "y")],
        ),
        (
            "negative attempts",
            "UPDATE tasks SET attempts = -1 WHERE task_id = 'q'".into(),
            vec![(Check::NegativeCount, "q")],
        ),
        (
            "a queued task at an invocation marker",
            format!("UPDATE tasks SET greenfield = {invoked} WHERE task_id = 'q'"),
            vec![(Check::MarkerWithoutAttempt, "q")],
        ),
        (
            "a marker from the future",
            format!("UPDATE tasks SET greenfield = {} WHERE task_id = 'r'", invoked + 10 * DELTA),
            vec![(Check::MarkerInFuture, "r")],
        ),
        (
            "completed without an attempt",
            "UPDATE tasks SET attempts = 0 WHERE task_id = 'c'".into(),
            vec![(Check::CompletedWithoutAttempt, "c")],
        ),
        (
            "completed at a queue position",
            "UPDATE tasks SET greenfield = 3000 WHERE task_id = 'c'".into(),
            vec![(Check::CompletedAtQueuePosition, "c")],
        ),
        (
            "a completed retry row",
            "UPDATE retry_tasks SET completed_at = 5 WHERE task_id = 'y'".into(),
            vec![(Check::RetryCompleted, "y")],
        ),
        (
            "a closed status that disagrees",
            "UPDATE closed_tasks SET labourer_id_task_status = 'w_0' WHERE task_id = 'z'; \
             UPDATE closed_tasks SET completed_at = 7 WHERE task_id = 'd'"
                .into(),
            vec![(Check::ClosedStatus, "d"), (Check::ClosedStatus, "z")],
        ),
        (
            "stats that are not an object, a payload that is not JSON",
            "UPDATE tasks SET stats = '[1]' WHERE task_id = 'c'; UPDATE closed_tasks SET payload = 'oops' \
             WHERE task_id = 'z'; UPDATE retry_tasks SET result = 'null' WHERE task_id = 'y'"
                .into(),
            vec![
                (Check::NotJsonObject, "c"),
                (Check::NotJsonObject, "y"),
                (Check::NotJsonObject, "z"),
            ],
        ),
        (
            "text in greenfield, a blob in a payload",
            "UPDATE tasks SET greenfield = 'soon' WHERE task_id = 'q'; UPDATE tasks SET payload = x'00ff' \
             WHERE task_id = 'r'"
                .into(),
            vec![(Check::ColumnType, "q"), (Check::NotJsonObject, "r")],
        ),
        (
            "orphan meta",
            "INSERT INTO tasks_meta (task_id, labourer_id, created_at, action, author) VALUES \
             ('ghost', 'w', 1, 'created', 'x'), ('ghost', 'w', 2, 'invoked', 'x')"
                .into(),
            vec![(Check::OrphanMeta, "ghost")],
        ),
        (
            "meta that `task show` cannot read",
            "UPDATE tasks_meta SET action = '' WHERE task_id = 'q'; \
             UPDATE tasks_meta SET details = '{oops' WHERE task_id = 'r'"
                .into(),
            vec![(Check::BadMeta, "q"), (Check::BadMeta, "r")],
        ),
    ];
    for (name, damage, want) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = varied_store(dir.path()).await;
        if !damage.is_empty() {
            sql(&dir.path().join("sosw.db"), &damage);
        }
        let report = store.check(NOW, DELTA, false).await.expect(name);
        let want: Vec<(Check, Option<String>)> = want
            .into_iter()
            .map(|(c, id)| (c, (!id.is_empty()).then(|| id.to_string())))
            .collect();
        assert_eq!(found(&report), want, "{name}: {:#?}", report.problems);
        assert_eq!(report.clean(), damage.is_empty(), "{name}");
        assert_eq!(
            (report.rows.live, report.rows.retry, report.rows.closed),
            match name {
                "a live task copied into closed" => (3, 1, 3),
                "a retry row copied back to live" => (4, 1, 2),
                _ => (3, 1, 2),
            },
            "{name}"
        );
        for p in &report.problems {
            assert!(p.to_string().contains(p.task_id.as_deref().unwrap_or("")), "{p}");
        }
    }
}

/// The closed tasks' counts are kept by triggers: raw deletes and updates of archived rows keep them right, and a
/// tampered count is found by `check`.
#[tokio::test]
async fn closed_counts_follow_every_change_of_the_archive_and_check_finds_a_wrong_one() {
    use sosw_core::greenfield::Markers;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = varied_store(dir.path()).await;
    let path = dir.path().join("sosw.db");
    let markers = Markers::new(NOW, DELTA, 60, 30);
    let closed = |c: sosw_core::ports::LabourerCounts| (c.closed_completed, c.closed_dead);
    assert_eq!(closed(store.counts("w", &markers).await.expect("counts")), (1, 1));
    // An operator prunes the archive by hand, and renames a labourer's dead task.
    sql(
        &path,
        "DELETE FROM closed_tasks WHERE task_id = 'z'; DELETE FROM tasks_meta WHERE task_id = 'z'",
    );
    assert_eq!(closed(store.counts("w", &markers).await.expect("counts")), (0, 1));
    sql(
        &path,
        "UPDATE closed_tasks SET labourer_id = 'v', labourer_id_task_status = 'v_0' WHERE task_id = 'd'",
    );
    assert_eq!(closed(store.counts("w", &markers).await.expect("counts")), (0, 0));
    assert_eq!(closed(store.counts("v", &markers).await.expect("counts")), (0, 1));
    assert_eq!(store.labourer_ids().await.expect("ids"), ["v", "w"]);
    let report = store.check(NOW, DELTA, false).await.expect("check");
    assert!(report.clean(), "{:#?}", report.problems);
    sql(&path, "UPDATE closed_counts SET n = 7 WHERE labourer_id = 'v'");
    let report = store.check(NOW, DELTA, false).await.expect("check");
    assert_eq!(found(&report), [(Check::StoredCount, None)]);
    assert!(report.problems[0]
        .message
        .contains("has 1 closed task(s) with status `v_0`, but `closed_counts` says 7"));
}
