//! [`GarbageIndex`] for [`SqlMetadataStore`]: tag history, manifest references, and the
//! set-based collection queries.
//!
//! # Why concurrent pushes are safe
//!
//! The collector decides with one query per kind of garbage and deletes in chunks, each delete
//! re-checking its condition in the same statement. What a concurrent push may do between the
//! decision and the delete is covered by the schema (migration 5):
//!
//! - **A manifest push referencing a blob the collector removes.** The push writes one
//!   `manifest_blobs` row per blob, whose foreign key names the blob's link
//!   (`repository_blobs`). If the collector deleted the link first, the push's insert fails
//!   (`Conflict`, answered `MANIFEST_BLOB_UNKNOWN`: the client pushes the blob again). If the
//!   push wrote its row first, the link delete fails on the same key (PostgreSQL checks the
//!   key against committed rows and waits for the push's transaction; SQLite runs one writer at
//!   a time), and the chunk is retried link by link, skipping the one now referenced. Either
//!   way no stored manifest references a removed blob.
//! - **A blob committed or mounted again** renews its link's `linked_at` (and a manifest pushed
//!   again its `pushed_at`): the delete's own re-check of the time (evaluated on the updated
//!   row: PostgreSQL re-reads a row locked by another transaction before deleting it) spares it.
//! - **An index push listing a child the collector removes**: `manifest_children` has a foreign
//!   key to the child, with the same two outcomes.
//! - **A link added to a blob being removed**: the link's foreign key names the blob row; the
//!   blob delete re-checks that no link exists, and fails on the key otherwise (the chunk is
//!   retried in halves). Its placements are removed in the same transaction, so they come
//!   back with it.
//! - **A copy of a removed blob being deleted while the blob is pushed again** (objects are
//!   content-addressed, so the new object has the old one's path): the commit (or replication)
//!   of a placement drops a pending delete job of that blob and location, and is refused
//!   (`Unavailable`, the client retries) while one is running, or when one finished since the
//!   pusher read the location's removal count (`removed_copies`) before it looked at the
//!   placements and wrote the object: that delete may have removed the new object.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use quay_core::gc::{CollectedBlob, GarbageIndex, GcCutoffs, TagHistoryEntry};
use quay_core::metadata::{now_ms, ManifestRecord, TimestampMs};
use quay_core::{Digest, Error, ErrorKind, LocationId, RepositoryName, Result, Tag};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Value};

use super::convert::{digest, from_db, location, manifest_record};
use super::entities::manifest;
use super::error::db_error;
use super::replication::{insert_jobs, placeholders, specs, stmt};
use super::{commit, SqlMetadataStore};

/// Rows written or read per statement.
const CHUNK: usize = 500;
/// Rows a collection pass deletes per statement. Large, because the planner answers a long
/// key list with one scan of the table (faster than as many index reads), so each statement
/// costs about a scan: fewer statements, fewer scans. 4,000 pairs are 8,000 parameters (well
/// under PostgreSQL's 65,535 and SQLite's 32,766).
const DELETE_CHUNK: usize = 4000;

fn get<T: sea_orm::TryGetable>(row: &QueryResult, col: &str, op: &'static str) -> Result<T> {
    row.try_get::<T>("", col).map_err(|e| db_error(op, e))
}

fn repository(name: &str) -> Result<RepositoryName> {
    name.parse()
        .map_err(|e: Error| super::error::corrupt("repository name", e))
}

/// Records that `tag` of `repository` stopped pointing at its current target (if it has one
/// other than `new_target`), before the caller moves or deletes it. Locks the tag row on
/// PostgreSQL, so that two concurrent moves each record the target the other left.
pub(crate) async fn record_tag_history(
    db: &impl ConnectionTrait,
    repository: &RepositoryName,
    tag: &Tag,
    new_target: Option<&Digest>,
    now: TimestampMs,
    op: &'static str,
) -> Result<()> {
    let backend = db.get_database_backend();
    let lock = if backend == DbBackend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let current = db
        .query_one(stmt(
            backend,
            &format!("SELECT manifest_digest FROM tags WHERE repository = $1 AND name = $2{lock}"),
            vec![repository.to_string().into(), tag.to_string().into()],
        ))
        .await
        .map_err(|e| db_error(op, e))?;
    let Some(row) = current else {
        return Ok(());
    };
    let old: String = get(&row, "manifest_digest", op)?;
    if new_target.is_some_and(|d| d.to_string() == old) {
        return Ok(());
    }
    db.execute(stmt(
        backend,
        "INSERT INTO tag_history (repository, name, manifest_digest, ended_at) \
         VALUES ($1, $2, $3, $4)",
        vec![
            repository.to_string().into(),
            tag.to_string().into(),
            old.into(),
            now.into(),
        ],
    ))
    .await
    .map_err(|e| db_error(op, e))?;
    Ok(())
}

/// Records a manifest's references and marks them recorded. A reference whose blob link or
/// child manifest is missing fails with `Conflict` (foreign keys).
pub(crate) async fn insert_references(
    db: &impl ConnectionTrait,
    repository: &RepositoryName,
    digest: &Digest,
    blobs: &[Digest],
    children: &[Digest],
    op: &'static str,
) -> Result<()> {
    let backend = db.get_database_backend();
    for (table, column, targets) in [
        ("manifest_blobs", "blob_digest", blobs),
        ("manifest_children", "child_digest", children),
    ] {
        for chunk in targets.chunks(CHUNK) {
            let mut values: Vec<Value> =
                vec![repository.to_string().into(), digest.to_string().into()];
            let rows: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(i, target)| {
                    values.push(target.to_string().into());
                    format!("($1, $2, ${})", i + 3)
                })
                .collect();
            let sql = format!(
                "INSERT INTO {table} (repository, manifest_digest, {column}) VALUES {} \
                 ON CONFLICT DO NOTHING",
                rows.join(", ")
            );
            db.execute(stmt(backend, &sql, values))
                .await
                .map_err(|e| db_error(op, e).with_context("manifest", digest))?;
        }
    }
    db.execute(stmt(
        backend,
        "UPDATE manifests SET references_recorded = 1 WHERE repository = $1 AND digest = $2",
        vec![repository.to_string().into(), digest.to_string().into()],
    ))
    .await
    .map_err(|e| db_error(op, e))?;
    Ok(())
}

/// Counts a removal of the copy of `digest` in `location`, and forgets counts not touched for
/// a day.
pub(crate) async fn record_removed_copy(
    db: &impl ConnectionTrait,
    digest: &Digest,
    location: &LocationId,
) -> Result<()> {
    let op = "record_removed_copy";
    let backend = db.get_database_backend();
    let now = super::queue::now_sql(backend);
    let count = "INSERT INTO removed_copies (digest, location, removals, removed_at) \
             VALUES ($1, $2, 1, {now}) ON CONFLICT (digest, location) DO UPDATE \
             SET removals = removed_copies.removals + 1, removed_at = excluded.removed_at";
    let prune = "DELETE FROM removed_copies WHERE removed_at < {now} - 86400000";
    let params = vec![digest.to_string().into(), location.to_string().into()];
    if backend == DbBackend::Postgres {
        // One statement, so one round trip and one commit for each copy a delete job removes.
        // The prune leaves the counted row to the insert: one statement may not touch a row
        // twice.
        let sql =
            format!("WITH pruned AS ({prune} AND NOT (digest = $1 AND location = $2)) {count}")
                .replace("{now}", now);
        db.execute(stmt(backend, &sql, params))
            .await
            .map_err(|e| db_error(op, e))?;
        return Ok(());
    }
    // SQLite has no DELETE inside WITH.
    db.execute(stmt(backend, &count.replace("{now}", now), params))
        .await
        .map_err(|e| db_error(op, e))?;
    db.execute(stmt(backend, &prune.replace("{now}", now), Vec::new()))
        .await
        .map_err(|e| db_error(op, e))?;
    Ok(())
}

/// How many removals of the copy of `digest` in `location` are counted.
pub(crate) async fn removals(
    db: &impl ConnectionTrait,
    digest: &Digest,
    location: &LocationId,
    op: &'static str,
) -> Result<u64> {
    let row = db
        .query_one(stmt(
            db.get_database_backend(),
            "SELECT removals FROM removed_copies WHERE digest = $1 AND location = $2",
            vec![digest.to_string().into(), location.to_string().into()],
        ))
        .await
        .map_err(|e| db_error(op, e))?;
    match row {
        Some(row) => from_db("removals", get::<i64>(&row, "removals", op)?),
        None => Ok(0),
    }
}

/// Runs `delete` on `items` in chunks of [`DELETE_CHUNK`], in order, and gathers what it
/// deleted. A chunk refused with `Conflict` (a concurrent writer won on one of its rows) is
/// retried in halves, down to single items; an item still refused alone is skipped. Any other
/// error stops it.
async fn in_halving_chunks<'a, T, R, F, Fut>(items: &'a [T], mut delete: F) -> Result<Vec<R>>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<R>>>,
{
    let mut done = Vec::new();
    let mut todo: Vec<&'a [T]> = items.chunks(DELETE_CHUNK).rev().collect();
    while let Some(chunk) = todo.pop() {
        match delete(chunk).await {
            Ok(rows) => done.extend(rows),
            Err(e) if e.kind() == ErrorKind::Conflict => {
                if chunk.len() > 1 {
                    let (a, b) = chunk.split_at(chunk.len() / 2);
                    todo.push(b);
                    todo.push(a);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The live manifests of every repository, as a recursive common table expression `live`
/// (see `quay_core::gc`), for cut-offs bound to `$1` (history ended after) and `$2` (pushed
/// after).
const LIVE: &str = "WITH RECURSIVE edges (repository, src, dst) AS ( \
        SELECT repository, manifest_digest, child_digest FROM manifest_children \
        UNION ALL \
        SELECT repository, subject, digest FROM manifests WHERE subject IS NOT NULL \
    ), live (repository, digest) AS ( \
        SELECT repository, manifest_digest FROM tags \
        UNION SELECT repository, manifest_digest FROM tag_history WHERE ended_at >= $1 \
        UNION SELECT repository, digest FROM manifests \
            WHERE COALESCE(pushed_at, created_at) >= $2 OR references_recorded IS NULL \
        UNION SELECT e.repository, e.dst FROM edges e \
            JOIN live l ON e.repository = l.repository AND e.src = l.digest \
    )";

fn pairs(
    rows: &[QueryResult],
    a: &str,
    b: &str,
    op: &'static str,
) -> Result<Vec<(String, String)>> {
    rows.iter()
        .map(|r| Ok((get::<String>(r, a, op)?, get::<String>(r, b, op)?)))
        .collect()
}

fn typed(pairs: Vec<(String, String)>) -> Result<Vec<(RepositoryName, Digest)>> {
    pairs
        .into_iter()
        .map(|(r, d)| Ok((repository(&r)?, digest("digest", &d)?)))
        .collect()
}

impl SqlMetadataStore {
    async fn query_pairs(
        &self,
        sql: &str,
        values: Vec<Value>,
        a: &str,
        b: &str,
        op: &'static str,
    ) -> Result<Vec<(String, String)>> {
        let rows = self
            .db
            .query_all(stmt(self.backend(), sql, values))
            .await
            .map_err(|e| db_error(op, e))?;
        pairs(&rows, a, b, op)
    }

    /// Deletes `(repository, digest)` pairs of `table` chunk by chunk with `condition`
    /// re-checked; a chunk that fails on a foreign key (a concurrent push won) is retried in
    /// halves down to single rows, skipping the rows that still fail. `condition` names the
    /// table's columns `@.column`. Returns the pairs deleted.
    async fn delete_pairs(
        &self,
        table: &str,
        digest_column: &str,
        condition: &str,
        params: &[Value],
        candidates: &[(String, String)],
        op: &'static str,
    ) -> Result<Vec<(String, String)>> {
        in_halving_chunks(candidates, |chunk| {
            self.delete_chunk(table, digest_column, condition, params, chunk, op)
        })
        .await
    }

    async fn delete_chunk(
        &self,
        table: &str,
        digest_column: &str,
        condition: &str,
        params: &[Value],
        chunk: &[(String, String)],
        op: &'static str,
    ) -> Result<Vec<(String, String)>> {
        let mut values: Vec<Value> = params.to_vec();
        let first = values.len() + 1;
        let keys: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, (r, d))| {
                values.push(r.clone().into());
                values.push(d.clone().into());
                format!("(${}, ${})", first + 2 * i, first + 2 * i + 1)
            })
            .collect();
        let condition = condition.replace("@.", &format!("{table}."));
        let sql = format!(
            "DELETE FROM {table} WHERE ({table}.repository, {table}.{digest_column}) \
             IN (VALUES {}) AND {condition} RETURNING repository, {digest_column}",
            keys.join(", ")
        );
        let rows = self
            .db
            .query_all(stmt(self.backend(), &sql, values))
            .await
            .map_err(|e| db_error(op, e))?;
        pairs(&rows, "repository", digest_column, op)
    }
}

#[async_trait]
impl GarbageIndex for SqlMetadataStore {
    async fn tag_history(
        &self,
        repository: &RepositoryName,
        tag: Option<&Tag>,
        limit: u64,
    ) -> Result<Vec<TagHistoryEntry>> {
        let op = "tag_history";
        let mut values: Vec<Value> = vec![repository.to_string().into()];
        let mut sql = "SELECT name, manifest_digest, ended_at FROM tag_history \
                       WHERE repository = $1"
            .to_owned();
        if let Some(tag) = tag {
            values.push(tag.to_string().into());
            sql.push_str(" AND name = $2");
        }
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        sql.push_str(&format!(
            " ORDER BY ended_at DESC, id DESC LIMIT ${}",
            values.len()
        ));
        let rows = self
            .db
            .query_all(stmt(self.backend(), &sql, values))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter()
            .map(|r| {
                let name: String = get(r, "name", op)?;
                Ok(TagHistoryEntry {
                    repository: repository.clone(),
                    tag: name
                        .parse()
                        .map_err(|e: Error| super::error::corrupt("tag", e))?,
                    digest: digest("digest", &get::<String>(r, "manifest_digest", op)?)?,
                    ended_at: get(r, "ended_at", op)?,
                })
            })
            .collect()
    }

    async fn restore_tag(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
        target: &Digest,
        not_before: TimestampMs,
    ) -> Result<bool> {
        let op = "restore_tag";
        let now = now_ms();
        let (txn, _turn) = self.write_txn(op).await?;
        let known = txn
            .query_one(stmt(
                self.backend(),
                "SELECT 1 AS one FROM tag_history h JOIN manifests m \
                   ON m.repository = h.repository AND m.digest = h.manifest_digest \
                 WHERE h.repository = $1 AND h.name = $2 AND h.manifest_digest = $3 \
                   AND h.ended_at >= $4",
                vec![
                    repository.to_string().into(),
                    tag.to_string().into(),
                    target.to_string().into(),
                    not_before.into(),
                ],
            ))
            .await
            .map_err(|e| db_error(op, e))?
            .is_some();
        if !known {
            return Ok(false);
        }
        record_tag_history(&txn, repository, tag, Some(target), now, op).await?;
        txn.execute(stmt(
            self.backend(),
            "INSERT INTO tags (repository, name, manifest_digest, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (repository, name) \
             DO UPDATE SET manifest_digest = excluded.manifest_digest, \
                           updated_at = excluded.updated_at",
            vec![
                repository.to_string().into(),
                tag.to_string().into(),
                target.to_string().into(),
                now.into(),
            ],
        ))
        .await
        .map_err(|e| db_error(op, e))?;
        commit(txn, op).await?;
        Ok(true)
    }

    async fn manifests_without_references(
        &self,
        limit: u64,
    ) -> Result<Vec<(RepositoryName, ManifestRecord)>> {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
        let op = "manifests_without_references";
        let rows = manifest::Entity::find()
            .filter(manifest::Column::ReferencesRecorded.is_null())
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| db_error(op, e))?;
        rows.into_iter()
            .map(|row| {
                let repo = repository(&row.repository)?;
                Ok((repo, manifest_record(row)?))
            })
            .collect()
    }

    async fn record_references(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        blobs: &[Digest],
        children: &[Digest],
    ) -> Result<()> {
        let op = "record_references";
        let (txn, _turn) = self.write_txn(op).await?;
        // Only what exists: a reference to a blob or child that is gone keeps nothing alive.
        let mut present = [Vec::new(), Vec::new()];
        for (i, (table, targets)) in [("repository_blobs", blobs), ("manifests", children)]
            .into_iter()
            .enumerate()
        {
            for d in targets {
                let row = txn
                    .query_one(stmt(
                        self.backend(),
                        &format!(
                            "SELECT 1 AS one FROM {table} WHERE repository = $1 AND digest = $2"
                        ),
                        vec![repository.to_string().into(), d.to_string().into()],
                    ))
                    .await
                    .map_err(|e| db_error(op, e))?;
                if row.is_some() {
                    present[i].push(d.clone());
                }
            }
        }
        insert_references(&txn, repository, digest, &present[0], &present[1], op).await?;
        commit(txn, op).await
    }

    async fn expire_tag_history(&self, before: TimestampMs) -> Result<u64> {
        let op = "expire_tag_history";
        let res = self
            .db
            .execute(stmt(
                self.backend(),
                "DELETE FROM tag_history WHERE ended_at < $1",
                vec![before.into()],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        Ok(res.rows_affected())
    }

    async fn collect_manifests(
        &self,
        cutoffs: GcCutoffs,
        dry_run: bool,
    ) -> Result<Vec<(RepositoryName, Digest)>> {
        let op = "collect_manifests";
        let params: Vec<Value> = vec![cutoffs.history_before.into(), cutoffs.pushed_after.into()];
        let dead_sql = format!(
            "{LIVE} SELECT m.repository, m.digest FROM manifests m \
             WHERE NOT EXISTS (SELECT 1 FROM live l \
                               WHERE l.repository = m.repository AND l.digest = m.digest)"
        );
        let dead = self
            .query_pairs(&dead_sql, params.clone(), "repository", "digest", op)
            .await?;
        if dry_run {
            return typed(dead);
        }
        // Parents before children (a child's foreign key holds while a parent lists it): each
        // round removes the dead manifests no remaining manifest lists, until none is left.
        let condition = "@.references_recorded IS NOT NULL \
             AND COALESCE(@.pushed_at, @.created_at) < $2 \
             AND NOT EXISTS (SELECT 1 FROM tags g \
                             WHERE g.repository = @.repository AND g.manifest_digest = @.digest) \
             AND NOT EXISTS (SELECT 1 FROM tag_history h WHERE h.repository = @.repository \
                             AND h.manifest_digest = @.digest AND h.ended_at >= $1) \
             AND NOT EXISTS (SELECT 1 FROM manifest_children c \
                             WHERE c.repository = @.repository AND c.child_digest = @.digest) \
             AND NOT EXISTS (SELECT 1 FROM tags g WHERE @.subject IS NOT NULL \
                             AND g.repository = @.repository AND g.manifest_digest = @.subject)";
        let mut remaining = dead;
        let mut removed = Vec::new();
        loop {
            let round = self
                .delete_pairs("manifests", "digest", condition, &params, &remaining, op)
                .await?;
            if round.is_empty() {
                break;
            }
            let gone: HashSet<&(String, String)> = round.iter().collect();
            remaining.retain(|p| !gone.contains(p));
            removed.extend(round);
            if remaining.is_empty() {
                break;
            }
        }
        typed(removed)
    }

    async fn collect_links(
        &self,
        cutoffs: GcCutoffs,
        dry_run: bool,
    ) -> Result<Vec<(RepositoryName, Digest)>> {
        let op = "collect_links";
        let params: Vec<Value> = vec![cutoffs.history_before.into(), cutoffs.pushed_after.into()];
        // A link is needed while a live manifest references it (dry runs, where dead manifests
        // are still there) or any manifest does (after the manifests were collected).
        let sql = format!(
            "{LIVE} SELECT rb.repository, rb.digest FROM repository_blobs rb \
             WHERE COALESCE(rb.linked_at, rb.created_at) < $2 \
               AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb JOIN live l \
                                 ON l.repository = mb.repository AND l.digest = mb.manifest_digest \
                               WHERE mb.repository = rb.repository AND mb.blob_digest = rb.digest)"
        );
        let dead = self
            .query_pairs(&sql, params.clone(), "repository", "digest", op)
            .await?;
        if dry_run {
            return typed(dead);
        }
        let condition = "COALESCE(@.linked_at, @.created_at) < $1 \
             AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb \
                             WHERE mb.repository = @.repository AND mb.blob_digest = @.digest)";
        let removed = self
            .delete_pairs(
                "repository_blobs",
                "digest",
                condition,
                &[cutoffs.pushed_after.into()],
                &dead,
                op,
            )
            .await?;
        typed(removed)
    }

    async fn collect_blobs(&self, cutoffs: GcCutoffs, dry_run: bool) -> Result<Vec<CollectedBlob>> {
        let op = "collect_blobs";
        let (candidates_sql, params): (String, Vec<Value>) = if dry_run {
            // Every link of the blob would go: none is young, none is referenced by a live
            // manifest.
            (
                format!(
                    "{LIVE} SELECT b.digest, b.size FROM blobs b WHERE b.created_at < $2 \
                 AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest \
                     AND (COALESCE(rb.linked_at, rb.created_at) >= $2 OR EXISTS ( \
                         SELECT 1 FROM manifest_blobs mb JOIN live l \
                           ON l.repository = mb.repository AND l.digest = mb.manifest_digest \
                         WHERE mb.repository = rb.repository AND mb.blob_digest = rb.digest)))"
                ),
                vec![cutoffs.history_before.into(), cutoffs.pushed_after.into()],
            )
        } else {
            (
                "SELECT b.digest, b.size FROM blobs b WHERE b.created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)"
                    .to_owned(),
                vec![cutoffs.pushed_after.into()],
            )
        };
        let rows = self
            .db
            .query_all(stmt(self.backend(), &candidates_sql, params))
            .await
            .map_err(|e| db_error(op, e))?;
        let mut candidates = Vec::with_capacity(rows.len());
        for r in &rows {
            let size: i64 = get(r, "size", op)?;
            candidates.push((
                digest("digest", &get::<String>(r, "digest", op)?)?,
                from_db("size", size)?,
            ));
        }
        if dry_run {
            let mut out = Vec::with_capacity(candidates.len());
            for chunk in candidates.chunks(CHUNK) {
                let placed = self.placements_of(chunk.iter().map(|(d, _)| d)).await?;
                for (d, size) in chunk {
                    out.push(CollectedBlob {
                        digest: d.clone(),
                        size: *size,
                        locations: placed
                            .iter()
                            .filter(|(pd, _)| pd == d)
                            .map(|(_, l)| l.clone())
                            .collect(),
                    });
                }
            }
            return Ok(out);
        }
        // A blob linked meanwhile fails its chunk: halved until it is alone, and left.
        in_halving_chunks(&candidates, |chunk| self.delete_blobs(chunk)).await
    }

    async fn placed_digests(
        &self,
        location: &LocationId,
        digests: &[Digest],
    ) -> Result<Vec<Digest>> {
        let op = "placed_digests";
        let mut out = Vec::new();
        for chunk in digests.chunks(CHUNK) {
            let mut values: Vec<Value> = vec![location.to_string().into()];
            values.extend(chunk.iter().map(|d| Value::from(d.to_string())));
            let list = placeholders(2, chunk.len());
            let sql = format!(
                "SELECT digest FROM blob_placements WHERE location = $1 AND digest IN {list} \
                 UNION SELECT digest FROM replication_jobs WHERE kind = 'replicate' \
                 AND target = $1 AND digest IN {list}"
            );
            let rows = self
                .db
                .query_all(stmt(self.backend(), &sql, values))
                .await
                .map_err(|e| db_error(op, e))?;
            for r in &rows {
                out.push(digest("digest", &get::<String>(r, "digest", op)?)?);
            }
        }
        Ok(out)
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let op = "acquire_lease";
        let now = super::queue::now_sql(self.backend());
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let sql = format!(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, {now} + $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
             WHERE leases.expires_at < {now} OR leases.holder = excluded.holder"
        );
        let res = self
            .db
            .execute(stmt(
                self.backend(),
                &sql,
                vec![name.into(), holder.into(), ttl.into()],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        Ok(res.rows_affected() > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let op = "release_lease";
        self.db
            .execute(stmt(
                self.backend(),
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                vec![name.into(), holder.into()],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        Ok(())
    }
}

impl SqlMetadataStore {
    /// `(digest, location)` of every placement of `digests`.
    async fn placements_of<'a>(
        &self,
        digests: impl Iterator<Item = &'a Digest>,
    ) -> Result<Vec<(Digest, LocationId)>> {
        let op = "placements_of";
        let values: Vec<Value> = digests.map(|d| Value::from(d.to_string())).collect();
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT digest, location FROM blob_placements WHERE digest IN {}",
            placeholders(1, values.len())
        );
        let rows = self
            .db
            .query_all(stmt(self.backend(), &sql, values))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter()
            .map(|r| {
                Ok((
                    digest("digest", &get::<String>(r, "digest", op)?)?,
                    location(&get::<String>(r, "location", op)?)?,
                ))
            })
            .collect()
    }

    /// Removes unlinked blobs with their placements and records a delete job per placement,
    /// in one transaction; blobs linked meanwhile stay (with their placements).
    async fn delete_blobs(&self, chunk: &[(Digest, u64)]) -> Result<Vec<CollectedBlob>> {
        let op = "collect_blobs";
        let keys: Vec<Value> = chunk
            .iter()
            .map(|(d, _)| Value::from(d.to_string()))
            .collect();
        let list = placeholders(1, keys.len());
        let unlinked = |table: &str| {
            format!(
                "NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = {table}.digest)"
            )
        };
        let (txn, _turn) = self.write_txn(op).await?;
        let placements = txn
            .query_all(stmt(
                self.backend(),
                &format!(
                    "DELETE FROM blob_placements WHERE digest IN {list} AND {} \
                     RETURNING digest, location",
                    unlinked("blob_placements")
                ),
                keys.clone(),
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        let deleted = txn
            .query_all(stmt(
                self.backend(),
                &format!(
                    "DELETE FROM blobs WHERE digest IN {list} AND {} RETURNING digest",
                    unlinked("blobs")
                ),
                keys,
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        let deleted: HashSet<String> = deleted
            .iter()
            .map(|r| get::<String>(r, "digest", op))
            .collect::<Result<_>>()?;
        // The placements removed, by digest (one pass over the rows, not one per blob).
        let mut removed: HashMap<String, Vec<LocationId>> = HashMap::new();
        for p in &placements {
            let d = get::<String>(p, "digest", op)?;
            if !deleted.contains(&d) {
                // A blob linked meanwhile (between the two statements) lost its placements in
                // this transaction: undo it all; the caller retries the chunk in halves.
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "a blob was linked while it was being collected",
                ));
            }
            let l = location(&get::<String>(p, "location", op)?)?;
            removed.entry(d).or_default().push(l);
        }
        let mut out = Vec::new();
        let mut jobs = Vec::new();
        for (d, size) in chunk {
            let key = d.to_string();
            if !deleted.contains(&key) {
                continue;
            }
            let mut locations = removed.remove(&key).unwrap_or_default();
            locations.sort();
            jobs.extend(specs(quay_core::JobKind::Delete, d, &locations));
            out.push(CollectedBlob {
                digest: d.clone(),
                size: *size,
                locations,
            });
        }
        insert_jobs(&txn, &jobs, now_ms(), op).await?;
        commit(txn, op).await?;
        Ok(out)
    }
}
