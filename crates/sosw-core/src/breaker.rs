//! The circuit breaker of a labourer: a labourer whose invocations fail for reasons that are not the tasks' (a
//! wrong URL, a missing function, a missing permission), or that closes task after task as dead, is held back
//! instead of destroying its queue (issue #8.9).
//!
//! ```text
//!            labourer-level failure with nothing accepted, or more than `max_dead_in_row` dead in a row
//!   closed ───────────────────────────────────────────────────────────────────────────▶ held until T (notify once)
//!     ▲                                                                                    │ now ≥ T
//!     │ a task is accepted                                                                 ▼
//!     └──────────────────────────────────────────────── half-open: one task per pass, not the suspect
//!                                                   labourer-level failure or a refused death: held again, twice as long
//! ```
//!
//! Whose fault is a labourer-level failure (a 404, a refused connection)? Every pass invokes one task first, alone;
//! if that fails at the labourer level, nothing else is sent. The failure is **the labourer's** when the labourer
//! accepted nothing in the pass; it is **the task's** when the labourer accepted other tasks in the same pass, or
//! when the task is the *suspect* — the task whose failure held the labourer back, retried after another task proved
//! the labourer healthy. A task's fault spends its attempt like any failed invocation, so one task that always draws
//! a 404 cannot hold its queue forever.
//!
//! The state is stored (so every orchestrator, and `sosw status`, sees it); concurrent orchestrators may overwrite
//! each other's update of it, which at worst holds a labourer a pass more or less: no task depends on it.
//!
//! Longer than 500 lines because of its tests (the state machine's table, about 270 lines).

use crate::decide::FailureKind;
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// `circuit_breaker` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Seconds a labourer is first held back.
    pub initial_hold: i64,
    /// The hold doubles with each failed probe, up to this many seconds.
    pub max_hold: i64,
    /// More tasks than this closed as dead on invocation in a row hold the labourer back instead: that many broken
    /// tasks is less likely than one broken labourer.
    pub max_dead_in_row: u32,
    /// Seconds a labourer that throttled an invocation without a `Retry-After` is held back ([`crate::flow`]).
    pub throttle_hold: i64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            initial_hold: 30,
            max_hold: 1800,
            max_dead_in_row: 10,
            throttle_hold: 5,
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
    /// The task whose labourer-level failure held the labourer back: probes avoid it, and once the labourer has
    /// accepted another task, its next labourer-level failure is its own.
    pub suspect: Option<String>,
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
            suspect: None,
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

/// Which of the queue's head tasks a half-open pass probes: the first that is not the suspect (the suspect itself
/// when it is alone). `None` for an empty queue.
pub fn probe<'a>(state: Option<&LabourerState>, head: &'a [String]) -> Option<&'a String> {
    let suspect = state.and_then(|s| s.suspect.as_deref());
    head.iter().find(|id| Some(id.as_str()) != suspect).or(head.first())
}

/// Whether a labourer-level failure of `task_id` is the task's own fault: the labourer accepted other tasks in the
/// same pass, or the task is the suspect of a breaker that has since closed (another task was accepted).
pub fn failure_is_the_tasks(state: Option<&LabourerState>, task_id: &str, accepted_in_pass: u32) -> bool {
    accepted_in_pass > 0 || state.is_some_and(|s| s.held_until.is_none() && s.suspect.as_deref() == Some(task_id))
}

/// Whether a failure of `task_id`'s invocation stops the rest of the labourer's pass (the claimed tasks not yet
/// sent go back): sosw's own trouble, a throttle (the labourer asked us to slow down: hammering it with the rest
/// of the pass would only draw more), or a labourer-level failure — unless the task is the suspect, whose failure
/// is its own now that the labourer has taken another task.
pub fn stops_the_pass(kind: FailureKind, state: Option<&LabourerState>, task_id: &str) -> bool {
    match kind {
        FailureKind::Local | FailureKind::Throttled => true,
        FailureKind::Labourer => !failure_is_the_tasks(state, task_id, 0),
        _ => false,
    }
}

/// How many of a pass's task-level permanent failures may close their tasks as dead; the others go back to the
/// queue (attempt refunded) and hold the labourer back. While the labourer is held, none may: it must accept a
/// task before it can kill another.
pub fn dead_allowance(state: Option<&LabourerState>, accepted_in_pass: u32, config: &BreakerConfig) -> u32 {
    match state {
        Some(s) if s.trips > 0 && accepted_in_pass == 0 => 0,
        Some(s) if accepted_in_pass == 0 => config.max_dead_in_row.saturating_sub(s.dead_in_row),
        _ => config.max_dead_in_row,
    }
}

/// What one pass saw of a labourer's invocations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Invocations the labourer accepted (or ran and reported on).
    pub accepted: u32,
    /// Tasks closed as dead because their invocation failed permanently (task-level).
    pub dead: u32,
    /// Permanent failures put back instead of closed as dead, past [`dead_allowance`].
    pub refused_dead: u32,
    /// The first labourer-level failure judged the labourer's, if any, and its task.
    pub labourer_failure: Option<(String, String)>,
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
    let exponent = trips.saturating_sub(1);
    let factor = if exponent >= 62 { i64::MAX } else { 1_i64 << exponent };
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
    let trip = |reason: String, suspect: Option<String>, dead_in_row: u32| {
        let trips = previous.trips.saturating_add(1);
        Transition::Save {
            notify: previous.trips == 0,
            state: LabourerState {
                labourer_id: labourer_id.to_string(),
                dead_in_row,
                trips,
                held_until: Some(now.plus_secs(hold_secs(config, trips))),
                reason: Some(reason),
                held_since: previous.held_since.or(Some(now)),
                // The first suspect stays: probes keep avoiding it.
                suspect: previous.suspect.clone().or(suspect),
            },
        }
    };
    if let Some((reason, task)) = &outcome.labourer_failure {
        return trip(reason.clone(), Some(task.clone()), previous.dead_in_row);
    }
    // A pass with an accepted invocation breaks the row of dead tasks; the order inside one pass of concurrent
    // invocations is not known, so only passes without any success add up.
    let dead_in_row = if outcome.accepted > 0 {
        outcome.dead
    } else {
        previous.dead_in_row.saturating_add(outcome.dead)
    };
    if outcome.refused_dead > 0 || dead_in_row > config.max_dead_in_row {
        let seen = dead_in_row.saturating_add(outcome.refused_dead);
        return trip(
            format!(
                "{seen} tasks in a row failed permanently on invocation (more than `max_dead_in_row` {}): the \
                 labourer is more likely broken than its tasks; those past the limit wait in the queue",
                config.max_dead_in_row
            ),
            None,
            dead_in_row.min(config.max_dead_in_row),
        );
    }
    if outcome.accepted == 0 {
        return if dead_in_row == previous.dead_in_row {
            Transition::Keep
        } else {
            Transition::Save {
                state: LabourerState {
                    dead_in_row,
                    ..previous
                },
                notify: false,
            }
        };
    }
    // Accepted: the breaker closes. A suspect that has not had its next chance yet is remembered (not held).
    let Some(stored) = state else {
        return if dead_in_row == 0 {
            Transition::Keep
        } else {
            Transition::Save {
                state: LabourerState {
                    dead_in_row,
                    ..previous
                },
                notify: false,
            }
        };
    };
    let was_held = stored.held_until.is_some();
    let suspect = if was_held { stored.suspect.clone() } else { None };
    if dead_in_row == 0 && suspect.is_none() {
        return Transition::Clear { recovered: was_held };
    }
    Transition::Save {
        state: LabourerState {
            labourer_id: labourer_id.to_string(),
            dead_in_row,
            trips: 0,
            held_until: None,
            reason: None,
            held_since: None,
            suspect,
        },
        notify: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Time = Time::from_secs(1_700_000_000);
    const REASON: &str = "POST http://x/run: 404 Not Found";

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            initial_hold: 30,
            max_hold: 200,
            max_dead_in_row: 3,
            throttle_hold: 5,
        }
    }

    fn held(trips: u32, until: Time) -> LabourerState {
        LabourerState {
            trips,
            held_until: Some(until),
            reason: Some(REASON.into()),
            held_since: Some(NOW),
            suspect: Some("t1".into()),
            ..LabourerState::new("w")
        }
    }

    fn failure() -> PassOutcome {
        PassOutcome {
            labourer_failure: Some((REASON.into(), "t1".into())),
            ..PassOutcome::default()
        }
    }

    fn accepted(n: u32) -> PassOutcome {
        PassOutcome {
            accepted: n,
            ..PassOutcome::default()
        }
    }

    fn dead(n: u32) -> PassOutcome {
        PassOutcome {
            dead: n,
            ..PassOutcome::default()
        }
    }

    #[test]
    fn gates() {
        assert_eq!(gate(None, NOW), Gate::Open);
        assert_eq!(gate(Some(&LabourerState::new("w")), NOW), Gate::Open);
        assert_eq!(
            gate(Some(&held(1, NOW.plus_secs(30))), NOW),
            Gate::Held {
                reason: REASON.into(),
                until: NOW.plus_secs(30)
            }
        );
        assert_eq!(gate(Some(&held(1, NOW)), NOW), Gate::HalfOpen);
    }

    #[test]
    fn probes_avoid_the_suspect() {
        let head = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let s = held(1, NOW);
        assert_eq!(probe(Some(&s), &head(&["t1", "t2"])).map(String::as_str), Some("t2"));
        assert_eq!(
            probe(Some(&s), &head(&["t1"])).map(String::as_str),
            Some("t1"),
            "alone: itself"
        );
        assert_eq!(probe(None, &head(&["t1", "t2"])).map(String::as_str), Some("t1"));
        assert_eq!(probe(Some(&s), &head(&[])), None);
    }

    #[test]
    fn whose_fault_a_labourer_level_failure_is() {
        let closed_with_suspect = LabourerState {
            suspect: Some("t1".into()),
            ..LabourerState::new("w")
        };
        let table: &[(Option<&LabourerState>, &str, u32, bool)] = &[
            (None, "t1", 0, false),
            (None, "t1", 1, true),
            (Some(&closed_with_suspect), "t1", 0, true),
            (Some(&closed_with_suspect), "t2", 0, false),
            // While held (a probe), even the suspect's failure is the labourer's: nothing proved it healthy.
            (Some(&held(1, NOW)), "t1", 0, false),
        ];
        for (state, task, accepted, tasks) in table {
            assert_eq!(
                failure_is_the_tasks(*state, task, *accepted),
                *tasks,
                "{state:?} {task} {accepted}"
            );
        }
    }

    #[test]
    fn what_stops_a_pass() {
        let closed_with_suspect = LabourerState {
            suspect: Some("t1".into()),
            ..LabourerState::new("w")
        };
        let table: &[(FailureKind, Option<&LabourerState>, &str, bool)] = &[
            (FailureKind::Local, None, "t1", true),
            (FailureKind::Labourer, None, "t1", true),
            (FailureKind::Labourer, Some(&closed_with_suspect), "t1", false),
            (FailureKind::Labourer, Some(&closed_with_suspect), "t2", true),
            (FailureKind::Permanent, None, "t1", false),
            // A throttling labourer is sent nothing more: its Retry-After holds it back ([`crate::flow`]).
            (FailureKind::Throttled, None, "t1", true),
            (FailureKind::Transient, None, "t1", false),
            (FailureKind::Unknown, None, "t1", false),
        ];
        for (kind, state, task, stops) in table {
            assert_eq!(stops_the_pass(*kind, *state, task), *stops, "{kind:?} {state:?} {task}");
        }
    }

    #[test]
    fn dead_allowances() {
        let c = cfg();
        let counting = LabourerState {
            dead_in_row: 2,
            ..LabourerState::new("w")
        };
        assert_eq!(dead_allowance(None, 0, &c), 3);
        assert_eq!(dead_allowance(Some(&counting), 0, &c), 1);
        assert_eq!(
            dead_allowance(Some(&counting), 5, &c),
            3,
            "an accepted task breaks the row"
        );
        assert_eq!(
            dead_allowance(Some(&held(1, NOW)), 0, &c),
            0,
            "held: it must accept before it kills"
        );
    }

    #[test]
    fn holds_double_up_to_the_maximum() {
        let got: Vec<i64> = (1..=6).map(|t| hold_secs(&cfg(), t)).collect();
        assert_eq!(got, vec![30, 60, 120, 200, 200, 200]);
        assert_eq!(hold_secs(&cfg(), u32::MAX), 200);
        assert_eq!(hold_secs(&cfg(), 64), 200);
    }

    #[test]
    fn labourer_level_failures_hold_and_double() {
        let c = cfg();
        assert_eq!(
            after_pass("w", None, &failure(), &c, NOW),
            Transition::Save {
                state: held(1, NOW.plus_secs(30)),
                notify: true
            }
        );
        // A failed probe holds it twice as long, without another notification; the first suspect stays.
        let probe_failed = PassOutcome {
            labourer_failure: Some((REASON.into(), "t2".into())),
            ..PassOutcome::default()
        };
        let Transition::Save { state, notify } =
            after_pass("w", Some(&held(1, NOW)), &probe_failed, &c, NOW.plus_secs(30))
        else {
            panic!("saved")
        };
        assert!(!notify);
        assert_eq!((state.trips, state.held_until), (2, Some(NOW.plus_secs(90))));
        assert_eq!(state.held_since, Some(NOW), "the hold began with the first trip");
        assert_eq!(state.suspect.as_deref(), Some("t1"));
    }

    #[test]
    fn an_accepted_probe_closes_the_breaker_but_remembers_the_suspect() {
        let c = cfg();
        let Transition::Save { state, notify } = after_pass("w", Some(&held(2, NOW)), &accepted(1), &c, NOW) else {
            panic!("saved")
        };
        assert!(!notify);
        assert_eq!((state.trips, state.held_until, state.reason.clone()), (0, None, None));
        assert_eq!(
            state.suspect.as_deref(),
            Some("t1"),
            "its next labourer-level failure is its own"
        );
        assert_eq!(gate(Some(&state), NOW), Gate::Open);
        // The next clean pass forgets everything.
        assert_eq!(
            after_pass("w", Some(&state), &accepted(5), &c, NOW),
            Transition::Clear { recovered: false }
        );
        // A held labourer without a suspect (dead in a row) recovers at once.
        let dead_held = LabourerState {
            suspect: None,
            ..held(1, NOW)
        };
        assert_eq!(
            after_pass("w", Some(&dead_held), &accepted(1), &c, NOW),
            Transition::Clear { recovered: true }
        );
        // A healthy pass of a healthy labourer writes nothing.
        assert_eq!(after_pass("w", None, &accepted(2), &c, NOW), Transition::Keep);
        assert_eq!(
            after_pass("w", None, &PassOutcome::default(), &c, NOW),
            Transition::Keep
        );
    }

    #[test]
    fn dead_tasks_in_a_row() {
        let c = cfg();
        // They add up across passes without a success…
        let Transition::Save { state: two, notify } = after_pass("w", None, &dead(2), &c, NOW) else {
            panic!("saved")
        };
        assert_eq!((two.dead_in_row, two.trips, notify), (2, 0, false));
        assert_eq!(
            after_pass("w", Some(&two), &PassOutcome::default(), &c, NOW),
            Transition::Keep
        );
        // …and a death refused past the allowance holds the labourer back, doubling like any trip.
        let refused = PassOutcome {
            dead: 1,
            refused_dead: 4,
            ..PassOutcome::default()
        };
        let Transition::Save { state, notify } = after_pass("w", Some(&two), &refused, &c, NOW) else {
            panic!("saved")
        };
        assert!(notify);
        assert_eq!((state.trips, state.dead_in_row, state.suspect.clone()), (1, 3, None));
        assert!(
            state
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("7 tasks in a row")),
            "{state:?}"
        );
        let again = PassOutcome {
            refused_dead: 1,
            ..PassOutcome::default()
        };
        let Transition::Save { state, notify } = after_pass("w", Some(&state), &again, &c, NOW) else {
            panic!("saved")
        };
        assert_eq!((state.trips, notify), (2, false), "a refused probe doubles the hold");
        // A success resets the row.
        assert_eq!(
            after_pass("w", Some(&two), &accepted(1), &c, NOW),
            Transition::Clear { recovered: false }
        );
        // A success with dead tasks in the same pass counts only that pass's dead.
        let mixed = PassOutcome {
            accepted: 1,
            dead: 1,
            ..PassOutcome::default()
        };
        let Transition::Save { state, .. } = after_pass("w", Some(&two), &mixed, &c, NOW) else {
            panic!("saved")
        };
        assert_eq!(state.dead_in_row, 1);
    }
}
