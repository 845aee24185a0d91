//! One function per command: load, call the library, render.

use crate::app::{load_config, open_store, store_spec, App};
use crate::cli::{Cli, Command, Global, JobCommand, LabourerCommand, Report, TaskCommand, TokenCommand};
use crate::output::{print_json, table};
use crate::UsageError;
use anyhow::Result;
use serde_json::{json, Map, Value};
use sosw_core::config::Config;
use sosw_core::payload::report_part;
use sosw_core::{Essential, WorkerReport};
use sosw_engine::{Orchestrator, Scavenger};

pub async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Init => init(g).await,
        Command::Task(TaskCommand::Create {
            labourer,
            payload,
            count,
        }) => crate::tasks::task_create(g, &labourer, payload.as_deref(), count).await,
        Command::Task(TaskCommand::Show { task_id }) => crate::tasks::task_show(g, &task_id).await,
        Command::Task(TaskCommand::Requeue { task_id }) => crate::tasks::task_requeue(g, &task_id, &operator()).await,
        Command::Task(TaskCommand::List { labourer, state, limit }) => {
            crate::tasks::task_list(g, labourer.as_deref(), state, limit).await
        }
        Command::Orchestrate { no_wait } => orchestrate(g, no_wait).await,
        Command::Scavenge => scavenge(g).await,
        Command::Complete(r) => report(g, r, true).await,
        Command::Fail(r) => report(g, r, false).await,
        Command::Heartbeat { task_id } => heartbeat(g, &task_id).await,
        Command::Status => status(g).await,
        Command::Labourer(c) => labourer(g, c).await,
        Command::Token(TokenCommand::New { scope, name }) => {
            token_new(g, &scope, &name);
            Ok(())
        }
        Command::Run { interval, listen } => crate::daemon::daemon(g, interval, listen).await,
        Command::Schedule { job, dry_run } => crate::schedule::schedule(g, &job, dry_run).await,
        Command::Job(JobCommand::Show { job_id }) => crate::schedule::show(g, &job_id).await,
        Command::Job(JobCommand::List { limit }) => crate::schedule::list(g, limit).await,
        Command::Backup { path, force } => crate::maintenance::backup(g, &path, force).await,
        Command::Check { quick } => crate::maintenance::check(g, quick).await,
        Command::Demo(args) => crate::showcase::demo::run(args, g.json).await,
        Command::Bench(args) => crate::showcase::bench::run(args, g.json).await,
    }
}

async fn init(g: &Global) -> Result<()> {
    // A missing config is fine for `init` when the store is named on the command line.
    let config = match (&g.store, g.config.exists()) {
        (Some(_), false) => None,
        _ => Some(load_config(&g.config, Essential::Orchestrator).await?),
    };
    let spec = store_spec(g, config.as_ref())?;
    let store = open_store(&spec, config.as_ref(), true).await?;
    if g.json {
        print_json(&json!({"store": store.url, "ready": store.describe}));
    } else {
        outln!("store ready: {}", store.describe);
    }
    Ok(())
}

/// Waits for local workers started by this process, so their exits are reported before it ends.
pub(crate) async fn reap(supervisor: &sosw_local::process::Supervisor, grace: f64) {
    let active = supervisor.active();
    if active == 0 {
        return;
    }
    tracing::info!(workers = active, "waiting up to {grace} s for local workers to finish");
    let left = supervisor.drain(sosw_core::time::duration_secs(grace)).await;
    if left > 0 {
        tracing::warn!(
            workers = left,
            "workers still running were left to finish on their own; unreported tasks expire and are retried"
        );
    }
}

fn longest_process_timeout(config: &Config) -> f64 {
    config
        .labourers
        .iter()
        .filter_map(|l| match &l.invoker {
            sosw_core::config::InvokerSpec::Process(p) => Some(p.timeout_secs),
            _ => None,
        })
        .fold(0.0, f64::max)
}

fn print_orchestration(json: bool, r: &sosw_engine::OrchestratorReport) {
    if json {
        print_json(&r.to_json());
        return;
    }
    let rows: Vec<Vec<String>> = r
        .labourers
        .iter()
        .map(|l| {
            vec![
                l.labourer_id.clone(),
                l.eco_status.to_string(),
                l.desired.to_string(),
                l.running.to_string(),
                (l.invoked + l.finished_sync).to_string(),
                l.skipped_conflict.to_string(),
                l.throttled.to_string(),
                (l.retry_later + l.dead).to_string(),
                l.errors
                    .iter()
                    .chain(&l.metric_errors)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    table(
        &[
            "LABOURER",
            "ECO",
            "DESIRED",
            "RUNNING",
            "INVOKED",
            "CONFLICTS",
            "THROTTLED",
            "FAILED",
            "PROBLEMS",
        ],
        &rows,
    );
    throttled(r.store_throttled);
}

fn print_scavenge(json: bool, r: &sosw_engine::ScavengerReport) {
    if json {
        print_json(&r.to_json());
        return;
    }
    let rows: Vec<Vec<String>> = r
        .labourers
        .iter()
        .map(|l| {
            vec![
                l.labourer_id.clone(),
                l.archived.to_string(),
                l.retried.to_string(),
                l.requeued.to_string(),
                l.dead.to_string(),
                l.skipped_conflict.to_string(),
                l.errors.join("; "),
            ]
        })
        .collect();
    table(
        &[
            "LABOURER",
            "ARCHIVED",
            "RETRIED",
            "REQUEUED",
            "DEAD",
            "CONFLICTS",
            "PROBLEMS",
        ],
        &rows,
    );
    throttled(r.store_throttled);
}

/// Throttling that the store's retries hid, said when there was any.
fn throttled(requests: u64) {
    if requests > 0 {
        outln!("{requests} store request(s) were throttled during the pass (and retried)");
    }
}

async fn orchestrate(g: &Global, no_wait: bool) -> Result<()> {
    let app = App::load(g, Essential::Orchestrator).await?;
    let by_exit = app.config.labourers_reporting_by_exit();
    if no_wait && !by_exit.is_empty() {
        return Err(UsageError(format!(
            "`--no-wait` leaves nobody to record the exit of a worker that reports by it, so its task would expire \
             and run again until it is dead: labourer(s) `{}` (set their `report` to \"self\", or run without \
             `--no-wait`)",
            by_exit.join("`, `")
        ))
        .into());
    }
    let wiring = app.wiring();
    let (invokers, supervisor) = match no_wait {
        false => {
            let (invokers, supervisor) = app.invokers(&wiring).await;
            (invokers, Some(supervisor))
        }
        true => (app.detached_invokers(&wiring).await, None),
    };
    let orchestrator =
        Orchestrator::new(app.config.clone(), &wiring, invokers.as_ref()).map_err(|e| UsageError(e.to_string()))?;
    let report = orchestrator.run_once(app.clock.now()).await;
    // The workers' exits are recorded before anything is printed (printing can fail; recording must not wait on it).
    if let Some(supervisor) = supervisor {
        reap(&supervisor, longest_process_timeout(&app.config) + 5.0).await;
    }
    print_orchestration(g.json, &report);
    Ok(())
}

async fn scavenge(g: &Global) -> Result<()> {
    let app = App::load(g, Essential::Scavenger).await?;
    let report = Scavenger::new(app.config.clone(), &app.wiring())
        .run_once(app.clock.now())
        .await;
    print_scavenge(g.json, &report);
    Ok(())
}

async fn report(g: &Global, r: Report, completed: bool) -> Result<()> {
    crate::args::at_most_one_stdin(&[("--stats", r.stats.as_deref()), ("--result", r.result.as_deref())])?;
    let app = App::load(g, Essential::WorkerAssistant).await?;
    let part = |flag: &'static str, text: &Option<String>| -> Result<Map<String, Value>> {
        match text {
            None => Ok(Map::new()),
            Some(t) => {
                let v = crate::args::parse_json_arg(&format!("--{flag}"), t)?;
                report_part(flag, Some(&v))
                    .map_err(|e| UsageError(format!("`--{flag}` must be a JSON object, got {}", e.got)).into())
            }
        }
    };
    let report = WorkerReport {
        stats: part("stats", &r.stats)?,
        result: part("result", &r.result)?,
        of: None,
    };
    let wa = app.wiring().worker_assistant(app.config.clone());
    let now = app.clock.now();
    if completed {
        wa.complete(&r.task_id, &report, now).await?;
    } else {
        wa.fail(&r.task_id, &report, now).await?;
    }
    if g.json {
        // Read back only to print it (a worker calling `sosw complete` rarely asks for JSON: one request less).
        let stored = app.store.get(&r.task_id).await?;
        print_json(&stored.map(|s| Value::Object(s.to_row())).unwrap_or(Value::Null));
    } else {
        outln!(
            "{} marked as {}",
            r.task_id,
            if completed { "completed" } else { "failed" }
        );
    }
    Ok(())
}

async fn heartbeat(g: &Global, task_id: &str) -> Result<()> {
    let app = App::load(g, Essential::WorkerAssistant).await?;
    let until = app
        .wiring()
        .worker_assistant(app.config.clone())
        .heartbeat(task_id, None, app.clock.now())
        .await?;
    if g.json {
        print_json(&json!({"task_id": task_id, "running_until": sosw_core::time::iso8601(until)}));
    } else {
        outln!("{task_id}: running until {}", sosw_core::time::iso8601(until));
    }
    Ok(())
}

/// `pause`, `resume`, `limit`: one change of the labourer's stored control, with its audit event.
async fn labourer(g: &Global, c: LabourerCommand) -> Result<()> {
    use sosw_engine::control::{change, ControlChange, ControlError};
    let app = App::load(g, Essential::Orchestrator).await?;
    let now = app.clock.now();
    let (id, what) = match c {
        LabourerCommand::Show { labourer } => return labourer_show(g, &app, &labourer).await,
        LabourerCommand::Rescan => return labourer_rescan(g, &app).await,
        LabourerCommand::Pause {
            labourer,
            until,
            reason,
        } => {
            let until = until
                .map(|u| sosw_core::time::parse_until(&u, now).map_err(|e| UsageError(format!("--until: {e}"))))
                .transpose()?;
            (labourer, ControlChange::Pause { until, reason })
        }
        LabourerCommand::Resume { labourer } => (labourer, ControlChange::Resume),
        LabourerCommand::Limit { labourer, n, clear } => match (n, clear) {
            (Some(n), false) => (labourer, ControlChange::Limit(n)),
            _ => (labourer, ControlChange::ClearLimit),
        },
    };
    let control = match change(&app.config, &app.wiring(), &id, what, &operator(), now).await {
        Ok(c) => c,
        Err(ControlError::Engine(e)) => return Err(UsageError(e.to_string()).into()),
        Err(ControlError::Store(e)) => return Err(e.into()),
    };
    if g.json {
        print_json(&json!({"labourer_id": id, "control": control}));
        return Ok(());
    }
    let paused = match &control.paused {
        None => "not paused".to_string(),
        Some(p) => format!(
            "paused {}{}",
            p.until.map_or("until resumed".to_string(), |u| format!(
                "until {}",
                sosw_core::time::iso8601(u)
            )),
            p.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        ),
    };
    let limit = control
        .limit
        .map_or("the configured limit".to_string(), |n| format!("a limit of {n}"));
    outln!("{id}: {paused}; {limit}. Every orchestrator applies it at its next pass.");
    Ok(())
}

/// `sosw labourer rescan`: every labourer with tasks, found by reading every table; unconfigured ones are marked.
async fn labourer_rescan(g: &Global, app: &App) -> Result<()> {
    let ids = app.store.rescan_labourers(app.clock.now()).await?;
    if g.json {
        let rows: Vec<_> = ids
            .iter()
            .map(|id| json!({"labourer_id": id, "configured": app.config.labourer(id).is_some()}))
            .collect();
        print_json(&json!({ "labourers": rows }));
        return Ok(());
    }
    if ids.is_empty() {
        outln!("no labourer has tasks");
    }
    for id in &ids {
        match app.config.labourer(id) {
            Some(_) => outln!("{id}"),
            None => outln!("{id} (not configured)"),
        }
    }
    Ok(())
}

/// `sosw labourer show ID`: its status row and its own audit trail.
async fn labourer_show(g: &Global, app: &App, id: &str) -> Result<()> {
    if app.config.labourer(id).is_none() {
        return Err(UsageError(format!("unknown labourer `{id}`: it is not in `task_config.labourers`")).into());
    }
    let now = app.clock.now();
    let status = sosw_engine::status::labourer_status(&app.config, &app.wiring(), id, now).await?;
    let trail = app.meta.events_of(&sosw_core::meta::labourer_trail(id)).await?;
    if g.json {
        print_json(&json!({"status": status, "events": trail}));
        return Ok(());
    }
    if let Some(s) = &status {
        let c = &s.counts;
        outln!(
            "{id}: {} queued, {} running, {} expired, {} waiting for a retry",
            c.queued,
            c.running,
            c.expired,
            c.retry_waiting
        );
        if let Some(l) = &s.limit {
            let max = l
                .limit_override
                .map_or(format!("{}", l.max_simultaneous_invocations), |n| {
                    format!("{n} (an operator's; configured {})", l.max_simultaneous_invocations)
                });
            outln!(
                "  limit: max {max}, eco status {} → desired {}",
                l.eco_status,
                l.desired
            );
            if let Some(a) = l.adaptive {
                outln!("  adaptive limit: {a}");
            }
            if let Some(r) = l.rate_per_second {
                outln!("  rate limit: {r} invocations/s");
            }
        }
        for h in &s.held_back {
            let until = h
                .until
                .map(|u| format!(" until {}", sosw_core::time::iso8601(u)))
                .unwrap_or_default();
            outln!("  held back ({}){until}: {}", h.code.as_str(), h.reason);
        }
    }
    for e in &trail {
        outln!(
            "  {}  {}  {}  {}",
            sosw_core::time::iso8601(e.at),
            e.action.as_str(),
            e.author,
            e.details.as_ref().map(Value::to_string).unwrap_or_default()
        );
    }
    Ok(())
}

/// Who is at the keyboard, for the audit trail: `$USER@$HOSTNAME` as far as the environment says.
pub(crate) fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "someone".into());
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.is_empty() => format!("{user}@{host}"),
        _ => user,
    }
}

async fn status(g: &Global) -> Result<()> {
    let app = App::load(g, Essential::Orchestrator).await?;
    let now = app.clock.now();
    let statuses = sosw_engine::status(&app.config, &app.wiring(), now).await?;
    let mut out = Map::new();
    let mut holds = Vec::new();
    for s in &statuses {
        let c = &s.counts;
        if s.limit.is_none() {
            tracing::warn!(labourer = %s.labourer_id, "the store has tasks of a labourer that is not configured");
        }
        for e in s.limit.iter().flat_map(|l| &l.metric_errors) {
            tracing::warn!(labourer = %s.labourer_id, "{e}");
        }
        let hold_json = |h: &sosw_engine::status::Hold| {
            json!({
                "code": h.code,
                "reason": h.reason,
                "until": h.until.map(sosw_core::time::iso8601),
                "in_seconds": h.until.map(|u| (u.secs() - now.secs()).max(0)),
            })
        };
        for h in &s.held_back {
            holds.push((s.labourer_id.clone(), h.clone()));
        }
        let limit = s.limit.as_ref();
        out.insert(
            s.labourer_id.clone(),
            json!({
                "queued": c.queued, "running": c.running, "expired": c.expired, "completed": c.completed,
                "retry_waiting": c.retry_waiting, "closed_completed": c.closed_completed, "closed_dead": c.closed_dead,
                "eco_status": limit.map(|l| l.eco_status),
                "max_simultaneous_invocations": limit.map(|l| l.max_simultaneous_invocations),
                "limit_override": limit.and_then(|l| l.limit_override),
                "adaptive_limit": limit.and_then(|l| l.adaptive),
                "rate_per_second": limit.and_then(|l| l.rate_per_second),
                "desired": limit.map(|l| l.desired),
                // The strongest reason; all of them in `held_back_all`.
                "held_back": s.held_back.first().map(hold_json),
                "held_back_all": s.held_back.iter().map(hold_json).collect::<Vec<_>>(),
                "dispatching": s.dispatching,
            }),
        );
    }
    if g.json {
        print_json(&Value::Object(out));
        return Ok(());
    }
    let keys = [
        "queued",
        "running",
        "expired",
        "completed",
        "retry_waiting",
        "closed_completed",
        "closed_dead",
        "eco_status",
        "max_simultaneous_invocations",
        "limit_override",
        "desired",
    ];
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|(id, v)| {
            std::iter::once(id.clone())
                .chain(keys.iter().map(|k| {
                    if v[k].is_null() {
                        "-".to_string()
                    } else {
                        v[k].to_string()
                    }
                }))
                .collect()
        })
        .collect();
    table(
        &[
            "LABOURER",
            "QUEUED",
            "RUNNING",
            "EXPIRED",
            "COMPLETED",
            "RETRY",
            "CLOSED",
            "DEAD",
            "ECO",
            "MAX",
            "LIMIT",
            "DESIRED",
        ],
        &rows,
    );
    for (id, hold) in &holds {
        match hold.until {
            Some(until) => outln!(
                "{id}: held back ({}) until {} (in {} s): {}",
                hold.code.as_str(),
                sosw_core::time::iso8601(until),
                (until.secs() - now.secs()).max(0),
                hold.reason
            ),
            None => outln!("{id}: held back ({}): {}", hold.code.as_str(), hold.reason),
        }
    }
    Ok(())
}

/// `sosw token new`: the token on stdout's first line (or `token` in `--json`), the config entry after it.
fn token_new(g: &Global, scope: &str, name: &str) {
    let token = sosw_server::auth::new_token();
    let entry = json!({
        "name": name,
        "scope": scope,
        "sha256": sosw_server::auth::hex(&sosw_core::config::token_sha256(&token)),
    });
    if g.json {
        print_json(&json!({"token": token, "config_entry": entry}));
    } else {
        outln!("{token}");
        errln!("Give the token above to `{name}` (it is shown once). Add this to `server.tokens` in the config:");
        outln!("{entry}");
    }
}
