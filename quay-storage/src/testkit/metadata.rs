//! The conformance suite of [`MetadataStore`]: one small case per behaviour of the traits
//! [`UploadStore`](quay_core::UploadStore), [`BlobIndex`](quay_core::BlobIndex),
//! [`ManifestIndex`](quay_core::ManifestIndex) and the outbox contract
//! ([`JobOutbox`](quay_core::JobOutbox)).
//!
//! A backend joins the suite by implementing [`MetadataHarness`] (a fresh, isolated database per
//! case) and expanding [`metadata_conformance_tests!`](crate::metadata_conformance_tests) in an
//! integration test, which writes one `#[tokio::test]` per case, named after it:
//!
//! ```ignore
//! // tests/metadata_sqlite.rs (the crate needs tokio with `macros` and `rt-multi-thread`)
//! quay_storage::metadata_conformance_tests!(quay_storage::testkit::metadata::SqliteHarness);
//! ```
//!
//! [`run_all`] runs every case in sequence instead. Each case takes the harness, opens as many
//! store instances on its database as it needs (two instances stand for two processes), and
//! returns an error or panics on an assertion when the store misbehaves.

mod blobs;
mod manifests;
mod uploads;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use quay_core::metadata::{BlobCommit, ManifestRecord, NewManifest, UploadPart};
use quay_core::{Digest, Error, ErrorKind, LocationId, MetadataStore, RepositoryName, Result};

use crate::SqlMetadataStore;

pub use self::blobs::*;
pub use self::manifests::*;
pub use self::uploads::*;

/// A fresh, isolated database for one case, on which store instances are opened.
#[async_trait]
pub trait MetadataHarness: Send + Sync + Sized + 'static {
    /// The store under test.
    type Store: MetadataStore + 'static;

    /// Creates an empty database that no other case uses. Fails (never skips) when the backing
    /// service is missing, with a message that says how to start it.
    async fn create() -> Result<Self>;

    /// Opens a new store instance on this database, as another process would.
    async fn open(&self) -> Result<Self::Store>;

    /// Removes the database. Called after the case, whether it passed or not.
    async fn destroy(self) -> Result<()>;
}

/// Runs one case on a fresh database of `H`, then destroys the database; panics with the
/// case's name when the case fails.
pub async fn run_case<H, F>(name: &str, case: F)
where
    H: MetadataHarness,
    F: for<'a> FnOnce(&'a H) -> BoxFuture<'a, Result<()>>,
{
    let harness = match H::create().await {
        Ok(harness) => harness,
        Err(e) => panic!("{name}: cannot create a test database: {e}"),
    };
    let outcome = AssertUnwindSafe(case(&harness)).catch_unwind().await;
    let cleanup = harness.destroy().await;
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(e)) => panic!("{name} failed: {e}"),
        Ok(Ok(())) => {}
    }
    if let Err(e) = cleanup {
        panic!("{name}: cannot remove the test database: {e}");
    }
}

/// Runs every case on `H`, one after the other, each on a fresh database.
pub async fn run_all<H: MetadataHarness>() {
    crate::__metadata_cases!(run H);
}

/// Expands to one `#[tokio::test]` per case of the metadata conformance suite, run on the
/// given [`MetadataHarness`] type. The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! metadata_conformance_tests {
    ($harness:ty) => {
        $crate::__metadata_cases!(tests $harness);
    };
}

/// The list of cases, written once for both the test macro and [`run_all`].
#[doc(hidden)]
#[macro_export]
macro_rules! __metadata_cases {
    (@tests $harness:ty; $($case:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::metadata::run_case::<$harness, _>(
                    ::std::stringify!($case),
                    |h| ::std::boxed::Box::pin($crate::testkit::metadata::$case(h)),
                )
                .await;
            }
        )*
    };
    (@run $harness:ty; $($case:ident)*) => {
        $(
            $crate::testkit::metadata::run_case::<$harness, _>(
                ::std::stringify!($case),
                |h| ::std::boxed::Box::pin($crate::testkit::metadata::$case(h)),
            )
            .await;
        )*
    };
    ($mode:ident $harness:ty) => {
        $crate::__metadata_cases!(@$mode $harness;
            create_then_get_upload_returns_empty_session
            get_unknown_upload_is_not_found
            create_upload_with_taken_id_conflicts
            append_parts_grows_upload
            append_part_with_stale_size_conflicts
            append_part_to_unknown_upload_is_not_found
            append_part_at_wrong_offset_is_invalid
            concurrent_appends_at_one_size_let_one_win
            delete_upload_removes_session_and_parts
            delete_unknown_upload_is_ok
            uploads_are_counted_per_repository
            stale_uploads_are_oldest_first_and_limited
            upload_survives_across_two_store_instances
            commit_blob_records_blob_placement_and_link
            commit_blob_twice_is_idempotent
            commit_blob_in_another_location_adds_placement
            commit_blob_removes_its_upload
            commit_records_its_copies_without_jobs_for_them
            commit_blob_yields_to_removals_of_its_location
            get_unknown_blob_is_none
            get_blobs_with_removals_agrees_with_its_parts
            add_placements_answers_each_copy_in_order
            add_placements_yield_to_delete_jobs_of_their_location
            repository_blob_needs_a_link
            link_blob_links_a_known_blob
            link_unknown_blob_is_false_and_creates_nothing
            unlink_blob_reports_whether_it_was_linked
            delete_blob_keeps_linked_blobs
            delete_unreferenced_blob_returns_its_locations
            delete_unknown_blob_returns_no_locations
            concurrent_commits_of_one_blob_succeed
            commits_record_their_jobs_in_the_outbox
            put_manifest_by_tag_resolves_by_tag_and_digest
            put_manifest_by_digest_creates_no_tag
            put_same_manifest_twice_keeps_the_first
            put_manifest_moves_tag
            get_unknown_manifest_is_none
            delete_manifest_removes_its_tags
            delete_tag_keeps_manifest
            tags_are_sorted_and_paged
            list_tags_of_unknown_repository_is_none
            referrers_filter_by_subject
            catalog_is_sorted_and_paged
        );
    };
}

/// A SQLite database file in a temporary folder, removed when this value is dropped.
#[derive(Debug)]
pub struct TestSqlite {
    /// The database URL, `sqlite://<dir>/metadata.db?mode=rwc`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl TestSqlite {
    /// Creates the folder; the database file is created by the first connection.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("quay-test-sqlite-")
            .tempdir()
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, "cannot create a temporary folder")
                    .with_source(e)
            })?;
        let url = format!("sqlite://{}/metadata.db?mode=rwc", dir.path().display());
        Ok(TestSqlite { url, dir })
    }

    /// The temporary folder holding the database.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A [`SqlMetadataStore`] on a fresh SQLite file, with the guard that removes it.
pub async fn fresh_sqlite() -> Result<(SqlMetadataStore, TestSqlite)> {
    let db = TestSqlite::new()?;
    let store = SqlMetadataStore::connect(&db.url).await?;
    Ok((store, db))
}

/// [`SqlMetadataStore`] on a fresh SQLite file per case.
#[derive(Debug)]
pub struct SqliteHarness {
    db: TestSqlite,
}

#[async_trait]
impl MetadataHarness for SqliteHarness {
    type Store = SqlMetadataStore;

    async fn create() -> Result<Self> {
        Ok(SqliteHarness {
            db: TestSqlite::new()?,
        })
    }

    async fn open(&self) -> Result<SqlMetadataStore> {
        SqlMetadataStore::connect(&self.db.url).await
    }

    async fn destroy(self) -> Result<()> {
        Ok(())
    }
}

// Fixtures shared by the cases.

fn repo(name: &str) -> Result<RepositoryName> {
    name.parse()
}

fn loc(id: &str) -> Result<LocationId> {
    id.parse()
}

fn blob_digest(seed: &str) -> Digest {
    Digest::sha256_of(seed.as_bytes())
}

fn upload_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn blob_commit(repository: &str, seed: &str, location: &str) -> Result<BlobCommit> {
    Ok(BlobCommit {
        repository: repo(repository)?,
        digest: blob_digest(seed),
        size: seed.len() as u64,
        location: loc(location)?,
        upload_id: None,
        replicate_to: Vec::new(),
        removals_seen: None,
        copies: Vec::new(),
    })
}

fn part(offset: u64, size: u64, sha256: Option<Digest>) -> UploadPart {
    UploadPart {
        offset,
        size,
        path: format!("uploads/test/{offset}"),
        sha256,
    }
}

/// A manifest whose digest is that of its content, made from `seed`.
fn manifest(seed: &str, tag: Option<&str>) -> Result<NewManifest> {
    let content = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
         \"annotations\":{{\"seed\":\"{seed}\"}}}}"
    ));
    Ok(NewManifest {
        record: ManifestRecord {
            digest: Digest::sha256_of(&content),
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            content,
            subject: None,
            artifact_type: None,
            annotations: None,
        },
        tag: tag.map(str::parse).transpose()?,
        blobs: Vec::new(),
        children: Vec::new(),
    })
}

/// Asserts that `result` failed with `kind`.
#[track_caller]
fn assert_kind<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Err(e) if e.kind() == kind => {}
        other => panic!("{what}: expected a {kind} error, got {other:?}"),
    }
}

/// Lets the millisecond clock move on, so that timestamps differ.
fn tick() {
    std::thread::sleep(Duration::from_millis(3));
}
