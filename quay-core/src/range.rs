//! Parsing of the `Range` header of blob reads and the `Content-Range` header of upload chunks.

use std::ops::Range;

use crate::error::{Error, ErrorKind};

/// One byte range of a `Range: bytes=…` header, before it is resolved against a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `start-end`, both inclusive.
    Bounded {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// `start-`: from `start` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

fn range_invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::RangeInvalid, message)
}

impl ByteRange {
    /// Parses a `Range` header value. Returns `Ok(None)` for forms this registry answers with
    /// the whole content (several ranges, other units), as RFC 9110 allows.
    pub fn parse_header(value: &str) -> Result<Option<ByteRange>, Error> {
        let value = value.trim();
        let Some(spec) = value.strip_prefix("bytes=") else {
            return Ok(None);
        };
        if spec.contains(',') {
            return Ok(None);
        }
        let (a, b) = spec
            .trim()
            .split_once('-')
            .ok_or_else(|| range_invalid(format!("malformed Range {value:?}")))?;
        let num = |s: &str| -> Result<u64, Error> {
            s.trim()
                .parse::<u64>()
                .map_err(|_| range_invalid(format!("malformed Range {value:?}")))
        };
        match (a.trim().is_empty(), b.trim().is_empty()) {
            (true, true) => Err(range_invalid(format!("malformed Range {value:?}"))),
            (true, false) => Ok(Some(ByteRange::Suffix(num(b)?))),
            (false, true) => Ok(Some(ByteRange::From(num(a)?))),
            (false, false) => {
                let (start, end) = (num(a)?, num(b)?);
                if end < start {
                    return Err(range_invalid(format!(
                        "Range {value:?} ends before it starts"
                    )));
                }
                Ok(Some(ByteRange::Bounded { start, end }))
            }
        }
    }

    /// Resolves the range against content of `size` bytes into a half-open byte range.
    /// Fails with [`ErrorKind::RangeInvalid`] when it cannot be satisfied.
    pub fn resolve(self, size: u64) -> Result<Range<u64>, Error> {
        let unsatisfiable = || range_invalid(format!("range not satisfiable for {size} bytes"));
        match self {
            ByteRange::Bounded { start, end } => {
                if start >= size {
                    return Err(unsatisfiable());
                }
                Ok(start..end.min(size - 1) + 1)
            }
            ByteRange::From(start) => {
                if start >= size {
                    return Err(unsatisfiable());
                }
                Ok(start..size)
            }
            ByteRange::Suffix(n) => {
                if n == 0 || size == 0 {
                    return Err(unsatisfiable());
                }
                Ok(size - n.min(size)..size)
            }
        }
    }
}

/// Parses the `Content-Range` of an upload chunk: `start-end` (inclusive), with or without a
/// leading `bytes ` unit. Returns the half-open range of the chunk.
pub fn parse_content_range(value: &str) -> Result<Range<u64>, Error> {
    let v = value.trim();
    let v = v.strip_prefix("bytes").map(str::trim_start).unwrap_or(v);
    let v = v.strip_prefix('=').unwrap_or(v);
    let bad = || {
        range_invalid(format!(
            "malformed Content-Range {value:?}, expected start-end"
        ))
    };
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    let b = b.split('/').next().unwrap_or(b);
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = b.trim().parse().map_err(|_| bad())?;
    if end < start || end == u64::MAX {
        return Err(bad());
    }
    Ok(start..end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_forms() {
        assert_eq!(
            ByteRange::parse_header("bytes=0-9").unwrap(),
            Some(ByteRange::Bounded { start: 0, end: 9 })
        );
        assert_eq!(
            ByteRange::parse_header("bytes=5-").unwrap(),
            Some(ByteRange::From(5))
        );
        assert_eq!(
            ByteRange::parse_header("bytes=-3").unwrap(),
            Some(ByteRange::Suffix(3))
        );
        assert_eq!(ByteRange::parse_header("bytes=0-1,4-5").unwrap(), None);
        assert_eq!(ByteRange::parse_header("items=0-1").unwrap(), None);
        assert!(ByteRange::parse_header("bytes=x-1").is_err());
        assert!(ByteRange::parse_header("bytes=9-1").is_err());
        assert!(ByteRange::parse_header("bytes=-").is_err());
    }

    #[test]
    fn resolves() {
        let r = |s| ByteRange::parse_header(s).unwrap().unwrap();
        assert_eq!(r("bytes=0-9").resolve(5).unwrap(), 0..5);
        assert_eq!(r("bytes=2-").resolve(5).unwrap(), 2..5);
        assert_eq!(r("bytes=-2").resolve(5).unwrap(), 3..5);
        assert_eq!(r("bytes=-20").resolve(5).unwrap(), 0..5);
        assert!(r("bytes=5-").resolve(5).is_err());
        assert!(r("bytes=-0").resolve(5).is_err());
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("0-99").unwrap(), 0..100);
        assert_eq!(parse_content_range("bytes 10-19/*").unwrap(), 10..20);
        for bad in ["", "-", "5-4", "a-b", "1", "0-18446744073709551615"] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn header_parse_never_panics(s in ".{0,64}") {
            let _ = ByteRange::parse_header(&s);
            let _ = parse_content_range(&s);
        }

        #[test]
        fn resolved_ranges_lie_inside(start in 0u64..2000, len in 0u64..2000, size in 0u64..2000, kind in 0u8..3) {
            let range = match kind {
                0 => ByteRange::Bounded { start, end: start + len },
                1 => ByteRange::From(start),
                _ => ByteRange::Suffix(len),
            };
            if let Ok(r) = range.resolve(size) {
                prop_assert!(r.start < r.end);
                prop_assert!(r.end <= size);
            }
        }

        #[test]
        fn content_range_round_trips(start in 0u64..u64::MAX / 2, len in 1u64..1_000_000) {
            let end = start + len - 1;
            prop_assert_eq!(parse_content_range(&format!("{start}-{end}")).unwrap(), start..start + len);
        }
    }
}
