//! `sosw schedule` and `sosw job`.

use crate::app::App;
use crate::cli::Global;
use crate::output::{print_json, table};
use crate::UsageError;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use sosw_core::ports::JobProgress;
use sosw_core::Essential;
use sosw_engine::{ScheduleError, Scheduler};
use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;

fn read_job(source: &str) -> Result<Value> {
    let text = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the job from stdin")?;
        s
    } else {
        std::fs::read_to_string(source).map_err(|e| UsageError(format!("cannot read the job `{source}`: {e}")))?
    };
    serde_json::from_str(&text).map_err(|e| UsageError(format!("the job `{source}` is not valid JSON: {e}")).into())
}

/// Invalid jobs and unknown labourers are usage errors (exit 2); store trouble is a runtime error.
fn classify(e: ScheduleError) -> anyhow::Error {
    match e {
        ScheduleError::Job(_)
        | ScheduleError::Config(_)
        | ScheduleError::QueueFull(_)
        | ScheduleError::TooBig { .. } => UsageError(e.to_string()).into(),
        other => other.into(),
    }
}

pub async fn schedule(g: &Global, source: &str, dry_run: bool) -> Result<()> {
    let event = read_job(source)?;
    let app = App::load(g, Essential::Scheduler).await?;
    let scheduler = Scheduler::new(app.config.clone(), &app.wiring());
    let plan = scheduler.plan(&event, app.clock.now()).await.map_err(classify)?;
    // Valid but probably not what was meant (a chunking flag with no effect): said on stderr, even with --json.
    for w in &plan.warnings {
        errln!("warning: {w}");
    }
    if dry_run {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut write_error = None;
        Scheduler::each_task(&plan, &mut |t| {
            let payload: Value = serde_json::from_str(&t.payload).unwrap_or(Value::Null);
            let line = json!({"task_id": t.task_id, "labourer_id": t.labourer_id, "payload": payload});
            match writeln!(out, "{line}") {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    write_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        })
        .map_err(|e| UsageError(e.to_string()))?;
        let flushed = match write_error {
            Some(e) => Err(e),
            None => out.flush(),
        };
        return match flushed {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(anyhow::Error::from(e).context("cannot write to standard output"))
            }
            _ => Ok(()),
        };
    }
    let bar = (!g.json && std::io::stderr().is_terminal() && plan.total >= 10_000).then(|| {
        let bar = indicatif::ProgressBar::new(plan.total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} tasks, {per_sec}, eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("job {}", plan.job_id));
        bar
    });
    let report = scheduler
        .run(&plan, app.clock.as_ref(), |p| {
            if let Some(bar) = &bar {
                bar.set_position(p.scheduled);
            }
        })
        .await
        .map_err(classify)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if g.json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        outln!(
            "job {}: {} tasks for `{}` ({} created, {} already there)",
            report.job_id,
            report.total,
            report.labourer_id,
            report.created,
            report.existing
        );
    }
    Ok(())
}

fn progress_json(p: &JobProgress) -> Value {
    json!({
        "job_id": p.job_id,
        "labourer_id": p.labourer_id,
        "total": p.total,
        "scheduled": p.scheduled,
        "started_at": p.started_at.as_secs_f64(),
        "updated_at": p.updated_at.as_secs_f64(),
        "finished_at": p.finished_at.map(|t| t.as_secs_f64()),
        "state": if p.finished_at.is_some() { "finished" } else { "incomplete" },
    })
}

fn progress_row(p: &JobProgress) -> Vec<String> {
    vec![
        p.job_id.clone(),
        p.labourer_id.clone(),
        format!("{}/{}", p.scheduled, p.total),
        if p.finished_at.is_some() {
            "finished".into()
        } else {
            "incomplete (re-run to resume)".into()
        },
        utc(p.updated_at),
    ]
}

/// `2026-11-28 08:49:32Z`.
fn utc(t: sosw_core::Time) -> String {
    let secs = t.secs();
    let date = sosw_core::schedule::Date::at(t, 0);
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{date} {:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

const HEADER: [&str; 5] = ["JOB", "LABOURER", "SCHEDULED", "STATE", "UPDATED"];

pub async fn show(g: &Global, job_id: &str) -> Result<()> {
    let app = App::load(g, Essential::Scheduler).await?;
    let Some(p) = app.store.get_job(job_id).await? else {
        anyhow::bail!("job `{job_id}` not found");
    };
    if g.json {
        print_json(&progress_json(&p));
    } else {
        table(&HEADER, &[progress_row(&p)]);
    }
    Ok(())
}

pub async fn list(g: &Global, limit: usize) -> Result<()> {
    let app = App::load(g, Essential::Scheduler).await?;
    let jobs = app.store.list_jobs(limit).await?;
    if g.json {
        print_json(&Value::Array(jobs.iter().map(progress_json).collect()));
    } else {
        table(&HEADER, &jobs.iter().map(progress_row).collect::<Vec<_>>());
    }
    Ok(())
}
