//! The [`JobQueue`] trait: durable background jobs (replicate a blob to a location, delete a
//! blob's copy from a location), delivered at least once under a lease.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::digest::Digest;
use crate::error::Result;
use crate::metadata::TimestampMs;
use crate::names::LocationId;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    /// Copy the blob into the target location and record the placement.
    Replicate,
    /// Remove the blob's object from the target location.
    Delete,
}

impl JobKind {
    /// The stored name: `replicate` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Replicate => "replicate",
            JobKind::Delete => "delete",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "replicate" => Some(JobKind::Replicate),
            "delete" => Some(JobKind::Delete),
            _ => None,
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue. `(kind, digest, target)` is its identity: enqueuing a job that is already
/// pending, leased or dead adds nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobSpec {
    /// What to do.
    pub kind: JobKind,
    /// The blob.
    pub digest: Digest,
    /// The location to act on.
    pub target: LocationId,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The queue's id for the job.
    pub id: String,
    /// What it does.
    pub spec: JobSpec,
    /// Claims so far (including the current one).
    pub attempts: u32,
    /// When it was enqueued.
    pub enqueued_at: TimestampMs,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
}

/// A claimed job: held by one worker until `expires_at`, unless extended by a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job: Job,
    /// The lease's token: only its holder can heartbeat, complete or fail the job.
    pub token: String,
    /// When the lease ends unless extended.
    pub expires_at: TimestampMs,
}

/// What became of a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// It will be tried again, not before this time.
    Retry {
        /// Earliest next attempt.
        not_before: TimestampMs,
    },
    /// It used up its attempts and is kept, dead, with its last error.
    DeadLettered,
}

/// Counts for status reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs waiting (including those backing off).
    pub pending: u64,
    /// Jobs held by a worker under a live lease.
    pub leased: u64,
    /// Dead-lettered jobs.
    pub dead: u64,
    /// Enqueue time of the oldest job not dead.
    pub oldest_pending: Option<TimestampMs>,
}

/// Counts of the jobs acting on one location, for per-location status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStats {
    /// The location the jobs act on.
    pub target: LocationId,
    /// The counts, as [`JobQueue::stats`] gives them for the whole queue.
    pub stats: QueueStats,
}

/// A replication worker's sign of life: recorded every few seconds by the worker's background
/// runner, read by `quayctl status` and the status page to tell whether anyone drains the
/// queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerBeat {
    /// Unique per running worker (made when it starts).
    pub id: String,
    /// The host name of its machine.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// What runs it, e.g. `quay-server` or `quayctl worker`.
    pub role: String,
    /// When it started (the worker's clock).
    pub started_at: TimestampMs,
    /// When it last reported (the worker's clock).
    pub seen_at: TimestampMs,
    /// Jobs it finished since it started.
    pub jobs_done: u64,
    /// Failed attempts since it started.
    pub jobs_failed: u64,
    /// Bytes it copied since it started.
    pub bytes_copied: u64,
    /// Jobs it was running when it reported.
    pub running: u32,
}

/// Retry policy: exponential back-off with jitter, and the attempt that dead-letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// After this many failed attempts a job is dead-lettered.
    pub max_attempts: u32,
    /// Delay after the first failure.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`: `base × 2^(attempts-1)`, capped, then scaled by
    /// a jitter factor in `[0.5, 1.0]` taken from `jitter` (a number in `[0, 1)`).
    pub fn delay(&self, attempts: u32, jitter: f64) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let raw = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        raw.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A durable queue of [`JobSpec`]s.
///
/// # Behavior
///
/// - Delivery is at least once: a job stays until its holder completes it, and a job whose
///   lease expired (its worker vanished) can be claimed again.
/// - `enqueue` is idempotent per `(kind, digest, target)`; it returns how many were new.
/// - `claim` hands out up to `max` jobs that are due, each under a fresh lease; two workers
///   never both hold a live lease on one job.
/// - `heartbeat`, `complete`, `fail` and `defer` take the lease: when the lease was lost (it
///   expired and the job was claimed again), they fail with [`ErrorKind::Conflict`] and change
///   nothing.
/// - `fail` retries after the policy's back-off, or dead-letters the job with its error once
///   it used its attempts; dead jobs are kept and counted, never dropped.
/// - `defer` puts the job back for later without counting the attempt (used when a location is
///   known to be down).
/// - `prioritize` moves pending jobs to the front: each named job that is pending (due or
///   backing off) becomes due now and is claimed before every job of normal priority, oldest
///   bump first. The priority lasts until the job's next claim (a job that fails or is
///   deferred goes back to normal priority). It returns how many jobs it moved; a job that
///   is leased, dead or not queued is left alone. It defaults to
///   [`ErrorKind::Unsupported`].
/// - `target_stats` gives, per location that has jobs, the counts `stats` gives for the whole
///   queue; their sums are `stats`'s counts.
/// - `record_worker` stores a worker's beat under its id, replacing the previous one;
///   `workers` lists the beats seen at or after a time, most recent first; `forget_worker`
///   removes one (a worker that stops cleanly). Beats older than [`WORKER_BEAT_RETENTION`]
///   may be dropped. The three default to [`ErrorKind::Unsupported`]: a queue without them
///   cannot tell an operator whether a worker is running.
///
/// [`ErrorKind::Conflict`]: crate::ErrorKind::Conflict
#[async_trait]
pub trait JobQueue: Send + Sync + fmt::Debug {
    /// Adds jobs; returns how many were not already queued.
    async fn enqueue(&self, jobs: &[JobSpec]) -> Result<u64>;
    /// Claims up to `max` due jobs for `lease`.
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>>;
    /// Extends a lease by `lease` from now.
    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<TimestampMs>;
    /// Removes a finished job.
    async fn complete(&self, lease: &Lease) -> Result<()>;
    /// Removes finished jobs; returns how many were still held (a lost lease is skipped, not
    /// an error). The default completes them one by one; a queue that can should do it in one
    /// round trip.
    async fn complete_all(&self, leases: &[Lease]) -> Result<u64> {
        let mut done = 0;
        for lease in leases {
            match self.complete(lease).await {
                Ok(()) => done += 1,
                Err(e) if e.kind() == crate::ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    /// Records a failed attempt.
    async fn fail(&self, lease: &Lease, error: &str) -> Result<FailOutcome>;
    /// Releases a job for another try after `delay`, without counting the attempt.
    async fn defer(&self, lease: &Lease, delay: Duration) -> Result<()>;
    /// Counts.
    async fn stats(&self) -> Result<QueueStats>;
    /// Dead-lettered jobs, oldest first, at most `limit`.
    async fn dead_jobs(&self, limit: u64) -> Result<Vec<Job>>;
    /// Puts every dead-lettered job back in the queue, due now, with its attempts reset;
    /// returns how many. The default answers [`ErrorKind::Unsupported`].
    ///
    /// [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
    async fn retry_dead(&self) -> Result<u64> {
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            "this queue cannot put dead jobs back",
        ))
    }
    /// Moves the pending jobs among `jobs` to the front of the queue (see the contract above);
    /// returns how many it moved. Used when a pull had to be served from a remote location:
    /// the copy to the puller's own location is wanted now. The default answers
    /// [`ErrorKind::Unsupported`].
    ///
    /// [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
    async fn prioritize(&self, jobs: &[JobSpec]) -> Result<u64> {
        let _ = jobs;
        Err(unsupported("prioritize jobs"))
    }
    /// Counts per target location, in location order. The default answers
    /// [`ErrorKind::Unsupported`].
    ///
    /// [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
    async fn target_stats(&self) -> Result<Vec<TargetStats>> {
        Err(unsupported("count jobs per location"))
    }
    /// Records a worker's beat (replacing its previous one). The default answers
    /// [`ErrorKind::Unsupported`].
    ///
    /// [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
    async fn record_worker(&self, beat: &WorkerBeat) -> Result<()> {
        let _ = beat;
        Err(unsupported("record workers"))
    }
    /// Removes a worker's beat; an unknown id is not an error. The default answers
    /// [`ErrorKind::Unsupported`].
    ///
    /// [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
    async fn forget_worker(&self, id: &str) -> Result<()> {
        let _ = id;
        Err(unsupported("record workers"))
    }
    /// The workers whose last beat is at or after `seen_since`, most recent first. The default
    /// answers [`ErrorKind::Unsupported`].
    ///
    /// [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
    async fn workers(&self, seen_since: TimestampMs) -> Result<Vec<WorkerBeat>> {
        let _ = seen_since;
        Err(unsupported("record workers"))
    }
}

/// How long a queue keeps a worker's beat after it was last seen, at least.
pub const WORKER_BEAT_RETENTION: Duration = Duration::from_secs(24 * 3600);

fn unsupported(what: &str) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Unsupported,
        format!("this queue cannot {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        };
        assert_eq!(p.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(4, 1.0), Duration::from_secs(8));
        assert_eq!(p.delay(9, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(1000, 0.5), Duration::from_millis(7500));
    }
}
