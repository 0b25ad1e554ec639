//! The replication side of the schema: the `replication_jobs` table (written in the same
//! transaction as blob commits and deletes) and [`PlacementIndex`].

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use quay_core::metadata::{
    now_ms, BlobRecord, LocationRemoval, LocationStats, PlacementIndex, PlacementToAdd,
};
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

/// `add_placements` (see [`PlacementIndex::add_placement`]): one answer per copy, in order,
/// or the error that stopped the batch. On PostgreSQL one statement; on SQLite (one writer at a
/// time) one transaction.
async fn add_placements_txn(
    store: &SqlMetadataStore,
    copies: &[PlacementToAdd],
) -> Result<Vec<Result<bool>>> {
    let op = "add_placement";
    let backend = store.backend();
    // A placement is recorded unless a removal of a former copy there is running, or was
    // counted since the copy began (the copy may have been deleted with it), or the blob is
    // gone. A pending removal there must not delete the new copy: it is deleted first.
    let inserted: BTreeSet<(String, String)> = match backend {
        DbBackend::Postgres => {
            // The copies travel as one JSON parameter, so the statement's text is the same
            // whatever the batch's size: it is parsed once per connection, and PostgreSQL
            // plans it once and reuses the plan (its estimate of the copies, 100 rows, does
            // not depend on the value, so a reused plan costs the same as a fresh one). A
            // `VALUES` list of one row per copy gave a new text for every batch size, and each
            // run was planned again, which cost more than running it. The blob's existence is
            // checked per copy, by its key, whatever the size of the table.
            let rows: Vec<serde_json::Value> = copies
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "digest": c.digest.to_string(),
                        "location": c.location.as_str(),
                        "seen": i64::try_from(c.removals_seen).unwrap_or(i64::MAX),
                    })
                })
                .collect();
            let values: Vec<Value> = vec![
                now_ms().into(),
                serde_json::Value::from(rows).to_string().into(),
            ];
            // One statement, so one snapshot: a pending removal that this statement could not
            // delete was claimed meanwhile (it is `leased` now, which the snapshot does not
            // show), and blocks the placement like a running one.
            //
            // Every check is a lookup by key per copy, whatever the planner believes of the
            // tables: `v` carries, per copy, whether the blob is known, the id of the removal
            // (a delete job) queued there if any, and whether a problem is recorded for the
            // copy, each a scalar sub-select on a unique key (not `EXISTS`, which PostgreSQL
            // may run as one hashed read of the whole table when it looks small enough). A
            // join of the copies with the queue let a plan made on stale statistics (a burst
            // of pushes has just queued thousands of jobs, and `state = 'pending'` looked like
            // two rows) hash every pending job on each run, a cost that grows with the queue.
            // The pending removals to take over are deleted by id, behind a test of `v`
            // alone, which PostgreSQL runs once before the scan: almost always there is none,
            // and the `DELETE` reads nothing. (Their state is rechecked there, so that a
            // removal claimed meanwhile is left alone, and blocks.) The recorded problems of
            // copies that are back (`bad_copies`) are forgotten behind the same kind of test.
            let sql = "WITH v AS MATERIALIZED (SELECT r.digest, r.location, r.seen, \
                     COALESCE((SELECT TRUE FROM blobs b WHERE b.digest = r.digest), FALSE) \
                         AS known, \
                     (SELECT d.id FROM replication_jobs d WHERE d.kind = 'delete' \
                         AND d.digest = r.digest AND d.target = r.location) AS removal, \
                     COALESCE((SELECT TRUE FROM bad_copies c \
                         WHERE c.digest = r.digest AND c.location = r.location), FALSE) AS bad \
                     FROM jsonb_to_recordset($2::jsonb) AS r (digest TEXT, location TEXT, seen BIGINT)), \
                 taken AS (DELETE FROM replication_jobs j \
                     WHERE EXISTS (SELECT 1 FROM v WHERE v.known AND v.removal IS NOT NULL) \
                     AND j.id = ANY (ARRAY(SELECT v.removal FROM v \
                         WHERE v.known AND v.removal IS NOT NULL)) \
                     AND j.state = 'pending' \
                     RETURNING j.digest, j.target), \
                 ins AS (INSERT INTO blob_placements (digest, location, created_at) \
                     SELECT v.digest, v.location, $1 FROM v \
                     WHERE v.known \
                     AND NOT COALESCE((SELECT j.state = 'leased' OR (j.state = 'pending' \
                         AND NOT EXISTS (SELECT 1 FROM taken t \
                             WHERE t.digest = j.digest AND t.target = j.target)) \
                         FROM replication_jobs j WHERE j.id = v.removal), FALSE) \
                     AND COALESCE((SELECT r.removals FROM removed_copies r \
                         WHERE r.digest = v.digest AND r.location = v.location), 0) <= v.seen \
                     ON CONFLICT (digest, location) DO NOTHING RETURNING digest, location), \
                 fixed AS (DELETE FROM bad_copies c USING ins \
                     WHERE EXISTS (SELECT 1 FROM v WHERE v.bad) \
                     AND c.digest = ins.digest AND c.location = ins.location) \
                 SELECT digest, location FROM ins";
            let found = store
                .db
                .query_all(stmt(backend, sql, values))
                .await
                .map_err(|e| db_error(op, e))?;
            pairs_of(&found, op)?
        }
        _ => {
            let insert_where = "WHERE NOT EXISTS (SELECT 1 FROM replication_jobs j \
                     WHERE j.kind = 'delete' AND j.digest = v.digest AND j.target = v.location \
                     AND j.state = 'leased') \
                 AND COALESCE((SELECT r.removals FROM removed_copies r \
                     WHERE r.digest = v.digest AND r.location = v.location), 0) <= v.seen";
            // `VALUES` rows of the copies, their placeholders from `first` on.
            let rows = |first: usize| -> String {
                let rows: Vec<String> = (0..copies.len())
                    .map(|i| {
                        let b = first + 3 * i;
                        format!("(${b}, ${}, CAST(${} AS BIGINT))", b + 1, b + 2)
                    })
                    .collect();
                rows.join(", ")
            };
            let mut copy_values: Vec<Value> = Vec::with_capacity(copies.len() * 3);
            for c in copies {
                copy_values.push(c.digest.to_string().into());
                copy_values.push(c.location.to_string().into());
                copy_values.push(i64::try_from(c.removals_seen).unwrap_or(i64::MAX).into());
            }
            let mut values: Vec<Value> = vec![now_ms().into()];
            values.extend(copy_values.iter().cloned());
            let (txn, _turn) = store.write_txn(op).await?;
            // One writer at a time: nothing changes between these statements.
            txn.execute(stmt(
                backend,
                &format!(
                    "WITH v (digest, location, seen) AS (VALUES {}) \
                     DELETE FROM replication_jobs WHERE kind = 'delete' AND state = 'pending' \
                     AND EXISTS (SELECT 1 FROM v JOIN blobs b ON b.digest = v.digest \
                         WHERE v.digest = replication_jobs.digest \
                         AND v.location = replication_jobs.target)",
                    rows(1)
                ),
                copy_values,
            ))
            .await
            .map_err(|e| db_error(op, e))?;
            let sql = format!(
                "WITH v (digest, location, seen) AS (VALUES {}) \
                 INSERT INTO blob_placements (digest, location, created_at) \
                 SELECT v.digest, v.location, $1 FROM v JOIN blobs b ON b.digest = v.digest \
                 {} \
                 ON CONFLICT (digest, location) DO NOTHING RETURNING digest, location",
                rows(2),
                insert_where
            );
            let found = txn
                .query_all(stmt(backend, &sql, values))
                .await
                .map_err(|e| db_error(op, e))?;
            let inserted = pairs_of(&found, op)?;
            // A verified copy is back: its problem, if one was recorded, is solved.
            for (d, l) in &inserted {
                txn.execute(stmt(
                    backend,
                    "DELETE FROM bad_copies WHERE digest = $1 AND location = $2",
                    vec![d.clone().into(), l.clone().into()],
                ))
                .await
                .map_err(|e| db_error(op, e))?;
            }
            commit(txn, op).await?;
            inserted
        }
    };
    let mut answers = Vec::with_capacity(copies.len());
    for c in copies {
        let key = (c.digest.to_string(), c.location.to_string());
        if inserted.contains(&key) {
            answers.push(Ok(true));
            continue;
        }
        // Not inserted (rare): already placed, the blob gone, or a removal in the way.
        let row = store
            .db
            .query_one(stmt(
                backend,
                "SELECT \
                 (SELECT COUNT(*) FROM blob_placements WHERE digest = $1 AND location = $2) \
                     AS placed, \
                 (SELECT COUNT(*) FROM blobs WHERE digest = $1) AS known",
                vec![key.0.into(), key.1.into()],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        let count = |col: &str| -> Result<i64> {
            match &row {
                Some(row) => get::<i64>(row, col, op),
                None => Ok(0),
            }
        };
        answers.push(if count("placed")? > 0 {
            Ok(true)
        } else if count("known")? == 0 {
            Ok(false)
        } else {
            Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "a former copy of {} in {} is being removed right now; try again in a \
                     moment",
                    c.digest, c.location
                ),
            )
            .with_context("location", &c.location))
        });
    }
    Ok(answers)
}

/// `(digest, location)` of each row.
fn pairs_of(rows: &[QueryResult], op: &'static str) -> Result<BTreeSet<(String, String)>> {
    rows.iter()
        .map(|row| {
            Ok((
                get::<String>(row, "digest", op)?,
                get::<String>(row, "location", op)?,
            ))
        })
        .collect()
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
        let copy = PlacementToAdd {
            digest: digest.clone(),
            location: location.clone(),
            removals_seen,
        };
        self.add_placements(std::slice::from_ref(&copy))
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("add_placement got no answer")))
    }

    async fn add_placements(&self, copies: &[PlacementToAdd]) -> Vec<Result<bool>> {
        let mut answers = Vec::with_capacity(copies.len());
        for chunk in copies.chunks(200) {
            let batch = self
                .retrying("add_placement", Replay::Idempotent, || async move {
                    add_placements_txn(self, chunk).await
                })
                .await;
            match batch {
                Ok(found) => answers.extend(found),
                // Every copy gets the batch's error; each job retries on its own.
                Err(e) => answers.extend(
                    chunk
                        .iter()
                        .map(|c| Err(e.duplicate().with_context("digest", &c.digest))),
                ),
            }
        }
        answers
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
        let (txn, _turn) = self.write_txn(op).await?;
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
