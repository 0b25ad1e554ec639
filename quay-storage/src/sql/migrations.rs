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
    Migration {
        version: 3,
        name: "multipart state of upload sessions",
        statements: upload_multipart,
    },
    Migration {
        version: 4,
        name: "worker heartbeats",
        statements: worker_heartbeats,
    },
    Migration {
        version: 5,
        name: "tag history and garbage collection",
        statements: garbage_collection,
    },
    Migration {
        version: 7,
        name: "bad copies and drained locations",
        statements: repairs,
    },
    Migration {
        version: 8,
        name: "webhook deliveries",
        statements: webhook_deliveries,
    },
    Migration {
        version: 9,
        name: "job priority",
        statements: job_priority,
    },
    Migration {
        version: 10,
        name: "removed copies by age",
        statements: removed_copies_by_age,
    },
    Migration {
        version: 11,
        name: "blob commit in one call",
        statements: commit_blob_function,
    },
    Migration {
        version: 12,
        name: "one index for claiming jobs",
        statements: drop_due_index,
    },
];

/// Every schema version this build knows, ascending.
pub(crate) fn versions() -> Vec<i64> {
    let mut versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    versions.sort_unstable();
    versions
}

/// The latest schema version this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Applies every migration the database has not recorded yet.
pub(crate) async fn migrate(db: &DatabaseConnection) -> Result<()> {
    migrate_up_to(db, i64::MAX).await
}

/// Applies the migrations up to version `last` that the database has not recorded yet (a
/// release that knew no later one; for upgrade tests).
pub(crate) async fn migrate_up_to(db: &DatabaseConnection, last: i64) -> Result<()> {
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

    for migration in MIGRATIONS.iter().filter(|m| m.version <= last) {
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

/// Version 4: one row per running replication worker, replaced by its heartbeat every few
/// seconds, so that an operator can tell whether anyone drains the queue. A new table: older
/// releases sharing the database never read it.
fn worker_heartbeats(backend: DbBackend) -> Vec<String> {
    let name = if backend == DbBackend::Postgres {
        "TEXT COLLATE \"C\""
    } else {
        "TEXT"
    };
    [
        format!(
            "CREATE TABLE replication_workers (
                id {name} PRIMARY KEY,
                host TEXT NOT NULL,
                pid BIGINT NOT NULL,
                role TEXT NOT NULL,
                started_at BIGINT NOT NULL,
                seen_at BIGINT NOT NULL,
                jobs_done BIGINT NOT NULL,
                jobs_failed BIGINT NOT NULL,
                bytes_copied BIGINT NOT NULL,
                running BIGINT NOT NULL)"
        ),
        "CREATE INDEX replication_workers_seen ON replication_workers (seen_at)".to_owned(),
    ]
    .into()
}

/// Version 5: what garbage collection needs to decide in the database, set-based and safe
/// against concurrent pushes.
///
/// - `manifest_blobs` and `manifest_children` record what each manifest references. Their
///   foreign keys close the race between a manifest push and the collector: a reference row
///   can only be written while the blob's link (`repository_blobs`) or the child manifest
///   exists, and a link or child cannot be deleted while a reference row names it. Deleting a
///   manifest removes its own reference rows (`ON DELETE CASCADE` from the parent).
/// - `tag_history` keeps every target a tag had, with when it stopped, for Quay's time machine.
/// - `manifests.pushed_at` and `repository_blobs.linked_at` record the latest push of an
///   existing manifest or blob, so a re-push protects it like a new one
///   (`PUSH_TEMP_TAG_EXPIRATION_SEC`); `manifests.references_recorded` marks manifests whose
///   references are recorded (those written by an older release are backfilled first).
/// - `removed_copies` counts the deletions of each stored copy by delete jobs, so that a push
///   that put the same blob's object in place meanwhile is refused instead of committing a
///   placement whose object is gone.
/// - `leases` lets one instance at a time run a collection pass.
///
/// Everything is additive: an instance of the previous release keeps working on this schema.
fn garbage_collection(backend: DbBackend) -> Vec<String> {
    let pg = backend == DbBackend::Postgres;
    let name = if pg { "TEXT COLLATE \"C\"" } else { "TEXT" };
    let id = if pg {
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    [
        "ALTER TABLE manifests ADD COLUMN pushed_at BIGINT NULL".to_owned(),
        "ALTER TABLE manifests ADD COLUMN references_recorded BIGINT NULL".to_owned(),
        "ALTER TABLE repository_blobs ADD COLUMN linked_at BIGINT NULL".to_owned(),
        format!(
            "CREATE TABLE manifest_blobs (
                repository {name} NOT NULL,
                manifest_digest {name} NOT NULL,
                blob_digest {name} NOT NULL,
                PRIMARY KEY (repository, manifest_digest, blob_digest),
                FOREIGN KEY (repository, manifest_digest)
                    REFERENCES manifests (repository, digest) ON DELETE CASCADE,
                FOREIGN KEY (repository, blob_digest)
                    REFERENCES repository_blobs (repository, digest))"
        ),
        "CREATE INDEX manifest_blobs_blob ON manifest_blobs (repository, blob_digest)".to_owned(),
        format!(
            "CREATE TABLE manifest_children (
                repository {name} NOT NULL,
                manifest_digest {name} NOT NULL,
                child_digest {name} NOT NULL,
                PRIMARY KEY (repository, manifest_digest, child_digest),
                FOREIGN KEY (repository, manifest_digest)
                    REFERENCES manifests (repository, digest) ON DELETE CASCADE,
                FOREIGN KEY (repository, child_digest)
                    REFERENCES manifests (repository, digest))"
        ),
        "CREATE INDEX manifest_children_child ON manifest_children (repository, child_digest)"
            .to_owned(),
        format!(
            "CREATE TABLE tag_history (
                id {id},
                repository {name} NOT NULL,
                name {name} NOT NULL,
                manifest_digest {name} NOT NULL,
                ended_at BIGINT NOT NULL,
                FOREIGN KEY (repository, manifest_digest)
                    REFERENCES manifests (repository, digest) ON DELETE CASCADE)"
        ),
        "CREATE INDEX tag_history_tag ON tag_history (repository, name, ended_at)".to_owned(),
        "CREATE INDEX tag_history_manifest ON tag_history (repository, manifest_digest)".to_owned(),
        "CREATE INDEX tag_history_ended ON tag_history (ended_at)".to_owned(),
        format!(
            "CREATE TABLE removed_copies (
                digest {name} NOT NULL,
                location {name} NOT NULL,
                removals BIGINT NOT NULL,
                removed_at BIGINT NOT NULL,
                PRIMARY KEY (digest, location))"
        ),
        format!(
            "CREATE TABLE leases (
                name {name} PRIMARY KEY,
                holder TEXT NOT NULL,
                expires_at BIGINT NOT NULL)"
        ),
    ]
    .into()
}

/// Version 7: stored copies found missing or corrupt (by reads and the scrubber), and the
/// locations an operator drained. Additive.
fn repairs(backend: DbBackend) -> Vec<String> {
    let pg = backend == DbBackend::Postgres;
    let name = if pg { "TEXT COLLATE \"C\"" } else { "TEXT" };
    [
        format!(
            "CREATE TABLE bad_copies (
                digest {name} NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
                location {name} NOT NULL,
                problem TEXT NOT NULL,
                found_at BIGINT NOT NULL,
                recoverable BIGINT NOT NULL,
                PRIMARY KEY (digest, location))"
        ),
        "CREATE INDEX bad_copies_found ON bad_copies (found_at)".to_owned(),
        format!(
            "CREATE TABLE location_states (
                location {name} PRIMARY KEY,
                drained BIGINT NOT NULL,
                updated_at BIGINT NOT NULL)"
        ),
    ]
    .into()
}

/// Version 8: replication events and their webhook deliveries, one row per (event, webhook).
/// The unique key lets one instance record an event and every other's attempt do nothing;
/// deliveries are claimed under a lease like replication jobs. Additive.
fn webhook_deliveries(backend: DbBackend) -> Vec<String> {
    let pg = backend == DbBackend::Postgres;
    let name = if pg { "TEXT COLLATE \"C\"" } else { "TEXT" };
    let id = if pg {
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    [
        format!(
            "CREATE TABLE webhook_deliveries (
                id {id},
                event_key {name} NOT NULL,
                webhook {name} NOT NULL,
                kind TEXT NOT NULL,
                repository {name} NULL,
                digest {name} NULL,
                payload TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                attempts INTEGER NOT NULL,
                next_attempt_at BIGINT NULL,
                delivered_at BIGINT NULL,
                lease_owner TEXT NULL,
                lease_until BIGINT NULL,
                last_error TEXT NULL,
                UNIQUE (event_key, webhook))"
        ),
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)".to_owned(),
        "CREATE INDEX webhook_deliveries_image ON webhook_deliveries (kind, repository, digest)"
            .to_owned(),
    ]
    .into()
}

/// Version 9: a priority on replication jobs, so that the copy a pull is waiting for is
/// claimed before the rest of the queue. Additive: the column has a default, older releases
/// insert and claim without it (ignoring priorities).
fn job_priority(_backend: DbBackend) -> Vec<String> {
    [
        "ALTER TABLE replication_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0".to_owned(),
        "CREATE INDEX replication_jobs_claim ON replication_jobs (state, priority DESC, not_before)"
            .to_owned(),
    ]
    .into()
}

/// Version 10: an index on `removed_copies.removed_at`, so that forgetting day-old removal
/// counts (done on every recorded removal) is a range read instead of a scan of the table,
/// which otherwise made a collection pass that removes many copies quadratic. Additive.
fn removed_copies_by_age(_backend: DbBackend) -> Vec<String> {
    vec!["CREATE INDEX removed_copies_removed_at ON removed_copies (removed_at)".to_owned()]
}

/// Version 11 (PostgreSQL only): `quay_commit_blob`, a blob commit as one call, so that a push
/// pays one round trip to the database for its commit instead of about ten. It runs the same
/// statements as the SQLite path of `BlobIndex::commit_blob` (one batch there): the writes
/// first, then the takeover of pending delete jobs and the checks for removals, each
/// statement with a fresh snapshot (PL/pgSQL under READ COMMITTED), so that the checks see
/// what a concurrent collection committed while the writes waited for it. A refusal raises
/// inside the block, which undoes the block's writes, and answers `false`.
///
/// `copies` is a JSON array of `{"location", "seen"}` (the pushed location first; `seen` is
/// the removal count read before the write, or null when it was not read); `targets` a JSON
/// array of the locations to queue copies to. A later schema change to these tables replaces
/// the function (`CREATE OR REPLACE`) in its own migration. Additive.
fn commit_blob_function(backend: DbBackend) -> Vec<String> {
    if backend != DbBackend::Postgres {
        return Vec::new();
    }
    vec![COMMIT_BLOB_FUNCTION.to_owned()]
}

const COMMIT_BLOB_FUNCTION: &str = "CREATE OR REPLACE FUNCTION quay_commit_blob(
    p_digest TEXT, p_size BIGINT, p_now BIGINT, p_repository TEXT,
    p_copies TEXT, p_targets TEXT, p_upload TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $body$
BEGIN
    INSERT INTO repositories (name, created_at) VALUES (p_repository, p_now)
        ON CONFLICT (name) DO NOTHING;
    INSERT INTO blobs (digest, size, created_at) VALUES (p_digest, p_size, p_now)
        ON CONFLICT (digest) DO NOTHING;
    INSERT INTO blob_placements (digest, location, created_at)
        SELECT p_digest, c.location, p_now
        FROM jsonb_to_recordset(p_copies::jsonb) AS c (location TEXT, seen BIGINT)
        ON CONFLICT (digest, location) DO NOTHING;
    INSERT INTO repository_blobs (repository, digest, created_at, linked_at)
        VALUES (p_repository, p_digest, p_now, p_now)
        ON CONFLICT (repository, digest) DO UPDATE SET linked_at = excluded.linked_at;
    DELETE FROM replication_jobs j
        USING jsonb_to_recordset(p_copies::jsonb) AS c (location TEXT, seen BIGINT)
        WHERE j.kind = 'delete' AND j.state = 'pending' AND j.digest = p_digest
        AND j.target = c.location;
    IF EXISTS (SELECT 1 FROM replication_jobs j
            JOIN jsonb_to_recordset(p_copies::jsonb) AS c (location TEXT, seen BIGINT)
            ON j.target = c.location
            WHERE j.kind = 'delete' AND j.digest = p_digest AND j.state = 'leased')
        OR EXISTS (SELECT 1 FROM removed_copies r
            JOIN jsonb_to_recordset(p_copies::jsonb) AS c (location TEXT, seen BIGINT)
            ON r.location = c.location
            WHERE r.digest = p_digest AND r.removals > c.seen) THEN
        RAISE EXCEPTION 'a former copy is being removed' USING ERRCODE = 'QY001';
    END IF;
    IF p_upload IS NOT NULL THEN
        DELETE FROM upload_parts WHERE upload_id = p_upload;
        DELETE FROM uploads WHERE id = p_upload;
    END IF;
    INSERT INTO replication_jobs
        (kind, digest, target, state, attempts, not_before, enqueued_at)
        SELECT 'replicate', p_digest, t.target, 'pending', 0, p_now, p_now
        FROM jsonb_array_elements_text(p_targets::jsonb) AS t (target)
        WHERE NOT EXISTS (SELECT 1 FROM blob_placements p
            WHERE p.digest = p_digest AND p.location = t.target)
        ON CONFLICT (kind, digest, target) DO NOTHING;
    RETURN TRUE;
EXCEPTION WHEN SQLSTATE 'QY001' THEN
    RETURN FALSE;
END
$body$";

/// Version 12: drops `replication_jobs_due (state, not_before)`, which
/// `replication_jobs_claim (state, priority DESC, not_before)` (version 9) made redundant:
/// every read it served (due jobs, expired leases, dead jobs, all by state first) is served by
/// the other. A claim rewrites every column of that index (state, priority), so each claimed
/// job paid for one more index entry than it needed, as did each queued one. Harmless to older
/// releases sharing the database: no statement names an index.
fn drop_due_index(_backend: DbBackend) -> Vec<String> {
    vec!["DROP INDEX IF EXISTS replication_jobs_due".to_owned()]
}

/// Version 3: the saved state of a chunked upload that streams into the location's native
/// multipart upload (upload id, part ETags, the hash so far, the unsent tail), so that the
/// chunks of one upload may reach different instances.
fn upload_multipart(_backend: DbBackend) -> Vec<String> {
    vec!["ALTER TABLE uploads ADD COLUMN multipart TEXT NULL".to_owned()]
}
