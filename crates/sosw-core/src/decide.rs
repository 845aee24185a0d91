//! The decisions of the essentials, as pure functions (reference §5.5, §5.6, §7.6).

use crate::ecology::EcoStatus;
use crate::time::MAX_SECONDS;
use serde::{Deserialize, Serialize};

/// `invocation_number_coefficient`: the share of `max_simultaneous_invocations` allowed at each eco status.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coefficients(pub [f64; 5]);

impl Default for Coefficients {
    fn default() -> Self {
        Coefficients([0.0, 0.0, 0.5, 0.75, 1.0])
    }
}

impl Coefficients {
    pub fn get(&self, status: EcoStatus) -> f64 {
        self.0[status as usize]
    }
}

/// `floor(max_simultaneous_invocations × coefficient[status])`.
pub fn desired_invocations(max_simultaneous: u32, status: EcoStatus, coefficients: &Coefficients) -> u32 {
    scaled(max_simultaneous, coefficients.get(status))
}

/// `floor(max × coefficient)`, 0 for a coefficient that is not a finite positive number.
pub fn scaled(max: u32, coefficient: f64) -> u32 {
    let desired = (f64::from(max) * coefficient).floor();
    if desired.is_finite() && desired > 0.0 {
        // Coefficients are validated to be finite and non-negative; the cast saturates for absurd configs.
        desired as u32
    } else {
        0
    }
}

/// How many queued tasks to invoke now: `max(desired − running, 0)`.
pub fn to_invoke(desired: u32, running: u64) -> u32 {
    u64::from(desired).saturating_sub(running) as u32
}

/// How the retry delay grows with the attempts already spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// `max_duration × attempts`: what Python sosw does (its docs call it exponential).
    #[default]
    Linear,
    /// `max_duration × 2^(attempts − 1)`.
    Exponential,
}

impl Backoff {
    /// The retry delay in seconds, at most [`MAX_SECONDS`] (10 years): whatever `max_attempts` allows, a retry is
    /// never pushed past the end of time, nor wrapped to a negative delay.
    pub fn delay(self, max_duration: i64, attempts: u32) -> i64 {
        let delay = match self {
            Backoff::Linear => max_duration.saturating_mul(i64::from(attempts)),
            Backoff::Exponential => {
                let exponent = attempts.saturating_sub(1);
                let factor = if exponent >= 62 { i64::MAX } else { 1_i64 << exponent };
                max_duration.saturating_mul(factor)
            }
        };
        delay.clamp(0, MAX_SECONDS)
    }
}

/// What the Scavenger does with an expired task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum ExpiredDecision {
    /// Park it in the retry table until `desired_launch_time`.
    Retry { delay: i64, desired_launch_time: i64 },
    /// Close it as dead and notify.
    Dead,
}

/// How a labourer's tasks are retried: how often, and after how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy<'a> {
    pub max_attempts: u32,
    /// The base of sosw's formula.
    pub max_duration: i64,
    pub backoff: Backoff,
    /// `retry_delays`: seconds before each retry, the last repeating; replaces the formula when given.
    pub delays: Option<&'a [i64]>,
}

impl RetryPolicy<'_> {
    /// The delay before the retry that follows attempt number `attempts`, in `0..=MAX_SECONDS`.
    pub fn delay(&self, attempts: u32) -> i64 {
        match self.delays {
            Some(delays) if !delays.is_empty() => {
                let i = (attempts.max(1) as usize - 1).min(delays.len() - 1);
                delays[i].clamp(0, MAX_SECONDS)
            }
            _ => self.backoff.delay(self.max_duration, attempts),
        }
    }
}

/// Retry while `attempts < max_attempts`, after the policy's delay.
pub fn decide_expired(attempts: u32, policy: &RetryPolicy<'_>, now_secs: i64) -> ExpiredDecision {
    if attempts < policy.max_attempts {
        let delay = policy.delay(attempts);
        ExpiredDecision::Retry {
            delay,
            desired_launch_time: now_secs.saturating_add(delay),
        }
    } else {
        ExpiredDecision::Dead
    }
}

/// How an invocation failed, as the invoker classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The worker asked us to slow down (HTTP 429/503, Lambda TooManyRequests). Not the task's fault.
    Throttled,
    /// The invocation reached the worker, which failed it for now (HTTP 5xx, 408; Lambda service errors): the
    /// attempt is spent and the task retried later.
    Transient,
    /// The worker can never accept this task (rejected payload, 4xx, payload too large).
    Permanent,
    /// The request may or may not have reached the worker (timeout after sending).
    Unknown,
    /// The labourer cannot take *any* task now: misconfigured, missing or unreachable (HTTP 401/403/404/405/410,
    /// connection refused, DNS/TLS errors; Lambda ResourceNotFound, AccessDenied, …). Not the task's fault: it goes
    /// back without spending an attempt and the labourer is held back (see [`crate::breaker`], which also says
    /// when such a failure stops the labourer's pass).
    Labourer,
    /// sosw could not start the invocation for a reason of its own (out of file descriptors, memory or processes).
    /// Not the task's fault nor the labourer's: back without spending an attempt, and the labourer's pass stops.
    Local,
}

/// What the Orchestrator does with a task whose invocation failed after it was claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum AfterFailure {
    /// Put it back where it was in the queue and refund the attempt (the original spends one).
    Requeue,
    /// Treat it as an expired attempt: retry later or close as dead.
    Expired(ExpiredDecision),
    /// Close it as dead now: it can never succeed.
    Dead,
    /// Leave it running: it will expire and be retried if the worker never reports.
    LeaveRunning,
}

/// `attempts` is the count *after* the claim, i.e. including the failed invocation.
pub fn decide_after_failure(kind: FailureKind, attempts: u32, policy: &RetryPolicy<'_>, now_secs: i64) -> AfterFailure {
    match kind {
        FailureKind::Throttled | FailureKind::Labourer | FailureKind::Local => AfterFailure::Requeue,
        FailureKind::Transient => AfterFailure::Expired(decide_expired(attempts, policy, now_secs)),
        FailureKind::Permanent => AfterFailure::Dead,
        FailureKind::Unknown => AfterFailure::LeaveRunning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EcoStatus::*;

    #[test]
    fn desired_table_orc1() {
        let c = Coefficients::default();
        let got: Vec<u32> = EcoStatus::ALL.iter().map(|s| desired_invocations(10, *s, &c)).collect();
        assert_eq!(got, vec![0, 0, 5, 7, 10]);
        assert_eq!(desired_invocations(1, Moderate, &c), 0);
        assert_eq!(desired_invocations(3, Good, &c), 2);
        assert_eq!(
            desired_invocations(u32::MAX, High, &Coefficients([0.0, 0.0, 0.0, 0.0, 10.0])),
            u32::MAX
        );
    }

    #[test]
    fn to_invoke_orc4() {
        assert_eq!(to_invoke(10, 4), 6);
        assert_eq!(to_invoke(5, 7), 0);
        assert_eq!(to_invoke(10, 0), 10);
    }

    fn policy(max_attempts: u32, max_duration: i64) -> RetryPolicy<'static> {
        RetryPolicy {
            max_attempts,
            max_duration,
            backoff: Backoff::Linear,
            delays: None,
        }
    }

    #[test]
    fn expired_decisions() {
        // SCV-4: max_duration 45, attempts 5 → 225.
        assert_eq!(
            decide_expired(5, &policy(6, 45), 1000),
            ExpiredDecision::Retry {
                delay: 225,
                desired_launch_time: 1225
            }
        );
        // §5.6 worked example with max_attempts 3.
        assert!(matches!(
            decide_expired(1, &policy(3, 900), 0),
            ExpiredDecision::Retry { delay: 900, .. }
        ));
        assert!(matches!(
            decide_expired(2, &policy(3, 900), 0),
            ExpiredDecision::Retry { delay: 1800, .. }
        ));
        assert_eq!(decide_expired(3, &policy(3, 900), 0), ExpiredDecision::Dead);
        assert_eq!(decide_expired(4, &policy(3, 900), 0), ExpiredDecision::Dead);
        assert_eq!(Backoff::Exponential.delay(100, 1), 100);
        assert_eq!(Backoff::Exponential.delay(100, 3), 400);
        assert_eq!(Backoff::Exponential.delay(100, 200), MAX_SECONDS);
        // 2^63 would wrap to a negative delay; every attempt count gives a delay in 0..=MAX_SECONDS.
        for attempts in [0, 1, 53, 54, 63, 64, 65, u32::MAX] {
            for backoff in [Backoff::Linear, Backoff::Exponential] {
                let d = backoff.delay(1, attempts);
                assert!((0..=MAX_SECONDS).contains(&d), "{backoff:?} {attempts}: {d}");
            }
        }
        assert_eq!(Backoff::Exponential.delay(1, 64), MAX_SECONDS);
    }

    #[test]
    fn retry_delays_come_from_the_table_and_its_last_entry_repeats() {
        let table = [20, 300, 1800, 7200];
        let with = |delays| RetryPolicy {
            delays,
            ..policy(10, 60)
        };
        for (attempts, want) in [(0, 20), (1, 20), (2, 300), (4, 7200), (5, 7200), (u32::MAX, 7200)] {
            assert_eq!(with(Some(&table)).delay(attempts), want, "{attempts}");
        }
        assert_eq!(with(None).delay(3), 180, "no table: sosw's formula");
        assert_eq!(with(Some(&[])).delay(3), 180);
        assert_eq!(with(Some(&[i64::MAX])).delay(1), MAX_SECONDS);
        assert_eq!(
            decide_expired(2, &with(Some(&table)), 1000),
            ExpiredDecision::Retry {
                delay: 300,
                desired_launch_time: 1300
            }
        );
    }

    #[test]
    fn after_failure_table() {
        let d = |k, a| decide_after_failure(k, a, &policy(3, 60), 1000);
        assert_eq!(d(FailureKind::Throttled, 3), AfterFailure::Requeue);
        assert_eq!(
            d(FailureKind::Transient, 1),
            AfterFailure::Expired(ExpiredDecision::Retry {
                delay: 60,
                desired_launch_time: 1060
            })
        );
        assert_eq!(
            d(FailureKind::Transient, 3),
            AfterFailure::Expired(ExpiredDecision::Dead)
        );
        assert_eq!(d(FailureKind::Permanent, 1), AfterFailure::Dead);
        assert_eq!(d(FailureKind::Unknown, 1), AfterFailure::LeaveRunning);
        // A broken labourer or our own lack of resources never spends the task's attempt, even the last one.
        assert_eq!(d(FailureKind::Labourer, 3), AfterFailure::Requeue);
        assert_eq!(d(FailureKind::Local, 3), AfterFailure::Requeue);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn retry_while_attempts_remain(attempts in 0u32..20, max in 1u32..20, max_duration in 1i64..100_000, now in 0i64..2_000_000_000) {
            let policy = RetryPolicy { max_attempts: max, max_duration, backoff: Backoff::Linear, delays: None };
            match decide_expired(attempts, &policy, now) {
                ExpiredDecision::Retry { delay, desired_launch_time } => {
                    prop_assert!(attempts < max);
                    prop_assert_eq!(delay, max_duration * i64::from(attempts));
                    prop_assert_eq!(desired_launch_time, now + delay);
                }
                ExpiredDecision::Dead => prop_assert!(attempts >= max),
            }
        }

        #[test]
        fn never_more_than_the_limit(max in 0u32..100_000, status in 0u8..5, c in proptest::array::uniform5(0.0f64..=1.0), running in 0u64..200_000) {
            let status = EcoStatus::try_from(status).expect("0..4");
            let desired = desired_invocations(max, status, &Coefficients(c));
            prop_assert!(desired <= max);
            prop_assert!(u64::from(to_invoke(desired, running)) + running.min(u64::from(desired)) <= u64::from(desired));
        }
    }
}
