//! The circuit breaker of a labourer: a labourer whose invocations fail for reasons that are not the tasks' (a
//! wrong URL, a missing function, a missing permission), or that closes task after task as dead, is held back
//! instead of destroying its queue (issue #8.9).
//!
//! ```text
//!            labourer-level failure, or more than `max_dead_in_row` dead in a row
//!   closed ───────────────────────────────────────────────────────────────────▶ held until T (notify once)
//!     ▲                                                                            │ now ≥ T
//!     │ an invocation is accepted                                                  ▼
//!     └─────────────────────────────────────────────────────────────────── half-open: one task per pass
//!                                                          labourer-level failure: held again, twice as long
//! ```
//!
//! The state is stored (so every orchestrator, and `sosw status`, sees it); concurrent orchestrators may overwrite
//! each other's update of it, which at worst holds a labourer a pass more or less: no task depends on it.

use crate::time::Time;
use serde::{Deserialize, Serialize};

/// `circuit_breaker` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Seconds a labourer is first held back.
    pub initial_hold: i64,
    /// The hold doubles with each failed probe, up to this many seconds.
    pub max_hold: i64,
    /// More tasks than this closed as dead on invocation in a row hold the labourer back too: that many broken
    /// tasks is less likely than one broken labourer.
    pub max_dead_in_row: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            initial_hold: 30,
            max_hold: 1800,
            max_dead_in_row: 10,
        }
    }
}

/// What is stored about a labourer's dispatch (nothing, for a healthy labourer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabourerState {
    pub labourer_id: String,
    /// Tasks closed as dead on invocation since the last accepted invocation.
    pub dead_in_row: u32,
    /// How many times in a row the breaker opened (0: closed).
    pub trips: u32,
    /// Held back until then (`None`: not held).
    pub held_until: Option<Time>,
    /// Why, in words an operator can act on.
    pub reason: Option<String>,
    /// When the current hold began (the first trip of the row).
    pub held_since: Option<Time>,
}

impl LabourerState {
    pub fn new(labourer_id: &str) -> LabourerState {
        LabourerState {
            labourer_id: labourer_id.to_string(),
            dead_in_row: 0,
            trips: 0,
            held_until: None,
            reason: None,
            held_since: None,
        }
    }
}

/// What a pass may do for a labourer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Dispatch as usual.
    Open,
    /// The hold has run out: try one task.
    HalfOpen,
    /// Dispatch nothing.
    Held { reason: String, until: Time },
}

pub fn gate(state: Option<&LabourerState>, now: Time) -> Gate {
    match state.and_then(|s| s.held_until.map(|until| (s, until))) {
        None => Gate::Open,
        Some((_, until)) if now >= until => Gate::HalfOpen,
        Some((s, until)) => Gate::Held {
            reason: s.reason.clone().unwrap_or_else(|| "held back".into()),
            until,
        },
    }
}

/// What one pass saw of a labourer's invocations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Invocations the labourer accepted (or ran and reported on).
    pub accepted: u32,
    /// Tasks closed as dead because their invocation failed permanently (task-level).
    pub dead: u32,
    /// The first labourer-level failure of the pass, if any.
    pub labourer_failure: Option<String>,
}

/// What to do with the stored state after a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    Keep,
    /// Store this state; `notify` when the labourer has just been held back (once per row of trips).
    Save { state: LabourerState, notify: bool },
    /// The labourer is healthy again: forget the state (`recovered` if it had been held).
    Clear { recovered: bool },
}

/// The hold after the `trips`-th trip in a row: `initial_hold × 2^(trips−1)`, at most `max_hold`.
pub fn hold_secs(config: &BreakerConfig, trips: u32) -> i64 {
    let factor = 1_i64.checked_shl(trips.saturating_sub(1).min(62)).unwrap_or(i64::MAX);
    config.initial_hold.saturating_mul(factor).min(config.max_hold)
}

pub fn after_pass(
    labourer_id: &str,
    state: Option<&LabourerState>,
    outcome: &PassOutcome,
    config: &BreakerConfig,
    now: Time,
) -> Transition {
    let previous = state.cloned().unwrap_or_else(|| LabourerState::new(labourer_id));
    let trip_reason = match &outcome.labourer_failure {
        Some(failure) => Some(failure.clone()),
        None => {
            // A pass with an accepted invocation breaks the row of dead tasks; the order inside one pass of
            // concurrent invocations is not known, so only passes without any success add up.
            let dead_in_row = if outcome.accepted > 0 {
                outcome.dead
            } else {
                previous.dead_in_row.saturating_add(outcome.dead)
            };
            if dead_in_row > config.max_dead_in_row {
                Some(format!(
                    "{dead_in_row} tasks in a row were closed as dead on invocation (more than `max_dead_in_row` \
                     {}): the labourer is more likely broken than its tasks",
                    config.max_dead_in_row
                ))
            } else if outcome.accepted > 0 && dead_in_row == 0 {
                return match state {
                    None => Transition::Keep,
                    Some(s) => Transition::Clear {
                        recovered: s.held_until.is_some(),
                    },
                };
            } else if dead_in_row != previous.dead_in_row {
                return Transition::Save {
                    state: LabourerState {
                        dead_in_row,
                        // An accepted invocation closes a half-open breaker.
                        trips: if outcome.accepted > 0 { 0 } else { previous.trips },
                        held_until: if outcome.accepted > 0 {
                            None
                        } else {
                            previous.held_until
                        },
                        reason: if outcome.accepted > 0 {
                            None
                        } else {
                            previous.reason.clone()
                        },
                        held_since: if outcome.accepted > 0 {
                            None
                        } else {
                            previous.held_since
                        },
                        ..previous
                    },
                    notify: false,
                };
            } else {
                None
            }
        }
    };
    match trip_reason {
        None => Transition::Keep,
        Some(reason) => {
            let trips = previous.trips.saturating_add(1);
            Transition::Save {
                notify: previous.trips == 0,
                state: LabourerState {
                    labourer_id: labourer_id.to_string(),
                    dead_in_row: 0,
                    trips,
                    held_until: Some(now.plus_secs(hold_secs(config, trips))),
                    reason: Some(reason),
                    held_since: previous.held_since.or(Some(now)),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Time = Time::from_secs(1_700_000_000);

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            initial_hold: 30,
            max_hold: 200,
            max_dead_in_row: 3,
        }
    }

    fn held(trips: u32, until: Time) -> LabourerState {
        LabourerState {
            trips,
            held_until: Some(until),
            reason: Some("POST http://x/run: 404 Not Found".into()),
            held_since: Some(NOW),
            ..LabourerState::new("w")
        }
    }

    #[test]
    fn gates() {
        assert_eq!(gate(None, NOW), Gate::Open);
        assert_eq!(gate(Some(&LabourerState::new("w")), NOW), Gate::Open);
        assert_eq!(
            gate(Some(&held(1, NOW.plus_secs(30))), NOW),
            Gate::Held {
                reason: "POST http://x/run: 404 Not Found".into(),
                until: NOW.plus_secs(30)
            }
        );
        assert_eq!(gate(Some(&held(1, NOW)), NOW), Gate::HalfOpen);
    }

    #[test]
    fn holds_double_up_to_the_maximum() {
        let got: Vec<i64> = (1..=6).map(|t| hold_secs(&cfg(), t)).collect();
        assert_eq!(got, vec![30, 60, 120, 200, 200, 200]);
        assert_eq!(hold_secs(&cfg(), u32::MAX), 200);
    }

    #[test]
    fn transitions() {
        let failure = PassOutcome {
            labourer_failure: Some("POST http://x/run: 404 Not Found".into()),
            ..PassOutcome::default()
        };
        let ok = PassOutcome {
            accepted: 2,
            ..PassOutcome::default()
        };
        let dead = |n| PassOutcome {
            dead: n,
            ..PassOutcome::default()
        };
        let c = cfg();
        // A first labourer-level failure holds the labourer back and notifies.
        assert_eq!(
            after_pass("w", None, &failure, &c, NOW),
            Transition::Save {
                state: held(1, NOW.plus_secs(30)),
                notify: true
            }
        );
        // A failed probe holds it twice as long, without another notification.
        let Transition::Save { state, notify } = after_pass("w", Some(&held(1, NOW)), &failure, &c, NOW.plus_secs(30))
        else {
            panic!("saved")
        };
        assert!(!notify);
        assert_eq!((state.trips, state.held_until), (2, Some(NOW.plus_secs(90))));
        assert_eq!(state.held_since, Some(NOW), "the hold began with the first trip");
        // A successful probe closes the breaker.
        assert_eq!(
            after_pass("w", Some(&held(2, NOW)), &ok, &c, NOW),
            Transition::Clear { recovered: true }
        );
        // A healthy pass of a healthy labourer writes nothing.
        assert_eq!(after_pass("w", None, &ok, &c, NOW), Transition::Keep);
        assert_eq!(
            after_pass("w", None, &PassOutcome::default(), &c, NOW),
            Transition::Keep
        );
        // Dead tasks add up across passes without a success…
        let Transition::Save { state: two, notify } = after_pass("w", None, &dead(2), &c, NOW) else {
            panic!("saved")
        };
        assert_eq!((two.dead_in_row, two.trips, notify), (2, 0, false));
        assert_eq!(
            after_pass("w", Some(&two), &PassOutcome::default(), &c, NOW),
            Transition::Keep
        );
        // …and more than `max_dead_in_row` trips the breaker.
        let Transition::Save { state, notify } = after_pass("w", Some(&two), &dead(2), &c, NOW) else {
            panic!("saved")
        };
        assert!(notify);
        assert_eq!((state.trips, state.dead_in_row), (1, 0));
        assert!(
            state
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("4 tasks in a row")),
            "{state:?}"
        );
        // A success resets the row.
        assert_eq!(
            after_pass("w", Some(&two), &ok, &c, NOW),
            Transition::Clear { recovered: false }
        );
        // A success with dead tasks in the same pass counts only that pass's dead.
        let mixed = PassOutcome {
            accepted: 1,
            dead: 1,
            labourer_failure: None,
        };
        let Transition::Save { state, .. } = after_pass("w", Some(&two), &mixed, &c, NOW) else {
            panic!("saved")
        };
        assert_eq!(state.dead_in_row, 1);
    }
}
