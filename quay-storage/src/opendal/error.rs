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

/// Maps an I/O error from a byte stream (OpenDAL reports stream errors as `io::Error`).
pub(crate) fn map_io(err: std::io::Error, name: &str, path: &str) -> Error {
    // The `io::Error` usually wraps an OpenDAL error: map that one, so its kind survives (a
    // range past the end is `RangeInvalid`, not an outage).
    let io_kind = err.kind();
    let err = match err
        .into_inner()
        .map(|inner| inner.downcast::<opendal::Error>())
    {
        Some(Ok(inner)) => return map(*inner, name, "read", path),
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
