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
//!   a rescan ([`TaskStore::rescan_labourers`], `sosw labourer rescan`): one consistent Scan of the three task
//!   tables, reading their `labourer_id` alone. It registers every labourer found and unregisters those it found no
//!   task of, unless they registered within [`UNREGISTER_GRACE_MILLIS`] (their tasks may be being written).
//! - **The first `labourer_ids` on tables never scanned** rescans by itself (tables from before the registry, or
//!   filled by Python sosw), and leaves the marker item [`MARKER`] so that it happens once.
//!
//! What a rescan cannot see between two runs: a labourer that is not in the config and whose tasks only Python sosw
//! creates. `status` lists every configured labourer anyway.

use super::*;

/// `registered_at` (milliseconds): the labourer has tasks, as of then.
const REGISTERED: &str = "registered_at";

/// The key of the item that says the task tables were scanned (`scanned_at`, milliseconds; 0 for the first scan,
/// which has no clock). No labourer can have this id: the configuration refuses control characters in one.
pub(crate) const MARKER: &str = "\u{0}sosw labourer registry";

/// How often one store writes a labourer's registration again while it keeps creating its tasks.
pub const REREGISTER_MILLIS: i64 = 10 * 60 * 1000;

/// How long after its last registration a labourer stays registered even when a rescan finds no task of it.
pub const UNREGISTER_GRACE_MILLIS: i64 = 60 * 60 * 1000;

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
                .client
                .update_item()
                .table_name(&self.tables.labourers)
                .key("labourer_id", s(labourer))
                .update_expression("SET #r = :at")
                .condition_expression("attribute_not_exists(#r) OR #r < :at")
                .expression_attribute_names("#r", REGISTERED)
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

    /// The registered labourers, in order; rescans first if the task tables were never scanned.
    pub(crate) async fn registered_labourers(&self) -> StoreResult<Vec<String>> {
        let items = self.labourer_items().await?;
        if !items
            .iter()
            .any(|i| get_s_attr(i, "labourer_id").as_deref() == Some(MARKER))
        {
            return self.rescan(None).await;
        }
        Ok(items
            .iter()
            .filter(|i| i.contains_key(REGISTERED))
            .filter_map(|i| get_s_attr(i, "labourer_id"))
            .filter(|id| id != MARKER)
            .collect())
    }

    /// Scans the task tables for their labourers, registers each one found and, given `now`, unregisters those
    /// with no task that registered over [`UNREGISTER_GRACE_MILLIS`] before `now`. Returns the labourers found.
    pub(crate) async fn rescan(&self, now: Option<Time>) -> StoreResult<Vec<String>> {
        let found = self.scanned_labourer_ids().await?;
        let at = now.map_or(0, Time::millis);
        let registrations: Vec<_> = found
            .iter()
            .map(|labourer| {
                self.update_labourer(labourer)
                    .update_expression("SET #r = if_not_exists(#r, :at)")
                    .expression_attribute_names("#r", REGISTERED)
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
            let cutoff = now.millis().saturating_sub(UNREGISTER_GRACE_MILLIS);
            let gone: Vec<String> = self
                .labourer_items()
                .await?
                .iter()
                .filter(|i| i.contains_key(REGISTERED))
                .filter_map(|i| get_s_attr(i, "labourer_id"))
                .filter(|id| id != MARKER && found.binary_search(id).is_err())
                .collect();
            for labourer in gone {
                let out = self
                    .update_labourer(&labourer)
                    .update_expression("REMOVE #r")
                    .condition_expression("#r < :cutoff")
                    .expression_attribute_names("#r", REGISTERED)
                    .expression_attribute_values(":cutoff", n(cutoff))
                    .send()
                    .await;
                match out {
                    Ok(_) => {}
                    Err(e) if failed_condition(&e) => {} // registered within the grace: its tasks may be coming
                    Err(e) => return Err(sdk_err(e)),
                }
                self.registered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&labourer);
            }
        }
        self.update_labourer(MARKER)
            .update_expression("SET #s = :at")
            .expression_attribute_names("#s", "scanned_at")
            .expression_attribute_values(":at", n(at))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(found)
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
