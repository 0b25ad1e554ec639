//! Per-target counts and worker beats of [`RedisJobQueue`], each one Lua script.

use quay_core::metadata::TimestampMs;
use quay_core::queue::WORKER_BEAT_RETENTION;
use quay_core::{Error, QueueStats, Result, TargetStats, WorkerBeat};
use serde_json::json;

use super::connection::Script;
use super::error::bad_reply;
use super::queue::number;
use super::scripts;
use super::RedisJobQueue;

static TARGET_STATS: Script = Script::new(scripts::TARGET_STATS);
static WORKER_BEAT: Script = Script::new(scripts::WORKER_BEAT);
static FORGET_WORKER: Script = Script::new(scripts::FORGET_WORKER);
static WORKERS: Script = Script::new(scripts::WORKERS);

/// Values per target in the reply of `TARGET_STATS`.
const TARGET_FIELDS: usize = 5;

pub(super) async fn target_stats(queue: &RedisJobQueue) -> Result<Vec<TargetStats>> {
    let op = "target_stats";
    let reply = queue
        .run(op, &TARGET_STATS, vec![queue.job_prefix()])
        .await?;
    if reply.len() % TARGET_FIELDS != 0 {
        return Err(bad_reply(op, format!("{} values", reply.len())));
    }
    reply
        .chunks(TARGET_FIELDS)
        .map(|f| {
            let count = |i: usize| number(op, f[i].as_ref()).map(|n| n.max(0) as u64);
            let target = f[0]
                .as_deref()
                .ok_or_else(|| bad_reply(op, "a target without its name"))?;
            Ok(TargetStats {
                target: target
                    .parse()
                    .map_err(|e| Error::internal(format!("corrupt job target in Redis: {e}")))?,
                stats: QueueStats {
                    pending: count(1)?,
                    leased: count(2)?,
                    dead: count(3)?,
                    oldest_pending: match f[4].as_deref() {
                        None | Some("") => None,
                        Some(_) => Some(number(op, f[4].as_ref())?),
                    },
                },
            })
        })
        .collect()
}

pub(super) async fn record(queue: &RedisJobQueue, beat: &WorkerBeat) -> Result<()> {
    let retention = i64::try_from(WORKER_BEAT_RETENTION.as_millis()).unwrap_or(i64::MAX);
    let payload = json!({
        "id": beat.id,
        "host": beat.host,
        "pid": beat.pid,
        "role": beat.role,
        "started_at": beat.started_at,
        "seen_at": beat.seen_at,
        "jobs_done": beat.jobs_done,
        "jobs_failed": beat.jobs_failed,
        "bytes_copied": beat.bytes_copied,
        "running": beat.running,
    });
    queue
        .count(
            "record_worker",
            &WORKER_BEAT,
            vec![
                queue.job_prefix(),
                beat.id.clone(),
                beat.seen_at.to_string(),
                payload.to_string(),
                beat.seen_at.saturating_sub(retention).to_string(),
            ],
        )
        .await
        .map(drop)
}

pub(super) async fn forget(queue: &RedisJobQueue, id: &str) -> Result<()> {
    queue
        .count(
            "forget_worker",
            &FORGET_WORKER,
            vec![queue.job_prefix(), id.to_owned()],
        )
        .await
        .map(drop)
}

pub(super) async fn list(
    queue: &RedisJobQueue,
    seen_since: TimestampMs,
) -> Result<Vec<WorkerBeat>> {
    let op = "workers";
    let reply = queue
        .run(
            op,
            &WORKERS,
            vec![queue.job_prefix(), seen_since.to_string()],
        )
        .await?;
    reply
        .iter()
        .flatten()
        .map(|text| {
            parse_beat(text).ok_or_else(|| bad_reply(op, "a worker beat that is not valid"))
        })
        .collect()
}

fn parse_beat(text: &str) -> Option<WorkerBeat> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let s = |k: &str| v.get(k)?.as_str().map(str::to_owned);
    let n = |k: &str| v.get(k)?.as_u64();
    let i = |k: &str| v.get(k)?.as_i64();
    Some(WorkerBeat {
        id: s("id")?,
        host: s("host")?,
        pid: u32::try_from(n("pid")?).ok()?,
        role: s("role")?,
        started_at: i("started_at")?,
        seen_at: i("seen_at")?,
        jobs_done: n("jobs_done")?,
        jobs_failed: n("jobs_failed")?,
        bytes_copied: n("bytes_copied")?,
        running: u32::try_from(n("running")?).ok()?,
    })
}
