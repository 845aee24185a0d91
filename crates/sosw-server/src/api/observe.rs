//! `/metrics`: the labourers' status at each scrape, and the process's counters.

use super::*;

pub(super) async fn prometheus(State(s): Shared, headers: HeaderMap) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let now = s.clock.now();
    let statuses = status(&s.config, &s.wiring, now).await?;
    let mut scrapes = Vec::with_capacity(statuses.len());
    for st in &statuses {
        let oldest_queued = if st.counts.queued == 0 {
            None
        } else {
            head_of_queue(&s, &st.labourer_id, now).await?
        };
        scrapes.push(Scrape {
            status: st,
            oldest_queued,
        });
    }
    let text = metrics::render(&s.counters, &scrapes, now)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        return Ok(([(header::CONTENT_TYPE, metrics::OPENMETRICS)], text).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, metrics::TEXT_FORMAT)],
        metrics::text_format(&text),
    )
        .into_response())
}

/// When the task at the head of the labourer's queue was created.
pub(super) async fn head_of_queue(
    s: &Service,
    labourer: &str,
    now: sosw_core::Time,
) -> Result<Option<sosw_core::Time>, ApiError> {
    let (range, completed) = TaskState::Queued.range(&s.config.markers_for(labourer, now));
    let q = TaskQuery {
        table: Table::Live,
        labourer: Some(labourer.to_string()),
        greenfield: Some(range),
        completed: Some(completed),
        limit: 1,
        after: None,
    };
    let head = s.wiring.store.list(&q).await?;
    Ok(head
        .first()
        .map(|t| sosw_core::Time::from_millis((t.task.created_at * 1000.0) as i64)))
}
