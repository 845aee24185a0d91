//! End-to-end: `sosw schedule` and `sosw job` against a temporary SQLite file, including kills mid-job.

// Deadlines for waiting on real processes and servers read the monotonic clock (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

mod common;
use common::{ok_json, run, sosw};

fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = json!({
        "task_config": {"labourers": {"reports": {"command": "true"}}},
        "job_schema": {"chunkable_attrs": [["store", {}], ["product", {}]]}
    });
    std::fs::write(dir.path().join("sosw.json"), config.to_string()).expect("config");
    assert!(run(dir.path(), &["init"]).status.success());
    dir
}

fn write_job(dir: &Path, name: &str, job: &Value) {
    std::fs::write(dir.join(name), job.to_string()).expect("job");
}

#[test]
fn a_job_is_scheduled_once_and_reported() {
    let dir = sandbox();
    let d = dir.path();
    let job = json!({"lambda_name": "reports", "period": "2019-01-01..2019-01-03", "isolate_days": true,
                     "isolate_stores": true, "stores": {"s1": null, "s2": null}, "report": "daily"});
    write_job(d, "job.json", &job);
    let report = ok_json(d, &["schedule", "job.json"]);
    assert_eq!(
        (
            report["total"].clone(),
            report["created"].clone(),
            report["existing"].clone()
        ),
        (json!(6), json!(6), json!(0))
    );
    let job_id = report["job_id"].as_str().expect("id").to_string();
    let shown = ok_json(d, &["job", "show", &job_id]);
    assert_eq!(
        (shown["scheduled"].clone(), shown["state"].clone()),
        (json!(6), json!("finished"))
    );
    assert_eq!(ok_json(d, &["status"])["reports"]["queued"], json!(6));
    // `task list --json` writes JSON lines: with `--limit 1`, one object.
    let first = ok_json(d, &["task", "list", "--state", "queued", "--limit", "1"]);
    let first: Value = serde_json::from_str(first["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(
        first,
        json!({"isolate_stores": true, "stores": ["s1"], "report": "daily", "date_list": ["2019-01-01"]})
    );

    // Again, from stdin: nothing new.
    let mut child = sosw(d, &["--json", "schedule", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let again: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (
            again["job_id"].as_str(),
            again["created"].clone(),
            again["existing"].clone()
        ),
        (Some(job_id.as_str()), json!(0), json!(6))
    );
    assert_eq!(ok_json(d, &["status"])["reports"]["queued"], json!(6));
    assert_eq!(ok_json(d, &["job", "list"]).as_array().map(Vec::len), Some(1));
}

#[test]
fn dry_run_prints_the_tasks_and_writes_nothing() {
    let dir = sandbox();
    let d = dir.path();
    write_job(
        d,
        "job.json",
        &json!({"job": {"lambda_name": "reports", "isolate_stores": true, "stores": ["a", "b", "c"]}}),
    );
    let out = run(d, &["schedule", "--dry-run", "job.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["payload"], json!({"isolate_stores": true, "stores": ["b"]}));
    assert_eq!(lines[1]["labourer_id"], json!("reports"));
    assert_eq!(lines[1]["task_id"].as_str().map(str::len), Some(32));
    assert_eq!(ok_json(d, &["status"])["reports"]["queued"], json!(0));
    assert!(ok_json(d, &["job", "list"]).as_array().expect("jobs").is_empty());
}

#[test]
fn invalid_jobs_exit_2_name_the_problem_and_write_nothing() {
    let dir = sandbox();
    let d = dir.path();
    let cases = [
        (json!({"lambda_name": "nobody"}), "unknown labourer `nobody`"),
        (
            json!({"lambda_name": "reports", "period": "last_fortnight"}),
            "`last_fortnight`",
        ),
        (
            json!({"lambda_name": "reports", "isolate_stores": true, "stores": {"a": null, "b": "oops"}}),
            "`stores.b`",
        ),
        (json!({"stores": ["a"]}), "`lambda_name`"),
        (
            json!({"lambda_name": "reports", "isolate_stores": "perhaps", "stores": ["a"]}),
            "`isolate_stores`",
        ),
    ];
    for (job, want) in cases {
        write_job(d, "bad.json", &job);
        let out = run(d, &["schedule", "bad.json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{job}: {err}");
        assert!(err.contains(want), "{job}: {err}");
    }
    std::fs::write(d.join("broken.json"), "{").expect("write");
    let out = run(d, &["schedule", "broken.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`broken.json` is not valid JSON"));
    let out = run(d, &["schedule", "missing.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(ok_json(d, &["status"])["reports"]["queued"], json!(0));
    assert!(ok_json(d, &["job", "list"]).as_array().expect("jobs").is_empty());
    let out = run(d, &["job", "show", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

/// A small deterministic generator for the kill points, from a printed seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn a_job_killed_at_random_points_ends_up_with_each_task_once_in_order() {
    let dir = sandbox();
    let d = dir.path();
    // 200 days x 1000 stores = 200,000 tasks.
    let stores: serde_json::Map<String, Value> = (0..1000).map(|i| (format!("store-{i:04}"), Value::Null)).collect();
    let job = json!({"lambda_name": "reports", "job_id": "crash", "period": "2019-01-01..2019-07-19", "isolate_days": true,
                     "isolate_stores": true, "stores": stores});
    write_job(d, "job.json", &job);
    let db = rusqlite::Connection::open_with_flags(d.join("sosw.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("db");
    let scheduled = || -> i64 {
        db.query_row("SELECT scheduled FROM jobs WHERE job_id = 'crash'", [], |r| r.get(0))
            .unwrap_or(0)
    };
    // Kill points from a printed seed; `SOSW_CRASH_SEED=N` replays them.
    let mut seed = std::env::var("SOSW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.subsec_nanos());
            u64::from(nanos)
        })
        | 1;
    eprintln!("kill-point seed: {seed} (re-run with SOSW_CRASH_SEED={seed})");
    let mut kill_points = Vec::new();
    for (lo, hi) in [(1, 60_000), (60_000, 130_000), (130_000, 199_000)] {
        let at = lo + next(&mut seed) % (hi - lo);
        let mut child = sosw(d, &["schedule", "job.json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Watch the store until the run has passed the kill point (or finished), then SIGKILL it.
        let finished = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status.success();
            }
            if scheduled() >= at as i64 {
                break false;
            }
            std::thread::yield_now();
        };
        if !finished {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
        kill_points.push((at, scheduled()));
    }
    eprintln!("kill points (wanted, scheduled when killed): {kill_points:?}");
    assert!(
        kill_points.iter().any(|(_, done)| *done < 200_000),
        "no run was killed before it finished: {kill_points:?}"
    );
    let report = ok_json(d, &["schedule", "job.json"]);
    assert_eq!(report["total"], json!(200_000), "kill points {kill_points:?}");
    assert!(
        report["existing"].as_u64().expect("existing") > 0,
        "the last run resumed: {report}"
    );
    assert_eq!(
        report["created"].as_u64().expect("created") + report["existing"].as_u64().expect("existing"),
        200_000
    );
    let count: i64 = db
        .query_row("SELECT COUNT(*) FROM tasks WHERE labourer_id = 'reports'", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(
        count, 200_000,
        "each task exactly once (task_id is the primary key); kill points {kill_points:?}"
    );
    // In order: the queue (by greenfield) is the generation order, which is the order of the ids of one job.
    let out_of_order: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT task_id, LAG(task_id) OVER (ORDER BY greenfield) AS before FROM tasks) \
             WHERE before IS NOT NULL AND before >= task_id",
            [],
            |r| r.get(0),
        )
        .expect("order");
    assert_eq!(out_of_order, 0, "kill points {kill_points:?}");
    assert_eq!(ok_json(d, &["job", "show", "crash"])["state"], json!("finished"));
}

/// Issue #8, defect 8 (the job items) and defect 4 (a job too big), at the command line.
#[test]
fn job_items_are_refused_with_exit_2_naming_them_and_ignored_flags_are_warned_about() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let config = json!({
        "task_config": {"labourers": {"reports": {"command": "true"}}},
        "job_schema": {"chunkable_attrs": [["section", {}], ["store", {}], ["product", {}]]},
        "schedule_max_tasks": 1_000_000
    });
    std::fs::write(d.join("sosw.json"), config.to_string()).expect("config");
    assert!(run(d, &["init"]).status.success());
    let cases = [
        (
            json!({"lambda_name": "reports", "sections": {"s1": {"isolate_stores": true, "stores": "abc"}}}),
            "`sections.s1.stores`: to chunk it, give a list of values or an object of values, got \"abc\" (for one \
             value, write [\"abc\"])",
        ),
        (
            json!({"lambda_name": "reports", "isolate_sections": true, "sections": ["a", "b", "a"]}),
            "`sections`: the value \"a\" is listed twice",
        ),
        (
            json!({"lambda_name": "reports", "job_id": ""}),
            "`job_id`: must not be empty",
        ),
        (
            json!({"lambda_name": "reports", "job_id": 42}),
            "`job_id` must be a string, got 42",
        ),
        (
            json!({"lambda_name": "reports", "period": "last_999999_days", "isolate_days": true,
                   "isolate_sections": true, "sections": ["a", "b"]}),
            "the job makes 1999998 tasks, more than `schedule_max_tasks` (1000000)",
        ),
    ];
    for (job, want) in cases {
        write_job(d, "bad.json", &job);
        let out = run(d, &["schedule", "bad.json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{job}: {err}");
        assert!(err.contains(want), "{job}: {err}");
    }
    assert!(
        ok_json(d, &["job", "list"]).as_array().expect("jobs").is_empty(),
        "nothing written"
    );

    // `isolate_stores` without `sections`: one task with all the stores, as in Python sosw, and a warning.
    write_job(
        d,
        "job.json",
        &json!({"lambda_name": "reports", "isolate_stores": true, "stores": ["a", "b"]}),
    );
    let out = run(d, &["--json", "schedule", "job.json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "warning: `isolate_stores` has no effect on `stores`: `stores` is chunked only inside the values of \
             `sections` (chunk levels: section, store, product), so these values go into the task as they are"
        ),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["created"], json!(1));
}

/// Issue #8, defect 3: a finished job resubmitted when the queue has less room than the whole job exits 0 and
/// reports every task as existing.
#[test]
fn a_finished_job_is_resubmitted_near_a_full_queue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    // At a step of 1,000,000 the queue holds about now / 1,000,000 tasks (some 1,760 in 2026): a job of two thirds
    // of that fits once, and leaves less room than itself.
    let step: u64 = 1_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let n = now / step * 2 / 3;
    let config = json!({
        "task_config": {"labourers": {"reports": {"command": "true"}}, "greenfield_task_step": step},
        "job_schema": {"chunkable_attrs": [["store", {}]]}
    });
    std::fs::write(d.join("sosw.json"), config.to_string()).expect("config");
    assert!(run(d, &["init"]).status.success());
    write_job(
        d,
        "job.json",
        &json!({"lambda_name": "reports", "job_id": "near-full", "isolate_stores": true, "stores": (0..n).collect::<Vec<u64>>()}),
    );
    let first = ok_json(d, &["schedule", "job.json"]);
    assert_eq!(
        (first["created"].as_u64(), first["existing"].as_u64()),
        (Some(n), Some(0))
    );
    let again = ok_json(d, &["schedule", "job.json"]);
    assert_eq!(
        (again["created"].as_u64(), again["existing"].as_u64()),
        (Some(0), Some(n))
    );
    // A new job of the same size does not fit, and is refused before writing anything.
    write_job(
        d,
        "other.json",
        &json!({"lambda_name": "reports", "job_id": "other", "isolate_stores": true, "stores": (0..n).collect::<Vec<u64>>()}),
    );
    let out = run(d, &["schedule", "other.json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the queue of labourer `reports` is full"), "{err}");
    assert_eq!(ok_json(d, &["status"])["reports"]["queued"].as_u64(), Some(n));
}
