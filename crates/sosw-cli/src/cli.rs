//! The command line: the contract other tools rely on (extend it, don't rename it).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "sosw",
    version,
    about = "Serverless Orchestrator of Serverless Workers, embedded on SQLite"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The config: a JSON file, or a directory in Python sosw's layout (`sosw_essential_config.json` and
    /// `<essential>_config.json`).
    #[arg(long, global = true, env = "SOSW_CONFIG", default_value = "sosw.json")]
    pub config: PathBuf,
    /// The store, e.g. `sqlite:PATH` (default: config key `store`, else `sosw.db` beside the config).
    #[arg(long, global = true, env = "SOSW_STORE")]
    pub store: Option<String>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v info, -vv debug); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store, or migrate it to this version.
    Init,
    /// Create, show and list tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// One Orchestrator pass: invoke queued tasks within each labourer's limits.
    Orchestrate {
        /// Do not wait for local worker processes to finish before exiting. Each worker still gets its whole event
        /// (from a file of its own) and outlives sosw; its output is discarded and its timeout is not enforced.
        /// Refused when a process labourer reports by its exit code (nobody would record it).
        #[arg(long)]
        no_wait: bool,
    },
    /// One Scavenger pass: archive completed tasks, retry or close expired ones, requeue due retries.
    Scavenge,
    /// Report a task as completed (WorkerAssistant `mark_task_as_completed`).
    Complete(Report),
    /// Report a task as failed (WorkerAssistant `mark_task_as_failed`).
    Fail(Report),
    /// A running task is alive: extend its running window (the labourer's `heartbeat_timeout`, or its whole
    /// `duration + cooldown`), so it is not expired while its worker works.
    Heartbeat { task_id: String },
    /// Where the tasks of every labourer are, with its eco status, the limit in force and why it is held back.
    Status,
    /// Steer a labourer's dispatch: pause, resume, a live limit (stored; every orchestrator sees it at its next
    /// pass).
    #[command(subcommand)]
    Labourer(LabourerCommand),
    /// API tokens for `sosw run`'s server.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the Orchestrator and the Scavenger on intervals until SIGINT or SIGTERM.
    Run {
        /// Seconds between passes of each (overrides `daemon.orchestrator_interval` and `scavenger_interval`).
        #[arg(long)]
        interval: Option<f64>,
        /// Serve the API, /metrics and worker reports on this address (e.g. 127.0.0.1:8787; overrides
        /// `server.listen`). Workers learn the report URL from SOSW_REPORT_URL (processes) or the
        /// X-Sosw-Report-Url header (HTTP). A non-loopback address needs a token (`server.tokens`).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Turn a business job into tasks at the end of its labourer's queue (`-` reads the job from stdin).
    Schedule {
        job: String,
        /// Print the tasks (JSON lines) instead of writing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Scheduled jobs and their progress.
    #[command(subcommand)]
    Job(JobCommand),
    /// Copy the SQLite store to PATH while it is in use (SQLite's online backup API: one consistent snapshot).
    Backup {
        path: PathBuf,
        /// Overwrite PATH if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check the store: SQLite's integrity check and the store's invariants (exit 1 if a problem is found).
    Check {
        /// SQLite's `quick_check` instead of the full `integrity_check` (faster; skips matching indexes to tables).
        #[arg(long)]
        quick: bool,
    },
    /// The end-to-end demo: two labourers, thousands of tasks, throttling, retries and dead tasks.
    Demo(DemoArgs),
    /// Benchmark the whole task lifecycle on SQLite with an in-process no-op worker.
    Bench(BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Queue a task at the end of a labourer's queue; prints its id.
    Create {
        labourer: String,
        /// The worker's arguments: a JSON object (anything else is kept under `"payload"`); `@FILE` reads it from
        /// a file, `-` from stdin.
        #[arg(long, value_name = "JSON|@FILE|-")]
        payload: Option<String>,
        /// Create this many tasks with the same payload (at least 1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
    },
    /// A task, where it is, and its audit trail.
    Show { task_id: String },
    /// Put a task closed as dead back at the head of its queue for one more attempt (audit event
    /// `requeued_by_operator`); any other task is refused, unchanged.
    Requeue { task_id: String },
    /// Tasks, by labourer and state.
    List {
        #[arg(long)]
        labourer: Option<String>,
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token and the `server.tokens` entry that accepts it (the config holds only its SHA-256).
    New {
        /// What it may do: read (every GET, /metrics), write (create tasks, pause, resume, limits), admin.
        #[arg(long, value_parser = ["read", "write", "admin"])]
        scope: String,
        /// Who holds it: shown in the log and the audit trail, never the token.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LabourerCommand {
    /// A labourer's counts, limit in force, holds and control, with its audit trail (pauses, resumes, limits).
    Show { labourer: String },
    /// Find every labourer with tasks by reading every task table, and list them. On DynamoDB, `status` and
    /// /metrics list the labourers of a registry that task creation keeps; this brings it up to date with tasks
    /// that another program (Python sosw) created, at the cost of a Scan of the three task tables; it also counts
    /// each labourer's closed tasks again (DynamoDB keeps what closed long ago counted).
    Rescan,
    /// Invoke none of the labourer's tasks until resumed (or until `--until`); tasks keep queueing.
    Pause {
        labourer: String,
        /// When dispatch resumes by itself: 2026-12-01T09:30:00Z, 2026-12-01 (UTC), or a span: 90s, 15m, 2h, 1d.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Why, for `status` and the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused labourer.
    Resume { labourer: String },
    /// Replace `max_simultaneous_invocations` with N (0 stops dispatch) until `--clear`.
    Limit {
        labourer: String,
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        n: Option<u32>,
        /// Back to the configured limit.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// A job's progress.
    Show { job_id: String },
    /// The most recently scheduled jobs.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    Queued,
    Running,
    Expired,
    Completed,
    Retry,
    Closed,
    Dead,
}

impl StateFilter {
    pub fn whereabouts(self) -> sosw_core::task::Whereabouts {
        use sosw_core::task::Whereabouts as W;
        match self {
            StateFilter::Queued => W::Queued,
            StateFilter::Running => W::Running,
            StateFilter::Expired => W::Expired,
            StateFilter::Completed => W::Completed,
            StateFilter::Retry => W::Retry,
            StateFilter::Closed => W::Closed,
            StateFilter::Dead => W::Dead,
        }
    }
}

#[derive(Debug, Args)]
pub struct Report {
    pub task_id: String,
    /// A JSON object; each key `k` is stored as `stat_<k>`. `@FILE` reads it from a file, `-` from stdin.
    #[arg(long, value_name = "JSON|@FILE|-")]
    pub stats: Option<String>,
    /// A JSON object; each key `k` is stored as `result_<k>`. `@FILE` reads it from a file, `-` from stdin.
    #[arg(long, value_name = "JSON|@FILE|-")]
    pub result: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Tasks to queue for each of the two labourers (at most 100,000: the demo's workers are real processes).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub tasks: u32,
    /// Keep the demo's directory here instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tasks to push through the lifecycle.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: u32,
    /// Labourers to spread them over.
    #[arg(long, default_value_t = 4)]
    pub labourers: u32,
    /// Do not write meta (audit) events.
    #[arg(long)]
    pub no_meta: bool,
    /// Run this many Orchestrators side by side, each with its own connection to the file (as separate processes
    /// would be): their combined dispatch rate under the dispatch lease.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub orchestrators: u32,
    /// Benchmark the Scheduler instead: one job that makes `--tasks` tasks.
    #[arg(long)]
    pub schedule: bool,
    /// Serve the API on loopback during the run (on its own connection, as a `sosw run` would) and scrape it as
    /// Prometheus and an open dashboard do: `/metrics` every second, `/api/labourers` every 2 s. Reports the
    /// scrapes' latencies.
    #[arg(long)]
    pub scrape: bool,
    /// Put the database here instead of a temporary directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}
