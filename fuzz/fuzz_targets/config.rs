#![no_main]
//! The config loader never panics, whatever the YAML text and the preference override; a config
//! it accepts only names configured locations.
use libfuzzer_sys::fuzz_target;
use quay_core::config::QuayConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // Text after the first NUL, if any, is `QUAY_DISTRIBUTED_STORAGE_PREFERENCE`.
    let (text, preference) = match s.split_once('\0') {
        Some((text, preference)) => (text, Some(preference)),
        None => (s, None),
    };
    if let Ok(config) = QuayConfig::from_yaml(text, preference) {
        for id in config.preference.iter().chain(&config.default_locations) {
            assert!(config.locations.contains_key(id), "{id} is not configured");
        }
        let _ = format!("{config:?}");
    }
});
