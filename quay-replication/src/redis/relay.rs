//! [`OutboxRelay`]: moves jobs from the SQL outbox (`replication_jobs`, written in the same
//! transaction as each blob commit) into the Redis queue.

use std::future::Future;
use std::time::Duration;

use quay_core::{JobQueue, JobSpec, Result};
use std::sync::Arc;
use tracing::{debug, warn};

use super::RedisJobQueue;

/// Moves jobs from the SQL outbox into Redis, at least once.
///
/// A pass claims a batch from the outbox under a lease, enqueues the batch in Redis (keeping
/// each job's enqueue time, the start of replication lag), then completes it in SQL. A relay
/// that dies between the two steps leaves the batch leased in SQL: it is claimed again when the
/// lease ends and enqueued again, which Redis deduplicates while the job is queued there.
/// Several relays may run at once (one per server): the SQL claim hands each job to one.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    outbox: Arc<dyn JobQueue>,
    queue: RedisJobQueue,
    batch: usize,
    lease: Duration,
}

impl OutboxRelay {
    /// A relay from `outbox` to `queue`, 500 jobs at a time under a 60 s lease.
    pub fn new(outbox: Arc<dyn JobQueue>, queue: RedisJobQueue) -> Self {
        OutboxRelay {
            outbox,
            queue,
            batch: 500,
            lease: Duration::from_secs(60),
        }
    }

    /// The same relay moving up to `batch` jobs (at least 1) per round trip.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Moves every job due in the outbox; returns how many were moved.
    ///
    /// When Redis fails, the batch in hand is given back to the outbox at once (without
    /// counting an attempt) and the error is returned.
    pub async fn run_once(&self) -> Result<u64> {
        let mut moved = 0;
        loop {
            let leases = self.outbox.claim(self.batch, self.lease).await?;
            if leases.is_empty() {
                return Ok(moved);
            }
            let jobs: Vec<(JobSpec, i64)> = leases
                .iter()
                .map(|l| (l.job.spec.clone(), l.job.enqueued_at))
                .collect();
            if let Err(e) = self.queue.enqueue_at(&jobs).await {
                for lease in &leases {
                    // If this fails too, the lease runs out and the job is claimed again.
                    let _ = self.outbox.defer(lease, Duration::ZERO).await;
                }
                return Err(e);
            }
            let completed = self.outbox.complete_all(&leases).await?;
            if completed < leases.len() as u64 {
                // Leases that ran out meanwhile: another relay moves those jobs again, and
                // Redis deduplicates them.
                debug!(
                    lost = leases.len() as u64 - completed,
                    "outbox leases ran out during a relay pass"
                );
            }
            moved += leases.len() as u64;
            if leases.len() < self.batch {
                return Ok(moved);
            }
        }
    }

    /// Runs [`run_once`](Self::run_once) every `interval` until `shutdown` resolves.
    pub async fn run(self, interval: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticks.tick() => {}
            }
            match self.run_once().await {
                Ok(0) => {}
                Ok(moved) => debug!(moved, "relayed outbox jobs to Redis"),
                Err(e) => warn!(error = %e, "outbox relay pass failed; retrying next interval"),
            }
        }
    }
}
