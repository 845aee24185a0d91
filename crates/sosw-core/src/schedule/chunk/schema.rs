//! `job_schema`: the levels a job is chunked by, outermost first.

use super::super::JobError;
use serde_json::Value;

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
