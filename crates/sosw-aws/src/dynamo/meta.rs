//! The audit trail (`MetaSink`): events batched into the meta table.

use super::*;

#[async_trait]
impl MetaSink for DynamoStore {
    async fn record(&self, events: &[MetaEvent]) -> StoreResult<()> {
        for chunk in events.chunks(25) {
            let mut requests = Vec::with_capacity(chunk.len());
            for e in chunk {
                // `created_at` is the range key: events of one millisecond are kept apart by a few microseconds
                // (less than half a millisecond, so `at` reads back unchanged), in the order recorded.
                let seq = META_SEQ.fetch_add(1, Ordering::Relaxed) % 400;
                let mut item = Item::from([
                    ("task_id".to_string(), s(&e.task_id)),
                    (
                        "created_at".to_string(),
                        n_f64(e.at.as_secs_f64() + seq as f64 * 1e-6 + 1e-6),
                    ),
                    ("action".to_string(), s(e.action.as_str())),
                    ("author".to_string(), s(&e.author)),
                    ("labourer_id".to_string(), s(&e.labourer_id)),
                    ("invocation_id".to_string(), s("")),
                    ("log_stream_name".to_string(), s("")),
                ]);
                if let Some(d) = &e.details {
                    item.insert("details".into(), s(d.to_string()));
                }
                let put = PutRequest::builder().set_item(Some(item)).build().map_err(build_err)?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            self.write_batch(self.tables.meta.clone(), requests).await?;
        }
        Ok(())
    }

    async fn events_of(&self, task_id: &str) -> StoreResult<Vec<MetaEvent>> {
        let r = Read {
            table: self.tables.meta.clone(),
            key: Some("#t = :t".into()),
            names: vec![("#t", "task_id")],
            values: vec![(":t", s(task_id))],
            consistent: true,
            ..Read::default()
        };
        let mut out = Vec::new();
        for item in self.read(r).await?.0 {
            let text = |k: &str| match item.get(k) {
                Some(AttributeValue::S(v)) => v.clone(),
                _ => String::new(),
            };
            let created = match item.get("created_at") {
                Some(AttributeValue::N(v)) => v.parse::<f64>().unwrap_or_default(),
                _ => 0.0,
            };
            let action = text("action");
            let action = MetaAction::parse(&action);
            out.push(MetaEvent {
                task_id: text("task_id"),
                labourer_id: text("labourer_id"),
                action,
                at: Time::from_millis((created * 1000.0).floor() as i64),
                author: text("author"),
                details: item.get("details").and_then(|d| match d {
                    AttributeValue::S(t) => serde_json::from_str(t).ok(),
                    other => Some(item::attr_to_json(other)),
                }),
            });
        }
        Ok(out)
    }
}
