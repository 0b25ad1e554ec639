#![no_main]
//! `Range` and `Content-Range` parsing never panics; a resolved range lies inside the content.
use libfuzzer_sys::fuzz_target;
use quay_core::range::{parse_content_range, ByteRange};

fuzz_target!(|data: (u64, &[u8])| {
    let (size, text) = data;
    if let Ok(s) = std::str::from_utf8(text) {
        if let Ok(Some(r)) = ByteRange::parse_header(s) {
            if let Ok(resolved) = r.resolve(size) {
                assert!(resolved.start < resolved.end && resolved.end <= size);
            }
        }
        if let Ok(r) = parse_content_range(s) {
            assert!(r.start < r.end);
        }
    }
});
