//! `sosw demo`: the whole of sosw on one machine, in a scratch directory, with the example workers of
//! `examples/demo/`. Two labourers share thousands of tasks: `resize` has flaky and corrupt inputs (retries, dead
//! tasks, notifications); `reports` is throttled by a database CPU metric that the demo moves over time.

// The demo and the benchmark measure real elapsed time (`clippy.toml`).
#![allow(clippy::disallowed_methods)]

use crate::app::{load_config, open_store, store_spec, App};
use crate::cli::{DemoArgs, Global};
use crate::output::print_json;
use crate::UsageError;
use anyhow::{Context, Result};
use serde_json::json;
use sosw_core::{Essential, NewTask};
use sosw_engine::daemon::{self, PassReport};
use sosw_engine::{Orchestrator, Scavenger};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONFIG: &str = include_str!("../../../../examples/demo/sosw.json");
const RESIZE: &str = include_str!("../../../../examples/demo/workers/resize.sh");
const REPORT: &str = include_str!("../../../../examples/demo/workers/report.sh");

/// The database CPU over the demo: (seconds from the start, value). With feelings `{3: 50, 4: 25}` and `<=`,
/// 20 is High (all 20 slots), 40 Good (15), 75 Bad (none).
const DB_CPU: &[(f64, u32)] = &[(0.0, 20), (4.0, 40), (8.0, 75), (14.0, 20)];

/// The demo gives up after this long.
const DEADLINE: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct Tally {
    invoked: BTreeMap<String, u64>,
    retried: BTreeMap<String, u64>,
    dead_reported: BTreeMap<String, u64>,
    /// `desired` of each labourer, each time it changed: (seconds, eco status, desired).
    desired: BTreeMap<String, Vec<(f64, u8, u32)>>,
    last_eco: BTreeMap<String, (u8, u32)>,
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating `{}`", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing `{}`", path.display()))
}

fn db_cpu_at(elapsed: f64) -> u32 {
    DB_CPU
        .iter()
        .rev()
        .find(|(t, _)| elapsed >= *t)
        .map_or(DB_CPU[0].1, |(_, v)| *v)
}

pub async fn run(args: DemoArgs, json_out: bool) -> Result<()> {
    if args.tasks == 0 {
        return Err(UsageError("`--tasks` must be at least 1".into()).into());
    }
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = match &args.dir {
        Some(d) => {
            if d.join("demo.db").exists() {
                return Err(UsageError(format!(
                    "`{}` already holds a demo; pick an empty directory",
                    d.display()
                ))
                .into());
            }
            d.clone()
        }
        None => scratch.path().to_path_buf(),
    };
    write(&dir, "sosw.json", CONFIG)?;
    write(&dir, "workers/resize.sh", RESIZE)?;
    write(&dir, "workers/report.sh", REPORT)?;
    write(&dir, "health/db_cpu", &format!("{}\n", DB_CPU[0].1))?;

    let global = Global {
        config: dir.join("sosw.json"),
        store: None,
        json: json_out,
        verbose: 0,
    };
    let config = load_config(&global.config, Essential::Orchestrator).await?;
    let scavenger_config = Arc::new(load_config(&global.config, Essential::Scavenger).await?);
    let spec = store_spec(&global, Some(&config))?;
    let store = open_store(&spec, Some(&config), true).await?;
    let app = App::new(config, store, &global);
    let wiring = app.wiring();

    let started = Instant::now();
    let tm = wiring.task_manager(app.config.clone());
    for (labourer, what) in [("resize", "image"), ("reports", "report")] {
        let now = app.clock.now();
        let ids = sosw_engine::tasks::new_task_ids(now, args.tasks as usize);
        let tasks: Vec<NewTask> = (1..=args.tasks)
            .zip(ids)
            .map(|(n, task_id)| NewTask {
                task_id,
                labourer_id: labourer.to_string(),
                payload: json!({"n": n, what: format!("{what}-{n:05}")}).to_string(),
            })
            .collect();
        tm.create(&tasks, now).await?;
    }
    if !json_out {
        outln!(
            "sosw demo in {}: {} tasks for each of `resize` (flaky and corrupt inputs) and `reports` (throttled by db_cpu)",
            dir.display(),
            args.tasks
        );
    }

    let (invokers, supervisor) = app.invokers(&wiring).await;
    let orchestrator =
        Orchestrator::new(app.config.clone(), &wiring, invokers.as_ref()).map_err(|e| UsageError(e.to_string()))?;
    let scavenger = Scavenger::new(scavenger_config, &wiring);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();

    let monitor = {
        let store = app.store.clone();
        let config = app.config.clone();
        let tally = tally.clone();
        let dir = dir.clone();
        let total = u64::from(args.tasks);
        async move {
            let mut cpu = DB_CPU[0].1;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let elapsed = started.elapsed().as_secs_f64();
                let want = db_cpu_at(elapsed);
                if want != cpu {
                    cpu = want;
                    write(&dir, "health/db_cpu", &format!("{cpu}\n"))?;
                }
                let now = sosw_core::Clock::now(&sosw_core::SystemClock);
                let mut done = true;
                let mut line = format!("{elapsed:5.1}s  db_cpu {cpu:>2}");
                for l in &config.labourers {
                    let c = store.counts(&l.id, &l.markers(now, config.greenfield.delta)).await?;
                    let closed = c.closed_completed + c.closed_dead;
                    done &= closed == total;
                    let eco = tally.lock().map(|t| t.last_eco.get(&l.id).copied()).unwrap_or_default();
                    let (eco, desired) = eco.unwrap_or((4, l.max_simultaneous_invocations));
                    line.push_str(&format!(
                        "  | {}: eco {eco} desired {desired:>2}  queued {:>4} running {:>2} retry {:>3} done {:>4} dead {:>2}",
                        l.id, c.queued + c.expired, c.running, c.retry_waiting, c.closed_completed, c.closed_dead
                    ));
                }
                if !json_out && (elapsed * 4.0).round() as u64 % 4 == 0 {
                    outln!("{line}");
                }
                if done {
                    let _ = stop.send(());
                    return Ok::<_, anyhow::Error>(elapsed);
                }
                if started.elapsed() > DEADLINE {
                    let _ = stop.send(());
                    anyhow::bail!("the demo did not finish within {} s", DEADLINE.as_secs());
                }
            }
        }
    };
    let shutdown = async {
        let _ = stopped.await;
    };
    let on_report = {
        let tally = tally.clone();
        move |r: PassReport, _took: Duration| {
            let Ok(mut t) = tally.lock() else { return };
            let at = started.elapsed().as_secs_f64();
            match r {
                PassReport::Orchestrator(r) => {
                    for l in r.labourers {
                        *t.invoked.entry(l.labourer_id.clone()).or_default() += u64::from(l.invoked);
                        if t.last_eco.get(&l.labourer_id) != Some(&(l.eco_status, l.desired)) {
                            t.desired
                                .entry(l.labourer_id.clone())
                                .or_default()
                                .push((at, l.eco_status, l.desired));
                            t.last_eco.insert(l.labourer_id, (l.eco_status, l.desired));
                        }
                    }
                }
                PassReport::Scavenger(r) => {
                    for l in r.labourers {
                        *t.retried.entry(l.labourer_id.clone()).or_default() += u64::from(l.retried);
                        *t.dead_reported.entry(l.labourer_id).or_default() += u64::from(l.dead);
                    }
                }
            }
        }
    };
    let (elapsed, _) = tokio::join!(
        monitor,
        daemon::run(
            &orchestrator,
            &scavenger,
            app.clock.as_ref(),
            app.config.daemon,
            shutdown,
            on_report
        )
    );
    let elapsed = elapsed?;
    supervisor.drain(Duration::from_secs(5)).await;

    let notifications = std::fs::read_to_string(dir.join("notifications.log")).unwrap_or_default();
    let notified = notifications.matches("Closing dead task:").count();
    let tally = std::mem::take(
        &mut *tally
            .lock()
            .map_err(|_| anyhow::anyhow!("the demo's tally was poisoned"))?,
    );
    let now = sosw_core::Clock::now(&sosw_core::SystemClock);
    let mut labourers = serde_json::Map::new();
    for l in &app.config.labourers {
        let c = app
            .store
            .counts(&l.id, &l.markers(now, app.config.greenfield.delta))
            .await?;
        let timeline: Vec<serde_json::Value> = tally
            .desired
            .get(&l.id)
            .map(|v| v.iter().map(|(at, eco, desired)| json!({"at": (at * 10.0).round() / 10.0, "eco_status": eco, "desired": desired})).collect())
            .unwrap_or_default();
        labourers.insert(
            l.id.clone(),
            json!({
                "completed": c.closed_completed,
                "dead": c.closed_dead,
                "invocations": tally.invoked.get(&l.id).copied().unwrap_or(0),
                "retried": tally.retried.get(&l.id).copied().unwrap_or(0),
                "desired_changes": timeline,
            }),
        );
    }
    let summary = json!({
        "seconds": (elapsed * 10.0).round() / 10.0,
        "tasks": 2 * u64::from(args.tasks),
        "labourers": labourers,
        "dead_task_notifications": notified,
        "directory": dir.display().to_string(),
    });
    if json_out {
        print_json(&summary);
    } else {
        outln!();
        outln!("finished in {elapsed:.1} s: {} tasks through sosw", 2 * args.tasks);
        for (id, v) in summary["labourers"].as_object().into_iter().flatten() {
            outln!(
                "  {id}: {} completed, {} dead, {} invocations, {} retried after expiring",
                v["completed"],
                v["dead"],
                v["invocations"],
                v["retried"]
            );
            let changes: Vec<String> = v["desired_changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{}s: eco {} → {}", c["at"], c["eco_status"], c["desired"]))
                .collect();
            outln!("    invocation limit: {}", changes.join(", "));
        }
        outln!("  dead-task notifications: {notified} (in notifications.log)");
        if args.dir.is_some() {
            outln!("  inspect: sosw --config {} status", dir.join("sosw.json").display());
        }
    }
    Ok(())
}
