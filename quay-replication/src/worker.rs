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
//!
//! # Leases
//!
//! Leases are short ([`DEFAULT_LEASE_SECS`], 6 s) and renewed by a heartbeat every third of
//! their length while a job runs, so the jobs of a worker that vanished (SIGKILL, a lost
//! machine) are taken over within seconds. A worker that cannot renew a lease in time (its
//! database unreachable, say) abandons the job half a heartbeat before the lease could end:
//! the copy is dropped (an unfinished write stores nothing) and no two workers ever run one
//! job at the same time.
//!
//! # Throughput
//!
//! The loop keeps a small buffer of claimed jobs, refilled by one claim when it runs half
//! empty, so that a job that ends is followed at once instead of after a claim round trip. The
//! claim runs beside the loop (the loop goes on starting buffered jobs while it is under way),
//! and at a stop a claim under way is let finish and its jobs given back with the buffer's. A
//! buffered job whose lease aged past a heartbeat interval is renewed before it starts.
//!
//! Right after a claim, the records of all its blobs (placements, and removal counts in the
//! targets) are read in one statement ([`Registry::read_before_copies`]), and each job starts
//! its copy from its blob's record instead of reading it alone. A record read before the
//! copy is all the copy needs (the placement is refused if a removal came in between), and
//! one that waited longer than a second in the buffer is read again.
//!
//! `concurrency` counts copies in flight (slots a job takes only for its copy; a copy of a
//! blob under [`SMALL_COPY_BYTES`](quay_core::registry::SMALL_COPY_BYTES) takes half a slot,
//! see [`CopySlots`]), and the worker runs [`JOBS_PER_COPY_SLOT`] times as many jobs: the
//! database work of a job (reading the blob's record before the copy, recording the placement
//! after it) holds no slot, so copies go on while it runs. The engine records placements of jobs that run at the same time
//! together, in one statement or transaction (group commit), and groups the reads of records
//! in the same way when jobs read their own. Finished jobs are handed to a completer task that
//! removes them in batches ([`JobQueue::complete_all`], one statement per batch on the SQL
//! queue), off the jobs' path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use quay_core::config::DEFAULT_LEASE_SECS;
use quay_core::metadata::now_ms;
use quay_core::registry::{BeforeCopy, CopySlots};
use quay_core::{
    Digest, Error, ErrorKind, FailOutcome, JobKind, JobQueue, Lease, LocationId, Registry, Result,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics as m;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Copies in flight at once; copies of blobs under
    /// [`SMALL_COPY_BYTES`](quay_core::registry::SMALL_COPY_BYTES) count half (their time goes
    /// to round trips, not bandwidth). [`JOBS_PER_COPY_SLOT`] times as many jobs
    /// run: the database reads and writes of a job hold no copy slot, so copies go on while
    /// they run.
    pub concurrency: usize,
    /// Lease taken on each job; a heartbeat extends it every third of it while the job runs,
    /// and the job is abandoned when it could not be renewed in time.
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
            lease: Duration::from_secs(DEFAULT_LEASE_SECS),
            poll_interval: Duration::from_millis(500),
            verify_readback: false,
        }
    }
}

/// Jobs a worker runs per copy slot ([`WorkerConfig::concurrency`]): a job spends part of its
/// time on database round trips (reading the blob's record before its copy, recording the copy
/// after it), which the other jobs fill with copies.
pub const JOBS_PER_COPY_SLOT: usize = 4;

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
    /// Copies in flight, shared by the jobs (and the clones) of this worker.
    copy_slots: Arc<CopySlots>,
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
        let copy_slots = Arc::new(CopySlots::new(config.concurrency));
        ReplicationWorker {
            registry,
            queue,
            config,
            counters: Arc::default(),
            copy_slots,
        }
    }

    /// What this worker (and its clones) did since it was made.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// Runs until `shutdown` resolves, then lets running jobs finish (buffered jobs not
    /// started are given back to the queue).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let concurrency = self.config.concurrency.max(1) * JOBS_PER_COPY_SLOT;
        let mut running: JoinSet<()> = JoinSet::new();
        let mut buffer: VecDeque<Claimed> = VecDeque::new();
        let (done_tx, completer) = Completer::spawn(self.queue.clone());
        info!(
            copies = self.copy_slots.copies(),
            jobs = concurrency,
            "replication worker started"
        );
        let mut progress = Progress::new(self.counters.totals());
        // The claim (and the read of its blobs' records) runs beside the loop, so that jobs
        // that end meanwhile are followed at once from the buffer: awaited in the loop, the
        // claims of a 2000-blob run held new jobs back for a fifth of its time.
        let mut claiming: Option<ClaimInFlight> = None;
        // Whether the next turn may claim: after a full batch, a finished job or a poll
        // interval; not right after a claim that found fewer jobs than it asked for.
        let mut claim_now = true;
        loop {
            progress.maybe_log(self.counters.totals());
            while running.try_join_next().is_some() {}
            if claim_now && claiming.is_none() && buffer.len() <= concurrency / 2 {
                claim_now = false;
                let me = self.clone();
                claiming = Some(Box::pin(async move { me.claim(concurrency).await }));
            }
            while running.len() < concurrency {
                let Some(job) = buffer.pop_front() else { break };
                let (me, done) = (self.clone(), done_tx.clone());
                running.spawn(async move { me.handle(job, Some(&done)).await });
            }
            let idle = claiming.is_none() && (buffer.is_empty() || running.len() < concurrency);
            let woke = tokio::select! {
                _ = &mut shutdown => Wake::Stop,
                claimed = async {
                    match claiming.as_mut() {
                        Some(claim) => claim.await,
                        None => std::future::pending().await,
                    }
                }, if claiming.is_some() => Wake::Claimed(claimed),
                _ = tokio::time::sleep(self.config.poll_interval), if idle => Wake::Again,
                Some(_) = running.join_next(), if !running.is_empty() => Wake::Again,
            };
            match woke {
                Wake::Stop => break,
                Wake::Again => claim_now = true,
                Wake::Claimed(claimed) => {
                    claiming = None;
                    match claimed {
                        Ok(jobs) => {
                            // Claim again at once while the queue hands out full batches.
                            claim_now = jobs.len() == concurrency;
                            buffer.extend(jobs);
                        }
                        Err(e) => warn!(error = %e, "cannot claim replication jobs"),
                    }
                }
            }
        }
        info!(
            running = running.len(),
            "replication worker stopping; finishing running jobs"
        );
        // A claim under way at the stop is let finish, and its jobs given back with the rest.
        if let Some(claim) = claiming.take() {
            if let Ok(jobs) = claim.await {
                buffer.extend(jobs);
            }
        }
        for job in buffer {
            if let Err(e) = self.queue.defer(&job.lease, Duration::ZERO).await {
                debug!(job = %job.lease.job.id, error = %e, "cannot give back a buffered job");
            }
        }
        while running.join_next().await.is_some() {}
        drop(done_tx);
        let _ = completer.await;
        progress.log(self.counters.totals());
    }

    /// Claims and processes due jobs until none is left (or `max_rounds` batches). Returns how
    /// many jobs were handled. For tests and one-shot tools.
    pub async fn drain(&self, max_rounds: usize) -> Result<usize> {
        let mut handled = 0;
        for _ in 0..max_rounds {
            let jobs = self.claim(self.config.concurrency).await?;
            if jobs.is_empty() {
                break;
            }
            handled += jobs.len();
            let mut set = JoinSet::new();
            for job in jobs {
                let me = self.clone();
                set.spawn(async move { me.handle(job, None).await });
            }
            while set.join_next().await.is_some() {}
        }
        Ok(handled)
    }

    /// Processes one claimed job, keeping its lease alive, and reports the result to the queue
    /// (a finished job through `done`, the completer, when given).
    async fn handle(&self, job: Claimed, done: Option<&mpsc::UnboundedSender<Lease>>) {
        let c = &self.counters;
        c.running.fetch_add(1, Ordering::Relaxed);
        let _running = Running(&c.running);
        let Claimed { lease, at, before } = job;
        let kind = lease.job.spec.kind;
        let every = self.beat_every();
        // A job that waited in the buffer for a heartbeat interval is renewed before it starts,
        // so that it never runs on a lease that may have ended.
        let mut renewed = at;
        if at.elapsed() >= every {
            let sent = Instant::now();
            match self.queue.heartbeat(&lease, self.config.lease).await {
                Ok(_) => renewed = sent,
                Err(e) => {
                    debug!(job = %lease.job.id, error = %e,
                           "a buffered job's lease could not be renewed; leaving it");
                    return;
                }
            }
        }
        // A record read with the claim is used while fresh; an older one is read again.
        let before =
            before.and_then(|(read, before)| (read.elapsed() < FRESH_READ).then_some(before));
        let work = self.process_with(&lease, before);
        let beat = self.heartbeat(&lease, renewed);
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
                let unsent = match done {
                    Some(done) => done.send(lease).err().map(|e| e.0),
                    None => Some(lease),
                };
                if let Some(lease) = unsent {
                    if let Err(e) = self.queue.complete(&lease).await {
                        warn!(job = %lease.job.id, error = %e, "cannot complete job");
                    }
                }
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

    /// How often a running job's lease is renewed: a third of the lease.
    fn beat_every(&self) -> Duration {
        (self.config.lease / 3).max(Duration::from_millis(50))
    }

    /// Renews the lease every third of its length from `renewed` (when it was last known
    /// good, taken before the request that made it so); returns only when the lease is lost,
    /// or could not be renewed in time: half a heartbeat before it could end, the job is
    /// abandoned, so that it never runs here while another worker may have taken it.
    async fn heartbeat(&self, lease: &Lease, mut renewed: Instant) -> Error {
        let every = self.beat_every();
        let margin = every / 2;
        let mut next = renewed + every;
        loop {
            tokio::time::sleep_until(next.into()).await;
            let deadline = renewed + self.config.lease.saturating_sub(margin);
            let sent = Instant::now();
            let attempt = tokio::time::timeout_at(
                deadline.into(),
                self.queue.heartbeat(lease, self.config.lease),
            )
            .await;
            match attempt {
                Ok(Ok(_)) => {
                    renewed = sent;
                    next = renewed + every;
                    continue;
                }
                Ok(Err(e)) if e.kind() == ErrorKind::Conflict => return e,
                Ok(Err(e)) => {
                    warn!(job = %lease.job.id, error = %e, "heartbeat failed; will retry");
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                warn!(job = %lease.job.id, "lease not renewed in time; abandoning the job");
                return Error::new(
                    ErrorKind::Unavailable,
                    "the job's lease could not be renewed in time; abandoned so that another \
                     worker can take it",
                );
            }
            next = (Instant::now() + every / 4).min(deadline);
        }
    }

    /// Claims up to `max` jobs, and reads what their copies start from (the blobs' records,
    /// [`Registry::read_before_copies`]) in one go, so that the jobs do not each read their
    /// own. When that read fails the jobs are still returned, and each reads its record itself.
    async fn claim(&self, max: usize) -> Result<Vec<Claimed>> {
        let at = Instant::now();
        let leases = self.queue.claim(max, self.config.lease).await?;
        let wanted: Vec<(Digest, LocationId)> = leases
            .iter()
            .filter(|l| l.job.spec.kind == JobKind::Replicate)
            .map(|l| (l.job.spec.digest.clone(), l.job.spec.target.clone()))
            .collect();
        let read = Instant::now();
        let mut befores = if wanted.is_empty() {
            Vec::new()
        } else {
            match self.registry.read_before_copies(&wanted).await {
                Ok(found) => found,
                Err(e) => {
                    debug!(jobs = wanted.len(), error = %e,
                           "cannot read the claimed jobs' blobs at once; each job reads its own");
                    Vec::new()
                }
            }
        }
        .into_iter();
        Ok(leases
            .into_iter()
            .map(|lease| {
                let before = match lease.job.spec.kind {
                    JobKind::Replicate => befores.next().map(|b| (read, b)),
                    JobKind::Delete => None,
                };
                Claimed { lease, at, before }
            })
            .collect())
    }

    /// Does the job's work.
    pub async fn process(&self, lease: &Lease) -> Result<Outcome> {
        self.process_with(lease, None).await
    }

    /// Does the job's work, from the blob's record when it was read already.
    async fn process_with(&self, lease: &Lease, before: Option<BeforeCopy>) -> Result<Outcome> {
        let spec = &lease.job.spec;
        match spec.kind {
            JobKind::Replicate => {
                self.registry
                    .replicate_blob_in(
                        &spec.digest,
                        &spec.target,
                        self.config.verify_readback,
                        Some(&self.copy_slots),
                        before,
                    )
                    .await
            }
            JobKind::Delete => self.registry.remove_copy(&spec.digest, &spec.target).await,
        }
    }
}

/// A job claimed at `at` (taken before the claim was sent: its lease ends no sooner than
/// `at` plus the lease), with what its copy starts from when that was read with the claim (and
/// when it was read).
struct Claimed {
    lease: Lease,
    at: Instant,
    before: Option<(Instant, BeforeCopy)>,
}

/// A claim running beside the worker's loop.
type ClaimInFlight =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Claimed>>> + Send>>;

/// What woke the worker's loop.
enum Wake {
    /// The worker is told to stop.
    Stop,
    /// A job ended, or a poll interval passed.
    Again,
    /// The claim under way ended.
    Claimed(Result<Vec<Claimed>>),
}

/// How long a blob's record read with a claim stays good enough to start a copy from; a job
/// that waited longer in the buffer reads it again. Kept short: an older record can only make
/// a copy refused (and retried) or repeated, never wrong (the engine reads again any record
/// that would end a job without a copy), but the fresher, the fewer of those.
const FRESH_READ: Duration = Duration::from_secs(1);

/// Removes finished jobs from the queue in batches: whatever finished while the previous
/// batch was being removed, or within [`Completer::LINGER`] of the first job of a batch, goes
/// in it. A finished job is off the jobs' path, so waiting costs nothing but a job row that
/// stays a little longer (its copy is recorded: were it claimed again, it would end as a no-op).
struct Completer;

impl Completer {
    /// Most jobs removed in one call.
    const BATCH: usize = 256;
    /// How long a batch waits for more finished jobs once it has one: at hundreds of jobs a
    /// second, one statement removes tens of them instead of one or two.
    const LINGER: Duration = Duration::from_millis(20);

    fn spawn(
        queue: Arc<dyn JobQueue>,
    ) -> (mpsc::UnboundedSender<Lease>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Lease>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(Self::BATCH);
            while rx.recv_many(&mut batch, Self::BATCH).await > 0 {
                let linger = tokio::time::sleep(Self::LINGER);
                tokio::pin!(linger);
                while batch.len() < Self::BATCH {
                    let room = Self::BATCH - batch.len();
                    tokio::select! {
                        _ = &mut linger => break,
                        got = rx.recv_many(&mut batch, room) => if got == 0 { break },
                    }
                }
                match queue.complete_all(&batch).await {
                    Ok(removed) if removed < batch.len() as u64 => debug!(
                        lost = batch.len() as u64 - removed,
                        "finished jobs whose lease was lost were left to their new holder"
                    ),
                    Ok(_) => {}
                    // Their leases run out and the jobs are claimed again: the copies are
                    // found in place and the jobs end as no-ops.
                    Err(e) => warn!(jobs = batch.len(), error = %e, "cannot complete jobs"),
                }
                batch.clear();
            }
        });
        (tx, task)
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
