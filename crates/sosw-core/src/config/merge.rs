//! `recursive_update`: sosw's deep merge of config layers (reference §4.2), with one fix: list unions keep the
//! order of first appearance (Python's set-based union loses it, §7.24).

use serde_json::{Map, Value};

/// Returns `base` updated with `update`: objects merge recursively; when both sides are arrays the result is their
/// union without duplicates, in order of first appearance; anything else in `update` (including `null`, and a
/// scalar over an object) replaces what `base` had.
pub fn recursive_update(base: &Value, update: &Value) -> Value {
    match (base, update) {
        (Value::Object(b), Value::Object(u)) => {
            let mut out: Map<String, Value> = b.clone();
            for (k, uv) in u {
                let merged = match (out.get(k), uv) {
                    (Some(bv @ Value::Object(_)), Value::Object(_)) => recursive_update(bv, uv),
                    (Some(Value::Array(ba)), Value::Array(ua)) => Value::Array(union(ba, ua)),
                    _ => uv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => update.clone(),
    }
}

fn union(a: &[Value], b: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(a.len() + b.len());
    for v in a.iter().chain(b) {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hlp1() {
        let d = json!({"a": 1, "b": 2, "g": {"41": 41}, "l": [25]});
        let u = json!({"c": 3, "b": {"b1": 11}, "g": {"g1": "g1"}, "l": [25, 26]});
        assert_eq!(
            recursive_update(&d, &u),
            json!({"a": 1, "b": {"b1": 11}, "g": {"41": 41, "g1": "g1"}, "l": [25, 26], "c": 3})
        );
        assert_eq!(
            recursive_update(&json!({"b": 2}), &json!({"b": null})),
            json!({"b": null})
        );
        let dicts = recursive_update(&json!({"l": [{"a": 1}, {"b": 2}]}), &json!({"l": [{"b": 2}, {"c": 3}]}));
        assert_eq!(dicts, json!({"l": [{"a": 1}, {"b": 2}, {"c": 3}]}));
    }

    #[test]
    fn list_union_keeps_order_and_base_is_untouched() {
        let d = json!({"init_clients": ["Task"]});
        let u = json!({"init_clients": ["Task", "Sns", "Siblings", "s3"]});
        let merged = recursive_update(&d, &u);
        assert_eq!(merged["init_clients"], json!(["Task", "Sns", "Siblings", "s3"]));
        assert_eq!(d, json!({"init_clients": ["Task"]}));
        assert_eq!(
            recursive_update(&json!({"a": {"x": 1}}), &json!({"a": 5})),
            json!({"a": 5})
        );
        assert_eq!(
            recursive_update(&json!({"a": null}), &json!({"a": {"x": 1}})),
            json!({"a": {"x": 1}})
        );
    }
}
