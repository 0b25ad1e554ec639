//! The replication side of the schema: the `replication_jobs` table (written in the same
//! transaction as blob commits and deletes) and [`PlacementIndex`].

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use quay_core::metadata::{now_ms, BlobRecord, LocationRemoval, LocationStats, PlacementIndex};
use quay_core::{Digest, Error, ErrorKind, JobSpec, LocationId, Result};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};

use super::convert::{digest, from_db, location};
use super::error::db_error;
use super::retry::Replay;
use super::{commit, rollback, SqlMetadataStore};

/// A statement written with `$1`-style placeholders, rewritten to `?1` for SQLite.
pub(crate) fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => sql.replace('$', "?"),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// `($1, $2, …)` starting at placeholder `first`, for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    let list: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!("({})", list.join(", "))
}

/// Records jobs, skipping those already queued (pending, leased or dead). Returns how many
/// were new.
pub(crate) async fn insert_jobs(
    db: &impl ConnectionTrait,
    jobs: &[JobSpec],
    now: i64,
    operation: &'static str,
) -> Result<u64> {
    let mut added = 0;
    for chunk in jobs.chunks(200) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 3 + 1);
        values.push(now.into());
        for (i, job) in chunk.iter().enumerate() {
            let b = 2 + i * 3;
            rows.push(format!(
                "(${b}, ${}, ${}, 'pending', 0, $1, $1)",
                b + 1,
                b + 2
            ));
            values.push(job.kind.as_str().into());
            values.push(job.digest.to_string().into());
            values.push(job.target.to_string().into());
        }
        let sql = format!(
            "INSERT INTO replication_jobs (kind, digest, target, state, attempts, not_before, enqueued_at) \
             VALUES {} ON CONFLICT (kind, digest, target) DO NOTHING",
            rows.join(", ")
        );
        let res = db
            .execute(stmt(db.get_database_backend(), &sql, values))
            .await
            .map_err(|e| db_error(operation, e))?;
        added += res.rows_affected();
    }
    Ok(added)
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, col: &str, op: &'static str) -> Result<T> {
    row.try_get::<T>("", col).map_err(|e| db_error(op, e))
}

#[async_trait]
impl PlacementIndex for SqlMetadataStore {
    async fn add_placement(
        &self,
        digest: &Digest,
        location: &LocationId,
        removals_seen: u64,
    ) -> Result<bool> {
        self.retrying("add_placement", Replay::Idempotent, || async move {
            let op = "add_placement";
            let sql = "INSERT INTO blob_placements (digest, location, created_at) \
                   SELECT digest, $2, $3 FROM blobs WHERE digest = $1 \
                   ON CONFLICT (digest, location) DO NOTHING";
            let txn = self.write_txn(op).await?;
            let res = txn
                .execute(stmt(
                    self.backend(),
                    sql,
                    vec![
                        digest.to_string().into(),
                        location.to_string().into(),
                        now_ms().into(),
                    ],
                ))
                .await
                .map_err(|e| db_error(op, e).with_context("digest", digest))?;
            if res.rows_affected() > 0 {
                // A removal of a former copy must not delete this one (see `claim_location…`).
                super::gc::claim_location_from_delete_jobs(
                    &txn,
                    digest,
                    location,
                    Some(removals_seen),
                    op,
                )
                .await?;
                // A verified copy is back: its problem, if one was recorded, is solved.
                super::repair::resolve(&txn, digest, location, op).await?;
                commit(txn, op).await?;
                return Ok(true);
            }
            // Nothing inserted: already placed (true), or the blob is gone (false).
            let exists = txn
                .query_one(stmt(
                    self.backend(),
                    "SELECT 1 AS one FROM blob_placements WHERE digest = $1 AND location = $2",
                    vec![digest.to_string().into(), location.to_string().into()],
                ))
                .await
                .map_err(|e| db_error(op, e))?;
            commit(txn, op).await?;
            Ok(exists.is_some())
        })
        .await
    }

    async fn record_removed_copy(&self, digest: &Digest, location: &LocationId) -> Result<()> {
        super::gc::record_removed_copy(&self.db, digest, location).await
    }

    async fn removals(&self, digest: &Digest, location: &LocationId) -> Result<u64> {
        self.retrying("removals", Replay::Read, || {
            super::gc::removals(&self.db, digest, location, "removals")
        })
        .await
    }

    async fn missing_placements(
        &self,
        targets: &[LocationId],
        after: Option<&Digest>,
        limit: u64,
    ) -> Result<Vec<(BlobRecord, Vec<LocationId>)>> {
        let op = "missing_placements";
        if targets.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut values: Vec<Value> = vec![
            after.map(|d| d.to_string()).unwrap_or_default().into(),
            (targets.len() as i64).into(),
            (limit.min(i64::MAX as u64) as i64).into(),
        ];
        values.extend(targets.iter().map(|t| Value::from(t.to_string())));
        let sql = format!(
            "SELECT b.digest AS digest, b.size AS size FROM blobs b \
             WHERE b.digest > $1 AND (SELECT COUNT(*) FROM blob_placements p \
                 WHERE p.digest = b.digest AND p.location IN {}) < $2 \
             ORDER BY b.digest LIMIT $3",
            placeholders(4, targets.len())
        );
        let rows = self
            .db
            .query_all(stmt(self.backend(), &sql, values))
            .await
            .map_err(|e| db_error(op, e))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut blobs: Vec<(Digest, u64)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let d: String = get(row, "digest", op)?;
            let size: i64 = get(row, "size", op)?;
            blobs.push((digest("blob digest", &d)?, from_db("blob size", size)?));
        }
        let sql = format!(
            "SELECT digest, location FROM blob_placements WHERE digest IN {} ORDER BY created_at, location",
            placeholders(1, blobs.len())
        );
        let values = blobs
            .iter()
            .map(|(d, _)| Value::from(d.to_string()))
            .collect();
        let rows = self
            .db
            .query_all(stmt(self.backend(), &sql, values))
            .await
            .map_err(|e| db_error(op, e))?;
        let mut held: BTreeMap<String, Vec<LocationId>> = BTreeMap::new();
        for row in &rows {
            let d: String = get(row, "digest", op)?;
            let l: String = get(row, "location", op)?;
            held.entry(d).or_default().push(location(&l)?);
        }
        Ok(blobs
            .into_iter()
            .map(|(d, size)| {
                let locations = held.remove(&d.to_string()).unwrap_or_default();
                let lacking = targets
                    .iter()
                    .filter(|t| !locations.contains(t))
                    .cloned()
                    .collect();
                (
                    BlobRecord {
                        digest: d,
                        size,
                        locations,
                    },
                    lacking,
                )
            })
            .collect())
    }

    async fn location_stats(&self, locations: &[LocationId]) -> Result<Vec<LocationStats>> {
        let op = "location_stats";
        let total = self
            .db
            .query_one(Statement::from_string(
                self.backend(),
                "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM blobs",
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        let (total_blobs, total_bytes) = match &total {
            Some(row) => (count(row, "n", op)?, count(row, "bytes", op)?),
            None => (0, 0),
        };
        let rows = self
            .db
            .query_all(Statement::from_string(
                self.backend(),
                "SELECT p.location AS location, COUNT(*) AS n, CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS bytes \
                 FROM blob_placements p JOIN blobs b ON b.digest = p.digest GROUP BY p.location",
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        let mut held: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for row in &rows {
            let l: String = get(row, "location", op)?;
            held.insert(l, (count(row, "n", op)?, count(row, "bytes", op)?));
        }
        let mut stats = Vec::with_capacity(locations.len());
        for l in locations {
            let (blobs, bytes) = held.get(l.as_str()).copied().unwrap_or((0, 0));
            let missing_blobs = total_blobs.saturating_sub(blobs);
            // Only a location that lacks something pays for the search of its oldest gap.
            let oldest_missing_at = if missing_blobs > 0 {
                let row = self
                    .db
                    .query_one(stmt(
                        self.backend(),
                        "SELECT MIN(b.created_at) AS oldest FROM blobs b WHERE NOT EXISTS \
                         (SELECT 1 FROM blob_placements p \
                          WHERE p.digest = b.digest AND p.location = $1)",
                        vec![l.to_string().into()],
                    ))
                    .await
                    .map_err(|e| db_error(op, e))?;
                match row {
                    Some(row) => row
                        .try_get::<Option<i64>>("", "oldest")
                        .map_err(|e| db_error(op, e))?,
                    None => None,
                }
            } else {
                None
            };
            stats.push(LocationStats {
                location: l.clone(),
                blobs,
                bytes,
                missing_blobs,
                missing_bytes: total_bytes.saturating_sub(bytes),
                oldest_missing_at,
            });
        }
        Ok(stats)
    }

    async fn sole_copies(&self, location: &LocationId) -> Result<u64> {
        sole_copies(&self.db, location, "sole_copies").await
    }

    async fn remove_location(&self, location: &LocationId, force: bool) -> Result<LocationRemoval> {
        let op = "remove_location";
        let txn = self.write_txn(op).await?;
        let backend = self.backend();
        // A write first, so SQLite takes its write lock now (see the module docs).
        let jobs = txn
            .execute(stmt(
                backend,
                "DELETE FROM replication_jobs WHERE target = $1",
                vec![location.to_string().into()],
            ))
            .await
            .map_err(|e| db_error(op, e))?
            .rows_affected();
        let sole = sole_copies(&txn, location, op).await?;
        if sole > 0 && !force {
            rollback(txn, op).await?;
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{sole} blobs have their only copy in {location}"),
            )
            .with_context("location", location));
        }
        let placements = txn
            .execute(stmt(
                backend,
                "DELETE FROM blob_placements WHERE location = $1",
                vec![location.to_string().into()],
            ))
            .await
            .map_err(|e| db_error(op, e))?
            .rows_affected();
        commit(txn, op).await?;
        Ok(LocationRemoval {
            placements,
            jobs,
            sole_copies: sole,
        })
    }
}

fn count(row: &QueryResult, col: &str, op: &'static str) -> Result<u64> {
    let v: i64 = row.try_get("", col).map_err(|e: DbErr| db_error(op, e))?;
    from_db("count", v)
}

async fn sole_copies(
    db: &impl ConnectionTrait,
    location: &LocationId,
    op: &'static str,
) -> Result<u64> {
    let row = db
        .query_one(stmt(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM blob_placements p WHERE p.location = $1 AND NOT EXISTS \
             (SELECT 1 FROM blob_placements q WHERE q.digest = p.digest AND q.location <> $1)",
            vec![location.to_string().into()],
        ))
        .await
        .map_err(|e| db_error(op, e))?;
    match row {
        Some(r) => count(&r, "n", op),
        None => Ok(0),
    }
}

/// Specs of jobs for `digest` on each of `targets` of `kind`.
pub(crate) fn specs(
    kind: quay_core::JobKind,
    digest: &Digest,
    targets: &[LocationId],
) -> Vec<JobSpec> {
    let unique: BTreeSet<&LocationId> = targets.iter().collect();
    unique
        .into_iter()
        .map(|t| JobSpec {
            kind,
            digest: digest.clone(),
            target: t.clone(),
        })
        .collect()
}
