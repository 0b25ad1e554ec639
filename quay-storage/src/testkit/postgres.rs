//! A fresh PostgreSQL database per test.
//!
//! [`fresh_database`] connects to the server named by `QUAY_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), creates a database `quay_test_<hex>` and
//! returns its URL. When the server cannot be reached it fails with a message that says how to
//! start it: tests that need Postgres fail, they never skip.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use quay_core::{Error, ErrorKind, Result};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, Connection, Executor};

use super::metadata::MetadataHarness;
use crate::SqlMetadataStore;

/// The environment variable naming the server (and the database to connect to first).
pub const POSTGRES_URL_VAR: &str = "QUAY_TEST_POSTGRES_URL";

/// The server used when [`POSTGRES_URL_VAR`] is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How to start the development and CI server.
const START_HINT: &str =
    "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// A database created for one test. Remove it with [`TestDatabase::drop_database`].
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
    /// Its name, `quay_test_<32 hex>`.
    pub name: String,
    admin: PgConnectOptions,
}

impl fmt::Debug for TestDatabase {
    // The URLs may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Creates an empty database with a random name on the test server.
pub async fn fresh_database() -> Result<TestDatabase> {
    let admin_url =
        std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let admin = PgConnectOptions::from_str(&admin_url).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("{POSTGRES_URL_VAR} is not a valid postgres:// URL"),
        )
        .with_source(e)
    })?;
    let name = format!("quay_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin_connection(&admin).await?;
    let created = conn
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await;
    close(conn).await;
    created.map_err(|e| admin_error("create a test database", &admin, e))?;
    Ok(TestDatabase {
        url: with_database(&admin_url, &name),
        name,
        admin,
    })
}

impl TestDatabase {
    /// Drops the database, closing any connection still open on it.
    pub async fn drop_database(self) -> Result<()> {
        let mut conn = admin_connection(&self.admin).await?;
        let dropped = conn
            .execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name).as_str())
            .await;
        close(conn).await;
        dropped.map_err(|e| admin_error("drop a test database", &self.admin, e))?;
        Ok(())
    }

    /// [`drop_database`](Self::drop_database) from synchronous code, such as a `Drop` (there
    /// is no async drop), even inside a runtime: it runs on a thread and runtime of its own
    /// and waits for them.
    pub fn drop_database_blocking(self) -> Result<()> {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::internal(format!("cannot start a runtime: {e}")))?
                .block_on(self.drop_database())
        })
        .join()
        .unwrap_or_else(|_| Err(Error::internal("dropping a test database panicked")))
    }
}

/// A [`SqlMetadataStore`] on a fresh database, with the handle that drops it.
pub async fn fresh_postgres() -> Result<(SqlMetadataStore, TestDatabase)> {
    let db = fresh_database().await?;
    match SqlMetadataStore::connect(&db.url).await {
        Ok(store) => Ok((store, db)),
        Err(e) => {
            // Best effort: the connect error is the one worth reporting.
            let _ = db.drop_database().await;
            Err(e)
        }
    }
}

/// [`SqlMetadataStore`] on a fresh Postgres database per case.
#[derive(Debug)]
pub struct PostgresHarness {
    db: TestDatabase,
}

#[async_trait]
impl MetadataHarness for PostgresHarness {
    type Store = SqlMetadataStore;

    async fn create() -> Result<Self> {
        Ok(PostgresHarness {
            db: fresh_database().await?,
        })
    }

    async fn open(&self) -> Result<SqlMetadataStore> {
        SqlMetadataStore::connect(&self.db.url).await
    }

    async fn destroy(self) -> Result<()> {
        self.db.drop_database().await
    }
}

async fn admin_connection(admin: &PgConnectOptions) -> Result<PgConnection> {
    PgConnection::connect_with(admin).await.map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "PostgreSQL for tests is not reachable at {} ({POSTGRES_URL_VAR} names another \
                 server); {START_HINT}",
                host(admin)
            ),
        )
        .with_source(e)
    })
}

async fn close(conn: PgConnection) {
    // Closing politely only saves the server a log line.
    let _ = conn.close().await;
}

fn admin_error(action: &str, admin: &PgConnectOptions, e: sqlx::Error) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "cannot {action} on the PostgreSQL test server at {}",
            host(admin)
        ),
    )
    .with_source(e)
}

fn host(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// `url` with its database (path) replaced by `name`, keeping credentials and parameters.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t"),
            "postgres://postgres@127.0.0.1:5432/t"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t"),
            "postgres://u:p@h/t?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h:1", "t"), "postgresql://h:1/t");
    }
}
