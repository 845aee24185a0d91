//! Items to values and back: jobs, closed tasks, listing cursors; a task's keys in each table.

use super::*;

/// The part of a listing's cursor that bounds a page of labourer `l`: `(order, task_id)` when the cursor is in
/// `l`'s rows; `(i64::MAX, "")` — nothing left — when it is past them; `None` when they all come after it.
pub(crate) fn cursor_within(q: &TaskQuery, l: &str) -> Option<(i64, String)> {
    let c = q.after.as_ref()?;
    match c.labourer_id.as_str().cmp(l) {
        std::cmp::Ordering::Less => None,
        std::cmp::Ordering::Equal => Some((c.order, c.task_id.clone())),
        std::cmp::Ordering::Greater => Some((i64::MAX, String::new())),
    }
}

pub(crate) fn get_s_attr(item: &Item, key: &str) -> Option<String> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

pub(crate) fn stored_closed(item: &Item) -> StoreResult<StoredTask> {
    let task = task_from_item(item)?;
    let completed = match item.get("labourer_id_task_status") {
        Some(AttributeValue::S(st)) => st.ends_with("_1"),
        _ => task.completed_at.is_some(),
    };
    let closed_at = get_i64(item, "closed_at").unwrap_or_default();
    Ok(StoredTask {
        task,
        place: Place::Closed { closed_at, completed },
    })
}

pub(crate) fn job_from_item(item: &Item) -> StoreResult<JobProgress> {
    let text = |k: &str| match item.get(k) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(StoreError::Backend(format!("job item without `{k}`").into())),
    };
    let num = |k: &str| get_i64(item, k).ok_or_else(|| StoreError::Backend(format!("job item without `{k}`").into()));
    Ok(JobProgress {
        job_id: text("job_id")?,
        labourer_id: text("labourer_id")?,
        total: num("total")? as u64,
        scheduled: num("scheduled")? as u64,
        started_at: Time::from_millis(num("started_at")?),
        updated_at: Time::from_millis(num("updated_at")?),
        finished_at: get_i64(item, "finished_at").map(Time::from_millis),
    })
}

/// A task's keys: where it can be, in each table.
impl DynamoStore {
    /// A consistent `BatchGetItem` request of every key where each (labourer, task id) could be: its live, closed
    /// and retry keys (at most 33 tasks: DynamoDB takes 100 keys a request), reading `task_id` and `labourer_id`.
    pub(crate) fn lookup<'a>(
        &self,
        tasks: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> StoreResult<HashMap<String, KeysAndAttributes>> {
        let live = tasks.clone().into_iter().map(|(_, id)| DynamoStore::task_key(id));
        let closed = tasks.clone().into_iter().map(|(_, id)| DynamoStore::task_key(id));
        let retry = tasks.into_iter().map(|(l, id)| DynamoStore::retry_key(l, id));
        let keys = |table: &String, keys: Vec<Item>| {
            let ka = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .projection_expression("task_id, labourer_id")
                .consistent_read(true)
                .build()
                .map_err(build_err)?;
            Ok::<_, StoreError>((table.clone(), ka))
        };
        Ok(HashMap::from([
            keys(&self.tables.tasks, live.collect())?,
            keys(&self.tables.closed, closed.collect())?,
            keys(&self.tables.retry, retry.collect())?,
        ]))
    }

    pub(crate) fn task_key(task_id: &str) -> Item {
        HashMap::from([("task_id".to_string(), s(task_id))])
    }

    pub(crate) fn retry_key(labourer: &str, task_id: &str) -> Item {
        HashMap::from([
            ("labourer_id".to_string(), s(labourer)),
            ("task_id".to_string(), s(task_id)),
        ])
    }
}
