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
mod tests;
