//! Building connection pools from a database URL.
//!
//! The pools are built from sqlx's parsed options rather than through `sea_orm::Database`, so
//! that SQLite gets its pragmas and pool shape, and so that no error message ever repeats the
//! URL (it may hold a password).

use std::str::FromStr;
use std::time::Duration;

use quay_core::{Error, ErrorKind, Result};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::sqlx::Connection;
use sea_orm::{DatabaseConnection, SqlxPostgresConnector, SqlxSqliteConnector};

use super::error::{sqlite_primary_code, sqlx_error};

/// How long a SQLite writer waits for the database lock before giving up.
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections of a file-backed SQLite pool: WAL lets readers run beside the one writer.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// Connections of a Postgres pool.
const POSTGRES_MAX_CONNECTIONS: u32 = 16;
/// How long an operation waits for a pooled connection by default.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a pool for `url`: `sqlite:...` or `postgres://...` / `postgresql://...`.
pub(crate) async fn open(url: &str, timeout: Duration) -> Result<DatabaseConnection> {
    if url.starts_with("sqlite:") {
        open_sqlite(url, timeout).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        open_postgres(url, timeout).await
    } else {
        let scheme: String = url
            .split(':')
            .next()
            .unwrap_or_default()
            .chars()
            .take(32)
            .collect();
        Err(Error::new(
            ErrorKind::Config,
            "unsupported metadata database URL: use sqlite:PATH or postgres://...",
        )
        .with_context("scheme", scheme))
    }
}

async fn open_sqlite(url: &str, timeout: Duration) -> Result<DatabaseConnection> {
    // An in-memory database lives as long as its connection: the pool keeps exactly one, for
    // ever, so that every operation sees the same database.
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut options = SqliteConnectOptions::from_str(url)
        .map_err(|e| sqlx_error("connect", e))?
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let pool = if in_memory {
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        SqlitePoolOptions::new().max_connections(SQLITE_MAX_CONNECTIONS)
    };
    let pool = pool.acquire_timeout(timeout);
    // The first connection switches a new file to WAL, which needs the database to itself:
    // while another process (or pool) migrates the same new file, SQLite refuses the switch
    // with "database is locked" at once, without waiting. Such a refusal is tried again until
    // the busy timeout has passed; once the file is in WAL mode, the switch is a no-op.
    let deadline = tokio::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
    let pool = loop {
        match pool.clone().connect_with(options.clone()).await {
            Ok(pool) => break pool,
            Err(e) if is_locked(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                return Err(sqlx_error("connect", e).with_context("backend", "sqlite"));
            }
        }
    };
    Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// Whether SQLite refused for a lock another connection holds (`SQLITE_BUSY` or
/// `SQLITE_LOCKED`, with their extended codes).
fn is_locked(e: &sea_orm::sqlx::Error) -> bool {
    match e {
        sea_orm::sqlx::Error::Database(db) => {
            matches!(sqlite_primary_code(db.as_ref()), Some(5 | 6))
        }
        _ => false,
    }
}

async fn open_postgres(url: &str, timeout: Duration) -> Result<DatabaseConnection> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| sqlx_error("connect", e))?
        .application_name("quay-rs")
        // The server keeps its notices ("relation … already exists, skipping", from the
        // idempotent DDL run at every start) to itself: sqlx would log each at INFO.
        // No JIT: every statement here is short, and the planner's estimate for the
        // collector's recursive query (millions of rows where there are thousands) made the
        // server spend 0.4 s compiling a query that runs in 0.09 s.
        .options([("client_min_messages", "warning"), ("jit", "off")]);
    let host = format!("{}:{}", options.get_host(), options.get_port());
    let unreachable = |e| {
        sqlx_error("connect", e)
            .with_context("backend", "postgres")
            .with_context("host", &host)
    };
    // The pool retries a refused connection until its acquire timeout runs out; one direct
    // attempt first makes a server that is down (or a wrong password) fail at once.
    let probe = match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Ok(r) => r.map_err(unreachable)?,
        Err(_) => {
            return Err(quay_core::Error::new(
                quay_core::ErrorKind::Timeout,
                format!("no answer from the database within {timeout:?}"),
            )
            .with_context("host", &host))
        }
    };
    // Closing politely only spares the server a log line.
    let _ = probe.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .map_err(unreachable)?;
    Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
}
