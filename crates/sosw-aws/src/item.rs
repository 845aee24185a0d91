//! Tasks as DynamoDB items, with Python sosw's attribute names and types (reference §2.1–2.4): `task_id` S,
//! `labourer_id` S, `created_at` N (a float), `greenfield` N, `attempts` N, `payload` S (JSON text),
//! `completed_at` N, `failed_attempts` N, one `stat_<k>` / `result_<k>` attribute per reported key.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Number, Value};
use sosw_core::ports::StoreError;
use sosw_core::Task;
use std::collections::HashMap;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A float as Python writes it (`str(1712345678.123456)`), an integer without a fraction.
pub fn n_f64(v: f64) -> AttributeValue {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        n(v as i64)
    } else {
        n(v)
    }
}

pub fn json_to_attr(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(x) => AttributeValue::N(x.to_string()),
        Value::String(x) => AttributeValue::S(x.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(json_to_attr).collect()),
        Value::Object(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), json_to_attr(v))).collect()),
    }
}

/// An `N` as Python reads it: an integer unless it has a fraction.
fn number(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or_else(|| Value::String(text.to_string()), Value::Number)
}

pub fn attr_to_json(a: &AttributeValue) -> Value {
    match a {
        AttributeValue::S(x) => Value::String(x.clone()),
        AttributeValue::N(x) => number(x),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::L(items) => Value::Array(items.iter().map(attr_to_json).collect()),
        AttributeValue::M(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), attr_to_json(v))).collect()),
        AttributeValue::Ss(v) => Value::Array(v.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(v) => Value::Array(v.iter().map(|x| number(x)).collect()),
        _ => Value::String("<binary>".into()),
    }
}

fn get_s(item: &Item, key: &str) -> Option<String> {
    match item.get(key)? {
        AttributeValue::S(x) => Some(x.clone()),
        AttributeValue::N(x) => Some(x.clone()),
        _ => None,
    }
}

pub fn get_i64(item: &Item, key: &str) -> Option<i64> {
    match item.get(key)? {
        AttributeValue::N(x) => x
            .parse::<i64>()
            .ok()
            .or_else(|| x.parse::<f64>().ok().map(|f| f as i64)),
        AttributeValue::S(x) => x.parse().ok(),
        _ => None,
    }
}

fn get_f64(item: &Item, key: &str) -> Option<f64> {
    match item.get(key)? {
        AttributeValue::N(x) | AttributeValue::S(x) => x.parse().ok(),
        _ => None,
    }
}

fn corrupt(item: &Item, what: &str) -> StoreError {
    let id = get_s(item, "task_id").unwrap_or_else(|| "?".into());
    StoreError::Backend(format!("item of task `{id}` {what}").into())
}

/// An item's `greenfield`: an item without one is corrupt, never read as 0 (which would be a queue position).
pub fn greenfield_of(item: &Item) -> Result<i64, StoreError> {
    get_i64(item, "greenfield").ok_or_else(|| corrupt(item, "has no numeric `greenfield`"))
}

/// Reads a task item (of any of the three tables); attributes this model has no field for are ignored here, and
/// moves copy whole items, so they survive.
pub fn task_from_item(item: &Item) -> Result<Task, StoreError> {
    let task_id = get_s(item, "task_id").ok_or_else(|| corrupt(item, "has no `task_id`"))?;
    let labourer_id = get_s(item, "labourer_id").ok_or_else(|| corrupt(item, "has no `labourer_id`"))?;
    let greenfield = greenfield_of(item)?;
    let payload = match item.get("payload") {
        Some(AttributeValue::S(x)) => x.clone(),
        Some(other) => attr_to_json(other).to_string(),
        None => "{}".to_string(),
    };
    let mut stats = Map::new();
    let mut result = Map::new();
    for (k, v) in item {
        if let Some(key) = k.strip_prefix("stat_") {
            stats.insert(key.to_string(), attr_to_json(v));
        } else if let Some(key) = k.strip_prefix("result_") {
            result.insert(key.to_string(), attr_to_json(v));
        }
    }
    Ok(Task {
        task_id,
        labourer_id,
        created_at: get_f64(item, "created_at").unwrap_or(0.0),
        greenfield: sosw_core::Greenfield::new(greenfield),
        attempts: get_i64(item, "attempts").map_or(0, |a| a.clamp(0, i64::from(u32::MAX)) as u32),
        payload,
        completed_at: get_i64(item, "completed_at"),
        failed_attempts: get_i64(item, "failed_attempts").map_or(0, |a| a.clamp(0, i64::from(u32::MAX)) as u32),
        refunded_attempts: get_i64(item, "refunded_attempts").map_or(0, |a| a.clamp(0, i64::from(u32::MAX)) as u32),
        stats,
        result,
    })
}

/// The item of a new task.
pub fn item_of(t: &Task) -> Item {
    let mut item = Item::new();
    item.insert("task_id".into(), s(&t.task_id));
    item.insert("labourer_id".into(), s(&t.labourer_id));
    item.insert("created_at".into(), n_f64(t.created_at));
    item.insert("greenfield".into(), n(t.greenfield));
    item.insert("attempts".into(), n(t.attempts));
    item.insert("payload".into(), s(&t.payload));
    if let Some(c) = t.completed_at {
        item.insert("completed_at".into(), n(c));
    }
    if t.failed_attempts > 0 {
        item.insert("failed_attempts".into(), n(t.failed_attempts));
    }
    if t.refunded_attempts > 0 {
        item.insert("refunded_attempts".into(), n(t.refunded_attempts));
    }
    for (k, v) in &t.stats {
        item.insert(format!("stat_{k}"), json_to_attr(v));
    }
    for (k, v) in &t.result {
        item.insert(format!("result_{k}"), json_to_attr(v));
    }
    item
}

/// Why DynamoDB cannot store `v` as an attribute value, if it cannot: a number outside its range (magnitudes from
/// 1e-130 to below 1e126, or 0) or nesting deeper than its 32 levels.
pub fn unstorable(v: &Value) -> Option<String> {
    fn walk(v: &Value, depth: usize) -> Option<String> {
        match v {
            Value::Number(x) => {
                let f = x.as_f64().unwrap_or(f64::INFINITY).abs();
                (f != 0.0 && !(1e-130..1e126).contains(&f))
                    .then(|| format!("the number {x} is outside DynamoDB's range (1e-130 to 1e126)"))
            }
            Value::Array(_) | Value::Object(_) if depth >= 32 => {
                Some("it nests deeper than DynamoDB's 32 levels".into())
            }
            Value::Array(items) => items.iter().find_map(|v| walk(v, depth + 1)),
            Value::Object(m) => m.values().find_map(|v| walk(v, depth + 1)),
            _ => None,
        }
    }
    walk(v, 0)
}

/// DynamoDB's limit on one item, in its own reckoning of size.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// The size DynamoDB counts for `item` (attribute names plus values: strings and binaries by their bytes, numbers
/// at most 21 bytes, one byte per boolean or null, three per list or map and one per element), so that a write
/// DynamoDB would refuse for size is refused before anything is sent, naming the task.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, v)| k.len() + 1 + value_size(v)).sum::<usize>(),
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        _ => 1,
    }
}

/// A number: about one byte per two significant digits, plus one (at most 21).
fn number_size(n: &str) -> usize {
    let digits = n.bytes().filter(u8::is_ascii_digit).count();
    (digits.div_ceil(2) + 1).min(21)
}

/// Consecutive groups of items, each at most `max_items` long and at most `max_bytes` in total size (an item
/// larger than `max_bytes` alone is a group of its own): the transactions a batch of writes is split into.
pub fn groups(sizes: &[usize], max_items: usize, max_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == max_items || bytes.saturating_add(size) > max_bytes) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(size);
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_sizes_count_as_dynamodb_does() {
        let item: Item = [
            ("task_id".to_string(), s("abc")),
            ("greenfield".to_string(), n(1_796_000_000_i64)),
            ("payload".to_string(), s("é".repeat(10))),
            (
                "stat_m".to_string(),
                AttributeValue::M([("k".to_string(), AttributeValue::Bool(true))].into()),
            ),
            (
                "result_l".to_string(),
                AttributeValue::L(vec![n(1), AttributeValue::Null(true)]),
            ),
        ]
        .into();
        // 7+3, 10+(5+1), 7+20 bytes of UTF-8, 6+(3+1+1+1), 8+(3+(1+2)+(1+1))
        assert_eq!(item_size(&item), 10 + 16 + 27 + 12 + 16);
        assert_eq!(number_size("-12345678901234567890.12345678901234567890"), 21);
        assert_eq!(number_size("1.5"), 2);
    }

    #[test]
    fn values_dynamodb_cannot_store_are_named() {
        let mut deep = json!(1);
        for _ in 0..33 {
            deep = json!([deep]);
        }
        let mut ok_deep = json!(1);
        for _ in 0..31 {
            ok_deep = json!({"k": ok_deep});
        }
        // (value, refused)
        let table = [
            (json!(1e300), true),
            (json!(-1e126), true),
            (json!(1e-200), true),
            (json!({"a": [1, {"b": 1e130}]}), true),
            (deep, true),
            (json!(0), false),
            (json!(-0.0), false),
            (json!(9.99e125), false),
            (json!(1e-130), false),
            (json!(u64::MAX), false),
            (json!("1e300"), false),
            (ok_deep, false),
        ];
        for (v, refused) in table {
            assert_eq!(unstorable(&v).is_some(), refused, "{v}: {:?}", unstorable(&v));
        }
    }

    #[test]
    fn groups_are_bounded_by_count_and_bytes() {
        // (sizes, max items, max bytes, the groups)
        type Case<'a> = (&'a [usize], usize, usize, &'a [std::ops::Range<usize>]);
        let table: &[Case] = &[
            (&[], 100, 1000, &[]),
            (&[10; 5], 2, 1000, &[0..2, 2..4, 4..5]),
            (&[400, 400, 400], 100, 1000, &[0..2, 2..3]),
            (&[1000, 1, 1], 100, 1000, &[0..1, 1..3]),
            (&[5000, 1, 6000], 100, 1000, &[0..1, 1..2, 2..3]),
            (&[usize::MAX, usize::MAX], 100, 1000, &[0..1, 1..2]),
        ];
        for (sizes, items, bytes, want) in table {
            assert_eq!(
                groups(sizes, *items, *bytes),
                want.to_vec(),
                "{sizes:?} {items} {bytes}"
            );
        }
    }

    #[test]
    fn a_task_round_trips_with_sosw_attribute_names() {
        let mut stats = Map::new();
        stats.insert("rows".into(), json!(5));
        let mut result = Map::new();
        result.insert("doc".into(), json!({"a": [1, 2.5, "x", null, true]}));
        let t = Task {
            task_id: "t1".into(),
            labourer_id: "w".into(),
            created_at: 1712345678.123456,
            greenfield: sosw_core::Greenfield::new(2000),
            attempts: 1,
            payload: r#"{"a": 1}"#.into(),
            completed_at: Some(99),
            failed_attempts: 2,
            refunded_attempts: 1,
            stats,
            result,
        };
        let item = item_of(&t);
        assert_eq!(item["created_at"], AttributeValue::N("1712345678.123456".into()));
        assert_eq!(item["payload"], AttributeValue::S(r#"{"a": 1}"#.into()));
        assert_eq!(item["stat_rows"], AttributeValue::N("5".into()));
        assert!(matches!(item["result_doc"], AttributeValue::M(_)));
        assert_eq!(task_from_item(&item).expect("task"), t);
        let mut whole = item_of(&Task { created_at: 5.0, ..t });
        assert_eq!(whole["created_at"], AttributeValue::N("5".into()));
        whole.remove("greenfield");
        assert!(task_from_item(&whole).is_err());
    }
}
