//! Time as an input: the [`Clock`] port and the one implementation that reads the wall clock.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A point in time, in milliseconds since the UNIX epoch.
///
/// sosw's greenfield arithmetic works on whole seconds ([`Time::secs`]); `created_at` keeps sub-second precision
/// as a float, as Python sosw writes it ([`Time::as_secs_f64`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(i64);

impl Time {
    pub const fn from_millis(millis: i64) -> Self {
        Time(millis)
    }

    pub const fn from_secs(secs: i64) -> Self {
        Time(secs * 1000)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds, rounded towards minus infinity (Python's `int(now())` for positive times).
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    #[must_use]
    pub const fn plus_millis(self, millis: i64) -> Self {
        Time(self.0 + millis)
    }

    #[must_use]
    pub const fn plus_secs(self, secs: i64) -> Self {
        Time(self.0 + secs * 1000)
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Time({}.{:03})", self.secs(), self.0.rem_euclid(1000))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.secs(), self.0.rem_euclid(1000))
    }
}

/// The source of `now`. Engine passes receive `now` as an argument; only the code that drives them (a daemon loop,
/// a CLI command, a worker supervisor reporting an exit) asks a clock.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Time;
}

/// The wall clock. The only code in sosw that reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_truncate_like_python_int() {
        assert_eq!(Time::from_millis(1_700_000_000_999).secs(), 1_700_000_000);
        assert_eq!(Time::from_millis(-1).secs(), -1);
        assert_eq!(Time::from_secs(5).plus_millis(250).as_secs_f64(), 5.25);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now().secs() > 1_577_836_800);
    }
}
