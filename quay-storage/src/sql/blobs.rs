//! [`BlobIndex`] for [`SqlMetadataStore`].

use async_trait::async_trait;
use quay_core::metadata::{now_ms, BlobCommit, BlobIndex, BlobRecord};
use quay_core::{Digest, Error, ErrorKind, JobKind, LocationId, RepositoryName, Result};
use sea_orm::sea_query::{Expr, OnConflict, Query, SelectStatement};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
};

use super::convert::{from_db, location, to_db};
use super::entities::{blob, blob_placement, repository_blob};
use super::error::db_error;
use super::replication::stmt;
use super::replication::{insert_jobs, specs};
use super::retry::Replay;
use super::{commit, ensure_repository, rollback, SqlMetadataStore};

/// The JSON arguments of a commit: the copies (`{"location", "seen"}`, the pushed location
/// first; `seen` is the removal count read before the write, or null when none was read) and
/// the locations to queue copies to.
fn commit_arguments(record: &BlobCommit) -> (serde_json::Value, serde_json::Value) {
    let seen = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut copies = vec![serde_json::json!({
        "location": record.location.as_str(),
        "seen": record.removals_seen.map(seen),
    })];
    copies.extend(record.copies.iter().map(
        |c| serde_json::json!({"location": c.location.as_str(), "seen": seen(c.removals_seen)}),
    ));
    let targets: Vec<&str> = record.replicate_to.iter().map(LocationId::as_str).collect();
    (
        serde_json::Value::from(copies),
        serde_json::Value::from(targets),
    )
}

/// The refusal of a commit that a removal of a former copy overtook.
fn refused(record: &BlobCommit) -> Error {
    let place = if record.copies.is_empty() {
        format!("in {}", record.location)
    } else {
        "in one of its locations".to_owned()
    };
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "a former copy of {} {place} is being removed right now; try again in a moment",
            record.digest
        ),
    )
    .with_context("location", &record.location)
}

/// `commit_blob` on PostgreSQL: one call of `quay_commit_blob` (migration 11), which runs the
/// statements of [`COMMIT_BLOB_SQLITE`], in one round trip (its refusal check comes before the
/// upload's rows and the queued copies; a refusal undoes all of it either way).
async fn commit_blob_call(store: &SqlMetadataStore, record: &BlobCommit) -> Result<()> {
    let op = "commit_blob";
    let (copies, targets) = commit_arguments(record);
    let values: Vec<sea_orm::Value> = vec![
        record.digest.to_string().into(),
        to_db("blob size", record.size)?.into(),
        now_ms().into(),
        record.repository.to_string().into(),
        copies.to_string().into(),
        targets.to_string().into(),
        record.upload_id.clone().into(),
    ];
    let row = store
        .db
        .query_one(stmt(
            DbBackend::Postgres,
            "SELECT quay_commit_blob($1, $2, $3, $4, $5, $6, $7) AS done",
            values,
        ))
        .await
        .map_err(|e| db_error(op, e).with_context("digest", &record.digest))?;
    let Some(row) = row else {
        return Err(Error::internal("quay_commit_blob answered no row"));
    };
    let done: bool = row.try_get("", "done").map_err(|e| db_error(op, e))?;
    if done {
        return Ok(());
    }
    Err(refused(record))
}

/// A blob commit on SQLite as one batch of statements, sent to the connection at once inside
/// the write transaction: each statement sent alone is a round trip to the connection's own
/// thread (two thread hand-offs, or more), and a push's commit took nine to thirteen of them.
/// The writes come first (the first statement is a write, as a SQLite write transaction must
/// begin), then the takeover of pending delete jobs of the copies' locations, the removal of
/// the upload's rows and the copies to queue (only to targets still lacking the blob), and
/// last the check the commit may be refused on: a delete job of a former copy running now, or
/// a removal counted since `seen` (`seen` null: not read, no check). Holding the write lock,
/// the check sees every removal committed before it. A refusal rolls the whole batch back.
///
/// Its one argument is a JSON object (see [`commit_blob_batch`]): sqlx binds the parameters of
/// a batch statement by statement, and a statement that skips a number (`?7` without `?1` to
/// `?6`) has the numbers it skips counted as unnamed parameters, which pushes the ones after
/// them past the end of the arguments, so that they are left NULL.
const COMMIT_BLOB_SQLITE: &str = "\
INSERT INTO repositories (name, created_at)
    VALUES (json_extract(?1, '$.repository'), json_extract(?1, '$.now'))
    ON CONFLICT (name) DO NOTHING;
INSERT INTO blobs (digest, size, created_at)
    VALUES (json_extract(?1, '$.digest'), json_extract(?1, '$.size'), json_extract(?1, '$.now'))
    ON CONFLICT (digest) DO NOTHING;
INSERT INTO blob_placements (digest, location, created_at)
    SELECT json_extract(?1, '$.digest'), json_extract(c.value, '$.location'),
        json_extract(?1, '$.now')
    FROM json_each(?1, '$.copies') AS c WHERE true
    ON CONFLICT (digest, location) DO NOTHING;
INSERT INTO repository_blobs (repository, digest, created_at, linked_at)
    VALUES (json_extract(?1, '$.repository'), json_extract(?1, '$.digest'),
        json_extract(?1, '$.now'), json_extract(?1, '$.now'))
    ON CONFLICT (repository, digest) DO UPDATE SET linked_at = excluded.linked_at;
DELETE FROM replication_jobs WHERE kind = 'delete' AND state = 'pending'
    AND digest = json_extract(?1, '$.digest')
    AND target IN (SELECT json_extract(c.value, '$.location') FROM json_each(?1, '$.copies') AS c);
DELETE FROM upload_parts WHERE upload_id = json_extract(?1, '$.upload');
DELETE FROM uploads WHERE id = json_extract(?1, '$.upload');
INSERT INTO replication_jobs (kind, digest, target, state, attempts, not_before, enqueued_at)
    SELECT 'replicate', json_extract(?1, '$.digest'), t.value, 'pending', 0,
        json_extract(?1, '$.now'), json_extract(?1, '$.now')
    FROM json_each(?1, '$.targets') AS t
    WHERE NOT EXISTS (SELECT 1 FROM blob_placements p
        WHERE p.digest = json_extract(?1, '$.digest') AND p.location = t.value)
    ON CONFLICT (kind, digest, target) DO NOTHING;
SELECT EXISTS (SELECT 1 FROM replication_jobs j
        WHERE j.kind = 'delete' AND j.digest = json_extract(?1, '$.digest')
        AND j.state = 'leased' AND j.target IN
            (SELECT json_extract(c.value, '$.location') FROM json_each(?1, '$.copies') AS c))
    OR EXISTS (SELECT 1 FROM removed_copies r JOIN json_each(?1, '$.copies') AS c
        ON r.location = json_extract(c.value, '$.location')
        WHERE r.digest = json_extract(?1, '$.digest')
        AND r.removals > json_extract(c.value, '$.seen')) AS refused";

/// `commit_blob` on SQLite: [`COMMIT_BLOB_SQLITE`] in a write transaction.
async fn commit_blob_batch(store: &SqlMetadataStore, record: &BlobCommit) -> Result<()> {
    let op = "commit_blob";
    let (copies, targets) = commit_arguments(record);
    let argument = serde_json::json!({
        "digest": record.digest.to_string(),
        "size": to_db("blob size", record.size)?,
        "now": now_ms(),
        "repository": record.repository.to_string(),
        "copies": copies,
        "targets": targets,
        "upload": record.upload_id,
    });
    let values: Vec<sea_orm::Value> = vec![argument.to_string().into()];
    let (txn, _turn) = store.write_txn(op).await?;
    let rows = txn
        .query_all(sea_orm::Statement::from_sql_and_values(
            DbBackend::Sqlite,
            COMMIT_BLOB_SQLITE,
            values,
        ))
        .await
        .map_err(|e| db_error(op, e).with_context("digest", &record.digest))?;
    let [row] = rows.as_slice() else {
        return Err(Error::internal(format!(
            "the commit's check answered {} rows, not one",
            rows.len()
        )));
    };
    let refusal: i64 = row.try_get("", "refused").map_err(|e| db_error(op, e))?;
    if refusal != 0 {
        rollback(txn, op).await?;
        return Err(refused(record));
    }
    commit(txn, op).await
}

#[async_trait]
impl BlobIndex for SqlMetadataStore {
    async fn commit_blob(&self, record: &BlobCommit) -> Result<()> {
        // Idempotent: every insert is `ON CONFLICT DO NOTHING`, the upload's rows are deleted
        // by key, and a second run after a lost acknowledgement queues jobs only for targets
        // still lacking the blob (a duplicate job finds the copy placed and completes).
        if self.backend() == DbBackend::Postgres {
            return self
                .retrying("commit_blob", Replay::Idempotent, || {
                    commit_blob_call(self, record)
                })
                .await;
        }
        self.retrying("commit_blob", Replay::Idempotent, || {
            commit_blob_batch(self, record)
        })
        .await
    }

    async fn get_blob(&self, digest: &Digest) -> Result<Option<BlobRecord>> {
        self.retrying("get_blob", Replay::Read, || {
            find_blob(self, digest, None, "get_blob")
        })
        .await
    }

    async fn get_blobs_with_removals(
        &self,
        wanted: &[(Digest, LocationId)],
    ) -> Result<Vec<(Option<BlobRecord>, Option<u64>)>> {
        // One statement for the lot (one snapshot, one round trip): a row per wanted blob and
        // placement, and one with a NULL size for an unknown blob.
        let op = "get_blobs_with_removals";
        let mut out = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(200) {
            let found = self
                .retrying(op, Replay::Read, || blobs_with_removals(self, chunk))
                .await?;
            out.extend(found);
        }
        Ok(out)
    }

    async fn repository_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>> {
        self.retrying("repository_blob", Replay::Read, || {
            find_blob(self, digest, Some(repository), "repository_blob")
        })
        .await
    }

    async fn link_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.retrying("link_blob", Replay::Idempotent, || async move {
            let op = "link_blob";
            let err = |e: DbErr| db_error(op, e).with_context("digest", digest);
            let now = now_ms();
            let (txn, _turn) = self.write_txn(op).await?;
            ensure_repository(&txn, repository, now, op).await?;
            let known = blob::Entity::find_by_id(digest.to_string())
                .one(&txn)
                .await
                .map_err(err)?
                .is_some();
            if !known {
                // Also undoes the repository, which an unknown blob must not create.
                rollback(txn, op).await?;
                return Ok(false);
            }
            upsert_link(&txn, repository, digest, now, op).await?;
            commit(txn, op).await?;
            Ok(true)
        })
        .await
    }

    async fn unlink_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool> {
        let op = "unlink_blob";
        let deleted = repository_blob::Entity::delete_many()
            .filter(repository_blob::Column::Repository.eq(repository.as_str()))
            .filter(repository_blob::Column::Digest.eq(digest.to_string()))
            .exec(&self.db)
            .await
            .map_err(|e| db_error(op, e).with_context("digest", digest))?;
        Ok(deleted.rows_affected > 0)
    }

    async fn delete_blob_if_unreferenced(
        &self,
        digest: &Digest,
        enqueue_deletes: bool,
    ) -> Result<Option<Vec<LocationId>>> {
        let op = "delete_blob_if_unreferenced";
        let err = |e: DbErr| db_error(op, e).with_context("digest", digest);
        let key = digest.to_string();
        let (txn, _turn) = self.write_txn(op).await?;

        // Placements first (a write, and the foreign key wants them gone before the blob),
        // guarded by the same "no links" condition as the blob.
        let placements = Query::delete()
            .from_table(blob_placement::Entity)
            .and_where(blob_placement::Column::Digest.eq(key.clone()))
            .and_where(Expr::exists(links_of(&key)).not())
            .returning_col(blob_placement::Column::Location)
            .to_owned();
        let rows = txn
            .query_all(txn.get_database_backend().build(&placements))
            .await
            .map_err(err)?;
        let mut locations = rows
            .iter()
            .map(|row| {
                let loc = row.try_get::<String>("", "location").map_err(err)?;
                location(&loc)
            })
            .collect::<Result<Vec<_>>>()?;
        locations.sort();

        let deleted = blob::Entity::delete_many()
            .filter(blob::Column::Digest.eq(key.clone()))
            .filter(Expr::exists(links_of(&key)).not())
            .exec(&txn)
            .await
            .map_err(err)?;
        if deleted.rows_affected > 0 {
            if enqueue_deletes {
                let jobs = specs(JobKind::Delete, digest, &locations);
                insert_jobs(&txn, &jobs, now_ms(), op).await?;
            }
            commit(txn, op).await?;
            return Ok(Some(locations));
        }
        // Nothing deleted: the blob is linked (possibly by a link committed between the two
        // statements on Postgres, so the placements must come back), or it was never known.
        let known = blob::Entity::find_by_id(key.clone())
            .one(&txn)
            .await
            .map_err(err)?
            .is_some();
        rollback(txn, op).await?;
        Ok(if known { None } else { Some(Vec::new()) })
    }
}

/// Links a blob into a repository, or renews the link's time when it exists: a blob pushed or
/// mounted again is as protected from collection as a new one.
async fn upsert_link(
    db: &impl ConnectionTrait,
    repository: &RepositoryName,
    digest: &Digest,
    now: i64,
    op: &'static str,
) -> Result<()> {
    repository_blob::Entity::insert(repository_blob::ActiveModel {
        repository: Set(repository.to_string()),
        digest: Set(digest.to_string()),
        created_at: Set(now),
        linked_at: Set(Some(now)),
    })
    .on_conflict(
        OnConflict::columns([
            repository_blob::Column::Repository,
            repository_blob::Column::Digest,
        ])
        .update_column(repository_blob::Column::LinkedAt)
        .to_owned(),
    )
    .exec_without_returning(db)
    .await
    .map_err(|e| db_error(op, e))?;
    Ok(())
}

/// `SELECT 1 FROM repository_blobs WHERE digest = ?`.
fn links_of(digest: &str) -> SelectStatement {
    Query::select()
        .expr(Expr::val(1))
        .from(repository_blob::Entity)
        .and_where(repository_blob::Column::Digest.eq(digest))
        .to_owned()
}

/// A blob with its placements, optionally only when linked into `repository`.
/// [`BlobIndex::get_blobs_with_removals`] for at most a few hundred blobs, in one statement.
async fn blobs_with_removals(
    store: &SqlMetadataStore,
    wanted: &[(Digest, LocationId)],
) -> Result<Vec<(Option<BlobRecord>, Option<u64>)>> {
    let op = "get_blobs_with_removals";
    let (sql, values) = if store.backend() == DbBackend::Postgres {
        blobs_with_removals_pg(wanted)
    } else {
        blobs_with_removals_values(wanted)
    };
    let found = store
        .db
        .query_all(stmt(store.backend(), &sql, values))
        .await
        .map_err(|e| db_error(op, e))?;
    let mut out: Vec<(Option<BlobRecord>, Option<u64>)> = vec![(None, None); wanted.len()];
    for row in &found {
        let get_err = |e| db_error(op, e);
        let i: i64 = row.try_get("", "i").map_err(get_err)?;
        let Some((slot, (digest, _))) = usize::try_from(i)
            .ok()
            .and_then(|i| out.get_mut(i).zip(wanted.get(i)))
        else {
            return Err(db_error(op, DbErr::Custom(format!("unexpected row {i}"))));
        };
        let removals: i64 = row.try_get("", "removals").map_err(get_err)?;
        slot.1 = Some(from_db("removals", removals)?);
        let size: Option<i64> = row.try_get("", "size").map_err(get_err)?;
        let Some(size) = size else { continue };
        let record = slot.0.get_or_insert_with(|| BlobRecord {
            digest: digest.clone(),
            size: 0,
            locations: Vec::new(),
        });
        record.size = from_db("blob size", size)?;
        let held: Option<String> = row.try_get("", "held").map_err(get_err)?;
        if let Some(held) = held {
            record.locations.push(location(&held)?);
        }
    }
    Ok(out)
}

/// The statement of [`blobs_with_removals`] on PostgreSQL: one text whatever the batch (the
/// wanted blobs travel as one JSON parameter), so that each connection parses it once and
/// PostgreSQL reuses its plan. Each wanted blob is a key lookup (`LATERAL … OFFSET 0` keeps the
/// planner from turning it into a join that scans `blobs`, which a generic plan, knowing
/// nothing of the batch's size, might otherwise choose).
fn blobs_with_removals_pg(wanted: &[(Digest, LocationId)]) -> (String, Vec<sea_orm::Value>) {
    let rows: Vec<serde_json::Value> = wanted
        .iter()
        .enumerate()
        .map(|(i, (digest, location))| {
            serde_json::json!({"i": i, "digest": digest.to_string(), "location": location.to_string()})
        })
        .collect();
    let sql = "SELECT v.i AS i, b.size AS size, p.location AS held, \
         COALESCE((SELECT r.removals FROM removed_copies r \
                   WHERE r.digest = v.digest AND r.location = v.location), 0) AS removals \
         FROM jsonb_to_recordset($1::jsonb) AS v (i BIGINT, digest TEXT, location TEXT) \
         LEFT JOIN LATERAL (SELECT b.digest, b.size FROM blobs b \
                            WHERE b.digest = v.digest OFFSET 0) b ON TRUE \
         LEFT JOIN LATERAL (SELECT p.location, p.created_at FROM blob_placements p \
                            WHERE p.digest = b.digest OFFSET 0) p ON TRUE \
         ORDER BY v.i, p.created_at, p.location";
    let values = vec![serde_json::Value::from(rows).to_string().into()];
    (sql.to_owned(), values)
}

/// The statement of [`blobs_with_removals`] elsewhere: a `VALUES` row per wanted blob.
fn blobs_with_removals_values(wanted: &[(Digest, LocationId)]) -> (String, Vec<sea_orm::Value>) {
    let mut rows = Vec::with_capacity(wanted.len());
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(wanted.len() * 3);
    for (i, (digest, location)) in wanted.iter().enumerate() {
        let b = 1 + 3 * i;
        rows.push(format!("(CAST(${b} AS BIGINT), ${}, ${})", b + 1, b + 2));
        values.push((i as i64).into());
        values.push(digest.to_string().into());
        values.push(location.to_string().into());
    }
    let sql = format!(
        "WITH v (i, digest, location) AS (VALUES {}) \
         SELECT v.i AS i, b.size AS size, p.location AS held, \
         COALESCE((SELECT r.removals FROM removed_copies r \
                   WHERE r.digest = v.digest AND r.location = v.location), 0) AS removals \
         FROM v LEFT JOIN blobs b ON b.digest = v.digest \
         LEFT JOIN blob_placements p ON p.digest = b.digest \
         ORDER BY v.i, p.created_at, p.location",
        rows.join(", ")
    );
    (sql, values)
}

/// The record of `digest` (only when linked into `repository`, if given), in one statement:
/// one snapshot and one round trip, a row per placement (one with no location when it has
/// none), oldest placement first. A pull reads this on every blob request, and with one
/// database shared by every region a far instance pays its round trips to the database.
async fn find_blob(
    store: &SqlMetadataStore,
    digest: &Digest,
    repository: Option<&RepositoryName>,
    op: &'static str,
) -> Result<Option<BlobRecord>> {
    let mut values: Vec<sea_orm::Value> = vec![digest.to_string().into()];
    let linked = match repository {
        Some(repository) => {
            values.push(repository.to_string().into());
            " AND EXISTS (SELECT 1 FROM repository_blobs l \
              WHERE l.repository = $2 AND l.digest = b.digest)"
        }
        None => "",
    };
    let sql = format!(
        "SELECT b.size AS size, p.location AS held FROM blobs b \
         LEFT JOIN blob_placements p ON p.digest = b.digest \
         WHERE b.digest = $1{linked} ORDER BY p.created_at, p.location"
    );
    let rows = store
        .db
        .query_all(stmt(store.backend(), &sql, values))
        .await
        .map_err(|e| db_error(op, e).with_context("digest", digest))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let size: i64 = first.try_get("", "size").map_err(|e| db_error(op, e))?;
    let mut locations = Vec::with_capacity(rows.len());
    for row in &rows {
        let held: Option<String> = row.try_get("", "held").map_err(|e| db_error(op, e))?;
        if let Some(held) = held {
            locations.push(location(&held)?);
        }
    }
    Ok(Some(BlobRecord {
        digest: digest.clone(),
        size: from_db("blob size", size)?,
        locations,
    }))
}
