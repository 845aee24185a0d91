//! The schema and its migrations, versioned by `PRAGMA user_version`.

use super::map_err;
use rusqlite::Connection;
use sosw_core::ports::{StoreError, StoreResult};
use std::path::Path;

/// The version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 7;

/// Migration `i` takes the schema from version `i` to `i + 1`.
// The task tables are WITHOUT ROWID: each row lives once, in the b-tree of its `task_id` (a rowid table would add
// a second b-tree for the text primary key, and every move between tables would pay for both).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tasks (
    task_id         TEXT PRIMARY KEY NOT NULL,
    labourer_id     TEXT NOT NULL,
    created_at      REAL NOT NULL,
    greenfield      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    payload         TEXT NOT NULL,
    completed_at    INTEGER,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    stats           TEXT NOT NULL DEFAULT '{}',
    result          TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;
-- sosw_tasks_greenfield: HASH labourer_id, RANGE greenfield.
CREATE INDEX tasks_greenfield ON tasks (labourer_id, greenfield);
CREATE INDEX tasks_completed ON tasks (labourer_id, completed_at) WHERE completed_at IS NOT NULL;

CREATE TABLE retry_tasks (
    task_id             TEXT PRIMARY KEY NOT NULL,
    labourer_id         TEXT NOT NULL,
    created_at          REAL NOT NULL,
    greenfield          INTEGER NOT NULL,
    attempts            INTEGER NOT NULL,
    payload             TEXT NOT NULL,
    completed_at        INTEGER,
    failed_attempts     INTEGER NOT NULL DEFAULT 0,
    stats               TEXT NOT NULL DEFAULT '{}',
    result              TEXT NOT NULL DEFAULT '{}',
    desired_launch_time INTEGER NOT NULL
) WITHOUT ROWID;
-- labourer_id_greenfield (which, as in sosw, is on desired_launch_time).
CREATE INDEX retry_tasks_launch ON retry_tasks (labourer_id, desired_launch_time);

CREATE TABLE closed_tasks (
    task_id                 TEXT PRIMARY KEY NOT NULL,
    labourer_id             TEXT NOT NULL,
    created_at              REAL NOT NULL,
    greenfield              INTEGER NOT NULL,
    attempts                INTEGER NOT NULL,
    payload                 TEXT NOT NULL,
    completed_at            INTEGER,
    failed_attempts         INTEGER NOT NULL DEFAULT 0,
    stats                   TEXT NOT NULL DEFAULT '{}',
    result                  TEXT NOT NULL DEFAULT '{}',
    closed_at               INTEGER NOT NULL,
    labourer_id_task_status TEXT NOT NULL
) WITHOUT ROWID;
-- labourer_task_status_with_time: HASH labourer_id_task_status, RANGE closed_at.
CREATE INDEX closed_tasks_status ON closed_tasks (labourer_id_task_status, closed_at);
CREATE INDEX closed_tasks_labourer ON closed_tasks (labourer_id);

CREATE TABLE tasks_meta (
    id          INTEGER PRIMARY KEY,
    task_id     TEXT NOT NULL,
    labourer_id TEXT NOT NULL,
    created_at  REAL NOT NULL,
    action      TEXT NOT NULL,
    author      TEXT NOT NULL,
    details     TEXT
);
CREATE INDEX tasks_meta_task ON tasks_meta (task_id, id);
"#,
    // 2: progress of scheduled jobs.
    r#"
CREATE TABLE jobs (
    job_id      TEXT PRIMARY KEY NOT NULL,
    labourer_id TEXT NOT NULL,
    total       INTEGER NOT NULL,
    scheduled   INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER
) WITHOUT ROWID;
CREATE INDEX jobs_updated ON jobs (updated_at);
"#,
    // 3: the dispatch state of labourers (the circuit breaker: held back, dead tasks in a row).
    r#"
CREATE TABLE labourer_states (
    labourer_id TEXT PRIMARY KEY NOT NULL,
    dead_in_row INTEGER NOT NULL,
    trips       INTEGER NOT NULL,
    held_until  INTEGER,
    reason      TEXT,
    held_since  INTEGER,
    suspect     TEXT
) WITHOUT ROWID;
"#,
    // 4: flow control — an operator's controls of a labourer, and its dispatch lease with the shared flow state.
    r#"
CREATE TABLE labourer_controls (
    labourer_id  TEXT PRIMARY KEY NOT NULL,
    paused_since INTEGER,
    paused_until INTEGER,
    pause_reason TEXT,
    limit_override INTEGER,
    updated_at   INTEGER NOT NULL,
    updated_by   TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE dispatch (
    labourer_id     TEXT PRIMARY KEY NOT NULL,
    holder          TEXT,
    lease_until     INTEGER,
    adaptive_limit  INTEGER,
    adaptive_at     INTEGER,
    rate_tat        INTEGER,
    claimed_at      INTEGER,
    throttled_until INTEGER,
    throttle_reason TEXT
) WITHOUT ROWID;
"#,
    // 5: the workers' reports an adaptive limit learns from (added to by every report, consumed by the lease
    // holder), and the duration baseline.
    r#"
ALTER TABLE dispatch ADD COLUMN reports_completed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dispatch ADD COLUMN reports_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dispatch ADD COLUMN reports_timed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dispatch ADD COLUMN reports_duration_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dispatch ADD COLUMN duration_baseline_ms INTEGER;
"#,
    // 6: the closed tasks counted per labourer and status, so that `status` and `/metrics` read a count in O(1)
    // however large the archive grows (it grows for ever; the live tables are counted on their indexes). sosw's
    // moves add to the counts themselves, once per batch (`moves::count_closed`: a trigger per archived row cost
    // a tenth of the lifecycle's throughput); the triggers keep them right when rows are deleted or changed by hand.
    r#"
CREATE TABLE closed_counts (
    labourer_id             TEXT NOT NULL,
    labourer_id_task_status TEXT NOT NULL,
    n                       INTEGER NOT NULL,
    PRIMARY KEY (labourer_id, labourer_id_task_status)
) WITHOUT ROWID;
INSERT INTO closed_counts (labourer_id, labourer_id_task_status, n)
    SELECT labourer_id, labourer_id_task_status, COUNT(*) FROM closed_tasks GROUP BY 1, 2;
CREATE TRIGGER closed_counts_delete AFTER DELETE ON closed_tasks BEGIN
    UPDATE closed_counts SET n = n - 1
        WHERE labourer_id = OLD.labourer_id AND labourer_id_task_status = OLD.labourer_id_task_status;
    DELETE FROM closed_counts
        WHERE labourer_id = OLD.labourer_id AND labourer_id_task_status = OLD.labourer_id_task_status AND n <= 0;
END;
CREATE TRIGGER closed_counts_update AFTER UPDATE OF labourer_id, labourer_id_task_status ON closed_tasks BEGIN
    UPDATE closed_counts SET n = n - 1
        WHERE labourer_id = OLD.labourer_id AND labourer_id_task_status = OLD.labourer_id_task_status;
    DELETE FROM closed_counts
        WHERE labourer_id = OLD.labourer_id AND labourer_id_task_status = OLD.labourer_id_task_status AND n <= 0;
    INSERT INTO closed_counts (labourer_id, labourer_id_task_status, n)
        VALUES (NEW.labourer_id, NEW.labourer_id_task_status, 1)
        ON CONFLICT (labourer_id, labourer_id_task_status) DO UPDATE SET n = n + 1;
END;
"#,
    // 7: the attempts given back unsent, so that an invocation's number (attempts + refunded) never repeats and a
    // report token names one invocation only (`Task::invocation`). Adding a column with a default rewrites nothing.
    r#"
ALTER TABLE tasks ADD COLUMN refunded_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE retry_tasks ADD COLUMN refunded_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE closed_tasks ADD COLUMN refunded_attempts INTEGER NOT NULL DEFAULT 0;
"#,
];

fn version(conn: &Connection) -> StoreResult<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(map_err)
}

/// Refuses a store this build cannot use, saying what to do about it.
pub(crate) fn check(conn: &Connection, path: &Path) -> StoreResult<()> {
    match version(conn)? {
        v if v == SCHEMA_VERSION => Ok(()),
        0 => Err(StoreError::Schema(format!(
            "the store `{}` is not initialised; run `sosw init`",
            path.display()
        ))),
        v if v < SCHEMA_VERSION => Err(StoreError::Schema(format!(
            "the store `{}` has schema version {v}, this sosw needs {SCHEMA_VERSION}; run `sosw init` to migrate it",
            path.display()
        ))),
        v => Err(StoreError::Schema(format!(
            "the store `{}` has schema version {v}, newer than this sosw ({SCHEMA_VERSION}); upgrade sosw",
            path.display()
        ))),
    }
}

/// `MIGRATIONS[..n]`, for tests that build an old store.
#[cfg(test)]
pub(crate) fn migrations() -> &'static [&'static str] {
    MIGRATIONS
}

/// Applies the missing migrations in one transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .map_err(map_err)?;
    let current = version(&tx)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Schema(format!(
            "the store `{}` has schema version {current}, newer than this sosw ({SCHEMA_VERSION}); upgrade sosw",
            path.display()
        )));
    }
    if current == 0 {
        // A file that is not empty but has no version is not ours: refuse rather than write into it.
        let tables: i64 = tx
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'", [], |r| {
                r.get(0)
            })
            .map_err(map_err)?;
        if tables > 0 {
            return Err(StoreError::Schema(format!(
                "`{}` is an SQLite database that sosw did not create; refusing to change it",
                path.display()
            )));
        }
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(map_err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1).map_err(map_err)?;
    }
    tx.commit().map_err(map_err)
}
