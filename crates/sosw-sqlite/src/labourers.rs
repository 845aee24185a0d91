//! The labourers' side of the store ([`LabourerStore`]) on SQLite: breaker states, operator controls, and dispatch
//! leases. A lease is taken by one upsert in the writer's `BEGIN IMMEDIATE` transaction, so of two orchestrators —
//! in one process or in several sharing the file — at most one gets it.

use super::*;
use sosw_core::flow::{DispatchRecord, FlowState, LabourerControl, Pause, Reports};
use sosw_core::ports::LabourerStore;

#[async_trait]
impl LabourerStore for SqliteStore {
    async fn labourer_states(&self) -> StoreResult<Vec<LabourerState>> {
        self.run(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT labourer_id, dead_in_row, trips, held_until, reason, held_since, suspect \
                     FROM labourer_states ORDER BY labourer_id",
                )
                .map_err(map_err)?;
            let rows = st.query_map([], labourer_state_from_row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn save_labourer_state(&self, state: &LabourerState) -> StoreResult<()> {
        let s = state.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO labourer_states (labourer_id, dead_in_row, trips, held_until, reason, \
                 held_since, suspect) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(map_err)?
            .execute(params![
                s.labourer_id,
                s.dead_in_row,
                s.trips,
                s.held_until.map(Time::millis),
                s.reason,
                s.held_since.map(Time::millis),
                s.suspect
            ])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn clear_labourer_state(&self, labourer_id: &str) -> StoreResult<()> {
        let id = labourer_id.to_string();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM labourer_states WHERE labourer_id = ?1")
                .map_err(map_err)?
                .execute([&id])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn labourer_controls(&self) -> StoreResult<Vec<LabourerControl>> {
        self.run(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT labourer_id, paused_since, paused_until, pause_reason, limit_override, updated_at, \
                     updated_by FROM labourer_controls ORDER BY labourer_id",
                )
                .map_err(map_err)?;
            let rows = st.query_map([], control_from_row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn save_labourer_control(&self, control: &LabourerControl) -> StoreResult<()> {
        let c = control.clone();
        self.write(move |tx| {
            if c.is_empty() {
                tx.prepare_cached("DELETE FROM labourer_controls WHERE labourer_id = ?1")
                    .map_err(map_err)?
                    .execute([&c.labourer_id])
                    .map_err(map_err)?;
                return Ok(());
            }
            let pause = c.paused.as_ref();
            tx.prepare_cached(
                "INSERT OR REPLACE INTO labourer_controls (labourer_id, paused_since, paused_until, pause_reason, \
                 limit_override, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(map_err)?
            .execute(params![
                c.labourer_id,
                pause.map(|p| p.since.millis()),
                pause.and_then(|p| p.until).map(Time::millis),
                pause.and_then(|p| p.reason.clone()),
                c.limit,
                c.updated_at.millis(),
                c.updated_by
            ])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn take_dispatch(
        &self,
        labourer_id: &str,
        holder: &str,
        now: Time,
        until: Time,
    ) -> StoreResult<Option<FlowState>> {
        let (id, holder) = (labourer_id.to_string(), holder.to_string());
        self.write(move |tx| {
            // The update's WHERE refuses a running lease of another holder; then no row comes back.
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO dispatch (labourer_id, holder, lease_until) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (labourer_id) DO UPDATE SET holder = ?2, lease_until = ?3 \
                     WHERE dispatch.holder IS NULL OR dispatch.holder = ?2 OR dispatch.lease_until <= ?4 \
                     RETURNING adaptive_limit, adaptive_at, rate_tat, claimed_at, throttled_until, throttle_reason, \
                     reports_completed, reports_failed, reports_timed, reports_duration_ms, duration_baseline_ms",
                )
                .map_err(map_err)?;
            st.query_row(params![id, holder, until.millis(), now.millis()], |r| {
                flow_from_row(r, 0)
            })
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn give_back_dispatch(&self, labourer_id: &str, holder: &str, flow: &FlowState) -> StoreResult<bool> {
        let (id, holder, f) = (labourer_id.to_string(), holder.to_string(), flow.clone());
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE dispatch SET holder = NULL, lease_until = NULL, adaptive_limit = ?3, adaptive_at = ?4, \
                     rate_tat = ?5, claimed_at = ?6, throttled_until = ?7, throttle_reason = ?8, \
                     reports_completed = MAX(reports_completed - ?9, 0), reports_failed = MAX(reports_failed - ?10, 0), \
                     reports_timed = MAX(reports_timed - ?11, 0), \
                     reports_duration_ms = MAX(reports_duration_ms - ?12, 0), duration_baseline_ms = ?13 \
                     WHERE labourer_id = ?1 AND holder = ?2",
                )
                .map_err(map_err)?
                .execute(params![
                    id,
                    holder,
                    f.adaptive_limit,
                    f.adaptive_at.map(Time::millis),
                    f.rate_tat.map(Time::millis),
                    f.claimed_at.map(Time::millis),
                    f.throttled_until.map(Time::millis),
                    f.throttle_reason,
                    count(f.reports_learned.completed),
                    count(f.reports_learned.failed),
                    count(f.reports_learned.timed),
                    count(f.reports_learned.duration_ms),
                    f.duration_baseline_ms.map(count),
                ])
                .map_err(map_err)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn add_reports(&self, labourer_id: &str, reports: &Reports) -> StoreResult<()> {
        let (id, add) = (labourer_id.to_string(), *reports);
        self.write(move |tx| {
            // Each count stays under 2^62 and each addition under 2^61, so the sum never leaves SQLite's integers.
            tx.prepare_cached(
                "INSERT INTO dispatch (labourer_id, reports_completed, reports_failed, reports_timed, \
                 reports_duration_ms) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (labourer_id) DO UPDATE SET \
                 reports_completed = MIN(reports_completed + ?2, 4611686018427387904), \
                 reports_failed = MIN(reports_failed + ?3, 4611686018427387904), \
                 reports_timed = MIN(reports_timed + ?4, 4611686018427387904), \
                 reports_duration_ms = MIN(reports_duration_ms + ?5, 4611686018427387904)",
            )
            .map_err(map_err)?
            .execute(params![
                id,
                count(add.completed),
                count(add.failed),
                count(add.timed),
                count(add.duration_ms)
            ])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn dispatch_records(&self) -> StoreResult<Vec<DispatchRecord>> {
        self.run(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT labourer_id, holder, lease_until, adaptive_limit, adaptive_at, rate_tat, claimed_at, \
                     throttled_until, throttle_reason, reports_completed, reports_failed, reports_timed, \
                     reports_duration_ms, duration_baseline_ms FROM dispatch WHERE holder IS NOT NULL \
                     OR adaptive_limit IS NOT NULL OR adaptive_at IS NOT NULL OR rate_tat IS NOT NULL \
                     OR claimed_at IS NOT NULL OR throttled_until IS NOT NULL OR throttle_reason IS NOT NULL \
                     OR reports_completed + reports_failed > 0 OR duration_baseline_ms IS NOT NULL \
                     ORDER BY labourer_id",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok(DispatchRecord {
                        labourer_id: r.get(0)?,
                        holder: r.get(1)?,
                        lease_until: r.get::<_, Option<i64>>(2)?.map(Time::from_millis),
                        flow: flow_from_row(r, 3)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }
}

/// A count as stored: at most 2^61 (see [`LabourerStore::add_reports`]'s statement).
fn count(n: u64) -> i64 {
    n.min(1 << 61) as i64
}

/// The flow state in the eleven columns from `first` on.
fn flow_from_row(r: &Row<'_>, first: usize) -> rusqlite::Result<FlowState> {
    let time =
        |i: usize| -> rusqlite::Result<Option<Time>> { Ok(r.get::<_, Option<i64>>(first + i)?.map(Time::from_millis)) };
    let stored = |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(first + i)?).unwrap_or(0)) };
    Ok(FlowState {
        reports: Reports {
            completed: stored(6)?,
            failed: stored(7)?,
            timed: stored(8)?,
            duration_ms: stored(9)?,
        },
        reports_learned: Reports::default(),
        duration_baseline_ms: r.get::<_, Option<i64>>(first + 10)?.and_then(|v| u64::try_from(v).ok()),
        adaptive_limit: r.get(first)?,
        adaptive_at: time(1)?,
        rate_tat: time(2)?,
        claimed_at: time(3)?,
        throttled_until: time(4)?,
        throttle_reason: r.get(first + 5)?,
    })
}

fn control_from_row(r: &Row<'_>) -> rusqlite::Result<LabourerControl> {
    let since: Option<i64> = r.get(1)?;
    Ok(LabourerControl {
        labourer_id: r.get(0)?,
        paused: match since {
            Some(since) => Some(Pause {
                since: Time::from_millis(since),
                until: r.get::<_, Option<i64>>(2)?.map(Time::from_millis),
                reason: r.get(3)?,
            }),
            None => None,
        },
        limit: r.get(4)?,
        updated_at: Time::from_millis(r.get(5)?),
        updated_by: r.get(6)?,
    })
}
