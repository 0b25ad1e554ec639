//! [`SqlJobQueue`]: the [`JobQueue`] over the `replication_jobs` table, on PostgreSQL
//! (`FOR UPDATE SKIP LOCKED`) and SQLite (one writer at a time).
//!
//! The table is the outbox too: blob commits and deletes record their jobs in it in their own
//! transaction, so a job can never be lost between a commit and its enqueue.
//!
//! | column | meaning |
//! |---|---|
//! | `kind`, `digest`, `target` | the job; unique together, so enqueuing is idempotent |
//! | `state` | `pending` (due at `not_before`), `leased` (until `lease_expires`), `dead` |
//! | `attempts` | claims so far; a claim counts, `defer` gives it back |
//! | `lease_token` | the holder's token; heartbeat, complete and fail must present it |
//! | `last_error` | the error of the last failed attempt |
//! | `enqueued_at` | when the job was recorded (the start of replication lag) |
//! | `priority` | 1 once [`JobQueue::prioritize`] moved the job to the front, else 0; a claim resets it |
//!
//! Lease ends, back-offs and the "due now" of a claim are read from the database's clock
//! (`now_sql`), not the caller's: servers with skewed clocks sharing one PostgreSQL still
//! agree on when a lease ends, so none takes a job whose lease is live elsewhere.
//!
//! A claim takes the jobs whose lease ended first (few: at most what vanished workers had in
//! flight), so that a takeover never waits behind the queue; then due pending jobs,
//! prioritized ones first, then in order of `not_before`, along the
//! `(state, priority DESC, not_before)` index. Each of the two is a `SELECT … LIMIT` (on
//! Postgres `FOR UPDATE SKIP LOCKED`) under an atomic `UPDATE … RETURNING`, so its cost does
//! not grow with the length of the queue. On Postgres the two are one statement (two common
//! table expressions, the due jobs limited to what the expired ones leave of the claim), so a
//! claim is one round trip; on SQLite, in process, they are two.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use quay_core::metadata::{now_ms, TimestampMs};
use quay_core::{
    Error, ErrorKind, FailOutcome, Job, JobKind, JobQueue, JobSpec, Lease, QueueStats, Result,
    RetryPolicy, TargetStats, WorkerBeat,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Value};

use super::convert::{digest, location};
use super::error::db_error;
use super::replication::{insert_jobs, stmt};
use super::SqlMetadataStore;

/// The job queue in the metadata database.
#[derive(Clone)]
pub struct SqlJobQueue {
    db: DatabaseConnection,
    policy: RetryPolicy,
}

impl fmt::Debug for SqlJobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlJobQueue")
            .field("backend", &self.db.get_database_backend())
            .field("policy", &self.policy)
            .finish()
    }
}

const COLUMNS: &str = "id, kind, digest, target, attempts, enqueued_at, last_error";

fn lease_lost() -> Error {
    Error::new(
        ErrorKind::Conflict,
        "the job's lease was lost: it expired and the job was claimed again",
    )
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SqlJobQueue {
    /// `complete_all` of one chunk on PostgreSQL: the leases travel as one JSON object (job id
    /// to lease token), so the statement has one text whatever the chunk's size and is
    /// planned once per connection; the jobs are found by their keys (`id = ANY`), so the
    /// plan never scans the queue. A job named twice (two leases of it) takes one statement
    /// per lease of it.
    async fn complete_chunk_pg(&self, chunk: &[Lease]) -> Result<u64> {
        let mut removed = 0;
        let mut rest: Vec<&Lease> = chunk.iter().collect();
        while !rest.is_empty() {
            let mut tokens = serde_json::Map::with_capacity(rest.len());
            let mut again = Vec::new();
            for lease in rest {
                let id = job_id(lease)?.to_string();
                if tokens.contains_key(&id) {
                    again.push(lease);
                } else {
                    tokens.insert(id, serde_json::Value::String(lease.token.clone()));
                }
            }
            let res = self
                .db
                .execute(stmt(
                    DbBackend::Postgres,
                    "DELETE FROM replication_jobs \
                     WHERE id = ANY (ARRAY(SELECT CAST(jsonb_object_keys($1::jsonb) AS BIGINT))) \
                     AND lease_token = $1::jsonb ->> CAST(id AS TEXT)",
                    vec![serde_json::Value::Object(tokens).to_string().into()],
                ))
                .await
                .map_err(|e| db_error("complete_all", e))?;
            removed += res.rows_affected();
            rest = again;
        }
        Ok(removed)
    }

    /// A queue on the same database as `store` (whose migrations created the table).
    pub fn new(store: &SqlMetadataStore, policy: RetryPolicy) -> Self {
        SqlJobQueue {
            db: store.connection().clone(),
            policy,
        }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The ids of up to `limit` (an SQL expression) claimable jobs in `state` (`pending`: due
    /// ones, highest priority first; `leased`: those whose lease ended, oldest first), as a
    /// sub-select; on PostgreSQL it locks the rows it returns, skipping locked ones.
    fn claimable(backend: DbBackend, state: &'static str, limit: &str) -> String {
        let now = now_sql(backend);
        let (due, cmp, order) = match state {
            "pending" => ("not_before", "<=", "priority DESC, not_before"),
            _ => ("lease_expires", "<", "lease_expires"),
        };
        let lock = match backend {
            DbBackend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        format!(
            "SELECT id FROM replication_jobs WHERE state = '{state}' AND {due} {cmp} {now} \
             ORDER BY {order} LIMIT {limit}{lock}"
        )
    }

    /// Leases the jobs whose ids `ids` selects (with `max` bound to `$3`) to `token`, in one
    /// statement.
    async fn lease_ids(
        &self,
        ids: &str,
        max: usize,
        lease: Duration,
        token: &str,
    ) -> Result<Vec<Lease>> {
        let op = "claim";
        let backend = self.backend();
        let now = now_sql(backend);
        let sql = format!(
            "UPDATE replication_jobs SET state = 'leased', lease_token = $1, \
             lease_expires = {now} + $2, attempts = attempts + 1, priority = 0 \
             WHERE id IN ({ids}) RETURNING {COLUMNS}, lease_expires"
        );
        let rows = self
            .db
            .query_all(stmt(
                backend,
                &sql,
                vec![
                    token.to_owned().into(),
                    millis(lease).into(),
                    (max as i64).into(),
                ],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter()
            .map(|row| {
                Ok(Lease {
                    job: row_job(row, op)?,
                    token: token.to_owned(),
                    expires_at: row
                        .try_get("", "lease_expires")
                        .map_err(|e| db_error(op, e))?,
                })
            })
            .collect()
    }

    /// Job counts by state (a leased job whose lease ended counts as `pending`), with the
    /// oldest enqueue time of each group; per target too when `per_target` (else the target
    /// is empty).
    async fn counts(&self, per_target: bool) -> Result<Vec<(String, String, u64, Option<i64>)>> {
        let op = "queue_stats";
        let (select, group) = if per_target {
            ("target AS target, ", "target, st")
        } else {
            ("'' AS target, ", "st")
        };
        let sql = format!(
            "SELECT {select}CASE WHEN state = 'leased' AND lease_expires < {} THEN 'pending' \
             ELSE state END AS st, COUNT(*) AS n, MIN(enqueued_at) AS oldest \
             FROM replication_jobs GROUP BY {group}",
            now_sql(self.backend())
        );
        let rows = self
            .db
            .query_all(stmt(self.backend(), &sql, Vec::new()))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter()
            .map(|row| {
                let target: String = row.try_get("", "target").map_err(|e| db_error(op, e))?;
                let state: String = row.try_get("", "st").map_err(|e| db_error(op, e))?;
                let n: i64 = row.try_get("", "n").map_err(|e| db_error(op, e))?;
                let oldest: Option<i64> = row.try_get("", "oldest").map_err(|e| db_error(op, e))?;
                Ok((target, state, u64::try_from(n).unwrap_or(0), oldest))
            })
            .collect()
    }

    /// Runs `UPDATE … SET {set}` on the job if `lease` still holds it, returning the
    /// `returning` column; fails with `Conflict` when the lease was lost.
    async fn update_held(
        &self,
        op: &'static str,
        set: &str,
        mut values: Vec<Value>,
        lease: &Lease,
        returning: &str,
    ) -> Result<QueryResult> {
        let n = values.len();
        values.push(job_id(lease)?.into());
        values.push(lease.token.clone().into());
        let sql = format!(
            "UPDATE replication_jobs SET {set} WHERE id = ${} AND lease_token = ${} \
             RETURNING {returning}",
            n + 1,
            n + 2
        );
        self.db
            .query_one(stmt(self.backend(), &sql, values))
            .await
            .map_err(|e| db_error(op, e))?
            .ok_or_else(lease_lost)
    }
}

/// Adds one group of [`SqlJobQueue::counts`] to `stats`.
fn add_count(stats: &mut QueueStats, state: &str, n: u64, oldest: Option<i64>) {
    match state {
        "pending" => stats.pending += n,
        "leased" => stats.leased += n,
        "dead" => stats.dead += n,
        _ => {}
    }
    if state != "dead" {
        stats.oldest_pending = match (stats.oldest_pending, oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The database's clock in milliseconds since the Unix epoch, as an SQL expression: the start
/// of the statement on PostgreSQL, the statement's `'now'` on SQLite (fixed within a statement
/// on both).
pub(crate) fn now_sql(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => {
            "CAST(FLOOR(EXTRACT(EPOCH FROM statement_timestamp()) * 1000) AS BIGINT)"
        }
        _ => "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)",
    }
}

fn job_id(lease: &Lease) -> Result<i64> {
    lease
        .job
        .id
        .parse()
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "not a job id of this queue"))
}

fn row_job(row: &QueryResult, op: &'static str) -> Result<Job> {
    let get_s = |c: &str| row.try_get::<String>("", c).map_err(|e| db_error(op, e));
    let id: i64 = row.try_get("", "id").map_err(|e| db_error(op, e))?;
    let kind = get_s("kind")?;
    let attempts: i32 = row.try_get("", "attempts").map_err(|e| db_error(op, e))?;
    Ok(Job {
        id: id.to_string(),
        spec: JobSpec {
            kind: JobKind::parse(&kind)
                .ok_or_else(|| Error::internal(format!("unknown job kind {kind:?}")))?,
            digest: digest("job digest", &get_s("digest")?)?,
            target: location(&get_s("target")?)?,
        },
        attempts: u32::try_from(attempts).unwrap_or(0),
        enqueued_at: row
            .try_get("", "enqueued_at")
            .map_err(|e| db_error(op, e))?,
        last_error: row
            .try_get::<Option<String>>("", "last_error")
            .map_err(|e| db_error(op, e))?,
    })
}

/// A random number in `[0, 1)` for back-off jitter, so that jobs failing together do not all
/// come back at the same instant: the low 53 bits of a v4 UUID, all random (its version and
/// variant bits are higher up).
fn jitter() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() as u64) & ((1 << 53) - 1);
    (bits as f64) / ((1u64 << 53) as f64)
}

#[async_trait]
impl JobQueue for SqlJobQueue {
    async fn enqueue(&self, jobs: &[JobSpec]) -> Result<u64> {
        insert_jobs(&self.db, jobs, now_ms(), "enqueue").await
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let max = max.min(10_000);
        // Jobs of a vanished worker first (few: at most what it had in flight), so that a
        // takeover does not wait behind the rest of the queue.
        let backend = self.backend();
        let expired = Self::claimable(backend, "leased", "$3");
        if backend == DbBackend::Postgres {
            // One statement: the due jobs fill what the expired ones leave of `max`.
            let left = "GREATEST($3 - (SELECT COUNT(*) FROM expired), 0)";
            let due = Self::claimable(backend, "pending", left);
            let both = format!(
                "WITH expired AS ({expired}), due AS ({due}) \
                 SELECT id FROM expired UNION ALL SELECT id FROM due"
            );
            return self.lease_ids(&both, max, lease, &token).await;
        }
        let mut leases = self.lease_ids(&expired, max, lease, &token).await?;
        if leases.len() < max {
            let due = Self::claimable(backend, "pending", "$3");
            let more = self
                .lease_ids(&due, max - leases.len(), lease, &token)
                .await?;
            leases.extend(more);
        }
        Ok(leases)
    }

    async fn prioritize(&self, jobs: &[JobSpec]) -> Result<u64> {
        let op = "prioritize";
        let now = now_sql(self.backend());
        let mut moved = 0;
        for chunk in jobs.chunks(200) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
            let mut tuples = Vec::with_capacity(chunk.len());
            for (i, job) in chunk.iter().enumerate() {
                let b = 1 + i * 3;
                tuples.push(format!("(${b}, ${}, ${})", b + 1, b + 2));
                values.push(job.kind.as_str().into());
                values.push(job.digest.to_string().into());
                values.push(job.target.to_string().into());
            }
            let sql = format!(
                "UPDATE replication_jobs SET priority = 1, not_before = {now} \
                 WHERE state = 'pending' AND (kind, digest, target) IN ({})",
                tuples.join(", ")
            );
            let res = self
                .db
                .execute(stmt(self.backend(), &sql, values))
                .await
                .map_err(|e| db_error(op, e))?;
            moved += res.rows_affected();
        }
        Ok(moved)
    }

    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<i64> {
        let now = now_sql(self.backend());
        let row = self
            .update_held(
                "heartbeat",
                &format!("lease_expires = {now} + $1"),
                vec![millis(extend).into()],
                lease,
                "lease_expires",
            )
            .await?;
        row.try_get("", "lease_expires")
            .map_err(|e| db_error("heartbeat", e))
    }

    /// Completes many jobs at once (a relay moving a batch): removes each job whose lease is
    /// still held, in a few statements. Returns how many were removed; a job whose lease was
    /// lost is left to its new holder.
    /// Puts every dead-lettered job back in the queue with its attempts reset. Returns how many.
    async fn retry_dead(&self) -> Result<u64> {
        let sql = format!(
            "UPDATE replication_jobs SET state = 'pending', attempts = 0, not_before = {} \
             WHERE state = 'dead'",
            now_sql(self.backend())
        );
        let res = self
            .db
            .execute(stmt(self.backend(), &sql, Vec::new()))
            .await
            .map_err(|e| db_error("retry_dead", e))?;
        Ok(res.rows_affected())
    }

    async fn complete_all(&self, leases: &[Lease]) -> Result<u64> {
        let op = "complete_all";
        let mut removed = 0;
        // One statement per 500 jobs, whatever claims they came from.
        for chunk in leases.chunks(500) {
            if self.backend() == DbBackend::Postgres {
                removed += self.complete_chunk_pg(chunk).await?;
                continue;
            }
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 2);
            let mut pairs = Vec::with_capacity(chunk.len());
            for (i, lease) in chunk.iter().enumerate() {
                pairs.push(format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
                values.push(job_id(lease)?.into());
                values.push(lease.token.clone().into());
            }
            let sql = format!(
                "DELETE FROM replication_jobs WHERE (id, lease_token) IN ({})",
                pairs.join(", ")
            );
            let res = self
                .db
                .execute(stmt(self.backend(), &sql, values))
                .await
                .map_err(|e| db_error(op, e))?;
            removed += res.rows_affected();
        }
        Ok(removed)
    }

    async fn complete(&self, lease: &Lease) -> Result<()> {
        let res = self
            .db
            .execute(stmt(
                self.backend(),
                "DELETE FROM replication_jobs WHERE id = $1 AND lease_token = $2",
                vec![job_id(lease)?.into(), lease.token.clone().into()],
            ))
            .await
            .map_err(|e| db_error("complete", e))?;
        if res.rows_affected() == 0 {
            return Err(lease_lost());
        }
        Ok(())
    }

    async fn fail(&self, lease: &Lease, error: &str) -> Result<FailOutcome> {
        // PostgreSQL text cannot hold NUL: a message with one would make every `fail` of the
        // job itself fail, and the job would never be dead-lettered.
        let error: String = error.chars().filter(|c| *c != '\0').take(2000).collect();
        if lease.job.attempts >= self.policy.max_attempts {
            self.update_held(
                "fail",
                "state = 'dead', last_error = $1, lease_token = NULL, lease_expires = NULL",
                vec![error.into()],
                lease,
                "id",
            )
            .await?;
            return Ok(FailOutcome::DeadLettered);
        }
        let delay = self.policy.delay(lease.job.attempts, jitter());
        let now = now_sql(self.backend());
        let row = self
            .update_held(
                "fail",
                &format!(
                    "state = 'pending', not_before = {now} + $1, last_error = $2, \
                     lease_token = NULL, lease_expires = NULL"
                ),
                vec![millis(delay).into(), error.into()],
                lease,
                "not_before",
            )
            .await?;
        let not_before = row
            .try_get("", "not_before")
            .map_err(|e| db_error("fail", e))?;
        Ok(FailOutcome::Retry { not_before })
    }

    async fn defer(&self, lease: &Lease, delay: Duration) -> Result<()> {
        let now = now_sql(self.backend());
        self.update_held(
            "defer",
            &format!(
                "state = 'pending', not_before = {now} + $1, \
                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
                 lease_token = NULL, lease_expires = NULL"
            ),
            vec![millis(delay).into()],
            lease,
            "id",
        )
        .await
        .map(drop)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let mut stats = QueueStats::default();
        for (_, state, n, oldest) in self.counts(false).await? {
            add_count(&mut stats, &state, n, oldest);
        }
        Ok(stats)
    }

    async fn target_stats(&self) -> Result<Vec<TargetStats>> {
        let mut by_target: BTreeMap<String, QueueStats> = BTreeMap::new();
        for (target, state, n, oldest) in self.counts(true).await? {
            add_count(by_target.entry(target).or_default(), &state, n, oldest);
        }
        by_target
            .into_iter()
            .map(|(target, stats)| {
                Ok(TargetStats {
                    target: location(&target)?,
                    stats,
                })
            })
            .collect()
    }

    async fn record_worker(&self, beat: &WorkerBeat) -> Result<()> {
        super::workers::record(&self.db, beat).await
    }

    async fn forget_worker(&self, id: &str) -> Result<()> {
        super::workers::forget(&self.db, id).await
    }

    async fn workers(&self, seen_since: TimestampMs) -> Result<Vec<WorkerBeat>> {
        super::workers::list(&self.db, seen_since).await
    }

    async fn dead_jobs(&self, limit: u64) -> Result<Vec<Job>> {
        let op = "dead_jobs";
        let rows = self
            .db
            .query_all(stmt(
                self.backend(),
                &format!(
                    "SELECT {COLUMNS} FROM replication_jobs WHERE state = 'dead' ORDER BY id LIMIT $1"
                ),
                vec![(limit.min(i64::MAX as u64) as i64).into()],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter().map(|r| row_job(r, op)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_over_the_unit_interval() {
        let samples: Vec<f64> = (0..1000).map(|_| jitter()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        let low = samples.iter().copied().fold(1.0, f64::min);
        let high = samples.iter().copied().fold(0.0, f64::max);
        assert!(low < 0.05 && high > 0.95, "samples within [{low}, {high}]");
    }
}
