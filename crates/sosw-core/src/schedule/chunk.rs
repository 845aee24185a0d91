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

/// At most this many distinct warnings are kept (a job with thousands of sections would repeat one per section).
const MAX_WARNINGS: usize = 20;

/// What a counting walk found: the number of tasks (saturating) and what it had to say short of an error.
#[derive(Debug, Default)]
struct Tally {
    tasks: u64,
    warnings: Vec<String>,
}

impl Tally {
    fn add(&mut self, n: u64) {
        self.tasks = self.tasks.saturating_add(n);
    }

    fn warn(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS && !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }
}

/// One walk, two uses: `Emit` builds every task and hands it on; `Count` only counts them, without building any,
/// so that the number of tasks of a job is known in time proportional to the job's size rather than to the
/// number of its tasks. Both go through the same decisions and raise the same errors in the same order, so the
/// count is exactly what the building walk produces.
enum Out<'a, 'b> {
    Emit(&'a mut Emit<'b>),
    Count(&'a mut Tally),
}

impl Out<'_, '_> {
    /// One task, built by `make` only if tasks are being built.
    fn one(&mut self, make: impl FnOnce() -> Map<String, Value>) -> Result<(), Stop> {
        match self {
            Out::Emit(emit) => match emit(make()) {
                ControlFlow::Continue(()) => Ok(()),
                ControlFlow::Break(()) => Err(Stop::Requested),
            },
            Out::Count(tally) => {
                tally.add(1);
                Ok(())
            }
        }
    }

    /// One task per batch of `size` values.
    fn batches(
        &mut self,
        skeleton: &Map<String, Value>,
        plural: &str,
        values: &[Value],
        size: usize,
    ) -> Result<(), Stop> {
        let size = size.max(1);
        match self {
            Out::Emit(_) => {
                for chunk in values.chunks(size) {
                    self.one(|| {
                        let mut task = skeleton.clone();
                        task.insert(plural.to_string(), Value::Array(chunk.to_vec()));
                        task
                    })?;
                }
                Ok(())
            }
            Out::Count(tally) => {
                tally.add(u64::try_from(values.len().div_ceil(size)).unwrap_or(u64::MAX));
                Ok(())
            }
        }
    }
}

/// Refuses a value listed twice among a level's values: it would make two identical tasks (Python sosw made
/// them) or list the value twice in one.
fn distinct<'v>(values: impl IntoIterator<Item = &'v Value>, path: &str) -> Result<(), JobError> {
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
fn chunking_flag(attr: &str, flags: &Map<String, Value>) -> Option<String> {
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
fn warn_unreachable(
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

fn walk(
    job: Map<String, Value>,
    attrs: &[String],
    level: usize,
    inherited: &Map<String, Value>,
    path: &str,
    out: &mut Out<'_, '_>,
) -> Result<(), Stop> {
    let Some(attr) = attrs.get(level) else {
        return out.one(|| job);
    };
    let Some(key) = key_of(&job, attr, path)? else {
        if let Out::Count(tally) = out {
            warn_unreachable(&job, attrs, level, &flags_at(inherited, &job), path, tally);
        }
        return out.one(|| job);
    };
    let plural = format!("{attr}s");
    let flags = flags_at(inherited, &job);
    if let Out::Count(tally) = out {
        warn_unreachable(&job, attrs, level, &flags, path, tally);
    }
    let (isolate, batch) = rules(attr, &flags)?;
    let mut skeleton = job;
    let value = skeleton.remove(&key).unwrap_or(Value::Null);
    let here = if path.is_empty() {
        key.clone()
    } else {
        format!("{path}.{key}")
    };
    if !(isolate || batch.is_some() || deeper_needs(&value, attrs, level + 1, &flags, &here)?) {
        // Not chunked: the values stay in one task, as a list when they are a flat one, else as they are.
        match flat_values(&value) {
            Some(values) => {
                distinct(&values, &here)?;
                skeleton.insert(plural, Value::Array(values));
            }
            None => {
                skeleton.insert(key, value);
            }
        };
        return out.one(|| skeleton);
    }
    let size = batch.unwrap_or(1);
    let objects = entries(&value);
    if objects.is_empty() {
        let values = match &value {
            Value::Array(items) if items.iter().all(is_scalar) => items.as_slice(),
            other => {
                let hint = if is_scalar(other) {
                    format!(" (for one value, write [{}])", describe(other))
                } else {
                    String::new()
                };
                return Err(JobError::Invalid {
                    path: here,
                    reason: format!(
                        "to chunk it, give a list of values or an object of values, got {}{hint}",
                        describe(other)
                    ),
                }
                .into());
            }
        };
        distinct(values, &here)?;
        return out.batches(&skeleton, &plural, values, size);
    }
    distinct(
        &objects
            .iter()
            .flat_map(|m| m.keys().cloned().map(Value::String))
            .collect::<Vec<_>>(),
        &here,
    )?;
    for m in objects {
        if m.values().all(Value::is_null) {
            let names: Vec<Value> = m.keys().cloned().map(Value::String).collect();
            out.batches(&skeleton, &plural, &names, size)?;
            continue;
        }
        for (name, sub) in m {
            let task = || {
                let mut task = skeleton.clone();
                task.insert(plural.clone(), Value::Array(vec![Value::String(name.clone())]));
                task
            };
            match sub {
                Value::Null => out.one(task)?,
                Value::Object(sub) if level + 1 < attrs.len() => {
                    let sub_path = format!("{here}.{name}");
                    match out {
                        Out::Emit(emit) => {
                            // The lower level's tasks, each on top of this level's task (the lower level's keys win).
                            let upper = task();
                            let mut on_top = |lower: Map<String, Value>| {
                                let mut t = upper.clone();
                                t.extend(lower);
                                emit(t)
                            };
                            walk(
                                sub.clone(),
                                attrs,
                                level + 1,
                                &flags,
                                &sub_path,
                                &mut Out::Emit(&mut on_top),
                            )?;
                        }
                        Out::Count(tally) => {
                            walk(sub.clone(), attrs, level + 1, &flags, &sub_path, &mut Out::Count(tally))?
                        }
                    }
                }
                Value::Object(sub) => out.one(|| {
                    let mut t = task();
                    t.extend(sub.clone());
                    t
                })?,
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

/// The walks of a job: the job without `period` and `isolate_days`, and its dates.
struct Walks {
    job: Map<String, Value>,
    /// `None`: no `period`, one walk without `date_list`.
    dates: Option<Vec<Date>>,
    isolate_days: bool,
}

impl Walks {
    /// Dates first: one walk per date with `isolate_days`, else one walk with every date (or without dates).
    fn of(body: &Map<String, Value>, today: Date) -> Result<Walks, JobError> {
        let mut job = body.clone();
        let period = job.remove("period");
        let isolate_days = match job.remove("isolate_days") {
            Some(v) => truthy("isolate_days", &v)?,
            None => false,
        };
        let dates = match period {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => {
                Some(period_dates(&p, today).ok_or_else(|| JobError::UnsupportedPeriod(p.clone()))?)
            }
            Some(other) => {
                return Err(JobError::BadValue {
                    key: "period".into(),
                    expected: "a period name".into(),
                    got: describe(&other),
                })
            }
        };
        Ok(Walks {
            job,
            dates,
            isolate_days,
        })
    }

    fn len(&self) -> usize {
        match &self.dates {
            Some(dates) if self.isolate_days => dates.len(),
            _ => 1,
        }
    }

    /// The job of walk `i` (`i < len()`), made just before the walk, so that memory does not grow with the number
    /// of dates.
    fn job(&self, i: usize) -> Map<String, Value> {
        let list = |ds: &[Date]| Value::Array(ds.iter().map(|d| Value::String(d.to_string())).collect());
        let mut dated = self.job.clone();
        match &self.dates {
            None => {}
            Some(dates) if self.isolate_days => {
                dated.insert("date_list".into(), list(&dates[i..=i]));
            }
            Some(dates) => {
                dated.insert("date_list".into(), list(dates));
            }
        }
        dated
    }
}

/// Produces the task payloads of a job body (without `lambda_name`) one at a time, in a deterministic order, without
/// holding them: dates first (`period`, `isolate_days`), then each chunkable level. `today` is the date at the
/// scheduling time in the configured zone. Returns how many were produced; `emit` may stop the walk with `Break`
/// (that is not an error). An invalid job fails at the first offending value, possibly after producing tasks:
/// callers that must write nothing for an invalid job call [`count`] first, which fails on the same values.
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
    let walks = Walks::of(body, today)?;
    for i in 0..walks.len() {
        match walk(
            walks.job(i),
            &schema.chunkable_attrs,
            0,
            &Map::new(),
            "",
            &mut Out::Emit(&mut counted),
        ) {
            Ok(()) => {}
            Err(Stop::Requested) => break,
            Err(Stop::Job(e)) => return Err(e),
        }
    }
    Ok(count)
}

/// A job counted without building its tasks: what [`chunk_each`] would produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The number of tasks (`u64::MAX` if it does not fit, which no job this format can describe reaches).
    pub tasks: u64,
    /// Parts of the job that are valid but probably not what was meant (chunking flags that have no effect).
    pub warnings: Vec<String>,
}

/// Counts the tasks of a job body, and validates it, without building them: the walk of [`chunk_each`] on the
/// job's structure, adding the size of each level's values instead of making a task of each. Time and memory are
/// proportional to the job's size, not to its number of tasks: with `isolate_days`, every date's walk has the same
/// shape (only the date differs), so one is counted and multiplied by the number of dates. Fails exactly where
/// [`chunk_each`] would, with the same error.
pub fn count(body: &Map<String, Value>, schema: &Schema, today: Date) -> Result<Counted, JobError> {
    let walks = Walks::of(body, today)?;
    let n = u64::try_from(walks.len()).unwrap_or(u64::MAX);
    let mut tally = Tally::default();
    if n > 0 {
        match walk(
            walks.job(0),
            &schema.chunkable_attrs,
            0,
            &Map::new(),
            "",
            &mut Out::Count(&mut tally),
        ) {
            // A count is never asked to stop.
            Ok(()) | Err(Stop::Requested) => {}
            Err(Stop::Job(e)) => return Err(e),
        }
    }
    Ok(Counted {
        tasks: tally.tasks.saturating_mul(n),
        warnings: tally.warnings,
    })
}

#[cfg(test)]
mod tests;
