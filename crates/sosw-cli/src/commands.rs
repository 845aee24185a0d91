//! One function per command: load, call the library, render.

use crate::app::{load_config, open_store, store_spec, App};
use crate::cli::{Cli, Command, Global, JobCommand, Report, StateFilter, TaskCommand};
use crate::output::{print_json, table, StreamedTable};
use crate::UsageError;
use anyhow::Result;
use serde_json::{json, Map, Value};
use sosw_core::config::Config;
use sosw_core::payload::{construct_payload, report_part};
use sosw_core::ports::{ListCursor, Table, TaskQuery};
use sosw_core::{Essential, NewTask, Place, StoredTask, TaskState, Time, WorkerReport};
use sosw_engine::daemon::PassReport;
use sosw_engine::{Orchestrator, Scavenger};
use std::io::Write;

pub async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Init => init(g).await,
        Command::Task(TaskCommand::Create {
            labourer,
            payload,
            count,
        }) => task_create(g, &labourer, payload.as_deref(), count).await,
        Command::Task(TaskCommand::Show { task_id }) => task_show(g, &task_id).await,
        Command::Task(TaskCommand::List { labourer, state, limit }) => {
            task_list(g, labourer.as_deref(), state, limit).await
        }
        Command::Orchestrate { no_wait } => orchestrate(g, no_wait).await,
        Command::Scavenge => scavenge(g).await,
        Command::Complete(r) => report(g, r, true).await,
        Command::Fail(r) => report(g, r, false).await,
        Command::Status => status(g).await,
        Command::Run { interval, listen } => daemon(g, interval, listen).await,
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
        println!("store ready: {}", store.describe);
    }
    Ok(())
}

/// Whether a JSON argument of this process has read stdin already (it can be read once).
static STDIN_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The text of a JSON argument, as curl reads `--data`: the value itself, `@FILE` the file's contents, `-` (or
/// `@-`) stdin. This is how a payload larger than the OS's argument limit gets in.
fn json_arg_text(flag: &str, value: &str) -> Result<String> {
    use std::io::Read;
    let from_stdin = || -> Result<String> {
        if STDIN_TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(UsageError(format!("`{flag} -`: stdin was already read by another argument")).into());
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| UsageError(format!("cannot read `{flag}` from stdin: {e}")))?;
        Ok(text)
    };
    match value {
        "-" | "@-" => from_stdin(),
        _ => match value.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read `{flag}` from the file `{path}`: {e}")).into()),
            None => Ok(value.to_string()),
        },
    }
}

/// Refuses two JSON arguments reading stdin, before either reads it.
fn at_most_one_stdin(args: &[(&str, Option<&str>)]) -> Result<()> {
    let stdin: Vec<&str> = args
        .iter()
        .filter(|(_, v)| matches!(v, Some("-" | "@-")))
        .map(|(flag, _)| *flag)
        .collect();
    if let [first, second, ..] = stdin.as_slice() {
        return Err(UsageError(format!(
            "`{second} -`: stdin was already read by `{first}`; read one of them from a file (`@FILE`)"
        ))
        .into());
    }
    Ok(())
}

/// A JSON argument (`--payload`, `--stats`, `--result`): literal JSON, `@FILE` or `-` (stdin).
fn parse_json_arg(flag: &str, value: &str) -> Result<Value> {
    let text = json_arg_text(flag, value)?;
    serde_json::from_str(&text).map_err(|e| UsageError(format!("`{flag}` is not valid JSON: {e}")).into())
}

fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn task_create(g: &Global, labourer: &str, payload: Option<&str>, count: u32) -> Result<()> {
    let app = App::load(g, Essential::Scheduler).await?;
    if app.config.labourer(labourer).is_none() {
        return Err(UsageError(format!(
            "unknown labourer `{labourer}`: it is not in `task_config.labourers`"
        ))
        .into());
    }
    let base = payload.map(|p| parse_json_arg("--payload", p)).transpose()?;
    let payload = Value::Object(construct_payload(base, Map::new())).to_string();
    let tasks: Vec<NewTask> = (0..count)
        .map(|_| NewTask {
            task_id: new_task_id(),
            labourer_id: labourer.to_string(),
            payload: payload.clone(),
        })
        .collect();
    let wiring = app.wiring();
    let tm = wiring.task_manager(app.config.clone());
    let report = tm.create(&tasks, app.clock.now()).await?;
    if g.json {
        let rows: Vec<Value> = report
            .created
            .into_iter()
            .map(|task| {
                Value::Object(
                    StoredTask {
                        task,
                        place: Place::Live,
                    }
                    .to_row(),
                )
            })
            .collect();
        print_json(&if count == 1 {
            rows.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(rows)
        });
    } else {
        for t in report.created {
            println!("{}", t.task_id);
        }
    }
    Ok(())
}

async fn task_show(g: &Global, task_id: &str) -> Result<()> {
    let app = App::load(g, Essential::Orchestrator).await?;
    let now = app.clock.now();
    let Some(t) = app.store.get(task_id).await? else {
        anyhow::bail!("task `{task_id}` not found");
    };
    let events = app.meta.events_of(task_id).await?;
    let state = app.config.state_of(&t, now).as_str();
    if g.json {
        print_json(&json!({"state": state, "task": Value::Object(t.to_row()), "events": events}));
        return Ok(());
    }
    println!("state: {state}");
    for (k, v) in t.to_row() {
        println!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), str::to_string));
    }
    if !events.is_empty() {
        println!("events:");
        for e in events {
            let details = e.details.map(|d| format!(" {d}")).unwrap_or_default();
            println!("  {}  {:<20}  {}{details}", e.at, e.action.as_str(), e.author);
        }
    }
    Ok(())
}

/// How many rows `task list` reads from the store at a time.
const LIST_PAGE: usize = 1000;

/// Streams the listing: pages of [`LIST_PAGE`] rows read through the store's keyset cursor, each row written as it
/// comes — JSON lines with `--json`, else a table in fixed column widths — so memory does not grow with `--limit`.
async fn task_list(g: &Global, labourer: Option<&str>, state: Option<StateFilter>, limit: usize) -> Result<()> {
    let app = App::load(g, Essential::Orchestrator).await?;
    let now = app.clock.now();
    let labourers: Vec<String> = match labourer {
        Some(l) => vec![l.to_string()],
        None => {
            let mut ids: Vec<String> = app.config.labourers.iter().map(|l| l.id.clone()).collect();
            for id in app.store.labourer_ids().await? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            ids
        }
    };
    let table = StreamedTable::new(&[
        ("TASK_ID", 32),
        (
            "LABOURER",
            labourers.iter().map(|l| l.chars().count()).max().unwrap_or(0),
        ),
        ("STATE", "completed".len()),
        ("GREENFIELD", 10),
        ("ATTEMPTS", 0),
        ("PAYLOAD", 0),
    ]);
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let header = if g.json {
        Ok(())
    } else {
        table.header(
            &mut out,
            &["TASK_ID", "LABOURER", "STATE", "GREENFIELD", "ATTEMPTS", "PAYLOAD"],
        )
    };
    let written = match header {
        Err(e) => Err(e.into()),
        Ok(()) => {
            stream_tasks(&app, &labourers, state, limit, now, &mut out, |out, t, state| {
                if g.json {
                    let mut row = t.to_row();
                    row.insert("state".into(), state.into());
                    serde_json::to_writer(&mut *out, &row)?;
                    writeln!(out)
                } else {
                    let payload: String = t.task.payload.chars().take(60).collect();
                    table.row(
                        out,
                        &[
                            &t.task.task_id,
                            &t.task.labourer_id,
                            state,
                            &t.task.greenfield.to_string(),
                            &t.task.attempts.to_string(),
                            &payload,
                        ],
                    )
                }
            })
            .await
        }
    };
    match written.and_then(|()| out.flush().map_err(anyhow::Error::from)) {
        // `sosw task list | head`: the reader has seen enough.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Reads the listing page by page and hands each row to `write`.
async fn stream_tasks<W: Write>(
    app: &App,
    labourers: &[String],
    state: Option<StateFilter>,
    limit: usize,
    now: Time,
    out: &mut W,
    mut write: impl FnMut(&mut W, &StoredTask, &str) -> std::io::Result<()>,
) -> Result<()> {
    let mut left = limit;
    for l in labourers {
        let markers = app.config.markers_for(l, now);
        let live = |s: TaskState| {
            let (range, completed) = s.range(&markers);
            TaskQuery {
                table: Table::Live,
                labourer: Some(l.clone()),
                greenfield: Some(range),
                completed: Some(completed),
                limit: LIST_PAGE,
                after: None,
            }
        };
        let of = |table, completed| TaskQuery {
            table,
            labourer: Some(l.clone()),
            greenfield: None,
            completed,
            limit: LIST_PAGE,
            after: None,
        };
        let queries = match state {
            None => vec![of(Table::Live, None), of(Table::Retry, None), of(Table::Closed, None)],
            Some(StateFilter::Queued) => vec![live(TaskState::Queued)],
            Some(StateFilter::Running) => vec![live(TaskState::Running)],
            Some(StateFilter::Expired) => vec![live(TaskState::Expired)],
            Some(StateFilter::Completed) => vec![live(TaskState::Completed)],
            Some(StateFilter::Retry) => vec![of(Table::Retry, None)],
            Some(StateFilter::Closed) => vec![of(Table::Closed, Some(true))],
            Some(StateFilter::Dead) => vec![of(Table::Closed, Some(false))],
        };
        for mut q in queries {
            while left > 0 {
                q.limit = left.min(LIST_PAGE);
                let rows = app.store.list(&q).await?;
                for t in &rows {
                    write(out, t, app.config.state_of(t, now).as_str())?;
                }
                left -= rows.len().min(left);
                match rows.last() {
                    Some(last) if rows.len() >= q.limit => q.after = Some(ListCursor::after(last)),
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

/// Waits for local workers started by this process, so their exits are reported before it ends.
async fn reap(supervisor: &sosw_local::process::Supervisor, grace: f64) {
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
        println!("{requests} store request(s) were throttled during the pass (and retried)");
    }
}

async fn orchestrate(g: &Global, no_wait: bool) -> Result<()> {
    let app = App::load(g, Essential::Orchestrator).await?;
    let wiring = app.wiring();
    let (invokers, supervisor) = app.invokers(&wiring).await;
    let orchestrator =
        Orchestrator::new(app.config.clone(), &wiring, invokers.as_ref()).map_err(|e| UsageError(e.to_string()))?;
    let report = orchestrator.run_once(app.clock.now()).await;
    print_orchestration(g.json, &report);
    if !no_wait {
        reap(&supervisor, longest_process_timeout(&app.config) + 5.0).await;
    }
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
    at_most_one_stdin(&[("--stats", r.stats.as_deref()), ("--result", r.result.as_deref())])?;
    let app = App::load(g, Essential::WorkerAssistant).await?;
    let part = |flag: &'static str, text: &Option<String>| -> Result<Map<String, Value>> {
        match text {
            None => Ok(Map::new()),
            Some(t) => {
                let v = parse_json_arg(&format!("--{flag}"), t)?;
                report_part(flag, Some(&v))
                    .map_err(|e| UsageError(format!("`--{flag}` must be a JSON object, got {}", e.got)).into())
            }
        }
    };
    let report = WorkerReport {
        stats: part("stats", &r.stats)?,
        result: part("result", &r.result)?,
    };
    let wa = app.wiring().worker_assistant();
    let now = app.clock.now();
    if completed {
        wa.complete(&r.task_id, &report, now).await?;
    } else {
        wa.fail(&r.task_id, &report, now).await?;
    }
    let stored = app.store.get(&r.task_id).await?;
    if g.json {
        print_json(&stored.map(|s| Value::Object(s.to_row())).unwrap_or(Value::Null));
    } else {
        println!(
            "{} marked as {}",
            r.task_id,
            if completed { "completed" } else { "failed" }
        );
    }
    Ok(())
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
        let held_back = s.held_back.as_ref().map(|h| {
            holds.push((s.labourer_id.clone(), h.clone()));
            json!({
                "reason": h.reason,
                "until": sosw_core::time::iso8601(h.until),
                "in_seconds": (h.until.secs() - now.secs()).max(0),
            })
        });
        out.insert(
            s.labourer_id.clone(),
            json!({
                "queued": c.queued, "running": c.running, "expired": c.expired, "completed": c.completed,
                "retry_waiting": c.retry_waiting, "closed_completed": c.closed_completed, "closed_dead": c.closed_dead,
                "eco_status": s.limit.as_ref().map(|l| l.eco_status),
                "max_simultaneous_invocations": s.limit.as_ref().map(|l| l.max_simultaneous_invocations),
                "desired": s.limit.as_ref().map(|l| l.desired),
                "held_back": held_back
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
            "DESIRED",
        ],
        &rows,
    );
    for (id, hold) in &holds {
        println!(
            "{id}: held back until {} (in {} s): {}",
            sosw_core::time::iso8601(hold.until),
            (hold.until.secs() - now.secs()).max(0),
            hold.reason.as_deref().unwrap_or("no reason recorded")
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: finishing the current pass");
}

async fn daemon(g: &Global, interval: Option<f64>, listen: Option<std::net::SocketAddr>) -> Result<()> {
    if let Some(Err(e)) = interval.map(sosw_core::time::check_secs) {
        return Err(UsageError(format!("`--interval` {e}")).into());
    }
    let app = App::load(g, Essential::Orchestrator).await?;
    let scavenger_config = std::sync::Arc::new(load_config(&g.config, Essential::Scavenger).await?);
    let wiring = app.wiring();
    let reports = match listen {
        Some(addr) => Some(crate::reports::serve(addr, wiring.worker_assistant(), app.clock.clone()).await?),
        None => None,
    };
    let (invokers, supervisor) = app
        .invokers_reporting_to(&wiring, reports.as_ref().map(|r| r.url.clone()))
        .await;
    let orchestrator =
        Orchestrator::new(app.config.clone(), &wiring, invokers.as_ref()).map_err(|e| UsageError(e.to_string()))?;
    let scavenger = Scavenger::new(scavenger_config, &wiring);
    let mut intervals = app.config.daemon;
    if let Some(i) = interval {
        intervals.orchestrator_interval = i;
        intervals.scavenger_interval = i;
    }
    eprintln!(
        "sosw running: {} labourer(s), store {}, orchestrating every {} s and scavenging every {} s; Ctrl-C or SIGTERM \
         stops it (-v shows each pass)",
        app.config.labourers.len(),
        app.store_url,
        intervals.orchestrator_interval,
        intervals.scavenger_interval
    );
    if let Some(r) = &reports {
        eprintln!("sosw serving worker reports on {}", r.url);
    }
    let json = g.json;
    let (o, s) = sosw_engine::daemon::run(&orchestrator, &scavenger, app.clock.as_ref(), intervals, shutdown_signal(), |r| match r {
        PassReport::Orchestrator(r) => {
            if json {
                println!("{}", json!({"orchestrator": r.to_json()}));
            } else if r.total_invoked() > 0 || r.labourers.iter().any(|l| !l.errors.is_empty()) {
                for l in &r.labourers {
                    tracing::info!(labourer = %l.labourer_id, eco = l.eco_status, desired = l.desired, running = l.running, invoked = l.invoked, throttled = l.throttled, errors = ?l.errors, "orchestrated");
                }
            }
        }
        PassReport::Scavenger(r) => {
            if json {
                println!("{}", json!({"scavenger": r.to_json()}));
            } else if r.moved_anything() {
                for l in &r.labourers {
                    tracing::info!(labourer = %l.labourer_id, archived = l.archived, retried = l.retried, requeued = l.requeued, dead = l.dead, "scavenged");
                }
            }
        }
    })
    .await;
    reap(&supervisor, app.config.daemon.shutdown_grace).await;
    drop(reports);
    eprintln!("sosw stopped after {o} orchestrator and {s} scavenger passes");
    Ok(())
}
