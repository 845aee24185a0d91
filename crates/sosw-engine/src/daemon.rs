//! The daemon loop: orchestrator and scavenger passes on their own intervals until shutdown.
//!
//! Shutdown is checked between passes only, so a pass in progress always finishes.

use crate::orchestrator::{Orchestrator, OrchestratorReport};
use crate::scavenger::{Scavenger, ScavengerReport};
use sosw_core::config::DaemonConfig;
use sosw_core::Clock;
use std::future::Future;
use tokio::time::{interval, MissedTickBehavior};

/// A pass's report, as the loop hands it to its caller.
#[derive(Debug, Clone)]
pub enum PassReport {
    Orchestrator(OrchestratorReport),
    Scavenger(ScavengerReport),
}

/// Runs passes until `shutdown` completes; returns how many passes of each ran. Each report comes with how long its
/// pass took (by `clock`).
pub async fn run(
    orchestrator: &Orchestrator,
    scavenger: &Scavenger,
    clock: &dyn Clock,
    intervals: DaemonConfig,
    shutdown: impl Future<Output = ()>,
    mut on_report: impl FnMut(PassReport, std::time::Duration),
) -> (u64, u64) {
    let mut orchestrate = interval(sosw_core::time::duration_secs(intervals.orchestrator_interval));
    let mut scavenge = interval(sosw_core::time::duration_secs(intervals.scavenger_interval));
    orchestrate.set_missed_tick_behavior(MissedTickBehavior::Delay);
    scavenge.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let (mut orchestrated, mut scavenged) = (0, 0);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            _ = scavenge.tick() => {
                scavenged += 1;
                let started = clock.now();
                let report = scavenger.run_once(started).await;
                on_report(PassReport::Scavenger(report), took(clock, started));
            }
            _ = orchestrate.tick() => {
                orchestrated += 1;
                let started = clock.now();
                let report = orchestrator.run_once(started).await;
                on_report(PassReport::Orchestrator(report), took(clock, started));
            }
        }
    }
    (orchestrated, scavenged)
}

fn took(clock: &dyn Clock, started: sosw_core::Time) -> std::time::Duration {
    let ms = clock.now().millis().saturating_sub(started.millis()).max(0);
    std::time::Duration::from_millis(ms.unsigned_abs())
}
