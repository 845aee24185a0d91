//! Labourers: their status and why they are held back; an operator's pause, resume and limit.

use super::*;

pub(super) async fn labourers(State(s): Shared, headers: HeaderMap) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    let all = status(&s.config, &s.wiring, s.clock.now()).await?;
    ok(json!({"labourers": all}))
}

pub(super) async fn labourer(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    s.auth.require(&headers, Scope::Read)?;
    match labourer_status(&s.config, &s.wiring, &id, s.clock.now()).await? {
        Some(st) => ok(serde_json::to_value(st).unwrap_or(Value::Null)),
        None => Err(ApiError::not_found(format!(
            "unknown labourer `{id}`: it is not in `task_config.labourers`"
        ))),
    }
}

/// `{"until": "2h" | "2026-12-01T09:30:00Z", "reason": "..."}`, both optional.
pub(super) async fn pause(State(s): Shared, headers: HeaderMap, Path(id): Path<String>, body: Body) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let body = object_or_empty(read_json(&s.limits, body).await?)?;
    known_keys(&body, &["until", "reason"])?;
    let now = s.clock.now();
    let until = match body.get("until") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => {
            Some(sosw_core::time::parse_until(t, now).map_err(|e| ApiError::bad_request(format!("`until`: {e}")))?)
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`until`: expected a time such as \"2h\" or \"2026-12-01T09:30:00Z\", got {}",
                sosw_core::payload::shown(other)
            )))
        }
    };
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r.chars().count() <= 500 => Some(r.clone()),
        Some(Value::String(_)) => return Err(ApiError::bad_request("`reason`: at most 500 characters")),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`reason`: expected a string, got {}",
                sosw_core::payload::shown(other)
            )))
        }
    };
    let control = change(
        &s.config,
        &s.wiring,
        &id,
        ControlChange::Pause { until, reason },
        &caller.name,
        now,
    )
    .await?;
    tracing::info!(labourer = %id, by = %caller.name, "paused through the API");
    ok(serde_json::to_value(control).unwrap_or(Value::Null))
}

pub(super) async fn resume(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let control = change(
        &s.config,
        &s.wiring,
        &id,
        ControlChange::Resume,
        &caller.name,
        s.clock.now(),
    )
    .await?;
    tracing::info!(labourer = %id, by = %caller.name, "resumed through the API");
    ok(serde_json::to_value(control).unwrap_or(Value::Null))
}

/// `{"limit": N}` replaces `max_simultaneous_invocations` until `{"limit": null}` clears it.
pub(super) async fn set_limit(State(s): Shared, headers: HeaderMap, Path(id): Path<String>, body: Body) -> ApiResult {
    let caller = s.auth.require(&headers, Scope::Write)?;
    let body = object_or_empty(read_json(&s.limits, body).await?)?;
    known_keys(&body, &["limit"])?;
    let what = match body.get("limit") {
        Some(Value::Null) => ControlChange::ClearLimit,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => ControlChange::Limit(n),
            None => {
                return Err(ApiError::bad_request(format!(
                    "`limit`: expected a whole number from 0 to {}, or null to clear it, got {}",
                    u32::MAX,
                    sosw_core::payload::shown(v)
                )))
            }
        },
        None => {
            return Err(ApiError::bad_request(
                "`limit` is required: a whole number, or null to clear it",
            ))
        }
    };
    let control = change(&s.config, &s.wiring, &id, what, &caller.name, s.clock.now()).await?;
    tracing::info!(labourer = %id, by = %caller.name, "limit changed through the API");
    ok(serde_json::to_value(control).unwrap_or(Value::Null))
}
