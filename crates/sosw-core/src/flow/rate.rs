//! Rate limits: GCRA over a stored theoretical arrival time. Part of [`crate::flow`].

use crate::time::{Time, MAX_SECONDS};
use serde::{Deserialize, Serialize};

/// `max_invocations_per_second` (or `_per_minute`) and `rate_burst` in a labourer's config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    /// How many invocations may go at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// Milliseconds between two invocations at the steady rate.
    fn interval_ms(&self) -> f64 {
        1000.0 / self.per_second
    }
}

/// How many invocations the rate limit allows at `now` (GCRA over the stored theoretical arrival time).
pub fn rate_allows(rate: &RateLimit, tat: Option<Time>, now: Time) -> u32 {
    let t = rate.interval_ms();
    let tolerance = f64::from(rate.burst.max(1)) * t;
    let ahead = tat.map_or(0, |tat| tat.millis().saturating_sub(now.millis()).max(0)) as f64;
    let room = (tolerance - ahead) / t;
    if room.is_nan() || room < 1.0 {
        0
    } else {
        room.floor().min(f64::from(u32::MAX)) as u32
    }
}

/// The theoretical arrival time after `n` invocations at `now`.
pub fn rate_spend(rate: &RateLimit, tat: Option<Time>, now: Time, n: u32) -> Option<Time> {
    if n == 0 {
        return tat;
    }
    let from = tat.map_or(now, |tat| tat.max(now));
    let spent = (f64::from(n) * rate.interval_ms())
        .ceil()
        .min(MAX_SECONDS as f64 * 1000.0);
    Some(from.plus_millis(spent as i64))
}
