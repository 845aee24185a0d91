//! End-to-end: the `sosw` binary against a temporary SQLite file, real worker processes and a real HTTP worker.

// Deadlines for waiting on real processes and servers read the monotonic clock (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Output};

mod common;
use common::Sandbox;

fn worker(command: &str, extra: Value) -> Value {
    let mut l = json!({"command": ["sh", "-c", command], "max_simultaneous_invocations": 10});
    if let (Value::Object(l), Value::Object(e)) = (&mut l, extra) {
        l.extend(e);
    }
    l
}

fn config(labourers: Value) -> Value {
    json!({"task_config": {"labourers": labourers}})
}

#[test]
fn a_task_through_its_whole_life_with_a_process_worker() {
    let s = Sandbox::new(config(
        json!({"w": worker("cat > event.json; echo '{\"pages\": 3}'", json!({}))}),
    ));
    let task = s.json(&["task", "create", "w", "--payload", r#"{"doc": "a.pdf"}"#]);
    let id = task["task_id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        (task["greenfield"].clone(), task["attempts"].clone()),
        (json!(2000), json!(0))
    );
    assert_eq!(s.status()["w"]["queued"], json!(1));

    let report = s.json(&["orchestrate"]);
    assert_eq!(report["labourers"]["w"]["invoked"], json!(1));
    assert_eq!(report["labourers"]["w"]["eco_status"], json!(4));
    // The worker got the flat event on stdin, and its exit was reported before `orchestrate` returned.
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(s.path().join("event.json")).expect("event")).expect("json");
    assert_eq!(event["doc"], json!("a.pdf"));
    assert_eq!(event["task_id"], json!(id));
    assert_eq!(s.status()["w"]["completed"], json!(1));

    let scavenged = s.json(&["scavenge"]);
    assert_eq!(scavenged["labourers"]["w"]["archived"], json!(1));
    let shown = s.json(&["task", "show", &id]);
    assert_eq!(shown["state"], json!("closed"));
    assert_eq!(shown["task"]["result_pages"], json!(3));
    assert_eq!(shown["task"]["labourer_id_task_status"], json!("w_1"));
    let actions: Vec<&str> = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, vec!["created", "invoked", "marked_as_completed", "archived"]);
    let status = s.status();
    assert_eq!(
        status["w"],
        json!({"queued": 0, "running": 0, "expired": 0, "completed": 0, "retry_waiting": 0, "closed_completed": 1,
               "closed_dead": 0, "eco_status": 4, "max_simultaneous_invocations": 10, "limit_override": null,
               "adaptive_limit": null, "rate_per_second": null, "desired": 10, "held_back": null, "held_back_all": [],
               "dispatching": null})
    );
    let listed = s.json_lines(&["task", "list", "--state", "closed"]);
    assert_eq!(listed.len(), 1);
    assert!(s.json_lines(&["task", "list", "--state", "queued"]).is_empty());
}

/// FIFOs made for a test; dropped (the test passed or failed), each is opened for reading without waiting, so that
/// a worker still waiting to write to one is let through (and ends) rather than left blocked for ever.
struct Fifos(Vec<PathBuf>);

impl Fifos {
    fn make(paths: &[PathBuf]) -> Fifos {
        for p in paths {
            assert!(Command::new("mkfifo").arg(p).status().expect("mkfifo").success());
        }
        Fifos(paths.to_vec())
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000; // Linux
        for p in &self.0 {
            let _ = std::fs::OpenOptions::new().read(true).custom_flags(O_NONBLOCK).open(p);
        }
    }
}

/// Reads a FIFO to its end on a thread of its own: opening it waits for a writer, however slow (a writer that never
/// comes fails the test after `within`, rather than hanging it).
fn read_fifo(path: PathBuf, within: std::time::Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(std::fs::read_to_string(&path)));
    rx.recv_timeout(within)
        .expect("the worker wrote to its FIFO")
        .expect("readable")
}

#[test]
fn orchestrate_no_wait_exits_at_once_and_its_workers_still_get_their_whole_event() {
    // The worker writes to its stdout first (nobody reads it once sosw has exited: a pipe would kill it), then
    // hands its event to the test through a FIFO, then reports itself.
    let script = r#"data=$(cat); echo "$data"; echo "$data" >&2; printf '%s' "$data" > event.fifo;
        "$SOSW_BIN" complete "$SOSW_TASK_ID"; echo reported > done.fifo"#;
    let s = Sandbox::new(config(json!({"w": worker(script, json!({"report": "self"}))})));
    let _unblock = Fifos::make(&[s.path().join("event.fifo"), s.path().join("done.fifo")]);
    // 256 KiB: more than a pipe holds, so a worker fed through a pipe would need sosw to stay.
    let blob = "x".repeat(256 * 1024);
    std::fs::write(s.path().join("big.json"), json!({"blob": blob}).to_string()).expect("write");
    let id = s
        .ok(&["task", "create", "w", "--payload", "@big.json"])
        .trim()
        .to_string();
    let report = s.json(&["orchestrate", "--no-wait"]);
    assert_eq!(report["labourers"]["w"]["invoked"], json!(1));
    // `orchestrate` has exited: the worker is on its own.
    let event: Value = serde_json::from_str(&read_fifo(
        s.path().join("event.fifo"),
        std::time::Duration::from_secs(60),
    ))
    .expect("the whole event");
    assert_eq!(event["blob"].as_str().map(str::len), Some(blob.len()));
    assert_eq!(event["task_id"], json!(id));
    assert_eq!(
        read_fifo(s.path().join("done.fifo"), std::time::Duration::from_secs(60)).trim(),
        "reported"
    );
    assert_eq!(s.json(&["task", "show", &id])["state"], json!("completed"));

    // A worker that reports by its exit code needs sosw to wait for it: refused, nothing invoked.
    let s = Sandbox::new(config(json!({
        "w": worker("true", json!({})),
        "v": worker("true", json!({"report": "self"}))
    })));
    let id = s.ok(&["task", "create", "w"]).trim().to_string();
    let (code, err) = s.fails(&["orchestrate", "--no-wait"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("labourer(s) `w`") && err.contains("--no-wait"), "{err}");
    assert_eq!(s.json(&["task", "show", &id])["state"], json!("queued"));
}

#[test]
fn output_that_cannot_be_written_is_an_error_after_the_work_is_recorded() {
    let s = Sandbox::new(config(json!({"w": worker("cat >/dev/null", json!({}))})));
    let id = s.ok(&["task", "create", "w"]).trim().to_string();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = s.cmd(&["orchestrate"]).stdout(full).output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write to standard output"), "{err}");
    // The worker's exit was recorded all the same.
    assert_eq!(s.json(&["task", "show", &id])["state"], json!("completed"));
}

#[test]
fn a_closed_stderr_loses_the_message_not_the_exit_code() {
    let s = Sandbox::new(config(json!({"w": worker("true", json!({}))})));
    // Standard error a pipe nobody reads any more: every write to it fails (EPIPE).
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let status = s
        .cmd(&["task", "show", "nope"])
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .status()
        .expect("runs");
    assert_eq!(status.code(), Some(1), "a runtime error, not a panic (101)");
}

#[test]
fn a_failing_worker_is_reported_and_its_task_stays_until_it_expires() {
    let s = Sandbox::new(config(json!({"w": worker("echo 'no disk' >&2; exit 4", json!({}))})));
    let id = s.ok(&["task", "create", "w"]).trim().to_string();
    s.ok(&["orchestrate"]);
    let t = s.json(&["task", "show", &id]);
    assert_eq!(t["state"], json!("running"));
    assert_eq!(t["task"]["failed_attempts"], json!(1));
    assert_eq!(t["task"]["result_exit_code"], json!(4));
    assert_eq!(t["task"]["result_stderr"], json!("no disk"));
}

#[test]
fn a_self_reporting_worker_uses_sosw_complete() {
    let script =
        r#"cat >/dev/null; "$SOSW_BIN" complete "$SOSW_TASK_ID" --stats '{"rows": 9}' --result '{"url": "s3://b/k"}'"#;
    let s = Sandbox::new(config(json!({"w": worker(script, json!({"report": "self"}))})));
    let id = s.ok(&["task", "create", "w"]).trim().to_string();
    s.ok(&["orchestrate"]);
    let t = s.json(&["task", "show", &id]);
    assert_eq!(t["state"], json!("completed"));
    assert_eq!(
        (t["task"]["stat_rows"].clone(), t["task"]["result_url"].clone()),
        (json!(9), json!("s3://b/k"))
    );
}

#[test]
fn a_rust_worker_reports_through_the_worker_sdk() {
    // `crates/sosw-worker/examples/report_self.rs`, built by `cargo test --workspace` beside the `sosw` binary.
    let example = std::path::Path::new(env!("CARGO_BIN_EXE_sosw"))
        .parent()
        .expect("target dir")
        .join("examples/report_self");
    assert!(
        example.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds the examples",
        example.display()
    );
    let s = Sandbox::new(config(
        json!({"w": {"command": [example], "report": "self", "max_simultaneous_invocations": 10}}),
    ));
    let ok = s
        .ok(&["task", "create", "w", "--payload", r#"{"items": [1, 2, 3]}"#])
        .trim()
        .to_string();
    let failing = s
        .ok(&["task", "create", "w", "--payload", r#"{"fail": true}"#])
        .trim()
        .to_string();
    s.ok(&["orchestrate"]);
    let t = s.json(&["task", "show", &ok]);
    assert_eq!(t["state"], json!("completed"), "{t}");
    assert_eq!(
        (t["task"]["stat_items"].clone(), t["task"]["result_labourer"].clone()),
        (json!(3), json!("w"))
    );
    let f = s.json(&["task", "show", &failing]);
    assert_eq!(
        (f["state"].clone(), f["task"]["failed_attempts"].clone()),
        (json!("running"), json!(1)),
        "{f}"
    );
}

#[test]
fn reports_on_unknown_or_uninvoked_tasks_fail_cleanly() {
    let s = Sandbox::new(config(json!({"w": worker("true", json!({}))})));
    let id = s.ok(&["task", "create", "w"]).trim().to_string();
    let (code, err) = s.fails(&["complete", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("task `0123456789abcdef0123456789abcdef` not found"),
        "{err}"
    );
    let (code, err) = s.fails(&["fail", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("has not been invoked"), "{err}");
    let (code, err) = s.fails(&["complete", &id, "--stats", "{not json"]);
    assert_eq!(code, 2);
    assert!(err.contains("`--stats` is not valid JSON"), "{err}");
    let (code, err) = s.fails(&["complete", &id, "--result", "[1]"]);
    assert_eq!(code, 2);
    assert!(err.contains("`--result` must be a JSON object"), "{err}");
    // Nothing was written by any of them.
    assert_eq!(s.status()["w"]["queued"], json!(1));
    assert_eq!(s.json(&["task", "show", &id])["task"].get("failed_attempts"), None);
    let (code, err) = s.fails(&["task", "show", "nope"]);
    assert_eq!((code, err.contains("task `nope` not found")), (1, true), "{err}");
}

#[test]
fn config_and_usage_errors_exit_2_and_name_the_problem() {
    let s = Sandbox::new(config(json!({"w": worker("true", json!({}))})));
    let (code, err) = s.fails(&["task", "create", "nobody"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown labourer `nobody`"), "{err}");
    let (code, err) = s.fails(&["task", "create", "w", "--payload", "{oops"]);
    assert_eq!(code, 2);
    assert!(err.contains("`--payload` is not valid JSON"), "{err}");
    let (code, _) = s.fails(&["no-such-command"]);
    assert_eq!(code, 2);

    std::fs::write(
        s.path().join("bad.json"),
        r#"{"task_config": {"labourers": {"w": {"command": "true", "max_attempts": 0}}}}"#,
    )
    .expect("write");
    let (code, err) = s.fails(&["--config", "bad.json", "status"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`task_config.labourers.w.max_attempts`: must be at least 1, got 0"),
        "{err}"
    );
    std::fs::write(s.path().join("broken.json"), "{").expect("write");
    let (code, err) = s.fails(&["--config", "broken.json", "status"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not valid JSON"), "{err}");
    let (code, err) = s.fails(&["--config", "missing.json", "status"]);
    assert_eq!(code, 2);
    assert!(err.contains("no config at `missing.json`"), "{err}");
    let (code, err) = s.fails(&["--store", "dynamodb:", "status"]);
    assert_eq!(code, 2);
    assert!(err.contains("AWS build"), "{err}");
    let (code, err) = s.fails(&["--config", "ssm:", "status"]);
    assert_eq!(code, 2);
    assert!(err.contains("AWS build"), "{err}");
    let (code, err) = s.fails(&["--store", "sqlite:other.db", "status"]);
    assert_eq!(code, 2);
    assert!(err.contains("sosw init"), "{err}");
    let (code, err) = s.fails(&["run", "--interval", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("`--interval`"), "{err}");
}

#[test]
fn small_usage_refusals_exit_2_and_name_the_value() {
    let s = Sandbox::new(config(json!({"w": worker("true", json!({}))})));
    let (code, err) = s.fails(&["task", "create", "w", "--count", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'0'") && err.contains("--count"), "{err}");
    assert_eq!(s.status()["w"]["queued"], json!(0));
    let (code, err) = s.fails(&["demo", "--tasks", "4294967295"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("4294967295") && err.contains("--tasks"), "{err}");

    std::fs::write(s.path().join("latin1.json"), b"{\"store\": \"caf\xe9.db\"}").expect("write");
    let (code, err) = s.fails(&["--config", "latin1.json", "status"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("latin1.json") && err.contains("UTF-8"), "{err}");

    let missing = s.path().join("no").join("such").join("x.db");
    let (code, err) = s.fails(&["--store", &format!("sqlite:{}", missing.display()), "init"]);
    assert_eq!(code, 2, "{err}");
    let dir = s.path().join("no").join("such");
    assert!(err.contains(&format!("`{}`", dir.display())), "{err}");
    assert!(!s.path().join("no").exists(), "init created directories");
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let s = Sandbox::new(config(json!({"w": worker("true", json!({}))})));
    s.ok(&["task", "create", "w"]);
    std::fs::write(
        s.path().join("other.json"),
        json!({"task_config": {"labourers": {"v": worker("true", json!({}))}}}).to_string(),
    )
    .expect("write");
    // A store with tasks of a labourer the config does not have: `status` warns about it.
    let out = s.run(&["--config", "other.json", "--store", "sqlite:sosw.db", "status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("WARN"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
}

#[test]
fn json_arguments_are_read_from_files_and_stdin() {
    use std::io::Write;
    use std::process::Stdio;
    // The worker reports nothing itself, so its tasks stay running for `sosw fail` below.
    let s = Sandbox::new(config(
        json!({"w": worker("cat >/dev/null", json!({"report": "self"}))}),
    ));
    // 5 MB: over what one argument may carry on Linux (128 KiB).
    let blob = "x".repeat(5 * 1024 * 1024);
    std::fs::write(s.path().join("big.json"), json!({"blob": blob}).to_string()).expect("write");
    let from_file = s.json(&["task", "create", "w", "--payload", "@big.json"]);
    let shown = s.json(&["task", "show", from_file["task_id"].as_str().expect("id")]);
    let payload: Value = serde_json::from_str(shown["task"]["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(payload["blob"].as_str().map(str::len), Some(blob.len()));

    let stdin_create = |arg: &str, input: &[u8]| {
        let mut child = s
            .cmd(&["--json", "task", "create", "w", "--payload", arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("wait")
    };
    let out = stdin_create("-", json!({"blob": blob}).to_string().as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = stdin_create("@-", br#"{"n": 7}"#);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        created["payload"].as_str().expect("payload").contains("\"n\":7"),
        "{created}"
    );

    let (code, err) = s.fails(&["task", "create", "w", "--payload", "@nope.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("`nope.json`") && err.contains("--payload"), "{err}");

    // --stats and --result too: invoke the task first, then report from a file and from stdin.
    let id = from_file["task_id"].as_str().expect("id").to_string();
    s.ok(&["orchestrate"]);
    std::fs::write(s.path().join("stats.json"), r#"{"rows": 42}"#).expect("write");
    let mut child = s
        .cmd(&["--json", "fail", &id, "--stats", "@stats.json", "--result", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"url": "s3://b/k"}"#)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let row: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (row["stat_rows"].clone(), row["result_url"].clone()),
        (json!(42), json!("s3://b/k"))
    );
    let (code, err) = s.fails(&["fail", &id, "--stats", "-", "--result", "-"]);
    assert_eq!(code, 2);
    assert!(err.contains("stdin was already read"), "{err}");
}

#[test]
fn task_list_streams_pages_as_json_lines_and_a_table() {
    let s = Sandbox::new(config(
        json!({"w": worker("true", json!({})), "v": worker("true", json!({}))}),
    ));
    // More than two of the listing's pages of 1,000.
    s.ok(&["task", "create", "w", "--count", "2300"]);
    s.ok(&["task", "create", "v", "--count", "5"]);
    let rows = s.json_lines(&["task", "list", "--labourer", "w", "--limit", "5000"]);
    assert_eq!(rows.len(), 2300);
    let greenfields: Vec<i64> = rows
        .iter()
        .map(|r| r["greenfield"].as_i64().expect("greenfield"))
        .collect();
    assert!(greenfields.windows(2).all(|p| p[0] < p[1]), "in queue order, each once");
    assert!(rows.iter().all(|r| r["state"] == json!("queued")));
    let ids: std::collections::HashSet<&str> = rows.iter().filter_map(|r| r["task_id"].as_str()).collect();
    assert_eq!(ids.len(), 2300);

    // `--limit` across labourers and pages.
    assert_eq!(s.json_lines(&["task", "list", "--limit", "2303"]).len(), 2303);
    assert_eq!(s.json_lines(&["task", "list", "--limit", "1001"]).len(), 1001);
    assert_eq!(s.json_lines(&["task", "list"]).len(), 100, "the default limit");

    let table = s.ok(&["task", "list", "--state", "queued", "--limit", "3000"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 2305);
    assert!(lines[0].starts_with("TASK_ID "), "{}", lines[0]);
    // Fixed column widths: every row's state starts where the header's STATE does.
    let at = lines[0].find("STATE").expect("STATE column");
    assert!(lines[1..].iter().all(|l| l[at..].starts_with("queued")), "{}", lines[1]);
}

#[test]
fn task_create_with_a_count_writes_in_chunks_and_a_closed_stdout_does_not_stop_it() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let s = Sandbox::new(config(json!({"w": worker("true", json!({}))})));
    // 25,000 tasks: three chunks, one JSON array, every id in creation order.
    let created = s.json(&["task", "create", "w", "--count", "25000"]);
    let ids: Vec<&str> = created
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|t| t["task_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 25_000);
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "in creation order");
    assert_eq!(s.status()["w"]["queued"], json!(25_000));
    // `| head -1`: the reader leaves after one id (the rest, 800 KB, does not fit in the pipe); every task is
    // still created.
    let mut child = s
        .cmd(&["task", "create", "w", "--count", "25000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("one line");
    assert_eq!(first.trim().len(), 32, "{first}");
    let out = child.wait_with_output().expect("exits");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.status()["w"]["queued"], json!(50_000));

    // Ctrl-C between chunks: the creation stops after the chunk being written; every id printed is a task created.
    let s = Sandbox::new(config(json!({"w": worker("true", json!({}))})));
    let mut child = s
        .cmd(&["task", "create", "w", "--count", "10000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert!(lines.next().is_some(), "the first chunk is printed");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let printed = 1 + lines.map_while(Result::ok).count();
    let out = child.wait_with_output().expect("exits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("interrupted: {printed} of the 10000000 tasks were created")),
        "{err}"
    );
    assert!(printed < 10_000_000 && printed % 10_000 == 0, "{printed}");
    assert_eq!(s.status()["w"]["queued"], json!(printed));

    // A chunk that fails (a queue that holds about 15,000 tasks: positions 120,000 apart must stay below now):
    // the chunk before it stays, the JSON printed is the valid list of it, and the error says so.
    let mut c = config(json!({"w": worker("true", json!({}))}));
    c["task_config"]["greenfield_task_step"] = json!(120_000);
    let s = Sandbox::new(c);
    let out = s.run(&["--json", "task", "create", "w", "--count", "25000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("10000 of the 25000 tasks were created"), "{err}");
    let printed: Value = serde_json::from_slice(&out.stdout).expect("a valid JSON array");
    assert_eq!(printed.as_array().map(Vec::len), Some(10_000));
    assert_eq!(s.status()["w"]["queued"], json!(10_000));
}

#[test]
fn a_foreign_sqlite_file_is_not_touched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("theirs.db");
    let db = rusqlite::Connection::open(&path).expect("create");
    db.execute_batch("CREATE TABLE important (x); INSERT INTO important VALUES (42);")
        .expect("fill");
    drop(db);
    let out = Command::new(env!("CARGO_BIN_EXE_sosw"))
        .args(["--store", &format!("sqlite:{}", path.display()), "init"])
        .current_dir(dir.path())
        .env_remove("SOSW_CONFIG")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not create"));
    let db = rusqlite::Connection::open(&path).expect("open");
    let x: i64 = db
        .query_row("SELECT x FROM important", [], |r| r.get(0))
        .expect("still there");
    assert_eq!(x, 42);
    let tables: i64 = db
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(tables, 1, "nothing was added");
}

#[test]
fn the_seed_config_loads_and_lambda_labourers_are_a_clear_error() {
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed-orchestrator.json");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(seed).expect("seed")).expect("json");
    let s = Sandbox::new(config);
    // Status works: the CloudWatch metric cannot be read here, so the labourer counts as Bad, with a warning.
    let out = s.run(&["--json", "status"]);
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (
            status["some_function"]["eco_status"].clone(),
            status["some_function"]["desired"].clone()
        ),
        (json!(0), json!(0))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs sosw's AWS build"));
    let (code, err) = s.fails(&["orchestrate"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("labourer `some_function`") && err.contains("AWS Lambda"),
        "{err}"
    );
}

#[test]
fn a_python_style_config_directory_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join(".config");
    std::fs::create_dir(&cfg).expect("mkdir");
    std::fs::write(
        cfg.join("sosw_essential_config.json"),
        r#"{"task_config": {"labourers": {"w": {"command": "true", "max_simultaneous_invocations": 2}}}}"#,
    )
    .expect("write");
    std::fs::write(
        cfg.join("sosw_orchestrator_config.json"),
        r#"{"task_config": {"labourers": {"w": {"max_simultaneous_invocations": 7}}}}"#,
    )
    .expect("write");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sosw"))
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .current_dir(dir.path())
            .output()
            .expect("runs")
    };
    assert!(run(&["init"]).status.success());
    let out = run(&["--json", "status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        status["w"]["max_simultaneous_invocations"],
        json!(7),
        "the orchestrator's own file wins"
    );
    assert!(
        cfg.join("sosw.db").exists(),
        "the store defaults to sosw.db beside the config"
    );
}

#[test]
fn two_orchestrators_on_one_file_never_invoke_a_task_twice() {
    let s = Sandbox::new(config(
        json!({"w": worker("cat >/dev/null; echo \"$SOSW_TASK_ID\" >> invoked.log", json!({"max_simultaneous_invocations": 1000}))}),
    ));
    s.ok(&["task", "create", "w", "--count", "300"]);
    let spawn = || {
        s.cmd(&["--json", "orchestrate"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().expect("a"), b.wait_with_output().expect("b"));
    assert!(a.status.success() && b.status.success());
    let invoked = |o: &Output| -> u64 {
        let v: Value = serde_json::from_slice(&o.stdout).expect("json");
        v["labourers"]["w"]["invoked"].as_u64().expect("count")
    };
    assert_eq!(invoked(&a) + invoked(&b), 300);
    let log = std::fs::read_to_string(s.path().join("invoked.log")).expect("log");
    let lines: Vec<&str> = log.lines().collect();
    let unique: std::collections::HashSet<&&str> = lines.iter().collect();
    assert_eq!(lines.len(), 300, "every task ran once");
    assert_eq!(unique.len(), 300, "no task ran twice");
    assert_eq!(s.status()["w"]["completed"], json!(300));
}

#[test]
fn the_daemon_runs_until_sigterm_and_finishes_its_pass() {
    let s = Sandbox::new(config(
        json!({"w": worker("cat >/dev/null", json!({"max_simultaneous_invocations": 50}))}),
    ));
    s.ok(&["task", "create", "w", "--count", "120"]);
    let mut daemon = s
        .cmd(&["--json", "run", "--interval", "0.1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // The daemon's own pass reports say when it is done.
    let stdout = daemon.stdout.take().expect("stdout");
    common::wait_until_archived(stdout, "w", 120, std::time::Duration::from_secs(60));
    assert_eq!(s.status()["w"]["closed_completed"], json!(120));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    let status = daemon.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0: {status}");
}

/// A daemon whose stdout reader went away (its pipe closed) keeps running, says so once, and still shuts down
/// cleanly: a pass report is not worth a panic.
#[test]
fn the_daemon_outlives_a_closed_stdout() {
    let s = Sandbox::new(config(json!({"w": {"command": "true"}})));
    let mut daemon = s
        .cmd(&["--json", "run", "--interval", "0.05"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(daemon.stdout.take());
    let stderr = daemon.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let said = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains("stdout is closed")));
    assert!(
        said.is_some(),
        "the daemon says its stdout is closed, and keeps running"
    );
    // It is still running: SIGTERM stops it cleanly.
    assert!(daemon.try_wait().expect("try_wait").is_none(), "still running");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    // Drain the rest of stderr so that the final line has somewhere to go.
    std::thread::spawn(move || lines.for_each(drop));
    let status = daemon.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0: {status}");
}

#[test]
fn run_refuses_a_reachable_address_without_a_token() {
    let s = Sandbox::new(config(json!({"w": {"command": "true"}})));
    let out = s.cmd(&["run", "--listen", "0.0.0.0:0"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve on 0.0.0.0:0 without a token"), "{err}");
    // With a token (here from the environment) it serves.
    let mut daemon = s
        .cmd(&["run", "--listen", "0.0.0.0:0"])
        .env("SOSW_ADMIN_TOKEN", "a-long-enough-secret")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (base, _rest) = common::api_base(daemon.stderr.take().expect("stderr"));
    assert!(!base.contains("a-long-enough-secret"), "{base}");
    let base = base.replace("0.0.0.0", "127.0.0.1");
    assert_eq!(common::http_get(&base, "/api/labourers").0, 401, "a token is needed");
    assert_eq!(common::http_get(&base, "/healthz").0, 200);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    assert!(daemon.wait().expect("wait").success());
}

#[test]
fn token_new_prints_a_token_and_the_hash_the_config_takes() {
    let s = Sandbox::new(config(json!({"w": {"command": "true"}})));
    let v = s.json(&["token", "new", "--scope", "read", "--name", "grafana"]);
    let token = v["token"].as_str().expect("token");
    assert_eq!(token.len(), 64);
    let entry = &v["config_entry"];
    assert_eq!(
        (entry["name"].as_str(), entry["scope"].as_str()),
        (Some("grafana"), Some("read"))
    );
    let again = s.json(&["token", "new", "--scope", "read", "--name", "grafana"]);
    assert_ne!(again["token"], v["token"], "random");
    // The entry loads as a token of the config.
    let mut c = config(json!({"w": {"command": "true"}}));
    c["server"] = json!({"tokens": [entry]});
    let loaded = sosw_core::Config::from_value(&c).expect("loads");
    assert_eq!(
        loaded.server.expect("server").tokens[0].sha256,
        sosw_core::config::token_sha256(token)
    );
    let out = s
        .cmd(&["token", "new", "--scope", "root", "--name", "x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

mod http_worker {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<Value>>>;

    fn serve() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route(
                "/sync",
                post(|Json(v): Json<Value>| async move { Json(json!({"echo": v["n"]})) }),
            )
            .route(
                "/async",
                post({
                    let seen = seen.clone();
                    move |Json(v): Json<Value>| async move {
                        seen.lock().expect("lock").push(v);
                        StatusCode::ACCEPTED
                    }
                }),
            )
            .route(
                "/busy",
                post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "30")]) }),
            )
            .route(
                // Accepts, then reports with the worker SDK to where sosw said (the daemon's `--listen`).
                "/reporting",
                post(|headers: axum::http::HeaderMap, Json(v): Json<Value>| async move {
                    let url = headers
                        .get(sosw_worker::REPORT_URL_HEADER)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string);
                    let token = headers
                        .get(sosw_worker::REPORT_TOKEN_HEADER)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string);
                    let Some(url) = url else {
                        return StatusCode::BAD_REQUEST;
                    };
                    tokio::spawn(async move {
                        let task = sosw_worker::Task::from_value(v).expect("a task event");
                        let n: i64 = task.get("n").expect("n");
                        sosw_worker::Reporter::Http { url, token }
                            .completed(task.task_id(), &sosw_worker::Report::new().stat("n", n))
                            .await
                            .expect("reported");
                    });
                    StatusCode::ACCEPTED
                }),
            );
        std::thread::spawn(move || rt.block_on(async move { axum::serve(listener, app).await.expect("serve") }));
        (format!("http://{addr}"), seen)
    }

    #[test]
    fn http_workers_report_to_the_daemon_over_http() {
        let (base, _) = serve();
        let s = Sandbox::new(config(json!({
            "rep": {"url": format!("{base}/reporting"), "max_simultaneous_invocations": 10}
        })));
        for n in 0..3 {
            s.ok(&["task", "create", "rep", "--payload", &json!({"n": n}).to_string()]);
        }
        let mut daemon = s
            .cmd(&["--json", "run", "--interval", "0.1", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = daemon.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("sosw serving worker reports on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the daemon says where it serves reports");
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/report"),
            "{url}"
        );

        // The daemon's own pass reports say when the three reports were archived.
        let stdout = daemon.stdout.take().expect("stdout");
        common::wait_until_archived(stdout, "rep", 3, std::time::Duration::from_secs(60));
        let closed = s.json_lines(&["task", "list", "--state", "closed"]);
        let mut stats: Vec<i64> = closed.iter().map(|t| t["stat_n"].as_i64().expect("stat_n")).collect();
        stats.sort_unstable();
        assert_eq!(stats, vec![0, 1, 2]);

        // The same server answers the API and /metrics (no token configured: open, on loopback).
        let base = url.trim_end_matches("/report");
        let (status, body) = common::http_get(base, "/api/labourers");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["labourers"][0]["labourer_id"], "rep");
        assert_eq!(v["labourers"][0]["counts"]["closed_completed"], 3);
        let (status, metrics) = common::http_get(base, "/metrics");
        assert_eq!(status, 200);
        assert!(
            metrics.contains("sosw_tasks{labourer=\"rep\",state=\"closed\"} 3"),
            "{metrics}"
        );
        assert!(
            metrics.contains("sosw_pass_duration_seconds_count{essential=\"orchestrator\"}"),
            "{metrics}"
        );
        if let Some(promtool) = sosw_testkit::service("SOSW_TEST_PROMTOOL") {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("scrape.txt");
            std::fs::write(&path, &metrics).expect("write");
            let out = std::process::Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(std::fs::File::open(&path).expect("open"))
                .output()
                .expect("promtool");
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        // Refusals carry their reason and status.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt
            .block_on(
                sosw_worker::Reporter::Http {
                    url: url.clone(),
                    token: None,
                }
                .completed("0123456789abcdef0123456789abcdef", &sosw_worker::Report::new()),
            )
            .expect_err("unknown task");
        assert!(
            err.to_string().contains("404") && err.to_string().contains("not found"),
            "{err}"
        );

        let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
        assert!(daemon.wait().expect("wait").success());
    }

    #[test]
    fn http_workers_sync_async_and_throttled() {
        let (base, seen) = serve();
        let s = Sandbox::new(config(json!({
            "sync": {"url": format!("{base}/sync"), "mode": "sync"},
            "async": {"url": format!("{base}/async")},
            "busy": {"url": format!("{base}/busy")}
        })));
        let sync = s.json(&["task", "create", "sync", "--payload", r#"{"n": 5}"#]);
        let asynchronous = s.json(&["task", "create", "async", "--payload", r#"{"n": 6}"#]);
        let busy = s.json(&["task", "create", "busy"]);
        let report = s.json(&["orchestrate"]);
        assert_eq!(report["labourers"]["sync"]["finished_sync"], json!(1));
        assert_eq!(report["labourers"]["async"]["invoked"], json!(1));
        assert_eq!(report["labourers"]["busy"]["throttled"], json!(1));

        let t = s.json(&["task", "show", sync["task_id"].as_str().expect("id")]);
        assert_eq!(
            (t["state"].clone(), t["task"]["result_echo"].clone()),
            (json!("completed"), json!(5))
        );

        let async_id = asynchronous["task_id"].as_str().expect("id");
        assert_eq!(seen.lock().expect("lock")[0]["task_id"], json!(async_id));
        assert_eq!(s.json(&["task", "show", async_id])["state"], json!("running"));
        s.ok(&["complete", async_id]);
        assert_eq!(s.json(&["task", "show", async_id])["state"], json!("completed"));

        let b = s.json(&["task", "show", busy["task_id"].as_str().expect("id")]);
        assert_eq!(
            (
                b["state"].clone(),
                b["task"]["attempts"].clone(),
                b["task"]["greenfield"].clone()
            ),
            (json!("queued"), json!(0), json!(2000))
        );
    }
}
