//! Worker beats in the `replication_workers` table (migration 4): one row per running
//! replication worker, replaced by each beat, removed when the worker stops cleanly, and
//! dropped a day after its last beat when the worker vanished.

use quay_core::metadata::TimestampMs;
use quay_core::queue::WORKER_BEAT_RETENTION;
use quay_core::{Result, WorkerBeat};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult};

use super::error::db_error;
use super::replication::stmt;

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Stores `beat`, replacing the worker's previous one, and drops beats past retention.
pub(crate) async fn record(db: &DatabaseConnection, beat: &WorkerBeat) -> Result<()> {
    let op = "record_worker";
    let backend = db.get_database_backend();
    // The text columns are bounded, so a strange host name cannot bloat the table.
    let text = |s: &str| -> String { s.chars().filter(|c| *c != '\0').take(200).collect() };
    db.execute(stmt(
        backend,
        "INSERT INTO replication_workers (id, host, pid, role, started_at, seen_at, jobs_done, \
         jobs_failed, bytes_copied, running) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
         role = excluded.role, started_at = excluded.started_at, seen_at = excluded.seen_at, \
         jobs_done = excluded.jobs_done, jobs_failed = excluded.jobs_failed, \
         bytes_copied = excluded.bytes_copied, running = excluded.running",
        vec![
            text(&beat.id).into(),
            text(&beat.host).into(),
            i64::from(beat.pid).into(),
            text(&beat.role).into(),
            beat.started_at.into(),
            beat.seen_at.into(),
            int(beat.jobs_done).into(),
            int(beat.jobs_failed).into(),
            int(beat.bytes_copied).into(),
            i64::from(beat.running).into(),
        ],
    ))
    .await
    .map_err(|e| db_error(op, e))?;
    let retention = i64::try_from(WORKER_BEAT_RETENTION.as_millis()).unwrap_or(i64::MAX);
    db.execute(stmt(
        backend,
        "DELETE FROM replication_workers WHERE seen_at < $1",
        vec![beat.seen_at.saturating_sub(retention).into()],
    ))
    .await
    .map_err(|e| db_error(op, e))?;
    Ok(())
}

/// Removes the beat of worker `id`.
pub(crate) async fn forget(db: &DatabaseConnection, id: &str) -> Result<()> {
    db.execute(stmt(
        db.get_database_backend(),
        "DELETE FROM replication_workers WHERE id = $1",
        vec![id.to_owned().into()],
    ))
    .await
    .map_err(|e| db_error("forget_worker", e))?;
    Ok(())
}

/// The beats seen at or after `seen_since`, most recent first.
pub(crate) async fn list(
    db: &DatabaseConnection,
    seen_since: TimestampMs,
) -> Result<Vec<WorkerBeat>> {
    let op = "workers";
    let rows = db
        .query_all(stmt(
            db.get_database_backend(),
            "SELECT id, host, pid, role, started_at, seen_at, jobs_done, jobs_failed, \
             bytes_copied, running FROM replication_workers WHERE seen_at >= $1 \
             ORDER BY seen_at DESC, id LIMIT 1000",
            vec![seen_since.into()],
        ))
        .await
        .map_err(|e| db_error(op, e))?;
    rows.iter().map(|row| beat(row, op)).collect()
}

fn beat(row: &QueryResult, op: &'static str) -> Result<WorkerBeat> {
    let s = |c: &str| row.try_get::<String>("", c).map_err(|e| db_error(op, e));
    let n = |c: &str| row.try_get::<i64>("", c).map_err(|e| db_error(op, e));
    let count = |c: &str| n(c).map(|v| u64::try_from(v).unwrap_or(0));
    Ok(WorkerBeat {
        id: s("id")?,
        host: s("host")?,
        pid: u32::try_from(n("pid")?).unwrap_or(0),
        role: s("role")?,
        started_at: n("started_at")?,
        seen_at: n("seen_at")?,
        jobs_done: count("jobs_done")?,
        jobs_failed: count("jobs_failed")?,
        bytes_copied: count("bytes_copied")?,
        running: u32::try_from(n("running")?).unwrap_or(0),
    })
}
