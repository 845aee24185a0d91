//! Chunking: one job → the payloads of its tasks, as a deterministic walk over the `chunkable_attrs` levels.

use super::dates::{period_dates, Date};
use super::JobError;
use serde_json::{Map, Value};
use std::ops::ControlFlow;

mod rules;
mod schema;

use rules::*;
pub use schema::Schema;

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
