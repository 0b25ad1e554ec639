//! What garbage collection asks of the metadata store: tag history (Quay's time machine),
//! the references each manifest holds, set-based collection of what nothing keeps alive, and
//! a lease so that one instance at a time runs a pass. The pass itself is
//! [`Registry::collect_garbage`](crate::Registry::collect_garbage).
//!
//! # What is alive
//!
//! In a repository, a manifest is **live** when
//! - a tag points at it, or pointed at it within the time-machine window
//!   (`DEFAULT_TAG_EXPIRATION`), or
//! - it was pushed (or pushed again) within `PUSH_TEMP_TAG_EXPIRATION_SEC`, or
//! - a live index lists it (an index keeps its children), or
//! - its subject is live (a referrer of a live image stays; a referrer keeps nothing alive).
//!
//! A blob's link into a repository is live while a manifest of that repository references the
//! blob, or while it was linked within `PUSH_TEMP_TAG_EXPIRATION_SEC` (a push in progress keeps
//! its layers). A blob with no link left in any repository, older than that too, is removed
//! with its placements, and a delete job per location removes its stored copies.

use std::time::Duration;

use async_trait::async_trait;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::{ManifestRecord, TimestampMs};
use crate::names::{LocationId, RepositoryName, Tag};

/// A former target of a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagHistoryEntry {
    /// The repository.
    pub repository: RepositoryName,
    /// The tag.
    pub tag: Tag,
    /// The manifest it pointed at.
    pub digest: Digest,
    /// When it stopped pointing there (moved or deleted).
    pub ended_at: TimestampMs,
}

/// The times that decide what a pass may collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcCutoffs {
    /// Tag history that ended before this has expired (now − the time-machine window).
    pub history_before: TimestampMs,
    /// Manifests pushed and blobs linked after this are protected (now −
    /// `PUSH_TEMP_TAG_EXPIRATION_SEC`).
    pub pushed_after: TimestampMs,
}

/// A blob removed from the metadata store by a collection pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The locations that held a copy (each gets a delete job).
    pub locations: Vec<LocationId>,
}

fn unsupported(what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("this metadata store does not support {what}"),
    )
}

/// Tag history and garbage collection in the metadata store.
///
/// # Behavior
///
/// - `put_manifest` moving a tag, `delete_tag`, and `restore_tag` record the tag's previous
///   target in the history, in the same transaction.
/// - `restore_tag` points the tag at a manifest it pointed at after `not_before`, when that
///   manifest still exists; it returns false otherwise.
/// - `collect_*` with `dry_run` change nothing and answer what a pass would remove now; without
///   it they remove it, and must stay correct against concurrent pushes: a manifest push that
///   references a blob the collector removes fails (`Conflict`), or the blob stays.
/// - The defaults answer [`ErrorKind::Unsupported`]: a store without them cannot collect.
#[async_trait]
pub trait GarbageIndex: Send + Sync {
    /// The history of `tag` (or of every tag) of `repository`, newest first, at most `limit`.
    async fn tag_history(
        &self,
        repository: &RepositoryName,
        tag: Option<&Tag>,
        limit: u64,
    ) -> Result<Vec<TagHistoryEntry>> {
        let _ = (repository, tag, limit);
        Err(unsupported("tag history"))
    }

    /// Points `tag` back at `digest`, if the tag pointed there after `not_before` and the
    /// manifest still exists.
    async fn restore_tag(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        not_before: TimestampMs,
    ) -> Result<bool> {
        let _ = (repository, tag, digest, not_before);
        Err(unsupported("tag history"))
    }

    /// Manifests whose references are not recorded yet (written by an older release), at most
    /// `limit`.
    async fn manifests_without_references(
        &self,
        limit: u64,
    ) -> Result<Vec<(RepositoryName, ManifestRecord)>> {
        let _ = limit;
        Err(unsupported("garbage collection"))
    }

    /// Records what a manifest references: blobs of the repository and child manifests. A
    /// reference whose blob link or child is missing is left out (it keeps nothing alive).
    async fn record_references(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        blobs: &[Digest],
        children: &[Digest],
    ) -> Result<()> {
        let _ = (repository, digest, blobs, children);
        Err(unsupported("garbage collection"))
    }

    /// Removes tag history that ended before `before`; returns how many entries.
    async fn expire_tag_history(&self, before: TimestampMs) -> Result<u64> {
        let _ = before;
        Err(unsupported("garbage collection"))
    }

    /// Manifests nothing keeps alive (see the [module docs](self)), removed unless `dry_run`.
    async fn collect_manifests(
        &self,
        cutoffs: GcCutoffs,
        dry_run: bool,
    ) -> Result<Vec<(RepositoryName, Digest)>> {
        let _ = (cutoffs, dry_run);
        Err(unsupported("garbage collection"))
    }

    /// Blob links no live manifest needs, removed unless `dry_run`.
    async fn collect_links(
        &self,
        cutoffs: GcCutoffs,
        dry_run: bool,
    ) -> Result<Vec<(RepositoryName, Digest)>> {
        let _ = (cutoffs, dry_run);
        Err(unsupported("garbage collection"))
    }

    /// Blobs no repository needs, removed with their placements (and a delete job per
    /// location recorded in the outbox) unless `dry_run`.
    async fn collect_blobs(&self, cutoffs: GcCutoffs, dry_run: bool) -> Result<Vec<CollectedBlob>> {
        let _ = (cutoffs, dry_run);
        Err(unsupported("garbage collection"))
    }

    /// Which of `digests` have a placement in `location` (or a replication job copying them
    /// there): the objects the orphan sweep must keep.
    async fn placed_digests(
        &self,
        location: &LocationId,
        digests: &[Digest],
    ) -> Result<Vec<Digest>> {
        let _ = (location, digests);
        Err(unsupported("garbage collection"))
    }

    /// Takes (or renews) the lease `name` for `holder` for `ttl`; false while another holder's
    /// lease is live.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let _ = (name, holder, ttl);
        Err(unsupported("leases"))
    }

    /// Gives the lease back, if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let _ = (name, holder);
        Err(unsupported("leases"))
    }
}
