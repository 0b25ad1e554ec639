//! [`SqlMetadataStore`]: the metadata store over sea-orm, on SQLite (the embedded default) and
//! PostgreSQL.
//!
//! # Schema
//!
//! Created by the versioned migrations of `sql/migrations.rs` and recorded in
//! `quay_schema_migrations(version, name, applied_at)`. Timestamps are BIGINT milliseconds
//! since the Unix epoch; sizes and offsets are BIGINT bytes. Names and digests are `TEXT`,
//! compared and sorted byte-wise on both backends (`COLLATE "C"` on Postgres, SQLite's default
//! `BINARY` collation), so tag and catalog pages come out in the same order everywhere.
//!
//! | table              | primary key              | columns and purpose                          |
//! |--------------------|--------------------------|----------------------------------------------|
//! | `repositories`     | `name`                   | `created_at`; made by the first blob or manifest |
//! | `blobs`            | `digest`                 | `size`, `created_at`; one row per blob       |
//! | `blob_placements`  | `digest, location`       | `created_at`; the locations holding a copy   |
//! | `repository_blobs` | `repository, digest`     | `created_at`; links of blobs into repositories |
//! | `uploads`          | `id`                     | `repository`, `location`, `size`, `created_at`, `updated_at` |
//! | `upload_parts`     | `upload_id, part_offset` | `size`, `path`, `sha256` (nullable)          |
//! | `manifests`        | `repository, digest`     | `media_type`, `content` (BLOB / BYTEA), `subject`, `artifact_type`, `annotations` (JSON text), `created_at` |
//! | `tags`             | `repository, name`       | `manifest_digest`, `updated_at`              |
//!
//! Foreign keys tie placements and links to `blobs`, links and manifests to `repositories`,
//! parts to `uploads`, and tags to their manifest. They delete nothing on cascade: every
//! removal is explicit, and a key that a concurrent transaction removed makes a write fail with
//! `Conflict` instead of leaving a dangling row. Indexes serve the unreferenced-blob check
//! (`repository_blobs.digest`), per-location scans (`blob_placements.location`), upload expiry
//! (`uploads.updated_at`), referrers (`manifests(repository, subject)`) and tag removal
//! (`tags(repository, manifest_digest)`).
//!
//! # Concurrency
//!
//! Every multi-statement write is one transaction whose inserts use `ON CONFLICT DO NOTHING`
//! (or `DO UPDATE` for tags), so two instances committing the same blob or tag both succeed.
//! Chunk appends are a compare-and-set on `uploads.size`. On SQLite each write transaction
//! starts with a write statement: it takes the database lock at once (waiting up to the busy
//! timeout) instead of upgrading a read lock later, which SQLite may refuse. Before that, the
//! store's writers take turns in the process (an async lock, first come first served), so that
//! they do not wait for one another in SQLite's busy handler, which sleeps in steps of 1 ms and
//! more and is not woken when the lock is free. Reads that need several statements run in one
//! `REPEATABLE READ, READ ONLY` transaction on Postgres.

mod blobs;
mod connect;
mod convert;
mod entities;
mod error;
mod events;
mod gc;
mod health;
mod manifests;
mod migrations;
mod queue;
mod repair;
mod replication;
mod retry;
mod uploads;
mod workers;

use std::fmt;

use quay_core::metadata::TimestampMs;
use quay_core::{RepositoryName, Result};
use sea_orm::{
    AccessMode, ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, EntityTrait, IntoActiveModel, IsolationLevel, TransactionTrait,
    TryInsertResult,
};

use self::error::db_error;
pub use self::queue::SqlJobQueue;

/// The metadata store over sea-orm: repositories, blobs and placements, upload sessions,
/// manifests and tags, in SQLite or PostgreSQL.
///
/// Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// # async fn run() -> quay_core::Result<()> {
/// use quay_storage::SqlMetadataStore;
/// let store = SqlMetadataStore::connect("sqlite:///var/lib/quay/metadata.db?mode=rwc").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqlMetadataStore {
    db: DatabaseConnection,
    /// The retry policy of the outbox queue (its `replication_jobs` table).
    policy: quay_core::RetryPolicy,
    /// How long an operation whose connection was lost is run again (the database timeout);
    /// see `sql/retry.rs`.
    retry_window: std::time::Duration,
    /// Turns at writing on SQLite, shared by the clones of this store (see
    /// [`write_txn`](Self::write_txn)).
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl SqlMetadataStore {
    /// Connects to `url` and brings the schema up to date.
    ///
    /// `url` is `sqlite://PATH?mode=rwc` (the file is created if missing), `sqlite::memory:`,
    /// or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`. SQLite files run in WAL mode with
    /// foreign keys on and a 5 s busy timeout; an in-memory database uses a single connection,
    /// so that every operation sees the same database.
    ///
    /// Fails with `Unavailable` when the database cannot be reached, `Config` when the URL is
    /// not valid; the error never contains the URL.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_timeout(url, connect::ACQUIRE_TIMEOUT).await
    }

    /// Like [`connect`](Self::connect), with the longest wait for a connection (and for the
    /// first connection) instead of the default 5 s: an operation while the database is down
    /// fails after at most this long.
    pub async fn connect_with_timeout(url: &str, timeout: std::time::Duration) -> Result<Self> {
        let db = connect::open(url, timeout).await?;
        Ok(Self::from_connection(db).await?.with_retry_window(timeout))
    }

    /// Wraps an open connection (for instance one shared with a job queue) and brings the
    /// schema up to date.
    pub async fn from_connection(db: DatabaseConnection) -> Result<Self> {
        migrations::migrate(&db).await?;
        Ok(SqlMetadataStore {
            db,
            policy: quay_core::RetryPolicy::default(),
            retry_window: connect::ACQUIRE_TIMEOUT,
            writer: Default::default(),
        })
    }

    /// How long an operation whose database connection was lost (a restart, a failover) is
    /// run again on a fresh connection before its error is returned; by default the
    /// connection timeout. Only operations that are safe to run twice are run again.
    #[must_use]
    pub fn with_retry_window(mut self, window: std::time::Duration) -> Self {
        self.retry_window = window;
        self
    }

    /// The retry policy of the jobs recorded in this store's outbox (how many attempts before
    /// a job is dead-lettered, and the back-off).
    #[must_use]
    pub fn with_retry_policy(mut self, policy: quay_core::RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The connection pool, to share with other components that use the same database.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The database backend in use.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The schema version this build migrates to.
    pub fn schema_version() -> i64 {
        migrations::latest_version()
    }

    /// Every schema version this build knows, ascending (what a database it migrated records).
    pub fn schema_versions() -> Vec<i64> {
        migrations::versions()
    }

    /// Opens `url` and migrates its schema only up to version `last`, as a release that knew
    /// no later migration did: for tests of rolling upgrades, which run an older release's
    /// statements against the newer schema.
    #[cfg(feature = "testkit")]
    pub async fn connect_at_version(url: &str, last: i64) -> Result<DatabaseConnection> {
        let db = connect::open(url, connect::ACQUIRE_TIMEOUT).await?;
        migrations::migrate_up_to(&db, last).await?;
        Ok(db)
    }

    /// The schema versions recorded as applied in the database, ascending.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>> {
        migrations::applied_versions(&self.db).await
    }

    /// Runs `run` again while its connection is lost and `replay` allows (see `sql/retry.rs`).
    async fn retrying<T, F, Fut>(
        &self,
        operation: &'static str,
        replay: retry::Replay,
        run: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        retry::retrying(operation, replay, self.retry_window, run).await
    }

    /// Begins a transaction that writes. Its first statement must be a write (see the module
    /// docs on SQLite). Keep the returned turn until the transaction has ended.
    ///
    /// On SQLite, where one connection writes at a time, the writers of this store take turns
    /// in this process first (in arrival order, each woken as soon as the one before it ends)
    /// instead of meeting at the database's lock: a connection that finds it taken sleeps in
    /// SQLite's busy handler, 1 ms, then 2, then 5 and longer, and is not woken when the lock
    /// is free, so the lock may stand idle while writers wait. With 8 clients pushing small
    /// blobs, 2000 pushes slept 2606 times there; with turns, 12 times, and the pushes ran 7
    /// to 9% faster. Writers in other processes, and single-statement writes, still meet at
    /// the lock, under the busy timeout.
    async fn write_txn(
        &self,
        operation: &'static str,
    ) -> Result<(DatabaseTransaction, WriterTurn)> {
        let turn = match self.backend() {
            DbBackend::Sqlite => {
                let wait = connect::SQLITE_BUSY_TIMEOUT;
                match tokio::time::timeout(wait, self.writer.clone().lock_owned()).await {
                    Ok(turn) => Some(turn),
                    Err(_) => {
                        return Err(quay_core::Error::new(
                            quay_core::ErrorKind::Unavailable,
                            format!(
                                "{operation}: the database's writer stayed busy for {} s",
                                wait.as_secs()
                            ),
                        ))
                    }
                }
            }
            _ => None,
        };
        let txn = self.db.begin().await.map_err(|e| db_error(operation, e))?;
        Ok((txn, WriterTurn { _held: turn }))
    }

    /// Begins a transaction that only reads, seeing one snapshot.
    async fn read_txn(&self, operation: &'static str) -> Result<DatabaseTransaction> {
        let txn = match self.backend() {
            DbBackend::Postgres => {
                self.db
                    .begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await
            }
            // A SQLite transaction reads one snapshot from its first read on.
            _ => self.db.begin().await,
        };
        txn.map_err(|e| db_error(operation, e))
    }
}

/// The outbox is the `replication_jobs` table, which [`SqlJobQueue`] works on: commits record
/// their jobs there in their own transaction.
impl quay_core::JobOutbox for SqlMetadataStore {
    fn outbox(&self) -> Option<std::sync::Arc<dyn quay_core::JobQueue>> {
        Some(std::sync::Arc::new(SqlJobQueue::new(
            self,
            self.policy.clone(),
        )))
    }
}

/// A writer's turn at the database (see [`SqlMetadataStore::write_txn`]), given up when
/// dropped.
pub(crate) struct WriterTurn {
    _held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl fmt::Debug for SqlMetadataStore {
    // The connection's own Debug may show connect options; the URL may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlMetadataStore")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// Commits `txn`, mapping the error; an error is marked as raised by `COMMIT` (the outcome is
/// unknown, see `sql/retry.rs`).
async fn commit(txn: DatabaseTransaction, operation: &'static str) -> Result<()> {
    txn.commit()
        .await
        .map_err(|e| retry::mark_commit(db_error(operation, e)))
}

/// Rolls `txn` back, mapping the error.
async fn rollback(txn: DatabaseTransaction, operation: &'static str) -> Result<()> {
    txn.rollback().await.map_err(|e| db_error(operation, e))
}

/// Limits and page sizes as SQL `LIMIT` values: one more than asked, to learn whether more
/// follow, and never past what a BIGINT holds.
fn page_limit(limit: u64) -> u64 {
    limit.min(i64::MAX as u64 - 1) + 1
}

/// Inserts a row unless one with the same primary key exists. Returns whether it inserted.
async fn insert_if_absent<A>(
    db: &impl ConnectionTrait,
    model: A,
    operation: &'static str,
) -> Result<bool>
where
    A: ActiveModelTrait + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
{
    let inserted = <A::Entity as EntityTrait>::insert(model)
        .on_conflict_do_nothing()
        .exec_without_returning(db)
        .await
        .map_err(|e| db_error(operation, e))?;
    Ok(matches!(inserted, TryInsertResult::Inserted(n) if n > 0))
}

/// Records `repository` unless it exists. A write, so it may open a SQLite write transaction.
async fn ensure_repository(
    db: &impl ConnectionTrait,
    repository: &RepositoryName,
    now: TimestampMs,
    operation: &'static str,
) -> Result<()> {
    insert_if_absent(
        db,
        entities::repository::ActiveModel {
            name: Set(repository.to_string()),
            created_at: Set(now),
        },
        operation,
    )
    .await
    .map_err(|e| e.with_context("repository", repository))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    /// On SQLite a second writer waits for the first one's transaction to end (in this
    /// process, not in SQLite's sleeping busy handler), and goes on as soon as it has.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_writers_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let store = SqlMetadataStore::connect(&url).await.unwrap();
        let (first, turn) = store.write_txn("first").await.unwrap();

        let other = store.clone();
        let mut second = tokio::spawn(async move {
            let (txn, _turn) = other.write_txn("second").await?;
            commit(txn, "second").await
        });
        // Without turns, BEGIN (deferred) would return at once.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut second)
                .await
                .is_err(),
            "a second writer began while the first one's transaction was open"
        );
        commit(first, "first").await.unwrap();
        drop(turn);
        tokio::time::timeout(Duration::from_secs(2), second)
            .await
            .expect("the second writer did not go on once the first had ended")
            .unwrap()
            .unwrap();
    }
}
