//! `sosw backup`, `sosw check`, and damaged store files, through the binary.

// Deadlines for waiting on real processes and servers read the monotonic clock (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use common::Sandbox;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn count(db: &Path, table: &str) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open");
    c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

#[test]
fn a_backup_taken_while_tasks_are_created_opens_and_checks_clean() {
    let s = Arc::new(Sandbox::new(
        json!({"task_config": {"labourers": {"w": {"command": "true"}}}}),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) || runs < 3 {
                s.ok(&["task", "create", "w", "--count", "100"]);
                runs += 1;
            }
            // One more after the backup returned: the source has moved on from the copy, whatever the timing.
            s.ok(&["task", "create", "w", "--count", "100"]);
            runs + 1
        })
    };
    // The backup starts once the writer has written something, and runs while it goes on writing.
    let db = s.path().join("sosw.db");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while count(&db, "tasks") < 200 {
        assert!(std::time::Instant::now() < deadline, "the writer never wrote 200 tasks");
        std::thread::yield_now();
    }
    let out = s.ok(&["--json", "backup", "b.db"]);
    stop.store(true, Ordering::SeqCst);
    let runs = writer.join().expect("writer");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    let live = report["tasks"]["live"].as_i64().expect("live");
    let backup = s.path().join("b.db");
    assert_eq!(count(&backup, "tasks"), live);
    assert_eq!(live % 100, 0, "whole `task create` calls only: {live}");
    assert!(live >= 200 && live < runs * 100, "{live} of {}", runs * 100);
    assert!(!PathBuf::from(format!("{}-wal", backup.display())).exists(), "one file");

    let checked = s.ok(&["--store", "sqlite:b.db", "check"]);
    assert!(checked.contains("no problems found"), "{checked}");
    let checked = s.ok(&["--store", "sqlite:b.db", "--json", "check", "--quick"]);
    let checked: serde_json::Value = serde_json::from_str(&checked).expect("json");
    assert_eq!(checked["clean"], true);
    assert_eq!(checked["rows"]["live"].as_i64(), Some(live));
    s.ok(&["--store", "sqlite:b.db", "status"]);
    s.ok(&["check"]);

    // An existing file is refused (usage: exit 2) unless --force; the store itself never.
    let (code, _, err) = s.fails_full(&["backup", "b.db"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("b.db") && err.contains("--force"), "{err}");
    s.ok(&["backup", "--force", "b.db"]);
    assert_eq!(count(&backup, "tasks"), runs * 100);
    let (code, _, err) = s.fails_full(&["backup", "--force", "sosw.db"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the store itself"), "{err}");
}

#[test]
fn check_lists_each_problem_with_its_task_and_exits_1() {
    let s = Sandbox::new(json!({"task_config": {"labourers": {"w": {"command": "true"}}}}));
    s.ok(&["task", "create", "w", "--count", "3"]);
    let db = s.path().join("sosw.db");
    let c = rusqlite::Connection::open(&db).expect("open");
    c.execute_batch(
        "UPDATE tasks SET stats = 'nope' WHERE task_id = (SELECT MIN(task_id) FROM tasks); \
         INSERT INTO tasks_meta (task_id, labourer_id, created_at, action, author) VALUES ('ghost', 'w', 1, 'created', 'x')",
    )
    .expect("damage");
    let bad: String = c
        .query_row("SELECT MIN(task_id) FROM tasks", [], |r| r.get(0))
        .expect("id");
    drop(c);
    let (code, out, err) = s.fails_full(&["check"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains(&format!("task `{bad}` (tasks)")) && out.contains("not_json_object"),
        "{out}"
    );
    assert!(
        out.contains("task `ghost` (tasks_meta)") && out.contains("orphan_meta"),
        "{out}"
    );
    assert!(err.contains("2 problem(s) found"), "{err}");
    let (code, out, _) = s.fails_full(&["--json", "check"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["clean"], false);
    let ids: Vec<&str> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["task_id"].as_str())
        .collect();
    assert_eq!(ids, [bad.as_str(), "ghost"]);
}

#[test]
fn a_damaged_store_file_is_refused_by_status_init_check_and_backup_untouched() {
    let s = Sandbox::new(json!({"task_config": {"labourers": {"w": {"command": "true"}}}}));
    s.ok(&["task", "create", "w", "--count", "300"]);
    let db = s.path().join("sosw.db");
    {
        let c = rusqlite::Connection::open(&db).expect("open");
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }
    let real = std::fs::read(&db).expect("read");
    let random: Vec<u8> = (0u32..50_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (name, bytes) in [
        ("random bytes", random),
        ("the first 4096 bytes of a store", real[..4096].to_vec()),
        ("a zero-length file", Vec::new()),
    ] {
        let path = s.path().join("x.db");
        std::fs::write(&path, &bytes).expect("write");
        for command in [&["status"][..], &["init"], &["check"], &["backup", "copy.db"]] {
            let mut args = vec!["--store", "sqlite:x.db"];
            args.extend_from_slice(command);
            let (code, _, err) = s.fails_full(&args);
            assert_eq!(code, 1, "{name} {command:?}: {err}");
            assert!(
                err.contains("`./x.db`") || err.contains("x.db`"),
                "{name} {command:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
            assert_eq!(
                std::fs::read(&path).expect("read"),
                bytes,
                "{name} {command:?}: untouched"
            );
        }
        assert!(!s.path().join("copy.db").exists());
    }
}
