//! The replication worker: claims jobs, copies blobs between locations with verification,
//! records placements, and deletes copies of removed blobs.
//!
//! The copy itself is the engine's: [`Registry::replicate_blob`] re-reads the blob's
//! placements, picks as source the location nearest to this worker that holds the blob and is
//! up (the engine's [`route`](Registry::route)), streams the blob into the target while
//! hashing it ([`copy_blob`](quay_core::registry::copy::copy_blob)), and records the
//! placement. The worker claims jobs under leases, keeps them alive with heartbeats, and
//! reports each outcome to the queue. Object writes are atomic on every backend used here, so
//! a worker killed mid-copy leaves no half-written object visible, and the job is claimed
//! again when its lease runs out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quay_core::metadata::now_ms;
use quay_core::{Error, ErrorKind, FailOutcome, JobKind, JobQueue, Lease, Registry, Result};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics as m;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs processed at once.
    pub concurrency: usize,
    /// Lease taken on each job; a heartbeat extends it while the job runs.
    pub lease: Duration,
    /// Sleep between polls when the queue has nothing due.
    pub poll_interval: Duration,
    /// Re-read what was written and hash it again (doubles target reads; off by default: the
    /// bytes are hashed as they stream into the target and the stored size is checked).
    pub verify_readback: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 8,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            verify_readback: false,
        }
    }
}

/// What a job came to (the engine's outcome of a copy or removal).
pub use quay_core::registry::ReplicaOutcome as Outcome;

/// How often a running worker logs a progress line at INFO (when it did anything).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// What a worker did since it started, read by its heartbeat and its progress lines.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    done: AtomicU64,
    failed: AtomicU64,
    deferred: AtomicU64,
    bytes: AtomicU64,
    running: AtomicU64,
}

/// A reading of [`WorkerCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerTotals {
    /// Jobs finished (copied, removed, or found already done).
    pub done: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Jobs put back because a location was down.
    pub deferred: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Jobs running now.
    pub running: u64,
}

impl WorkerCounters {
    /// The counts now.
    pub fn totals(&self) -> WorkerTotals {
        WorkerTotals {
            done: self.done.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            deferred: self.deferred.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
        }
    }
}

/// Decrements the running count when a job's handling ends, however it ends.
struct Running<'a>(&'a AtomicU64);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The replication worker.
#[derive(Clone)]
pub struct ReplicationWorker {
    registry: Registry,
    queue: Arc<dyn JobQueue>,
    config: WorkerConfig,
    counters: Arc<WorkerCounters>,
}

impl std::fmt::Debug for ReplicationWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationWorker")
            .field("queue", &self.queue)
            .field("config", &self.config)
            .finish()
    }
}

impl ReplicationWorker {
    /// A worker over `registry`'s metadata and locations, taking jobs from `queue`. Its source
    /// preference is the registry's preference.
    pub fn new(registry: Registry, queue: Arc<dyn JobQueue>, config: WorkerConfig) -> Self {
        ReplicationWorker {
            registry,
            queue,
            config,
            counters: Arc::default(),
        }
    }

    /// What this worker (and its clones) did since it was made.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// Runs until `shutdown` resolves, then lets running jobs finish.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut running: JoinSet<()> = JoinSet::new();
        info!(
            concurrency = self.config.concurrency,
            "replication worker started"
        );
        let mut progress = Progress::new(self.counters.totals());
        loop {
            progress.maybe_log(self.counters.totals());
            while running.try_join_next().is_some() {}
            let free = self.config.concurrency.saturating_sub(running.len());
            let mut claimed = 0;
            if free > 0 {
                match self.queue.claim(free, self.config.lease).await {
                    Ok(leases) => {
                        claimed = leases.len();
                        for lease in leases {
                            let me = self.clone();
                            running.spawn(async move { me.handle(lease).await });
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot claim replication jobs"),
                }
            }
            let wait = if claimed > 0 && claimed == free {
                Duration::from_millis(0)
            } else {
                self.config.poll_interval
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait), if running.len() < self.config.concurrency => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        info!(
            running = running.len(),
            "replication worker stopping; finishing running jobs"
        );
        while running.join_next().await.is_some() {}
        progress.log(self.counters.totals());
    }

    /// Claims and processes due jobs until none is left (or `max_rounds` batches). Returns how
    /// many jobs were handled. For tests and one-shot tools.
    pub async fn drain(&self, max_rounds: usize) -> Result<usize> {
        let mut handled = 0;
        for _ in 0..max_rounds {
            let leases = self
                .queue
                .claim(self.config.concurrency, self.config.lease)
                .await?;
            if leases.is_empty() {
                break;
            }
            handled += leases.len();
            let mut set = JoinSet::new();
            for lease in leases {
                let me = self.clone();
                set.spawn(async move { me.handle(lease).await });
            }
            while set.join_next().await.is_some() {}
        }
        Ok(handled)
    }

    /// Processes one claimed job, keeping its lease alive, and reports the result to the queue.
    async fn handle(&self, lease: Lease) {
        let c = &self.counters;
        c.running.fetch_add(1, Ordering::Relaxed);
        let _running = Running(&c.running);
        let kind = lease.job.spec.kind;
        let work = self.process(&lease);
        let beat = self.heartbeat(&lease);
        let result = tokio::select! {
            r = work => r,
            lost = beat => Err(lost),
        };
        match result {
            Ok(Outcome::Deferred(why)) => {
                let delay = self
                    .registry
                    .config()
                    .breaker
                    .open_for
                    .max(Duration::from_secs(1));
                if let Err(e) = self.queue.defer(&lease, delay).await {
                    warn!(job = %lease.job.id, error = %e, "cannot defer job");
                }
                m::job_deferred(kind);
                c.deferred.fetch_add(1, Ordering::Relaxed);
                debug!(job = %lease.job.id, reason = %why, "job deferred");
            }
            Ok(outcome) => {
                if let Err(e) = self.queue.complete(&lease).await {
                    warn!(job = %lease.job.id, error = %e, "cannot complete job");
                }
                m::job_done(kind, &lease.job.spec.target);
                c.done.fetch_add(1, Ordering::Relaxed);
                if let Outcome::Copied { source, bytes } = &outcome {
                    c.bytes.fetch_add(*bytes, Ordering::Relaxed);
                    m::copied(source, &lease.job.spec.target, *bytes);
                    let lag = (now_ms() - lease.job.enqueued_at).max(0) as f64 / 1000.0;
                    m::lag(&lease.job.spec.target, lag);
                }
                debug!(job = %lease.job.id, kind = %kind, digest = %lease.job.spec.digest,
                       target = %lease.job.spec.target, ?outcome, "job done");
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                let message = e.to_string();
                match self.queue.fail(&lease, &message).await {
                    Ok(FailOutcome::DeadLettered) => {
                        m::job_dead(kind);
                        warn!(job = %lease.job.id, kind = %kind, digest = %lease.job.spec.digest,
                              target = %lease.job.spec.target, error = %message,
                              "job dead-lettered after its last attempt");
                    }
                    Ok(FailOutcome::Retry { .. }) => {
                        m::job_failed(kind);
                        warn!(job = %lease.job.id, kind = %kind, attempt = lease.job.attempts,
                              error = %message, "job failed; it will be retried");
                    }
                    Err(qe) => warn!(job = %lease.job.id, error = %qe, "cannot record job failure"),
                }
            }
        }
    }

    /// Extends the lease every third of its length; returns only when the lease is lost.
    async fn heartbeat(&self, lease: &Lease) -> Error {
        let every = (self.config.lease / 3).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(every).await;
            match self.queue.heartbeat(lease, self.config.lease).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Conflict => return e,
                Err(e) => warn!(job = %lease.job.id, error = %e, "heartbeat failed; will retry"),
            }
        }
    }

    /// Does the job's work.
    pub async fn process(&self, lease: &Lease) -> Result<Outcome> {
        let spec = &lease.job.spec;
        match spec.kind {
            JobKind::Replicate => {
                self.registry
                    .replicate_blob(&spec.digest, &spec.target, self.config.verify_readback)
                    .await
            }
            JobKind::Delete => self.registry.remove_copy(&spec.digest, &spec.target).await,
        }
    }
}

/// The worker's progress lines: one at INFO every [`PROGRESS_EVERY`] in which it did
/// anything, with what it did since the last line.
struct Progress {
    last: WorkerTotals,
    since: Instant,
}

impl Progress {
    fn new(totals: WorkerTotals) -> Self {
        Progress {
            last: totals,
            since: Instant::now(),
        }
    }

    fn maybe_log(&mut self, now: WorkerTotals) {
        if self.since.elapsed() >= PROGRESS_EVERY {
            self.log(now);
        }
    }

    fn log(&mut self, now: WorkerTotals) {
        let secs = self.since.elapsed().as_secs_f64().max(0.001);
        let (done, failed, deferred, bytes) = (
            now.done - self.last.done,
            now.failed - self.last.failed,
            now.deferred - self.last.deferred,
            now.bytes - self.last.bytes,
        );
        if done + failed + deferred > 0 {
            info!(
                jobs_done = done,
                failed,
                deferred,
                bytes_copied = bytes,
                mb_per_sec = format_args!("{:.1}", bytes as f64 / 1e6 / secs),
                running = now.running,
                total_done = now.done,
                "replication progress over the last {secs:.0}s"
            );
        }
        self.last = now;
        self.since = Instant::now();
    }
}
