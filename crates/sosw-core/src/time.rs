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

    /// Saturates at the ends of the representable range (about ±292 million years).
    pub const fn from_secs(secs: i64) -> Self {
        Time(secs.saturating_mul(1000))
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
        Time(self.0.saturating_add(millis))
    }

    #[must_use]
    pub const fn plus_secs(self, secs: i64) -> Self {
        Time(self.0.saturating_add(secs.saturating_mul(1000)))
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

/// The longest span of seconds any setting may have (a timeout, an interval, a duration): 10 years. Longer values
/// mean nothing to an orchestrator and cannot all become timers (`Duration::from_secs_f64(1e300)` panics), so
/// validation refuses them.
pub const MAX_SECONDS: i64 = 315_576_000;

/// A number of seconds that cannot be used as a timer.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum SecondsError {
    #[error("must be a positive number of seconds, got {}", show_number(*.0))]
    NotPositive(f64),
    #[error("must be at most {MAX_SECONDS} seconds (10 years), got {}", show_number(*.0))]
    TooLarge(f64),
}

/// A number as a person would write it: `1e300`, not three hundred digits.
fn show_number(f: f64) -> String {
    if f.is_finite() && f.abs() >= 1e15 {
        format!("{f:e}")
    } else {
        f.to_string()
    }
}

/// Checks that `secs` is a positive, finite number of seconds of at most [`MAX_SECONDS`].
pub fn check_secs(secs: f64) -> Result<f64, SecondsError> {
    // NaN is neither positive nor too large: refused as not positive.
    if secs.is_nan() || secs <= 0.0 {
        Err(SecondsError::NotPositive(secs))
    } else if secs > MAX_SECONDS as f64 {
        Err(SecondsError::TooLarge(secs))
    } else {
        Ok(secs)
    }
}

/// A validated number of seconds as a [`std::time::Duration`]. Never panics: values [`check_secs`] would refuse
/// saturate to 0 or [`MAX_SECONDS`].
pub fn duration_secs(secs: f64) -> std::time::Duration {
    let clamped = if secs.is_nan() {
        0.0
    } else {
        secs.clamp(0.0, MAX_SECONDS as f64)
    };
    std::time::Duration::from_secs_f64(clamped)
}

/// `2026-11-30T14:24:12Z`: a time as a person reads it (ISO 8601, UTC, whole seconds).
pub fn iso8601(t: Time) -> String {
    let (y, m, d) = crate::schedule::Date::at(t, 0).ymd();
    let s = t.secs().rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
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
    // The one place that reads the wall clock (`clippy.toml`).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> Time {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Serde helpers that write a [`Time`] as ISO 8601 for people (`"2026-11-30T14:24:12Z"`): what reports, the
/// CLI's JSON and the API show, never raw epoch numbers.
pub mod as_iso8601 {
    use super::{iso8601, Time};

    pub fn serialize<S: serde::Serializer>(t: &Time, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&iso8601(*t))
    }

    pub fn option<S: serde::Serializer>(t: &Option<Time>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&iso8601(*t)),
            None => s.serialize_none(),
        }
    }
}

/// A time an operator types: an instant (`2026-12-01T09:30:00Z`, `2026-12-01`, UTC) or a span from `now` (`90s`,
/// `15m`, `2h`, `1d`). At most [`MAX_SECONDS`] from `now`; a time already past is refused.
pub fn parse_until(text: &str, now: Time) -> Result<Time, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "expected a time such as 2026-12-01T09:30:00Z or 2026-12-01 (UTC), or a span such as 90s, 15m, 2h or \
             1d; got \"{text}\""
        )
    };
    let at = if let Some(unit) = t.chars().last().filter(|c| "smhd".contains(*c)) {
        let n: i64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        if n <= 0 || n > MAX_SECONDS / scale {
            return Err(format!("a span must be positive and at most 10 years, got \"{text}\""));
        }
        now.plus_secs(n * scale)
    } else {
        let (date, clock) = match t.split_once('T') {
            Some((d, c)) => (
                d,
                Some(
                    c.strip_suffix('Z')
                        .ok_or_else(|| format!("{}; a time of day needs a trailing Z (UTC)", bad()))?,
                ),
            ),
            None => (t, None),
        };
        // The Scheduler's date reader: `YYYY-MM-DD`, four-digit years only.
        let day = crate::schedule::Date::parse(date).ok_or_else(bad)?;
        let secs = match clock {
            None => 0,
            Some(c) => {
                let parts: Vec<Option<i64>> = c.split(':').map(|p| p.parse().ok()).collect();
                match parts.as_slice() {
                    [Some(h), Some(m)] if (0..24).contains(h) && (0..60).contains(m) => h * 3600 + m * 60,
                    [Some(h), Some(m), Some(s)]
                        if (0..24).contains(h) && (0..60).contains(m) && (0..60).contains(s) =>
                    {
                        h * 3600 + m * 60 + s
                    }
                    _ => return Err(bad()),
                }
            }
        };
        Time::from_secs(day.days_since_epoch().saturating_mul(86_400).saturating_add(secs))
    };
    if at <= now {
        return Err(format!("\"{text}\" is not in the future (now is {})", iso8601(now)));
    }
    if at.secs().saturating_sub(now.secs()) > MAX_SECONDS {
        return Err(format!("\"{text}\" is more than 10 years away"));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_times_parse_or_say_what_is_expected() {
        let now = Time::from_secs(1_796_000_000); // 2026-11-29T23:33:20Z
        let ok: &[(&str, i64)] = &[
            ("90s", 1_796_000_090),
            ("15m", 1_796_000_900),
            ("2h", 1_796_007_200),
            ("1d", 1_796_086_400),
            ("2026-12-01", 1_796_083_200),
            ("2026-12-01T09:30:00Z", 1_796_117_400),
            ("2026-12-01T09:30Z", 1_796_117_400),
        ];
        for (text, want) in ok {
            assert_eq!(parse_until(text, now).map(Time::secs), Ok(*want), "{text}");
        }
        for text in [
            "",
            "soon",
            "0s",
            "-5m",
            "5w",
            "99999999999d",
            "2026-11-01",
            "2026-13-01",
            "2026-12-01T25:00Z",
            "2026-12-01T09:30:00",
            "2040-01-01",
            "1e300s",
            "9223372036854775807-01-01",
            "-9223372036854775808-01-01",
            "2026-12-1",
            "2026-12-01T",
            "2026-12-01TZ",
            "2026-12-01T99:99Z",
            "é",
            "1é",
        ] {
            assert!(parse_until(text, now).is_err(), "{text}");
        }
        assert!(parse_until("soon", now).expect_err("bad").contains("\"soon\""));
    }

    #[test]
    fn seconds_truncate_like_python_int() {
        assert_eq!(Time::from_millis(1_700_000_000_999).secs(), 1_700_000_000);
        assert_eq!(Time::from_millis(-1).secs(), -1);
        assert_eq!(Time::from_secs(5).plus_millis(250).as_secs_f64(), 5.25);
    }

    #[test]
    fn seconds_settings_are_bounded() {
        use std::time::Duration;
        for (secs, ok) in [
            (1e300, false),
            (f64::INFINITY, false),
            (f64::NAN, false),
            (0.0, false),
            (-1.0, false),
            (MAX_SECONDS as f64 + 1.0, false),
            (MAX_SECONDS as f64, true),
            (0.001, true),
            (900.0, true),
        ] {
            assert_eq!(check_secs(secs).is_ok(), ok, "{secs}");
        }
        assert_eq!(
            check_secs(1e300).expect_err("too large").to_string(),
            "must be at most 315576000 seconds (10 years), got 1e300"
        );
        // The conversion never panics, whatever it is given.
        assert_eq!(duration_secs(1e300), Duration::from_secs(MAX_SECONDS as u64));
        assert_eq!(duration_secs(f64::NAN), Duration::ZERO);
        assert_eq!(duration_secs(-5.0), Duration::ZERO);
        assert_eq!(duration_secs(1.5), Duration::from_millis(1500));
    }

    #[test]
    fn iso8601_reads_as_utc() {
        assert_eq!(iso8601(Time::from_secs(0)), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(Time::from_millis(1_796_048_652_999)), "2026-11-30T14:24:12Z");
        assert_eq!(iso8601(Time::from_secs(-1)), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn time_arithmetic_saturates() {
        assert_eq!(Time::from_secs(i64::MAX).millis(), i64::MAX);
        assert_eq!(Time::from_secs(i64::MIN).millis(), i64::MIN);
        assert_eq!(Time::from_secs(1).plus_secs(i64::MAX).millis(), i64::MAX);
        assert_eq!(Time::from_millis(i64::MAX).plus_millis(1).millis(), i64::MAX);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now().secs() > 1_577_836_800);
    }
}
