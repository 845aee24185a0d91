//! The greenfield tables and properties (moved out of `greenfield.rs` so that the encoding reads in one screen).

use super::*;

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

mod tables {
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
