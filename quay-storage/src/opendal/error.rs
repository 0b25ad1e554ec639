//! OpenDAL errors mapped to the engine's error kinds, in one place.

use quay_core::{Error, ErrorKind};

/// Maps an OpenDAL error raised by `operation` on `path` in location `name`.
pub(crate) fn map(err: opendal::Error, name: &str, operation: &'static str, path: &str) -> Error {
    use opendal::ErrorKind as K;
    let kind = match err.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::Unsupported => ErrorKind::Unsupported,
        K::ConfigInvalid => ErrorKind::Config,
        K::RangeNotSatisfied => ErrorKind::RangeInvalid,
        K::AlreadyExists | K::ConditionNotMatch | K::Conflict => ErrorKind::Conflict,
        K::PermissionDenied => ErrorKind::Unavailable,
        K::RateLimited => ErrorKind::Unavailable,
        _ if err.is_temporary() => ErrorKind::Unavailable,
        // Unexpected errors of a remote service (connection refused, 5xx) are outages for us.
        K::Unexpected => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    let temporary = err.is_temporary() || kind == ErrorKind::Unavailable;
    // OpenDAL's own message carries the service's context; it holds no credentials.
    Error::new(kind, format!("storage {operation} failed"))
        .with_context("location", name)
        .with_context("path", path)
        .with_source(err)
        .set_temporary(temporary)
}

/// OpenDAL's message when a response holds fewer bytes than asked for. On a ranged read of an
/// object store (S3 answers `206` with the bytes up to the end when a range runs past it) that
/// means the range ran past the end.
const SHORT_READ: &str = "reader got unexpected data size";

/// Maps an error of a read; `ranged` tells whether it asked for a range. A range past the end
/// is answered differently by each service: `416` (mapped as such), a short `206` (S3), or a
/// malformed `Content-Range` (Azurite). The last two are OpenDAL's permanent "unexpected"
/// errors; on a ranged read they are the range's fault, not an outage.
pub(crate) fn map_read(err: opendal::Error, name: &str, path: &str, ranged: bool) -> Error {
    if !ranged || err.kind() != opendal::ErrorKind::Unexpected || err.is_temporary() {
        return map(err, name, "read", path);
    }
    let kind = match err.message() == SHORT_READ {
        true => ErrorKind::RangeInvalid,
        false => ErrorKind::Internal,
    };
    Error::new(kind, "storage read failed: the range could not be served")
        .with_context("location", name)
        .with_context("path", path)
        .with_source(err)
}

/// Maps an I/O error from a byte stream (OpenDAL reports stream errors as `io::Error`);
/// `ranged` tells whether the read asked for a range.
pub(crate) fn map_io(err: std::io::Error, name: &str, path: &str, ranged: bool) -> Error {
    // The `io::Error` usually wraps an OpenDAL error: map that one, so its kind survives (a
    // range past the end is `RangeInvalid`, not an outage).
    let io_kind = err.kind();
    let err = match err
        .into_inner()
        .map(|inner| inner.downcast::<opendal::Error>())
    {
        Some(Ok(inner)) => return map_read(*inner, name, path, ranged),
        Some(Err(other)) => std::io::Error::new(io_kind, other),
        None => std::io::Error::from(io_kind),
    };
    let kind = match err.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, "storage read failed")
        .with_context("location", name)
        .with_context("path", path)
        .with_source(err)
}
