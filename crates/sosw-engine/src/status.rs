//! The status of every labourer, as `sosw status` shows it (and, later, the service's API and metrics): the
//! store's counts, the health and limit the Orchestrator would compute now, and why a labourer is held back.

use crate::ecology::EcologyManager;
use crate::Wiring;
use serde::Serialize;
use sosw_core::config::Config;
use sosw_core::decide::desired_invocations;
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
    pub held_back: Option<Hold>,
}

/// What the Orchestrator would allow now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limit {
    pub eco_status: u8,
    pub max_simultaneous_invocations: u32,
    pub desired: u32,
    /// Health metrics that could not be read (they count as their failure status).
    pub metric_errors: Vec<String>,
}

/// A labourer held back by its circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hold {
    pub reason: Option<String>,
    pub until: Time,
}

/// Every configured labourer, then every labourer the store knows that the config does not, at `now`. Fails only
/// when the counts cannot be read; unreadable breaker states are logged and shown as none.
pub async fn status(config: &Config, wiring: &Wiring, now: Time) -> Result<Vec<LabourerStatus>, StoreError> {
    let store = wiring.store.as_ref();
    let labourers: Vec<&Labourer> = config.labourers.iter().collect();
    let health = EcologyManager::new(wiring.metrics.clone())
        .statuses(config, &labourers, now)
        .await;
    let holds: HashMap<String, Hold> = match store.labourer_states().await {
        Ok(states) => states
            .into_iter()
            .filter_map(|s| {
                let until = s.held_until?;
                Some((
                    s.labourer_id,
                    Hold {
                        reason: s.reason,
                        until,
                    },
                ))
            })
            .collect(),
        Err(e) => {
            tracing::warn!("cannot read which labourers are held back: {e}");
            HashMap::new()
        }
    };
    let mut out = Vec::new();
    for l in &labourers {
        let counts = store.counts(&l.id, &config.markers_for(&l.id, now)).await?;
        let h = health.get(&l.id);
        let eco = h.map_or(config.metric_failure_status, |h| h.status);
        out.push(LabourerStatus {
            labourer_id: l.id.clone(),
            counts,
            limit: Some(Limit {
                eco_status: eco as u8,
                max_simultaneous_invocations: l.max_simultaneous_invocations,
                desired: desired_invocations(l.max_simultaneous_invocations, eco, &config.coefficients),
                metric_errors: h.map(|h| h.metric_errors.clone()).unwrap_or_default(),
            }),
            held_back: holds.get(&l.id).cloned(),
        });
    }
    for id in store.labourer_ids().await? {
        if config.labourer(&id).is_none() {
            let counts = store.counts(&id, &config.markers_for(&id, now)).await?;
            out.push(LabourerStatus {
                held_back: holds.get(&id).cloned(),
                labourer_id: id,
                counts,
                limit: None,
            });
        }
    }
    Ok(out)
}
