//! The process invoker against real child processes.

use async_trait::async_trait;
use serde_json::{json, Value};
use sosw_core::config::{ProcessSpec, ReportMode};
use sosw_core::decide::FailureKind;
use sosw_core::ports::{InvokeOutcome, Invoker, StoreResult, TaskReporter};
use sosw_core::task::ReportKind;
use sosw_core::WorkerReport;
use sosw_local::process::{ProcessInvoker, Supervisor};
use sosw_testkit::fakes::sample_task;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct Reports(Mutex<Vec<(String, ReportKind, WorkerReport)>>);

#[async_trait]
impl TaskReporter for Reports {
    async fn report(&self, task_id: &str, kind: ReportKind, report: WorkerReport) -> StoreResult<()> {
        self.0.lock().expect("lock").push((task_id.to_string(), kind, report));
        Ok(())
    }
}

impl Reports {
    fn only(&self) -> (String, ReportKind, Value) {
        let all = self.0.lock().expect("lock");
        assert_eq!(all.len(), 1, "exactly one report: {all:?}");
        let (id, kind, r) = all[0].clone();
        (id, kind, Value::Object(r.result))
    }
}

fn spec(script: &str) -> ProcessSpec {
    ProcessSpec {
        command: vec!["sh".into(), "-c".into(), script.into()],
        report: ReportMode::ExitCode,
        env: vec![("FROM_CONFIG".into(), "yes".into())],
        cwd: None,
        result_limit: 1024,
        timeout_secs: 30.0,
    }
}

async fn run(spec: ProcessSpec, event: &str) -> Arc<Reports> {
    let reports = Arc::new(Reports::default());
    let sup = Supervisor::new(reports.clone());
    let inv = ProcessInvoker::new(
        "w",
        spec,
        vec![("SOSW_CONFIG".into(), "/x/sosw.json".into())],
        sup.clone(),
    )
    .expect("invoker");
    assert_eq!(
        inv.invoke(&sample_task("t1"), event).await.expect("spawned"),
        InvokeOutcome::Accepted
    );
    assert_eq!(sup.drain(Duration::from_secs(30)).await, 0, "the worker finished");
    reports
}

#[tokio::test]
async fn the_event_goes_to_stdin_and_json_stdout_is_the_result() {
    let r = run(spec("cat"), r#"{"task_id": "t1", "n": 5}"#).await;
    assert_eq!(
        r.only(),
        ("t1".into(), ReportKind::Completed, json!({"task_id": "t1", "n": 5}))
    );
}

#[tokio::test]
async fn the_task_id_and_configured_env_are_passed() {
    let r = run(spec(r#"printf '{"id": "%s", "l": "%s", "c": "%s", "f": "%s"}' "$SOSW_TASK_ID" "$SOSW_LABOURER_ID" "$SOSW_CONFIG" "$FROM_CONFIG""#), "{}").await;
    assert_eq!(
        r.only().2,
        json!({"id": "t1", "l": "w", "c": "/x/sosw.json", "f": "yes"})
    );
}

/// A worker gets the report token of its invocation, and none of the server's secrets — even where they would
/// reach it through the daemon's environment (here: the labourer's `env`, which is merged the same way).
#[tokio::test]
async fn a_worker_gets_its_report_token_and_never_the_servers_secrets() {
    #[derive(Debug)]
    struct Signer;
    impl sosw_core::ports::ReportSigner for Signer {
        fn sign(&self, task_id: &str, invocation: sosw_core::Invocation) -> String {
            format!("token-of-{task_id}-{}", invocation.number())
        }
    }
    let mut s = spec(
        r#"printf '{"token": "%s", "admin": "%s", "secret": "%s"}' "$SOSW_REPORT_TOKEN" "${SOSW_ADMIN_TOKEN-unset}" "${SOSW_REPORT_SECRET-unset}""#,
    );
    s.env.push(("SOSW_ADMIN_TOKEN".into(), "leaked".into()));
    let reports = Arc::new(Reports::default());
    let sup = Supervisor::new(reports.clone());
    let inv = ProcessInvoker::new(
        "w",
        s,
        vec![("SOSW_REPORT_SECRET".into(), "leaked".into())],
        sup.clone(),
    )
    .expect("invoker")
    .with_signer(Some(Arc::new(Signer)));
    let mut task = sample_task("t1");
    (task.attempts, task.refunded_attempts) = (3, 2);
    assert_eq!(inv.invoke(&task, "{}").await.expect("spawned"), InvokeOutcome::Accepted);
    assert_eq!(sup.drain(Duration::from_secs(30)).await, 0, "the worker finished");
    assert_eq!(
        reports.only().2,
        json!({"token": "token-of-t1-5", "admin": "unset", "secret": "unset"})
    );
}

#[tokio::test]
async fn plain_stdout_is_kept_capped() {
    let mut s = spec("cat >/dev/null; printf 'hello %.0s' $(seq 1 500)");
    s.result_limit = 20;
    let r = run(s, "{}").await;
    let (_, kind, result) = r.only();
    assert_eq!(kind, ReportKind::Completed);
    assert_eq!(result["stdout"], json!("hello hello hello he"));
    assert_eq!(result["stdout_truncated"], json!(true));
}

#[tokio::test]
async fn a_non_zero_exit_reports_failure_with_stderr() {
    let r = run(spec("echo 'disk on fire' >&2; exit 3"), "{}").await;
    let (_, kind, result) = r.only();
    assert_eq!(kind, ReportKind::Failed);
    assert_eq!(result, json!({"exit_code": 3, "stderr": "disk on fire"}));
}

#[tokio::test]
async fn a_worker_past_its_timeout_is_killed_and_reported_failed() {
    let mut s = spec("sleep 30");
    s.timeout_secs = 0.2;
    let r = run(s, "{}").await;
    let (_, kind, result) = r.only();
    assert_eq!(kind, ReportKind::Failed);
    assert_eq!(result["timeout"], json!(0.2));
}

#[tokio::test]
async fn a_worker_that_ignores_a_large_event_does_not_block() {
    let event = format!(r#"{{"blob": "{}"}}"#, "x".repeat(1 << 20));
    let r = run(spec("exit 0"), &event).await;
    assert_eq!(r.only().1, ReportKind::Completed);
}

#[tokio::test]
async fn self_reporting_workers_are_reaped_but_not_reported() {
    let mut s = spec("exit 1");
    s.report = ReportMode::SelfReport;
    let r = run(s, "{}").await;
    assert!(r.0.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn invoke_does_not_wait_for_the_worker() {
    let reports = Arc::new(Reports::default());
    let sup = Supervisor::new(reports.clone());
    let inv = ProcessInvoker::new("w", spec("read line; echo done"), vec![], sup.clone()).expect("invoker");
    // The worker waits for a line on stdin that the event (no newline) never completes... until stdin closes.
    inv.invoke(&sample_task("a"), "{}").await.expect("spawned");
    inv.invoke(&sample_task("b"), "{}").await.expect("spawned");
    assert_eq!(sup.drain(Duration::from_secs(30)).await, 0);
    assert_eq!(reports.0.lock().expect("lock").len(), 2);
}

#[test]
fn a_detached_worker_gets_its_whole_event_and_outlives_the_runtime_that_started_it() {
    let dir = tempfile::tempdir().expect("dir");
    let fifo = dir.path().join("out");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    // Whatever happens below, a worker left waiting to open the FIFO is let through when the test ends.
    struct Unblock(std::path::PathBuf);
    impl Drop for Unblock {
        fn drop(&mut self) {
            use std::os::unix::fs::OpenOptionsExt;
            const O_NONBLOCK: i32 = 0o4000; // Linux
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(O_NONBLOCK)
                .open(&self.0);
        }
    }
    let _unblock = Unblock(fifo.clone());
    // 1 MiB: more than a pipe holds. The worker writes to stdout and stderr before it hands the event back: a
    // broken pipe there would kill it.
    let event = json!({"blob": "x".repeat(1 << 20)}).to_string();
    let reports = Arc::new(Reports::default());
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let sup = Supervisor::detached(reports.clone());
            let mut s = spec(r#"data=$(cat); echo "$data"; echo "$data" >&2; printf '%s' "$data" > "$OUT""#);
            s.env.push(("OUT".into(), fifo.display().to_string()));
            let inv = ProcessInvoker::new("w", s, vec![], sup.clone()).expect("invoker");
            assert_eq!(
                inv.invoke(&sample_task("a"), &event).await.expect("spawned"),
                InvokeOutcome::Accepted
            );
            assert_eq!(sup.active(), 0, "a detached worker is not watched");
        });
    }
    // The runtime, the supervisor and every handle on the worker are gone. Opening the FIFO waits for the worker.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(std::fs::read_to_string(&fifo)));
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the worker handed its event back")
        .expect("read");
    assert_eq!(got.len(), event.len());
    assert!(got == event, "the same bytes");
}

#[tokio::test]
async fn drain_gives_up_after_the_grace_period() {
    let reports = Arc::new(Reports::default());
    let sup = Supervisor::new(reports.clone());
    let inv = ProcessInvoker::new("w", spec("sleep 30"), vec![], sup.clone()).expect("invoker");
    inv.invoke(&sample_task("a"), "{}").await.expect("spawned");
    assert_eq!(sup.active(), 1);
    assert_eq!(
        sup.drain(Duration::from_millis(50)).await,
        1,
        "still running, left alone"
    );
    assert!(reports.0.lock().expect("lock").is_empty());
}

#[test]
fn a_missing_program_is_a_config_error() {
    let sup = Supervisor::new(Arc::new(Reports::default()));
    let mut s = spec("true");
    s.command = vec!["definitely-not-a-sosw-worker".into()];
    let err = ProcessInvoker::new("w", s.clone(), vec![], sup.clone()).expect_err("refused");
    assert!(err.contains("`definitely-not-a-sosw-worker` was not found"), "{err}");
    s.command = vec!["./nope.sh".into()];
    assert!(ProcessInvoker::new("w", s, vec![], sup).is_err());
}

#[tokio::test]
async fn a_program_that_cannot_start_is_the_labourers_fault() {
    let dir = tempfile_dir();
    let script = dir.join("worker.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write");
    let sup = Supervisor::new(Arc::new(Reports::default()));
    let mut s = spec("true");
    s.command = vec![script.display().to_string()];
    // Exists but is not executable: found at config time, fails at spawn.
    let inv = ProcessInvoker::new("w", s, vec![], sup).expect("invoker");
    let err = inv.invoke(&sample_task("a"), "{}").await.expect_err("cannot spawn");
    // Every task would fail the same way: held back, no attempt spent, nothing closed as dead.
    assert_eq!(err.kind, FailureKind::Labourer);
    assert!(err.message.contains("cannot start"), "{}", err.message);
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sosw-local-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
