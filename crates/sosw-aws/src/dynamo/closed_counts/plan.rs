//! The pure part of the closed counts: what a counts item says, and what a poll or a recount does with it.

use crate::item::{get_i64, n, Item};
use aws_sdk_dynamodb::types::AttributeValue;

/// How long after its `closed_at` a closed task is counted for good.
pub const SETTLE_SECS: i64 = 20 * 60;

/// The mark moves when it lags the settled time by at least this much (so a poll writes at most every 5 minutes).
pub const STEP_SECS: i64 = 5 * 60;

/// How long after a revival was first noticed the mark stays where it is.
pub const GRACE_SECS: i64 = 60;

pub(crate) const MARK: &str = "closed_counted_to";
pub(crate) const COMPLETED: &str = "closed_completed_counted";
pub(crate) const DEAD: &str = "closed_dead_counted";
pub(crate) const CLOSED_REVISION: &str = "closed_revision";
pub(crate) const SEEN: &str = "closed_revision_seen";
pub(crate) const SEEN_AT: &str = "closed_revision_seen_at";

/// How many times a revival or a recount reads the counts again when they moved under it.
pub(crate) const TRIES: usize = 5;

/// The key of a labourer's counts item in `sosw_labourers`.
pub fn counts_key(labourer: &str) -> String {
    format!("\u{1}closed counts\u{1}{labourer}")
}

/// The labourer whose counts item `item` is, if it is one.
pub(crate) fn labourer_of_counts_item(item: &Item) -> Option<String> {
    match item.get("labourer_id") {
        Some(AttributeValue::S(key)) => key.strip_prefix(&counts_key("")).map(str::to_string),
        _ => None,
    }
}

/// The largest number DynamoDB can store (38 significant digits) below `to`: `BETWEEN from AND just_below(to)` is
/// `[from, to)` for a fractional `closed_at` too (a query's filter cannot name the index's range key instead).
pub(crate) fn just_below(to: i64) -> AttributeValue {
    let whole = to.saturating_sub(1);
    let digits = whole.unsigned_abs().to_string().len();
    if whole < 0 || digits >= 38 {
        // Before 1970: whole seconds are exact enough.
        return n(whole);
    }
    AttributeValue::N(format!("{whole}.{}", "9".repeat(38 - digits)))
}

/// Where a revived task closed at `at` stands in the counts read: below the mark, counted in the settled counts (the
/// revival takes it off, on the condition that the mark is still past it), or from the mark on, counted by each poll
/// (the revival only bumps the revision, on the condition that the mark has not passed it meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revival {
    Settled,
    Recent,
}

pub(crate) fn revival(read: &Settled, at: i64) -> Revival {
    match read.mark {
        Some(mark) if at < mark => Revival::Settled,
        _ => Revival::Recent,
    }
}

/// What a labourer's counts item says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Closed tasks with `closed_at` below the mark are in `completed` and `dead`; `None`: nothing counted yet.
    pub mark: Option<i64>,
    pub completed: u64,
    pub dead: u64,
    pub revision: Option<i64>,
    pub seen: Option<i64>,
    pub seen_at: Option<i64>,
}

impl Settled {
    pub(crate) fn of(item: Option<&Item>) -> Settled {
        let Some(item) = item else {
            return Settled::default();
        };
        // A count that drifted below zero (closed items deleted by another program) reads as zero.
        let count = |key| get_i64(item, key).map_or(0, |c| u64::try_from(c).unwrap_or(0));
        Settled {
            mark: get_i64(item, MARK),
            completed: count(COMPLETED),
            dead: count(DEAD),
            revision: get_i64(item, CLOSED_REVISION),
            seen: get_i64(item, SEEN),
            seen_at: get_i64(item, SEEN_AT),
        }
    }
}

/// Why a poll counts, or a rescan recounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// From the stored counts, moving them forward when due.
    Poll,
    /// The whole archive, stored (a rescan).
    Recount,
}

/// What a poll does with the stored counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Leaves them as they are.
    Keep,
    /// Notes that a revival happened (the mark waits [`GRACE_SECS`] from now).
    Notice,
    /// Counts up to this mark and stores it.
    Move(i64),
}

/// What a count at `now` (seconds) does with the stored counts `s`: after a revival nobody noticed yet, notice it;
/// within [`GRACE_SECS`] of that, keep them; else move the mark to `now - SETTLE_SECS` for a recount, or for a poll
/// when nothing is counted yet or the mark lags by [`STEP_SECS`] or more.
pub(crate) fn plan(s: &Settled, now: i64, purpose: Purpose) -> Plan {
    if s.revision.is_some() && s.revision != s.seen {
        return Plan::Notice;
    }
    if s.seen_at.is_some_and(|at| now.saturating_sub(at) < GRACE_SECS) {
        return Plan::Keep;
    }
    let settled = now.saturating_sub(SETTLE_SECS);
    match (purpose, s.mark) {
        (Purpose::Poll, Some(m)) if settled.saturating_sub(m) < STEP_SECS => Plan::Keep,
        _ => Plan::Move(settled),
    }
}

/// A write to a counts item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Move { mark: i64, completed: u64, dead: u64 },
    Notice { revision: i64, now: i64 },
}

/// The condition that a counts item still has the mark and revision of `read` (names `#m`, `#r`).
pub(crate) fn unchanged(read: &Settled) -> (String, Vec<(&'static str, AttributeValue)>) {
    let mut values = Vec::new();
    let mark = match read.mark {
        Some(m) => {
            values.push((":read_mark", n(m)));
            "#m = :read_mark"
        }
        None => "attribute_not_exists(#m)",
    };
    let revision = match read.revision {
        Some(r) => {
            values.push((":read_revision", n(r)));
            "#r = :read_revision"
        }
        None => "attribute_not_exists(#r)",
    };
    (format!("{mark} AND {revision}"), values)
}

pub(crate) fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const SETTLED: i64 = NOW - SETTLE_SECS;

    fn at(mark: Option<i64>, revision: Option<i64>, seen: Option<i64>, seen_at: Option<i64>) -> Settled {
        Settled {
            mark,
            revision,
            seen,
            seen_at,
            ..Settled::default()
        }
    }

    #[test]
    fn a_poll_moves_the_mark_when_it_lags_by_a_step_and_no_revival_is_fresh() {
        use Plan::*;
        let cases = [
            (at(None, None, None, None), Move(SETTLED), "nothing counted yet"),
            (at(Some(SETTLED), None, None, None), Keep, "up to date"),
            (
                at(Some(SETTLED - STEP_SECS + 1), None, None, None),
                Keep,
                "less than a step behind",
            ),
            (
                at(Some(SETTLED - STEP_SECS), None, None, None),
                Move(SETTLED),
                "a step behind",
            ),
            (at(Some(i64::MIN), None, None, None), Move(SETTLED), "the smallest mark"),
            (
                at(Some(SETTLED + 3600), None, None, None),
                Keep,
                "ahead: another poll's clock runs fast",
            ),
            (at(Some(0), Some(1), None, None), Notice, "a revival nobody noticed"),
            (at(Some(0), Some(2), Some(1), Some(0)), Notice, "a second revival"),
            (
                at(Some(0), Some(2), Some(2), Some(NOW - GRACE_SECS + 1)),
                Keep,
                "noticed within the grace",
            ),
            (
                at(Some(0), Some(2), Some(2), Some(NOW - GRACE_SECS)),
                Move(SETTLED),
                "noticed a grace ago",
            ),
            (
                at(Some(0), Some(2), Some(2), Some(NOW + 600)),
                Keep,
                "noticed by a clock ahead",
            ),
            (
                at(None, Some(1), None, None),
                Notice,
                "a revival before anything was counted",
            ),
        ];
        for (settled, expected, why) in cases {
            assert_eq!(plan(&settled, NOW, Purpose::Poll), expected, "{why}");
        }
        assert_eq!(
            plan(&Settled::default(), i64::MIN, Purpose::Poll),
            Move(i64::MIN),
            "no overflow"
        );
        assert_eq!(
            plan(&at(Some(i64::MAX), None, None, None), i64::MAX, Purpose::Poll),
            Keep
        );
    }

    #[test]
    fn a_recount_always_moves_unless_a_revival_is_fresh() {
        use Plan::*;
        for (settled, expected) in [
            (at(Some(SETTLED), None, None, None), Move(SETTLED)),
            (at(Some(SETTLED + 3600), None, None, None), Move(SETTLED)),
            (at(Some(0), Some(1), None, None), Notice),
            (at(Some(0), Some(1), Some(1), Some(NOW - 1)), Keep),
            (at(Some(0), Some(1), Some(1), Some(NOW - GRACE_SECS)), Move(SETTLED)),
        ] {
            assert_eq!(plan(&settled, NOW, Purpose::Recount), expected, "{settled:?}");
        }
    }

    #[test]
    fn a_revival_below_the_mark_comes_off_the_settled_counts() {
        let cases = [
            (None, 0, Revival::Recent, "nothing counted yet"),
            (Some(100), 99, Revival::Settled, "closed before the mark"),
            (Some(100), 100, Revival::Recent, "closed at the mark: counted by polls"),
            (Some(100), 101, Revival::Recent, "closed after it"),
            (Some(i64::MIN), i64::MIN, Revival::Recent, "the smallest mark"),
            (Some(i64::MAX), i64::MIN, Revival::Settled, "far below"),
        ];
        for (mark, at, expected, why) in cases {
            assert_eq!(revival(&at_mark(mark), at), expected, "{why}");
        }
    }

    fn at_mark(mark: Option<i64>) -> Settled {
        Settled {
            mark,
            ..Settled::default()
        }
    }

    #[test]
    fn stored_counts_read_back_and_never_below_zero() {
        let item = Item::from([
            (MARK.to_string(), n(NOW)),
            (COMPLETED.to_string(), n(7)),
            (DEAD.to_string(), n(-1)),
            (CLOSED_REVISION.to_string(), n(3)),
            (SEEN.to_string(), n(2)),
            (SEEN_AT.to_string(), n(NOW - 5)),
        ]);
        assert_eq!(
            Settled::of(Some(&item)),
            Settled {
                mark: Some(NOW),
                completed: 7,
                dead: 0,
                revision: Some(3),
                seen: Some(2),
                seen_at: Some(NOW - 5),
            }
        );
        assert_eq!(Settled::of(None), Settled::default());
        assert_eq!(Settled::of(Some(&Item::new())), Settled::default());
    }

    #[test]
    fn the_condition_names_what_was_read() {
        assert_eq!(
            unchanged(&Settled::default()).0,
            "attribute_not_exists(#m) AND attribute_not_exists(#r)"
        );
        let (condition, values) = unchanged(&at(Some(5), Some(2), None, None));
        assert_eq!(condition, "#m = :read_mark AND #r = :read_revision");
        assert_eq!(values, vec![(":read_mark", n(5)), (":read_revision", n(2))]);
    }

    #[test]
    fn a_counts_key_is_no_labourer_id() {
        let key = counts_key("w");
        let item = Item::from([("labourer_id".to_string(), AttributeValue::S(key.clone()))]);
        assert_eq!(labourer_of_counts_item(&item).as_deref(), Some("w"));
        let labourer = Item::from([("labourer_id".to_string(), AttributeValue::S("w".into()))]);
        assert_eq!(labourer_of_counts_item(&labourer), None);
        assert!(
            key.chars().any(char::is_control),
            "labourer ids have no control characters"
        );
    }

    #[test]
    fn just_below_is_the_last_storable_number_before_the_mark() {
        let cases = [
            (1_800_000_000, "1799999999.9999999999999999999999999999".to_string()),
            (1, format!("0.{}", "9".repeat(37))),
            (0, "-1".to_string()),
            (i64::MIN, "-9223372036854775808".to_string()),
        ];
        for (to, expected) in cases {
            assert_eq!(just_below(to), AttributeValue::N(expected), "{to}");
        }
        let AttributeValue::N(text) = just_below(i64::MAX) else {
            panic!("a number")
        };
        assert_eq!(text.replace('.', "").len(), 38, "38 significant digits: {text}");
    }
}
