//! The labourer registry: which labourers have tasks, without reading the task tables.
//!
//! DynamoDB cannot list the distinct labourer ids of a table without scanning all of it. A scan's cost grows with
//! the tasks stored, and `status`, `/metrics` and the dashboard ask on every poll. So each labourer's item in
//! `sosw_labourers` carries `registered_at`, and [`TaskStore::labourer_ids`] reads only that small table.
//!
//! - **Creating tasks registers their labourers** before a task is written: a crash in between leaves a registered
//!   labourer without tasks, never the reverse. A store registers a labourer again at most every
//!   [`REREGISTER_MILLIS`], so a process that creates tasks all day writes one small update per labourer every ten
//!   minutes.
//! - **Tasks this store did not create** (Python sosw's `TaskManager`, or sosw-rs before the registry) are found by
//!   a rescan ([`TaskStore::rescan_labourers`], `sosw labourer rescan`): a consistent Scan of each of the three task
//!   tables, reading their `labourer_id` alone. It registers every labourer found. A registered labourer it finds no
//!   task of is only marked (`unseen_at`); a later rescan, at least [`UNREGISTER_GRACE_MILLIS`] after the mark,
//!   that finds none either unregisters it, unless it registered within that time. (The three Scans are not one
//!   snapshot: a task moving between tables while they run can be missed once, never twice an hour apart.)
//! - **The first `labourer_ids` on tables never scanned** rescans by itself (tables from before the registry, or
//!   filled by Python sosw), and leaves the marker item [`MARKER`]. Concurrent callers share that one rescan, which
//!   runs on as its own task if they give up waiting (a scrape's timeout), so that it finishes once.
//!
//! What a rescan cannot see between two runs: a labourer that is not in the config and whose tasks only Python sosw
//! creates. `status` lists every configured labourer anyway.

use super::*;

/// `registered_at` (milliseconds): the labourer has tasks, as of then.
const REGISTERED: &str = "registered_at";

/// `unseen_at` (milliseconds): a rescan then found no task of this registered labourer.
const UNSEEN: &str = "unseen_at";

/// The key of the item that says the task tables were scanned (`scanned_at`, milliseconds; 0 for the first scan,
/// which has no clock). No labourer can have this id: the configuration refuses control characters in one.
pub(crate) const MARKER: &str = "\u{0}sosw labourer registry";

/// How often one store writes a labourer's registration again while it keeps creating its tasks.
pub const REREGISTER_MILLIS: i64 = 10 * 60 * 1000;

/// How long after its last registration, and after a rescan first found no task of it, a labourer stays
/// registered.
pub const UNREGISTER_GRACE_MILLIS: i64 = 60 * 60 * 1000;

/// The registered labourers among the labourers' items (which come sorted by id).
fn registered(items: &[Item]) -> impl Iterator<Item = (String, &Item)> {
    items
        .iter()
        .filter(|i| i.contains_key(REGISTERED))
        .filter_map(|i| Some((get_s_attr(i, "labourer_id")?, i)))
        .filter(|(id, _)| id != MARKER)
}

fn scanned(items: &[Item]) -> bool {
    items
        .iter()
        .any(|i| get_s_attr(i, "labourer_id").as_deref() == Some(MARKER))
}

impl DynamoStore {
    /// Registers `labourers` as having tasks at `now`, except those this store registered less than
    /// [`REREGISTER_MILLIS`] ago. The update only moves `registered_at` forward.
    pub(crate) async fn register_labourers<'a>(
        &self,
        labourers: impl IntoIterator<Item = &'a str>,
        now: Time,
    ) -> StoreResult<()> {
        let due: Vec<&str> = {
            let known = self.registered.lock().unwrap_or_else(|e| e.into_inner());
            labourers
                .into_iter()
                .filter(|l| {
                    known
                        .get(*l)
                        .is_none_or(|at| now.millis().saturating_sub(*at) >= REREGISTER_MILLIS)
                })
                .collect()
        };
        for labourer in due {
            let out = self
                .update_labourer(labourer)
                .update_expression("SET #r = :at REMOVE #u")
                .condition_expression("attribute_not_exists(#r) OR #r < :at")
                .expression_attribute_names("#r", REGISTERED)
                .expression_attribute_names("#u", UNSEEN)
                .expression_attribute_values(":at", n(now.millis()))
                .send()
                .await;
            match out {
                Ok(_) => {}
                Err(e) if failed_condition(&e) => {} // registered later than `now` already
                Err(e) => return Err(sdk_err(e)),
            }
            let mut known = self.registered.lock().unwrap_or_else(|e| e.into_inner());
            known.insert(labourer.to_string(), now.millis());
        }
        Ok(())
    }

    /// The registered labourers, in order; rescans first if the task tables were never scanned (one rescan for all
    /// callers, which finishes even if they stop waiting).
    pub(crate) async fn registered_labourers(&self) -> StoreResult<Vec<String>> {
        let items = self.labourer_items().await?;
        if scanned(&items) {
            return Ok(registered(&items).map(|(id, _)| id).collect());
        }
        let turn = self.first_rescan.clone().lock_owned().await;
        let items = self.labourer_items().await?;
        if scanned(&items) {
            return Ok(registered(&items).map(|(id, _)| id).collect());
        }
        let store = self.clone();
        let rescan = tokio::spawn(async move {
            let _turn = turn;
            let found = store.scanned_labourer_ids().await?;
            // The answer is the scan's; a principal that may read but not write the tables (a read-only dashboard)
            // still gets it, and the next call scans again, as before the registry.
            if let Err(e) = store.record_rescan(&found, None).await {
                tracing::warn!(error = %e, "the labourers with tasks were found, but not recorded in the registry");
            }
            Ok(found)
        });
        rescan
            .await
            .map_err(|e| StoreError::Backend(format!("the first rescan of the labourers stopped: {e}").into()))?
    }

    /// Scans the task tables for their labourers and registers each one found (clearing a mark of a previous
    /// miss). A registered labourer with no task is marked unseen, or unregistered if it was marked unseen and
    /// registered over [`UNREGISTER_GRACE_MILLIS`] before `now`. Returns the labourers found.
    pub(crate) async fn rescan(&self, now: Time) -> StoreResult<Vec<String>> {
        let found = self.scanned_labourer_ids().await?;
        self.record_rescan(&found, Some(now)).await?;
        self.recount_closed(&found, now).await?;
        Ok(found)
    }

    /// What a rescan that `found` these labourers (sorted) writes; without `now` (the first, automatic rescan) it
    /// only registers them and leaves the marker.
    async fn record_rescan(&self, found: &[String], now: Option<Time>) -> StoreResult<()> {
        let at = now.map_or(0, Time::millis);
        let registrations: Vec<_> = found
            .iter()
            .map(|labourer| {
                self.update_labourer(labourer)
                    .update_expression("SET #r = if_not_exists(#r, :at) REMOVE #u")
                    .expression_attribute_names("#r", REGISTERED)
                    .expression_attribute_names("#u", UNSEEN)
                    .expression_attribute_values(":at", n(at))
            })
            .collect();
        let results: Vec<_> = stream::iter(registrations)
            .map(|request| request.send())
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().try_for_each(|r| r.map(drop).map_err(sdk_err))?;
        if let Some(now) = now {
            let cutoff = n(now.millis().saturating_sub(UNREGISTER_GRACE_MILLIS));
            let items = self.labourer_items().await?;
            let missed: Vec<(String, bool)> = registered(&items)
                .filter(|(id, _)| found.binary_search(id).is_err())
                .map(|(id, item)| (id, item.contains_key(UNSEEN)))
                .collect();
            for (labourer, marked) in missed {
                // The conditions are checked where the item is: a registration since the read wins.
                let request = self
                    .update_labourer(&labourer)
                    .expression_attribute_names("#r", REGISTERED)
                    .expression_attribute_names("#u", UNSEEN);
                let request = if marked {
                    request
                        .update_expression("REMOVE #r, #u")
                        .condition_expression("#r < :cutoff AND #u < :cutoff")
                        .expression_attribute_values(":cutoff", cutoff.clone())
                } else {
                    request
                        .update_expression("SET #u = :now")
                        .condition_expression("attribute_exists(#r) AND attribute_not_exists(#u)")
                        .expression_attribute_values(":now", n(now.millis()))
                };
                match request.send().await {
                    Ok(_) if marked => {
                        self.registered
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&labourer);
                    }
                    Ok(_) => {}
                    Err(e) if failed_condition(&e) => {} // registered or marked since: left as it is
                    Err(e) => return Err(sdk_err(e)),
                }
            }
        }
        self.update_labourer(MARKER)
            .update_expression("SET #s = :at")
            .expression_attribute_names("#s", "scanned_at")
            .expression_attribute_values(":at", n(at))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    /// Every labourer with a task in any table, in order, by a consistent Scan of each table for its
    /// `labourer_id` alone (page by page, keeping only the distinct ids: memory grows with the labourers).
    async fn scanned_labourer_ids(&self) -> StoreResult<Vec<String>> {
        let mut ids = std::collections::BTreeSet::new();
        for table in [&self.tables.tasks, &self.tables.retry, &self.tables.closed] {
            let r = Read {
                table: table.clone(),
                projection: Some("#l".into()),
                names: vec![("#l", "labourer_id")],
                consistent: true,
                ..Read::default()
            };
            self.read_pages(r, |page| {
                for item in page {
                    if let Some(AttributeValue::S(l)) = item.get("labourer_id") {
                        if !ids.contains(l) {
                            ids.insert(l.clone());
                        }
                    }
                }
            })
            .await?;
        }
        Ok(ids.into_iter().collect())
    }
}
