//! Flow control beyond sosw: how many tasks a labourer may be sent now, and why not more.
//!
//! sosw's one rule is `floor(max_simultaneous_invocations × coefficient[eco status]) − running`. sosw-rs keeps it
//! as the ceiling and adds, per labourer:
//!
//! | control | who sets it | where it lives | decided by |
//! |---|---|---|---|
//! | pause / resume, until a time | an operator (`sosw labourer pause`) | [`LabourerControl`], stored | [`gate`] |
//! | a live limit replacing `max_simultaneous_invocations` | an operator (`sosw labourer limit`) | [`LabourerControl`] | [`allowance`] |
//! | adaptive concurrency (AIMD under the eco ceiling) | the orchestrators, from what they see | [`FlowState`], stored | [`adapt`] |
//! | a rate limit (`max_invocations_per_second`) | config | [`FlowState::rate_tat`] | [`rate_allows`], [`rate_spend`] |
//! | Retry-After: a throttling worker holds dispatch back | the worker | [`FlowState::throttled_until`] | [`throttle_until`] |
//! | retry delay tables (`retry_delays`) | config | — | [`crate::decide::RetryPolicy`] |
//!
//! The stored [`FlowState`] is shared by every orchestrator: it is read when an orchestrator takes the labourer's
//! *dispatch lease* and written when it gives it back, so no two orchestrators dispatch one labourer at once. That
//! is what makes the limit, the rate and the adaptive limit hold globally: counting what runs and claiming happen
//! under the lease (see `docs/flow-control.md`).

use crate::time::Time;
use serde::{Deserialize, Serialize};

/// An operator's stored control of one labourer (nothing stored: not paused, the configured limit). Serialised for
/// people, with ISO 8601 times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabourerControl {
    pub labourer_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// Replaces `max_simultaneous_invocations` until cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(serialize_with = "crate::time::as_iso8601::serialize")]
    pub updated_at: Time,
    /// Who made the last change (`user@host`, or a token's name).
    pub updated_by: String,
}

impl LabourerControl {
    pub fn new(labourer_id: &str, at: Time, by: &str) -> LabourerControl {
        LabourerControl {
            labourer_id: labourer_id.to_string(),
            paused: None,
            limit: None,
            updated_at: at,
            updated_by: by.to_string(),
        }
    }

    /// Nothing is controlled: the record can be forgotten.
    pub fn is_empty(&self) -> bool {
        self.paused.is_none() && self.limit.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    #[serde(serialize_with = "crate::time::as_iso8601::serialize")]
    pub since: Time,
    /// Dispatch resumes by itself at this time (`None`: until resumed).
    #[serde(serialize_with = "crate::time::as_iso8601::option")]
    pub until: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the orchestrators share about a labourer's dispatch. Written only by the holder of the labourer's dispatch
/// lease, so concurrent orchestrators never overwrite each other's update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    /// The adaptive limit (labourers with `adaptive` only; `None`: not lowered yet, the ceiling applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_limit: Option<u32>,
    /// When the adaptive limit last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_at: Option<Time>,
    /// The rate limit's theoretical arrival time (GCRA): the bucket is full again at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_tat: Option<Time>,
    /// When a lease holder last claimed tasks: a store whose count lags its writes (DynamoDB's index) waits
    /// [`crate::ports::TaskStore::count_settle`] after it before counting again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<Time>,
    /// The labourer throttled an invocation: nothing is sent before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_until: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_reason: Option<String>,
    /// What workers reported since the adaptive limit last learned from their reports, as read with the lease:
    /// every WorkerAssistant adds to it ([`crate::ports::LabourerStore::add_reports`]); giving the lease back never
    /// overwrites it, it subtracts [`FlowState::reports_learned`].
    #[serde(default, skip_serializing_if = "Reports::is_empty")]
    pub reports: Reports,
    /// The part of `reports` a lesson has learned from: subtracted from the stored counts when the lease is given
    /// back (so that reports added meanwhile are kept for the next lesson). Not stored.
    #[serde(skip)]
    pub reports_learned: Reports,
    /// The usual duration of the labourer's tasks (a moving average over the windows that were not slow), against
    /// which a slowdown is measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_baseline_ms: Option<u64>,
}

/// A labourer's stored dispatch record: who holds its lease, and the shared [`FlowState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchRecord {
    pub labourer_id: String,
    /// The orchestrator dispatching the labourer now, and until when its lease holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Time>,
    #[serde(default)]
    pub flow: FlowState,
}

/// A labourer's flow-control settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<Adaptive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
    /// Seconds to wait before each retry; the last repeats. Replaces `retry_backoff` for this labourer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delays: Option<Vec<i64>>,
}

/// Why a labourer is sent fewer tasks than it could take, as a stable code (for `/metrics` and scripts) with words
/// for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldReason {
    /// An operator paused it.
    Paused,
    /// It throttled an invocation (HTTP 429/503, Lambda throttling): dispatch waits out its Retry-After.
    InvokerThrottled,
    /// Its circuit breaker is open: its invocations fail for reasons that are not the tasks' ([`crate::breaker`]).
    LabourerFailing,
    /// Its downstream's health: `floor(max × coefficient[eco status])` is 0 or already running.
    Eco,
    /// As many tasks run as its limit allows (the configured one, or an operator's).
    Limit,
    /// The adaptive limit, lowered after throttles or failures, is reached.
    Adaptive,
    /// Its rate limit allows no invocation now.
    Rate,
    /// The store could not be read or written.
    StoreError,
}

impl HeldReason {
    /// Every reason, for a gauge per reason (`/metrics`).
    pub const ALL: [HeldReason; 8] = [
        HeldReason::Paused,
        HeldReason::InvokerThrottled,
        HeldReason::LabourerFailing,
        HeldReason::Eco,
        HeldReason::Limit,
        HeldReason::Adaptive,
        HeldReason::Rate,
        HeldReason::StoreError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HeldReason::Paused => "paused",
            HeldReason::InvokerThrottled => "invoker_throttled",
            HeldReason::LabourerFailing => "labourer_failing",
            HeldReason::Eco => "eco",
            HeldReason::Limit => "limit",
            HeldReason::Adaptive => "adaptive",
            HeldReason::Rate => "rate",
            HeldReason::StoreError => "store_error",
        }
    }
}

/// A hold that stops a labourer's dispatch entirely for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub code: HeldReason,
    pub reason: String,
    pub until: Option<Time>,
}

/// Whether an operator's pause or a throttling labourer stops dispatch now.
pub fn gate(control: Option<&LabourerControl>, flow: Option<&FlowState>, now: Time) -> Option<Stop> {
    if let Some(p) = control.and_then(|c| c.paused.as_ref()) {
        if p.until.is_none_or(|until| now < until) {
            let by = control.map(|c| c.updated_by.as_str()).unwrap_or_default();
            return Some(Stop {
                code: HeldReason::Paused,
                reason: match &p.reason {
                    Some(r) => format!("paused by {by}: {r}"),
                    None => format!("paused by {by}"),
                },
                until: p.until,
            });
        }
    }
    let flow = flow?;
    match flow.throttled_until {
        Some(until) if now < until => Some(Stop {
            code: HeldReason::InvokerThrottled,
            reason: flow
                .throttle_reason
                .clone()
                .unwrap_or_else(|| "the labourer throttled an invocation".into()),
            until: Some(until),
        }),
        _ => None,
    }
}

/// What a labourer may be sent in a pass, and what limits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowance {
    /// The limit in force before health: an operator's, or `max_simultaneous_invocations`.
    pub max: u32,
    /// Whose `max` it is.
    pub max_from_operator: bool,
    /// `floor(max × coefficient[eco status])`: sosw's `desired`.
    pub ceiling: u32,
    /// The adaptive limit, when the labourer has one (never above the ceiling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<u32>,
    /// Tasks to claim now.
    pub to_invoke: u32,
    /// The rate limit, not a concurrency limit, bounded `to_invoke`.
    pub by_rate: bool,
    /// Why not more, when fewer than the queue could give were asked for (`None`: only the queue's length).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_by: Option<HeldReason>,
}

/// What [`allowance`] is given.
#[derive(Debug, Clone, Copy)]
pub struct AllowanceInput<'a> {
    /// `max_simultaneous_invocations` from the config.
    pub configured_max: u32,
    /// `coefficient[eco status]`.
    pub coefficient: f64,
    pub control: Option<&'a LabourerControl>,
    pub flow: &'a FlowState,
    pub config: &'a FlowConfig,
    pub running: u64,
    pub now: Time,
}

/// `min(ceiling, adaptive limit) − running`, then at most what the rate limit allows now.
pub fn allowance(input: AllowanceInput<'_>) -> Allowance {
    let operator = input.control.and_then(|c| c.limit);
    let max = operator.unwrap_or(input.configured_max);
    let ceiling = crate::decide::scaled(max, input.coefficient);
    let adaptive = input
        .config
        .adaptive
        .map(|a| adaptive_limit(&a, input.flow.adaptive_limit, ceiling));
    let limit = adaptive.unwrap_or(ceiling);
    let by_limit = crate::decide::to_invoke(limit, input.running);
    let by_rate = input
        .config
        .rate
        .map(|r| rate_allows(&r, input.flow.rate_tat, input.now))
        .unwrap_or(u32::MAX);
    let to_invoke = by_limit.min(by_rate);
    let limited_by = if to_invoke > 0 {
        // Something still lets tasks through: the queue's length may be all that limits them.
        None
    } else if by_rate == 0 && by_limit > 0 {
        Some(HeldReason::Rate)
    } else if ceiling < max && u64::from(ceiling) <= input.running {
        Some(HeldReason::Eco)
    } else if adaptive.is_some_and(|a| a < ceiling) {
        Some(HeldReason::Adaptive)
    } else {
        Some(HeldReason::Limit)
    };
    Allowance {
        max,
        max_from_operator: operator.is_some(),
        ceiling,
        adaptive,
        to_invoke,
        by_rate: by_rate < by_limit,
        limited_by,
    }
}

/// Until when a throttle holds the labourer back: its Retry-After if it gave one, else `default_secs`; never more
/// than `max_secs`, never before a hold already in force.
pub fn throttle_until(
    current: Option<Time>,
    retry_after_secs: Option<f64>,
    default_secs: f64,
    max_secs: i64,
    now: Time,
) -> Time {
    let secs = retry_after_secs
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(default_secs)
        .clamp(0.0, max_secs as f64);
    let until = now.plus_millis((secs * 1000.0).round() as i64);
    current.map_or(until, |c| c.max(until))
}

/// What a pass's invocations teach the shared flow state: their signals, the ceiling they were sent under, and the
/// longest throttle (its message and Retry-After, in seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Lesson {
    pub signals: Signals,
    pub ceiling: u32,
    pub throttle: Option<(String, Option<f64>)>,
}

/// How [`learn`] changed the flow state, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Learned {
    /// The adaptive limit in force before and after, when it moved.
    pub adaptive: Option<(u32, u32)>,
    /// The throttle's hold, when the lesson had one.
    pub held_until: Option<Time>,
    /// Why the workers' reports counted as trouble, when they did.
    pub reported: Option<ReportTrouble>,
}

/// Applies a lesson to the flow state as it is now: the adaptive limit moves ([`adapt`], at most once per its
/// interval, recording when) on the pass's signals and the workers' reports since the last lesson
/// ([`judge_reports`]; a judged window is marked learned), and a throttle holds the labourer ([`throttle_until`]:
/// its Retry-After, else `throttle_hold` seconds, at most `max_hold`).
pub fn learn(
    flow: &mut FlowState,
    config: &FlowConfig,
    lesson: &Lesson,
    throttle_hold: i64,
    max_hold: i64,
    now: Time,
) -> Learned {
    let mut learned = Learned::default();
    if let Some(a) = config.adaptive.as_ref().filter(|a| adapt_due(a, flow.adaptive_at, now)) {
        let before = adaptive_limit(a, flow.adaptive_limit, lesson.ceiling);
        let mut signals = lesson.signals;
        if let ReportVerdict::Judged { trouble, baseline_ms } =
            judge_reports(a, &flow.reports, flow.duration_baseline_ms)
        {
            flow.reports_learned = flow.reports;
            flow.duration_baseline_ms = baseline_ms;
            signals.reported_trouble = trouble.is_some();
            learned.reported = trouble;
        }
        let stored = adapt(a, flow.adaptive_limit, lesson.ceiling, &signals);
        let after = adaptive_limit(a, stored, lesson.ceiling);
        if stored != flow.adaptive_limit {
            flow.adaptive_limit = stored;
            flow.adaptive_at = Some(now);
        }
        if after != before {
            learned.adaptive = Some((before, after));
        }
    }
    if let Some((message, retry_after)) = &lesson.throttle {
        let until = throttle_until(flow.throttled_until, *retry_after, throttle_hold as f64, max_hold, now);
        let wait = match retry_after {
            Some(secs) => format!("Retry-After {secs} s"),
            None => format!("no Retry-After: `throttle_hold` {throttle_hold} s"),
        };
        flow.throttled_until = Some(until);
        flow.throttle_reason = Some(format!("the labourer throttled an invocation ({message}); {wait}"));
        learned.held_until = Some(until);
    }
    learned
}

/// Whether a labourer may be counted and claimed for at `now`: `settle` (the store's lag between a claim and its
/// count, [`crate::ports::TaskStore::count_settle`]) has passed since the last claim.
pub fn settled(flow: &FlowState, settle_ms: i64, now: Time) -> bool {
    flow.claimed_at.is_none_or(|at| now >= at.plus_millis(settle_ms))
}

/// The flow state a pass starts from: a throttle's hold that has run out is forgotten.
pub fn expire_throttle(flow: &mut FlowState, now: Time) {
    if flow.throttled_until.is_some_and(|until| until <= now) {
        flow.throttled_until = None;
        flow.throttle_reason = None;
    }
}

mod adaptive;
mod rate;
mod reports;

pub use adaptive::{adapt, adapt_due, adaptive_limit, Adaptive, Signals};
pub use rate::{rate_allows, rate_spend, RateLimit};
pub use reports::{judge_reports, ReportTrouble, ReportVerdict, Reports, MIN_REPORTS};

#[cfg(test)]
mod tests;
