//! Worker reports, with the per-invocation report token.

use super::*;

/// A WorkerAssistant event (`mark_task_as_completed`, `mark_task_as_failed`, `heartbeat`), as `sosw run` has always
/// taken it on `/report`. Who may report ([`report_allowed`]): the worker of the task's latest invocation, with the
/// report token it was given; a caller with a `write` token; anyone on an open (loopback) server.
pub(super) async fn report(State(s): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let event = read_json(&s.limits, body).await?;
    let of = report_allowed(&s, &headers, &event).await?;
    let kind = match event
        .get("action")
        .or_else(|| event.get("actions"))
        .and_then(Value::as_str)
    {
        Some("mark_task_as_completed") => "completed",
        Some("mark_task_as_failed") => "failed",
        _ => "heartbeat",
    };
    let row = s.wa.handle_event(&event, of, s.clock.now()).await?;
    s.counters.observe_report(kind);
    ok(Value::Object(row))
}

/// Refuses (403, nothing written) a report whose token is not the task's latest invocation's: stale (the task was
/// invoked again since, or that invocation was given back unsent) or forged. Without a report token, the caller's
/// bearer token needs `write` on a server with tokens. Returns the invocation a good token names: the report is
/// then written only while the task is still at it (the store checks it again in the write, so a re-invocation
/// between this check and the write is refused with 403 too).
pub(super) async fn report_allowed(
    s: &Service,
    headers: &HeaderMap,
    event: &Value,
) -> Result<Option<Invocation>, ApiError> {
    let token = headers
        .get(sosw_core::ports::REPORT_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| event.get("report_token").and_then(Value::as_str));
    let Some(token) = token else {
        return s.auth.require(headers, Scope::Write).map(|_| None);
    };
    let task_id = event.get("task_id").and_then(Value::as_str).unwrap_or_default();
    let at = match s.wiring.store.get(task_id).await? {
        Some(t) => t.task.invocation(),
        // Unknown: the WorkerAssistant says so (404).
        None => return Ok(None),
    };
    if s.report_tokens.verify(task_id, at, token) {
        return Ok(Some(at));
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "the report token is not the one of task `{task_id}`'s latest invocation: it is stale (the task was \
             invoked again since) or forged; nothing was recorded"
        ),
    ))
}
