//! Push-time durability (`QUAY_REPLICATION_DURABILITY`): with `quorum` or `all`, the final
//! `PUT` of a blob (and a mount) returns only once that many default locations hold it.
//!
//! The copies are made in the request, before anything is recorded, by the verified copy the
//! worker uses ([`copy_blob`]): streamed from the location the upload landed in, hashed on the
//! way, a sized write. The copies and the source's placement are then committed in one
//! transaction ([`BlobCommit::copies`](crate::metadata::BlobCommit::copies)). When too few
//! locations can be written, the push fails with `Unavailable` (`503`), the copies it made are
//! removed and nothing is recorded: no row, nothing served.
//!
//! Each copy is bounded by the storage timeout of its location (`QUAY_STORAGE_TIMEOUT_SECS`);
//! a location whose circuit is open is not tried at all.

use std::fmt;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use tracing::{debug, warn};

use super::copy::copy_blob;
use super::route::order_placements;
use super::{Registry, ReplicaOutcome};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::{BlobCommit, BlobRecord, PlacedCopy};
use crate::names::LocationId;
use crate::storage::StorageEngine;

/// How many default locations must hold a blob before its push is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The location the push landed in; the others are filled by the worker (the default).
    #[default]
    Async,
    /// A majority of the default locations (`n / 2 + 1`).
    Quorum,
    /// Every default location.
    All,
}

impl Durability {
    /// How many of `defaults` default locations must hold a blob.
    pub fn required(self, defaults: usize) -> usize {
        match self {
            Durability::Async => 1.min(defaults),
            Durability::Quorum => defaults / 2 + 1,
            Durability::All => defaults,
        }
        .min(defaults)
    }

    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Async => "async",
            Durability::Quorum => "quorum",
            Durability::All => "all",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Durability {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "async" => Ok(Durability::Async),
            "quorum" => Ok(Durability::Quorum),
            "all" => Ok(Durability::All),
            other => Err(Error::new(
                ErrorKind::Config,
                format!("durability {other:?}: expected async, quorum or all"),
            )),
        }
    }
}

/// Why a written blob was not committed by [`Registry::commit_written`].
pub(super) struct NotCommitted {
    /// What went wrong.
    pub(super) error: Error,
    /// Whether push-time durability failed (before the commit was tried): the upload session
    /// is of no further use then, whereas after a failed commit the client may retry it.
    pub(super) before_commit: bool,
}

impl Registry {
    /// Where `digest` is held, and its [`removals`](crate::PlacementIndex::removals) in
    /// `location`, read before anything is decided from the placements or written: a delete
    /// job that removes a former copy of the blob there from then on refuses the commit (the
    /// object, found or written, may be gone). See `BlobCommit::removals_seen`. One round trip
    /// where the store reads both at once; otherwise the removals first, then the blob. A push
    /// waits for nobody: this read is not grouped with others (see `blob_with_removals`).
    pub(super) async fn holders_and_removals(
        &self,
        digest: &Digest,
        location: &LocationId,
    ) -> Result<(Vec<LocationId>, u64)> {
        let metadata = &self.inner.metadata;
        let (blob, removals) = metadata
            .get_blobs_with_removals(&[(digest.clone(), location.clone())])
            .await?
            .pop()
            .unwrap_or((None, None));
        let (blob, removals) = match removals {
            Some(n) => (blob, n),
            None => {
                let n = metadata.removals(digest, location).await?;
                (metadata.get_blob(digest).await?, n)
            }
        };
        Ok((blob.map(|b| b.locations).unwrap_or_default(), removals))
    }

    /// Commits a blob that is stored at its content-addressed path in `commit.location`:
    /// first the copies push-time durability asks for (given that `held` hold the blob
    /// already), then one transaction with the blob, its placement and those copies. When
    /// anything fails, what this push stored and nothing recorded is taken back: the copies,
    /// and the object in `commit.location` when `wrote_here`.
    pub(super) async fn commit_written(
        &self,
        mut commit: BlobCommit,
        held: &[LocationId],
        wrote_here: bool,
    ) -> std::result::Result<(), NotCommitted> {
        let digest = &commit.digest;
        match self
            .make_durable(digest, commit.size, &commit.location, held)
            .await
        {
            Ok(copies) => commit.copies = copies,
            Err(error) => {
                if wrote_here {
                    self.take_back(digest, &commit.location).await;
                }
                return Err(NotCommitted {
                    error,
                    before_commit: true,
                });
            }
        }
        if let Err(error) = self.inner.metadata.commit_blob(&commit).await {
            // `take_back` leaves anything that did get recorded (an ambiguous commit).
            for copy in &commit.copies {
                self.take_back(&commit.digest, &copy.location).await;
            }
            return Err(NotCommitted {
                error,
                before_commit: false,
            });
        }
        Ok(())
    }

    /// Makes the copies that push-time durability asks for, of the blob `digest` of `size`
    /// bytes that `source` holds at its content-addressed path, given that `held` hold it
    /// already. Returns the copies made (to commit with the blob). When too few locations
    /// could be written, the copies made are removed and the error is
    /// [`ErrorKind::Unavailable`].
    pub(super) async fn make_durable(
        &self,
        digest: &Digest,
        size: u64,
        source: &LocationId,
        held: &[LocationId],
    ) -> Result<Vec<PlacedCopy>> {
        let config = &self.inner.config;
        let defaults = &config.default_locations;
        if config.durability == Durability::Async || !config.replication || defaults.is_empty() {
            return Ok(Vec::new());
        }
        let need = config.durability.required(defaults.len());
        let have = defaults
            .iter()
            .filter(|l| *l == source || held.contains(l))
            .count();
        if have >= need {
            return Ok(Vec::new());
        }
        let source_storage = self.location(source)?.clone();
        // The locations to copy to, nearest first.
        let lacking: Vec<LocationId> = defaults
            .iter()
            .filter(|l| *l != source && !held.contains(l))
            .cloned()
            .collect();
        let mut candidates = order_placements(&config.preference, &lacking).into_iter();
        let mut made: Vec<PlacedCopy> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut running = FuturesUnordered::new();
        loop {
            // Keep as many copies running as are still needed.
            while have + made.len() + running.len() < need {
                let Some(target) = candidates.next() else {
                    break;
                };
                if !self.inner.health.allow(&target) {
                    failures.push(format!("{target}: down"));
                    continue;
                }
                let Ok(target_storage) = self.location(&target).cloned() else {
                    failures.push(format!("{target}: not configured on this instance"));
                    continue;
                };
                running.push(self.durable_copy(
                    source_storage.clone(),
                    target_storage,
                    target,
                    digest,
                    size,
                ));
            }
            match running.next().await {
                None => break,
                Some(Ok(copy)) => made.push(copy),
                Some(Err((target, e))) => failures.push(format!("{target}: {e}")),
            }
        }
        if have + made.len() >= need {
            debug!(%digest, copies = made.len(), durability = %config.durability, "push made durable");
            return Ok(made);
        }
        for copy in &made {
            self.take_back(digest, &copy.location).await;
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "push-time durability ({}) needs {need} of the {} default locations to hold \
                 {digest}, only {} could: {}; nothing was stored, push again later",
                config.durability,
                defaults.len(),
                have + made.len(),
                failures.join("; ")
            ),
        ))
    }

    /// Push-time durability of a mount: the blob exists (and is visible in other repositories)
    /// already, so copies are made and recorded one by one by [`Registry::replicate_blob`]
    /// until enough default locations hold it; else [`ErrorKind::Unavailable`] and the caller
    /// links nothing.
    pub(super) async fn mount_durable(&self, blob: &BlobRecord) -> Result<()> {
        let config = &self.inner.config;
        let defaults = &config.default_locations;
        if config.durability == Durability::Async || !config.replication || defaults.is_empty() {
            return Ok(());
        }
        let need = config.durability.required(defaults.len());
        let mut have = defaults
            .iter()
            .filter(|l| blob.locations.contains(l))
            .count();
        let lacking: Vec<LocationId> = defaults
            .iter()
            .filter(|l| !blob.locations.contains(l))
            .cloned()
            .collect();
        let mut failures: Vec<String> = Vec::new();
        for target in order_placements(&config.preference, &lacking) {
            if have >= need {
                break;
            }
            match self.replicate_blob(&blob.digest, &target, false).await {
                Ok(ReplicaOutcome::Copied { .. }) => have += 1,
                Ok(ReplicaOutcome::Noop) => {
                    // In place already, or the blob was deleted meanwhile.
                    match self.inner.metadata.get_blob(&blob.digest).await? {
                        Some(b) if b.locations.contains(&target) => have += 1,
                        Some(_) => failures.push(format!("{target}: not copied")),
                        None => {
                            return Err(Error::new(
                                ErrorKind::BlobUnknown,
                                format!("{} was removed meanwhile", blob.digest),
                            ))
                        }
                    }
                }
                Ok(ReplicaOutcome::Deferred(why)) => failures.push(format!("{target}: {why}")),
                Ok(ReplicaOutcome::Deleted) => failures.push(format!("{target}: not copied")),
                Err(e) => failures.push(format!("{target}: {e}")),
            }
        }
        if have >= need {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "push-time durability ({}) needs {need} of the {} default locations to hold \
                 {}, only {have} could: {}; the mount was not made, try again later",
                config.durability,
                defaults.len(),
                blob.digest,
                failures.join("; ")
            ),
        ))
    }

    /// One verified copy for durability, with the removal count read before it was written.
    async fn durable_copy(
        &self,
        source: Arc<dyn StorageEngine>,
        target_storage: Arc<dyn StorageEngine>,
        target: LocationId,
        digest: &Digest,
        size: u64,
    ) -> std::result::Result<PlacedCopy, (LocationId, Error)> {
        let removals_seen = match self.inner.metadata.removals(digest, &target).await {
            Ok(n) => n,
            Err(e) => return Err((target, e)),
        };
        match copy_blob(&source, &target_storage, digest, size, false).await {
            Ok(()) => Ok(PlacedCopy {
                location: target,
                removals_seen,
            }),
            Err(e) => Err((target, e.into_inner())),
        }
    }

    /// Removes a copy that a failed push wrote in `location` and will not record. Counted as a
    /// removal, so that a copy of the same blob recorded meanwhile by someone else (which may
    /// be the object just deleted) is refused and made again.
    pub(super) async fn take_back(&self, digest: &Digest, location: &LocationId) {
        let recorded = match self.inner.metadata.get_blob(digest).await {
            Ok(b) => b.is_some_and(|b| b.locations.contains(location)),
            Err(_) => true,
        };
        if recorded {
            return;
        }
        let Ok(storage) = self.location(location) else {
            return;
        };
        match storage.delete(&digest.object_path()).await {
            Ok(()) => {
                if let Err(e) = self
                    .inner
                    .metadata
                    .record_removed_copy(digest, location)
                    .await
                {
                    warn!(%digest, %location, error = %e, "could not count the removal of an unrecorded copy");
                }
            }
            Err(e) => {
                warn!(%digest, %location, error = %e, "could not remove an unrecorded copy; the orphan sweep will")
            }
        }
    }
}
