//! [`RepairIndex`] for [`SqlMetadataStore`]: bad copies and drained locations.

use async_trait::async_trait;
use quay_core::metadata::now_ms;
use quay_core::repair::{BadCopy, CopyProblem, RepairIndex};
use quay_core::{Digest, LocationId, Result};
use sea_orm::{ConnectionTrait, QueryResult, Value};

use super::convert::{digest, from_db, location};
use super::error::{corrupt, db_error};
use super::replication::stmt;
use super::{commit, SqlMetadataStore};

fn get<T: sea_orm::TryGetable>(row: &QueryResult, col: &str, op: &'static str) -> Result<T> {
    row.try_get::<T>("", col).map_err(|e| db_error(op, e))
}

/// Forgets the problem of a copy now verified (called where placements are recorded).
pub(crate) async fn resolve(
    db: &impl ConnectionTrait,
    digest: &Digest,
    location: &LocationId,
    op: &'static str,
) -> Result<()> {
    db.execute(stmt(
        db.get_database_backend(),
        "DELETE FROM bad_copies WHERE digest = $1 AND location = $2",
        vec![digest.to_string().into(), location.to_string().into()],
    ))
    .await
    .map_err(|e| db_error(op, e))?;
    Ok(())
}

#[async_trait]
impl RepairIndex for SqlMetadataStore {
    async fn record_bad_copy(
        &self,
        digest: &Digest,
        location: &LocationId,
        problem: CopyProblem,
    ) -> Result<bool> {
        let op = "record_bad_copy";
        let key = || -> Vec<Value> { vec![digest.to_string().into(), location.to_string().into()] };
        let (txn, _turn) = self.write_txn(op).await?;
        // Drop this placement only while another location holds the blob: the statement is
        // its own condition, so two findings at once cannot drop both placements.
        let dropped = txn
            .execute(stmt(
                self.backend(),
                "DELETE FROM blob_placements WHERE digest = $1 AND location = $2 \
                 AND EXISTS (SELECT 1 FROM blob_placements o \
                             WHERE o.digest = $1 AND o.location <> $2)",
                key(),
            ))
            .await
            .map_err(|e| db_error(op, e))?
            .rows_affected()
            > 0;
        let mut values = key();
        values.push(problem.as_str().into());
        values.push(now_ms().into());
        values.push(i64::from(dropped).into());
        let recorded = txn
            .execute(stmt(
                self.backend(),
                "INSERT INTO bad_copies (digest, location, problem, found_at, recoverable) \
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = $1) \
                 ON CONFLICT (digest, location) DO UPDATE SET problem = excluded.problem, \
                     found_at = excluded.found_at, recoverable = excluded.recoverable",
                values,
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        commit(txn, op).await?;
        // A blob removed meanwhile needs no repair.
        Ok(dropped || recorded.rows_affected() == 0)
    }

    async fn resolve_bad_copy(&self, digest: &Digest, location: &LocationId) -> Result<()> {
        resolve(&self.db, digest, location, "resolve_bad_copy").await
    }

    async fn bad_copies(&self, limit: u64) -> Result<Vec<BadCopy>> {
        let op = "bad_copies";
        let rows = self
            .db
            .query_all(stmt(
                self.backend(),
                "SELECT digest, location, problem, found_at, recoverable FROM bad_copies \
                 ORDER BY found_at, digest LIMIT $1",
                vec![i64::try_from(limit).unwrap_or(i64::MAX).into()],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter()
            .map(|r| {
                let problem: String = get(r, "problem", op)?;
                Ok(BadCopy {
                    digest: digest("digest", &get::<String>(r, "digest", op)?)?,
                    location: location(&get::<String>(r, "location", op)?)?,
                    problem: CopyProblem::parse(&problem)
                        .ok_or_else(|| corrupt("copy problem", &problem))?,
                    found_at: get(r, "found_at", op)?,
                    recoverable: get::<i64>(r, "recoverable", op)? != 0,
                })
            })
            .collect()
    }

    async fn placed_blobs(
        &self,
        at: &LocationId,
        after: Option<&Digest>,
        limit: u64,
    ) -> Result<Vec<(Digest, u64)>> {
        let op = "placed_blobs";
        let after = after.map(ToString::to_string).unwrap_or_default();
        let rows = self
            .db
            .query_all(stmt(
                self.backend(),
                "SELECT p.digest, b.size FROM blob_placements p JOIN blobs b ON b.digest = p.digest \
                 WHERE p.location = $1 AND p.digest > $2 ORDER BY p.digest LIMIT $3",
                vec![
                    at.to_string().into(),
                    after.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter()
            .map(|r| {
                Ok((
                    digest("digest", &get::<String>(r, "digest", op)?)?,
                    from_db("size", get::<i64>(r, "size", op)?)?,
                ))
            })
            .collect()
    }

    async fn set_drained(&self, at: &LocationId, drained: bool) -> Result<()> {
        let op = "set_drained";
        self.db
            .execute(stmt(
                self.backend(),
                "INSERT INTO location_states (location, drained, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (location) DO UPDATE SET drained = excluded.drained, \
                     updated_at = excluded.updated_at",
                vec![
                    at.to_string().into(),
                    i64::from(drained).into(),
                    now_ms().into(),
                ],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        Ok(())
    }

    async fn drained_locations(&self) -> Result<Vec<LocationId>> {
        let op = "drained_locations";
        let rows = self
            .db
            .query_all(stmt(
                self.backend(),
                "SELECT location FROM location_states WHERE drained <> 0 ORDER BY location",
                Vec::new(),
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter()
            .map(|r| location(&get::<String>(r, "location", op)?))
            .collect()
    }
}
