//! `sosw backup PATH` and `sosw check`: looking after the SQLite store.
//!
//! Both work beside a running daemon (each reads one snapshot on its own connection) and need only the store: the
//! config is read if it exists, for the store's location and `greenfield_invocation_delta`.
//!
//! Exit codes: 0 done and clean; 1 a problem was found, or the store could not be read; 2 the command cannot be
//! carried out as given (an existing PATH without `--force`, the store itself as PATH, a DynamoDB store).

use crate::app::{load_config, store_spec, StoreSpec};
use crate::cli::Global;
use crate::output::print_json;
use crate::UsageError;
use anyhow::{Context, Result};
use serde_json::json;
use sosw_core::greenfield::DEFAULT_INVOCATION_DELTA;
use sosw_core::ports::StoreError;
use sosw_core::{Clock, Config, Essential, SystemClock};
use sosw_sqlite::SqliteStore;
use std::path::{Path, PathBuf};

/// The SQLite store of this command line, and the config if there is one.
async fn open(g: &Global, command: &str) -> Result<(SqliteStore, PathBuf, Option<Config>)> {
    let config = match (&g.store, g.config.exists()) {
        (Some(_), false) => None,
        _ => Some(load_config(&g.config, Essential::Orchestrator).await?),
    };
    let path = match store_spec(g, config.as_ref())? {
        StoreSpec::Sqlite(path) => path,
        StoreSpec::DynamoDb { .. } => {
            return Err(UsageError(format!(
                "`sosw {command}` works on the SQLite store; for DynamoDB use its point-in-time recovery and \
                 on-demand backups"
            ))
            .into())
        }
    };
    let store = SqliteStore::open(&path).map_err(|e| match e {
        StoreError::Schema(m) => anyhow::Error::from(UsageError(m)),
        other => anyhow::Error::from(other).context(format!("opening the store `{}`", path.display())),
    })?;
    Ok((store, path, config))
}

pub async fn backup(g: &Global, dest: &Path, force: bool) -> Result<()> {
    let (store, path, _) = open(g, "backup").await?;
    let report = store.backup_to(dest, force).await.map_err(|e| match e {
        StoreError::Invalid(m) => anyhow::Error::from(UsageError(m)),
        other => anyhow::Error::from(other).context(format!("backing up `{}`", path.display())),
    })?;
    if g.json {
        print_json(&json!({
            "store": path.display().to_string(),
            "backup": report.path.display().to_string(),
            "bytes": report.bytes,
            "tasks": {"live": report.live, "retry": report.retry, "closed": report.closed},
            "meta": report.meta,
        }));
    } else {
        outln!(
            "backed up `{}` to `{}`: {} bytes; {} live, {} retry, {} closed tasks; {} meta events",
            path.display(),
            report.path.display(),
            report.bytes,
            report.live,
            report.retry,
            report.closed,
            report.meta
        );
    }
    Ok(())
}

pub async fn check(g: &Global, quick: bool) -> Result<()> {
    let (store, path, config) = open(g, "check").await?;
    let delta = config.as_ref().map_or(DEFAULT_INVOCATION_DELTA, |c| c.greenfield.delta);
    let report = store
        .check(SystemClock.now(), delta, quick)
        .await
        .with_context(|| format!("checking `{}`", path.display()))?;
    let found = report.problems.len() as u64 + report.omitted;
    if g.json {
        print_json(&json!({
            "store": path.display().to_string(),
            "clean": report.clean(),
            "integrity": report.integrity,
            "rows": report.rows,
            "problems": report.problems,
            "omitted": report.omitted,
        }));
    } else {
        let r = report.rows;
        outln!(
            "checked `{}` ({} and the store's invariants): {} live, {} retry, {} closed tasks; {} meta events",
            path.display(),
            report.integrity.as_deref().unwrap_or("no integrity check"),
            r.live,
            r.retry,
            r.closed,
            r.meta
        );
        for p in &report.problems {
            outln!("problem: {p}");
        }
        if report.omitted > 0 {
            outln!("... and {} more problems", report.omitted);
        }
        if report.clean() {
            outln!("no problems found");
        }
    }
    if found > 0 {
        anyhow::bail!("{found} problem(s) found in `{}`", path.display());
    }
    Ok(())
}
