//! `sosw --store dynamodb:ENDPOINT …` end to end against a local moto_server (the AWS build:
//! `cargo test -p sosw-cli --features aws --test dynamodb`, with `SOSW_TEST_DYNAMODB` set).
#![cfg(feature = "aws")]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};

mod common;

/// `sosw --json` in `dir`, with `dir/sosw.json` as its config.
fn sosw_in(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sosw"));
    c.arg("--json")
        .current_dir(dir)
        .env("SOSW_CONFIG", dir.join("sosw.json"));
    c
}

/// Runs `cmd` with `args`; it must succeed; its JSON output (or null).
fn json_of(mut cmd: Command, args: &[&str]) -> Value {
    let out = cmd.args(args).output().expect("sosw runs");
    assert!(
        out.status.success(),
        "sosw {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn endpoint() -> Option<String> {
    sosw_testkit::service("SOSW_TEST_DYNAMODB")
}

#[test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
fn sosw_runs_on_dynamodb() {
    let Some(endpoint) = endpoint() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let p = format!("cli{}_", std::process::id());
    let config = json!({
        "store": format!("dynamodb:{endpoint}"),
        "task_config": {
            "dynamo_db_config": {"table_name": format!("{p}sosw_tasks")},
            "sosw_closed_tasks_table": format!("{p}sosw_closed_tasks"),
            "sosw_retry_tasks_table": format!("{p}sosw_retry_tasks"),
            "labourers": {"w": {"command": ["sh", "-c", "cat >/dev/null; echo '{\"ok\": true}'"], "max_simultaneous_invocations": 5}}
        },
        "meta_handler_config": {"dynamo_db_config": {"table_name": format!("{p}sosw_tasks_meta")}},
        "jobs_table": format!("{p}sosw_jobs"),
        "labourers_table": format!("{p}sosw_labourers"),
        "job_schema": {"chunkable_attrs": ["store"]}
    });
    std::fs::write(dir.path().join("sosw.json"), config.to_string()).expect("config");
    let sosw = |args: &[&str]| {
        let mut c = sosw_in(dir.path());
        c.env_remove("SOSW_STORE");
        json_of(c, args)
    };
    let ready = sosw(&["init"]);
    assert!(
        ready["ready"]
            .as_str()
            .expect("ready")
            .contains(&format!("{p}sosw_tasks")),
        "{ready}"
    );
    sosw(&["init"]);
    let task = sosw(&["task", "create", "w", "--payload", r#"{"doc": 1}"#]);
    let id = task["task_id"].as_str().expect("id").to_string();
    assert_eq!(sosw(&["status"])["w"]["queued"], json!(1));
    assert_eq!(sosw(&["orchestrate"])["labourers"]["w"]["invoked"], json!(1));
    assert_eq!(sosw(&["scavenge"])["labourers"]["w"]["archived"], json!(1));
    let shown = sosw(&["task", "show", &id]);
    assert_eq!(
        (shown["state"].clone(), shown["task"]["result_ok"].clone()),
        (json!("closed"), json!(true))
    );
    let actions: Vec<&str> = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, vec!["created", "invoked", "marked_as_completed", "archived"]);
    std::fs::write(
        dir.path().join("job.json"),
        r#"{"lambda_name": "w", "isolate_stores": true, "stores": ["a", "b", "c"]}"#,
    )
    .expect("job");
    let job = sosw(&["schedule", "job.json"]);
    assert_eq!(job["created"], json!(3));
    assert_eq!(
        sosw(&["job", "show", job["job_id"].as_str().expect("id")])["state"],
        json!("finished")
    );
    assert_eq!(sosw(&["status"])["w"]["queued"], json!(3));
    assert_eq!(
        sosw(&["labourer", "rescan"]),
        json!({"labourers": [{"labourer_id": "w", "configured": true}]})
    );

    // The service mode over the same tables: the API and the metrics say what `status` says.
    sosw(&["labourer", "pause", "w", "--reason", "checking the dashboard"]);
    let mut daemon = sosw_in(dir.path());
    daemon.env_remove("SOSW_STORE");
    let mut daemon = daemon
        .args(["run", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (base, _stderr) = common::api_base(daemon.stderr.take().expect("stderr"));
    let (status, body) = common::http_get(&base, "/api/labourers/w");
    assert_eq!(status, 200, "{body}");
    let w: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(w["counts"]["queued"], json!(3));
    assert_eq!(w["held_back"][0]["code"], json!("paused"));
    let (status, metrics) = common::http_get(&base, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sosw_tasks{labourer=\"w\",state=\"queued\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sosw_held_back{labourer=\"w\",reason=\"paused\"} 1"),
        "{metrics}"
    );
    assert_eq!(common::http_get(&base, "/readyz").0, 200);
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
fn lambda_labourers_are_invoked_in_the_aws_build() {
    let Some(endpoint) = endpoint() else { return };
    let Some(python) = sosw_testkit::service("SOSW_TEST_PYTHON_SOSW") else {
        return;
    };
    let name = format!("cliworker{}", std::process::id());
    let out = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sosw-aws/tests/python/moto_lambda.py"
        ))
        .args([&endpoint, &name])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let arn = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("sosw.db");
    let config = json!({"task_config": {"labourers": {"lam": {"arn": arn, "max_simultaneous_invocations": 2}}}});
    std::fs::write(dir.path().join("sosw.json"), config.to_string()).expect("config");
    let sosw = |args: &[&str]| {
        let mut c = sosw_in(dir.path());
        c.env("SOSW_STORE", format!("sqlite:{}", db.display()))
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_REGION", "us-east-1");
        json_of(c, args)
    };
    sosw(&["init"]);
    let id = sosw(&["task", "create", "lam", "--payload", r#"{"n": 1}"#])["task_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(sosw(&["orchestrate"])["labourers"]["lam"]["invoked"], json!(1));
    assert_eq!(sosw(&["task", "show", &id])["state"], json!("running"));
}

#[test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
fn an_unreadable_aws_config_is_an_error_not_an_empty_config() {
    let Some(endpoint) = endpoint() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    // `sosw status` with its config in DynamoDB table `table` at `endpoint`.
    let status = |table: &str, endpoint: &str| {
        Command::new(env!("CARGO_BIN_EXE_sosw"))
            .args(["--config", &format!("dynamodb:{table}"), "status"])
            .current_dir(dir.path())
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_REGION", "us-east-1")
            .env_remove("SOSW_CONFIG")
            .output()
            .expect("sosw runs")
    };
    let out = status("no_such_config_table", &endpoint);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot be read from DynamoDB table `no_such_config_table`"),
        "{err}"
    );

    // AWS that cannot be reached is not the config's fault: exit 1, and the message says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nobody = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let out = status("config", &nobody);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot be read from DynamoDB table `config`") && err.contains("now"),
        "{err}"
    );
}

/// A loopback HTTP server that answers every request with `status` and no body, recording each request line: a
/// Lambda stub (202 to an asynchronous `Invoke`), or a stand-in for the instance metadata service.
struct Stub {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Stub {
    fn start(status: u16) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let seen = seen.clone();
                std::thread::spawn(move || Stub::serve(conn, status, &seen));
            }
        });
        Stub { url, requests }
    }

    /// Requests on one connection, kept alive, until the client closes it.
    fn serve(mut conn: TcpStream, status: u16, seen: &Mutex<Vec<String>>) {
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            seen.lock().expect("lock").push(request_line.trim_end().to_string());
            let reply = format!("HTTP/1.1 {status} Stub\r\nContent-Length: 0\r\nx-amzn-RequestId: stub\r\n\r\n");
            if conn.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

/// Issue #12: `--store dynamodb:URL` sent every AWS client to that URL, so Lambda invocations went to the DynamoDB
/// endpoint and came back "uncertain". The store URL sets DynamoDB's endpoint only; Lambda goes where the SDK's
/// standard configuration says (`AWS_ENDPOINT_URL_LAMBDA`).
#[test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
fn the_store_url_sets_dynamodbs_endpoint_only() {
    let Some(endpoint) = endpoint() else { return };
    let lambda = Stub::start(202);
    let dir = tempfile::tempdir().expect("temp dir");
    let p = format!("ep{}_", std::process::id());
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:stub";
    let config = json!({
        "task_config": {
            "dynamo_db_config": {"table_name": format!("{p}sosw_tasks")},
            "sosw_closed_tasks_table": format!("{p}sosw_closed_tasks"),
            "sosw_retry_tasks_table": format!("{p}sosw_retry_tasks"),
            "labourers": {"lam": {"arn": arn, "max_simultaneous_invocations": 3}}
        },
        "meta_handler_config": {"dynamo_db_config": {"table_name": format!("{p}sosw_tasks_meta")}},
        "jobs_table": format!("{p}sosw_jobs"),
        "labourers_table": format!("{p}sosw_labourers")
    });
    std::fs::write(dir.path().join("sosw.json"), config.to_string()).expect("config");
    let sosw = |args: &[&str]| {
        let mut c = sosw_in(dir.path());
        c.env("SOSW_STORE", format!("dynamodb:{endpoint}"))
            .env("AWS_ENDPOINT_URL_LAMBDA", &lambda.url)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_PROFILE");
        json_of(c, args)
    };
    sosw(&["init"]);
    for n in 0..3 {
        sosw(&["task", "create", "lam", "--payload", &format!(r#"{{"n": {n}}}"#)]);
    }
    let pass = sosw(&["orchestrate"]);
    assert_eq!(pass["labourers"]["lam"]["invoked"], json!(3), "{pass}");
    assert_eq!(pass["labourers"]["lam"]["uncertain"], json!(0), "{pass}");
    let invocations = lambda.requests();
    assert_eq!(invocations.len(), 3, "{invocations:?}");
    assert!(
        invocations
            .iter()
            .all(|r| r.starts_with("POST /2015-03-31/functions/") && r.contains("/invocations")),
        "{invocations:?}"
    );
    assert_eq!(sosw(&["status"])["lam"]["running"], json!(3));
}

/// Issue #12: the AWS build with an SQLite store and no AWS labourer, metric or notification loaded the AWS
/// configuration anyway: every command waited on the instance metadata service for a region and printed its
/// warnings. Now it never asks AWS anything (a stand-in metadata service counts the attempts).
#[test]
fn an_sqlite_store_with_local_labourers_never_asks_aws() {
    let imds = Stub::start(404);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = json!({"task_config": {"labourers": {"p": {"command": "true", "max_simultaneous_invocations": 2}}}});
    std::fs::write(dir.path().join("sosw.json"), config.to_string()).expect("config");
    let db = dir.path().join("sosw.db");
    let run = |args: &[&str]| {
        let mut c = sosw_in(dir.path());
        c.env("SOSW_STORE", format!("sqlite:{}", db.display()))
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)
            .env("AWS_CONFIG_FILE", dir.path().join("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("no-aws-credentials"));
        for var in [
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_PROFILE",
            "AWS_ACCESS_KEY_ID",
            "AWS_ENDPOINT_URL",
        ] {
            c.env_remove(var);
        }
        let out = c.args(args).output().expect("sosw runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "sosw {args:?}: {stderr}");
        stderr
    };
    for args in [&["init"][..], &["task", "create", "p"], &["orchestrate"], &["status"]] {
        let stderr = run(args);
        assert!(
            !stderr.contains("IMDS") && !stderr.contains("region"),
            "sosw {args:?} said: {stderr}"
        );
    }
    assert_eq!(imds.requests(), Vec::<String>::new(), "the metadata service was asked");
}
