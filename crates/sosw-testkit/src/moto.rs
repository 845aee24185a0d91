//! moto_server's test hooks: Lambda without Docker, and its request recorder, which shows what a test's code
//! actually sent (here: asynchronous Lambda invocations and their events). The recorder is global to the server:
//! only one test at a time may record (tests in different test binaries run one binary after another).

use base64::Engine;
use serde_json::{json, Value};

fn api(endpoint: &str, path: &str) -> String {
    format!("{endpoint}/moto-api/{path}")
}

/// Lambda invocations answered without Docker (`{"lambda": {"use_docker": false}}`).
pub async fn lambda_without_docker(endpoint: &str) {
    reqwest::Client::new()
        .post(api(endpoint, "config"))
        .json(&json!({"lambda": {"use_docker": false}}))
        .send()
        .await
        .expect("moto's config API answers");
}

/// Clears the recording and starts recording.
pub async fn start_recording(endpoint: &str) {
    let http = reqwest::Client::new();
    for path in ["recorder/reset-recording", "recorder/start-recording"] {
        http.post(api(endpoint, path))
            .send()
            .await
            .expect("moto's recorder answers");
    }
}

/// Stops recording; returns every request the server received since [`start_recording`], in order: moto's
/// entries (`method`, `url`, `headers`, `body`, `body_encoded`).
pub async fn recorded_requests(endpoint: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    http.post(api(endpoint, "recorder/stop-recording"))
        .send()
        .await
        .expect("moto's recorder answers");
    let text = http
        .get(api(endpoint, "recorder/download-recording"))
        .send()
        .await
        .expect("the recording")
        .text()
        .await
        .expect("the recording as text");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("a recorded request"))
        .collect()
}

/// A recorded request's body, decoded.
pub fn body_of(entry: &Value) -> Vec<u8> {
    let body = entry["body"].as_str().unwrap_or_default();
    if entry["body_encoded"] == json!(true) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("a base64 body")
    } else {
        body.as_bytes().to_vec()
    }
}

/// A recorded request's header, by name in any case.
pub fn header<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    entry["headers"]
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .and_then(|(_, v)| v.as_str())
}

/// The events of the asynchronous (`Event`) invocations among `requests` of functions whose name or ARN contains
/// `function`, in the order they were sent. An invocation of another type fails the test.
pub fn invocations_in(requests: &[Value], function: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in requests {
        let url = entry["url"].as_str().unwrap_or_default();
        if !(url.contains(function) && url.ends_with("/invocations")) {
            continue;
        }
        assert_eq!(
            header(entry, "x-amz-invocation-type"),
            Some("Event"),
            "invoked asynchronously: {entry}"
        );
        out.push(serde_json::from_slice(&body_of(entry)).expect("the event is JSON"));
    }
    out
}

/// Stops recording; returns the events of the asynchronous (`Event`) invocations of functions whose name or ARN
/// contains `function`, in the order they were sent. An invocation of another type fails the test.
pub async fn recorded_invocations(endpoint: &str, function: &str) -> Vec<Value> {
    invocations_in(&recorded_requests(endpoint).await, function)
}
