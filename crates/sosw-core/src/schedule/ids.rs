//! Deterministic ids, so that scheduling a job twice, or again after a crash, creates each task once.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

fn hex32(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in bytes.iter().take(16) {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// JSON with object keys sorted at every level, so that key order does not change a job's identity.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The id of a job that does not name one: a hash of its labourer, its content and the date it is scheduled for
/// (a job with a relative `period` means other dates tomorrow).
pub fn job_id_of(labourer: &str, body: &Map<String, Value>, today: &str) -> String {
    let mut text = String::new();
    canonical(&Value::Object(body.clone()), &mut text);
    let mut h = Sha256::new();
    h.update(labourer.as_bytes());
    h.update([0]);
    h.update(today.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    hex32(&h.finalize())
}

/// The ids of one job's tasks: 32 lowercase hex characters, like Python sosw's `uuid1().hex` — 16 from the job's
/// hash, then the task's index in 16. A job's tasks thus have consecutive ids, and writing a large job appends to
/// the stores' key order instead of scattering over it (random ids made SQLite scheduling I/O-bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskIds {
    prefix: String,
}

impl TaskIds {
    pub fn new(job_id: &str) -> TaskIds {
        let mut h = Sha256::new();
        h.update(job_id.as_bytes());
        let mut prefix = hex32(&h.finalize());
        prefix.truncate(16);
        TaskIds { prefix }
    }

    pub fn id(&self, index: u64) -> String {
        let mut s = String::with_capacity(32);
        s.push_str(&self.prefix);
        let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{index:016x}"));
        s
    }
}

/// The id of the `index`-th task of a job (see [`TaskIds`]).
pub fn task_id(job_id: &str, index: u64) -> String {
    TaskIds::new(job_id).id(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_stable_and_order_blind() {
        let a = json!({"x": 1, "nested": {"b": [1, 2], "a": null}})
            .as_object()
            .cloned()
            .expect("object");
        let b = json!({"nested": {"a": null, "b": [1, 2]}, "x": 1})
            .as_object()
            .cloned()
            .expect("object");
        assert_eq!(job_id_of("w", &a, "2019-01-30"), job_id_of("w", &b, "2019-01-30"));
        assert_ne!(job_id_of("w", &a, "2019-01-30"), job_id_of("v", &a, "2019-01-30"));
        assert_ne!(job_id_of("w", &a, "2019-01-30"), job_id_of("w", &a, "2019-01-31"));
        let id = task_id("job", 0);
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(id, task_id("job", 0));
        assert_ne!(id, task_id("job", 1));
        assert_ne!(id, task_id("job2", 0));
        assert!(task_id("job", 9) < task_id("job", 10), "a job's ids sort in task order");
        assert_eq!(&task_id("job", 255)[16..], "00000000000000ff");
    }
}
