//! What every end-to-end test of the `sosw` binary needs: the command, on a config in a directory.
#![allow(dead_code)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

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
