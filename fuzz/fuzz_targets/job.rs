//! A Scheduler event: any bytes, as JSON, extracted as a job and walked with a small budget (the walk stops after
//! 100 tasks, so that a tiny job describing billions of tasks costs nothing here), under a fixed two-level schema and
//! under the event's own `job_schema`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use sosw_core::schedule::{chunk_each, extract_job, Date, Schema};
use std::ops::ControlFlow;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let job = match extract_job(&event) {
        Ok(job) => job,
        Err(e) => {
            assert!(!e.to_string().trim().is_empty());
            return;
        }
    };
    let today = Date::from_ymd(2024, 2, 29).expect("a date");
    let fixed = json!({"job_schema": {"chunkable_attrs": [["section", {}], ["store", {}], ["product", {}]]}});
    let own = json!({"job_schema": job.body.get("job_schema").cloned().unwrap_or(Value::Null)});
    for config in [fixed, own] {
        let Ok(schema) = Schema::from_config(&config, None) else {
            continue;
        };
        let mut budget = 100;
        let walked = chunk_each(&job.body, &schema, today, &mut |_task| {
            budget -= 1;
            if budget == 0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Err(e) = walked {
            assert!(!e.to_string().trim().is_empty());
        }
    }
});
