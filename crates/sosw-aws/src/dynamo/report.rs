//! Worker reports: the one conditional update that merges a report into a live or retry item; heartbeats.

use super::*;

pub(crate) fn merge_report(item: &mut Item, report: &WorkerReport) {
    for (k, v) in &report.stats {
        item.insert(format!("stat_{k}"), item::json_to_attr(v));
    }
    for (k, v) in &report.result {
        item.insert(format!("result_{k}"), item::json_to_attr(v));
    }
}

/// DynamoDB's limit on an update expression.
const MAX_EXPRESSION_BYTES: usize = 4096;

/// A report whose every value DynamoDB can store, or the refusal naming the first that it cannot.
fn storable(report: &WorkerReport) -> StoreResult<()> {
    let attributes = [("stat_", &report.stats), ("result_", &report.result)]
        .into_iter()
        .flat_map(|(prefix, map)| map.iter().map(move |(k, v)| (prefix, k, v)));
    for (prefix, k, v) in attributes {
        if let Some(why) = item::unstorable(v) {
            return Err(StoreError::Invalid(format!(
                "the report's `{prefix}{k}`: {why}; nothing was recorded"
            )));
        }
    }
    Ok(())
}

/// The `SET` clauses of a worker report: its `stat_<k>` / `result_<k>` attributes, and the revision bump.
pub(crate) fn report_updates(
    report: &WorkerReport,
    names: &mut HashMap<String, String>,
    values: &mut HashMap<String, AttributeValue>,
) -> Vec<String> {
    names.insert("#rev".into(), REVISION.into());
    values.insert(":rev_zero".into(), n(0));
    values.insert(":rev_one".into(), n(1));
    let mut sets = vec!["#rev = if_not_exists(#rev, :rev_zero) + :rev_one".to_string()];
    for (i, (prefix, map)) in [("stat_", &report.stats), ("result_", &report.result)]
        .into_iter()
        .enumerate()
    {
        for (j, (k, v)) in map.iter().enumerate() {
            let (name, value) = (format!("#r{i}_{j}"), format!(":r{i}_{j}"));
            names.insert(name.clone(), format!("{prefix}{k}"));
            values.insert(value.clone(), item::json_to_attr(v));
            sets.push(format!("{name} = {value}"));
        }
    }
    sets
}

/// The condition that an item is still at invocation `at` ([`Invocation`]): its `attempts` and `refunded_attempts`
/// as given, an absent `refunded_attempts` counting as 0 (Python sosw writes none). With its names and values
/// (placeholders `#inv_a`, `#inv_r`, `:inv_a`, `:inv_r`).
pub(crate) fn at_invocation(at: Invocation) -> InvocationGuard {
    let condition = if at.refunded == 0 {
        "#inv_a = :inv_a AND (attribute_not_exists(#inv_r) OR #inv_r = :inv_r)"
    } else {
        "#inv_a = :inv_a AND #inv_r = :inv_r"
    };
    InvocationGuard {
        condition,
        names: [("#inv_a", "attempts"), ("#inv_r", "refunded_attempts")],
        values: [(":inv_a", n(at.attempts)), (":inv_r", n(at.refunded))],
    }
}

/// A condition with its expression attribute names and values.
pub(crate) struct InvocationGuard {
    pub(crate) condition: &'static str,
    pub(crate) names: [(&'static str, &'static str); 2],
    pub(crate) values: [(&'static str, AttributeValue); 2],
}

/// A worker report's update of one task item: `SET` `sets` plus the report's own clauses, if `condition` holds
/// and, when `at` names an invocation, the item is still at it ([`at_invocation`]). The item as it is after the
/// update, or `None` when the condition failed.
pub(crate) struct ReportUpdate<'a> {
    pub(super) table: &'a str,
    pub(super) key: Item,
    pub(super) sets: Vec<&'a str>,
    pub(super) condition: &'a str,
    pub(super) at: Option<Invocation>,
    pub(super) names: Vec<(&'a str, &'a str)>,
    pub(super) values: Vec<(&'a str, AttributeValue)>,
}

impl DynamoStore {
    pub(crate) async fn apply_report(&self, u: ReportUpdate<'_>, report: &WorkerReport) -> StoreResult<Option<Task>> {
        storable(report)?;
        let mut names: HashMap<String, String> = u.names.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut values: HashMap<String, AttributeValue> =
            u.values.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut sets: Vec<String> = u.sets.iter().map(|s| s.to_string()).collect();
        sets.extend(report_updates(report, &mut names, &mut values));
        let mut condition = u.condition.to_string();
        if let Some(at) = u.at {
            let InvocationGuard {
                condition: guard,
                names: guard_names,
                values: guard_values,
            } = at_invocation(at);
            condition = format!("({condition}) AND {guard}");
            names.extend(guard_names.map(|(k, v)| (k.to_string(), v.to_string())));
            values.extend(guard_values.map(|(k, v)| (k.to_string(), v)));
        }
        let update = format!("SET {}", sets.join(", "));
        if update.len() > MAX_EXPRESSION_BYTES {
            return Err(StoreError::Invalid(format!(
                "a report of {} keys is more than one DynamoDB update can set (its expression would be {} bytes, \
                 over {MAX_EXPRESSION_BYTES}); nothing was recorded: report fewer keys, or nest them in one",
                report.stats.len() + report.result.len(),
                update.len()
            )));
        }
        let out = self
            .client
            .update_item()
            .table_name(u.table)
            .set_key(Some(u.key))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(o) => {
                let item = o
                    .attributes()
                    .ok_or_else(|| StoreError::Backend("no attributes returned".into()))?;
                Ok(Some(task_from_item(item)?))
            }
            Err(e) if failed_condition(&e) => Ok(None),
            Err(e) => Err(refused_err(e, "the report (nothing was recorded)")),
        }
    }
}

impl DynamoStore {
    /// A worker's heartbeat: the live item's greenfield moves to `greenfield`, if it is not completed, still
    /// running (`greenfield > expired`) and at invocation `of` when named. One conditional `UpdateItem`; Python
    /// sosw's essentials see a task invoked at the heartbeat.
    pub(crate) async fn heartbeat_move(
        &self,
        task_id: &str,
        expired: i64,
        greenfield: i64,
        of: Option<Invocation>,
    ) -> StoreResult<()> {
        let mut condition = "attribute_exists(task_id) AND attribute_not_exists(#c) AND #g > :e".to_string();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.tables.tasks)
            .key("task_id", s(task_id))
            .update_expression("SET #g = :g")
            .expression_attribute_names("#g", "greenfield")
            .expression_attribute_names("#c", "completed_at")
            .expression_attribute_values(":g", n(greenfield))
            .expression_attribute_values(":e", n(expired));
        if let Some(of) = of {
            let InvocationGuard {
                condition: guard,
                names,
                values,
            } = at_invocation(of);
            condition = format!("{condition} AND {guard}");
            for (k, v) in names {
                request = request.expression_attribute_names(k, v);
            }
            for (k, v) in values {
                request = request.expression_attribute_values(k, v);
            }
        }
        match request.condition_expression(condition).send().await {
            Ok(_) => Ok(()),
            Err(e) if failed_condition(&e) => {
                if let Some(item) = self.get_live(task_id).await? {
                    stale_report(task_id, task_from_item(&item)?.invocation(), of)?;
                }
                Err(StoreError::Conflict {
                    task_id: task_id.to_string(),
                    reason: "it is not running".into(),
                })
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    /// Counts a throttled response and waits before re-sending what DynamoDB left undone — the unprocessed part of a
    /// batch request, or a transaction cancelled by a conflicting one (neither is an error the SDK retries; failed
    /// requests are retried by the SDK alone, see [`sdk`]). After 8 waits (6.4 s in all): `Throttled`.
    pub(crate) async fn back_off(&self, attempt: &mut u32) -> StoreResult<()> {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        if *attempt >= 8 {
            return Err(StoreError::Throttled { retry_after: None });
        }
        tokio::time::sleep(Duration::from_millis(25 << *attempt)).await;
        *attempt += 1;
        Ok(())
    }
}
