//! Flow control from the command line: `sosw labourer pause | resume | limit`, what `status` shows, and the global
//! limit held by eight `sosw run` daemons on one SQLite file.

mod common;

use common::Sandbox;
use serde_json::{json, Value};

fn config(max: u32) -> Value {
    // `report: self` and a worker that never reports: every invoked task stays running (for 600 s).
    json!({"task_config": {"labourers": {"w": {
        "command": ["true"], "report": "self", "max_simultaneous_invocations": max,
        "duration": 600, "cooldown": 60
    }}}})
}

#[test]
fn an_operator_pauses_resumes_and_limits_a_labourer() {
    let s = Sandbox::new(config(10));
    s.ok(&["task", "create", "w", "--count", "6"]);

    let out = s.ok(&[
        "labourer",
        "pause",
        "w",
        "--until",
        "2h",
        "--reason",
        "deploying the API",
    ]);
    assert!(out.contains("w: paused until 20"), "{out}");
    let w = &s.status()["w"];
    assert_eq!(w["held_back"]["code"], json!("paused"), "{w}");
    assert!(
        w["held_back"]["reason"]
            .as_str()
            .is_some_and(|r| r.ends_with(": deploying the API")),
        "{w}"
    );
    assert!(
        w["held_back"]["until"].as_str().is_some_and(|u| u.ends_with('Z')),
        "{w}"
    );
    let table = s.ok(&["status"]);
    assert!(table.contains("w: held back (paused) until"), "{table}");
    let pass = s.json(&["orchestrate"]);
    assert_eq!(pass["labourers"]["w"]["invoked"], json!(0), "{pass}");
    assert_eq!(pass["labourers"]["w"]["held_back"]["code"], json!("paused"), "{pass}");

    s.ok(&["labourer", "resume", "w"]);
    s.ok(&["labourer", "limit", "w", "2"]);
    let pass = s.json(&["orchestrate"]);
    assert_eq!(pass["labourers"]["w"]["invoked"], json!(2), "{pass}");
    let w = &s.status()["w"];
    assert_eq!(
        (
            w["limit_override"].clone(),
            w["running"].clone(),
            w["held_back"]["code"].clone()
        ),
        (json!(2), json!(2), json!("limit")),
        "{w}"
    );
    let set = s.json(&["labourer", "limit", "w", "--clear"]);
    assert!(set["control"].get("limit").is_none(), "{set}");
    let pass = s.json(&["orchestrate"]);
    assert_eq!(pass["labourers"]["w"]["invoked"], json!(4), "{pass}");

    // The labourer's own audit trail: who paused, resumed and limited it.
    let shown = s.json(&["labourer", "show", "w"]);
    let actions: Vec<&str> = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "labourer_paused",
            "labourer_resumed",
            "labourer_limit_changed",
            "labourer_limit_changed"
        ]
    );
    assert_eq!(shown["events"][0]["details"]["reason"], json!("deploying the API"));
    let text = s.ok(&["labourer", "show", "w"]);
    assert!(text.contains("labourer_paused"), "{text}");
    let (code, stderr) = s.fails(&["labourer", "show", "nope"]);
    assert_eq!(
        (code, stderr.contains("unknown labourer `nope`")),
        (2, true),
        "{stderr}"
    );
}

/// `sosw labourer rescan` lists every labourer with tasks, read from every table, and marks the ones the config no
/// longer has (their tasks stay, and `status` keeps showing them).
#[test]
fn labourer_rescan_lists_labourers_with_tasks_and_marks_unconfigured_ones() {
    let s = Sandbox::new(config(10));
    assert_eq!(s.ok(&["labourer", "rescan"]).trim(), "no labourer has tasks");
    s.ok(&["task", "create", "w", "--count", "2"]);
    let renamed = json!({"task_config": {"labourers": {"v": {"command": ["true"]}}}});
    std::fs::write(s.path().join("sosw.json"), renamed.to_string()).expect("config");
    assert_eq!(s.ok(&["labourer", "rescan"]), "w (not configured)\n");
    assert_eq!(
        s.json(&["labourer", "rescan"]),
        json!({"labourers": [{"labourer_id": "w", "configured": false}]})
    );
    assert_eq!(s.status()["w"]["queued"], json!(2));
}

#[test]
fn a_worker_heartbeat_extends_its_running_task() {
    let s = Sandbox::new(config(10));
    let id = s.ok(&["task", "create", "w"]).trim().to_string();
    let (code, stderr) = s.fails(&["heartbeat", &id]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("it is not running (it is queued)"), "{stderr}");
    s.json(&["orchestrate"]);
    let beat = s.json(&["heartbeat", &id]);
    assert!(
        beat["running_until"].as_str().is_some_and(|u| u.ends_with('Z')),
        "{beat}"
    );
    let (code, stderr) = s.fails(&["heartbeat", "nope"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("`nope` not found"), "{stderr}");
}

#[test]
fn bad_controls_exit_2_and_name_the_value() {
    let s = Sandbox::new(config(10));
    let cases: &[(&[&str], &str)] = &[
        (&["labourer", "pause", "nope"], "unknown labourer `nope`"),
        (&["labourer", "resume", "nope"], "unknown labourer `nope`"),
        (&["labourer", "limit", "nope", "3"], "unknown labourer `nope`"),
        (&["labourer", "pause", "w", "--until", "soon"], "\"soon\""),
        (
            &["labourer", "pause", "w", "--until", "2001-01-01"],
            "is not in the future",
        ),
        (&["labourer", "pause", "w", "--until", "99999999d"], "at most 10 years"),
        (&["labourer", "limit", "w"], "<N>"),
        (&["labourer", "limit", "w", "-1"], "-1"),
        (&["labourer", "limit", "w", "99999999999"], "99999999999"),
        (&["labourer", "limit", "w", "3", "--clear"], "cannot be used with"),
    ];
    for (args, want) in cases {
        let (code, stderr) = s.fails(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // Nothing was stored by any of them: no pause, no limit, no audit event.
    let w = &s.status()["w"];
    assert_eq!(
        (w["held_back"].clone(), w["limit_override"].clone()),
        (Value::Null, Value::Null),
        "{w}"
    );
    assert_eq!(s.json(&["labourer", "show", "w"])["events"], json!([]));
}

/// Eight `sosw run` daemons on one SQLite file, passing every 20 ms for 4 s, over a labourer limited to 5 whose
/// tasks expire after 1 s (the worker never reports) and come straight back: every second the eight race to fill
/// the same 5 slots. The audit trail shows at most 5 invocations in any second (a task invoked in second S runs
/// until S + 1). Without the dispatch lease, two daemons counting at once each fill the 5 slots.
#[test]
fn eight_daemons_never_overshoot_the_limit() {
    let s = Sandbox::new(json!({
        "task_config": {"labourers": {"w": {
            "command": ["true"], "report": "self", "max_simultaneous_invocations": 5,
            "duration": 1, "cooldown": 0, "max_attempts": 100000, "retry_delays": [0]
        }}},
        "daemon": {"shutdown_grace": 1}
    }));
    s.ok(&["task", "create", "w", "--count", "100"]);
    let mut daemons: Vec<_> = (0..8)
        .map(|_| {
            s.cmd(&["run", "--interval", "0.02"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    // The daemons run on the wall clock; the test only bounds how long they do.
    std::thread::sleep(std::time::Duration::from_secs(4));
    for d in &mut daemons {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
    }
    for d in &mut daemons {
        assert!(d.wait().expect("wait").success());
    }
    let db = rusqlite::Connection::open(s.path().join("sosw.db")).expect("open");
    let per_second: Vec<(i64, i64)> = db
        .prepare(
            "SELECT CAST(created_at AS INTEGER) AS s, COUNT(*) FROM tasks_meta WHERE action = 'invoked' \
             GROUP BY s ORDER BY s",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    assert!(
        per_second.len() >= 3,
        "the daemons invoked in too few seconds: {per_second:?}"
    );
    assert!(
        per_second.iter().all(|&(_, n)| n <= 5),
        "more than 5 invocations in a second: {per_second:?}"
    );
}
