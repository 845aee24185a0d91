//! EcologyManager: the eco status of each labourer for one pass (reference §5.4).
//!
//! Each distinct metric (by its `details`) is fetched once per pass, all concurrently. A metric that cannot be
//! fetched gives its `failure_status` (else the config's `metric_failure_status`, default Bad) and the reason is
//! reported; it never fails the pass (reference §7.12).

use futures::future::join_all;
use sosw_core::config::{Config, Labourer};
use sosw_core::ecology::labourer_status;
use sosw_core::ports::MetricSource;
use sosw_core::{EcoStatus, Time};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct EcologyManager {
    metrics: Arc<dyn MetricSource>,
}

/// A labourer's status and what went wrong fetching its metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: EcoStatus,
    pub metric_errors: Vec<String>,
    /// Each health metric as read this pass, in config order.
    pub readings: Vec<MetricReading>,
}

/// One health metric's value and the status it gives.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricReading {
    pub name: String,
    /// `None` when it could not be read (its status is then the failure status).
    pub value: Option<f64>,
    /// The metric's "feeling": the eco status its value gives (0..4).
    pub status: u8,
}

impl EcologyManager {
    pub fn new(metrics: Arc<dyn MetricSource>) -> EcologyManager {
        EcologyManager { metrics }
    }

    /// Statuses of `labourers`, keyed by id.
    pub async fn statuses(&self, config: &Config, labourers: &[&Labourer], now: Time) -> HashMap<String, Health> {
        let mut distinct = HashMap::new();
        for l in labourers {
            for m in &l.health_metrics {
                distinct.entry(m.details.cache_key()).or_insert(&m.details);
            }
        }
        let fetched = join_all(distinct.into_iter().map(|(key, details)| async move {
            let value = self.metrics.fetch(details, now).await;
            (key, value)
        }))
        .await;
        let values: HashMap<String, _> = fetched.into_iter().collect();
        labourers
            .iter()
            .map(|l| {
                let mut errors = Vec::new();
                let mut readings = Vec::new();
                let statuses: Vec<EcoStatus> = l
                    .health_metrics
                    .iter()
                    .map(|m| {
                        let (value, status) = match values.get(&m.details.cache_key()) {
                            Some(Ok(v)) => (Some(*v), m.feelings.health(*v)),
                            Some(Err(e)) => {
                                let fallback = m.failure_status.unwrap_or(config.metric_failure_status);
                                errors.push(format!(
                                    "metric `{}`: {e} (counted as status {})",
                                    m.name, fallback as u8
                                ));
                                (None, fallback)
                            }
                            None => (None, config.metric_failure_status),
                        };
                        readings.push(MetricReading {
                            name: m.name.clone(),
                            value,
                            status: status as u8,
                        });
                        status
                    })
                    .collect();
                (
                    l.id.clone(),
                    Health {
                        status: labourer_status(statuses),
                        metric_errors: errors,
                        readings,
                    },
                )
            })
            .collect()
    }
}
