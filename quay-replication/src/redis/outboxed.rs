//! [`OutboxedRedisQueue`]: the Redis queue as the rest of the system sees it, counting the
//! jobs still waiting in the SQL outbox (recorded by commits, not yet relayed) as pending, so
//! that `status` never reports done while a copy is still only in the outbox.

use std::time::Duration;

use async_trait::async_trait;
use std::collections::BTreeMap;

use quay_core::metadata::TimestampMs;
use quay_core::{
    FailOutcome, Job, JobQueue, JobSpec, Lease, LocationId, QueueStats, Result, TargetStats,
    WorkerBeat,
};
use std::sync::Arc;

use super::RedisJobQueue;

/// Redis for work, plus the SQL outbox for counts.
#[derive(Debug, Clone)]
pub struct OutboxedRedisQueue {
    redis: RedisJobQueue,
    outbox: Arc<dyn JobQueue>,
}

impl OutboxedRedisQueue {
    /// Combines the Redis queue with the outbox that feeds it.
    pub fn new(redis: RedisJobQueue, outbox: Arc<dyn JobQueue>) -> Self {
        OutboxedRedisQueue { redis, outbox }
    }

    /// The Redis queue.
    pub fn redis(&self) -> &RedisJobQueue {
        &self.redis
    }

    /// The SQL outbox.
    pub fn outbox(&self) -> &Arc<dyn JobQueue> {
        &self.outbox
    }
}

#[async_trait]
impl JobQueue for OutboxedRedisQueue {
    async fn enqueue(&self, jobs: &[JobSpec]) -> Result<u64> {
        self.redis.enqueue(jobs).await
    }
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>> {
        self.redis.claim(max, lease).await
    }
    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<i64> {
        self.redis.heartbeat(lease, extend).await
    }
    async fn complete(&self, lease: &Lease) -> Result<()> {
        self.redis.complete(lease).await
    }
    async fn fail(&self, lease: &Lease, error: &str) -> Result<FailOutcome> {
        self.redis.fail(lease, error).await
    }
    async fn defer(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.redis.defer(lease, delay).await
    }
    async fn stats(&self) -> Result<QueueStats> {
        let r = self.redis.stats().await?;
        let o = self.outbox.stats().await?;
        Ok(combine(&r, &o))
    }
    async fn target_stats(&self) -> Result<Vec<TargetStats>> {
        let mut by_target: BTreeMap<LocationId, (QueueStats, QueueStats)> = BTreeMap::new();
        for t in self.redis.target_stats().await? {
            by_target.entry(t.target).or_default().0 = t.stats;
        }
        for t in self.outbox.target_stats().await? {
            by_target.entry(t.target).or_default().1 = t.stats;
        }
        Ok(by_target
            .into_iter()
            .map(|(target, (r, o))| TargetStats {
                target,
                stats: combine(&r, &o),
            })
            .collect())
    }
    async fn record_worker(&self, beat: &WorkerBeat) -> Result<()> {
        self.redis.record_worker(beat).await
    }
    async fn forget_worker(&self, id: &str) -> Result<()> {
        self.redis.forget_worker(id).await
    }
    async fn workers(&self, seen_since: TimestampMs) -> Result<Vec<WorkerBeat>> {
        self.redis.workers(seen_since).await
    }
    /// Moves the jobs in Redis, and those still waiting in the outbox (which the relay then
    /// takes first).
    async fn prioritize(&self, jobs: &[JobSpec]) -> Result<u64> {
        Ok(self.redis.prioritize(jobs).await? + self.outbox.prioritize(jobs).await?)
    }
    async fn retry_dead(&self) -> Result<u64> {
        Ok(self.redis.retry_dead().await? + self.outbox.retry_dead().await?)
    }
    async fn dead_jobs(&self, limit: u64) -> Result<Vec<Job>> {
        let mut jobs = self.redis.dead_jobs(limit).await?;
        jobs.extend(self.outbox.dead_jobs(limit).await?);
        jobs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(jobs)
    }
}

/// The counts of Redis `r` and outbox `o`: a job still in the outbox (waiting for the relay,
/// or being relayed) is pending.
fn combine(r: &QueueStats, o: &QueueStats) -> QueueStats {
    QueueStats {
        pending: r.pending + o.pending + o.leased,
        leased: r.leased,
        dead: r.dead + o.dead,
        oldest_pending: match (r.oldest_pending, o.oldest_pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    }
}
