//! The adaptive limit (AIMD): how a labourer's concurrency limit follows the congestion its passes and its workers'
//! reports show. Part of [`crate::flow`].

use crate::time::Time;
use serde::{Deserialize, Serialize};

/// `adaptive` in a labourer's config: additive increase, multiplicative decrease.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adaptive {
    /// The limit never falls below this.
    pub min: u32,
    /// Added after a pass that used its whole allowance with no sign of trouble.
    pub increase: u32,
    /// The limit is multiplied by this (0 < decrease < 1) after a pass with throttles or failed invocations.
    pub decrease: f64,
    /// The limit changes at most once per this many milliseconds (`interval`, seconds in the config; default 1):
    /// the passes of several orchestrators in quick succession see the same congestion, and must not each halve
    /// (or raise) the limit for it.
    pub interval_ms: i64,
    /// Workers' failure reports are trouble when they are more than this share of the reports in a window
    /// (`failure_ratio`, default 0.2): a labourer whose tasks fail now and then for their own reasons is not
    /// throttled for it.
    pub failure_ratio: f64,
    /// Completions are trouble when their mean duration in a window is more than this many times the baseline
    /// (`slowdown`, default 2): a downstream that slows down is congested before it fails.
    pub slowdown: f64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            min: 1,
            increase: 1,
            decrease: 0.5,
            interval_ms: 1000,
            failure_ratio: 0.2,
            slowdown: 2.0,
        }
    }
}

/// The adaptive limit in force: the stored one (the ceiling when none is stored), between `min` and the ceiling.
pub fn adaptive_limit(config: &Adaptive, stored: Option<u32>, ceiling: u32) -> u32 {
    stored.unwrap_or(ceiling).max(config.min).min(ceiling)
}

/// Whether the adaptive limit may change at `now`: at most once per `interval_ms`.
pub fn adapt_due(config: &Adaptive, changed_at: Option<Time>, now: Time) -> bool {
    changed_at.is_none_or(|at| now >= at.plus_millis(config.interval_ms))
}

/// What a pass saw that tells whether the labourer is congested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// Invocations the labourer accepted.
    pub accepted: u32,
    /// Invocations it throttled.
    pub throttled: u32,
    /// Invocations that failed (any failure that is not a throttle).
    pub failed: u32,
    /// The pass was sent as many tasks as the limit allowed (the queue had more): the limit, not the queue, was
    /// what held the labourer.
    pub saturated: bool,
    /// The workers' reports since the last lesson say the labourer is in trouble ([`super::judge_reports`]).
    pub reported_trouble: bool,
}

/// AIMD: after a pass with throttles or failures (or workers' reports in trouble) the limit is multiplied by `decrease` (at least `min`); after a
/// saturated pass without trouble it grows by `increase` (at most the ceiling); otherwise the stored limit stays as
/// it is — also above a ceiling that dipped with the downstream's health, so that it climbs back from where it was
/// when health returns, not from the top.
pub fn adapt(config: &Adaptive, stored: Option<u32>, ceiling: u32, seen: &Signals) -> Option<u32> {
    let current = adaptive_limit(config, stored, ceiling);
    if seen.throttled > 0 || seen.failed > 0 || seen.reported_trouble {
        let lowered = (f64::from(current) * config.decrease).floor() as u32;
        return Some(lowered.max(config.min).min(current));
    }
    if seen.saturated && seen.accepted > 0 {
        let raised = current.saturating_add(config.increase).min(ceiling.max(config.min));
        // Back at the ceiling: nothing to remember.
        return (raised < ceiling).then_some(raised);
    }
    stored
}
