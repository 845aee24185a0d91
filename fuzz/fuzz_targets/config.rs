//! The config as a user writes it: any bytes, as JSON, through the one-layer and the layered readers. A panic is a
//! bug; a refusal must name the key path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosw_core::config::Config;
use sosw_core::Essential;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Err(errors) = Config::from_value(&value) {
        assert!(!errors.0.is_empty());
        for e in &errors.0 {
            assert!(!e.message.trim().is_empty(), "{e:?}");
            assert!(!value.is_object() || !e.path.is_empty(), "{e:?}");
        }
    }
    // The same value as the shared layer and as an essential's layer on top of it.
    let layers = [value.clone(), value];
    let _ = Config::from_layers(&layers, Essential::Scheduler);
});
