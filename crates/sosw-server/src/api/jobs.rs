//! Jobs for the Scheduler: submit, follow.

use super::*;

/// A business job for the Scheduler, as `sosw schedule` takes it. Planned (validated, counted, checked against the
/// queue's room) before the answer — a refusal writes nothing — then written in the background: 202 with where to
/// follow its progress.
pub(super) async fn submit_job(State(s): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let event = read_json(&s.limits, body).await?;
    let scheduler = sosw_engine::Scheduler::new(s.scheduler_config.clone(), &s.wiring);
    let plan = scheduler.plan(&event, s.clock.now()).await?;
    let answer = json!({
        "job_id": plan.job_id,
        "labourer_id": plan.labourer,
        "total": plan.total,
        "warnings": plan.warnings,
        "progress": format!("/api/jobs/{}", plan.job_id),
    });
    tracing::info!(job = %plan.job_id, by = %caller.name, total = plan.total, "job submitted through the API");
    let clock = s.clock.clone();
    tokio::spawn(async move {
        match scheduler.run(&plan, clock.as_ref(), |_| {}).await {
            Ok(r) => tracing::info!(job = %r.job_id, created = r.created, existing = r.existing, "job scheduled"),
            Err(e) => tracing::error!(job = %plan.job_id, "scheduling the job failed (submit it again to resume): {e}"),
        }
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

pub(super) fn job_json(p: &sosw_core::ports::JobProgress) -> Value {
    use sosw_core::time::iso8601;
    json!({
        "job_id": p.job_id,
        "labourer_id": p.labourer_id,
        "total": p.total,
        "scheduled": p.scheduled,
        "state": if p.finished_at.is_some() { "finished" } else { "incomplete" },
        "started_at": iso8601(p.started_at),
        "updated_at": iso8601(p.updated_at),
        "finished_at": p.finished_at.map(iso8601),
    })
}

pub(super) async fn job(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    match s.wiring.store.get_job(&id).await? {
        Some(p) => ok(job_json(&p)),
        None => Err(ApiError::not_found(format!("job `{id}` not found"))),
    }
}

/// The 50 most recently updated jobs.
pub(super) async fn list_jobs(State(s): Shared, headers: HeaderMap) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let jobs = s.wiring.store.list_jobs(50).await?;
    ok(json!({"jobs": jobs.iter().map(job_json).collect::<Vec<_>>()}))
}
