//! The one place where sea-orm and sqlx errors become [`quay_core::Error`]s.
//!
//! | database error                                         | kind          | temporary |
//! |--------------------------------------------------------|---------------|-----------|
//! | connect, pool timeout or closed, I/O, TLS, protocol    | `Unavailable` | yes       |
//! | SQLite `BUSY` / `LOCKED` (busy timeout ran out)        | `Unavailable` | yes       |
//! | SQLite `IOERR`, `FULL`, `CANTOPEN`                     | `Unavailable` | yes       |
//! | Postgres classes 08 (connection), 53 (resources), 57P  | `Unavailable` | yes       |
//! | Postgres serialization failure, deadlock               | `Conflict`    | yes       |
//! | unique violation                                       | `Conflict`    | no        |
//! | foreign-key violation (a concurrent delete won a race) | `Conflict`    | no        |
//! | an invalid database URL or option                      | `Config`      | no        |
//! | anything else                                          | `Internal`    | no        |
//!
//! Every error carries the operation as context. Messages never include the connection URL:
//! the pools are built from parsed options, and sqlx's errors name no URL.

use quay_core::{Error, ErrorKind};
use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr};

/// Maps a sea-orm error raised by `operation`.
pub(crate) fn db_error(operation: &'static str, err: DbErr) -> Error {
    let (kind, temporary) = classify_db(&err);
    Error::new(kind, format!("metadata database error during {operation}"))
        .set_temporary(temporary)
        .with_context("operation", operation)
        .with_source(err)
}

/// Maps an sqlx error raised by `operation` (connecting, the test helpers).
pub(crate) fn sqlx_error(operation: &'static str, err: sqlx::Error) -> Error {
    let (kind, temporary) = classify_sqlx(&err);
    Error::new(kind, format!("metadata database error during {operation}"))
        .set_temporary(temporary)
        .with_context("operation", operation)
        .with_source(err)
}

/// A stored value that does not parse back into its type: a corrupt row or a bug.
pub(crate) fn corrupt(what: &'static str, source: impl std::fmt::Display) -> Error {
    Error::internal(format!("corrupt {what} in the metadata database: {source}"))
}

/// A value that does not fit a BIGINT column.
pub(crate) fn too_large(what: &'static str, value: u64) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!(
            "{what} {value} does not fit the metadata database (at most {})",
            i64::MAX
        ),
    )
}

fn classify_db(err: &DbErr) -> (ErrorKind, bool) {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => (ErrorKind::Unavailable, true),
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            classify_sqlx(e)
        }
        _ => (ErrorKind::Internal, false),
    }
}

fn classify_sqlx(err: &sqlx::Error) -> (ErrorKind, bool) {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => (ErrorKind::Unavailable, true),
        sqlx::Error::Database(db) => classify_database(db.as_ref()),
        sqlx::Error::Configuration(_) => (ErrorKind::Config, false),
        _ => (ErrorKind::Internal, false),
    }
}

/// The primary result code of a SQLite error (extended result codes keep it in the low byte);
/// `None` for another database's error.
pub(crate) fn sqlite_primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    db.code()?.parse::<i32>().ok().map(|code| code & 0xff)
}

fn classify_database(db: &dyn sqlx::error::DatabaseError) -> (ErrorKind, bool) {
    if db.is_unique_violation() || db.is_foreign_key_violation() {
        return (ErrorKind::Conflict, false);
    }
    let code = db.code().unwrap_or_default();
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // BUSY (5), LOCKED (6), IOERR (10), FULL (13), CANTOPEN (14).
        if matches!(sqlite_primary_code(db), Some(5 | 6 | 10 | 13 | 14)) {
            return (ErrorKind::Unavailable, true);
        }
        return (ErrorKind::Internal, false);
    }
    match &*code {
        "40001" | "40P01" => (ErrorKind::Conflict, true),
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
            (ErrorKind::Unavailable, true)
        }
        _ => (ErrorKind::Internal, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_temporary() {
        let err = sqlx_error(
            "connect",
            sqlx::Error::Io(std::io::Error::other("connection refused")),
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_temporary());
        assert_eq!(err.context(), &[("operation", "connect".to_owned())]);
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        let err = db_error(
            "get_upload",
            DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout),
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_temporary());
    }

    #[test]
    fn other_errors_are_internal() {
        let err = db_error("get_blob", DbErr::Custom("boom".into()));
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(!err.is_temporary());
    }
}
