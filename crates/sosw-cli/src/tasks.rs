//! `sosw task create | show | list`: queue tasks, show one with its audit trail, stream a listing.

use crate::app::App;
use crate::args::parse_json_arg;
use crate::cli::{Global, StateFilter};
use crate::output::{print_json, StreamedTable};
use crate::UsageError;
use anyhow::Result;
use serde_json::{json, Map, Value};
use sosw_core::payload::construct_payload;
use sosw_core::ports::ListCursor;
use sosw_core::{Essential, NewTask, StoredTask, Time};
use std::io::Write;

/// `task create --count N` writes at most this many tasks per transaction, and at most [`CREATE_CHUNK_BYTES`] of
/// payload (held a few times over while a chunk is written): memory stays flat in N, and the ids are printed as
/// each chunk commits.
const CREATE_CHUNK_TASKS: usize = 10_000;
const CREATE_CHUNK_BYTES: usize = 16 << 20;

pub(crate) async fn task_create(g: &Global, labourer: &str, payload: Option<&str>, count: u32) -> Result<()> {
    let app = App::load(g, Essential::Scheduler).await?;
    if app.config.labourer(labourer).is_none() {
        return Err(UsageError(format!(
            "unknown labourer `{labourer}`: it is not in `task_config.labourers`"
        ))
        .into());
    }
    let base = payload.map(|p| parse_json_arg("--payload", p)).transpose()?;
    let payload = Value::Object(construct_payload(base, Map::new())).to_string();
    let now = app.clock.now();
    let wiring = app.wiring();
    let tm = wiring.task_manager(app.config.clone());
    let per_chunk = (CREATE_CHUNK_BYTES / payload.len().max(1)).clamp(1, CREATE_CHUNK_TASKS);
    // One run of ids for all chunks: every task of the command sorts in creation order.
    let mut ids = sosw_engine::tasks::NewTaskIds::at(now);
    // `--json` with a count: one array, written as the chunks commit (closed even when a chunk fails, so that what
    // was printed is the valid list of the tasks created). Output that cannot be written (`| head`) does not stop
    // the creation.
    let array = g.json && count > 1;
    if array {
        crate::output::out("[");
    }
    let (mut created, mut left) = (0usize, count as usize);
    // More than one chunk: Ctrl-C (or SIGTERM) stops between chunks, so that what was printed is what was created.
    let mut stop = (left > per_chunk).then(|| Box::pin(crate::daemon::shutdown_signal()));
    while left > 0 {
        if let Some(signal) = stop.as_mut() {
            if futures::FutureExt::now_or_never(signal.as_mut()).is_some() {
                if array {
                    crate::output::out("\n]\n");
                }
                return Err(anyhow::anyhow!(
                    "interrupted: {created} of the {count} tasks were created (they stay); the rest were not"
                ));
            }
        }
        let n = left.min(per_chunk);
        let tasks: Vec<NewTask> = ids
            .by_ref()
            .take(n)
            .map(|task_id| NewTask {
                task_id,
                labourer_id: labourer.to_string(),
                payload: payload.clone(),
            })
            .collect();
        let report = match tm.create(&tasks, now).await {
            Ok(report) => report,
            Err(e) => {
                if array {
                    crate::output::out("\n]\n");
                }
                let e = anyhow::Error::from(e);
                return Err(match created {
                    0 => e,
                    n => e.context(format!(
                        "{n} of the {count} tasks were created before this failure; they stay"
                    )),
                });
            }
        };
        for row in report.created_rows() {
            let text = match g.json {
                true => serde_json::to_string_pretty(&row)?,
                false => row["task_id"].as_str().unwrap_or_default().to_string(),
            };
            let sep = match (array, created) {
                (true, 0) => "\n",
                (true, _) => ",\n",
                (false, _) => "",
            };
            crate::output::out(&format!("{sep}{text}{}", if array { "" } else { "\n" }));
            created += 1;
        }
        left -= n;
    }
    if array {
        crate::output::out("\n]\n");
    }
    Ok(())
}

pub(crate) async fn task_show(g: &Global, task_id: &str) -> Result<()> {
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
    outln!("state: {state}");
    for (k, v) in t.to_row() {
        // Times for people: ISO 8601 (the stored epoch seconds are in `--json`).
        let time = matches!(
            k.as_str(),
            "created_at" | "completed_at" | "closed_at" | "desired_launch_time"
        )
        .then(|| v.as_f64())
        .flatten()
        .map(|secs| sosw_core::time::iso8601(Time::from_millis((secs * 1000.0) as i64)));
        match time {
            Some(iso) => outln!("{k}: {iso}"),
            None => outln!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), str::to_string)),
        }
    }
    if !events.is_empty() {
        outln!("events:");
        for e in events {
            let details = e.details.map(|d| format!(" {d}")).unwrap_or_default();
            outln!(
                "  {}  {:<20}  {}{details}",
                sosw_core::time::iso8601(e.at),
                e.action.as_str(),
                e.author
            );
        }
    }
    Ok(())
}

pub(crate) async fn task_requeue(g: &Global, task_id: &str, by: &str) -> Result<()> {
    let app = App::load(g, Essential::Orchestrator).await?;
    let now = app.clock.now();
    let t = sosw_engine::tasks::requeue_dead(&app.config, &app.wiring(), task_id, by, now).await?;
    if g.json {
        let mut row = t.to_row();
        row.insert("state".into(), app.config.state_of(&t, now).as_str().into());
        print_json(&Value::Object(row));
    } else {
        outln!(
            "task `{task_id}` is queued again at the head of `{}`'s queue (attempt {} next)",
            t.task.labourer_id,
            t.task.attempts.saturating_add(1)
        );
    }
    Ok(())
}

/// How many rows `task list` reads from the store at a time.
const LIST_PAGE: usize = 1000;

/// Streams the listing: pages of [`LIST_PAGE`] rows read through the store's keyset cursor, each row written as it
/// comes — JSON lines with `--json`, else a table in fixed column widths — so memory does not grow with `--limit`.
pub(crate) async fn task_list(
    g: &Global,
    labourer: Option<&str>,
    state: Option<StateFilter>,
    limit: usize,
) -> Result<()> {
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
pub(crate) async fn stream_tasks<W: Write>(
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
        let state = state.map(StateFilter::whereabouts);
        let queries = sosw_engine::tasks::listing_queries(&app.config, l, state, LIST_PAGE, now);
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
