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

/// Stops recording; returns the events of the asynchronous (`Event`) invocations of functions whose name or ARN
/// contains `function`, in the order they were sent. An invocation of another type fails the test.
pub async fn recorded_invocations(endpoint: &str, function: &str) -> Vec<Value> {
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
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line).expect("a recorded request");
        let url = entry["url"].as_str().unwrap_or_default();
        if !(url.contains(function) && url.ends_with("/invocations")) {
            continue;
        }
        let kind = entry["headers"]
            .as_object()
            .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-amz-invocation-type")))
            .and_then(|(_, v)| v.as_str());
        assert_eq!(kind, Some("Event"), "invoked asynchronously: {entry}");
        let body = entry["body"].as_str().unwrap_or_default();
        let bytes = if entry["body_encoded"] == json!(true) {
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .expect("a base64 body")
        } else {
            body.as_bytes().to_vec()
        };
        out.push(serde_json::from_slice(&bytes).expect("the event is JSON"));
    }
    out
}
