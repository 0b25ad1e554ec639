//! Health-aware routing with injected faults (in-process): a partitioned location costs one
//! bounded timeout, then is skipped by reads, by new uploads and by replication (which defers
//! without spending attempts), and is used again once it answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quay_core::registry::BlobBody;
use quay_core::{
    BlobIndex, BreakerConfig, ByteStream, Digest, ErrorKind, JobQueue, LocationId, Registry,
    RegistryConfig, RepositoryName, RetryPolicy, StorageEngine,
};
use quay_replication::worker::{ReplicationWorker, WorkerConfig};
use quay_storage::layers::{Fault, FaultSwitch, FaultyStorage, TimeoutStorage};
use quay_storage::{OpendalStorage, SqlJobQueue, SqlMetadataStore};

fn id(s: &str) -> LocationId {
    s.parse().unwrap()
}

fn body(data: &'static [u8]) -> ByteStream {
    Box::pin(futures::stream::once(async move {
        Ok(Bytes::from_static(data))
    }))
}

async fn served_from(
    reg: &Registry,
    repo: &RepositoryName,
    d: &Digest,
) -> quay_core::Result<LocationId> {
    match reg.read_blob(repo, d, None).await?.body {
        BlobBody::Stream { location, .. } => Ok(location),
        BlobBody::Redirect { location, .. } => Ok(location),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_location_is_routed_around() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let store = SqlMetadataStore::connect(&url).await.unwrap();
    let switch = FaultSwitch::default();
    let us_fs: Arc<dyn StorageEngine> =
        Arc::new(OpendalStorage::fs(&dir.path().join("us"), "us").unwrap());
    let us: Arc<dyn StorageEngine> = Arc::new(TimeoutStorage::new(
        Arc::new(FaultyStorage::new(us_fs, switch.clone())),
        "us",
        Duration::from_millis(300),
        Duration::from_millis(300),
    ));
    let eu: Arc<dyn StorageEngine> =
        Arc::new(OpendalStorage::fs(&dir.path().join("eu"), "eu").unwrap());
    let mut locations: BTreeMap<LocationId, Arc<dyn StorageEngine>> = BTreeMap::new();
    locations.insert(id("us"), us);
    locations.insert(id("eu"), eu);
    let mut config = RegistryConfig::new(vec![id("us"), id("eu")]);
    config.replication = true;
    config.default_locations = vec![id("us"), id("eu")];
    config.breaker = BreakerConfig {
        failure_threshold: 2,
        open_for: Duration::from_millis(300),
    };
    let reg = Registry::new(Arc::new(store.clone()), locations, config).unwrap();
    let queue: Arc<dyn JobQueue> = Arc::new(SqlJobQueue::new(
        &store,
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
    ));
    let worker = ReplicationWorker::new(
        reg.clone(),
        queue.clone(),
        WorkerConfig {
            concurrency: 2,
            lease: Duration::from_secs(5),
            poll_interval: Duration::from_millis(20),
            verify_readback: false,
        },
    );
    let repo: RepositoryName = "faults".parse().unwrap();

    // A blob in both locations, and one only in us.
    let both = reg
        .put_blob(
            &repo,
            &Digest::sha256_of(b"everywhere"),
            body(b"everywhere"),
        )
        .await
        .unwrap();
    worker.drain(10).await.unwrap();
    assert_eq!(
        store
            .get_blob(&both)
            .await
            .unwrap()
            .unwrap()
            .locations
            .len(),
        2
    );
    assert_eq!(served_from(&reg, &repo, &both).await.unwrap(), id("us"));
    let only_us = Digest::sha256_of(b"only in us");
    reg.put_blob(&repo, &only_us, body(b"only in us"))
        .await
        .unwrap();

    // us is partitioned: the first reads cost one bounded timeout each, then us is skipped.
    switch.set(Fault::Partition);
    for attempt in 0..4 {
        let started = Instant::now();
        assert_eq!(
            served_from(&reg, &repo, &both).await.unwrap(),
            id("eu"),
            "attempt {attempt}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
    }
    assert!(!reg.health().is_up(&id("us")));
    let started = Instant::now();
    assert_eq!(served_from(&reg, &repo, &both).await.unwrap(), id("eu"));
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "a down location must be skipped at once"
    );
    // A blob held only by the down location: a clear 503-class error, at once.
    let err = reg.read_blob(&repo, &only_us, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("down: us"), "{err}");

    // Write failover: a new upload lands in eu.
    let during = reg
        .put_blob(
            &repo,
            &Digest::sha256_of(b"pushed during"),
            body(b"pushed during"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_blob(&during).await.unwrap().unwrap().locations,
        vec![id("eu")]
    );

    // Replication to us is deferred while us is down, without spending attempts.
    for _ in 0..3 {
        worker.drain(3).await.unwrap();
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.dead, 0);
    assert!(stats.pending >= 1, "{stats:?}");

    // us comes back: after the breaker's pause the trial succeeds and the copy goes back.
    switch.set(Fault::None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        worker.drain(5).await.unwrap();
        if store
            .get_blob(&during)
            .await
            .unwrap()
            .unwrap()
            .locations
            .len()
            == 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "the copy never went back to us");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reg.health().is_up(&id("us")));
    assert_eq!(queue.stats().await.unwrap().dead, 0);
}
