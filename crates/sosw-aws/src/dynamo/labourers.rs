//! The labourers' side of the store ([`LabourerStore`]) on DynamoDB: one item per labourer in `sosw_labourers`,
//! holding three groups of attributes that are each written by one party with `UpdateItem`, never a whole-item
//! put, so they cannot overwrite one another:
//!
//! - the circuit breaker (`dead_in_row`, `trips`, `held_until`, …), written by orchestrators;
//! - an operator's control (`paused_since`, `paused_until`, `pause_reason`, `limit_override`, `control_*`);
//! - the dispatch lease (`lease_holder`, `lease_until`) and the flow state (`adaptive_limit`, `rate_tat`,
//!   `throttled_until`, `throttle_reason`), written only under a condition on the lease. DynamoDB evaluates a
//!   condition and writes under a per-item lock, so of two orchestrators at most one holds the lease.
//!
//! Python sosw never reads this table.

use super::*;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use sosw_core::flow::{DispatchRecord, FlowState, LabourerControl, Pause, Reports};
use sosw_core::ports::LabourerStore;

const BREAKER: &[&str] = &["dead_in_row", "trips", "held_until", "held_since", "reason", "suspect"];
const CONTROL: &[&str] = &[
    "paused_since",
    "paused_until",
    "pause_reason",
    "limit_override",
    "control_updated_at",
    "control_updated_by",
];
const FLOW: &[&str] = &[
    "adaptive_limit",
    "adaptive_at",
    "rate_tat",
    "claimed_at",
    "throttled_until",
    "throttle_reason",
    "duration_baseline_ms",
];
/// The workers' reports: only ever `ADD`ed to (by reports, and negatively by a lease's give-back), so that
/// concurrent additions all count.
const REPORTS: [&str; 4] = [
    "reports_completed",
    "reports_failed",
    "reports_timed",
    "reports_duration_ms",
];

fn report_counts(r: &Reports) -> [u64; 4] {
    [r.completed, r.failed, r.timed, r.duration_ms]
}

/// `SET` the given attributes, `REMOVE` the rest of `group`.
fn set_remove(
    req: UpdateItemFluentBuilder,
    group: &[&str],
    values: Vec<(&str, AttributeValue)>,
) -> UpdateItemFluentBuilder {
    set_remove_add(req, group, values, Vec::new())
}

/// `SET` the given attributes, `REMOVE` the rest of `group`, and `ADD` the numbers `adds` (to attributes outside
/// `group`).
fn set_remove_add(
    mut req: UpdateItemFluentBuilder,
    group: &[&str],
    values: Vec<(&str, AttributeValue)>,
    adds: Vec<(&str, String)>,
) -> UpdateItemFluentBuilder {
    let mut sets = Vec::new();
    let mut removes = Vec::new();
    for (i, name) in group.iter().enumerate() {
        req = req.expression_attribute_names(format!("#a{i}"), *name);
        match values.iter().find(|(k, _)| k == name) {
            Some((_, v)) => {
                sets.push(format!("#a{i} = :a{i}"));
                req = req.expression_attribute_values(format!(":a{i}"), v.clone());
            }
            None => removes.push(format!("#a{i}")),
        }
    }
    let mut expr = String::new();
    if !sets.is_empty() {
        expr.push_str(&format!("SET {}", sets.join(", ")));
    }
    if !removes.is_empty() {
        expr.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    let mut added = Vec::new();
    for (i, (name, number)) in adds.into_iter().enumerate() {
        req = req
            .expression_attribute_names(format!("#n{i}"), name)
            .expression_attribute_values(format!(":n{i}"), AttributeValue::N(number));
        added.push(format!("#n{i} :n{i}"));
    }
    if !added.is_empty() {
        expr.push_str(&format!(" ADD {}", added.join(", ")));
    }
    req.update_expression(expr.trim())
}

fn millis(t: Option<Time>) -> Option<AttributeValue> {
    t.map(|t| n(t.millis()))
}

fn time_of(item: &Item, key: &str) -> Option<Time> {
    get_i64(item, key).map(Time::from_millis)
}

fn count_of(item: &Item, key: &str) -> Option<u32> {
    get_i64(item, key).and_then(|v| u32::try_from(v).ok())
}

fn id_of(item: &Item) -> StoreResult<String> {
    get_s_attr(item, "labourer_id").ok_or_else(|| StoreError::Backend("labourer item without `labourer_id`".into()))
}

fn flow_of(item: &Item) -> FlowState {
    let stored = |key: &str| get_i64(item, key).and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    FlowState {
        reports: Reports {
            completed: stored("reports_completed"),
            failed: stored("reports_failed"),
            timed: stored("reports_timed"),
            duration_ms: stored("reports_duration_ms"),
        },
        reports_learned: Reports::default(),
        duration_baseline_ms: get_i64(item, "duration_baseline_ms").and_then(|v| u64::try_from(v).ok()),
        adaptive_limit: count_of(item, "adaptive_limit"),
        adaptive_at: time_of(item, "adaptive_at"),
        rate_tat: time_of(item, "rate_tat"),
        claimed_at: time_of(item, "claimed_at"),
        throttled_until: time_of(item, "throttled_until"),
        throttle_reason: get_s_attr(item, "throttle_reason"),
    }
}

impl DynamoStore {
    /// Every item of the labourers' table, by labourer id: one per labourer at most (configured, or with tasks), and
    /// the registry's marker (`registry.rs`): a scan is cheap.
    pub(crate) async fn labourer_items(&self) -> StoreResult<Vec<Item>> {
        // Consistent: a pause must be seen by the next pass, and a control change must start from the latest one.
        let r = Read {
            table: self.tables.labourers.clone(),
            consistent: true,
            ..Read::default()
        };
        let mut items = self.read(r).await?.0;
        items.sort_by_key(|item| get_s_attr(item, "labourer_id"));
        Ok(items)
    }

    pub(crate) fn update_labourer(&self, labourer_id: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.tables.labourers)
            .key("labourer_id", s(labourer_id))
    }

    /// Removes a group of attributes from an existing item, creating nothing.
    async fn remove_group(&self, labourer_id: &str, group: &[&str]) -> StoreResult<()> {
        let out = set_remove(self.update_labourer(labourer_id), group, Vec::new())
            .condition_expression("attribute_exists(labourer_id)")
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if failed_condition(&e) => Ok(()),
            Err(e) => Err(sdk_err(e)),
        }
    }
}

#[async_trait]
impl LabourerStore for DynamoStore {
    async fn labourer_states(&self) -> StoreResult<Vec<LabourerState>> {
        self.labourer_items()
            .await?
            .iter()
            .filter(|item| item.contains_key("trips"))
            .map(|item| {
                Ok(LabourerState {
                    labourer_id: id_of(item)?,
                    dead_in_row: count_of(item, "dead_in_row").unwrap_or(0),
                    trips: count_of(item, "trips").unwrap_or(0),
                    held_until: time_of(item, "held_until"),
                    held_since: time_of(item, "held_since"),
                    reason: get_s_attr(item, "reason"),
                    suspect: get_s_attr(item, "suspect"),
                })
            })
            .collect()
    }

    async fn save_labourer_state(&self, state: &LabourerState) -> StoreResult<()> {
        let values = [
            ("dead_in_row", Some(n(state.dead_in_row))),
            ("trips", Some(n(state.trips))),
            ("held_until", millis(state.held_until)),
            ("held_since", millis(state.held_since)),
            ("reason", state.reason.as_deref().map(s)),
            ("suspect", state.suspect.as_deref().map(s)),
        ];
        let values = values.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        set_remove(self.update_labourer(&state.labourer_id), BREAKER, values)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn clear_labourer_state(&self, labourer_id: &str) -> StoreResult<()> {
        self.remove_group(labourer_id, BREAKER).await
    }

    async fn labourer_controls(&self) -> StoreResult<Vec<LabourerControl>> {
        self.labourer_items()
            .await?
            .iter()
            .filter(|item| item.contains_key("control_updated_at"))
            .map(|item| {
                Ok(LabourerControl {
                    labourer_id: id_of(item)?,
                    paused: time_of(item, "paused_since").map(|since| Pause {
                        since,
                        until: time_of(item, "paused_until"),
                        reason: get_s_attr(item, "pause_reason"),
                    }),
                    limit: count_of(item, "limit_override"),
                    updated_at: time_of(item, "control_updated_at").unwrap_or(Time::from_millis(0)),
                    updated_by: get_s_attr(item, "control_updated_by").unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn save_labourer_control(&self, control: &LabourerControl) -> StoreResult<()> {
        if control.is_empty() {
            return self.remove_group(&control.labourer_id, CONTROL).await;
        }
        let pause = control.paused.as_ref();
        let values = [
            ("paused_since", millis(pause.map(|p| p.since))),
            ("paused_until", millis(pause.and_then(|p| p.until))),
            ("pause_reason", pause.and_then(|p| p.reason.as_deref()).map(s)),
            ("limit_override", control.limit.map(n)),
            ("control_updated_at", Some(n(control.updated_at.millis()))),
            ("control_updated_by", Some(s(&control.updated_by))),
        ];
        let values = values.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        set_remove(self.update_labourer(&control.labourer_id), CONTROL, values)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn take_dispatch(
        &self,
        labourer_id: &str,
        holder: &str,
        now: Time,
        until: Time,
    ) -> StoreResult<Option<FlowState>> {
        let out = self
            .update_labourer(labourer_id)
            .update_expression("SET #h = :h, #u = :u")
            .condition_expression("attribute_not_exists(#h) OR #h = :h OR #u <= :now")
            .expression_attribute_names("#h", "lease_holder")
            .expression_attribute_names("#u", "lease_until")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":u", n(until.millis()))
            .expression_attribute_values(":now", n(now.millis()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => Ok(Some(out.attributes.as_ref().map(flow_of).unwrap_or_default())),
            Err(e) if failed_condition(&e) => Ok(None),
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn give_back_dispatch(&self, labourer_id: &str, holder: &str, flow: &FlowState) -> StoreResult<bool> {
        let values = [
            ("adaptive_limit", flow.adaptive_limit.map(n)),
            ("adaptive_at", millis(flow.adaptive_at)),
            ("rate_tat", millis(flow.rate_tat)),
            ("claimed_at", millis(flow.claimed_at)),
            ("throttled_until", millis(flow.throttled_until)),
            ("throttle_reason", flow.throttle_reason.as_deref().map(s)),
            ("duration_baseline_ms", flow.duration_baseline_ms.map(n)),
        ];
        let values = values.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        let group: Vec<&str> = FLOW
            .iter()
            .chain(["lease_holder", "lease_until"].iter())
            .copied()
            .collect();
        let learned = report_counts(&flow.reports_learned);
        let subtract = REPORTS
            .into_iter()
            .zip(learned)
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| (k, format!("-{v}")))
            .collect();
        let out = set_remove_add(self.update_labourer(labourer_id), &group, values, subtract)
            .condition_expression("#h0 = :holder")
            .expression_attribute_names("#h0", "lease_holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if failed_condition(&e) => Ok(false),
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn add_reports(&self, labourer_id: &str, reports: &Reports) -> StoreResult<()> {
        let adds = REPORTS
            .into_iter()
            .zip(report_counts(reports))
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        set_remove_add(self.update_labourer(labourer_id), &[], Vec::new(), adds)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn dispatch_records(&self) -> StoreResult<Vec<DispatchRecord>> {
        self.labourer_items()
            .await?
            .iter()
            .filter(|item| {
                item.contains_key("lease_holder") || FLOW.iter().chain(REPORTS.iter()).any(|k| item.contains_key(*k))
            })
            .map(|item| {
                Ok(DispatchRecord {
                    labourer_id: id_of(item)?,
                    holder: get_s_attr(item, "lease_holder"),
                    lease_until: time_of(item, "lease_until"),
                    flow: flow_of(item),
                })
            })
            .collect()
    }
}
