//! Test support shared by every sosw crate: a manual clock, fakes for the ports, and the [`TaskStore`]
//! conformance suite that every store backend must pass.
//!
//! A backend runs the whole suite with one line:
//!
//! ```text
//! sosw_testkit::store_conformance!(my_backend::harness());
//! ```
//!
//! where `harness()` is an `async fn` returning a fresh, initialised [`Harness`]. The macro expands to one
//! `#[tokio::test]` per case, so a new case reaches every backend at once.
//!
//! [`TaskStore`]: sosw_core::ports::TaskStore

pub mod conformance;
pub mod fakes;
pub mod faults;
pub mod moto;

use sosw_core::ports::{MetaSink, TaskStore};
use sosw_core::{Clock, Time};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at_secs(secs: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(secs * 1000)))
    }

    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    pub fn set(&self, t: Time) {
        self.0.store(t.millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        Time::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// A fresh, initialised store under test, and whatever keeps it alive (a temporary directory, a server).
pub struct Harness {
    pub store: Arc<dyn TaskStore>,
    pub meta: Arc<dyn MetaSink>,
    pub keep_alive: Box<dyn std::any::Any + Send + Sync>,
    /// Whether concurrent transactions on the backend are isolated, so that cases may race two writers. False for
    /// moto_server, whose transactions restore a whole-table snapshot when they fail, erasing concurrent writes
    /// (DynamoDB itself isolates them); such cases then run their writers one after the other.
    pub isolated_transactions: bool,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each on a fresh harness from `$make` (an expression
/// evaluating to a future of [`Harness`]).
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@all $make, (), None::<String>);
    };
    (@all $make:expr, ($($mode:tt)*), $skip:expr) => {
        $crate::store_conformance!(@cases $make, ($($mode)*), skip_unless: $skip;
            create_assigns_fifo_positions_per_labourer,
            create_skips_existing_ids,
            create_skips_existing_ids_in_large_ordered_batches,
            create_refuses_a_full_queue_and_writes_nothing,
            concurrent_creates_of_the_same_ids_create_each_once,
            next_queued_is_fifo_with_a_strict_bound,
            claim_is_conditional,
            concurrent_claims_never_double,
            release_claim_restores_position_and_attempts,
            running_and_expired_bounds,
            complete_only_invoked_tasks_and_never_create_rows,
            repeated_completion_keeps_the_first_time,
            fail_counts_and_keeps_state,
            archive_is_conditional,
            move_to_retry_loses_to_a_completion,
            retry_round_trip_keeps_every_field,
            completion_of_a_task_waiting_for_retry_closes_it,
            completion_of_a_requeued_task_closes_it,
            reports_between_listing_and_archiving_are_kept,
            oldest_queued_ignores_invoked_tasks,
            counts_and_listing,
            listing_pages_concatenate_to_the_whole_listing,
            meta_events_in_order,
            foreign_meta_actions_are_read_verbatim,
            job_progress_round_trip,
            ids_no_task_can_have_name_nothing,
            heartbeat_extends_only_running_tasks,
            reports_on_a_superseded_invocation_are_refused,
            revive_moves_only_dead_tasks,
            counts_many_is_counts_of_each,
            closed_counts_stay_right_as_time_passes,
            labourers_with_tasks_are_listed_and_rescanned,
            has_task_looks_in_every_table_for_the_labourers_task,
            labourer_states_round_trip,
            labourer_controls_round_trip,
            dispatch_lease_is_exclusive,
            concurrent_takers_get_one_lease,
            reports_add_up_and_give_back_subtracts_what_was_learned,
            moves_record_their_events_only_when_they_take_effect,
        );
    };
    // `$skip` evaluates to `Some(reason)` when the backend's service is not there: the case is skipped with the
    // reason printed, unless `SOSW_REQUIRE_SERVICES` is set (as CI sets it), which makes the skip a failure.
    ($make:expr, skip_unless: $skip:expr) => {
        $crate::store_conformance!(@all $make, (), $skip);
    };
    // A backend whose service a plain `cargo test` does not start: its cases are `#[ignore]`d with the reason
    // (reported as ignored, never as passed), and `cargo test -- --include-ignored` runs them.
    ($make:expr, ignore: $reason:literal, skip_unless: $skip:expr) => {
        $crate::store_conformance!(@all $make, (ignore = $reason), $skip);
    };
    (@cases $make:expr, (), skip_unless: $skip:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let skip: Option<String> = $skip;
                if let Some(reason) = skip {
                    assert!(std::env::var_os("SOSW_REQUIRE_SERVICES").is_none(), "required service missing: {reason}");
                    eprintln!("skipped: {reason}");
                    return;
                }
                let harness: $crate::Harness = $make.await;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
    (@cases $make:expr, (ignore = $reason:literal), skip_unless: $skip:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $reason]
            async fn $case() {
                let skip: Option<String> = $skip;
                if let Some(reason) = skip {
                    assert!(std::env::var_os("SOSW_REQUIRE_SERVICES").is_none(), "required service missing: {reason}");
                    eprintln!("skipped: {reason}");
                    return;
                }
                let harness: $crate::Harness = $make.await;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
}

/// Every row of every table of `store` (live, retry, closed), for tests that check where each task is.
pub async fn all_rows(store: &dyn sosw_core::ports::TaskStore) -> Vec<sosw_core::StoredTask> {
    use sosw_core::ports::{Table, TaskQuery};
    let mut rows = Vec::new();
    for table in [Table::Live, Table::Retry, Table::Closed] {
        let q = TaskQuery {
            table,
            labourer: None,
            greenfield: None,
            completed: None,
            limit: usize::MAX,
            after: None,
        };
        rows.extend(store.list(&q).await.expect("list"));
    }
    rows
}

/// The value of `var` — the address of a service a test needs (`SOSW_TEST_DYNAMODB`, …) — or `None` after printing
/// why the test is skipped. With `SOSW_REQUIRE_SERVICES` set, as `.ci/run` sets it, a missing service fails the
/// test instead: CI never skips.
pub fn service(var: &str) -> Option<String> {
    let value = std::env::var(var).ok().filter(|v| !v.is_empty());
    if value.is_none() {
        assert!(
            std::env::var_os("SOSW_REQUIRE_SERVICES").is_none(),
            "required service missing: {var} is not set"
        );
        eprintln!("skipped: {var} is not set");
    }
    value
}
