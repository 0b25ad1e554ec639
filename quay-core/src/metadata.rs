//! The metadata store: repositories, blobs and their placements, upload sessions, manifests,
//! tags. Split into three small traits; [`MetadataStore`] is all of them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::names::{LocationId, Reference, RepositoryName, Tag};

/// Milliseconds since the Unix epoch.
pub type TimestampMs = i64;

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An upload session, stored in the database so that any instance can take the next chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// The session id (a UUID without dashes).
    pub id: String,
    /// The repository the blob is pushed to.
    pub repository: RepositoryName,
    /// The location whose storage holds the parts.
    pub location: LocationId,
    /// Bytes received so far: the sum of the parts' sizes.
    pub size: u64,
    /// The parts received so far, in offset order.
    pub parts: Vec<UploadPart>,
    /// When the session was opened.
    pub created_at: TimestampMs,
    /// When a chunk was last accepted.
    pub updated_at: TimestampMs,
}

/// One chunk of an upload, stored as its own object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPart {
    /// Offset of the part's first byte in the blob.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// The object path of the part in the session's location.
    pub path: String,
    /// The sha256 of the part's bytes, when it was computed while streaming.
    pub sha256: Option<Digest>,
}

/// A blob with the locations that hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    /// The blob's digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Locations holding a verified copy.
    pub locations: Vec<LocationId>,
}

/// Everything recorded when an upload finishes, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobCommit {
    /// The repository the blob is linked into (created when new).
    pub repository: RepositoryName,
    /// The verified digest.
    pub digest: Digest,
    /// The verified size.
    pub size: u64,
    /// The location now holding it.
    pub location: LocationId,
    /// The upload session to delete with its parts, if any.
    pub upload_id: Option<String>,
    /// Locations the blob must be replicated to: one replication job is recorded, in the same
    /// transaction, for each of them that does not hold the blob yet.
    pub replicate_to: Vec<LocationId>,
    /// [`PlacementIndex::removals`] of the blob in `location` as read before the caller looked
    /// at the blob's placements and put its object in place (or found one there), or `None`
    /// for no check. A removal of a copy there since then may have deleted that object: the
    /// commit is then refused (`Unavailable`), and the client pushes again.
    pub removals_seen: Option<u64>,
    /// Verified copies in other locations made before the commit (push-time durability):
    /// their placements are recorded in the same transaction, each refused like
    /// `location`'s when a removal of a copy there was counted since its `removals_seen`.
    pub copies: Vec<PlacedCopy>,
}

/// A verified copy of a blob written in a location before its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedCopy {
    /// The location holding the copy.
    pub location: LocationId,
    /// [`PlacementIndex::removals`] of the blob there, read before the copy was written.
    pub removals_seen: u64,
}

/// A manifest as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The exact bytes pushed.
    pub content: Bytes,
    /// The subject digest, for referrers.
    pub subject: Option<Digest>,
    /// The artifact type, for referrers.
    pub artifact_type: Option<String>,
    /// Top-level annotations, for referrers.
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A page of names (tags or repositories), sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The names.
    pub items: Vec<String>,
    /// Whether more names follow the last one.
    pub more: bool,
}

/// Upload sessions.
///
/// # Behavior
///
/// - `get_upload` of an unknown id fails with `NotFound`.
/// - `append_upload_part` is a compare-and-set on the session's size: it succeeds only when the
///   session still holds `expected_size` bytes, and fails with `Conflict` otherwise (another
///   chunk got there first), or `NotFound` when the session is gone.
/// - `delete_upload` of an unknown id succeeds.
/// - The multipart state of a session (optional: [`UploadStore::keeps_multipart_state`]) is an
///   opaque text the engine saves with `set_upload_multipart`, a compare-and-set on the
///   session's size like `append_upload_part`, which also sets the size; `get_upload` of a
///   session gives it back in `get_upload_multipart`, `None` when never set.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Opens a session.
    async fn create_upload(
        &self,
        id: &str,
        repository: &RepositoryName,
        location: &LocationId,
    ) -> Result<()>;
    /// Reads a session with its parts.
    async fn get_upload(&self, id: &str) -> Result<UploadRecord>;
    /// Records a part; returns the session's new size.
    async fn append_upload_part(
        &self,
        id: &str,
        expected_size: u64,
        part: &UploadPart,
    ) -> Result<u64>;
    /// Removes a session and its part records (not the part objects).
    async fn delete_upload(&self, id: &str) -> Result<()>;
    /// The number of open sessions of `repository`.
    async fn count_uploads(&self, repository: &RepositoryName) -> Result<u64>;
    /// Sessions not updated since `before`, oldest first, at most `limit`.
    async fn stale_uploads(&self, before: TimestampMs, limit: u64) -> Result<Vec<UploadRecord>>;

    /// Whether this store keeps the multipart state of sessions (without it, chunked uploads
    /// store each chunk as its own object on every backend).
    fn keeps_multipart_state(&self) -> bool {
        false
    }

    /// The saved multipart state of session `id`, `None` when it has none; `NotFound` when the
    /// session is gone.
    async fn get_upload_multipart(&self, id: &str) -> Result<Option<String>> {
        self.get_upload(id).await.map(|_| None)
    }

    /// Saves `state` and sets the size of session `id` to `new_size`, if the session still
    /// holds `expected_size` bytes (else `Conflict`; `NotFound` when it is gone).
    async fn set_upload_multipart(
        &self,
        id: &str,
        expected_size: u64,
        new_size: u64,
        state: &str,
    ) -> Result<()> {
        let _ = (id, expected_size, new_size, state);
        Err(Error::new(
            ErrorKind::Unsupported,
            "this metadata store keeps no multipart state",
        ))
    }
}

/// Blobs, their placements, and which repositories link them.
///
/// # Behavior
///
/// - `commit_blob` is one transaction: the repository (created if new), the blob (kept if it
///   exists), its placement in the commit's location, the link into the repository, the
///   replication jobs for `replicate_to` locations that lack the blob (deduplicated), and the
///   removal of the upload session. Committing the same blob twice is not an error.
/// - `repository_blob` answers only for blobs linked into that repository.
/// - `delete_blob_if_unreferenced` removes a blob and its placements only when no repository
///   links it, and returns the locations that held it.
#[async_trait]
pub trait BlobIndex: Send + Sync {
    /// Records a finished, verified blob.
    async fn commit_blob(&self, commit: &BlobCommit) -> Result<()>;
    /// A blob by digest, with its placements, if known anywhere.
    async fn get_blob(&self, digest: &Digest) -> Result<Option<BlobRecord>>;
    /// For each `(digest, location)`: the blob, as [`get_blob`](Self::get_blob), with its
    /// [`PlacementIndex::removals`] in `location` when the store reads both in one go (`None`:
    /// the caller asks `removals` itself). What a copy or a write of a blob into a location
    /// starts from (the removals are read before anything is written); asked for many blobs
    /// at once by replication workers. The default reads each blob in turn, without removals.
    async fn get_blobs_with_removals(
        &self,
        wanted: &[(Digest, LocationId)],
    ) -> Result<Vec<(Option<BlobRecord>, Option<u64>)>> {
        let mut out = Vec::with_capacity(wanted.len());
        for (digest, _) in wanted {
            out.push((self.get_blob(digest).await?, None));
        }
        Ok(out)
    }
    /// A blob linked into `repository`, with its placements.
    async fn repository_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>>;
    /// Links an existing blob into `repository` (creating the repository). Returns false when
    /// the blob is unknown.
    async fn link_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool>;
    /// Removes the link of a blob from `repository`. Returns false when it was not linked.
    async fn unlink_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool>;
    /// Deletes the blob's records when no repository links it; returns its former locations.
    /// With `enqueue_deletes`, a delete job per former location is recorded in the same
    /// transaction, so the stored copies are removed by the worker even if a location is
    /// briefly unreachable.
    async fn delete_blob_if_unreferenced(
        &self,
        digest: &Digest,
        enqueue_deletes: bool,
    ) -> Result<Option<Vec<LocationId>>>;
}

/// Per-location replication figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationStats {
    /// The location.
    pub location: LocationId,
    /// Blobs it holds.
    pub blobs: u64,
    /// Bytes it holds.
    pub bytes: u64,
    /// Blobs it lacks.
    pub missing_blobs: u64,
    /// Bytes it lacks.
    pub missing_bytes: u64,
    /// When the oldest blob it lacks was committed (`None` when it lacks none): how far
    /// behind the location is.
    pub oldest_missing_at: Option<TimestampMs>,
}

/// A verified copy to record with [`PlacementIndex::add_placements`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementToAdd {
    /// The blob.
    pub digest: Digest,
    /// The location now holding a verified copy.
    pub location: LocationId,
    /// [`PlacementIndex::removals`] of the blob there, read before the copy was written.
    pub removals_seen: u64,
}

/// What `remove_location` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocationRemoval {
    /// Placements removed.
    pub placements: u64,
    /// Pending jobs targeting the location removed.
    pub jobs: u64,
    /// Blobs whose only copy was there (non-zero only with `force`).
    pub sole_copies: u64,
}

/// Placements seen from the replication side: recording copies, finding what is missing, and
/// per-location figures.
///
/// # Behavior
///
/// - `add_placement` records a verified copy, written after `removals` answered
///   `removals_seen`; it returns false (and records nothing) when the blob no longer exists,
///   and fails with `Unavailable` when a removal of a former copy there was recorded since (the
///   copy may have been deleted with it).
/// - `record_removed_copy` counts a deletion of the copy of a blob in a location (by a delete
///   job); `removals` reads the count (0 when none). A store may forget counts older than a
///   day.
/// - `missing_placements` pages through blobs (by digest, after `after`) that lack a placement
///   in at least one of `targets`, with the targets they lack; it is set-based, one query per
///   page.
/// - `remove_location` is one transaction: unless `force`, it refuses with
///   [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) while any blob's only copy is in the
///   location; otherwise it removes the location's placements and its pending jobs.
#[async_trait]
pub trait PlacementIndex: Send + Sync {
    /// Records that `location` holds a verified copy of `digest`, written after
    /// [`removals`](Self::removals) answered `removals_seen`.
    async fn add_placement(
        &self,
        digest: &Digest,
        location: &LocationId,
        removals_seen: u64,
    ) -> Result<bool>;
    /// Records many verified copies, each as [`add_placement`](Self::add_placement) would,
    /// with one answer per copy, in order. A store may record them in one transaction (what
    /// replication workers use to pay one commit for many copies); the default records each
    /// in turn.
    async fn add_placements(&self, copies: &[PlacementToAdd]) -> Vec<Result<bool>> {
        let mut out = Vec::with_capacity(copies.len());
        for copy in copies {
            out.push(
                self.add_placement(&copy.digest, &copy.location, copy.removals_seen)
                    .await,
            );
        }
        out
    }
    /// Counts a deletion of the copy of `digest` in `location`.
    async fn record_removed_copy(&self, digest: &Digest, location: &LocationId) -> Result<()>;
    /// How many deletions of the copy of `digest` in `location` were counted.
    async fn removals(&self, digest: &Digest, location: &LocationId) -> Result<u64>;
    /// Blobs lacking a copy in some of `targets`, after `after`, at most `limit`.
    async fn missing_placements(
        &self,
        targets: &[LocationId],
        after: Option<&Digest>,
        limit: u64,
    ) -> Result<Vec<(BlobRecord, Vec<LocationId>)>>;
    /// Per-location figures for `locations`.
    async fn location_stats(&self, locations: &[LocationId]) -> Result<Vec<LocationStats>>;
    /// How many blobs have their only copy in `location`.
    async fn sole_copies(&self, location: &LocationId) -> Result<u64>;
    /// Forgets a location (see the trait's behaviour).
    async fn remove_location(&self, location: &LocationId, force: bool) -> Result<LocationRemoval>;
}

/// A manifest to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewManifest {
    /// The manifest itself.
    pub record: ManifestRecord,
    /// The tag to point at it, if pushed by tag.
    pub tag: Option<Tag>,
    /// The blobs of the repository it references (config and layers, foreign layers
    /// excepted): each must be linked into the repository, else the store refuses the manifest
    /// with `Conflict` (the link may have been collected since the caller checked).
    pub blobs: Vec<Digest>,
    /// The manifests of the repository it lists (an index's children): each must exist, else
    /// `Conflict`.
    pub children: Vec<Digest>,
}

/// Manifests, tags, referrers and the catalog.
///
/// # Behavior
///
/// - `put_manifest` is one transaction: the repository (created if new), the manifest (kept
///   when the same digest exists, its push time renewed), its references to blobs and child
///   manifests, and the tag (moved when it pointed elsewhere, the former target recorded in the
///   tag history).
/// - `get_manifest` resolves a tag or a digest within the repository.
/// - `delete_manifest` removes the manifest and every tag pointing at it.
/// - `list_tags` returns `None` for an unknown repository; pages are sorted and start after
///   `last`.
#[async_trait]
pub trait ManifestIndex: Send + Sync {
    /// Stores a manifest (and tag).
    async fn put_manifest(&self, repository: &RepositoryName, manifest: &NewManifest)
        -> Result<()>;
    /// Finds a manifest by tag or digest.
    async fn get_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>>;
    /// Deletes a manifest by digest with its tags. Returns false when it was not there.
    async fn delete_manifest(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool>;
    /// Deletes a tag. Returns false when it was not there.
    async fn delete_tag(&self, repository: &RepositoryName, tag: &Tag) -> Result<bool>;
    /// A page of the repository's tags.
    async fn list_tags(
        &self,
        repository: &RepositoryName,
        last: Option<&str>,
        limit: u64,
    ) -> Result<Option<Page>>;
    /// Manifests of the repository whose subject is `subject`.
    async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<ManifestRecord>>;
    /// A page of repository names.
    async fn catalog(&self, last: Option<&str>, limit: u64) -> Result<Page>;
}

/// Where the jobs a store records go: the outbox contract.
///
/// # Behavior
///
/// - `commit_blob` records one [`JobKind::Replicate`](crate::JobKind::Replicate) job per
///   location of `replicate_to` that lacks the blob, and `delete_blob_if_unreferenced` with
///   `enqueue_deletes` one [`JobKind::Delete`](crate::JobKind::Delete) job per former location,
///   in the same transaction as the write, into the queue `outbox` returns. A crash can
///   therefore never leave a blob whose copies nobody will make or remove.
/// - `outbox` returns that queue, or `None` for a store that records no jobs: the registry
///   then refuses to turn replication on (a store that silently dropped its jobs would never
///   replicate). A store that wraps another delegates `outbox` with the rest.
/// - When replication runs on another queue (Redis), a relay moves the outbox's jobs there;
///   the outbox is where they are recorded, never lost.
pub trait JobOutbox: Send + Sync {
    /// The queue that holds the jobs recorded with this store's commits and deletes.
    fn outbox(&self) -> Option<std::sync::Arc<dyn crate::JobQueue>>;
}

/// The whole metadata store.
pub trait MetadataStore:
    UploadStore
    + BlobIndex
    + ManifestIndex
    + PlacementIndex
    + JobOutbox
    + crate::gc::GarbageIndex
    + crate::repair::RepairIndex
    + std::fmt::Debug
{
}

impl<T> MetadataStore for T where
    T: UploadStore
        + BlobIndex
        + ManifestIndex
        + PlacementIndex
        + JobOutbox
        + crate::gc::GarbageIndex
        + crate::repair::RepairIndex
        + std::fmt::Debug
{
}
