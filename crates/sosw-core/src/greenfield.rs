//! Greenfield: the single number that holds a task's state and queue position (reference §3).
//!
//! A live task's `greenfield` is either a *queue position* (small numbers, FIFO: lower is earlier) or an
//! *invocation marker* `invocation_time + delta`. The ranges are told apart only by magnitude, against markers
//! computed once per pass and per labourer:
//!
//! ```text
//! start S = now                 invoked I = S + delta           expired E = I - (duration + cooldown)
//! queued:  g < S     expired: S <= g <= E (not completed)     running: g > E (not completed)
//! ```
//!
//! Decisions recorded here (see `docs/task-states.md`):
//! - the `g = E` tie, which Python sosw counts as both running and expired, is **expired** only;
//! - `g > I` (a task invoked after this pass started, e.g. by a concurrent orchestrator with a later clock) is
//!   **running**: the original's `E <= g <= I` would not count it and so over-invoke;
//! - a new queue position that would reach the timestamp range is refused ([`GreenfieldError::QueueFull`])
//!   instead of being silently classified as expired (reference §3.6, §7.18).
//!
//! Longer than 500 lines because of its tests (tables and properties, about 300 lines).

use crate::time::Time;
use serde::{Deserialize, Serialize};

/// `greenfield_invocation_delta`: 365.25 days.
pub const DEFAULT_INVOCATION_DELTA: i64 = 31_557_600;
/// `greenfield_task_step`: distance between two consecutive new tasks.
pub const DEFAULT_TASK_STEP: i64 = 1000;
/// The largest `greenfield_invocation_delta` accepted: 100 years. Any larger value only risks overflow.
pub const MAX_INVOCATION_DELTA: i64 = 3_155_760_000;
/// The largest `greenfield_task_step` accepted: with it a queue holds one task at a time.
pub const MAX_TASK_STEP: i64 = 1_000_000_000;
/// Labourer `duration` default.
pub const DEFAULT_DURATION: i64 = 900;
/// Labourer `cooldown` default.
pub const DEFAULT_COOLDOWN: i64 = 300;

/// A greenfield: sosw's one number of task state — a queue position below the pass's start, or an invocation's
/// time + `greenfield_invocation_delta` at or above it ([`Markers`] tell them apart). A type of its own, so that
/// it is never mixed up with a time, a count or a step at the store's port, and so that arithmetic on it is checked
/// or saturating, never a silent overflow. Stored and serialised as the plain number Python sosw writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Greenfield(i64);

impl Greenfield {
    pub const MIN: Greenfield = Greenfield(i64::MIN);
    pub const MAX: Greenfield = Greenfield(i64::MAX);

    pub const fn new(value: i64) -> Greenfield {
        Greenfield(value)
    }

    /// `S` at `now`: the start marker of a pass at `now` (its whole seconds). Greenfields below it are queue
    /// positions, the rest invocations ([`Markers`]).
    pub const fn start(now: Time) -> Greenfield {
        Greenfield(now.secs())
    }

    /// The number as stored.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// `self + by`, or `None` on overflow.
    pub fn checked_add(self, by: i64) -> Option<Greenfield> {
        self.0.checked_add(by).map(Greenfield)
    }

    /// `self − by`, or `None` on overflow.
    pub fn checked_sub(self, by: i64) -> Option<Greenfield> {
        self.0.checked_sub(by).map(Greenfield)
    }

    /// `self + by`, held at the ends of the range: still ordered, for bounds that only compare.
    pub fn saturating_add(self, by: i64) -> Greenfield {
        Greenfield(self.0.saturating_add(by))
    }

    /// `self − by`, held at the ends of the range.
    pub fn saturating_sub(self, by: i64) -> Greenfield {
        Greenfield(self.0.saturating_sub(by))
    }
}

impl std::fmt::Display for Greenfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Greenfield> for i64 {
    fn from(g: Greenfield) -> i64 {
        g.0
    }
}

impl From<Greenfield> for serde_json::Value {
    fn from(g: Greenfield) -> serde_json::Value {
        g.0.into()
    }
}

/// The greenfield parameters shared by every labourer (`greenfield_invocation_delta`, `greenfield_task_step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GreenfieldParams {
    pub delta: i64,
    pub step: i64,
}

impl Default for GreenfieldParams {
    fn default() -> Self {
        GreenfieldParams {
            delta: DEFAULT_INVOCATION_DELTA,
            step: DEFAULT_TASK_STEP,
        }
    }
}

/// The markers of one labourer for one pass (reference §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Markers {
    /// `S`: the pass's `now`, in whole seconds.
    pub start: Greenfield,
    /// `I = S + delta`: the greenfield a task invoked in this pass receives.
    pub invoked: Greenfield,
    /// `E = I - (duration + cooldown)`: tasks at or below this (and at or above `S`) are expired.
    pub expired: Greenfield,
}

impl Markers {
    pub fn new(now: Time, delta: i64, duration: i64, cooldown: i64) -> Self {
        let start = Greenfield::start(now);
        // Saturating: validation bounds every input far below overflow, and a saturated marker is still ordered.
        let invoked = start.saturating_add(delta);
        Markers {
            start,
            invoked,
            expired: invoked.saturating_sub(duration.saturating_add(cooldown)),
        }
    }

    /// Classifies a live task (one in the tasks table, not in retry or closed).
    pub fn classify(&self, greenfield: Greenfield, completed: bool) -> TaskState {
        if completed {
            TaskState::Completed
        } else if greenfield < self.start {
            TaskState::Queued
        } else if greenfield <= self.expired {
            TaskState::Expired
        } else {
            TaskState::Running
        }
    }
}

/// The greenfield a heartbeat at the markers' time gives a running task: it counts as running `heartbeat_timeout`
/// more seconds when the labourer has one, else its whole window (`duration + cooldown`), as if invoked now. Always
/// an invocation greenfield (`> start`): the window is below `greenfield_invocation_delta`.
pub fn heartbeat_greenfield(markers: &Markers, heartbeat_timeout: Option<i64>) -> Greenfield {
    let window = markers.invoked.0.saturating_sub(markers.expired.0);
    markers.expired.saturating_add(heartbeat_timeout.unwrap_or(window))
}

/// Until when a task at `greenfield` counts as running: it expires once `now + delta − window ≥ greenfield`.
pub fn running_until(greenfield: Greenfield, delta: i64, window: i64) -> Time {
    Time::from_secs(greenfield.0.saturating_sub(delta).saturating_add(window))
}

/// When the task at `greenfield` was invoked — or, after a heartbeat, when it would have been invoked to be
/// running until the same time — to the second: the inverse of [`invocation_greenfield`].
pub fn invoked_at(greenfield: Greenfield, delta: i64) -> Time {
    Time::from_secs(greenfield.0.saturating_sub(delta))
}

/// The state of a live task as seen by a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting in the FIFO queue: `g < S`.
    Queued,
    /// Invoked longer ago than `duration + cooldown` and not completed: `S <= g <= E`.
    Expired,
    /// Invoked recently and not completed: `g > E`.
    Running,
    /// The worker reported success; waiting to be archived.
    Completed,
}

/// A closed interval of greenfield values, `lo..=hi`, used to query one state of a labourer's live tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GreenfieldRange {
    pub lo: Greenfield,
    pub hi: Greenfield,
}

impl TaskState {
    /// The greenfield range of this state under `markers`, and whether the state requires `completed_at`.
    /// `Completed` is any greenfield with `completed_at` set.
    pub fn range(self, markers: &Markers) -> (GreenfieldRange, bool) {
        match self {
            TaskState::Queued => (
                GreenfieldRange {
                    lo: Greenfield::MIN,
                    hi: markers.start.saturating_sub(1),
                },
                false,
            ),
            TaskState::Expired => (
                GreenfieldRange {
                    lo: markers.start,
                    hi: markers.expired,
                },
                false,
            ),
            TaskState::Running => (
                GreenfieldRange {
                    lo: markers.expired.saturating_add(1),
                    hi: Greenfield::MAX,
                },
                false,
            ),
            TaskState::Completed => (
                GreenfieldRange {
                    lo: Greenfield::MIN,
                    hi: Greenfield::MAX,
                },
                true,
            ),
        }
    }
}

/// The greenfield written when a task is invoked at `now`.
pub fn invocation_greenfield(now: Time, delta: i64) -> Greenfield {
    Greenfield(now.secs().saturating_add(delta))
}

/// Whether `greenfield` is a queue position at `now`: `g < now`, the same bound as [`Markers::classify`].
/// (Python's oldest/newest helpers use `g <= now()`, which counts a task invoked exactly `delta` ago as the tail
/// of the queue; sosw-rs keeps one definition.)
pub fn is_queue_position(greenfield: Greenfield, now: Time) -> bool {
    greenfield.0 < now.secs()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GreenfieldError {
    #[error(
        "queue of labourer `{labourer}` is full: position {position} would reach the invocation range (now = {now}); \
         drain the queue or lower `greenfield_task_step`"
    )]
    QueueFull { labourer: String, position: i64, now: i64 },
}

/// Positions for `n` new tasks at the tail of a labourer's queue (reference §3.4).
///
/// `newest_queued` is the highest queue position present, if any. An empty queue behaves as if its newest task were
/// at `step`, so the first task gets `2 * step` (2000 with the defaults), exactly as Python sosw.
pub fn tail_positions(
    labourer: &str,
    newest_queued: Option<Greenfield>,
    step: i64,
    n: usize,
    now: Time,
) -> Result<Vec<Greenfield>, GreenfieldError> {
    let base = newest_queued.map_or(step, Greenfield::get);
    let count = i64::try_from(n).unwrap_or(i64::MAX);
    // Exact, or none: a saturated product would understate the last position (and the sum below would overflow).
    let last = step.checked_mul(count).and_then(|span| base.checked_add(span));
    match last {
        Some(last) if n == 0 || last < now.secs() => {}
        _ => {
            return Err(GreenfieldError::QueueFull {
                labourer: labourer.to_string(),
                position: last.unwrap_or(i64::MAX),
                now: now.secs(),
            })
        }
    }
    // Every position lies between `base` and `last < now`: no step of the sum can overflow.
    Ok((1..=count).map(|i| Greenfield(base + step * i)).collect())
}

/// Positions for `n` tasks coming back from the retry table to the head of the queue (reference §3.4): the
/// oldest queued position minus 1, 2, ... (an empty queue counts as `step`: 999, 998, ...). The last one processed
/// becomes the new head, as in Python sosw.
pub fn head_positions(oldest_queued: Option<Greenfield>, step: i64, n: usize) -> Vec<Greenfield> {
    let base = oldest_queued.unwrap_or(Greenfield(step));
    (1..=i64::try_from(n).unwrap_or(i64::MAX))
        .map(|k| base.saturating_sub(k))
        .collect()
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;

    #[test]
    fn a_heartbeat_moves_the_expiry_to_its_time_plus_the_timeout_or_the_window() {
        let (delta, duration, cooldown) = (1_000_000, 60, 30);
        let now = Time::from_secs(5_000);
        let m = Markers::new(now, delta, duration, cooldown);
        let window = duration + cooldown;
        // (heartbeat_timeout) → the task runs until
        for (timeout, until) in [(None, 5_090), (Some(20), 5_020), (Some(600), 5_600)] {
            let g = heartbeat_greenfield(&m, timeout);
            assert!(g > m.start, "an invocation greenfield");
            assert_eq!(running_until(g, delta, window), Time::from_secs(until), "{timeout:?}");
            // Running just before that time, expired at it.
            let before = Markers::new(Time::from_secs(until - 1), delta, duration, cooldown);
            let at = Markers::new(Time::from_secs(until), delta, duration, cooldown);
            assert_eq!(before.classify(g, false), TaskState::Running, "{timeout:?}");
            assert_eq!(at.classify(g, false), TaskState::Expired, "{timeout:?}");
        }
        assert_eq!(heartbeat_greenfield(&m, None), m.invoked, "as if invoked now");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gf(value: i64) -> Greenfield {
        Greenfield(value)
    }

    fn nums(gs: Vec<Greenfield>) -> Vec<i64> {
        gs.into_iter().map(Greenfield::get).collect()
    }

    const S: i64 = 1_700_000_000;

    fn markers() -> Markers {
        Markers::new(
            Time::from_secs(S),
            DEFAULT_INVOCATION_DELTA,
            DEFAULT_DURATION,
            DEFAULT_COOLDOWN,
        )
    }

    #[test]
    fn greenfield_arithmetic_is_checked_or_saturating_and_it_stores_as_a_plain_number() {
        // (start, by) → checked_add, checked_sub, saturating_add, saturating_sub
        let table = [
            (5, 3, Some(8), Some(2), 8, 2),
            (i64::MAX, 1, None, Some(i64::MAX - 1), i64::MAX, i64::MAX - 1),
            (i64::MIN, 1, Some(i64::MIN + 1), None, i64::MIN + 1, i64::MIN),
            (0, i64::MIN, Some(i64::MIN), None, i64::MIN, i64::MAX),
        ];
        for (start, by, add, sub, sat_add, sat_sub) in table {
            let g = gf(start);
            assert_eq!(g.checked_add(by).map(Greenfield::get), add, "{start} + {by}");
            assert_eq!(g.checked_sub(by).map(Greenfield::get), sub, "{start} - {by}");
            assert_eq!(g.saturating_add(by).get(), sat_add, "{start} +| {by}");
            assert_eq!(g.saturating_sub(by).get(), sat_sub, "{start} -| {by}");
        }
        assert_eq!(
            Greenfield::start(Time::from_millis(1_700_000_000_999)),
            gf(1_700_000_000)
        );
        assert_eq!(gf(-3).to_string(), "-3");
        assert_eq!(serde_json::to_value(gf(2000)).expect("json"), serde_json::json!(2000));
        assert_eq!(
            serde_json::from_value::<Greenfield>(serde_json::json!(2000)).expect("json"),
            gf(2000)
        );
        assert!(gf(1) < gf(2) && Greenfield::MIN < gf(i64::MIN + 1) && gf(i64::MAX) == Greenfield::MAX);
    }

    #[test]
    fn markers_follow_the_reference() {
        let m = markers();
        assert_eq!(m.start.get(), S);
        assert_eq!(m.invoked.get(), S + 31_557_600);
        assert_eq!(m.expired.get(), S + 31_557_600 - 1200);
        // TM-2: time frozen at 123.
        let m = Markers::new(Time::from_secs(123), DEFAULT_INVOCATION_DELTA, 900, 300);
        assert_eq!(
            (m.start.get(), m.invoked.get(), m.expired.get()),
            (123, 123 + 31_557_600, 123 + 31_557_600 - 1200)
        );
    }

    #[test]
    fn classification_table() {
        let m = markers();
        let d = DEFAULT_INVOCATION_DELTA;
        let cases: &[(&str, i64, bool, TaskState)] = &[
            ("first queue position", 2000, false, TaskState::Queued),
            ("retried, negative", -5, false, TaskState::Queued),
            ("just below S", S - 1, false, TaskState::Queued),
            ("S itself (BETWEEN is inclusive)", S, false, TaskState::Expired),
            ("invoked 1600 s ago", S - 1600 + d, false, TaskState::Expired),
            (
                "E tie: invoked exactly 1200 s ago",
                S - 1200 + d,
                false,
                TaskState::Expired,
            ),
            ("invoked 1199 s ago", S - 1199 + d, false, TaskState::Running),
            ("invoked 600 s ago", S - 600 + d, false, TaskState::Running),
            ("I: invoked in this pass", S + d, false, TaskState::Running),
            ("after I: a concurrent pass", S + 10 + d, false, TaskState::Running),
            ("stale for over a year", S - 5, false, TaskState::Queued),
            ("completed running", S - 600 + d, true, TaskState::Completed),
            ("completed expired", S - 5000 + d, true, TaskState::Completed),
        ];
        for (name, g, completed, want) in cases {
            assert_eq!(m.classify(gf(*g), *completed), *want, "{name}");
        }
    }

    #[test]
    fn ranges_agree_with_classification() {
        let m = markers();
        for g in [
            i64::MIN,
            -1,
            0,
            2000,
            S - 1,
            S,
            m.expired.get() - 1,
            m.expired.get(),
            m.expired.get() + 1,
            m.invoked.get(),
            m.invoked.get() + 5,
        ] {
            let g = gf(g);
            for state in [TaskState::Queued, TaskState::Expired, TaskState::Running] {
                let (r, _) = state.range(&m);
                assert_eq!(
                    r.lo <= g && g <= r.hi,
                    m.classify(g, false) == state,
                    "g={g} state={state:?}"
                );
            }
        }
    }

    #[test]
    fn tail_positions_match_python() {
        let now = Time::from_secs(S);
        assert_eq!(
            tail_positions("w", None, 1000, 3, now).map(nums),
            Ok(vec![2000, 3000, 4000])
        );
        // TM-6: newest 5000 → 6000.
        assert_eq!(
            tail_positions("w", Some(gf(5000)), 1000, 1, now).map(nums),
            Ok(vec![6000])
        );
        assert_eq!(tail_positions("w", Some(gf(7)), 1000, 0, now).map(nums), Ok(vec![]));
    }

    #[test]
    fn tail_positions_refuse_to_reach_timestamps() {
        let now = Time::from_secs(10_000);
        assert_eq!(
            tail_positions("w", Some(gf(8000)), 1000, 1, now).map(nums),
            Ok(vec![9000])
        );
        assert!(matches!(
            tail_positions("w", Some(gf(8000)), 1000, 2, now),
            Err(GreenfieldError::QueueFull { position: 10_000, .. })
        ));
    }

    #[test]
    fn head_positions_match_python() {
        // SCV-5.
        assert_eq!(nums(head_positions(Some(gf(5000)), 1000, 3)), vec![4999, 4998, 4997]);
        assert_eq!(nums(head_positions(None, 1000, 3)), vec![999, 998, 997]);
    }

    #[test]
    fn invocation_greenfield_from_tm13() {
        // TM-13: greenfield 1000 at now = 100000 becomes 31657600.
        assert_eq!(
            invocation_greenfield(Time::from_secs(100_000), DEFAULT_INVOCATION_DELTA),
            gf(31_657_600)
        );
        assert!(is_queue_position(gf(1000), Time::from_secs(100_000)));
        assert!(!is_queue_position(gf(100_000), Time::from_secs(100_000)));
        // The inverse: when a task was invoked, from its greenfield.
        assert_eq!(
            invoked_at(gf(31_657_600), DEFAULT_INVOCATION_DELTA),
            Time::from_secs(100_000)
        );
        assert_eq!(invoked_at(Greenfield::MIN, 1), Time::from_secs(i64::MIN));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn gf(value: i64) -> Greenfield {
        Greenfield(value)
    }

    proptest! {
        #[test]
        fn tail_positions_climb_by_step_and_stay_queued(
            newest in proptest::option::of(-1_000_000i64..1_000_000_000),
            step in 1i64..10_000,
            n in 0usize..500,
            now in 1_000_000_000i64..2_000_000_000,
        ) {
            match tail_positions("w", newest.map(gf), step, n, Time::from_secs(now)) {
                Ok(p) => {
                    prop_assert_eq!(p.len(), n);
                    let base = newest.unwrap_or(step);
                    for (i, g) in p.iter().enumerate() {
                        prop_assert_eq!(g.get(), base + step * (i as i64 + 1));
                        prop_assert!(g.get() < now, "a new task is queued");
                    }
                }
                Err(GreenfieldError::QueueFull { position, .. }) => prop_assert!(position >= now),
            }
        }

        /// Whatever the store holds and the clock says, the arithmetic never overflows (tests run with overflow
        /// checks): a saturated marker or a full queue, never a wrapped greenfield.
        #[test]
        fn greenfield_arithmetic_never_overflows(
            newest in proptest::option::of(proptest::num::i64::ANY),
            step in 1i64..=i64::MAX,
            n in 0usize..64,
            now in proptest::num::i64::ANY,
            delta in proptest::num::i64::ANY,
            duration in 0i64..=i64::MAX,
            cooldown in 0i64..=i64::MAX,
        ) {
            let now = Time::from_millis(now);
            let m = Markers::new(now, delta.max(0), duration, cooldown);
            prop_assert!(m.expired <= m.invoked);
            let _ = invocation_greenfield(now, delta.max(0));
            if let Ok(p) = tail_positions("w", newest.map(gf), step, n, now) {
                prop_assert!(p.iter().all(|g| g.get() < now.secs()));
            }
            let p = head_positions(newest.map(gf), step, n);
            prop_assert_eq!(p.len(), n);
        }

        #[test]
        fn head_positions_go_below_the_oldest(oldest in proptest::option::of(-1_000_000i64..1_000_000_000), n in 0usize..100) {
            let p = head_positions(oldest.map(gf), DEFAULT_TASK_STEP, n);
            let base = oldest.unwrap_or(DEFAULT_TASK_STEP);
            prop_assert!(p.windows(2).all(|w| w[1].get() == w[0].get() - 1));
            prop_assert!(p.iter().all(|g| g.get() < base));
        }

        #[test]
        fn every_greenfield_is_in_exactly_one_state(
            g in proptest::num::i64::ANY,
            now in 0i64..4_000_000_000,
            duration in 1i64..100_000,
            cooldown in 0i64..100_000,
        ) {
            let g = gf(g);
            let m = Markers::new(Time::from_secs(now), DEFAULT_INVOCATION_DELTA, duration, cooldown);
            let states = [TaskState::Queued, TaskState::Expired, TaskState::Running];
            let holding: Vec<_> = states.iter().filter(|s| { let (r, _) = s.range(&m); r.lo <= g && g <= r.hi }).collect();
            prop_assert_eq!(holding.len(), 1);
            prop_assert_eq!(*holding[0], m.classify(g, false));
        }
    }
}

/// The labourers of `tasks`, in order of first appearance, with how many tasks each gets.
pub fn labourer_counts<'a>(tasks: impl IntoIterator<Item = &'a crate::task::NewTask>) -> Vec<(&'a str, usize)> {
    let mut out: Vec<(&str, usize)> = Vec::new();
    for t in tasks {
        match out.iter_mut().find(|(l, _)| *l == t.labourer_id) {
            Some((_, n)) => *n += 1,
            None => out.push((t.labourer_id.as_str(), 1)),
        }
    }
    out
}

/// The queue positions of new tasks at the tails of their queues, one per task, in order: `tails` gives each
/// labourer's highest queue position (as [`labourer_counts`] listed them, looked up by the store). Every position is
/// checked before any is returned, so a full queue fails the whole batch.
pub fn queued_positions(
    tasks: &[&crate::task::NewTask],
    tails: &[(&str, Option<Greenfield>)],
    step: i64,
    now: Time,
) -> Result<Vec<Greenfield>, GreenfieldError> {
    let counts = labourer_counts(tasks.iter().copied());
    let mut positions: Vec<(&str, std::vec::IntoIter<Greenfield>)> = Vec::with_capacity(counts.len());
    for (labourer, n) in counts {
        let tail = tails.iter().find(|(l, _)| *l == labourer).and_then(|(_, t)| *t);
        positions.push((labourer, tail_positions(labourer, tail, step, n, now)?.into_iter()));
    }
    // Every task's labourer is in `positions` with exactly its count of positions.
    Ok(tasks
        .iter()
        .filter_map(|t| positions.iter_mut().find(|(l, _)| *l == t.labourer_id)?.1.next())
        .collect())
}

/// The stored row of a new task queued at `greenfield` at `now`.
pub fn new_row(task: &crate::task::NewTask, greenfield: Greenfield, now: Time) -> crate::task::Task {
    crate::task::Task {
        task_id: task.task_id.clone(),
        labourer_id: task.labourer_id.clone(),
        created_at: now.as_secs_f64(),
        greenfield,
        attempts: 0,
        payload: task.payload.clone(),
        completed_at: None,
        failed_attempts: 0,
        refunded_attempts: 0,
        stats: Default::default(),
        result: Default::default(),
    }
}

/// The rows of new tasks at the tails of their queues, in order ([`queued_positions`] and [`new_row`]).
pub fn queued_rows(
    tasks: &[&crate::task::NewTask],
    tails: &[(&str, Option<Greenfield>)],
    step: i64,
    now: Time,
) -> Result<Vec<crate::task::Task>, GreenfieldError> {
    let positions = queued_positions(tasks, tails, step, now)?;
    Ok(tasks.iter().zip(positions).map(|(t, g)| new_row(t, g, now)).collect())
}

#[cfg(test)]
mod new_rows {
    use super::*;
    use crate::task::NewTask;

    fn t(id: &str, l: &str) -> NewTask {
        NewTask {
            task_id: id.into(),
            labourer_id: l.into(),
            payload: "{}".into(),
        }
    }

    #[test]
    fn rows_take_consecutive_positions_per_labourer() {
        let tasks = [t("a", "w"), t("b", "v"), t("c", "w")];
        let refs: Vec<&NewTask> = tasks.iter().collect();
        assert_eq!(labourer_counts(refs.iter().copied()), vec![("w", 2), ("v", 1)]);
        let rows = queued_rows(
            &refs,
            &[("w", Some(Greenfield(5000))), ("v", None)],
            1000,
            Time::from_secs(1_000_000),
        )
        .expect("fit");
        let got: Vec<(&str, i64)> = rows.iter().map(|r| (r.task_id.as_str(), r.greenfield.get())).collect();
        assert_eq!(got, vec![("a", 6000), ("b", 2000), ("c", 7000)]);
        assert!(rows.iter().all(|r| r.attempts == 0 && r.created_at == 1_000_000.0));
        let full = queued_rows(
            &refs,
            &[("w", Some(Greenfield(998_000)))],
            1000,
            Time::from_secs(1_000_000),
        );
        assert!(matches!(full, Err(GreenfieldError::QueueFull { .. })));
    }
}
