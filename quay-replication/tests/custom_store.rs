//! A downstream `MetadataStore`: a wrapper over the SQL store, as an embedder writes one to add
//! auditing or caching. Delegating the outbox contract too, it replicates like the SQL store;
//! a wrapper that forgets `outbox` is refused by the registry builder and fails the
//! conformance case that says why, instead of silently never replicating.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use quay_core::metadata::{
    BlobCommit, BlobRecord, LocationRemoval, LocationStats, ManifestRecord, NewManifest, Page,
    TimestampMs, UploadPart, UploadRecord,
};
use quay_core::{
    BlobIndex, Digest, ErrorKind, JobOutbox, JobQueue, LocationId, ManifestIndex, PlacementIndex,
    Reference, Registry, RepositoryName, Result, Tag, UploadStore,
};
use quay_replication::worker::{ReplicationWorker, WorkerConfig};
use quay_storage::testkit::metadata::{
    commits_record_their_jobs_in_the_outbox, run_case, MetadataHarness, TestSqlite,
};
use quay_storage::{OpendalStorage, SqlMetadataStore};

/// Delegates everything to the SQL store; `keeps_outbox: false` forgets to delegate `outbox`.
#[derive(Debug, Clone)]
struct Wrapped {
    inner: SqlMetadataStore,
    keeps_outbox: bool,
}

#[async_trait]
impl UploadStore for Wrapped {
    async fn create_upload(&self, id: &str, r: &RepositoryName, l: &LocationId) -> Result<()> {
        self.inner.create_upload(id, r, l).await
    }
    async fn get_upload(&self, id: &str) -> Result<UploadRecord> {
        self.inner.get_upload(id).await
    }
    async fn append_upload_part(&self, id: &str, size: u64, part: &UploadPart) -> Result<u64> {
        self.inner.append_upload_part(id, size, part).await
    }
    async fn delete_upload(&self, id: &str) -> Result<()> {
        self.inner.delete_upload(id).await
    }
    async fn count_uploads(&self, r: &RepositoryName) -> Result<u64> {
        self.inner.count_uploads(r).await
    }
    async fn stale_uploads(&self, before: TimestampMs, limit: u64) -> Result<Vec<UploadRecord>> {
        self.inner.stale_uploads(before, limit).await
    }
}

#[async_trait]
impl BlobIndex for Wrapped {
    async fn commit_blob(&self, commit: &BlobCommit) -> Result<()> {
        self.inner.commit_blob(commit).await
    }
    async fn get_blob(&self, d: &Digest) -> Result<Option<BlobRecord>> {
        self.inner.get_blob(d).await
    }
    async fn repository_blob(&self, r: &RepositoryName, d: &Digest) -> Result<Option<BlobRecord>> {
        self.inner.repository_blob(r, d).await
    }
    async fn link_blob(&self, r: &RepositoryName, d: &Digest) -> Result<bool> {
        self.inner.link_blob(r, d).await
    }
    async fn unlink_blob(&self, r: &RepositoryName, d: &Digest) -> Result<bool> {
        self.inner.unlink_blob(r, d).await
    }
    async fn delete_blob_if_unreferenced(
        &self,
        d: &Digest,
        enqueue: bool,
    ) -> Result<Option<Vec<LocationId>>> {
        self.inner.delete_blob_if_unreferenced(d, enqueue).await
    }
}

#[async_trait]
impl PlacementIndex for Wrapped {
    async fn add_placement(&self, d: &Digest, l: &LocationId, seen: u64) -> Result<bool> {
        self.inner.add_placement(d, l, seen).await
    }
    async fn removals(&self, d: &Digest, l: &LocationId) -> Result<u64> {
        self.inner.removals(d, l).await
    }
    async fn record_removed_copy(&self, d: &Digest, l: &LocationId) -> Result<()> {
        self.inner.record_removed_copy(d, l).await
    }
    async fn missing_placements(
        &self,
        targets: &[LocationId],
        after: Option<&Digest>,
        limit: u64,
    ) -> Result<Vec<(BlobRecord, Vec<LocationId>)>> {
        self.inner.missing_placements(targets, after, limit).await
    }
    async fn location_stats(&self, l: &[LocationId]) -> Result<Vec<LocationStats>> {
        self.inner.location_stats(l).await
    }
    async fn sole_copies(&self, l: &LocationId) -> Result<u64> {
        self.inner.sole_copies(l).await
    }
    async fn remove_location(&self, l: &LocationId, force: bool) -> Result<LocationRemoval> {
        self.inner.remove_location(l, force).await
    }
}

#[async_trait]
impl ManifestIndex for Wrapped {
    async fn put_manifest(&self, r: &RepositoryName, m: &NewManifest) -> Result<()> {
        self.inner.put_manifest(r, m).await
    }
    async fn get_manifest(
        &self,
        r: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>> {
        self.inner.get_manifest(r, reference).await
    }
    async fn delete_manifest(&self, r: &RepositoryName, d: &Digest) -> Result<bool> {
        self.inner.delete_manifest(r, d).await
    }
    async fn delete_tag(&self, r: &RepositoryName, t: &Tag) -> Result<bool> {
        self.inner.delete_tag(r, t).await
    }
    async fn list_tags(
        &self,
        r: &RepositoryName,
        last: Option<&str>,
        limit: u64,
    ) -> Result<Option<Page>> {
        self.inner.list_tags(r, last, limit).await
    }
    async fn referrers(&self, r: &RepositoryName, subject: &Digest) -> Result<Vec<ManifestRecord>> {
        self.inner.referrers(r, subject).await
    }
    async fn catalog(&self, last: Option<&str>, limit: u64) -> Result<Page> {
        self.inner.catalog(last, limit).await
    }
}

/// No garbage collection nor repairs: the traits' defaults answer `Unsupported`.
impl quay_core::GarbageIndex for Wrapped {}
impl quay_core::RepairIndex for Wrapped {}

impl JobOutbox for Wrapped {
    fn outbox(&self) -> Option<Arc<dyn JobQueue>> {
        if self.keeps_outbox {
            self.inner.outbox()
        } else {
            None
        }
    }
}

async fn wrapped(db: &TestSqlite, keeps_outbox: bool) -> Wrapped {
    Wrapped {
        inner: SqlMetadataStore::connect(&db.url).await.unwrap(),
        keeps_outbox,
    }
}

fn id(s: &str) -> LocationId {
    s.parse().unwrap()
}

fn two_regions(store: Wrapped) -> quay_core::Result<Registry> {
    Registry::builder(Arc::new(store))
        .location(id("us"), Arc::new(OpendalStorage::memory("us").unwrap()))
        .location(id("eu"), Arc::new(OpendalStorage::memory("eu").unwrap()))
        .preference([id("us"), id("eu")])
        .replicate_to([id("us"), id("eu")])
        .finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapper_that_delegates_the_outbox_replicates() {
    let db = TestSqlite::new().unwrap();
    let registry = two_regions(wrapped(&db, true).await).unwrap();
    let repo: RepositoryName = "acme/app".parse().unwrap();
    let data = Bytes::from_static(b"a layer pushed through a custom store");
    let digest = Digest::sha256_of(&data);
    let body = Box::pin(futures::stream::iter([Ok(data.clone())]));
    registry.put_blob(&repo, &digest, body).await.unwrap();
    let queue = registry.queue().cloned().unwrap();
    let worker = ReplicationWorker::new(registry.clone(), queue, WorkerConfig::default());
    assert_eq!(
        worker.drain(10).await.unwrap(),
        1,
        "one job from the outbox"
    );
    let blob = registry
        .metadata()
        .get_blob(&digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob.locations.len(), 2, "{blob:?}");
    let eu = registry.locations()[&id("eu")].clone();
    assert_eq!(
        eu.stat(&digest.object_path()).await.unwrap().size,
        data.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapper_that_forgets_the_outbox_is_refused() {
    let db = TestSqlite::new().unwrap();
    let err = two_regions(wrapped(&db, false).await).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("MetadataStore::outbox"), "{err}");
}

/// The same wrappers as conformance harnesses.
struct Harness<const KEEPS: bool>(TestSqlite);

#[async_trait]
impl<const KEEPS: bool> MetadataHarness for Harness<KEEPS> {
    type Store = Wrapped;
    async fn create() -> Result<Self> {
        Ok(Harness(TestSqlite::new()?))
    }
    async fn open(&self) -> Result<Wrapped> {
        Ok(wrapped(&self.0, KEEPS).await)
    }
    async fn destroy(self) -> Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_case_passes_for_a_delegating_wrapper() {
    run_case::<Harness<true>, _>("commits_record_their_jobs_in_the_outbox", |h| {
        Box::pin(commits_record_their_jobs_in_the_outbox(h))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "MetadataStore::outbox returned None")]
async fn the_outbox_case_says_why_a_forgetful_wrapper_fails() {
    run_case::<Harness<false>, _>("commits_record_their_jobs_in_the_outbox", |h| {
        Box::pin(commits_record_their_jobs_in_the_outbox(h))
    })
    .await;
}
