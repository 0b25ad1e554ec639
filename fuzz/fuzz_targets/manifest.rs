#![no_main]
//! Manifest and index parsing never panics, whatever the bytes and content type.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ct, body) = match data.split_first() {
        Some((0, rest)) => (None, rest),
        Some((1, rest)) => (Some(quay_core::media_types::OCI_MANIFEST), rest),
        Some((2, rest)) => (Some(quay_core::media_types::OCI_INDEX), rest),
        Some((3, rest)) => (Some(quay_core::media_types::DOCKER_MANIFEST), rest),
        Some((_, rest)) => (Some(quay_core::media_types::DOCKER_MANIFEST_LIST), rest),
        None => (None, data),
    };
    let _ = quay_core::parse_manifest(ct, body);
});
