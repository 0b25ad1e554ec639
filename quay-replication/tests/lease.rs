//! Short leases: a worker that cannot renew a job's lease abandons the job before the lease
//! could end, so that no two workers ever run one job at the same time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use quay_core::{
    Digest, Error, ErrorKind, FailOutcome, Job, JobQueue, JobSpec, Lease, LocationId, QueueStats,
    Registry, RegistryConfig, RepositoryName, Result, RetryPolicy, StorageEngine,
};
use quay_replication::worker::{ReplicationWorker, WorkerConfig};
use quay_storage::layers::{Fault, FaultSwitch, FaultyStorage};
use quay_storage::{OpendalStorage, SqlJobQueue, SqlMetadataStore};

/// The SQL queue, whose heartbeats fail (as when the database is unreachable) once told to.
#[derive(Debug)]
struct UnrenewableQueue {
    inner: SqlJobQueue,
    beats_fail: AtomicBool,
}

#[async_trait]
impl JobQueue for UnrenewableQueue {
    async fn enqueue(&self, jobs: &[JobSpec]) -> Result<u64> {
        self.inner.enqueue(jobs).await
    }
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>> {
        self.inner.claim(max, lease).await
    }
    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<i64> {
        if self.beats_fail.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Unavailable, "database unreachable"));
        }
        self.inner.heartbeat(lease, extend).await
    }
    async fn complete(&self, lease: &Lease) -> Result<()> {
        self.inner.complete(lease).await
    }
    async fn fail(&self, lease: &Lease, error: &str) -> Result<FailOutcome> {
        self.inner.fail(lease, error).await
    }
    async fn defer(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.inner.defer(lease, delay).await
    }
    async fn stats(&self) -> Result<QueueStats> {
        self.inner.stats().await
    }
    async fn dead_jobs(&self, limit: u64) -> Result<Vec<Job>> {
        self.inner.dead_jobs(limit).await
    }
}

fn id(s: &str) -> LocationId {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_abandons_a_job_whose_lease_it_cannot_renew() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let store = SqlMetadataStore::connect(&url).await.unwrap();
    let switch = FaultSwitch::default();
    let us_fs: Arc<dyn StorageEngine> =
        Arc::new(OpendalStorage::fs(&dir.path().join("us"), "us").unwrap());
    let us: Arc<dyn StorageEngine> = Arc::new(FaultyStorage::new(us_fs, switch.clone()));
    let eu: Arc<dyn StorageEngine> =
        Arc::new(OpendalStorage::fs(&dir.path().join("eu"), "eu").unwrap());
    let mut locations: BTreeMap<LocationId, Arc<dyn StorageEngine>> = BTreeMap::new();
    locations.insert(id("us"), us);
    locations.insert(id("eu"), eu);
    let mut config = RegistryConfig::new(vec![id("eu"), id("us")]);
    config.replication = true;
    config.default_locations = vec![id("us"), id("eu")];
    let reg = Registry::new(Arc::new(store.clone()), locations, config).unwrap();
    let policy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    let queue = Arc::new(UnrenewableQueue {
        inner: SqlJobQueue::new(&store, policy.clone()),
        beats_fail: AtomicBool::new(false),
    });
    let repo: RepositoryName = "lease".parse().unwrap();
    let data = b"a copy that never ends";
    let digest = Digest::sha256_of(data);
    reg.put_blob(
        &repo,
        &digest,
        Box::pin(futures::stream::once(async move {
            Ok(Bytes::from_static(data))
        })),
    )
    .await
    .unwrap();

    // The source hangs (a copy that takes forever) and heartbeats fail.
    switch.set(Fault::Partition);
    queue.beats_fail.store(true, Ordering::SeqCst);
    let lease = Duration::from_millis(900);
    let worker = ReplicationWorker::new(
        reg.clone(),
        queue.clone(),
        WorkerConfig {
            concurrency: 1,
            lease,
            poll_interval: Duration::from_millis(20),
            verify_readback: false,
        },
    );
    let started = Instant::now();
    let handled = tokio::time::timeout(Duration::from_secs(10), worker.drain(1))
        .await
        .expect("the worker never gave the job up")
        .unwrap();
    let held = started.elapsed();
    assert_eq!(handled, 1);
    // Given up before the lease could end: another worker can only take it after that.
    assert!(
        held < lease,
        "the job was held {held:?}, past its lease of {lease:?}"
    );

    // The job is back in the queue with the reason, and another worker (healthy) copies it.
    switch.set(Fault::None);
    queue.beats_fail.store(false, Ordering::SeqCst);
    let other = SqlJobQueue::new(&store, policy);
    let deadline = Instant::now() + Duration::from_secs(5);
    let retried = loop {
        let leases = other.claim(1, Duration::from_secs(30)).await.unwrap();
        if let Some(l) = leases.into_iter().next() {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned job never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(retried.job.spec.digest, digest);
    let why = retried.job.last_error.clone().unwrap_or_default();
    assert!(why.contains("renewed in time"), "last error: {why}");
    other.defer(&retried, Duration::ZERO).await.unwrap();
    assert_eq!(worker.drain(5).await.unwrap(), 1);
    assert_eq!(other.stats().await.unwrap(), QueueStats::default());
}
