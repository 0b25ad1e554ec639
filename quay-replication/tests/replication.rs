//! The worker, reconciler, status and remove-location over two filesystem locations, on
//! SQLite and PostgreSQL, with the SQL queue.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use quay_core::registry::BlobBody;
use quay_core::{
    BlobIndex, ByteStream, Digest, DigestHasher, ErrorKind, JobQueue, LocationId, PlacementIndex,
    Registry, RegistryConfig, RepositoryName, RetryPolicy, StorageEngine,
};
use quay_replication::background::host_name;
use quay_replication::worker::{ReplicationWorker, WorkerConfig};
use quay_replication::{reconciler, status, Background};
use quay_storage::testkit::postgres::{fresh_database, TestDatabase};
use quay_storage::{OpendalStorage, SqlJobQueue, SqlMetadataStore};

struct Setup {
    us: Registry,
    eu: Registry,
    queue: Arc<dyn JobQueue>,
    store: SqlMetadataStore,
    storages: BTreeMap<LocationId, Arc<dyn StorageEngine>>,
    _dir: tempfile::TempDir,
    pg: Option<TestDatabase>,
}

fn id(s: &str) -> LocationId {
    s.parse().unwrap()
}

impl Setup {
    async fn new(postgres: bool, replication: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = if postgres {
            let db = fresh_database()
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is needed: {e}"));
            (db.url.clone(), Some(db))
        } else {
            (
                format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display()),
                None,
            )
        };
        let store = SqlMetadataStore::connect(&url).await.unwrap();
        let mut storages: BTreeMap<LocationId, Arc<dyn StorageEngine>> = BTreeMap::new();
        for name in ["us", "eu"] {
            storages.insert(
                id(name),
                Arc::new(OpendalStorage::fs(&dir.path().join(name), name).unwrap()),
            );
        }
        let engine = |pref: [&str; 2]| {
            let mut c = RegistryConfig::new(pref.iter().map(|p| id(p)).collect());
            c.replication = replication;
            c.default_locations = vec![id("us"), id("eu")];
            Registry::new(Arc::new(store.clone()), storages.clone(), c).unwrap()
        };
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        Setup {
            us: engine(["us", "eu"]),
            eu: engine(["eu", "us"]),
            queue: Arc::new(SqlJobQueue::new(&store, policy)),
            store,
            storages,
            _dir: dir,
            pg,
        }
    }

    fn worker(&self, registry: &Registry) -> ReplicationWorker {
        ReplicationWorker::new(
            registry.clone(),
            self.queue.clone(),
            WorkerConfig {
                concurrency: 4,
                lease: Duration::from_secs(5),
                poll_interval: Duration::from_millis(20),
                verify_readback: true,
            },
        )
    }

    async fn finish(self) {
        if let Some(db) = self.pg {
            drop(self.store);
            db.drop_database().await.unwrap();
        }
    }
}

fn body(data: Vec<u8>) -> ByteStream {
    Box::pin(futures::stream::iter(
        data.chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    ))
}

async fn push(reg: &Registry, repo: &str, data: Vec<u8>) -> Digest {
    let digest = Digest::sha256_of(&data);
    let repo: RepositoryName = repo.parse().unwrap();
    reg.put_blob(&repo, &digest, body(data)).await.unwrap();
    digest
}

async fn stored_digest(storage: &Arc<dyn StorageEngine>, digest: &Digest) -> Option<Digest> {
    let mut s = storage.read(&digest.object_path(), None).await.ok()?;
    let mut h = DigestHasher::new(digest.algorithm());
    while let Some(c) = s.next().await {
        h.update(&c.ok()?);
    }
    Some(h.finish())
}

async fn commit_enqueues_and_worker_copies(postgres: bool) {
    let s = Setup::new(postgres, true).await;
    let digests = [
        push(&s.us, "app", vec![7u8; 300_000]).await,
        push(&s.us, "app", b"small".to_vec()).await,
    ];
    // Pushing the same blob again adds no job.
    push(&s.us, "other", b"small".to_vec()).await;
    let stats = s.queue.stats().await.unwrap();
    assert_eq!(stats.pending, 2);
    // Only in us until the worker runs.
    for d in &digests {
        assert!(stored_digest(&s.storages[&id("eu")], d).await.is_none());
    }
    let report = status::gather(&s.store, s.queue.as_ref(), &[id("us"), id("eu")], 10)
        .await
        .unwrap();
    assert!(!report.complete);
    assert_eq!(report.locations[1].missing_blobs, 2);

    assert_eq!(s.worker(&s.eu).drain(10).await.unwrap(), 2);
    for d in &digests {
        assert_eq!(
            stored_digest(&s.storages[&id("eu")], d).await.as_ref(),
            Some(d)
        );
        let blob = s.store.get_blob(d).await.unwrap().unwrap();
        assert_eq!(blob.locations.len(), 2);
    }
    let report = status::gather(&s.store, s.queue.as_ref(), &[id("us"), id("eu")], 10)
        .await
        .unwrap();
    assert!(report.complete, "{}", report.render());
    assert_eq!(report.pending_jobs, 0);
    // The eu instance now reads from eu.
    let read =
        s.eu.read_blob(&"app".parse().unwrap(), &digests[0], None)
            .await
            .unwrap();
    match read.body {
        BlobBody::Stream { location, .. } => assert_eq!(location, id("eu")),
        other => panic!("unexpected {other:?}"),
    }
    s.finish().await;
}

async fn reconciler_heals_blobs_pushed_before_replication(postgres: bool) {
    let s = Setup::new(postgres, false).await;
    let d = push(&s.us, "old", b"pushed before replication".to_vec()).await;
    assert_eq!(s.queue.stats().await.unwrap().pending, 0);
    let r = reconciler::reconcile(&s.store, s.queue.as_ref(), &[id("us"), id("eu")], |_| {})
        .await
        .unwrap();
    assert_eq!((r.blobs, r.missing, r.enqueued), (1, 1, 1));
    // Idempotent: a second pass adds nothing.
    let r = reconciler::reconcile(&s.store, s.queue.as_ref(), &[id("us"), id("eu")], |_| {})
        .await
        .unwrap();
    assert_eq!(r.enqueued, 0);
    s.worker(&s.us).drain(10).await.unwrap();
    assert_eq!(stored_digest(&s.storages[&id("eu")], &d).await, Some(d));
    s.finish().await;
}

async fn deletes_propagate_to_every_location(postgres: bool) {
    let s = Setup::new(postgres, true).await;
    let d = push(&s.us, "gone", b"to be deleted".to_vec()).await;
    s.worker(&s.us).drain(10).await.unwrap();
    assert!(stored_digest(&s.storages[&id("eu")], &d).await.is_some());
    s.us.delete_blob(&"gone".parse().unwrap(), &d)
        .await
        .unwrap();
    // Records are gone at once; copies go through delete jobs.
    assert!(s.store.get_blob(&d).await.unwrap().is_none());
    assert_eq!(s.queue.stats().await.unwrap().pending, 2);
    s.worker(&s.us).drain(10).await.unwrap();
    for l in ["us", "eu"] {
        assert!(
            stored_digest(&s.storages[&id(l)], &d).await.is_none(),
            "{l}"
        );
    }
    s.finish().await;
}

async fn remove_location_refuses_last_copy_then_succeeds(postgres: bool) {
    let s = Setup::new(postgres, false).await;
    push(&s.us, "r", b"only in us".to_vec()).await;
    let err = s.store.remove_location(&id("us"), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains("1 blobs"), "{err}");
    reconciler::reconcile(&s.store, s.queue.as_ref(), &[id("us"), id("eu")], |_| {})
        .await
        .unwrap();
    s.worker(&s.eu).drain(10).await.unwrap();
    let done = s.store.remove_location(&id("us"), false).await.unwrap();
    assert_eq!(done.placements, 1);
    assert_eq!(done.sole_copies, 0);
    s.finish().await;
}

async fn dead_source_falls_back_and_bad_jobs_dead_letter(postgres: bool) {
    let s = Setup::new(postgres, true).await;
    let d = push(&s.us, "x", b"will lose its source".to_vec()).await;
    // The only copy vanishes from storage: the job fails, retries, then dead-letters.
    s.storages[&id("us")]
        .delete(&d.object_path())
        .await
        .unwrap();
    let w = s.worker(&s.eu);
    for _ in 0..50 {
        w.drain(5).await.unwrap();
        if s.queue.stats().await.unwrap().dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let dead = s.queue.dead_jobs(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].last_error.is_some());
    let report = status::gather(&s.store, s.queue.as_ref(), &[id("us"), id("eu")], 10)
        .await
        .unwrap();
    assert_eq!(report.dead.len(), 1);
    assert!(report.render().contains("dead: replicate"));
    s.finish().await;
}

async fn corrupt_source_never_lands_in_the_target(postgres: bool) {
    let s = Setup::new(postgres, true).await;
    let data = vec![7u8; 200 * 1024];
    let same_length = push(&s.us, "x", data.clone()).await;
    let mut other = data.clone();
    other[1000] ^= 1;
    s.storages[&id("us")]
        .write(&same_length.object_path(), body(other))
        .await
        .unwrap();
    let shorter = push(&s.us, "x", vec![9u8; 100 * 1024]).await;
    s.storages[&id("us")]
        .write(&shorter.object_path(), body(vec![9u8; 99 * 1024]))
        .await
        .unwrap();
    let w = s.worker(&s.eu);
    for _ in 0..50 {
        w.drain(5).await.unwrap();
        if s.queue.stats().await.unwrap().dead == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let dead = s.queue.dead_jobs(10).await.unwrap();
    assert_eq!(dead.len(), 2, "both copies should have failed for good");
    for d in [&same_length, &shorter] {
        let stat = s.storages[&id("eu")].stat(&d.object_path()).await;
        assert!(
            stat.is_err(),
            "a corrupt copy of {d} landed in eu: {stat:?}"
        );
        let blob = s.store.get_blob(d).await.unwrap().unwrap();
        assert_eq!(blob.locations, vec![id("us")], "{d} is recorded in eu");
    }
    s.finish().await;
}

/// Status tells, per location, what is missing, how far behind it is and the jobs acting on it;
/// it warns while nobody works, then lists the background runner's worker by its heartbeat,
/// which goes away when the runner stops.
async fn status_tells_lag_jobs_and_workers(postgres: bool) {
    let s = Setup::new(postgres, true).await;
    push(&s.us, "app", vec![3u8; 10_000]).await;
    let both = [id("us"), id("eu")];
    let gather = || status::gather(&s.store, s.queue.as_ref(), &both, 10);
    let report = gather().await.unwrap();
    let (us, eu) = (&report.locations[0], &report.locations[1]);
    assert_eq!((us.missing_blobs, eu.missing_blobs), (0, 1));
    assert!(us.lag_secs.is_none(), "us lacks nothing: {us:?}");
    assert!(
        matches!(eu.lag_secs, Some(l) if l < 60.0),
        "eu is behind: {eu:?}"
    );
    let eu_jobs = eu
        .queue
        .as_ref()
        .expect("the SQL queue counts per location");
    assert_eq!((eu_jobs.pending, eu_jobs.leased), (1, 0), "{eu_jobs:?}");
    assert!(eu_jobs.oldest_pending_age_secs.is_some());
    assert_eq!(us.queue.as_ref().map(|q| q.pending), Some(0));
    assert!(report.workers_recorded && report.workers.is_empty());
    assert!(report.nobody_working(), "a copy waits and nobody works");
    assert!(
        report
            .render()
            .contains("WARNING: no replication worker seen"),
        "{}",
        report.render()
    );

    let background = Background::new(s.eu.clone())
        .worker(WorkerConfig {
            poll_interval: Duration::from_millis(20),
            ..WorkerConfig::default()
        })
        .role("test-eu")
        .heartbeat_every(Duration::from_millis(50))
        .spawn(std::future::pending());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        let r = gather().await.unwrap();
        if r.complete && r.workers.first().is_some_and(|w| w.jobs_done == 1) {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not copy and report: {}",
            r.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let w = &report.workers[0];
    assert_eq!((w.role.as_str(), w.pid), ("test-eu", std::process::id()));
    assert_eq!(w.host, host_name());
    assert_eq!(w.bytes_copied, 10_000);
    assert!(!report.nobody_working());
    assert!(report.render().contains("(test-eu)"), "{}", report.render());
    background.stop().await;
    let report = gather().await.unwrap();
    assert!(report.workers.is_empty(), "a stopped worker is forgotten");
    assert!(report.complete && !report.nobody_working());
    s.finish().await;
}

/// A pull that the eu instance serves from us (eu lacks the blob) moves the copy to eu ahead
/// of the 1,000 jobs queued before it: the worker's first batch makes the blob local while
/// nearly all of them are still pending.
async fn pull_served_from_afar_jumps_the_queue(postgres: bool) {
    let s = Setup::new(postgres, true).await;
    let pushed: Vec<Digest> = futures::stream::iter(0..1000)
        .map(|i| {
            let us = s.us.clone();
            async move { push(&us, "many", format!("queued blob {i}").into_bytes()).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(pushed.len(), 1000);
    let wanted = push(&s.us, "pulled", b"pulled from eu while only in us".to_vec()).await;
    assert_eq!(s.queue.stats().await.unwrap().pending, 1001);

    let read =
        s.eu.read_blob(&"pulled".parse().unwrap(), &wanted, None)
            .await
            .unwrap();
    match read.body {
        BlobBody::Stream { location, .. } => assert_eq!(location, id("us"), "served from afar"),
        other => panic!("unexpected {other:?}"),
    }

    // One batch of the eu worker (concurrency 4).
    assert_eq!(s.worker(&s.eu).drain(1).await.unwrap(), 4);
    let blob = s.store.get_blob(&wanted).await.unwrap().unwrap();
    assert!(blob.locations.contains(&id("eu")), "{blob:?}");
    assert_eq!(
        stored_digest(&s.storages[&id("eu")], &wanted).await,
        Some(wanted.clone())
    );
    let left = s.queue.stats().await.unwrap().pending;
    assert_eq!(
        left, 997,
        "the pulled blob is local while 997 older jobs wait"
    );
    // Now the eu instance reads it locally.
    let read =
        s.eu.read_blob(&"pulled".parse().unwrap(), &wanted, None)
            .await
            .unwrap();
    match read.body {
        BlobBody::Stream { location, .. } => assert_eq!(location, id("eu")),
        other => panic!("unexpected {other:?}"),
    }
    s.finish().await;
}

/// A worker reads the records of a whole claim before the copies start. A copy started from a
/// record read before a removal of a former copy is refused (and retried from a fresh read);
/// one read before the blob was deleted is taken back out. Neither is ever recorded. A record
/// that says the target holds the blob is read again: its copy may have been removed since.
async fn a_copy_from_a_stale_record_is_refused_and_taken_back(postgres: bool) {
    let s = Setup::new(postgres, true).await;
    let removed = push(&s.us, "app", b"copied after a removal".to_vec()).await;
    let deleted = push(&s.us, "app", b"copied after its deletion".to_vec()).await;
    let eu = id("eu");
    let wanted = [(removed.clone(), eu.clone()), (deleted.clone(), eu.clone())];
    let mut before = s.eu.read_before_copies(&wanted).await.unwrap().into_iter();
    let (before_removal, before_deletion) = (before.next().unwrap(), before.next().unwrap());
    assert!(before.next().is_none());
    assert_eq!(
        before_removal.record.as_ref().map(|r| &r.digest),
        Some(&removed)
    );
    assert_eq!(
        before_deletion.record.as_ref().map(|r| &r.digest),
        Some(&deleted)
    );

    // Meanwhile a former copy of one is removed from eu, and the other blob is deleted.
    s.store.record_removed_copy(&removed, &eu).await.unwrap();
    let repo: RepositoryName = "app".parse().unwrap();
    assert!(s.store.unlink_blob(&repo, &deleted).await.unwrap());
    assert!(s
        .store
        .delete_blob_if_unreferenced(&deleted, false)
        .await
        .unwrap()
        .is_some());

    let refused =
        s.eu.replicate_blob_in(&removed, &eu, false, None, Some(before_removal))
            .await
            .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(refused.is_temporary(), "{refused}");
    let blob = s.store.get_blob(&removed).await.unwrap().unwrap();
    assert_eq!(blob.locations, vec![id("us")]);
    // The job's retry reads afresh, and copies.
    let retried =
        s.eu.replicate_blob_in(&removed, &eu, false, None, None)
            .await
            .unwrap();
    assert!(
        matches!(retried, quay_replication::worker::Outcome::Copied { .. }),
        "{retried:?}"
    );
    assert_eq!(
        stored_digest(&s.storages[&eu], &removed).await,
        Some(removed.clone())
    );

    let outcome =
        s.eu.replicate_blob_in(&deleted, &eu, false, None, Some(before_deletion))
            .await
            .unwrap();
    assert_eq!(outcome, quay_replication::worker::Outcome::Noop);
    assert_eq!(stored_digest(&s.storages[&eu], &deleted).await, None);
    assert!(s.store.get_blob(&deleted).await.unwrap().is_none());

    // `removed` is in eu now. A record says so; then eu's copy is found bad and its placement
    // dropped. The job started from that record copies it again instead of ending as done.
    let held =
        s.eu.read_before_copies(&[(removed.clone(), eu.clone())])
            .await
            .unwrap()
            .remove(0);
    assert!(held.record.as_ref().unwrap().locations.contains(&eu));
    let dropped = quay_core::RepairIndex::record_bad_copy(
        &s.store,
        &removed,
        &eu,
        quay_core::CopyProblem::Corrupt,
    )
    .await
    .unwrap();
    assert!(dropped, "us holds it too, so eu's placement goes");
    let again =
        s.eu.replicate_blob_in(&removed, &eu, false, None, Some(held))
            .await
            .unwrap();
    assert!(
        matches!(again, quay_replication::worker::Outcome::Copied { .. }),
        "{again:?}"
    );
    s.finish().await;
}

macro_rules! both {
    ($($case:ident),*) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(false).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(true).await } )* }
    };
}

both!(
    a_copy_from_a_stale_record_is_refused_and_taken_back,
    corrupt_source_never_lands_in_the_target,
    commit_enqueues_and_worker_copies,
    reconciler_heals_blobs_pushed_before_replication,
    deletes_propagate_to_every_location,
    remove_location_refuses_last_copy_then_succeeds,
    dead_source_falls_back_and_bad_jobs_dead_letter,
    status_tells_lag_jobs_and_workers,
    pull_served_from_afar_jumps_the_queue
);
