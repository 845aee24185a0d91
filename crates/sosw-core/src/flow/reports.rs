//! What workers report about a labourer's tasks, and what a window of those reports says about its downstream
//! (failures above `failure_ratio`, durations above `slowdown` × the baseline): an input of the adaptive limit
//! ([`super::learn`]).

use super::Adaptive;
use serde::{Deserialize, Serialize};

/// Counts of workers' reports about a labourer's tasks (a window: what came in since it was last learned from).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reports {
    pub completed: u64,
    pub failed: u64,
    /// The completions whose duration is known, and the sum of their durations in milliseconds.
    pub timed: u64,
    pub duration_ms: u64,
}

impl Reports {
    /// One completion, with its duration when known ([`crate::greenfield::invoked_at`]).
    pub fn completed(duration_ms: Option<u64>) -> Reports {
        Reports {
            completed: 1,
            timed: u64::from(duration_ms.is_some()),
            duration_ms: duration_ms.unwrap_or(0),
            ..Reports::default()
        }
    }

    /// One failure report.
    pub fn failed() -> Reports {
        Reports {
            failed: 1,
            ..Reports::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Reports::default()
    }

    /// Every count of `other` added (saturating: counts near `u64::MAX` stay there rather than wrap).
    pub fn plus(&self, other: &Reports) -> Reports {
        Reports {
            completed: self.completed.saturating_add(other.completed),
            failed: self.failed.saturating_add(other.failed),
            timed: self.timed.saturating_add(other.timed),
            duration_ms: self.duration_ms.saturating_add(other.duration_ms),
        }
    }

    /// The mean duration of the timed completions.
    pub fn mean_ms(&self) -> Option<u64> {
        self.duration_ms.checked_div(self.timed)
    }
}

/// A window is judged once it holds this many reports (or timed completions, for a slowdown); a smaller one waits
/// for the next lesson, so that one unlucky task does not halve the limit.
pub const MIN_REPORTS: u64 = 5;

/// Durations are known to the second (the greenfield's resolution): a mean less than this above the baseline is
/// never called a slowdown.
const DURATION_RESOLUTION_MS: u64 = 1000;

/// What a window of workers' reports says about the labourer ([`judge_reports`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportVerdict {
    /// Too few reports to judge: the window is kept for the next lesson.
    TooFew,
    /// Judged: `trouble` says why the labourer is in trouble (`None`: it is not), `baseline_ms` is the duration
    /// baseline to keep.
    Judged {
        trouble: Option<ReportTrouble>,
        baseline_ms: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportTrouble {
    /// More than `failure_ratio` of the reports were failures.
    Failures { failed: u64, reports: u64 },
    /// The completions' mean duration was more than `slowdown` × the baseline.
    Slow { mean_ms: u64, baseline_ms: u64 },
}

/// Judges a window of workers' reports against the adaptive settings and the duration baseline. A window that is
/// not slow moves the baseline a fifth of the way towards its mean (the first one sets it); a slow one leaves it.
pub fn judge_reports(config: &Adaptive, window: &Reports, baseline_ms: Option<u64>) -> ReportVerdict {
    let reports = window.completed.saturating_add(window.failed);
    if reports < MIN_REPORTS {
        return ReportVerdict::TooFew;
    }
    let mean = (window.timed >= MIN_REPORTS).then(|| window.mean_ms()).flatten();
    let slow = match (mean, baseline_ms) {
        (Some(mean), Some(base)) => {
            mean as f64 > base as f64 * config.slowdown && mean.saturating_sub(base) >= DURATION_RESOLUTION_MS
        }
        _ => false,
    };
    let baseline_ms = match (mean, baseline_ms) {
        (Some(mean), Some(base)) if !slow => Some(base - base / 5 + mean / 5),
        (Some(mean), None) => Some(mean),
        (_, base) => base,
    };
    let trouble = if window.failed as f64 > config.failure_ratio * reports as f64 {
        Some(ReportTrouble::Failures {
            failed: window.failed,
            reports,
        })
    } else if slow {
        Some(ReportTrouble::Slow {
            mean_ms: mean.unwrap_or_default(),
            baseline_ms: baseline_ms.unwrap_or_default(),
        })
    } else {
        None
    };
    ReportVerdict::Judged { trouble, baseline_ms }
}
