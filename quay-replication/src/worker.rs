//! The replication worker: claims jobs, copies blobs between locations with verification,
//! records placements, and deletes copies of removed blobs.
//!
//! For a replication job the worker re-reads the blob's placements, picks as source the
//! location nearest to it (its preference order) that holds the blob, streams the blob into
//! the target while hashing it, checks size and digest of what was written, then records the
//! placement. Object writes are atomic on every backend used here (temporary file and rename;
//! a single PUT or a multipart upload that only appears on completion), so a worker killed
//! mid-copy leaves no half-written object visible, and the job is claimed again when its lease
//! runs out.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use quay_core::health::is_outage;
use quay_core::metadata::now_ms;
use quay_core::registry::route::order_placements;
use quay_core::{
    ByteStream, Digest, DigestHasher, Error, ErrorKind, FailOutcome, JobKind, JobQueue, Lease,
    LocationId, Registry, Result, StorageEngine,
};
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

/// What a job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A location it needs is down: try again later without counting the attempt.
    Deferred(String),
    /// A copy was made and recorded.
    Copied {
        /// The location read from.
        source: LocationId,
        /// Bytes copied.
        bytes: u64,
    },
    /// A stored copy was deleted.
    Deleted,
    /// Nothing to do (blob deleted meanwhile, or already in place).
    Noop,
}

/// The replication worker.
#[derive(Clone)]
pub struct ReplicationWorker {
    registry: Registry,
    queue: Arc<dyn JobQueue>,
    config: WorkerConfig,
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
        }
    }

    /// Runs until `shutdown` resolves, then lets running jobs finish.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut running: JoinSet<()> = JoinSet::new();
        info!(
            concurrency = self.config.concurrency,
            "replication worker started"
        );
        loop {
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
                debug!(job = %lease.job.id, reason = %why, "job deferred");
            }
            Ok(outcome) => {
                if let Err(e) = self.queue.complete(&lease).await {
                    warn!(job = %lease.job.id, error = %e, "cannot complete job");
                }
                m::job_done(kind, &lease.job.spec.target);
                if let Outcome::Copied { source, bytes } = &outcome {
                    m::copied(source, &lease.job.spec.target, *bytes);
                    let lag = (now_ms() - lease.job.enqueued_at).max(0) as f64 / 1000.0;
                    m::lag(&lease.job.spec.target, lag);
                }
                debug!(job = %lease.job.id, ?outcome, "job done");
            }
            Err(e) => {
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
            JobKind::Replicate => self.replicate(&spec.digest, &spec.target).await,
            JobKind::Delete => self.delete(&spec.digest, &spec.target).await,
        }
    }

    fn storage(&self, id: &LocationId) -> Result<Arc<dyn StorageEngine>> {
        self.registry.locations().get(id).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("location {id} is not configured on this worker"),
            )
        })
    }

    async fn replicate(&self, digest: &Digest, target: &LocationId) -> Result<Outcome> {
        let Some(blob) = self.registry.metadata().get_blob(digest).await? else {
            return Ok(Outcome::Noop);
        };
        if blob.locations.contains(target) {
            return Ok(Outcome::Noop);
        }
        let health = self.registry.health();
        if !health.allow(target) {
            return Ok(Outcome::Deferred(format!("target {target} is down")));
        }
        let target_storage = self.storage(target)?;
        let sources: Vec<LocationId> =
            order_placements(&self.registry.config().preference, &blob.locations)
                .into_iter()
                .filter(|l| l != target)
                .collect();
        let mut last: Option<Error> = None;
        let mut down = Vec::new();
        for source in sources {
            let Ok(source_storage) = self.storage(&source) else {
                continue;
            };
            if !health.allow(&source) {
                down.push(source);
                continue;
            }
            match self
                .copy(&source_storage, &target_storage, digest, blob.size)
                .await
            {
                Ok(()) => {
                    health.record_success(&source);
                    health.record_success(target);
                    if !self
                        .registry
                        .metadata()
                        .add_placement(digest, target)
                        .await?
                    {
                        // Deleted while we copied: take the copy back out.
                        let _ = target_storage.delete(&digest.object_path()).await;
                        return Ok(Outcome::Noop);
                    }
                    return Ok(Outcome::Copied {
                        source,
                        bytes: blob.size,
                    });
                }
                Err(CopyError::Target(e)) => {
                    health.record_failure(target, &e);
                    if is_outage(&e) {
                        return Ok(Outcome::Deferred(format!("target {target} failed: {e}")));
                    }
                    return Err(e.with_context("target", target));
                }
                Err(CopyError::Source(e)) => {
                    health.record_failure(&source, &e);
                    warn!(%digest, %source, %target, error = %e, "copy failed; trying another holder");
                    last = Some(e.with_context("source", &source));
                }
            }
        }
        if last.is_none() && !down.is_empty() {
            let names: Vec<&str> = down.iter().map(|l| l.as_str()).collect();
            return Ok(Outcome::Deferred(format!(
                "every holder is down: {}",
                names.join(", ")
            )));
        }
        if let Some(e) = &last {
            if is_outage(e) && !down.is_empty() {
                return Ok(Outcome::Deferred(format!("holders down or failing: {e}")));
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("no configured location holds {digest}"),
            )
        }))
    }

    /// Streams one blob from `source` into `target`, hashing as it goes; a copy whose size or
    /// digest is wrong is removed and reported.
    async fn copy(
        &self,
        source: &Arc<dyn StorageEngine>,
        target: &Arc<dyn StorageEngine>,
        digest: &Digest,
        size: u64,
    ) -> std::result::Result<(), CopyError> {
        let path = digest.object_path();
        // The recorded size bounds the read. What is read is still hashed and its length
        // checked below, so a source whose object is shorter or different fails.
        let range = (size > 0).then_some(0..size);
        let stream = source.read(&path, range).await.map_err(CopyError::Source)?;
        let (stream, seen) = hashing(stream, digest, size);
        let source_failed = seen.source_failed.clone();
        // The known size lets an object store take the whole blob in one request.
        let written = target.write_sized(&path, stream, size).await.map_err(|e| {
            // An error that came out of the source stream is the source's.
            if source_failed.load(std::sync::atomic::Ordering::SeqCst) {
                CopyError::Source(e)
            } else {
                CopyError::Target(e)
            }
        })?;
        let (bytes, got) = seen.take();
        // `write_sized` succeeds only when the target stored exactly `size` bytes, and those
        // bytes hashed to the digest on their way: no extra request is needed to trust the copy
        // (`verify_readback` reads it back for the distrustful).
        let verified = matches!(got, Some(d) if &d == digest && bytes == size && written == size);
        let verified = verified
            && (!self.config.verify_readback
                || readback(target, digest).await.map_err(CopyError::Target)?);
        if !verified {
            let _ = target.delete(&path).await;
            return Err(CopyError::Source(Error::new(
                ErrorKind::DigestInvalid,
                format!("copy of {digest} did not verify ({bytes} bytes read, {size} expected)"),
            )));
        }
        Ok(())
    }

    async fn delete(&self, digest: &Digest, target: &LocationId) -> Result<Outcome> {
        // The blob may have been pushed again since: then its copy is needed.
        if let Some(blob) = self.registry.metadata().get_blob(digest).await? {
            if blob.locations.contains(target) {
                return Ok(Outcome::Noop);
            }
        }
        let health = self.registry.health();
        if !health.allow(target) {
            return Ok(Outcome::Deferred(format!("target {target} is down")));
        }
        let deleted = self.storage(target)?.delete(&digest.object_path()).await;
        health.record(target, &deleted);
        match deleted {
            Ok(()) => Ok(Outcome::Deleted),
            Err(e) if is_outage(&e) => {
                Ok(Outcome::Deferred(format!("target {target} failed: {e}")))
            }
            Err(e) => Err(e),
        }
    }
}

/// Which side of a copy failed.
enum CopyError {
    Source(Error),
    Target(Error),
}

/// The bytes and digest seen by a [`hashing`] stream.
struct Seen {
    state: Arc<std::sync::Mutex<(u64, Option<DigestHasher>)>>,
    source_failed: Arc<std::sync::atomic::AtomicBool>,
}

impl Seen {
    fn take(&self) -> (u64, Option<Digest>) {
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let bytes = g.0;
        (bytes, g.1.take().map(DigestHasher::finish))
    }
}

/// `stream`, hashed as it passes. At its end, a length other than `size` or another digest is
/// an error of the source's (so a sized write fails and stores nothing, and the worker tries
/// another holder).
fn hashing(stream: ByteStream, digest: &Digest, size: u64) -> (ByteStream, Seen) {
    let state = Arc::new(std::sync::Mutex::new((
        0u64,
        Some(DigestHasher::new(digest.algorithm())),
    )));
    let s = state.clone();
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = failed.clone();
    let out = stream.map(move |chunk| {
        let chunk = chunk.inspect_err(|_| f.store(true, std::sync::atomic::Ordering::SeqCst))?;
        let mut g = match s.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.0 += chunk.len() as u64;
        if let Some(h) = g.1.as_mut() {
            h.update(&chunk);
        }
        Ok(chunk)
    });
    let (check, check_failed, expected) = (state.clone(), failed.clone(), digest.clone());
    let tail = futures::stream::once(async move {
        let (bytes, got) = {
            let g = match check.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            (g.0, g.1.clone().map(DigestHasher::finish))
        };
        if bytes == size && got.as_ref() == Some(&expected) {
            return None;
        }
        check_failed.store(true, std::sync::atomic::Ordering::SeqCst);
        Some(Err(Error::new(
            ErrorKind::DigestInvalid,
            format!("the source's copy of {expected} does not verify ({bytes} bytes read, {size} expected)"),
        )))
    })
    .filter_map(futures::future::ready);
    (
        Box::pin(out.chain(tail)),
        Seen {
            state,
            source_failed: failed,
        },
    )
}

async fn readback(target: &Arc<dyn StorageEngine>, digest: &Digest) -> Result<bool> {
    let mut stream = target.read(&digest.object_path(), None).await?;
    let mut h = DigestHasher::new(digest.algorithm());
    while let Some(chunk) = stream.next().await {
        h.update(&chunk?);
    }
    Ok(&h.finish() == digest)
}
