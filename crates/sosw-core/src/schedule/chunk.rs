//! Chunking: one job → the payloads of its tasks, as a deterministic walk over the `chunkable_attrs` levels.

use super::dates::{period_dates, Date};
use super::JobError;
use serde_json::{Map, Value};
use std::ops::ControlFlow;

/// The levels to chunk by, outermost first (`job_schema.chunkable_attrs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub chunkable_attrs: Vec<String>,
}

impl Schema {
    /// The schema a job asks for: `job_schema_variants.<job_schema_name>` if it names one (an unknown name is an
    /// error), else the config's top-level `job_schema`, else `job_schema_variants.default`, else none (one task
    /// per job). Python sosw always replaced `job_schema` with the `default` variant, which is why configs that set
    /// only `job_schema` chunked nothing there.
    pub fn from_config(config: &Value, name: Option<&str>) -> Result<Schema, JobError> {
        let variants = config.get("job_schema_variants");
        let (path, schema) = match name {
            Some(n) => match variants.and_then(|v| v.get(n)) {
                Some(s) => (format!("job_schema_variants.{n}"), s),
                None => return Err(JobError::UnknownSchema(n.to_string())),
            },
            None => match (config.get("job_schema"), variants.and_then(|v| v.get("default"))) {
                (Some(s), _) if !s.is_null() => ("job_schema".to_string(), s),
                (_, Some(s)) => ("job_schema_variants.default".to_string(), s),
                _ => return Ok(Schema::default()),
            },
        };
        Schema::parse(schema, &path)
    }

    /// `{"chunkable_attrs": [["section", {}], ["store", {}]]}` (sosw's pairs) or plain names.
    pub fn parse(schema: &Value, path: &str) -> Result<Schema, JobError> {
        let invalid = |p: String, reason: &str| JobError::Invalid {
            path: p,
            reason: reason.to_string(),
        };
        let attrs = match schema.get("chunkable_attrs") {
            None | Some(Value::Null) => return Ok(Schema::default()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(invalid(format!("{path}.chunkable_attrs"), "expected a list")),
        };
        let mut names: Vec<String> = Vec::with_capacity(attrs.len());
        for (i, a) in attrs.iter().enumerate() {
            let p = format!("{path}.chunkable_attrs[{i}]");
            let name = match a {
                Value::String(s) => s.as_str(),
                Value::Array(pair) => pair
                    .first()
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(p.clone(), "expected a name or a [name, {}] pair"))?,
                _ => return Err(invalid(p, "expected a name or a [name, {}] pair")),
            };
            if name.is_empty() || name.ends_with('s') {
                return Err(invalid(p, &format!("`{name}`: a chunkable attribute is named in the singular, without a trailing `s` (its plural adds one)")));
            }
            if names.iter().any(|n| n == name) {
                return Err(invalid(p, &format!("`{name}` is listed twice")));
            }
            names.push(name.to_string());
        }
        Ok(Schema { chunkable_attrs: names })
    }
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn is_flag(key: &str) -> bool {
    key.starts_with("isolate_") || (key.starts_with("max_") && key.ends_with("_per_batch"))
}

/// `true`/`false`, non-zero/zero, or `"true"`/`"false"` (any case), `"yes"`/`"no"`, `"1"`/`"0"`. Python's
/// truthiness made the string `"False"` true.
fn truthy(key: &str, v: &Value) -> Result<bool, JobError> {
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

fn batch_size(key: &str, v: &Value) -> Result<Option<usize>, JobError> {
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
fn flags_at(inherited: &Map<String, Value>, level: &Map<String, Value>) -> Map<String, Value> {
    let mut flags = inherited.clone();
    for (k, v) in level {
        if is_flag(k) {
            flags.insert(k.clone(), v.clone());
        }
    }
    flags
}

/// Isolation and batch size for `attr` (singular) under `flags`.
fn rules(attr: &str, flags: &Map<String, Value>) -> Result<(bool, Option<usize>), JobError> {
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
fn key_of(job: &Map<String, Value>, attr: &str, path: &str) -> Result<Option<String>, JobError> {
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

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// The objects whose entries are this level's values (an object, or a list of objects), if any.
fn entries(value: &Value) -> Vec<&Map<String, Value>> {
    match value {
        Value::Object(m) => vec![m],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            items.iter().filter_map(Value::as_object).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether any level below `level` asks for chunking inside `value`.
fn deeper_needs(
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
fn flat_values(value: &Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) if items.iter().all(is_scalar) => Some(items.clone()),
        Value::Object(m) if m.values().all(Value::is_null) => Some(m.keys().cloned().map(Value::String).collect()),
        Value::Object(m) if m.len() == 1 => Some(vec![value.clone()]),
        _ => None,
    }
}

/// Where tasks go as the walk produces them; `Break` stops the walk early.
type Emit<'a> = dyn FnMut(Map<String, Value>) -> ControlFlow<()> + 'a;

/// Why a walk ended early.
#[derive(Debug)]
enum Stop {
    Job(JobError),
    /// The receiver asked to stop (not an error).
    Requested,
}

impl From<JobError> for Stop {
    fn from(e: JobError) -> Stop {
        Stop::Job(e)
    }
}

fn send(emit: &mut Emit<'_>, task: Map<String, Value>) -> Result<(), Stop> {
    match emit(task) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(Stop::Requested),
    }
}

fn push_batches(
    emit: &mut Emit<'_>,
    skeleton: &Map<String, Value>,
    plural: &str,
    values: Vec<Value>,
    size: usize,
) -> Result<(), Stop> {
    for chunk in values.chunks(size.max(1)) {
        let mut task = skeleton.clone();
        task.insert(plural.to_string(), Value::Array(chunk.to_vec()));
        send(emit, task)?;
    }
    Ok(())
}

fn walk(
    job: Map<String, Value>,
    attrs: &[String],
    level: usize,
    inherited: &Map<String, Value>,
    path: &str,
    emit: &mut Emit<'_>,
) -> Result<(), Stop> {
    let Some(attr) = attrs.get(level) else {
        return send(emit, job);
    };
    let Some(key) = key_of(&job, attr, path)? else {
        return send(emit, job);
    };
    let plural = format!("{attr}s");
    let flags = flags_at(inherited, &job);
    let (isolate, batch) = rules(attr, &flags)?;
    let mut skeleton = job;
    let value = skeleton.remove(&key).unwrap_or(Value::Null);
    let here = if path.is_empty() {
        key.clone()
    } else {
        format!("{path}.{key}")
    };
    if !(isolate || batch.is_some() || deeper_needs(&value, attrs, level + 1, &flags, &here)?) {
        match flat_values(&value) {
            Some(values) => skeleton.insert(plural, Value::Array(values)),
            None => skeleton.insert(key, value),
        };
        return send(emit, skeleton);
    }
    let size = batch.unwrap_or(1);
    let objects = entries(&value);
    if objects.is_empty() {
        let values = match &value {
            Value::Array(items) if items.iter().all(is_scalar) => items.clone(),
            v if is_scalar(v) => vec![v.clone()],
            other => {
                return Err(JobError::Invalid {
                    path: here,
                    reason: format!(
                        "to chunk it, give a list of values or an object of values, got {}",
                        describe(other)
                    ),
                }
                .into())
            }
        };
        return push_batches(emit, &skeleton, &plural, values, size);
    }
    for m in objects {
        if m.values().all(Value::is_null) {
            push_batches(
                emit,
                &skeleton,
                &plural,
                m.keys().cloned().map(Value::String).collect(),
                size,
            )?;
            continue;
        }
        for (name, sub) in m {
            let mut task = skeleton.clone();
            task.insert(plural.clone(), Value::Array(vec![Value::String(name.clone())]));
            match sub {
                Value::Null => send(emit, task)?,
                Value::Object(sub) if level + 1 < attrs.len() => {
                    // The lower level's tasks, each on top of this level's task (the lower level's keys win).
                    let mut on_top = |lower: Map<String, Value>| {
                        let mut t = task.clone();
                        t.extend(lower);
                        emit(t)
                    };
                    walk(
                        sub.clone(),
                        attrs,
                        level + 1,
                        &flags,
                        &format!("{here}.{name}"),
                        &mut on_top,
                    )?;
                }
                Value::Object(sub) => {
                    task.extend(sub.clone());
                    send(emit, task)?;
                }
                other => {
                    return Err(JobError::Invalid {
                        path: format!("{here}.{name}"),
                        reason: format!("expected an object or null, got {}", describe(other)),
                    }
                    .into())
                }
            }
        }
    }
    Ok(())
}

/// The task payloads of a job body (without `lambda_name`), all in memory. See [`chunk_each`].
pub fn chunk(body: &Map<String, Value>, schema: &Schema, today: Date) -> Result<Vec<Map<String, Value>>, JobError> {
    let mut out = Vec::new();
    chunk_each(body, schema, today, &mut |t| {
        out.push(t);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Produces the task payloads of a job body (without `lambda_name`) one at a time, in a deterministic order, without
/// holding them: dates first (`period`, `isolate_days`), then each chunkable level. `today` is the date at the
/// scheduling time in the configured zone. Returns how many were produced; `emit` may stop the walk with `Break`
/// (that is not an error). An invalid job fails at the first offending value, possibly after producing tasks:
/// callers that must write nothing for an invalid job run a counting pass first.
pub fn chunk_each(
    body: &Map<String, Value>,
    schema: &Schema,
    today: Date,
    emit: &mut dyn FnMut(Map<String, Value>) -> ControlFlow<()>,
) -> Result<u64, JobError> {
    let mut count = 0u64;
    let mut counted = |t: Map<String, Value>| {
        count += 1;
        emit(t)
    };
    let mut job = body.clone();
    let period = job.remove("period");
    let isolate_days = match job.remove("isolate_days") {
        Some(v) => truthy("isolate_days", &v)?,
        None => false,
    };
    let dates = match period {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(period_dates(&p, today).ok_or_else(|| JobError::UnsupportedPeriod(p.clone()))?),
        Some(other) => {
            return Err(JobError::BadValue {
                key: "period".into(),
                expected: "a period name".into(),
                got: describe(&other),
            })
        }
    };
    let list = |ds: &[Date]| Value::Array(ds.iter().map(|d| Value::String(d.to_string())).collect());
    // One walk per date (or one for the whole job); each dated copy is made just before its walk, so memory does
    // not grow with the number of dates.
    let walks: Vec<Option<Value>> = match &dates {
        None => vec![None],
        Some(dates) if isolate_days => dates.iter().map(|d| Some(list(std::slice::from_ref(d)))).collect(),
        Some(dates) => vec![Some(list(dates))],
    };
    for date_list in walks {
        let mut dated = job.clone();
        if let Some(date_list) = date_list {
            dated.insert("date_list".into(), date_list);
        }
        match walk(dated, &schema.chunkable_attrs, 0, &Map::new(), "", &mut counted) {
            Ok(()) => {}
            Err(Stop::Requested) => break,
            Err(Stop::Job(e)) => return Err(e),
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests;
