//! Task payloads and the flat worker event (reference §2.8, §5.3.2).

use crate::task::{Task, WorkerReport};
use serde_json::{Map, Value};

/// A JSON number that is an integer when the value is whole, as Python reads DynamoDB `N` values.
pub fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// Builds a task payload the way `construct_payload_for_task` does, without its crash on non-object JSON text:
/// a JSON object is the base; a string is parsed (an object is the base, anything else, or text that is not JSON,
/// is kept under `"payload"`); any other value is kept under `"payload"`. Every `extra` key is then set on it.
pub fn construct_payload(base: Option<Value>, extra: Map<String, Value>) -> Map<String, Value> {
    let mut payload = match base {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => m,
            Ok(other) => single("payload", other),
            Err(_) => single("payload", Value::String(s)),
        },
        Some(other) => single("payload", other),
    };
    payload.extend(extra);
    payload
}

fn single(key: &str, v: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(key.to_string(), v);
    m
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of task `{task_id}` is not a JSON object: {reason}")]
    NotAnObject { task_id: String, reason: String },
}

/// The event a worker receives: the task's payload object overlaid with the task's own fields (`task_id`,
/// `labourer_id`, `created_at`, `greenfield`, `attempts`, and `completed_at` if set). `greenfield` and
/// `attempts` are the values from before this invocation, exactly as Python sosw sends them.
pub fn worker_event(task: &Task) -> Result<Map<String, Value>, PayloadError> {
    let mut event = match serde_json::from_str::<Value>(&task.payload) {
        Ok(Value::Object(m)) => m,
        Ok(other) => {
            return Err(PayloadError::NotAnObject {
                task_id: task.task_id.clone(),
                reason: format!("found {}", json_kind(&other)),
            })
        }
        Err(e) => {
            return Err(PayloadError::NotAnObject {
                task_id: task.task_id.clone(),
                reason: e.to_string(),
            })
        }
    };
    event.insert("task_id".into(), task.task_id.clone().into());
    event.insert("labourer_id".into(), task.labourer_id.clone().into());
    event.insert("created_at".into(), number(task.created_at));
    event.insert("greenfield".into(), task.greenfield.into());
    event.insert("attempts".into(), task.attempts.into());
    if let Some(c) = task.completed_at {
        event.insert("completed_at".into(), c.into());
    }
    Ok(event)
}

/// A JSON value as an error message shows it: its first 80 characters (a 64 MiB body is not sent back).
pub fn shown(v: &Value) -> String {
    const CHARS: usize = 80;
    // Serialised only as far as shown (at most 4 bytes a character): a large value costs no more than a small one.
    let mut head = Head(Vec::with_capacity(CHARS * 4));
    let whole = serde_json::to_writer(&mut head, v).is_ok();
    let s = String::from_utf8_lossy(&head.0);
    match s.char_indices().nth(CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None if whole => s.into_owned(),
        None => format!("{s}…"),
    }
}

/// A writer that takes the first `capacity` bytes and then refuses more.
struct Head(Vec<u8>);

impl std::io::Write for Head {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.0.capacity() - self.0.len();
        if room == 0 {
            return Err(std::io::Error::other("enough"));
        }
        let n = buf.len().min(room);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a JSON value is, for an error message ("a string", "an array", ...).
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` must be a JSON object or the text of one, got {got}")]
pub struct ReportFieldError {
    pub field: &'static str,
    pub got: String,
}

/// WorkerAssistant accepts `stats` and `result` as objects or as JSON strings holding objects (WA-2).
pub fn report_part(field: &'static str, v: Option<&Value>) -> Result<Map<String, Value>, ReportFieldError> {
    let bad = |got: &str| ReportFieldError {
        field,
        got: got.to_string(),
    };
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(bad(&truncate(s))),
        },
        Some(other) => Err(bad(json_kind(other))),
    }
}

/// A [`WorkerReport`] from the `stats` and `result` of a WorkerAssistant event.
pub fn worker_report(event: &Map<String, Value>) -> Result<WorkerReport, ReportFieldError> {
    Ok(WorkerReport {
        stats: report_part("stats", event.get("stats"))?,
        result: report_part("result", event.get("result"))?,
        of: None,
    })
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_shown_by_its_first_80_characters() {
        use serde_json::json;
        let cases = [
            (json!(7), "7".to_string()),
            (json!("short"), "\"short\"".to_string()),
            (json!(vec![7; 100]), format!("[{}…", vec!["7"; 40].join(","))),
            (json!("é".repeat(200)), format!("\"{}…", "é".repeat(79))),
        ];
        for (v, want) in cases {
            assert_eq!(shown(&v), want);
        }
        // A value of 8 MB is cut as early, without writing it out.
        assert_eq!(shown(&json!(vec![1; 4_000_000])).chars().count(), 81);
    }
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn construct_payload_tm9() {
        let cases: Vec<(Option<Value>, Value, Value)> = vec![
            (Some(json!({"foo": 42})), json!({}), json!({"foo": 42})),
            (Some(json!("{\"foo\": 42}")), json!({}), json!({"foo": 42})),
            (
                Some(json!({"foo": 42})),
                json!({"shops": [1, 3]}),
                json!({"foo": 42, "shops": [1, 3]}),
            ),
            (None, json!({"bar": "foo"}), json!({"bar": "foo"})),
            (None, json!({"bar": {"foo": 3}}), json!({"bar": {"foo": 3}})),
            (Some(json!("not json")), json!({}), json!({"payload": "not json"})),
            (Some(json!([1, 2])), json!({"x": 1}), json!({"payload": [1, 2], "x": 1})),
            // The original raises TypeError here.
            (Some(json!("[1,2]")), json!({}), json!({"payload": [1, 2]})),
            // TM-7
            (
                Some(json!({"foo": 42})),
                json!({"shops": [1, 3], "lloyd": "green ninja"}),
                json!({"foo": 42, "shops": [1, 3], "lloyd": "green ninja"}),
            ),
        ];
        for (base, extra, want) in cases {
            assert_eq!(
                Value::Object(construct_payload(base.clone(), obj(extra))),
                want,
                "base {base:?}"
            );
        }
    }

    fn task(payload: &str) -> Task {
        Task {
            task_id: "t1".into(),
            labourer_id: "w".into(),
            created_at: 1.0,
            greenfield: crate::Greenfield::new(5),
            attempts: 0,
            payload: payload.into(),
            completed_at: None,
            failed_attempts: 0,
            refunded_attempts: 0,
            stats: Map::new(),
            result: Map::new(),
        }
    }

    #[test]
    fn worker_event_tm24() {
        let e = worker_event(&task(r#"{"a":1,"task_id":"zzz"}"#)).expect("valid");
        assert_eq!(
            serde_json::to_string(&e).expect("serialises"),
            r#"{"a":1,"task_id":"t1","labourer_id":"w","created_at":1,"greenfield":5,"attempts":0}"#
        );
        let mut t = task("{}");
        t.created_at = 1712345678.123456;
        assert_eq!(worker_event(&t).expect("valid")["created_at"], json!(1712345678.123456));
    }

    #[test]
    fn poison_payloads_are_typed_errors() {
        assert!(matches!(
            worker_event(&task("[1]")),
            Err(PayloadError::NotAnObject { .. })
        ));
        assert!(matches!(
            worker_event(&task("{'a': 1}")),
            Err(PayloadError::NotAnObject { .. })
        ));
    }

    #[test]
    fn report_parts_wa2() {
        let e = obj(json!({"stats": "{\"s_key\": \"value\"}", "result": {"r_key": "value"}}));
        let r = worker_report(&e).expect("valid");
        assert_eq!(Value::Object(r.stats), json!({"s_key": "value"}));
        assert_eq!(Value::Object(r.result), json!({"r_key": "value"}));
        assert!(report_part("stats", Some(&json!("[1]"))).is_err());
        assert!(report_part("stats", Some(&json!(3))).is_err());
        assert_eq!(report_part("stats", None), Ok(Map::new()));
    }
}
