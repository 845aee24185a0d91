//! The rules of one chunking level: flags (`isolate_*`, `max_*_per_batch`), the values of a level, and the checks
//! that refuse a job naming the value and its path.

use super::super::JobError;
use super::Tally;
use serde_json::{Map, Value};

pub(super) fn describe(v: &Value) -> String {
    crate::payload::shown(v)
}

pub(super) fn is_flag(key: &str) -> bool {
    key.starts_with("isolate_") || (key.starts_with("max_") && key.ends_with("_per_batch"))
}

/// `true`/`false`, non-zero/zero, or `"true"`/`"false"` (any case), `"yes"`/`"no"`, `"1"`/`"0"`. Python's
/// truthiness made the string `"False"` true.
pub(super) fn truthy(key: &str, v: &Value) -> Result<bool, JobError> {
    let bad = || JobError::BadValue {
        key: key.to_string(),
        expected: "true or false".into(),
        got: describe(v),
    };
    match v {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" | "" => Ok(false),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

pub(super) fn batch_size(key: &str, v: &Value) -> Result<Option<usize>, JobError> {
    let n = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        _ => Err(JobError::BadValue {
            key: key.to_string(),
            expected: "a whole number of at least 1".into(),
            got: describe(v),
        }),
    }
}

/// The flags in effect at a level: inherited ones, overridden by the level's own.
pub(super) fn flags_at(inherited: &Map<String, Value>, level: &Map<String, Value>) -> Map<String, Value> {
    let mut flags = inherited.clone();
    for (k, v) in level {
        if is_flag(k) {
            flags.insert(k.clone(), v.clone());
        }
    }
    flags
}

/// Isolation and batch size for `attr` (singular) under `flags`.
pub(super) fn rules(attr: &str, flags: &Map<String, Value>) -> Result<(bool, Option<usize>), JobError> {
    let mut isolate = false;
    let mut batch = None;
    for name in [format!("{attr}s"), attr.to_string()] {
        let key = format!("isolate_{name}");
        if let Some(v) = flags.get(&key) {
            isolate |= truthy(&key, v)?;
        }
        let key = format!("max_{name}_per_batch");
        if let Some(v) = flags.get(&key) {
            batch = batch.or(batch_size(&key, v)?);
        }
    }
    Ok((isolate, batch))
}

/// The key under which `attr` appears at this level (plural or singular), if any.
pub(super) fn key_of(job: &Map<String, Value>, attr: &str, path: &str) -> Result<Option<String>, JobError> {
    let plural = format!("{attr}s");
    match (job.contains_key(&plural), job.contains_key(attr)) {
        (true, true) => Err(JobError::Ambiguous {
            path: path.to_string(),
            singular: attr.to_string(),
            plural,
        }),
        (true, false) => Ok(Some(plural)),
        (false, true) => Ok(Some(attr.to_string())),
        (false, false) => Ok(None),
    }
}

pub(super) fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// The objects whose entries are this level's values (an object, or a list of objects), if any.
pub(super) fn entries(value: &Value) -> Vec<&Map<String, Value>> {
    match value {
        Value::Object(m) => vec![m],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            items.iter().filter_map(Value::as_object).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether any level below `level` asks for chunking inside `value`.
pub(super) fn deeper_needs(
    value: &Value,
    attrs: &[String],
    level: usize,
    flags: &Map<String, Value>,
    path: &str,
) -> Result<bool, JobError> {
    let Some(attr) = attrs.get(level) else {
        return Ok(false);
    };
    for m in entries(value) {
        for (name, sub) in m {
            let Value::Object(sub) = sub else { continue };
            let sub_path = format!("{path}.{name}");
            let sub_flags = flags_at(flags, sub);
            let (isolate, batch) = rules(attr, &sub_flags)?;
            if isolate || batch.is_some() {
                return Ok(true);
            }
            if let Some(key) = key_of(sub, attr, &sub_path)? {
                if deeper_needs(&sub[&key], attrs, level + 1, &sub_flags, &format!("{sub_path}.{key}"))? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// A flat list of values, from a list of scalars or an object whose values are all null (its keys). An object
/// with one key is kept whole, as Python sosw keeps it.
pub(super) fn flat_values(value: &Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) if items.iter().all(is_scalar) => Some(items.clone()),
        Value::Object(m) if m.values().all(Value::is_null) => Some(m.keys().cloned().map(Value::String).collect()),
        Value::Object(m) if m.len() == 1 => Some(vec![value.clone()]),
        _ => None,
    }
}

/// Refuses a value listed twice among a level's values: it would make two identical tasks (Python sosw made
/// them) or list the value twice in one.
pub(super) fn distinct<'v>(values: impl IntoIterator<Item = &'v Value>, path: &str) -> Result<(), JobError> {
    let mut seen = std::collections::HashSet::new();
    for v in values {
        if !seen.insert(v.to_string()) {
            return Err(JobError::Invalid {
                path: path.to_string(),
                reason: format!("the value {} is listed twice", describe(v)),
            });
        }
    }
    Ok(())
}

/// The flag that asks for `attr` (singular) to be chunked under `flags`, if one does (a flag with an invalid value
/// is reported where the walk uses it, not here).
pub(super) fn chunking_flag(attr: &str, flags: &Map<String, Value>) -> Option<String> {
    for name in [format!("{attr}s"), attr.to_string()] {
        let key = format!("isolate_{name}");
        if flags.get(&key).is_some_and(|v| truthy(&key, v).unwrap_or(false)) {
            return Some(key);
        }
        let key = format!("max_{name}_per_batch");
        if flags
            .get(&key)
            .is_some_and(|v| batch_size(&key, v).ok().flatten().is_some())
        {
            return Some(key);
        }
    }
    None
}

/// Warns about lower levels that sit in `job` next to (or instead of) the level `level` is about: the walk chunks
/// a level only inside the values of the level above it, so their chunking flags have no effect here. Python
/// sosw ignores them too (the values stay in the task as they are); it said nothing.
pub(super) fn warn_unreachable(
    job: &Map<String, Value>,
    attrs: &[String],
    level: usize,
    flags: &Map<String, Value>,
    path: &str,
    tally: &mut Tally,
) {
    for (j, attr) in attrs.iter().enumerate().skip(level + 1) {
        let Ok(Some(key)) = key_of(job, attr, path) else {
            continue;
        };
        let Some(flag) = chunking_flag(attr, flags) else {
            continue;
        };
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let upper = &attrs[j - 1];
        tally.warn(format!(
            "`{flag}` has no effect on `{at}`: `{attr}s` is chunked only inside the values of `{upper}s` (chunk \
             levels: {}), so these values go into the task as they are",
            attrs.join(", ")
        ));
    }
}
