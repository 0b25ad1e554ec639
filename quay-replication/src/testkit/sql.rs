//! Harnesses of [`SqlJobQueue`]: a fresh SQLite file, or a fresh PostgreSQL database, per case.
//! Each handle opens its own connection pool on the database, as another process would.

use async_trait::async_trait;
use quay_core::{Result, RetryPolicy};
use quay_storage::testkit::metadata::TestSqlite;
use quay_storage::testkit::postgres::{fresh_database, TestDatabase};
use quay_storage::{SqlJobQueue, SqlMetadataStore};

use super::queue::QueueHarness;

/// [`SqlJobQueue`] on a fresh SQLite file per case (removed with the harness).
#[derive(Debug)]
pub struct SqliteQueueHarness {
    db: TestSqlite,
    policy: RetryPolicy,
}

#[async_trait]
impl QueueHarness for SqliteQueueHarness {
    type Queue = SqlJobQueue;

    async fn create(policy: RetryPolicy) -> Result<Self> {
        Ok(SqliteQueueHarness {
            db: TestSqlite::new()?,
            policy,
        })
    }

    async fn open(&self) -> Result<SqlJobQueue> {
        let store = SqlMetadataStore::connect(&self.db.url).await?;
        Ok(SqlJobQueue::new(&store, self.policy.clone()))
    }

    async fn destroy(self) -> Result<()> {
        // The temporary folder goes with `self.db`.
        Ok(())
    }
}

/// [`SqlJobQueue`] on a fresh PostgreSQL database per case (dropped by `destroy`). The server
/// is the one of [`quay_storage::testkit::postgres`].
#[derive(Debug)]
pub struct PostgresQueueHarness {
    db: TestDatabase,
    policy: RetryPolicy,
}

#[async_trait]
impl QueueHarness for PostgresQueueHarness {
    type Queue = SqlJobQueue;

    async fn create(policy: RetryPolicy) -> Result<Self> {
        let db = fresh_database().await?;
        // Migrate once here, so that the handles of a case do not race to create the schema.
        match SqlMetadataStore::connect(&db.url).await {
            Ok(store) => drop(store),
            Err(e) => {
                // Best effort: the connect error is the one worth reporting.
                let _ = db.drop_database().await;
                return Err(e);
            }
        }
        Ok(PostgresQueueHarness { db, policy })
    }

    async fn open(&self) -> Result<SqlJobQueue> {
        let store = SqlMetadataStore::connect(&self.db.url).await?;
        Ok(SqlJobQueue::new(&store, self.policy.clone()))
    }

    async fn destroy(self) -> Result<()> {
        self.db.drop_database().await
    }
}
