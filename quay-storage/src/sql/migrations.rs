//! Versioned schema migrations, recorded in `quay_schema_migrations(version, name, applied_at)`.
//!
//! Migrations are an ordered list; each runs in its own transaction together with the row that
//! records it, so a crash leaves it either applied or not. Several processes may migrate one
//! database at once: on Postgres every migration transaction first takes a transaction-scoped
//! advisory lock, so they run one after the other and the later ones see the versions already
//! recorded; on SQLite the database write lock, taken by the transaction's first write,
//! does the same.
//!
//! A migration is never edited once released: a schema change is a new entry at the end.

use quay_core::metadata::now_ms;
use quay_core::Result;
use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait};
use tracing::{info, warn};

use super::error::db_error;

/// The advisory lock key that serializes migrations on Postgres ("quay_mig" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x7175_6179_5f6d_6967;

const MIGRATIONS_TABLE: &str = "quay_schema_migrations";

/// One schema change.
struct Migration {
    version: i64,
    name: &'static str,
    statements: fn(DbBackend) -> Vec<String>,
}

/// Every migration, in order of version.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        statements: initial_schema,
    },
    Migration {
        version: 2,
        name: "replication jobs",
        statements: replication_jobs,
    },
];

/// The latest schema version this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies every migration the database has not recorded yet.
pub(crate) async fn migrate(db: &DatabaseConnection) -> Result<()> {
    let backend = db.get_database_backend();
    let op = "migrate";

    // Creating the table is itself atomic on SQLite; Postgres needs the lock, since concurrent
    // `CREATE TABLE IF NOT EXISTS` may fail there.
    let txn = db.begin().await.map_err(|e| db_error(op, e))?;
    if backend == DbBackend::Postgres {
        lock(&txn, backend).await?;
    }
    txn.execute_unprepared(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (\
           version BIGINT PRIMARY KEY, \
           name TEXT NOT NULL, \
           applied_at BIGINT NOT NULL)"
    ))
    .await
    .map_err(|e| db_error(op, e))?;
    txn.commit().await.map_err(|e| db_error(op, e))?;

    for migration in MIGRATIONS {
        let txn = db.begin().await.map_err(|e| db_error(op, e))?;
        lock(&txn, backend).await?;
        if is_applied(&txn, backend, migration.version).await? {
            txn.rollback().await.map_err(|e| db_error(op, e))?;
            continue;
        }
        for sql in (migration.statements)(backend) {
            txn.execute_unprepared(&sql).await.map_err(|e| {
                db_error(op, e)
                    .with_context("version", migration.version)
                    .with_context("migration", migration.name)
            })?;
        }
        let record = Query::insert()
            .into_table(Alias::new(MIGRATIONS_TABLE))
            .columns([
                Alias::new("version"),
                Alias::new("name"),
                Alias::new("applied_at"),
            ])
            .values_panic([
                migration.version.into(),
                migration.name.into(),
                now_ms().into(),
            ])
            .to_owned();
        txn.execute(backend.build(&record))
            .await
            .map_err(|e| db_error(op, e))?;
        txn.commit().await.map_err(|e| db_error(op, e))?;
        info!(
            version = migration.version,
            name = migration.name,
            "applied metadata schema migration"
        );
    }

    let newest = applied_versions(db).await?.into_iter().max().unwrap_or(0);
    if newest > latest_version() {
        warn!(
            database = newest,
            known = latest_version(),
            "the metadata database was migrated by a newer release"
        );
    }
    Ok(())
}

/// The versions recorded as applied, ascending.
pub(crate) async fn applied_versions(db: &impl ConnectionTrait) -> Result<Vec<i64>> {
    let query = Query::select()
        .column(Alias::new("version"))
        .from(Alias::new(MIGRATIONS_TABLE))
        .order_by(Alias::new("version"), sea_orm::sea_query::Order::Asc)
        .to_owned();
    let rows = db
        .query_all(db.get_database_backend().build(&query))
        .await
        .map_err(|e| db_error("applied_versions", e))?;
    rows.iter()
        .map(|row| {
            row.try_get::<i64>("", "version")
                .map_err(|e| db_error("applied_versions", e))
        })
        .collect()
}

async fn is_applied(txn: &impl ConnectionTrait, backend: DbBackend, version: i64) -> Result<bool> {
    let query = Query::select()
        .expr(Expr::val(1))
        .from(Alias::new(MIGRATIONS_TABLE))
        .and_where(Expr::col(Alias::new("version")).eq(version))
        .to_owned();
    let row = txn
        .query_one(backend.build(&query))
        .await
        .map_err(|e| db_error("migrate", e))?;
    Ok(row.is_some())
}

/// Serializes migrators. On SQLite a write statement that changes nothing takes the database
/// write lock (waiting up to the busy timeout), so the transaction never upgrades a read lock,
/// which SQLite may refuse at once.
async fn lock(txn: &impl ConnectionTrait, backend: DbBackend) -> Result<()> {
    let sql = match backend {
        DbBackend::Postgres => format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"),
        _ => format!("DELETE FROM {MIGRATIONS_TABLE} WHERE version < 0"),
    };
    txn.execute_unprepared(&sql)
        .await
        .map_err(|e| db_error("migrate", e))?;
    Ok(())
}

/// Version 1: repositories, blobs, placements, links, uploads, manifests and tags.
fn initial_schema(backend: DbBackend) -> Vec<String> {
    let pg = backend == DbBackend::Postgres;
    // Names sort and compare byte-wise on both backends (SQLite's default is BINARY).
    let name = if pg { "TEXT COLLATE \"C\"" } else { "TEXT" };
    let bytes = if pg { "BYTEA" } else { "BLOB" };
    [
        format!(
            "CREATE TABLE repositories (
                name {name} PRIMARY KEY,
                created_at BIGINT NOT NULL)"
        ),
        format!(
            "CREATE TABLE blobs (
                digest {name} PRIMARY KEY,
                size BIGINT NOT NULL,
                created_at BIGINT NOT NULL)"
        ),
        format!(
            "CREATE TABLE blob_placements (
                digest {name} NOT NULL REFERENCES blobs (digest),
                location {name} NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (digest, location))"
        ),
        "CREATE INDEX blob_placements_location ON blob_placements (location)".to_owned(),
        format!(
            "CREATE TABLE repository_blobs (
                repository {name} NOT NULL REFERENCES repositories (name),
                digest {name} NOT NULL REFERENCES blobs (digest),
                created_at BIGINT NOT NULL,
                PRIMARY KEY (repository, digest))"
        ),
        "CREATE INDEX repository_blobs_digest ON repository_blobs (digest)".to_owned(),
        format!(
            "CREATE TABLE uploads (
                id {name} PRIMARY KEY,
                repository {name} NOT NULL,
                location {name} NOT NULL,
                size BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL)"
        ),
        "CREATE INDEX uploads_updated_at ON uploads (updated_at)".to_owned(),
        format!(
            "CREATE TABLE upload_parts (
                upload_id {name} NOT NULL REFERENCES uploads (id),
                part_offset BIGINT NOT NULL,
                size BIGINT NOT NULL,
                path TEXT NOT NULL,
                sha256 TEXT NULL,
                PRIMARY KEY (upload_id, part_offset))"
        ),
        format!(
            "CREATE TABLE manifests (
                repository {name} NOT NULL REFERENCES repositories (name),
                digest {name} NOT NULL,
                media_type TEXT NOT NULL,
                content {bytes} NOT NULL,
                subject {name} NULL,
                artifact_type TEXT NULL,
                annotations TEXT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (repository, digest))"
        ),
        "CREATE INDEX manifests_subject ON manifests (repository, subject)".to_owned(),
        format!(
            "CREATE TABLE tags (
                repository {name} NOT NULL,
                name {name} NOT NULL,
                manifest_digest {name} NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (repository, name),
                FOREIGN KEY (repository, manifest_digest)
                    REFERENCES manifests (repository, digest))"
        ),
        "CREATE INDEX tags_manifest ON tags (repository, manifest_digest)".to_owned(),
    ]
    .into()
}

/// Version 2: the replication job queue (and outbox), written in the same transaction as the
/// blob commits and deletes that need the jobs. No foreign key to `blobs`: a delete job
/// outlives its blob, and a replication job whose blob is gone completes as a no-op.
fn replication_jobs(backend: DbBackend) -> Vec<String> {
    let pg = backend == DbBackend::Postgres;
    let name = if pg { "TEXT COLLATE \"C\"" } else { "TEXT" };
    let id = if pg {
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    [
        format!(
            "CREATE TABLE replication_jobs (
                id {id},
                kind TEXT NOT NULL,
                digest {name} NOT NULL,
                target {name} NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                not_before BIGINT NOT NULL,
                lease_token TEXT NULL,
                lease_expires BIGINT NULL,
                last_error TEXT NULL,
                enqueued_at BIGINT NOT NULL,
                UNIQUE (kind, digest, target))"
        ),
        "CREATE INDEX replication_jobs_due ON replication_jobs (state, not_before)".to_owned(),
        "CREATE INDEX replication_jobs_target ON replication_jobs (target)".to_owned(),
    ]
    .into()
}
