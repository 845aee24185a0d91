//! Ecology: eco statuses, feelings about health metrics and the status of a labourer (reference §5.4).
//!
//! Fixed here (reference §7.12): the symbolic operators `<`, `<=`, `>`, `>=` are accepted next to Python's names;
//! "higher is better" metrics work; feelings are validated completely when the config loads instead of lazily on
//! the first value that happens to reach them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How healthy a labourer's downstream is: 0 Bad … 4 High.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum EcoStatus {
    Bad = 0,
    Poor = 1,
    Moderate = 2,
    Good = 3,
    High = 4,
}

impl EcoStatus {
    pub const ALL: [EcoStatus; 5] = [
        EcoStatus::Bad,
        EcoStatus::Poor,
        EcoStatus::Moderate,
        EcoStatus::Good,
        EcoStatus::High,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EcoStatus::Bad => "Bad",
            EcoStatus::Poor => "Poor",
            EcoStatus::Moderate => "Moderate",
            EcoStatus::Good => "Good",
            EcoStatus::High => "High",
        }
    }
}

impl From<EcoStatus> for u8 {
    fn from(s: EcoStatus) -> u8 {
        s as u8
    }
}

impl TryFrom<u8> for EcoStatus {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        EcoStatus::ALL
            .get(usize::from(v))
            .copied()
            .ok_or_else(|| format!("eco status must be 0..4, got {v}"))
    }
}

impl fmt::Display for EcoStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", *self as u8, self.name())
    }
}

/// `feeling_comparison_operator`: how a metric value is compared with a feeling's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    /// Accepts `<`, `<=`, `>`, `>=`, Python's operator-module names `lt`, `le`, `gt`, `ge` and their dunder forms.
    pub fn parse(s: &str) -> Option<Comparison> {
        match s.trim() {
            "<" | "lt" | "__lt__" => Some(Comparison::Lt),
            "<=" | "le" | "__le__" => Some(Comparison::Le),
            ">" | "gt" | "__gt__" => Some(Comparison::Gt),
            ">=" | "ge" | "__ge__" => Some(Comparison::Ge),
            _ => None,
        }
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Lt => value < threshold,
            Comparison::Le => value <= threshold,
            Comparison::Gt => value > threshold,
            Comparison::Ge => value >= threshold,
        }
    }

    /// Whether lower values are healthier (`<`, `<=`).
    pub fn lower_is_better(self) -> bool {
        matches!(self, Comparison::Lt | Comparison::Le)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeelingsError {
    #[error("feelings are empty")]
    Empty,
    #[error("threshold of status {status} is not a finite number")]
    NotFinite { status: u8 },
    #[error(
        "feelings are out of order for `{op}`: status {better} has threshold {better_threshold} and status {worse} has \
         {worse_threshold}; with `{op}` a worse status needs a {direction} threshold"
    )]
    OutOfOrder {
        op: &'static str,
        better: u8,
        better_threshold: f64,
        worse: u8,
        worse_threshold: f64,
        direction: &'static str,
    },
}

/// The validated feelings of one metric: `(status, threshold)` sorted from the best status down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feelings {
    op: Comparison,
    levels: Vec<(EcoStatus, f64)>,
}

impl Feelings {
    /// Validates that thresholds get strictly worse as the status decreases: increasing for `<`/`<=` (lower is
    /// better), decreasing for `>`/`>=`. Python sosw compares against a seed of 0 too, which makes `>=`/`>`
    /// impossible with positive thresholds; that seed is not kept.
    pub fn new(levels: Vec<(EcoStatus, f64)>, op: Comparison) -> Result<Feelings, FeelingsError> {
        let mut levels = levels;
        if levels.is_empty() {
            return Err(FeelingsError::Empty);
        }
        if let Some((s, _)) = levels.iter().find(|(_, t)| !t.is_finite()) {
            return Err(FeelingsError::NotFinite { status: *s as u8 });
        }
        levels.sort_by_key(|(status, _)| std::cmp::Reverse(*status));
        for pair in levels.windows(2) {
            let (better, bt) = pair[0];
            let (worse, wt) = pair[1];
            let ordered = if op.lower_is_better() { wt > bt } else { wt < bt };
            if !ordered {
                return Err(FeelingsError::OutOfOrder {
                    op: op_symbol(op),
                    better: better as u8,
                    better_threshold: bt,
                    worse: worse as u8,
                    worse_threshold: wt,
                    direction: if op.lower_is_better() { "higher" } else { "lower" },
                });
            }
        }
        Ok(Feelings { op, levels })
    }

    pub fn comparison(&self) -> Comparison {
        self.op
    }

    /// How the labourer feels about `value`: the best status whose threshold the value satisfies, else Bad.
    /// A NaN value satisfies nothing and is Bad.
    pub fn health(&self, value: f64) -> EcoStatus {
        self.levels
            .iter()
            .find(|(_, threshold)| self.op.holds(value, *threshold))
            .map(|(status, _)| *status)
            .unwrap_or(EcoStatus::Bad)
    }
}

fn op_symbol(op: Comparison) -> &'static str {
    match op {
        Comparison::Lt => "<",
        Comparison::Le => "<=",
        Comparison::Gt => ">",
        Comparison::Ge => ">=",
    }
}

/// A labourer's status: the worst over its metrics, High when it has none.
pub fn labourer_status(metric_statuses: impl IntoIterator<Item = EcoStatus>) -> EcoStatus {
    metric_statuses.into_iter().min().unwrap_or(EcoStatus::High)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EcoStatus::*;

    fn seed_feelings(op: &str) -> Feelings {
        Feelings::new(
            vec![(Good, 50.0), (High, 25.0)],
            Comparison::parse(op).expect("valid op"),
        )
        .expect("seed feelings are valid")
    }

    #[test]
    fn eco_statuses_are_0_to_4() {
        // ECO-1
        let v: Vec<u8> = EcoStatus::ALL.iter().map(|s| *s as u8).collect();
        assert_eq!(v, vec![0, 1, 2, 3, 4]);
        assert!(EcoStatus::try_from(5).is_err());
    }

    #[test]
    fn le_table_from_the_reference() {
        // ECO-7, and the seed's '<=' (ECO-11 fixed).
        for op in ["<=", "le", "__le__"] {
            let f = seed_feelings(op);
            let cases = [
                (0.0, High),
                (1.0, High),
                (25.0, High),
                (25.000001, Good),
                (30.0, Good),
                (50.0, Good),
                (51.0, Bad),
            ];
            for (value, want) in cases {
                assert_eq!(f.health(value), want, "op {op} value {value}");
            }
        }
    }

    #[test]
    fn lt_is_strict() {
        let f = seed_feelings("lt");
        assert_eq!(f.health(25.0), Good);
        assert_eq!(f.health(50.0), Bad);
        assert_eq!(f.health(f64::NAN), Bad);
    }

    #[test]
    fn higher_is_better_works() {
        // ECO-11 fixed: `ge` with {3: 50, 4: 75}.
        let f = Feelings::new(vec![(Good, 50.0), (High, 75.0)], Comparison::Ge).expect("valid");
        assert_eq!(f.health(80.0), High);
        assert_eq!(f.health(75.0), High);
        assert_eq!(f.health(60.0), Good);
        assert_eq!(f.health(10.0), Bad);
        let f = Feelings::new(vec![(Moderate, 0.0), (High, 10.0)], Comparison::Gt).expect("valid");
        assert_eq!(f.health(0.5), Moderate);
        assert_eq!(f.health(0.0), Bad);
    }

    #[test]
    fn out_of_order_feelings_are_rejected_up_front() {
        // ECO-8: {1: 40, 3: 50, 4: 25} with `le`.
        let err =
            Feelings::new(vec![(Poor, 40.0), (Good, 50.0), (High, 25.0)], Comparison::Le).expect_err("out of order");
        assert!(
            matches!(
                err,
                FeelingsError::OutOfOrder {
                    better: 3,
                    worse: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(Feelings::new(vec![(Good, 50.0), (High, 75.0)], Comparison::Le).is_err());
        assert!(Feelings::new(vec![(Good, 50.0), (High, 25.0)], Comparison::Ge).is_err());
        assert!(Feelings::new(vec![(Good, 50.0), (High, 50.0)], Comparison::Le).is_err());
        assert_eq!(Feelings::new(vec![], Comparison::Le), Err(FeelingsError::Empty));
        assert!(Feelings::new(vec![(Good, f64::INFINITY)], Comparison::Le).is_err());
    }

    #[test]
    fn unknown_operators_are_none() {
        for op in ["==", "eq", "~", ""] {
            assert_eq!(Comparison::parse(op), None, "{op}");
        }
    }

    #[test]
    fn labourer_status_is_the_worst() {
        // ECO-9: metrics feeling 3, 2, 4 → 2.
        assert_eq!(labourer_status([Good, Moderate, High]), Moderate);
        assert_eq!(labourer_status([]), High);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Valid feelings: distinct statuses with thresholds ordered for `op`.
    fn feelings() -> impl Strategy<Value = Feelings> {
        (
            proptest::sample::subsequence(vec![1u8, 2, 3, 4], 1..=4),
            proptest::collection::vec(0.1f64..100.0, 4),
            0usize..4,
        )
            .prop_map(|(statuses, mut gaps, op)| {
                let op = [Comparison::Lt, Comparison::Le, Comparison::Gt, Comparison::Ge][op];
                gaps.truncate(statuses.len());
                // From the best status down, thresholds get worse: higher for lower-is-better, lower otherwise.
                let mut t = 0.0;
                let levels = statuses
                    .iter()
                    .rev()
                    .zip(gaps)
                    .map(|(s, gap)| {
                        t += gap;
                        let threshold = if op.lower_is_better() { t } else { -t };
                        (EcoStatus::try_from(*s).expect("1..4"), threshold)
                    })
                    .collect();
                Feelings::new(levels, op).expect("valid by construction")
            })
    }

    proptest! {
        #[test]
        fn a_worse_value_never_feels_better(f in feelings(), a in -500.0f64..500.0, b in -500.0f64..500.0) {
            let (better, worse) = if f.comparison().lower_is_better() { (a.min(b), a.max(b)) } else { (a.max(b), a.min(b)) };
            prop_assert!(f.health(better) >= f.health(worse));
        }
    }
}
