use super::*;
use proptest::prelude::*;

fn t(secs: i64) -> Time {
    Time::from_secs(secs)
}

fn control(paused: Option<Pause>, limit: Option<u32>) -> LabourerControl {
    LabourerControl {
        paused,
        limit,
        ..LabourerControl::new("w", t(100), "ops@host")
    }
}

/// (control, flow state, now) → the stop's (code, until).
type GateCase<'a> = (
    Option<&'a LabourerControl>,
    Option<&'a FlowState>,
    i64,
    Option<(HeldReason, Option<i64>)>,
);

/// An input → (max in force, ceiling, to_invoke, limited_by).
type AllowanceCase<'a> = (AllowanceInput<'a>, (u32, u32, u32, Option<HeldReason>));

#[test]
fn a_pause_holds_until_its_time_or_a_resume() {
    let forever = control(
        Some(Pause {
            since: t(100),
            until: None,
            reason: Some("deploying the API".into()),
        }),
        None,
    );
    let until_200 = control(
        Some(Pause {
            since: t(100),
            until: Some(t(200)),
            reason: None,
        }),
        None,
    );
    let throttled = FlowState {
        throttled_until: Some(t(150)),
        throttle_reason: Some("HTTP 429, Retry-After 50 s".into()),
        ..FlowState::default()
    };
    let cases: &[GateCase<'_>] = &[
        (None, None, 0, None),
        (Some(&forever), None, 1_000_000, Some((HeldReason::Paused, None))),
        (Some(&until_200), None, 199, Some((HeldReason::Paused, Some(200)))),
        (Some(&until_200), None, 200, None),
        (
            None,
            Some(&throttled),
            149,
            Some((HeldReason::InvokerThrottled, Some(150))),
        ),
        (None, Some(&throttled), 150, None),
        // A pause says more than a throttle.
        (Some(&forever), Some(&throttled), 120, Some((HeldReason::Paused, None))),
        (Some(&control(None, Some(3))), None, 0, None),
    ];
    for (c, f, now, want) in cases {
        let got = gate(*c, *f, t(*now)).map(|s| (s.code, s.until.map(Time::secs)));
        assert_eq!(got, *want, "control {c:?}, flow {f:?}, now {now}");
    }
    let words = gate(Some(&forever), None, t(0)).expect("paused").reason;
    assert_eq!(words, "paused by ops@host: deploying the API");
}

fn input<'a>(
    max: u32,
    coefficient: f64,
    control: Option<&'a LabourerControl>,
    flow: &'a FlowState,
    config: &'a FlowConfig,
    running: u64,
) -> AllowanceInput<'a> {
    AllowanceInput {
        configured_max: max,
        coefficient,
        control,
        flow,
        config,
        running,
        now: t(1000),
    }
}

#[test]
fn the_allowance_says_what_limits_it() {
    let none = FlowConfig::default();
    let adaptive = FlowConfig {
        adaptive: Some(super::Adaptive::default()),
        ..FlowConfig::default()
    };
    let rated = FlowConfig {
        rate: Some(RateLimit {
            per_second: 2.0,
            burst: 4,
        }),
        ..FlowConfig::default()
    };
    let lowered = FlowState {
        adaptive_limit: Some(3),
        ..FlowState::default()
    };
    let bucket_empty = FlowState {
        rate_tat: Some(t(1002)),
        ..FlowState::default()
    };
    let clean = FlowState::default();
    let operator = control(None, Some(20));
    let stopped = control(None, Some(0));
    use HeldReason::*;
    // (max, coefficient, control, flow, config, running) → (max in force, ceiling, to_invoke, limited_by)
    let cases: &[AllowanceCase<'_>] = &[
        (input(10, 1.0, None, &clean, &none, 4), (10, 10, 6, None)),
        (input(10, 1.0, None, &clean, &none, 10), (10, 10, 0, Some(Limit))),
        (input(10, 1.0, None, &clean, &none, 50), (10, 10, 0, Some(Limit))),
        (input(10, 0.5, None, &clean, &none, 5), (10, 5, 0, Some(Eco))),
        (input(10, 0.0, None, &clean, &none, 0), (10, 0, 0, Some(Eco))),
        // The operator's limit replaces the configured one, and the eco coefficient still applies.
        (input(10, 0.5, Some(&operator), &clean, &none, 4), (20, 10, 6, None)),
        (input(10, 1.0, Some(&stopped), &clean, &none, 0), (0, 0, 0, Some(Limit))),
        // Adaptive: the stored limit, under the ceiling.
        (input(10, 1.0, None, &lowered, &adaptive, 1), (10, 10, 2, None)),
        (
            input(10, 1.0, None, &lowered, &adaptive, 3),
            (10, 10, 0, Some(Adaptive)),
        ),
        (input(2, 1.0, None, &lowered, &adaptive, 2), (2, 2, 0, Some(Limit))),
        (input(10, 1.0, None, &clean, &adaptive, 4), (10, 10, 6, None)),
        // Rate: 2/s with a burst of 4: a full bucket gives 4, an empty one none.
        (input(10, 1.0, None, &clean, &rated, 0), (10, 10, 4, None)),
        (input(10, 1.0, None, &bucket_empty, &rated, 0), (10, 10, 0, Some(Rate))),
        (
            input(10, 1.0, None, &bucket_empty, &rated, 10),
            (10, 10, 0, Some(Limit)),
        ),
    ];
    for (i, (inp, want)) in cases.iter().enumerate() {
        let a = allowance(*inp);
        assert_eq!((a.max, a.ceiling, a.to_invoke, a.limited_by), *want, "case {i}: {a:?}");
    }
}

#[test]
fn aimd_falls_fast_and_climbs_slowly_under_the_ceiling() {
    let cfg = Adaptive {
        min: 2,
        ..Adaptive::default()
    };
    let trouble = Signals {
        throttled: 1,
        ..Signals::default()
    };
    let failed = Signals {
        failed: 3,
        accepted: 5,
        saturated: true,
        ..Signals::default()
    };
    let busy = Signals {
        accepted: 4,
        saturated: true,
        ..Signals::default()
    };
    let idle = Signals {
        accepted: 1,
        ..Signals::default()
    };
    // (stored, ceiling, seen) → stored after
    let cases: &[(Option<u32>, u32, Signals, Option<u32>)] = &[
        (None, 16, trouble, Some(8)),
        (Some(8), 16, trouble, Some(4)),
        (Some(4), 16, failed, Some(2)),
        (Some(2), 16, trouble, Some(2)),
        (Some(3), 16, trouble, Some(2)),
        (Some(4), 16, busy, Some(5)),
        (Some(15), 16, busy, None),
        (None, 16, busy, None),
        (Some(4), 16, idle, Some(4)),
        (None, 16, idle, None),
        // The ceiling fell under the stored limit (eco status): the ceiling wins.
        (Some(12), 6, idle, Some(12)),
        (Some(12), 6, trouble, Some(3)),
        // A ceiling below `min`: `min` is kept.
        (Some(2), 1, busy, None),
        (None, 0, trouble, Some(0)),
    ];
    for (stored, ceiling, seen, want) in cases {
        assert_eq!(
            adapt(&cfg, *stored, *ceiling, seen),
            *want,
            "stored {stored:?}, ceiling {ceiling}, {seen:?}"
        );
    }
}

#[test]
fn the_adaptive_limit_changes_at_most_once_per_interval() {
    let cfg = Adaptive::default();
    assert!(adapt_due(&cfg, None, t(100)));
    assert!(!adapt_due(&cfg, Some(t(100)), t(100).plus_millis(999)));
    assert!(adapt_due(&cfg, Some(t(100)), t(101)));
    assert!(adapt_due(
        &cfg,
        Some(Time::from_millis(i64::MAX)),
        Time::from_millis(i64::MAX)
    ));
}

#[test]
fn the_rate_limit_is_a_bucket_of_burst_refilled_at_the_rate() {
    let rate = RateLimit {
        per_second: 2.0,
        burst: 4,
    };
    let now = t(1000);
    assert_eq!(rate_allows(&rate, None, now), 4);
    let tat = rate_spend(&rate, None, now, 4);
    assert_eq!(tat, Some(t(1002)));
    assert_eq!(rate_allows(&rate, tat, now), 0);
    assert_eq!(rate_allows(&rate, tat, now.plus_millis(499)), 0);
    assert_eq!(rate_allows(&rate, tat, now.plus_millis(500)), 1);
    assert_eq!(rate_allows(&rate, tat, t(1002)), 4);
    assert_eq!(
        rate_allows(&rate, tat, t(5000)),
        4,
        "a quiet spell never saves more than the burst"
    );
    // Spending from an empty bucket moves the time forward from the stored one, not from now.
    assert_eq!(
        rate_spend(&rate, tat, now.plus_millis(500), 1),
        Some(t(1002).plus_millis(500))
    );
    assert_eq!(rate_spend(&rate, tat, now, 0), tat);
    let slow = RateLimit {
        per_second: 1.0 / 60.0,
        burst: 1,
    };
    let tat = rate_spend(&slow, None, now, 1);
    assert_eq!(tat, Some(t(1060)));
    assert_eq!(rate_allows(&slow, tat, t(1059)), 0);
    assert_eq!(rate_allows(&slow, tat, t(1060)), 1);
}

#[test]
fn a_throttle_holds_for_its_retry_after_within_bounds() {
    let now = t(1000);
    let cases: &[(Option<i64>, Option<f64>, i64)] = &[
        (None, Some(30.0), 1030),
        (None, None, 1005),
        (None, Some(1e300), 1000 + 1800),
        (None, Some(f64::NAN), 1005),
        (None, Some(-3.0), 1005),
        (Some(1100), Some(30.0), 1100),
        (Some(1010), Some(30.0), 1030),
    ];
    for (current, after, want) in cases {
        let got = throttle_until(current.map(t), *after, 5.0, 1800, now);
        assert_eq!(got, t(*want), "current {current:?}, retry after {after:?}");
    }
}

#[test]
fn a_lesson_moves_the_adaptive_limit_once_per_interval_and_holds_a_throttling_labourer() {
    let config = FlowConfig {
        adaptive: Some(Adaptive::default()),
        ..FlowConfig::default()
    };
    let trouble = Lesson {
        signals: Signals {
            throttled: 1,
            ..Signals::default()
        },
        ceiling: 16,
        throttle: Some(("HTTP 429".into(), Some(30.0))),
    };
    let mut flow = FlowState::default();
    let learned = learn(&mut flow, &config, &trouble, 5, 1800, t(100));
    assert_eq!(learned.adaptive, Some((16, 8)));
    assert_eq!((flow.adaptive_limit, flow.adaptive_at), (Some(8), Some(t(100))));
    assert_eq!((learned.held_until, flow.throttled_until), (Some(t(130)), Some(t(130))));
    assert_eq!(
        flow.throttle_reason.as_deref(),
        Some("the labourer throttled an invocation (HTTP 429); Retry-After 30 s")
    );
    // The same congestion seen by another orchestrator's pass within the interval: no second halving.
    let again = learn(
        &mut flow,
        &config,
        &Lesson {
            throttle: None,
            ..trouble.clone()
        },
        5,
        1800,
        t(100).plus_millis(500),
    );
    assert_eq!((again.adaptive, flow.adaptive_limit), (None, Some(8)));
    // No Retry-After: `throttle_hold`.
    let mut fresh = FlowState::default();
    let plain = Lesson {
        throttle: Some(("TooManyRequestsException".into(), None)),
        ..trouble.clone()
    };
    learn(&mut fresh, &FlowConfig::default(), &plain, 5, 1800, t(100));
    assert_eq!((fresh.throttled_until, fresh.adaptive_limit), (Some(t(105)), None));
    assert!(fresh
        .throttle_reason
        .is_some_and(|r| r.ends_with("no Retry-After: `throttle_hold` 5 s")));
}

#[test]
fn a_store_that_lags_is_counted_only_once_its_last_claim_settled() {
    let claimed = FlowState {
        claimed_at: Some(t(100)),
        ..FlowState::default()
    };
    assert!(settled(&FlowState::default(), 1000, t(0)));
    assert!(!settled(&claimed, 1000, t(100).plus_millis(999)));
    assert!(settled(&claimed, 1000, t(101)));
    assert!(settled(&claimed, 0, t(100)));
    let mut throttled = FlowState {
        throttled_until: Some(t(110)),
        throttle_reason: Some("429".into()),
        ..FlowState::default()
    };
    expire_throttle(&mut throttled, t(109));
    assert!(throttled.throttled_until.is_some());
    expire_throttle(&mut throttled, t(110));
    assert_eq!((throttled.throttled_until, throttled.throttle_reason), (None, None));
}

proptest! {
    /// However the stored state and the signals go, the adaptive limit stays between `min` and the ceiling (or
    /// `min` when the ceiling is below it), and never rises after trouble.
    #[test]
    fn the_adaptive_limit_stays_in_bounds(
        min in 0u32..8, increase in 1u32..5, decrease in 0.05f64..0.95,
        stored in proptest::option::of(0u32..200), ceiling in 0u32..200,
        throttled in 0u32..3, failed in 0u32..3, accepted in 0u32..20, saturated in any::<bool>(),
    ) {
        let cfg = Adaptive { min, increase, decrease, ..Adaptive::default() };
        let seen = Signals { accepted, throttled, failed, saturated, reported_trouble: false };
        let before = adaptive_limit(&cfg, stored, ceiling);
        let after = adaptive_limit(&cfg, adapt(&cfg, stored, ceiling, &seen), ceiling);
        prop_assert!(after <= ceiling.max(min));
        prop_assert!(after >= min.min(ceiling));
        if throttled + failed > 0 {
            prop_assert!(after <= before);
        }
    }

    /// Over any run of passes, the rate limit never lets more than `burst + rate × elapsed` invocations through.
    #[test]
    fn the_rate_limit_holds_over_any_run(
        per_second in 0.01f64..500.0, burst in 1u32..50,
        steps in proptest::collection::vec(0i64..3000, 1..60),
    ) {
        let rate = RateLimit { per_second, burst };
        let start = t(1_000_000);
        let (mut now, mut tat, mut sent) = (start, None, 0u64);
        for step in steps {
            now = now.plus_millis(step);
            let n = rate_allows(&rate, tat, now);
            tat = rate_spend(&rate, tat, now, n);
            sent += u64::from(n);
            let elapsed = (now.millis() - start.millis()) as f64 / 1000.0;
            prop_assert!(sent as f64 <= f64::from(burst) + per_second * elapsed + 1e-6,
                "{sent} sent in {elapsed} s");
        }
    }

    /// Nothing panics on any stored value, however absurd.
    #[test]
    fn rate_decisions_never_panic(tat in any::<i64>(), now in any::<i64>(), per_second in 1e-9f64..1e9, burst in any::<u32>(), n in any::<u32>()) {
        let rate = RateLimit { per_second, burst };
        let _ = rate_allows(&rate, Some(Time::from_millis(tat)), Time::from_millis(now));
        let _ = rate_spend(&rate, Some(Time::from_millis(tat)), Time::from_millis(now), n);
    }
}

fn window(completed: u64, failed: u64, durations_ms: &[u64]) -> Reports {
    Reports {
        completed,
        failed,
        timed: durations_ms.len() as u64,
        duration_ms: durations_ms.iter().sum(),
    }
}

#[test]
fn workers_reports_are_trouble_when_failures_pass_the_ratio_or_durations_inflate() {
    let cfg = Adaptive::default(); // failure_ratio 0.2, slowdown 2
    let fast = [200u64; 5];
    let slow = [3000u64; 5];
    use ReportTrouble::*;
    use ReportVerdict::*;
    // (window, baseline) → verdict
    let cases: &[(Reports, Option<u64>, ReportVerdict)] = &[
        // Fewer than MIN_REPORTS reports: kept for the next lesson.
        (window(2, 2, &[]), None, TooFew),
        (window(0, 0, &[]), Some(500), TooFew),
        // Failures at or under the ratio are the tasks' own business.
        (
            window(8, 2, &[]),
            None,
            Judged {
                trouble: None,
                baseline_ms: None,
            },
        ),
        // Over it: trouble.
        (
            window(7, 3, &[]),
            None,
            Judged {
                trouble: Some(Failures { failed: 3, reports: 10 }),
                baseline_ms: None,
            },
        ),
        (
            window(0, 5, &[]),
            Some(400),
            Judged {
                trouble: Some(Failures { failed: 5, reports: 5 }),
                baseline_ms: Some(400),
            },
        ),
        // The first timed window sets the baseline.
        (
            window(5, 0, &fast),
            None,
            Judged {
                trouble: None,
                baseline_ms: Some(200),
            },
        ),
        // A window that is not slow moves the baseline a fifth of the way.
        (
            window(5, 0, &[700; 5]),
            Some(200),
            Judged {
                trouble: None,
                baseline_ms: Some(300),
            },
        ),
        // Slow: more than twice the baseline and at least a second more: trouble, the baseline stays.
        (
            window(5, 0, &slow),
            Some(1000),
            Judged {
                trouble: Some(Slow {
                    mean_ms: 3000,
                    baseline_ms: 1000,
                }),
                baseline_ms: Some(1000),
            },
        ),
        // Twice a sub-second baseline is within the greenfield's resolution: not a slowdown.
        (
            window(5, 0, &[900; 5]),
            Some(300),
            Judged {
                trouble: None,
                baseline_ms: Some(420),
            },
        ),
        // Too few timed completions to judge durations; the failures still count.
        (
            window(5, 0, &[9000; 4]),
            Some(100),
            Judged {
                trouble: None,
                baseline_ms: Some(100),
            },
        ),
        // Both: the failures are named.
        (
            window(5, 3, &[9000; 5]),
            Some(100),
            Judged {
                trouble: Some(Failures { failed: 3, reports: 8 }),
                baseline_ms: Some(100),
            },
        ),
    ];
    for (i, (w, base, expected)) in cases.iter().enumerate() {
        assert_eq!(
            judge_reports(&cfg, w, *base),
            *expected,
            "case {i}: {w:?} against {base:?}"
        );
    }
}

#[test]
fn a_lesson_learns_from_the_workers_reports_and_marks_them_learned() {
    let config = FlowConfig {
        adaptive: Some(Adaptive::default()),
        ..FlowConfig::default()
    };
    // A pass whose invocations all went fine and used its whole allowance.
    let fine = Lesson {
        signals: Signals {
            accepted: 4,
            saturated: true,
            ..Signals::default()
        },
        ceiling: 16,
        throttle: None,
    };
    // Workers report most tasks failed: the limit halves although every invocation was accepted.
    let mut flow = FlowState {
        reports: window(1, 6, &[]),
        ..FlowState::default()
    };
    let learned = learn(&mut flow, &config, &fine, 5, 1800, t(100));
    assert_eq!(learned.adaptive, Some((16, 8)));
    assert_eq!(
        learned.reported,
        Some(ReportTrouble::Failures { failed: 6, reports: 7 })
    );
    assert_eq!(
        flow.reports_learned, flow.reports,
        "the judged window is given back as learned"
    );
    // Too few reports: nothing is learned from them, the limit climbs on the pass's own signals.
    let mut flow = FlowState {
        adaptive_limit: Some(8),
        reports: window(0, 2, &[]),
        ..FlowState::default()
    };
    let learned = learn(&mut flow, &config, &fine, 5, 1800, t(200));
    assert_eq!((learned.adaptive, learned.reported), (Some((8, 9)), None));
    assert!(
        flow.reports_learned.is_empty(),
        "a window too small to judge waits for the next lesson"
    );
    // A slowdown against the stored baseline lowers the limit; the baseline is kept.
    let mut flow = FlowState {
        adaptive_limit: Some(8),
        duration_baseline_ms: Some(1000),
        reports: window(5, 0, &[4000; 5]),
        ..FlowState::default()
    };
    let learned = learn(&mut flow, &config, &fine, 5, 1800, t(300));
    assert_eq!(learned.adaptive, Some((8, 4)));
    assert_eq!(flow.duration_baseline_ms, Some(1000));
    // Within the interval of the last change, the reports wait: they are judged when the limit may move again.
    let mut flow = FlowState {
        adaptive_limit: Some(8),
        adaptive_at: Some(t(300)),
        reports: window(0, 9, &[]),
        ..FlowState::default()
    };
    let learned = learn(&mut flow, &config, &fine, 5, 1800, t(300));
    assert_eq!((learned.adaptive, learned.reported), (None, None));
    assert!(flow.reports_learned.is_empty());
}

#[test]
fn report_counts_saturate_and_a_window_without_timed_completions_has_no_mean() {
    let full = Reports {
        completed: u64::MAX,
        failed: 1,
        timed: u64::MAX,
        duration_ms: u64::MAX,
    };
    assert_eq!(full.plus(&Reports::completed(Some(5))).completed, u64::MAX);
    assert_eq!(Reports::failed().mean_ms(), None);
    assert_eq!(Reports::completed(Some(1500)).mean_ms(), Some(1500));
    assert_eq!(
        Reports::completed(None),
        Reports {
            completed: 1,
            ..Reports::default()
        }
    );
}
