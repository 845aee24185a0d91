//! What every end-to-end test of the `sosw` binary needs: the command, on a config in a directory.
#![allow(dead_code)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// A directory with a config and an initialised store, and `sosw` run in it.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new(config: Value) -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("sosw.json"),
            serde_json::to_string_pretty(&config).expect("json"),
        )
        .expect("write config");
        let s = Sandbox { dir };
        s.ok(&["init"]);
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        sosw(self.path(), args)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("sosw runs")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sosw {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// The JSON lines a `--json` listing writes.
    pub fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.ok(&all)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// Runs a failing command; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let (code, _, stderr) = self.fails_full(args);
        (code, stderr)
    }

    /// (exit code, stdout, stderr) of a command that must fail.
    pub fn fails_full(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.run(args);
        assert!(!out.status.success(), "sosw {args:?} should fail");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    pub fn status(&self) -> Value {
        self.json(&["status"])
    }
}

// A deadline on a real daemon: the monotonic clock (`clippy.toml`).
#[allow(clippy::disallowed_methods)]
/// Reads the pass reports a `sosw --json run` daemon prints (one JSON object a line) until its Scavenger has
/// archived `count` tasks of `labourer` in all, or `within` runs out (a failure naming what it saw).
pub fn wait_until_archived(stdout: std::process::ChildStdout, labourer: &str, count: u64, within: std::time::Duration) {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(report) = serde_json::from_str::<Value>(&line) {
                if tx.send(report).is_err() {
                    return;
                }
            }
        }
    });
    let deadline = std::time::Instant::now() + within;
    let mut archived = 0;
    while archived < count {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(report) => {
                archived += report["scavenger"]["labourers"][labourer]["archived"]
                    .as_u64()
                    .unwrap_or(0)
            }
            Err(e) => panic!("{archived} of {count} tasks of `{labourer}` archived within {within:?}: {e}"),
        }
    }
}

/// `sosw ARGS` in `dir`, on `dir/sosw.json`, with no store or log settings inherited from the environment.
pub fn sosw(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sosw"));
    c.args(args)
        .current_dir(dir)
        .env("SOSW_CONFIG", dir.join("sosw.json"))
        .env_remove("SOSW_STORE")
        .env_remove("RUST_LOG");
    c
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    sosw(dir, args).output().expect("sosw runs")
}

/// `sosw --json ARGS`, which must succeed, parsed.
pub fn ok_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(dir, &all);
    assert!(
        out.status.success(),
        "sosw {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// `GET base + path` on a plain HTTP/1.1 connection: the status and the body.
pub fn http_get(base: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    write!(c, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    c.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // Small bodies come whole or in one chunk.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.split_once("\r\n")
            .map_or(body, |(_, rest)| rest)
            .trim_end_matches("\r\n0\r\n\r\n")
            .to_string()
    } else {
        body.to_string()
    };
    (status, body)
}

/// Reads `sosw run`'s stderr up to the line saying where it serves; returns the server's base URL (`http://ADDR`)
/// and the rest of stderr, for the caller to drain or drop.
pub fn api_base(
    stderr: std::process::ChildStderr,
) -> (String, std::io::Lines<std::io::BufReader<std::process::ChildStderr>>) {
    use std::io::BufRead;
    const SERVING: &str = "sosw serving the API on ";
    let mut lines = std::io::BufReader::new(stderr).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with(SERVING))
        .expect("sosw run says where it serves");
    let base = line[SERVING.len()..]
        .split("/api")
        .next()
        .unwrap_or_default()
        .to_string();
    (base, lines)
}
