//! Typed reads from JSON config with errors that name the key path and the bad value.

use super::ConfigError;
use serde_json::{Map, Value};

#[derive(Debug, Default)]
pub(crate) struct Reader {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn show(v: &Value) -> String {
    crate::payload::shown(v)
}

impl Reader {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// Warns about keys of `obj` that are neither in `known` nor accepted by `also`.
    pub fn unknown_keys(&mut self, obj: &Map<String, Value>, path: &str, known: &[&str], also: impl Fn(&str) -> bool) {
        for k in obj.keys() {
            if !known.contains(&k.as_str()) && !also(k) {
                self.warn(format!("unknown config key `{}` is ignored", join(path, k)));
            }
        }
    }

    pub fn object<'a>(
        &mut self,
        parent: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        match parent.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.error(join(path, key), format!("expected an object, got {}", show(other)));
                None
            }
        }
    }

    pub fn int(&mut self, parent: &Map<String, Value>, key: &str, path: &str, min: i64) -> Option<i64> {
        let v = parent.get(key)?;
        if v.is_null() {
            return None;
        }
        let n = v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        });
        match n {
            Some(n) if n >= min => Some(n),
            Some(n) => {
                self.error(join(path, key), format!("must be at least {min}, got {n}"));
                None
            }
            None => {
                self.error(join(path, key), format!("expected an integer, got {}", show(v)));
                None
            }
        }
    }

    pub fn u32(&mut self, parent: &Map<String, Value>, key: &str, path: &str, min: u32) -> Option<u32> {
        let n = self.int(parent, key, path, i64::from(min))?;
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(join(path, key), format!("must be at most {}, got {n}", u32::MAX));
                None
            }
        }
    }

    pub fn number(&mut self, parent: &Map<String, Value>, key: &str, path: &str) -> Option<f64> {
        let v = parent.get(key)?;
        match v.as_f64() {
            Some(f) if f.is_finite() => Some(f),
            _ if v.is_null() => None,
            _ => {
                self.error(join(path, key), format!("expected a number, got {}", show(v)));
                None
            }
        }
    }

    /// A positive number of seconds, at most [`MAX_SECONDS`](crate::time::MAX_SECONDS) (larger values cannot become a timer).
    pub fn positive_secs(&mut self, parent: &Map<String, Value>, key: &str, path: &str) -> Option<f64> {
        let f = self.number(parent, key, path)?;
        match crate::time::check_secs(f) {
            Ok(f) => Some(f),
            Err(e) => {
                self.error(join(path, key), e.to_string());
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int_in(&mut self, parent: &Map<String, Value>, key: &str, path: &str, min: i64, max: i64) -> Option<i64> {
        let n = self.int(parent, key, path, min)?;
        if n <= max {
            Some(n)
        } else {
            self.error(join(path, key), format!("must be at most {max}, got {n}"));
            None
        }
    }

    pub fn string(&mut self, parent: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match parent.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Null => None,
            other => {
                self.error(
                    join(path, key),
                    format!("expected a non-empty string, got {}", show(other)),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, parent: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        match parent.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            other => {
                self.error(join(path, key), format!("expected true or false, got {}", show(other)));
                None
            }
        }
    }

    /// A command line: an array of strings (run as is) or one string (run with `sh -c`).
    pub fn command(&mut self, parent: &Map<String, Value>, key: &str, path: &str) -> Option<Vec<String>> {
        match parent.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(vec!["sh".into(), "-c".into(), s.clone()]),
            Value::Array(items) if !items.is_empty() => {
                let strings: Option<Vec<String>> = items.iter().map(|i| i.as_str().map(str::to_string)).collect();
                match strings {
                    Some(s) if !s[0].is_empty() => Some(s),
                    _ => {
                        self.error(
                            join(path, key),
                            format!(
                                "expected an array of strings, got {}",
                                show(&Value::Array(items.clone()))
                            ),
                        );
                        None
                    }
                }
            }
            Value::Null => None,
            other => {
                self.error(
                    join(path, key),
                    format!(
                        "expected a command as an array of strings (e.g. [\"python3\", \"worker.py\"]), got {}",
                        show(other)
                    ),
                );
                None
            }
        }
    }

    pub fn string_map(&mut self, parent: &Map<String, Value>, key: &str, path: &str) -> Vec<(String, String)> {
        let Some(obj) = self.object(parent, key, path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in obj {
            match v {
                Value::String(s) => out.push((k.clone(), s.clone())),
                Value::Number(n) => out.push((k.clone(), n.to_string())),
                Value::Bool(b) => out.push((k.clone(), b.to_string())),
                other => self.error(
                    join(&join(path, key), k),
                    format!("expected a string, got {}", show(other)),
                ),
            }
        }
        out
    }
}
