//! Closed tasks counted without reading the whole archive.
//!
//! The closed table only grows, and DynamoDB counts a range of an index by reading all of it: with a million closed
//! tasks, every `status`, `/metrics` scrape and dashboard poll read a million index entries (seconds, and about
//! 18,000 read units each time). So a labourer's item in `sosw_labourers` keeps what is settled:
//!
//! - `closed_counted_to` (the mark, whole seconds) and the labourer's closed tasks counted below it,
//!   `closed_completed_counted` and `closed_dead_counted`;
//! - `closed_revision`, bumped by every revival (the one move out of the closed table).
//!
//! A count reads the labourer's item, then counts only what was closed from the mark on. A task is settled
//! [`SETTLE_SECS`] after its `closed_at` (longer than a pass takes to write the moves it stamped, and than the closed
//! index takes to show a write): when the mark lags the settled time by [`STEP_SECS`] or more, the count also moves
//! it, adding what it counted in between. That write is conditional on the mark and revision it read, so two
//! counters never add the same range twice and a revival during the count makes it give up its write (its answer
//! is still right). Read-only credentials only lose the write: the count stays right, as slow as before.
//!
//! A revival takes the task out of the settled counts in its own transaction, conditional on the mark it read, so it
//! cannot race a mark moving past it. What is not seen: a task written into the closed table with a `closed_at`
//! already settled (a writer whose clock is more than [`SETTLE_SECS`] behind), and closed items deleted by other
//! programs. `sosw labourer rescan` counts everything again.

use super::*;
use aws_sdk_dynamodb::types::Update;

/// How long after its `closed_at` a closed task is counted for good.
pub const SETTLE_SECS: i64 = 15 * 60;

/// The mark moves when it lags the settled time by at least this much (so a count writes at most every 5 minutes).
pub const STEP_SECS: i64 = 5 * 60;

const MARK: &str = "closed_counted_to";
const COMPLETED: &str = "closed_completed_counted";
const DEAD: &str = "closed_dead_counted";
const REVISION: &str = "closed_revision";

/// How many times a revival reads the counts again when they moved under it.
const REVIVE_TRIES: usize = 5;

/// What a labourer's item says of its closed tasks before the mark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Closed tasks with `closed_at` below the mark are in `completed` and `dead`; `None`: nothing counted yet.
    pub mark: Option<i64>,
    pub completed: u64,
    pub dead: u64,
    pub revision: Option<i64>,
}

impl Settled {
    fn of(item: Option<&Item>) -> Settled {
        let Some(item) = item else {
            return Settled::default();
        };
        // A count that drifted below zero (closed items deleted by another program) reads as zero.
        let count = |key| get_i64(item, key).map_or(0, |c| u64::try_from(c).unwrap_or(0));
        Settled {
            mark: get_i64(item, MARK),
            completed: count(COMPLETED),
            dead: count(DEAD),
            revision: get_i64(item, REVISION),
        }
    }
}

/// The mark a count at `now` (seconds) moves the settled counts to, if it moves them: `now - SETTLE_SECS` when
/// nothing is counted yet or the mark lags it by [`STEP_SECS`] or more.
pub(crate) fn next_mark(mark: Option<i64>, now: i64) -> Option<i64> {
    let settled = now.saturating_sub(SETTLE_SECS);
    match mark {
        Some(m) if settled.saturating_sub(m) < STEP_SECS => None,
        _ => Some(settled),
    }
}

/// A range of `closed_at`: `[from, to)`, either end open.
#[derive(Debug, Clone, Copy)]
struct Range {
    from: Option<i64>,
    to: Option<i64>,
}

impl DynamoStore {
    /// The labourer's (completed, dead) closed tasks at `now` (seconds), moving the settled counts forward when they
    /// lag. `recount` ignores what is stored and counts the whole archive (then stores it), as a rescan does.
    pub(crate) async fn closed_counts(&self, labourer: &str, now: i64, recount: bool) -> StoreResult<(u64, u64)> {
        let stored = Settled::of(self.labourer_item(labourer).await?.as_ref());
        let base = if recount {
            Settled {
                mark: None,
                completed: 0,
                dead: 0,
                ..stored
            }
        } else {
            stored
        };
        let next = if recount {
            Some(now.saturating_sub(SETTLE_SECS))
        } else {
            next_mark(base.mark, now)
        };
        // From the mark on: up to the next mark and after it when the mark moves, else all of it.
        let (between, after) = match next {
            Some(next) => (
                Range {
                    from: base.mark,
                    to: Some(next),
                },
                Some(Range {
                    from: Some(next),
                    to: None,
                }),
            ),
            None => (
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
        if let Some(next) = next {
            // Nothing closed and nothing stored: no item to write (a labourer without tasks stays without one).
            let anything = stored != Settled::default() || settled_completed + settled_dead + c_after + d_after > 0;
            if anything {
                self.settle(labourer, &stored, next, settled_completed, settled_dead, recount)
                    .await?;
            }
        }
        Ok((
            settled_completed.saturating_add(c_after),
            settled_dead.saturating_add(d_after),
        ))
    }

    /// Counts the closed tasks of the `found` labourers, and of every labourer with stored counts, again from the
    /// whole archive (a rescan's second part): what other programs deleted from the closed table or wrote into
    /// its settled past is counted right from then on.
    pub(crate) async fn recount_closed(&self, found: &[String], now: Time) -> StoreResult<()> {
        let mut labourers: std::collections::BTreeSet<String> = found.iter().cloned().collect();
        for item in self.labourer_items().await? {
            if item.contains_key(MARK) {
                labourers.extend(get_s_attr(&item, "labourer_id"));
            }
        }
        let recounts: Vec<_> = labourers
            .iter()
            .map(|l| self.closed_counts(l, now.secs(), true))
            .collect();
        stream::iter(recounts)
            .buffer_unordered(COUNTING_LABOURERS)
            .try_collect::<Vec<_>>()
            .await
            .map(drop)
    }

    /// The labourer's closed (completed, dead) tasks with `closed_at` in `r`, counted on the closed index.
    async fn count_closed_in(&self, labourer: &str, r: Range) -> StoreResult<(u64, u64)> {
        let read = |done: bool| {
            let mut values = vec![(":s", s(closed_status(labourer, done)))];
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
                // `closed_at` is whole seconds (Python sosw's `int(time.time())`, and ours).
                (Some(from), Some(to)) => {
                    values.push((":from", n(from)));
                    values.push((":last", n(to.saturating_sub(1))));
                    "#s = :s AND #t BETWEEN :from AND :last"
                }
            };
            Read {
                table: self.tables.closed.clone(),
                index: Some(self.tables.closed_index.clone()),
                key: Some(key.into()),
                names: vec![("#s", "labourer_id_task_status"), ("#t", "closed_at")],
                values,
                count: true,
                ..Read::default()
            }
        };
        if matches!((r.from, r.to), (Some(from), Some(to)) if from >= to) {
            return Ok((0, 0));
        }
        let (completed, dead) = futures::try_join!(self.read(read(true)), self.read(read(false)))?;
        Ok((completed.1, dead.1))
    }

    /// Stores the counts below `mark`, if the item still holds what `read` says (else another count or a revival
    /// came first, and this one's write is dropped). Only a recount reports a failed write.
    async fn settle(
        &self,
        labourer: &str,
        read: &Settled,
        mark: i64,
        completed: u64,
        dead: u64,
        recount: bool,
    ) -> StoreResult<()> {
        let (condition, values) = unchanged(read);
        let mut request = self
            .update_labourer(labourer)
            .update_expression("SET #m = :mark, #c = :completed, #d = :dead")
            .condition_expression(condition)
            .expression_attribute_names("#m", MARK)
            .expression_attribute_names("#c", COMPLETED)
            .expression_attribute_names("#d", DEAD)
            .expression_attribute_names("#r", REVISION)
            .expression_attribute_values(":mark", n(mark))
            .expression_attribute_values(":completed", n(saturating_i64(completed)))
            .expression_attribute_values(":dead", n(saturating_i64(dead)));
        for (k, v) in values {
            request = request.expression_attribute_values(k, v);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if failed_condition(&e) && !recount => Ok(()),
            Err(e) if !recount => {
                tracing::debug!(labourer, "closed counts not stored: {}", sdk_err(e));
                Ok(())
            }
            Err(e) if failed_condition(&e) => Err(StoreError::conflict(
                labourer,
                "closed counts changed during the recount (a revival); rescan again",
            )),
            Err(e) => Err(sdk_err(e)),
        }
    }

    /// The labourer's item in `sosw_labourers`, read consistently.
    async fn labourer_item(&self, labourer: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.labourers)
            .key("labourer_id", s(labourer))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(out.item().cloned())
    }

    /// Runs a revival's transaction `moves` (the task's way out of the closed table, closed as dead at `closed_at`;
    /// without one it was in no count) with the update that takes it out of the settled counts, reading them again if they moved meanwhile.
    pub(crate) async fn revive_counted(
        &self,
        task_id: &str,
        labourer: &str,
        closed_at: Option<i64>,
        moves: Vec<TransactWriteItem>,
    ) -> StoreResult<()> {
        let reason = "was moved by someone else first";
        for _ in 0..REVIVE_TRIES {
            let read = Settled::of(self.labourer_item(labourer).await?.as_ref());
            let mut items = moves.clone();
            items.push(self.uncount(labourer, &read, closed_at)?);
            match self.transact_reasons(items).await? {
                None => return Ok(()),
                // Only the counts' condition failed: they moved since read; read them again.
                Some(reasons) if reasons.len() == moves.len() + 1 && reasons[..moves.len()].iter().all(|r| !r) => {
                    continue
                }
                Some(_) => return Err(StoreError::conflict(task_id, reason)),
            }
        }
        Err(StoreError::conflict(
            task_id,
            "the closed counts kept changing; try the revival again",
        ))
    }

    /// The update of the labourer's item for a revival of a task closed as dead at `closed_at`: off the settled
    /// count if it is below the mark read, and a new revision either way, on the condition that the item is as read.
    fn uncount(&self, labourer: &str, read: &Settled, closed_at: Option<i64>) -> StoreResult<TransactWriteItem> {
        let (condition, values) = unchanged(read);
        let settled = matches!((read.mark, closed_at), (Some(m), Some(at)) if at < m);
        let mut names = vec![("#m", MARK), ("#r", REVISION)];
        if settled {
            names.push(("#d", DEAD));
        }
        let mut update = Update::builder()
            .table_name(&self.tables.labourers)
            .key("labourer_id", s(labourer))
            .update_expression(if settled {
                "SET #d = #d - :one ADD #r :one"
            } else {
                "ADD #r :one"
            })
            .condition_expression(condition);
        for (k, v) in names {
            update = update.expression_attribute_names(k, v);
        }
        for (k, v) in values {
            update = update.expression_attribute_values(k, v);
        }
        let update = update
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

/// The condition that a labourer's item still has the mark and revision of `read` (names `#m`, `#r`).
fn unchanged(read: &Settled) -> (String, Vec<(&'static str, AttributeValue)>) {
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

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn the_mark_moves_when_it_lags_the_settled_time_by_a_step() {
        let settled = NOW - SETTLE_SECS;
        let cases = [
            (None, Some(settled), "nothing counted yet"),
            (Some(settled), None, "up to date"),
            (Some(settled - STEP_SECS + 1), None, "less than a step behind"),
            (Some(settled - STEP_SECS), Some(settled), "a step behind"),
            (Some(0), Some(settled), "far behind"),
            (Some(settled + 3600), None, "ahead (another counter's clock runs fast)"),
            (Some(i64::MIN), Some(settled), "the smallest mark"),
        ];
        for (mark, expected, why) in cases {
            assert_eq!(next_mark(mark, NOW), expected, "{why}");
        }
        assert_eq!(next_mark(None, i64::MIN), Some(i64::MIN), "no overflow");
        assert_eq!(next_mark(Some(i64::MAX), i64::MAX), None, "no overflow");
    }

    #[test]
    fn stored_counts_read_back_and_never_below_zero() {
        let item = Item::from([
            (MARK.to_string(), n(NOW)),
            (COMPLETED.to_string(), n(7)),
            (DEAD.to_string(), n(-1)),
            (REVISION.to_string(), n(3)),
        ]);
        assert_eq!(
            Settled::of(Some(&item)),
            Settled {
                mark: Some(NOW),
                completed: 7,
                dead: 0,
                revision: Some(3)
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
        let (condition, values) = unchanged(&Settled {
            mark: Some(5),
            revision: Some(2),
            ..Settled::default()
        });
        assert_eq!(condition, "#m = :read_mark AND #r = :read_revision");
        assert_eq!(values, vec![(":read_mark", n(5)), (":read_revision", n(2))]);
    }
}
