//! Making and removing copies of a blob in a location: what a replication job does, as one
//! operation of the engine (the worker, repairs and push-time durability call it).

use tracing::warn;

use super::copy::{copy_blob, CopyError};
use super::{Registry, Slot, Slots};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::health::is_outage;
use crate::metadata::{BlobRecord, PlacementToAdd};
use crate::names::LocationId;

/// Blobs smaller than this are copied two at a time per copy slot (see [`CopySlots`]).
pub const SMALL_COPY_BYTES: u64 = 1 << 20;

/// A worker's copies in flight: `copies` copies of large blobs, or twice as many copies of
/// blobs under [`SMALL_COPY_BYTES`]. A small copy is two short requests whose time is spent on
/// round trips, not bandwidth, so it takes half a slot; a copy holds its slot only while its
/// bytes move.
#[derive(Debug)]
pub struct CopySlots {
    halves: Slots,
}

impl CopySlots {
    /// Room for `copies` large copies (at least one) at once.
    pub fn new(copies: usize) -> Self {
        CopySlots {
            halves: Slots::new(copies.max(1) * 2),
        }
    }

    /// Copies of large blobs this allows at once.
    pub fn copies(&self) -> usize {
        self.halves.count() / 2
    }

    /// Waits for room for a copy of a `size`-byte blob and takes it (given back when the
    /// returned slot is dropped).
    pub async fn take(&self, size: u64) -> Result<Slot> {
        let halves = if size < SMALL_COPY_BYTES { 1 } else { 2 };
        self.halves.take_many(halves).await
    }
}

/// What a copy of a blob into a location starts from: the blob's record and the count of
/// removals of former copies there, read before the copy (see
/// [`Registry::read_before_copies`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeforeCopy {
    /// The blob with its placements; `None` when it is unknown (deleted meanwhile).
    pub record: Option<BlobRecord>,
    /// [`PlacementIndex::removals`](crate::PlacementIndex::removals) in the target, when the
    /// store read it with the record (`None`: the copy asks for it itself).
    pub removals: Option<u64>,
}

/// What a replication or removal came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaOutcome {
    /// A location it needs is down: try again later, without counting an attempt.
    Deferred(String),
    /// A copy was made, verified and recorded.
    Copied {
        /// The location read from.
        source: LocationId,
        /// Bytes copied.
        bytes: u64,
    },
    /// A stored copy was deleted.
    Deleted,
    /// Nothing to do (the blob was deleted meanwhile, or is already in place).
    Noop,
}

impl Registry {
    /// [`BlobIndex::get_blobs_with_removals`] of one blob, read together with those that other
    /// tasks of this process read at the same time (see `group`).
    ///
    /// [`BlobIndex::get_blobs_with_removals`]: crate::BlobIndex::get_blobs_with_removals
    pub(super) async fn blob_with_removals(
        &self,
        digest: &Digest,
        location: &LocationId,
    ) -> Result<BeforeCopy> {
        self.inner
            .reads
            .submit((digest.clone(), location.clone()), |batch| {
                let metadata = self.inner.metadata.clone();
                async move {
                    match metadata.get_blobs_with_removals(&batch).await {
                        Ok(found) => found
                            .into_iter()
                            .map(|(record, removals)| Ok(BeforeCopy { record, removals }))
                            .collect(),
                        Err(e) => batch.iter().map(|_| Err(e.duplicate())).collect(),
                    }
                }
            })
            .await
    }

    /// What copies of each `(digest, target)` start from, read in one go (one statement on
    /// the SQL store): a worker reads them for a whole claim of jobs and hands each to
    /// [`replicate_blob_in`](Self::replicate_blob_in), instead of each job reading its own.
    /// Answers are in the order asked.
    pub async fn read_before_copies(
        &self,
        wanted: &[(Digest, LocationId)],
    ) -> Result<Vec<BeforeCopy>> {
        let found = self.inner.metadata.get_blobs_with_removals(wanted).await?;
        if found.len() != wanted.len() {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "the metadata store answered {} of {} blob reads",
                    found.len(),
                    wanted.len()
                ),
            ));
        }
        Ok(found
            .into_iter()
            .map(|(record, removals)| BeforeCopy { record, removals })
            .collect())
    }

    /// Records a verified copy ([`PlacementIndex::add_placement`]) together with those that
    /// other tasks of this process record at the same time: one transaction for all of them
    /// (see `group`), so that many small copies do not each pay a commit.
    ///
    /// [`PlacementIndex::add_placement`]: crate::PlacementIndex::add_placement
    pub(super) async fn record_copy(&self, copy: PlacementToAdd) -> Result<bool> {
        self.inner
            .placements
            .submit(copy, |batch| {
                let metadata = self.inner.metadata.clone();
                async move { metadata.add_placements(&batch).await }
            })
            .await
    }

    /// Copies `digest` into `target` from the nearest healthy location holding it, verified
    /// on the way ([`copy_blob`]), and records the placement. A holder that fails or holds a
    /// corrupt copy is passed over for the next; when the target or every holder is down, the
    /// outcome is [`ReplicaOutcome::Deferred`]. With `readback`, the copy is read back too.
    pub async fn replicate_blob(
        &self,
        digest: &Digest,
        target: &LocationId,
        readback: bool,
    ) -> Result<ReplicaOutcome> {
        self.replicate_blob_in(digest, target, readback, None, None)
            .await
    }

    /// [`replicate_blob`](Self::replicate_blob), where each copy first takes room in
    /// `copy_slots` (when given) and gives it back as soon as its bytes are written: the
    /// database reads and writes around the copy do not hold a slot, so a worker that runs more
    /// jobs than slots keeps its copies in flight while the database works.
    ///
    /// `before` is what the copy starts from when the caller read it already
    /// ([`read_before_copies`](Self::read_before_copies)); it must have been read after the
    /// job was claimed, and recently. A record read earlier may miss a removal (which only
    /// makes the placement refused, and the copy taken back out) or a copy made meanwhile
    /// (which makes the job copy again). The two answers that would end the job without a
    /// copy (the blob is unknown; the target holds it) are read again here, since the blob
    /// may have been pushed again, or the target's copy removed, since. Without `before` the
    /// record is read here.
    pub async fn replicate_blob_in(
        &self,
        digest: &Digest,
        target: &LocationId,
        readback: bool,
        copy_slots: Option<&CopySlots>,
        before: Option<BeforeCopy>,
    ) -> Result<ReplicaOutcome> {
        let before = match before {
            Some(before)
                if before
                    .record
                    .as_ref()
                    .is_some_and(|b| !b.locations.contains(target)) =>
            {
                before
            }
            _ => self.blob_with_removals(digest, target).await?,
        };
        let BeforeCopy {
            record: blob,
            removals: mut removals_read,
        } = before;
        let Some(blob) = blob else {
            return Ok(ReplicaOutcome::Noop);
        };
        if blob.locations.contains(target) {
            return Ok(ReplicaOutcome::Noop);
        }
        if !self.inner.health.allow(target) {
            return Ok(ReplicaOutcome::Deferred(format!("target {target} is down")));
        }
        let target_storage = self.location(target)?.clone();
        let mut route = self.route(&blob, Some(target));
        let mut last: Option<Error> = None;
        for (source, source_storage) in route.by_ref() {
            // Read before each copy (the first one's came with the blob, when the store could).
            let removals_seen = match removals_read.take() {
                Some(n) => n,
                None => self.inner.metadata.removals(digest, target).await?,
            };
            let slot = match copy_slots {
                Some(slots) => Some(slots.take(blob.size).await?),
                None => None,
            };
            let copied = copy_blob(
                &source_storage,
                &target_storage,
                digest,
                blob.size,
                readback,
            )
            .await;
            drop(slot);
            match copied {
                Ok(()) => {
                    let placed = self
                        .record_copy(PlacementToAdd {
                            digest: digest.clone(),
                            location: target.clone(),
                            removals_seen,
                        })
                        .await?;
                    if !placed {
                        // Deleted while we copied: take the copy back out.
                        let _ = target_storage.delete(&digest.object_path()).await;
                        return Ok(ReplicaOutcome::Noop);
                    }
                    return Ok(ReplicaOutcome::Copied {
                        source,
                        bytes: blob.size,
                    });
                }
                Err(CopyError::Target(e)) => {
                    if is_outage(&e) {
                        return Ok(ReplicaOutcome::Deferred(format!(
                            "target {target} failed: {e}"
                        )));
                    }
                    return Err(e.with_context("target", target));
                }
                Err(CopyError::Source(e)) => {
                    warn!(%digest, %source, %target, error = %e, "copy failed; trying another holder");
                    last = Some(e.with_context("source", &source));
                }
            }
        }
        let down = route.skipped().to_vec();
        if last.is_none() && !down.is_empty() {
            let names: Vec<&str> = down.iter().map(|l| l.as_str()).collect();
            return Ok(ReplicaOutcome::Deferred(format!(
                "every holder is down: {}",
                names.join(", ")
            )));
        }
        if let Some(e) = &last {
            if is_outage(e) && !down.is_empty() {
                return Ok(ReplicaOutcome::Deferred(format!(
                    "holders down or failing: {e}"
                )));
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("no configured location holds {digest}"),
            )
        }))
    }

    /// Deletes the copy of a removed blob from `target`; a no-op when the blob was pushed
    /// again and `target` holds it; deferred while `target` is down.
    pub async fn remove_copy(
        &self,
        digest: &Digest,
        target: &LocationId,
    ) -> Result<ReplicaOutcome> {
        // The blob may have been pushed again since: then its copy is needed.
        if let Some(blob) = self.inner.metadata.get_blob(digest).await? {
            if blob.locations.contains(target) {
                return Ok(ReplicaOutcome::Noop);
            }
        }
        if !self.inner.health.allow(target) {
            return Ok(ReplicaOutcome::Deferred(format!("target {target} is down")));
        }
        match self.location(target)?.delete(&digest.object_path()).await {
            Ok(()) => {
                // A push of the blob that wrote this object meanwhile learns of the removal
                // (see `PlacementIndex::add_placement`) and is refused, then retried.
                self.inner
                    .metadata
                    .record_removed_copy(digest, target)
                    .await?;
                Ok(ReplicaOutcome::Deleted)
            }
            Err(e) if is_outage(&e) => Ok(ReplicaOutcome::Deferred(format!(
                "target {target} failed: {e}"
            ))),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn small_copies_take_half_a_slot() {
        let slots = CopySlots::new(2);
        assert_eq!(slots.copies(), 2);
        let large = slots.take(SMALL_COPY_BYTES).await.unwrap();
        let small = [
            slots.take(SMALL_COPY_BYTES - 1).await.unwrap(),
            slots.take(0).await.unwrap(),
        ];
        assert!(
            slots.take(1).now_or_never().is_none(),
            "one large and two small copies fill two slots"
        );
        drop(small);
        assert!(
            slots.take(SMALL_COPY_BYTES).now_or_never().is_some(),
            "two small copies free a slot for a large one"
        );
        drop(large);
    }
}
