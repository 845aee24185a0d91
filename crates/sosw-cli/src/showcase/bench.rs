//! `sosw bench`: the whole task lifecycle (create → invoke → complete → archive) on a real SQLite file, with an
//! in-process no-op worker that completes every task synchronously, so what is measured is sosw itself.

// The demo and the benchmark measure real elapsed time (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

use crate::cli::BenchArgs;
use crate::output::print_json;
use anyhow::{Context, Result};
use async_trait::async_trait;
use serde_json::json;
use sosw_core::config::Labourer;
use sosw_core::ports::{InvokeError, InvokeOutcome, Invoker, InvokerFactory, TaskStore};
use sosw_core::task::ReportKind;
use sosw_core::{Config, NewTask, SystemClock, Task, WorkerReport};
use sosw_engine::{Orchestrator, Scavenger, Wiring};
use sosw_local::metrics::LocalMetrics;
use sosw_local::notify::LocalNotifier;
use sosw_sqlite::SqliteStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Noop;

#[async_trait]
impl Invoker for Noop {
    async fn invoke(&self, _task: &Task, _event: &str) -> Result<InvokeOutcome, InvokeError> {
        Ok(InvokeOutcome::Finished(ReportKind::Completed, WorkerReport::default()))
    }
}

#[derive(Debug)]
struct NoopInvokers;

impl InvokerFactory for NoopInvokers {
    fn invoker_for(&self, _labourer: &Labourer) -> Result<Arc<dyn Invoker>, String> {
        Ok(Arc::new(Noop))
    }
}

pub async fn run(args: BenchArgs, json_out: bool) -> Result<()> {
    if args.tasks == 0 || args.labourers == 0 {
        return Err(crate::UsageError("`--tasks` and `--labourers` must be at least 1".into()).into());
    }
    if args.schedule && args.scrape {
        return Err(crate::UsageError(
            "`--scrape` measures the lifecycle under scraping: not with `--schedule`".into(),
        )
        .into());
    }
    if args.schedule {
        return schedule(args, json_out).await;
    }
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("bench.db");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(SqliteStore::open_or_create(&path)?);
    store.init().await?;
    let per_pass = 10_000;
    let labourers: serde_json::Map<String, serde_json::Value> = (0..args.labourers)
        .map(|i| {
            (
                format!("bench{i}"),
                json!({"command": ["true"], "max_simultaneous_invocations": per_pass}),
            )
        })
        .collect();
    let config = Arc::new(
        Config::from_value(&json!({
            "task_config": {"labourers": labourers},
            "meta_handler_config": {"write_meta_to_ddb": !args.no_meta},
            "invocation_concurrency": 256
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let wiring = wiring(&store, args.no_meta);
    let clock = wiring.clock.clone();
    let tm = wiring.task_manager(config.clone());
    let mut orchestrators = Vec::new();
    for i in 0..args.orchestrators {
        // The first shares the benchmark's connection; the others each open their own, as processes would.
        let own = if i == 0 {
            wiring.clone()
        } else {
            self::wiring(&Arc::new(SqliteStore::open(&path)?), args.no_meta)
        };
        orchestrators.push(Orchestrator::new(config.clone(), &own, &NoopInvokers).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let scavenger = Scavenger::new(config.clone(), &wiring);
    let scraper = if args.scrape {
        Some(
            Scraper::start(
                config.clone(),
                self::wiring(&Arc::new(SqliteStore::open(&path)?), args.no_meta),
            )
            .await?,
        )
    } else {
        None
    };

    let started = Instant::now();
    let mut create_time = Duration::ZERO;
    let mut created = 0u32;
    while created < args.tasks {
        let batch = (args.tasks - created).min(10_000);
        let now = clock.now();
        // The ids `sosw task create` and the API give (time-ordered, a batch's in its order).
        let ids = sosw_engine::tasks::new_task_ids(now, batch as usize);
        let tasks: Vec<NewTask> = (created..created + batch)
            .zip(ids)
            .map(|(i, task_id)| NewTask {
                task_id,
                labourer_id: format!("bench{}", i % args.labourers),
                payload: format!(r#"{{"n": {i}}}"#),
            })
            .collect();
        let t = Instant::now();
        tm.create(&tasks, now).await?;
        create_time += t.elapsed();
        created += batch;
    }
    let (mut orchestrate_time, mut scavenge_time) = (Duration::ZERO, Duration::ZERO);
    let (mut invoked, mut archived, mut passes) = (0u64, 0u64, 0u32);
    while archived < u64::from(args.tasks) {
        let t = Instant::now();
        let now = clock.now();
        let reports = futures::future::join_all(orchestrators.iter().map(|o| o.run_once(now))).await;
        orchestrate_time += t.elapsed();
        let o = sosw_engine::OrchestratorReport {
            labourers: reports.into_iter().flat_map(|r| r.labourers).collect(),
            ..sosw_engine::OrchestratorReport::default()
        };
        let t = Instant::now();
        let s = scavenger.run_once(clock.now()).await;
        scavenge_time += t.elapsed();
        passes += 1;
        let pass_invoked: u64 = o.labourers.iter().map(|l| u64::from(l.finished_sync + l.invoked)).sum();
        let pass_archived: u64 = s.labourers.iter().map(|l| u64::from(l.archived)).sum();
        if let Some(e) = o
            .labourers
            .iter()
            .flat_map(|l| &l.errors)
            .chain(s.labourers.iter().flat_map(|l| &l.errors))
            .next()
        {
            anyhow::bail!("the benchmark hit an error: {e}");
        }
        if pass_invoked == 0 && pass_archived == 0 {
            anyhow::bail!("no progress after {archived} of {} tasks", args.tasks);
        }
        invoked += pass_invoked;
        archived += pass_archived;
    }
    let total = started.elapsed();
    let scrapes = match scraper {
        Some(s) => Some(s.stop().await?),
        None => None,
    };
    let rate = |d: Duration| f64::from(args.tasks) / d.as_secs_f64();
    let db_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    let report = json!({
        "tasks": args.tasks,
        "labourers": args.labourers,
        "orchestrators": args.orchestrators,
        "meta": !args.no_meta,
        "passes": passes,
        "invoked": invoked,
        "archived": archived,
        "seconds": total.as_secs_f64(),
        "tasks_per_second": rate(total),
        "create_tasks_per_second": rate(create_time),
        "orchestrate_tasks_per_second": rate(orchestrate_time),
        "scavenge_tasks_per_second": rate(scavenge_time),
        "database_bytes": db_bytes,
        "scrapes": scrapes.as_ref().map(Scrapes::to_json),
    });
    if json_out {
        print_json(&report);
    } else {
        outln!(
            "{} tasks, {} labourers, {} orchestrator(s), meta {}: full lifecycle in {:.2} s = {:.0} tasks/s",
            args.tasks,
            args.labourers,
            args.orchestrators,
            if args.no_meta { "off" } else { "on" },
            total.as_secs_f64(),
            rate(total)
        );
        outln!(
            "  create {:.0}/s, orchestrate+complete {:.0}/s, scavenge (archive) {:.0}/s, {} passes, database {:.1} MiB",
            rate(create_time),
            rate(orchestrate_time),
            rate(scavenge_time),
            passes,
            db_bytes as f64 / (1024.0 * 1024.0)
        );
        if let Some(s) = &scrapes {
            outln!("  {}", s.summary());
        }
    }
    Ok(())
}

/// `--scrape`: the API served beside the run, scraped as Prometheus (`/metrics` every second) and an open dashboard
/// (`/api/labourers` every 2 s) would.
struct Scraper {
    _server: sosw_server::Server,
    task: tokio::task::JoinHandle<Result<Scrapes>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The latencies of the scrapes, in milliseconds.
#[derive(Debug, Default)]
struct Scrapes {
    metrics_ms: Vec<f64>,
    labourers_ms: Vec<f64>,
    metrics_bytes: usize,
}

impl Scraper {
    async fn start(config: Arc<Config>, wiring: Wiring) -> Result<Scraper> {
        let limits = sosw_server::Limits::DEFAULT;
        let service = Arc::new(sosw_server::Service::new(
            config,
            wiring,
            sosw_server::Auth::default(),
            limits,
        ));
        let server = sosw_server::serve("127.0.0.1:0".parse()?, sosw_server::api::router(service), limits).await?;
        let base = server.url.clone();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut out = Scrapes::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return Ok(out),
                    _ = tick.tick() => {}
                }
                let t = Instant::now();
                let body = client
                    .get(format!("{base}/metrics"))
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                out.metrics_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                out.metrics_bytes = body.len();
                if n % 2 == 0 {
                    let t = Instant::now();
                    client
                        .get(format!("{base}/api/labourers"))
                        .send()
                        .await?
                        .error_for_status()?
                        .bytes()
                        .await?;
                    out.labourers_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                n += 1;
            }
        });
        Ok(Scraper {
            _server: server,
            task,
            stop,
        })
    }

    async fn stop(self) -> Result<Scrapes> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}

fn median_and_max(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => (0.0, 0.0),
        n => (v[n / 2], v[n - 1]),
    }
}

impl Scrapes {
    fn to_json(&self) -> serde_json::Value {
        let (m_med, m_max) = median_and_max(&self.metrics_ms);
        let (l_med, l_max) = median_and_max(&self.labourers_ms);
        json!({
            "metrics": {"count": self.metrics_ms.len(), "median_ms": m_med, "max_ms": m_max, "bytes": self.metrics_bytes},
            "labourers": {"count": self.labourers_ms.len(), "median_ms": l_med, "max_ms": l_max},
        })
    }

    fn summary(&self) -> String {
        let (m_med, m_max) = median_and_max(&self.metrics_ms);
        let (l_med, l_max) = median_and_max(&self.labourers_ms);
        format!(
            "scraped /metrics {} times (median {m_med:.1} ms, max {m_max:.1} ms, {} bytes) and /api/labourers {} times \
             (median {l_med:.1} ms, max {l_max:.1} ms)",
            self.metrics_ms.len(),
            self.metrics_bytes,
            self.labourers_ms.len()
        )
    }
}

/// `sosw bench --schedule`: one job of `--tasks` tasks (a range of days × isolated stores) scheduled into a new
/// SQLite store: the validating pass, then the streaming writes.
async fn schedule(args: BenchArgs, json_out: bool) -> Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("bench-schedule.db");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(SqliteStore::open_or_create(&path)?);
    store.init().await?;
    let config = Arc::new(
        Config::from_value(&json!({
            "task_config": {"labourers": {"bench": {"command": ["true"]}}, "greenfield_task_step": 1},
            "job_schema": {"chunkable_attrs": ["store"]},
            "meta_handler_config": {"write_meta_to_ddb": !args.no_meta}
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let wiring = wiring(&store, args.no_meta);
    let clock = wiring.clock.clone();
    let days = u64::from(args.tasks).min(1000);
    let stores = u64::from(args.tasks).div_ceil(days);
    let job = json!({
        "lambda_name": "bench",
        "period": format!("2000-01-01..{}", sosw_core::schedule::Date::parse("2000-01-01").map(|d| d.plus_days(days as i64 - 1).to_string()).unwrap_or_default()),
        "isolate_days": true,
        "isolate_stores": true,
        "stores": (0..stores).map(|i| format!("store-{i:06}")).collect::<Vec<_>>(),
    });
    let scheduler = sosw_engine::Scheduler::new(config, &wiring);
    let started = Instant::now();
    let plan = scheduler
        .plan(&job, clock.now())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let planned = started.elapsed();
    let report = scheduler
        .run(&plan, clock.as_ref(), |_| {})
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let total = started.elapsed();
    let rate = |d: Duration| report.total as f64 / d.as_secs_f64();
    let db_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    let out = json!({
        "tasks": report.total,
        "created": report.created,
        "meta": !args.no_meta,
        "seconds": total.as_secs_f64(),
        "tasks_per_second": rate(total),
        "validate_seconds": planned.as_secs_f64(),
        "write_tasks_per_second": rate(total - planned),
        "database_bytes": db_bytes,
    });
    if json_out {
        print_json(&out);
    } else {
        outln!(
            "scheduled one job of {} tasks ({days} days x {stores} stores), meta {}: {:.2} s = {:.0} tasks/s",
            report.total,
            if args.no_meta { "off" } else { "on" },
            total.as_secs_f64(),
            rate(total)
        );
        outln!(
            "  validating pass {:.2} s, writes {:.0} tasks/s, database {:.1} MiB",
            planned.as_secs_f64(),
            rate(total - planned),
            db_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}

/// The benchmark's adapters: the SQLite file, the system clock, no metrics or notifications worth measuring.
fn wiring(store: &Arc<SqliteStore>, no_meta: bool) -> Wiring {
    Wiring {
        store: store.clone(),
        meta: if no_meta { None } else { Some(store.clone()) },
        metrics: Arc::new(LocalMetrics::new()),
        notifier: Arc::new(LocalNotifier::new(None)),
        clock: Arc::new(SystemClock),
    }
}
