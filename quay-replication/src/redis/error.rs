//! The one place where Redis and pool errors become [`quay_core::Error`]s.
//!
//! | Redis error                                                   | kind          | temporary |
//! |---------------------------------------------------------------|---------------|-----------|
//! | no connection within the timeout (refused, unreachable, slow) | `Unavailable` | yes       |
//! | I/O, connection dropped, response timeout                     | `Unavailable` | yes       |
//! | `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`, `READONLY`, `OOM` | `Unavailable` | yes |
//! | authentication refused (`NOAUTH`, `WRONGPASS`), `NOPERM`, bad client settings | `Config` | no |
//! | anything else (a script error, an unexpected reply)           | `Internal`    | no        |
//!
//! Every error carries the operation as context. No message holds the password: the client is
//! built from parsed settings, never from a URL, and Redis errors do not echo it.

use std::time::Duration;

use bb8_redis::redis::{self, RedisError};
use quay_core::{Error, ErrorKind};

/// Maps a Redis error raised by `operation`.
pub(crate) fn redis_error(operation: &'static str, err: RedisError) -> Error {
    let (kind, temporary) = classify(&err);
    Error::new(kind, format!("Redis error during {operation}"))
        .set_temporary(temporary)
        .with_context("operation", operation)
        .with_source(err)
}

/// No connection could be had within `timeout`; `cause` is the last connection error seen.
/// A cause that is a setting (a refused password) keeps its kind: waiting will not fix it.
pub(crate) fn unreachable(
    operation: &'static str,
    endpoint: &str,
    timeout: Duration,
    cause: Option<RedisError>,
) -> Error {
    let (kind, temporary) = cause
        .as_ref()
        .map(classify)
        .filter(|(kind, _)| *kind == ErrorKind::Config)
        .unwrap_or((ErrorKind::Unavailable, true));
    let message = format!("Redis at {endpoint} gave no connection within {timeout:?}");
    let err = Error::new(kind, message)
        .set_temporary(temporary)
        .with_context("operation", operation);
    match cause {
        Some(cause) => err.with_source(cause),
        None => err,
    }
}

/// A reply that does not have the shape the scripts return: a bug or a foreign key.
pub(crate) fn bad_reply(operation: &'static str, what: impl std::fmt::Display) -> Error {
    Error::internal(format!("unexpected Redis reply to {operation}: {what}"))
        .with_context("operation", operation)
}

fn classify(err: &RedisError) -> (ErrorKind, bool) {
    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
        return (ErrorKind::Unavailable, true);
    }
    match err.code() {
        Some(
            "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "READONLY" | "OOM",
        ) => return (ErrorKind::Unavailable, true),
        Some("NOAUTH" | "WRONGPASS" | "NOPERM") => return (ErrorKind::Config, false),
        _ => {}
    }
    match err.kind() {
        redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig => {
            (ErrorKind::Config, false)
        }
        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
        | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
        | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
        | redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
        | redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly) => {
            (ErrorKind::Unavailable, true)
        }
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => (ErrorKind::Config, false),
        _ => (ErrorKind::Internal, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_temporary() {
        let err = redis_error("claim", RedisError::from(std::io::Error::other("reset")));
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_temporary());
        assert_eq!(err.context(), &[("operation", "claim".to_owned())]);
    }

    #[test]
    fn authentication_is_a_config_error() {
        let err = redis_error(
            "connect",
            RedisError::from((redis::ErrorKind::AuthenticationFailed, "refused")),
        );
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.is_temporary());
    }

    #[test]
    fn unreachable_names_the_endpoint_and_cause() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = unreachable(
            "claim",
            "127.0.0.1:1/0",
            Duration::from_secs(5),
            Some(RedisError::from(refused)),
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_temporary());
        assert!(err.to_string().contains("127.0.0.1:1/0"), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
        let auth = RedisError::from((redis::ErrorKind::AuthenticationFailed, "bad password"));
        let err = unreachable("claim", "h:1/0", Duration::from_secs(5), Some(auth));
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.is_temporary());
    }
}
