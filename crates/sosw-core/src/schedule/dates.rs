//! Calendar dates and the Scheduler's `period` names (reference §5.9.4), without a time-zone database: dates come
//! from the injected `now` shifted by a fixed UTC offset.

use crate::time::Time;
use std::fmt;

/// A proleptic Gregorian calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    days: i64,
}

impl Date {
    /// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    pub fn from_ymd(y: i64, m: u32, d: u32) -> Option<Date> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = i64::from((m + 9) % 12);
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Date {
            days: era * 146_097 + doe - 719_468,
        })
    }

    pub fn days_since_epoch(self) -> i64 {
        self.days
    }

    /// `(year, month, day)` (Howard Hinnant's `civil_from_days`).
    pub fn ymd(self) -> (i64, u32, u32) {
        let z = self.days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    /// The date at `now` in a zone `offset_secs` east of UTC.
    pub fn at(now: Time, offset_secs: i64) -> Date {
        Date {
            days: (now.secs() + offset_secs).div_euclid(86_400),
        }
    }

    #[must_use]
    pub fn plus_days(self, n: i64) -> Date {
        Date { days: self.days + n }
    }

    /// Monday = 0 … Sunday = 6, as Python's `date.weekday()`.
    pub fn weekday(self) -> i64 {
        (self.days + 3).rem_euclid(7)
    }

    /// `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let mut parts = s.split('-');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        Date::from_ymd(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// The dates a `period` names, ascending, or `None` if the name is not one of: `last_N_days`, `N_days_back`,
/// `yesterday`, `today`, `previous_N_days`, `last_week`, `YYYY-MM-DD..YYYY-MM-DD`. The whole string must match
/// (Python sosw matches a prefix, so `last_3_days_please` passed there).
pub fn period_dates(period: &str, today: Date) -> Option<Vec<Date>> {
    let number = |s: &str| -> Option<i64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 6 {
            None
        } else {
            s.parse().ok()
        }
    };
    let range = |from: Date, n: i64| (0..n).map(|i| from.plus_days(i)).collect::<Vec<_>>();
    if let Some(n) = period
        .strip_prefix("last_")
        .and_then(|r| r.strip_suffix("_days"))
        .and_then(number)
    {
        return Some(range(today.plus_days(-n), n));
    }
    if let Some(n) = period.strip_suffix("_days_back").and_then(number) {
        return Some(vec![today.plus_days(-n)]);
    }
    if let Some(n) = period
        .strip_prefix("previous_")
        .and_then(|r| r.strip_suffix("_days"))
        .and_then(number)
    {
        return Some(range(today.plus_days(-2 * n), n));
    }
    match period {
        "yesterday" => return Some(vec![today.plus_days(-1)]),
        "today" => return Some(vec![today]),
        "last_week" => {
            // The last complete Sunday–Saturday week: it ends on the latest Saturday before today (Python's
            // `today − (weekday + 8)` is a week early on Sundays).
            let back_to_saturday = match (today.weekday() - 5).rem_euclid(7) {
                0 => 7,
                n => n,
            };
            return Some(range(today.plus_days(-back_to_saturday - 6), 7));
        }
        _ => {}
    }
    let (from, to) = period.split_once("..")?;
    let (from, to) = (Date::parse(from)?, Date::parse(to)?);
    (from <= to && to.days - from.days < 100_000).then(|| range(from, to.days - from.days + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse(s).expect("a date")
    }

    fn dates(period: &str, today: &str) -> Vec<String> {
        period_dates(period, d(today))
            .expect("a period")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn civil_dates_round_trip() {
        for s in [
            "1970-01-01",
            "2000-02-29",
            "2019-01-30",
            "1899-12-31",
            "2400-03-01",
            "2024-12-31",
        ] {
            assert_eq!(d(s).to_string(), s);
        }
        assert_eq!(Date::at(Time::from_secs(0), 0), d("1970-01-01"));
        assert_eq!(Date::at(Time::from_secs(1_548_806_400), 0), d("2019-01-30"));
        assert_eq!(Date::at(Time::from_secs(1_548_806_399), 0), d("2019-01-29"));
        assert_eq!(
            Date::at(Time::from_secs(1_548_806_399), 3600),
            d("2019-01-30"),
            "an hour east of UTC"
        );
        assert_eq!(d("2019-04-30").weekday(), 1, "a Tuesday");
        for bad in ["2019-02-29", "2019-13-01", "2019-1-01", "19-01-01", "2019-01-01x", ""] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn sch_11_date_generators() {
        assert_eq!(
            dates("last_3_days", "2019-01-30"),
            ["2019-01-27", "2019-01-28", "2019-01-29"]
        );
        assert_eq!(
            dates("last_5_days", "2019-01-30"),
            ["2019-01-25", "2019-01-26", "2019-01-27", "2019-01-28", "2019-01-29"]
        );
        assert_eq!(dates("1_days_back", "2019-01-30"), ["2019-01-29"]);
        assert_eq!(dates("7_days_back", "2019-01-30"), ["2019-01-23"]);
        assert_eq!(dates("30_days_back", "2019-01-30"), ["2018-12-31"]);
        assert_eq!(dates("yesterday", "2019-04-11"), ["2019-04-10"]);
        assert_eq!(dates("today", "2019-04-10"), ["2019-04-10"]);
        assert_eq!(dates("previous_2_days", "2019-04-30"), ["2019-04-26", "2019-04-27"]);
        assert_eq!(
            dates("previous_3_days", "2019-04-30"),
            ["2019-04-24", "2019-04-25", "2019-04-26"]
        );
        let week = [
            "2019-04-21",
            "2019-04-22",
            "2019-04-23",
            "2019-04-24",
            "2019-04-25",
            "2019-04-26",
            "2019-04-27",
        ];
        assert_eq!(dates("last_week", "2019-04-30"), week);
    }

    #[test]
    fn last_week_on_every_weekday() {
        // From Sunday 04-28 to Saturday 05-04 the last complete week is 04-21 … 04-27 (Python: a week early on
        // the Sunday); on Saturday 04-27 itself it is the week before.
        for today in [
            "2019-04-28",
            "2019-04-29",
            "2019-04-30",
            "2019-05-01",
            "2019-05-02",
            "2019-05-03",
            "2019-05-04",
        ] {
            let w = dates("last_week", today);
            assert_eq!(
                (w[0].as_str(), w[6].as_str()),
                ("2019-04-21", "2019-04-27"),
                "today {today}"
            );
        }
        let w = dates("last_week", "2019-04-27");
        assert_eq!((w[0].as_str(), w[6].as_str()), ("2019-04-14", "2019-04-20"));
    }

    #[test]
    fn explicit_ranges_and_rejections() {
        assert_eq!(
            dates("2019-12-30..2020-01-02", "2000-01-01"),
            ["2019-12-30", "2019-12-31", "2020-01-01", "2020-01-02"]
        );
        assert_eq!(dates("2020-02-29..2020-02-29", "2000-01-01"), ["2020-02-29"]);
        for bad in [
            "putin_the_best",
            "last_3_days_please",
            "last__days",
            "last_x_days",
            "2020-01-02..2020-01-01",
            "2020-01-01..",
            "Today",
        ] {
            assert_eq!(period_dates(bad, d("2019-01-30")), None, "{bad}");
        }
    }
}
