//! TaskManager's creation side: queue new tasks for known labourers and record `created`; and the listing of tasks
//! by labourer and state, in pages that resume after their last row (`sosw task list`, the API).

use crate::meta::MetaHandler;
use crate::EngineError;
use sosw_core::config::Config;
use sosw_core::ports::{CreateReport, ListCursor, StoreError, Table, TaskQuery, TaskStore};
use sosw_core::task::Whereabouts;
use sosw_core::Greenfield;
use sosw_core::{NewTask, StoredTask, TaskState, Time};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct TaskManager {
    config: Arc<Config>,
    store: Arc<dyn TaskStore>,
    meta: MetaHandler,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Config(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TaskManager {
    pub fn new(config: Arc<Config>, store: Arc<dyn TaskStore>, meta: MetaHandler) -> TaskManager {
        TaskManager { config, store, meta }
    }

    /// Appends `tasks` to their labourers' queues. Every labourer must be configured; nothing is written otherwise.
    pub async fn create(&self, tasks: &[NewTask], now: Time) -> Result<CreateReport, CreateError> {
        if let Some(t) = tasks.iter().find(|t| self.config.labourer(&t.labourer_id).is_none()) {
            return Err(EngineError::UnknownLabourer(t.labourer_id.clone()).into());
        }
        let stamp = self.meta.stamp(now);
        let report = self
            .store
            .create_tasks_recorded(tasks, self.config.greenfield.step, now, stamp.as_ref())
            .await?;
        Ok(report)
    }
}

/// A new task's id: 32 lowercase hex characters like Python sosw's `uuid.uuid4().hex`, but time-ordered — a UUIDv7
/// whose first 48 bits are `now` in milliseconds and whose other 74 bits are random (73 of them, and a 0 that leaves
/// room for [`NewTaskIds`] to step through) — so that tasks created together
/// sit together in every index keyed by id (SQLite's tables and the audit trail's index are b-trees: random ids make
/// every insert a random page write). Ids stay unique across processes and machines by their random bits, as
/// uuid4's do; a time before 1970 counts as 1970, one past the year 10889 as that year. Tasks made together take
/// [`new_task_ids`].
pub fn new_task_id(now: Time) -> String {
    NewTaskIds::at(now).next().unwrap_or_default()
}

/// `n` new task ids ([`new_task_id`]) that sort in the order they are given ([`NewTaskIds`]).
pub fn new_task_ids(now: Time, n: usize) -> Vec<String> {
    NewTaskIds::at(now).take(n).collect()
}

/// New task ids ([`new_task_id`]), without end, that sort in the order they are given: the first is 73 random bits
/// (half of the 74 bits' range is left to step through), each next one adds a random step of 1 to 2³² (RFC 9562's
/// monotonic random). Tasks created together are queued in that order and run in it, so each of their moves — claim,
/// completion, archive, every audit row — writes next to the previous one's page instead of anywhere in the batch's
/// range. Not `Clone`: a copy would give the same ids again.
#[derive(Debug)]
pub struct NewTaskIds {
    millis: u64,
    next: u128,
}

impl NewTaskIds {
    const RANDOM_BITS: u32 = 74;
    /// The last millisecond a UUIDv7 holds (48 bits: the year 10889).
    const MAX_MILLIS: u64 = (1 << 48) - 1;

    /// Ids of the millisecond `now` (a time before 1970 counts as 1970; past the last one a UUIDv7 holds, the ids
    /// of that last millisecond, unique by their random bits but no longer in order).
    pub fn at(now: Time) -> NewTaskIds {
        NewTaskIds {
            millis: u64::try_from(now.millis()).unwrap_or(0).min(Self::MAX_MILLIS),
            next: Self::start(),
        }
    }

    /// 74 random bits: the 122 random bits of a UUIDv4 less its version (bits 76–79) and variant (62–63).
    fn random74() -> u128 {
        let u = uuid::Uuid::new_v4().as_u128();
        (u & ((1 << 62) - 1)) | (((u >> 64) & 0xfff) << 62)
    }

    /// 73 random bits: half of the range is left to step through.
    fn start() -> u128 {
        Self::random74() >> 1
    }

    /// 1 to 2³².
    fn step() -> u128 {
        1 + (Self::random74() & 0xffff_ffff)
    }
}

impl Iterator for NewTaskIds {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let id = v7_id(self.millis, self.next);
        self.next = match self
            .next
            .checked_add(Self::step())
            .filter(|r| r >> Self::RANDOM_BITS == 0)
        {
            Some(r) => r,
            // The millisecond's range is spent (after some 2⁴¹ ids): the next ids borrow the next millisecond.
            None => {
                self.millis = (self.millis + 1).min(Self::MAX_MILLIS);
                Self::start()
            }
        };
        Some(id)
    }
}

/// The UUIDv7 of `millis` and 74 bits `r` (12 in `rand_a`, 62 in `rand_b`), in hex: ids sort as `(millis, r)` do.
fn v7_id(millis: u64, r: u128) -> String {
    let mut bytes = [0u8; 10];
    bytes[..2].copy_from_slice(&(((r >> 62) as u16) & 0x0fff).to_be_bytes());
    bytes[2..].copy_from_slice(&((r as u64) & ((1 << 62) - 1)).to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(millis, &bytes)
        .into_uuid()
        .simple()
        .to_string()
}

/// The store queries that list one labourer's tasks in `state` (all of its tasks, live then retry then closed,
/// when `None`), each reading pages of `page` rows from its start.
pub fn listing_queries(
    config: &Config,
    labourer: &str,
    state: Option<Whereabouts>,
    page: usize,
    now: Time,
) -> Vec<TaskQuery> {
    let markers = config.markers_for(labourer, now);
    let live = |s: TaskState| {
        let (range, completed) = s.range(&markers);
        TaskQuery {
            table: Table::Live,
            labourer: Some(labourer.to_string()),
            greenfield: Some(range),
            completed: Some(completed),
            limit: page,
            after: None,
        }
    };
    let of = |table, completed| TaskQuery {
        table,
        labourer: Some(labourer.to_string()),
        greenfield: None,
        completed,
        limit: page,
        after: None,
    };
    match state {
        None => vec![of(Table::Live, None), of(Table::Retry, None), of(Table::Closed, None)],
        Some(Whereabouts::Queued) => vec![live(TaskState::Queued)],
        Some(Whereabouts::Running) => vec![live(TaskState::Running)],
        Some(Whereabouts::Expired) => vec![live(TaskState::Expired)],
        Some(Whereabouts::Completed) => vec![live(TaskState::Completed)],
        Some(Whereabouts::Retry) => vec![of(Table::Retry, None)],
        Some(Whereabouts::Closed) => vec![of(Table::Closed, Some(true))],
        Some(Whereabouts::Dead) => vec![of(Table::Closed, Some(false))],
    }
}

/// Every labourer a listing covers, sorted: the configured ones and those the store has tasks of.
pub async fn listed_labourers(config: &Config, store: &dyn TaskStore) -> Result<Vec<String>, StoreError> {
    let mut ids: Vec<String> = config.labourers.iter().map(|l| l.id.clone()).collect();
    ids.extend(store.labourer_ids().await?);
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Where a listing resumes: the labourer, which of its [`listing_queries`], and the last row read of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageCursor {
    pub labourer_id: String,
    pub query: usize,
    pub order: i64,
    pub task_id: String,
}

/// One page of a listing, and where the next one starts (`None`: the listing is over).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub tasks: Vec<(StoredTask, Whereabouts)>,
    pub next: Option<PageCursor>,
}

/// Up to `limit` tasks of `labourers` (in that order) in `state`, after `cursor`. Keyset pages: a task inserted
/// meanwhile appears in a later page if it sorts after the cursor, and no task appears twice.
pub async fn list_page(
    config: &Config,
    store: &dyn TaskStore,
    labourers: &[String],
    state: Option<Whereabouts>,
    cursor: Option<&PageCursor>,
    limit: usize,
    now: Time,
) -> Result<Page, StoreError> {
    let mut tasks = Vec::new();
    let start = cursor.map_or(0, |c| labourers.partition_point(|l| *l < c.labourer_id));
    for labourer in &labourers[start..] {
        let resume = cursor.filter(|c| c.labourer_id == *labourer);
        let queries = listing_queries(config, labourer, state, limit, now);
        for (i, mut q) in queries.into_iter().enumerate().skip(resume.map_or(0, |c| c.query)) {
            if let Some(c) = resume.filter(|c| c.query == i) {
                q.after = Some(ListCursor {
                    labourer_id: labourer.clone(),
                    order: c.order,
                    task_id: c.task_id.clone(),
                });
            }
            q.limit = limit - tasks.len();
            let rows = store.list(&q).await?;
            let full = rows.len() >= q.limit;
            tasks.extend(rows.into_iter().map(|t| {
                let state = config.state_of(&t, now);
                (t, state)
            }));
            if full {
                let next = tasks.last().map(|(t, _)| {
                    let c = ListCursor::after(t);
                    PageCursor {
                        labourer_id: c.labourer_id,
                        query: i,
                        order: c.order,
                        task_id: c.task_id,
                    }
                });
                return Ok(Page { tasks, next });
            }
        }
    }
    Ok(Page { tasks, next: None })
}

/// An operator's re-queue of a task closed as dead: back at the head of its labourer's queue for one more
/// attempt (its attempts so far are kept, so one more failure closes it as dead again), recorded as
/// `requeued_by_operator` with who did it. Returns the task where it is now. Refused without a change for a task
/// that is not dead (a [`StoreError::Conflict`] saying where it is) or unknown ([`StoreError::NotFound`]).
pub async fn requeue_dead(
    config: &Config,
    wiring: &crate::Wiring,
    task_id: &str,
    by: &str,
    now: Time,
) -> Result<StoredTask, CreateError> {
    let store = wiring.store.as_ref();
    let Some(stored) = store.get(task_id).await? else {
        return Err(StoreError::NotFound(task_id.to_string()).into());
    };
    if !matches!(stored.place, sosw_core::Place::Closed { completed: false, .. }) {
        return Err(sosw_core::moves::revive_refusal(task_id, &stored.place).into());
    }
    let labourer = stored.task.labourer_id.clone();
    if config.labourer(&labourer).is_none() {
        return Err(EngineError::UnknownLabourer(labourer).into());
    }
    let oldest = store.oldest_queued(&labourer, Greenfield::start(now)).await?;
    let greenfield = sosw_core::greenfield::head_positions(oldest, config.greenfield.step, 1)
        .first()
        .copied()
        .unwrap_or(Greenfield::new(config.greenfield.step.saturating_sub(1)));
    let meta = MetaHandler::new(wiring.meta.clone(), format!("sosw_operator {by}"));
    let event = meta.event(
        task_id,
        &labourer,
        sosw_core::meta::MetaAction::RequeuedByOperator,
        now,
        Some(serde_json::json!({"greenfield": greenfield, "attempts": stored.task.attempts})),
    );
    let events: Vec<_> = wiring.meta.is_some().then_some(event).into_iter().collect();
    store.revive_recorded(task_id, greenfield, &events).await?;
    Ok(store
        .get(task_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(task_id.to_string()))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn task_ids_are_python_shaped_and_ordered_by_time() {
        let at = |ms: i64| new_task_id(Time::from_millis(ms));
        let ids: Vec<String> = [
            1_796_000_000_000,
            1_796_000_000_001,
            1_796_000_060_000,
            4_102_444_800_000,
        ]
        .into_iter()
        .map(at)
        .collect();
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
            assert_eq!(&id[12..13], "7", "a version-7 UUID: {id}");
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "later ids sort later: {ids:?}");
        // The same millisecond still gives distinct ids; the clock's extremes give ids, not panics.
        assert_ne!(at(1_796_000_000_000), at(1_796_000_000_000));
        assert_eq!(&at(-5)[..12], "000000000000");
        assert_eq!(at(i64::MAX).len(), 32);
    }

    #[test]
    fn ids_made_together_sort_in_the_order_they_are_made() {
        let now = Time::from_millis(1_796_000_000_000);
        let ids = new_task_ids(now, 10_000);
        assert_eq!(ids.len(), 10_000);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, and distinct");
        assert!(ids.iter().all(|id| id[..12] == ids[0][..12]), "one millisecond");
        for id in [&ids[0], &ids[9_999]] {
            assert_eq!(id.len(), 32, "{id}");
            assert_eq!(&id[12..13], "7", "a version-7 UUID: {id}");
            assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"), "RFC 9562's variant: {id}");
        }
        // Two batches of the same millisecond are distinct (by their random bits), and none is empty.
        let again = new_task_ids(now, 10_000);
        assert!(ids.iter().collect::<HashSet<_>>().is_disjoint(&again.iter().collect()));
        assert!(new_task_ids(now, 0).is_empty());
        // A millisecond's range spent: the next id borrows the next millisecond, still in order.
        let mut ids = NewTaskIds {
            millis: 1_796_000_000_000,
            next: (1 << 74) - 1,
        };
        let (last, borrowed) = (ids.next().expect("id"), ids.next().expect("id"));
        assert_eq!(&last[..12], &format!("{:012x}", 1_796_000_000_000u64));
        assert_eq!(&borrowed[..12], &format!("{:012x}", 1_796_000_000_001u64));
        assert!(last < borrowed);
        // Past the last millisecond a UUIDv7 holds: that millisecond, ids still distinct.
        let mut late = NewTaskIds::at(Time::from_millis(i64::MAX));
        let (a, b) = (late.next().expect("id"), late.next().expect("id"));
        assert_eq!(&a[..12], "ffffffffffff");
        assert_ne!(a, b);
    }

    #[test]
    fn the_74_bits_pack_around_version_and_variant_in_order() {
        let m = 0x0123_4567_89ab;
        let cases: [(u128, &str); 4] = [
            (0, "0123456789ab70008000000000000000"),
            ((1 << 62) - 1, "0123456789ab7000bfffffffffffffff"),
            (1 << 62, "0123456789ab70018000000000000000"),
            ((1 << 74) - 1, "0123456789ab7fffbfffffffffffffff"),
        ];
        for (r, hex) in cases {
            assert_eq!(v7_id(m, r), hex, "r = {r:#x}");
        }
        assert!(cases.windows(2).all(|w| w[0].1 < w[1].1));
        // Every random bit of a start and a step is used: over many draws, each of the 74 is seen set and clear.
        let (mut or, mut and) = (0u128, (1u128 << 74) - 1);
        for _ in 0..512 {
            let r = NewTaskIds::random74();
            assert_eq!(r >> 74, 0);
            (or, and) = (or | r, and & r);
        }
        assert_eq!((or, and), ((1 << 74) - 1, 0), "all 74 bits random");
    }
}
