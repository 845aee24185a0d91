//! The status of every labourer, as `sosw status` shows it (and, later, the service's API and metrics): the
//! store's counts, the health and limit the Orchestrator would compute now, and every reason a labourer is held
//! back — paused, throttling, failing, or at one of its limits.

use crate::ecology::EcologyManager;
use crate::Wiring;
use serde::Serialize;
use sosw_core::breaker::{self, Gate};
use sosw_core::config::Config;
use sosw_core::flow::{self, AllowanceInput, DispatchRecord, FlowState, HeldReason, LabourerControl};
use sosw_core::ports::{LabourerCounts, StoreError};
use sosw_core::{Labourer, Time};
use std::collections::HashMap;

/// One labourer's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabourerStatus {
    pub labourer_id: String,
    pub counts: LabourerCounts,
    /// `None` for a labourer the store has tasks of but the config does not know.
    pub limit: Option<Limit>,
    /// Why dispatch is held back, the strongest reason first (empty: it is not).
    pub held_back: Vec<Hold>,
    /// The operator's control, if any.
    pub control: Option<LabourerControl>,
    /// The orchestrator dispatching the labourer right now, if one is.
    pub dispatching: Option<String>,
}

/// What the Orchestrator would allow now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limit {
    pub eco_status: u8,
    /// From the config.
    pub max_simultaneous_invocations: u32,
    /// An operator's limit, replacing `max_simultaneous_invocations` (`sosw labourer limit`).
    pub limit_override: Option<u32>,
    /// `floor(max × coefficient[eco status])`.
    pub desired: u32,
    /// The adaptive limit in force, for a labourer with `adaptive`.
    pub adaptive: Option<u32>,
    /// `max_invocations_per_second`, for a labourer with a rate limit.
    pub rate_per_second: Option<f64>,
    /// Health metrics that could not be read (they count as their failure status).
    pub metric_errors: Vec<String>,
    /// Each health metric's value and the eco status it gives.
    pub health_metrics: Vec<crate::ecology::MetricReading>,
}

/// One reason a labourer is held back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hold {
    pub code: HeldReason,
    pub reason: String,
    /// When it ends by itself (`None`: when an operator, a worker or the queue ends it).
    #[serde(serialize_with = "sosw_core::time::as_iso8601::option")]
    pub until: Option<Time>,
}

/// Every configured labourer, then every labourer the store knows that the config does not, at `now`. Fails only
/// when the counts cannot be read; unreadable breaker states, controls or flow states are shown as a
/// `store_error` hold.
pub async fn status(config: &Config, wiring: &Wiring, now: Time) -> Result<Vec<LabourerStatus>, StoreError> {
    statuses(config, wiring, now, None).await
}

/// One configured labourer's status (`None` for a labourer the config does not know): only its counts are read.
pub async fn labourer_status(
    config: &Config,
    wiring: &Wiring,
    labourer_id: &str,
    now: Time,
) -> Result<Option<LabourerStatus>, StoreError> {
    Ok(statuses(config, wiring, now, Some(labourer_id)).await?.pop())
}

async fn statuses(
    config: &Config,
    wiring: &Wiring,
    now: Time,
    only: Option<&str>,
) -> Result<Vec<LabourerStatus>, StoreError> {
    let store = wiring.store.as_ref();
    let labourers: Vec<&Labourer> = config
        .labourers
        .iter()
        .filter(|l| only.is_none_or(|id| l.id == id))
        .collect();
    // Independent reads, at once: a poll waits for the slowest (a metric, a store round trip), not their sum.
    let ecology = EcologyManager::new(wiring.metrics.clone());
    let (health, states, controls, records) = futures::join!(
        ecology.statuses(config, &labourers, now),
        store.labourer_states(),
        store.labourer_controls(),
        store.dispatch_records(),
    );
    let mut unread = Vec::new();
    let states = keyed("the breaker states", states, &mut unread, |s| &s.labourer_id);
    let controls = keyed("the operators' controls", controls, &mut unread, |c| &c.labourer_id);
    let records = keyed("the dispatch records", records, &mut unread, |r| &r.labourer_id);
    let state_of = |id: &str| states.get(id);
    let control_of = |id: &str| controls.get(id);
    let record_of = |id: &str| records.get(id);
    let store_holds: Vec<Hold> = unread
        .iter()
        .map(|reason| Hold {
            code: HeldReason::StoreError,
            reason: reason.clone(),
            until: None,
        })
        .collect();

    let asked: Vec<_> = labourers
        .iter()
        .map(|l| (l.id.clone(), config.markers_for(&l.id, now)))
        .collect();
    let all_counts = store.counts_many(&asked).await?;
    let mut out = Vec::new();
    for (l, counts) in labourers.iter().zip(all_counts) {
        let h = health.get(&l.id);
        let eco = h.map_or(config.metric_failure_status, |h| h.status);
        let control = control_of(&l.id);
        let record = record_of(&l.id);
        let no_flow = FlowState::default();
        let flow = record.map_or(&no_flow, |r| &r.flow);
        let allowance = flow::allowance(AllowanceInput {
            configured_max: l.max_simultaneous_invocations,
            coefficient: config.coefficients.get(eco),
            control,
            flow,
            config: &l.flow,
            running: counts.running,
            now,
        });
        let mut held_back = store_holds.clone();
        held_back.extend(holds(state_of(&l.id), control, record, now));
        if let Some(code) = allowance.limited_by.filter(|_| counts.queued > 0) {
            held_back.push(Hold {
                code,
                reason: limit_words(code, &allowance),
                until: None,
            });
        }
        out.push(LabourerStatus {
            labourer_id: l.id.clone(),
            counts,
            limit: Some(Limit {
                eco_status: eco as u8,
                max_simultaneous_invocations: l.max_simultaneous_invocations,
                limit_override: control.and_then(|c| c.limit),
                desired: allowance.ceiling,
                adaptive: allowance.adaptive,
                rate_per_second: l.flow.rate.map(|r| r.per_second),
                metric_errors: h.map(|h| h.metric_errors.clone()).unwrap_or_default(),
                health_metrics: h.map(|h| h.readings.clone()).unwrap_or_default(),
            }),
            held_back,
            control: control.cloned(),
            dispatching: lease_holder(record, now),
        });
    }
    if only.is_some() {
        return Ok(out);
    }
    let unknown: Vec<_> = store
        .labourer_ids()
        .await?
        .into_iter()
        .filter(|id| config.labourer(id).is_none())
        .map(|id| {
            let m = config.markers_for(&id, now);
            (id, m)
        })
        .collect();
    let unknown_counts = store.counts_many(&unknown).await?;
    for ((id, _), counts) in unknown.into_iter().zip(unknown_counts) {
        {
            let (control, record) = (control_of(&id), record_of(&id));
            out.push(LabourerStatus {
                held_back: holds(state_of(&id), control, record, now).collect(),
                control: control.cloned(),
                dispatching: lease_holder(record, now),
                labourer_id: id,
                counts,
                limit: None,
            });
        }
    }
    Ok(out)
}

/// The stored records by labourer id; an unreadable kind is noted in `unread` and read as none.
fn keyed<T>(
    what: &str,
    read: Result<Vec<T>, StoreError>,
    unread: &mut Vec<String>,
    id: impl Fn(&T) -> &String,
) -> HashMap<String, T> {
    match read {
        Ok(all) => all.into_iter().map(|t| (id(&t).clone(), t)).collect(),
        Err(e) => {
            tracing::warn!("cannot read {what}: {e}");
            unread.push(format!("cannot read {what}: {e}"));
            HashMap::new()
        }
    }
}

/// The holds that stop dispatch: an operator's pause, a throttle's Retry-After, the circuit breaker.
fn holds<'a>(
    state: Option<&'a breaker::LabourerState>,
    control: Option<&'a LabourerControl>,
    record: Option<&'a DispatchRecord>,
    now: Time,
) -> impl Iterator<Item = Hold> + 'a {
    let paused = flow::gate(control, None, now);
    let throttled = flow::gate(None, record.map(|r| &r.flow), now);
    let failing = match breaker::gate(state, now) {
        Gate::Held { reason, until } => Some(Hold {
            code: HeldReason::LabourerFailing,
            reason,
            until: Some(until),
        }),
        Gate::HalfOpen => state.map(|s| Hold {
            code: HeldReason::LabourerFailing,
            reason: format!(
                "{} (the hold is over: the next pass probes the labourer with one task)",
                s.reason.as_deref().unwrap_or("held back")
            ),
            until: s.held_until,
        }),
        Gate::Open => None,
    };
    let stops = [paused, throttled].into_iter().flatten().map(|s| Hold {
        code: s.code,
        reason: s.reason,
        until: s.until,
    });
    stops.chain(failing)
}

fn lease_holder(record: Option<&DispatchRecord>, now: Time) -> Option<String> {
    let r = record?;
    r.holder.clone().filter(|_| r.lease_until.is_some_and(|u| u > now))
}

/// Words for a limit that keeps queued tasks waiting.
fn limit_words(code: HeldReason, a: &flow::Allowance) -> String {
    let whose = if a.max_from_operator {
        "an operator's limit"
    } else {
        "max_simultaneous_invocations"
    };
    match code {
        HeldReason::Eco => format!(
            "the downstream's health allows {} of {} ({whose}), and as many run",
            a.ceiling, a.max
        ),
        HeldReason::Adaptive => format!(
            "the adaptive limit, lowered after throttles or failures, is {} (of at most {}), and as many run",
            a.adaptive.unwrap_or_default(),
            a.ceiling
        ),
        HeldReason::Rate => "the rate limit allows no invocation now".to_string(),
        _ => format!("{} tasks run, the most {whose} allows", a.ceiling),
    }
}
