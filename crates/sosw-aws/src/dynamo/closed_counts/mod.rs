//! Closed tasks counted without reading the whole archive.
//!
//! The closed table only grows, and DynamoDB counts a range of an index by reading all of it: with a million closed
//! tasks, every `status`, `/metrics` scrape and dashboard poll read a million index entries (seconds, and about
//! 18,000 read units each time). So each labourer has a counts item in `sosw_labourers` (its key is
//! [`counts_key`]: a control character, which no labourer id has, then the labourer's id) that keeps what is
//! settled:
//!
//! - `closed_counted_to` (the mark, whole seconds) and the labourer's closed tasks counted below it,
//!   `closed_completed_counted` and `closed_dead_counted`;
//! - `closed_revision`, bumped by every revival (the one move out of the closed table), and `closed_revision_seen`
//!   with `closed_revision_seen_at`: the revision a poll last noticed, and when.
//!
//! A poll reads the counts item, then counts only what was closed from the mark on. A task is settled
//! [`SETTLE_SECS`] after its `closed_at`: longer than a Scavenger pass in Lambda can last (15 minutes), so that every
//! close it stamped is written by then, and than the closed index takes to show a write. When the mark lags the
//! settled time by [`STEP_SECS`] or more, the poll also moves it, adding what it counted in between; the write is
//! conditional on the mark and revision it read, so two polls never add the same range twice and a revival during
//! the poll makes it drop its write (its answer is still right).
//!
//! A revival takes its task out of the settled counts in its own transaction, conditional on the mark being still
//! on the same side of the task's `closed_at`. The index may still show the deleted item for a moment, so after a
//! revival the mark does not move until [`GRACE_SECS`] after a poll first noticed the new revision. Read-only
//! credentials only lose the writes: the counts stay right, as slow as before.
//!
//! What is not seen until `sosw labourer rescan` counts everything again: closed items deleted by other programs,
//! and a close written with a `closed_at` already behind the mark — a writer whose clock runs more than
//! [`SETTLE_SECS`] behind the polls' (or a poll whose clock runs that far ahead), or an embedded `sosw run` on
//! DynamoDB whose single pass writes closes for longer than that.

mod plan;

use super::*;
use aws_sdk_dynamodb::types::Update;
pub(crate) use plan::Settled;
use plan::*;
use std::sync::atomic::AtomicBool;

/// A range of `closed_at`: `[from, to)`, either end open.
#[derive(Debug, Clone, Copy)]
struct Range {
    from: Option<i64>,
    to: Option<i64>,
}

/// Set once a counts write was refused for lack of permission, so that it is logged once.
static DENIED: AtomicBool = AtomicBool::new(false);

impl DynamoStore {
    /// The labourer's (completed, dead) closed tasks at `now` (seconds), from its counts item.
    pub(crate) async fn closed_counts(&self, labourer: &str, now: i64) -> StoreResult<(u64, u64)> {
        let stored = self.settled(labourer).await?;
        self.closed_counts_from(labourer, stored, now).await
    }

    /// [`DynamoStore::closed_counts`] from the `stored` counts, read beforehand; moves them forward when due (a
    /// write that fails only costs the next poll the same reads).
    pub(crate) async fn closed_counts_from(
        &self,
        labourer: &str,
        stored: Settled,
        now: i64,
    ) -> StoreResult<(u64, u64)> {
        let (answer, write) = self.count(labourer, &stored, Purpose::Poll, now).await?;
        if let Some(write) = write {
            // Best-effort: `write_counts` logged why it failed, and the answer is right either way.
            self.write_counts(labourer, &stored, write).await.ok();
        }
        Ok(answer)
    }

    /// Counts the closed tasks of the `found` labourers, and of every labourer with a counts item, again from the
    /// whole archive (a rescan's second part): what other programs deleted from the closed table or wrote into
    /// its settled past is counted right from then on.
    pub(crate) async fn recount_closed(&self, found: &[String], now: Time) -> StoreResult<()> {
        let mut labourers: std::collections::BTreeSet<String> = found.iter().cloned().collect();
        for item in self.labourer_items().await? {
            labourers.extend(labourer_of_counts_item(&item));
        }
        let recounts: Vec<_> = labourers.iter().map(|l| self.recount(l, now.secs())).collect();
        stream::iter(recounts)
            .buffer_unordered(COUNTING_LABOURERS)
            .try_collect::<Vec<_>>()
            .await
            .map(drop)
    }

    /// One labourer's recount, read again while polls or revivals move its counts item under it.
    async fn recount(&self, labourer: &str, now: i64) -> StoreResult<()> {
        for _ in 0..TRIES {
            let stored = self.settled(labourer).await?;
            let (_, write) = self.count(labourer, &stored, Purpose::Recount, now).await?;
            match write {
                Some(write @ Write::Move { .. }) => match self.write_counts(labourer, &stored, write).await {
                    Err(e) if e.is_lost_race() => continue,
                    done => return done,
                },
                // Nothing closed and nothing stored: nothing to recount.
                None if stored == Settled::default() => return Ok(()),
                // A revival moments ago: the index may still show its task.
                other => {
                    if let Some(write) = other {
                        self.write_counts(labourer, &stored, write).await.ok();
                    }
                    tracing::warn!(
                        labourer,
                        "closed counts not recounted: a task was revived less than {GRACE_SECS} s ago; \
                         polls keep them right, and the next rescan recounts them"
                    );
                    return Ok(());
                }
            }
        }
        Err(StoreError::conflict(
            labourer,
            "its closed counts kept changing during the recount (polls or revivals); rescan again",
        ))
    }

    /// The counts a poll or a recount at `now` needs ([`plan`]): the answer (settled + from the mark on) and what
    /// to write.
    async fn count(
        &self,
        labourer: &str,
        stored: &Settled,
        purpose: Purpose,
        now: i64,
    ) -> StoreResult<((u64, u64), Option<Write>)> {
        let plan = plan(stored, now, purpose);
        let base = match purpose {
            Purpose::Poll => *stored,
            Purpose::Recount => Settled {
                mark: None,
                completed: 0,
                dead: 0,
                ..*stored
            },
        };
        // From the mark on: up to the next mark and after it when the mark moves, else all of it.
        let (between, after) = match plan {
            Plan::Move(next) => (
                Range {
                    from: base.mark,
                    to: Some(next),
                },
                Some(Range {
                    from: Some(next),
                    to: None,
                }),
            ),
            Plan::Keep | Plan::Notice => (
                Range {
                    from: base.mark,
                    to: None,
                },
                None,
            ),
        };
        let ((c_between, d_between), (c_after, d_after)) =
            futures::try_join!(self.count_closed_in(labourer, between), async {
                match after {
                    Some(r) => self.count_closed_in(labourer, r).await,
                    None => Ok((0, 0)),
                }
            })?;
        let settled_completed = base.completed.saturating_add(c_between);
        let settled_dead = base.dead.saturating_add(d_between);
        let answer = (
            settled_completed.saturating_add(c_after),
            settled_dead.saturating_add(d_after),
        );
        let write = match plan {
            Plan::Keep => None,
            Plan::Notice => stored.revision.map(|revision| Write::Notice { revision, now }),
            // Nothing closed and nothing stored: no item to write (a labourer without tasks stays without one).
            Plan::Move(_) if *stored == Settled::default() && answer == (0, 0) => None,
            Plan::Move(mark) => Some(Write::Move {
                mark,
                completed: settled_completed,
                dead: settled_dead,
            }),
        };
        Ok((answer, write))
    }

    /// The labourer's closed (completed, dead) tasks with `closed_at` in `r`, counted on the closed index.
    async fn count_closed_in(&self, labourer: &str, r: Range) -> StoreResult<(u64, u64)> {
        if matches!((r.from, r.to), (Some(from), Some(to)) if from >= to) {
            return Ok((0, 0));
        }
        let read = |done: bool| {
            let mut values = vec![(":s", s(closed_status(labourer, done)))];
            let mut names = vec![("#s", "labourer_id_task_status")];
            let key = match (r.from, r.to) {
                (None, None) => "#s = :s",
                (Some(from), None) => {
                    values.push((":from", n(from)));
                    "#s = :s AND #t >= :from"
                }
                (None, Some(to)) => {
                    values.push((":to", n(to)));
                    "#s = :s AND #t < :to"
                }
                // A key condition has one range test, and a query's filter may not name the index's keys: BETWEEN,
                // up to the largest number DynamoDB can store below `to`.
                (Some(from), Some(to)) => {
                    values.push((":from", n(from)));
                    values.push((":below", just_below(to)));
                    "#s = :s AND #t BETWEEN :from AND :below"
                }
            };
            if key.contains("#t") {
                names.push(("#t", "closed_at"));
            }
            Read {
                table: self.tables.closed.clone(),
                index: Some(self.tables.closed_index.clone()),
                key: Some(key.into()),
                names,
                values,
                count: true,
                ..Read::default()
            }
        };
        let (completed, dead) = futures::try_join!(self.read(read(true)), self.read(read(false)))?;
        Ok((completed.1, dead.1))
    }

    /// Writes `write` to the labourer's counts item if it still holds what `read` says; a lost race (another poll,
    /// a revival) is [`StoreError::is_lost_race`].
    async fn write_counts(&self, labourer: &str, read: &Settled, write: Write) -> StoreResult<()> {
        let request = self
            .update_labourer(&counts_key(labourer))
            .expression_attribute_names("#r", CLOSED_REVISION);
        let request = match write {
            Write::Move { mark, completed, dead } => {
                let (condition, values) = unchanged(read);
                values
                    .into_iter()
                    .fold(request, |r, (k, v)| r.expression_attribute_values(k, v))
                    .update_expression("SET #m = :mark, #c = :completed, #d = :dead")
                    .condition_expression(condition)
                    .expression_attribute_names("#m", MARK)
                    .expression_attribute_names("#c", COMPLETED)
                    .expression_attribute_names("#d", DEAD)
                    .expression_attribute_values(":mark", n(mark))
                    .expression_attribute_values(":completed", n(saturating_i64(completed)))
                    .expression_attribute_values(":dead", n(saturating_i64(dead)))
            }
            Write::Notice { revision, now } => request
                .update_expression("SET #seen = :revision, #seen_at = :now")
                .condition_expression("#r = :revision")
                .expression_attribute_names("#seen", SEEN)
                .expression_attribute_names("#seen_at", SEEN_AT)
                .expression_attribute_values(":revision", n(revision))
                .expression_attribute_values(":now", n(now)),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if failed_condition(&e) => Err(StoreError::conflict(labourer, "its closed counts moved meanwhile")),
            Err(e) => {
                if e.code() == Some("AccessDeniedException") {
                    if !DENIED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            labourer,
                            "the closed counts cannot be stored in `sosw_labourers` (access denied): each poll \
                             counts the whole archive (logged once)"
                        );
                    }
                } else {
                    tracing::debug!(
                        labourer,
                        "the closed counts were not stored this time: {}",
                        e.code().unwrap_or("?")
                    );
                }
                Err(sdk_err(e))
            }
        }
    }

    /// The labourer's counts item, read consistently.
    async fn settled(&self, labourer: &str) -> StoreResult<Settled> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.labourers)
            .key("labourer_id", s(counts_key(labourer)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(Settled::of(out.item()))
    }

    /// The counts items of `labourers` (one consistent `BatchGetItem` per 100), as `counts_many` reads them for
    /// every labourer of a poll at once.
    pub(crate) async fn settled_of_many(&self, labourers: &[&str]) -> StoreResult<HashMap<String, Settled>> {
        let unique: std::collections::BTreeSet<String> = labourers.iter().map(|l| counts_key(l)).collect();
        let unique: Vec<String> = unique.into_iter().collect();
        let mut out = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(100) {
            let keys = KeysAndAttributes::builder()
                .set_keys(Some(
                    chunk
                        .iter()
                        .map(|k| HashMap::from([("labourer_id".to_string(), s(k))]))
                        .collect(),
                ))
                .consistent_read(true)
                .build()
                .map_err(build_err)?;
            let found = self
                .batch_get(HashMap::from([(self.tables.labourers.clone(), keys)]))
                .await?;
            for item in found.into_values().flatten() {
                if let Some(labourer) = labourer_of_counts_item(&item) {
                    out.insert(labourer, Settled::of(Some(&item)));
                }
            }
        }
        Ok(out)
    }

    /// Runs a revival's transaction `moves` (the task's way out of the closed table, closed as dead at `closed_at`;
    /// without one it was in no count) with the update of its labourer's counts item, again if the mark moved
    /// across `closed_at` meanwhile or another transaction held the item.
    pub(crate) async fn revive_counted(
        &self,
        task_id: &str,
        labourer: &str,
        closed_at: Option<i64>,
        moves: Vec<TransactWriteItem>,
    ) -> StoreResult<()> {
        let reason = "was moved by someone else first";
        let Some(closed_at) = closed_at.filter(|_| !labourer.is_empty()) else {
            // Without a labourer or a close time the item is in no index, so in no count.
            return self.transact(task_id, moves, reason).await;
        };
        let mut attempt = 0;
        for _ in 0..TRIES {
            let read = self.settled(labourer).await?;
            let mut items = moves.clone();
            items.push(self.uncount(labourer, &read, closed_at)?);
            match self.transact_reasons(items).await? {
                None => return Ok(()),
                // Only the counts' condition failed: the mark moved across the task since read.
                Some(Cancelled::Conditions(failed))
                    if failed.len() == moves.len() + 1 && failed[..moves.len()].iter().all(|f| !f) => {}
                Some(Cancelled::Conditions(_)) => return Err(StoreError::conflict(task_id, reason)),
                Some(Cancelled::Conflict(_)) => self.back_off(&mut attempt).await?,
            }
        }
        Err(StoreError::conflict(
            task_id,
            "its labourer's closed counts kept changing; revive it again",
        ))
    }

    /// The update of the labourer's counts item for a revival of a task closed as dead at `closed_at`: off the
    /// settled count if it is below the mark read (on the condition that it still is), a new revision either way
    /// (on the condition that the mark is still not past it).
    fn uncount(&self, labourer: &str, read: &Settled, at: i64) -> StoreResult<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.tables.labourers)
            .key("labourer_id", s(counts_key(labourer)))
            .expression_attribute_names("#r", CLOSED_REVISION)
            .expression_attribute_values(":one", n(1));
        update = match revival(read, at) {
            Revival::Settled => update
                .update_expression("SET #d = if_not_exists(#d, :zero) - :one ADD #r :one")
                .condition_expression("#m > :at")
                .expression_attribute_names("#d", DEAD)
                .expression_attribute_names("#m", MARK)
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":at", n(at)),
            Revival::Recent => update
                .update_expression("ADD #r :one")
                .condition_expression("attribute_not_exists(#m) OR #m <= :at")
                .expression_attribute_names("#m", MARK)
                .expression_attribute_values(":at", n(at)),
        };
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(build_err)?)
            .build())
    }
}
