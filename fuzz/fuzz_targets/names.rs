#![no_main]
//! Digest, repository name, tag and reference parsers never panic, and what parses prints back
//! to the same text.
use libfuzzer_sys::fuzz_target;
use quay_core::{Digest, Reference, RepositoryName};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = s.parse::<Digest>() {
            assert_eq!(d.to_string(), s);
        }
        if let Ok(n) = s.parse::<RepositoryName>() {
            assert_eq!(n.as_str(), s);
        }
        let _ = s.parse::<Reference>();
    }
});
