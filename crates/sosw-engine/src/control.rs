//! An operator's controls of a labourer ([`sosw_core::flow::LabourerControl`]): pause (until a time), resume, a
//! live limit. Each is a change of the stored control, recorded in the labourer's audit trail
//! ([`sosw_core::meta::labourer_trail`]). Every orchestrator sees it at its next pass.

use crate::meta::MetaHandler;
use crate::{EngineError, Wiring};
use serde_json::json;
use sosw_core::config::Config;
use sosw_core::flow::{LabourerControl, Pause};
use sosw_core::meta::labourer_trail;
use sosw_core::ports::StoreError;
use sosw_core::{MetaAction, Time};

/// What an operator changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlChange {
    /// Dispatch nothing until `until` (or until resumed).
    Pause {
        until: Option<Time>,
        reason: Option<String>,
    },
    Resume,
    /// Replace `max_simultaneous_invocations` until cleared.
    Limit(u32),
    /// Back to the configured limit.
    ClearLimit,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `change` to `labourer_id`'s stored control at `now`, on behalf of `by`; returns the control now in
/// force. The labourer must be configured: a typo must not pause nothing.
pub async fn change(
    config: &Config,
    wiring: &Wiring,
    labourer_id: &str,
    change: ControlChange,
    by: &str,
    now: Time,
) -> Result<LabourerControl, ControlError> {
    if config.labourer(labourer_id).is_none() {
        return Err(EngineError::UnknownLabourer(labourer_id.to_string()).into());
    }
    let store = wiring.store.as_ref();
    let mut control = store
        .labourer_controls()
        .await?
        .into_iter()
        .find(|c| c.labourer_id == labourer_id)
        .unwrap_or_else(|| LabourerControl::new(labourer_id, now, by));
    control.updated_at = now;
    control.updated_by = by.to_string();
    let (action, details) = match &change {
        ControlChange::Pause { until, reason } => {
            control.paused = Some(Pause {
                since: now,
                until: *until,
                reason: reason.clone(),
            });
            (
                MetaAction::LabourerPaused,
                json!({"until": until.map(sosw_core::time::iso8601), "reason": reason}),
            )
        }
        ControlChange::Resume => {
            control.paused = None;
            (MetaAction::LabourerResumed, json!({}))
        }
        ControlChange::Limit(n) => {
            control.limit = Some(*n);
            (MetaAction::LabourerLimitChanged, json!({"limit": n}))
        }
        ControlChange::ClearLimit => {
            control.limit = None;
            (MetaAction::LabourerLimitChanged, json!({"limit": null}))
        }
    };
    store.save_labourer_control(&control).await?;
    let meta = MetaHandler::new(wiring.meta.clone(), format!("sosw_operator {by}"));
    meta.post(vec![meta.event(
        &labourer_trail(labourer_id),
        labourer_id,
        action,
        now,
        Some(details),
    )])
    .await;
    Ok(control)
}
