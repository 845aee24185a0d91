//! Tasks: create, get, list in cursor pages, re-queue a dead one.

use super::*;

pub(super) async fn task(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let now = s.clock.now();
    let Some(t) = s.wiring.store.get(&id).await? else {
        return Err(ApiError::not_found(format!("task `{id}` not found")));
    };
    let events = match &s.wiring.meta {
        Some(meta) => meta.events_of(&id).await?,
        None => Vec::new(),
    };
    ok(json!({"state": s.config.state_of(&t, now).as_str(), "task": Value::Object(t.to_row()), "events": events}))
}

/// A task closed as dead, back at the head of its queue for one more attempt (`requeued_by_operator`).
pub(super) async fn requeue(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let now = s.clock.now();
    let t = sosw_engine::tasks::requeue_dead(&s.config, &s.wiring, &id, &caller.name, now).await?;
    tracing::info!(task = %id, by = %caller.name, "dead task re-queued through the API");
    ok(json!({"state": s.config.state_of(&t, now).as_str(), "task": Value::Object(t.to_row())}))
}

/// `?labourer=ID&state=queued&limit=100&cursor=…`; `next_cursor` resumes after the last row.
pub(super) async fn list_tasks(State(s): Shared, headers: HeaderMap, RawQuery(query): RawQuery) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let (mut labourer, mut state, mut limit, mut cursor) = (None, None, DEFAULT_PAGE, None);
    for (k, v) in form_pairs(query.as_deref().unwrap_or(""))? {
        match k.as_str() {
            "labourer" => labourer = Some(v),
            "state" => state = Some(parse_state(&v)?),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::bad_request(format!("`limit`: expected 1 to {MAX_PAGE}, got `{v}`")))?
            }
            "cursor" => cursor = Some(decode_cursor(&v)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`; expected labourer, state, limit, cursor"
                )))
            }
        }
    }
    let now = s.clock.now();
    let store = s.wiring.store.as_ref();
    let filters = Filters {
        labourer: labourer.clone(),
        state: state.map(|s| s.as_str().to_string()),
    };
    let cursor =
        match cursor {
            Some(c) if c.filters != filters => return Err(ApiError::bad_request(
                "`cursor`: it belongs to another listing (other `labourer` or `state` filters); pass it back with the \
                 filters it was given with",
            )),
            other => other.map(|c| c.at),
        };
    let labourers = match labourer {
        Some(l) => vec![l],
        None => listed_labourers(&s.config, store).await?,
    };
    let page = list_page(&s.config, store, &labourers, state, cursor.as_ref(), limit, now).await?;
    let next = page.next.map(|at| Cursor {
        filters: filters.clone(),
        at,
    });
    let tasks: Vec<Value> = page
        .tasks
        .iter()
        .map(|(t, state)| {
            let mut row = t.to_row();
            row.insert("state".into(), state.as_str().into());
            Value::Object(row)
        })
        .collect();
    ok(json!({"tasks": tasks, "next_cursor": next.as_ref().map(encode_cursor)}))
}

/// `{"labourer_id", "payload"?, "count"?}` or `{"tasks": [{"labourer_id", "payload"?, "task_id"?}, …]}`.
pub(super) async fn create_tasks(State(s): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    s.auth.require(&headers, Scope::Write)?;
    let body = object_or_empty(read_json(&s.limits, body).await?)?;
    let now = s.clock.now();
    let tasks = match body.get("tasks") {
        Some(Value::Array(items)) => {
            known_keys(&body, &["tasks"])?;
            if items.is_empty() || items.len() > MAX_BATCH {
                return Err(ApiError::bad_request(format!(
                    "`tasks`: expected 1 to {MAX_BATCH} tasks, got {}",
                    items.len()
                )));
            }
            let mut out = Vec::with_capacity(items.len());
            // Ids made together, in the list's order ([`sosw_engine::tasks::new_task_ids`]).
            let fresh = sosw_engine::tasks::new_task_ids(now, items.len());
            for ((i, item), id) in items.iter().enumerate().zip(fresh) {
                let Value::Object(t) = item else {
                    return Err(ApiError::bad_request(format!("`tasks[{i}]`: expected an object")));
                };
                known_keys(t, &["labourer_id", "payload", "task_id"])
                    .map_err(|e| prefix(&format!("`tasks[{i}]`"), e))?;
                out.push(
                    new_task(t, vec![id])
                        .map_err(|e| prefix(&format!("`tasks[{i}]`"), e))?
                        .remove(0),
                );
            }
            out
        }
        Some(_) => return Err(ApiError::bad_request("`tasks`: expected a list of tasks")),
        None => {
            known_keys(&body, &["labourer_id", "payload", "count", "task_id"])?;
            let count = match body.get("count") {
                None => 1,
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=MAX_BATCH as u64).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "`count`: expected 1 to {MAX_BATCH}, got {}",
                            sosw_core::payload::shown(v)
                        ))
                    })? as usize,
            };
            new_task(&body, sosw_engine::tasks::new_task_ids(now, count))?
        }
    };
    let report = s.wiring.task_manager(s.config.clone()).create(&tasks, now).await?;
    let created: Vec<Value> = report.created_rows();
    Ok((
        StatusCode::CREATED,
        Json(json!({"created": created, "existing": report.existing})),
    )
        .into_response())
}

/// The most bytes of payload one request may make (`count` copies of one payload): 64 MiB.
pub(super) const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Tasks of one `{"labourer_id", "payload"?, "task_id"?}`, one per fresh id (a `task_id`, which replaces the fresh
/// one, only with a count of 1).
pub(super) fn new_task(t: &Map<String, Value>, fresh_ids: Vec<String>) -> Result<Vec<NewTask>, ApiError> {
    let count = fresh_ids.len();
    let labourer = match t.get("labourer_id") {
        Some(Value::String(l)) if !l.is_empty() => l.clone(),
        _ => {
            return Err(ApiError::bad_request(
                "`labourer_id` is required: a labourer of `task_config.labourers`",
            ))
        }
    };
    let base = match t.get("payload") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => Some(p.clone()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`payload`: expected a JSON object, got {}",
                sosw_core::payload::shown(other)
            )))
        }
    };
    let payload = Value::Object(construct_payload(base, Map::new())).to_string();
    if payload.len().saturating_mul(count) > MAX_PAYLOAD_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{count} tasks of a {}-byte payload make more than {MAX_PAYLOAD_BYTES} bytes: send fewer per request",
                payload.len()
            ),
        ));
    }
    let id = match t.get("task_id") {
        None => None,
        Some(_) if count != 1 => return Err(ApiError::bad_request("`task_id` names one task: not with a `count`")),
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 256 => Some(id.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "`task_id`: expected a non-empty string of at most 256 bytes",
            ))
        }
    };
    let ids = match id {
        Some(id) => vec![id],
        None => fresh_ids,
    };
    Ok(ids
        .into_iter()
        .map(|task_id| NewTask {
            task_id,
            labourer_id: labourer.clone(),
            payload: payload.clone(),
        })
        .collect())
}

pub(super) fn parse_state(v: &str) -> Result<Whereabouts, ApiError> {
    use Whereabouts as W;
    [
        W::Queued,
        W::Running,
        W::Expired,
        W::Completed,
        W::Retry,
        W::Closed,
        W::Dead,
    ]
    .into_iter()
    .find(|w| w.as_str() == v)
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "`state`: expected queued, running, expired, completed, retry, closed or dead, got `{v}`"
        ))
    })
}

/// `application/x-www-form-urlencoded` pairs, each decoded; a parameter given twice is refused.
pub(super) fn form_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k)?, percent_decode(v)?);
        if out.iter().any(|(o, _)| *o == k) {
            return Err(ApiError::bad_request(format!("query parameter `{k}` given twice")));
        }
        out.push((k, v));
    }
    Ok(out)
}

pub(super) fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("the query is not valid URL encoding: `{s}`"));
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        match b {
            b'%' => {
                let hi = it.next().and_then(|c| (c as char).to_digit(16)).ok_or_else(bad)?;
                let lo = it.next().and_then(|c| (c as char).to_digit(16)).ok_or_else(bad)?;
                bytes.push((hi * 16 + lo) as u8);
            }
            b'+' => bytes.push(b' '),
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// The filters a listing was asked with: a cursor resumes only the listing it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Filters {
    labourer: Option<String>,
    state: Option<String>,
}

/// Where a listing resumes, and which listing it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Cursor {
    filters: Filters,
    at: PageCursor,
}

/// A cursor is opaque to clients: URL-safe base64 of its JSON.
pub(super) fn encode_cursor(c: &Cursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

pub(super) fn decode_cursor(text: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::bad_request("`cursor`: not a cursor this server gave (pass `next_cursor` back unchanged)");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}
