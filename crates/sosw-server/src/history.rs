//! The last hour of each labourer's queue depth and running tasks, sampled by the server every
//! [`SAMPLE_EVERY`] for the dashboard's chart (`GET /api/history`). Kept in memory: a restart starts it again.

use serde::Serialize;
use sosw_core::Time;
use sosw_engine::LabourerStatus;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How often the server samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(30);

/// How many samples are kept: an hour's.
const KEPT: usize = 120;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Point {
    pub queued: u64,
    pub running: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    #[serde(serialize_with = "sosw_core::time::as_iso8601::serialize")]
    pub at: Time,
    pub labourers: BTreeMap<String, Point>,
}

#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Adds a sample of `statuses` taken at `at`, forgetting the oldest beyond an hour's.
    pub fn record(&self, at: Time, statuses: &[LabourerStatus]) {
        let labourers = statuses
            .iter()
            .map(|s| {
                (
                    s.labourer_id.clone(),
                    Point {
                        queued: s.counts.queued,
                        running: s.counts.running,
                    },
                )
            })
            .collect();
        let mut samples = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        samples.push_back(Sample { at, labourers });
        while samples.len() > KEPT {
            samples.pop_front();
        }
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        samples.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_hour_oldest_first() {
        let h = History::default();
        for i in 0..(KEPT as i64 + 5) {
            h.record(Time::from_secs(i * 30), &[]);
        }
        let s = h.samples();
        assert_eq!(s.len(), KEPT);
        assert_eq!(s[0].at, Time::from_secs(5 * 30));
        assert_eq!(s[KEPT - 1].at, Time::from_secs((KEPT as i64 + 4) * 30));
    }
}
