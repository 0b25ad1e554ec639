//! Bad copies: what a read or the scrubber does when a stored copy is missing or corrupt, the
//! check of one copy, and the repair through the verified copy path.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `quay_storage_bad_copies_total` | counter | `location`, `problem` | copies found missing or corrupt |
//! | `quay_storage_unrecoverable_copies_total` | counter | `location` | bad copies of blobs with no other copy |
//! | `quay_storage_repairs_total` | counter | `location` | bad copies replaced by a verified copy |

use futures::StreamExt;
use tracing::{error, info, warn};

use super::Registry;
use crate::digest::{Digest, DigestHasher};
use crate::error::{ErrorKind, Result};
use crate::names::LocationId;
use crate::queue::{JobKind, JobSpec};
use crate::repair::CopyProblem;

/// What checking one stored copy found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyCheck {
    /// The object is there with the blob's size and digest.
    Good,
    /// Not there, or not the blob's bytes.
    Bad(CopyProblem),
}

impl Registry {
    /// Records that the copy of `digest` in `location` is missing or corrupt, and repairs it
    /// through the queue: while another location holds the blob, this location's placement is
    /// dropped (reads stop trying it), a corrupt object is deleted, and a replication job copies
    /// a good one back. A blob whose only copy is bad is reported loudly (log, metric, the
    /// problem list of status reports). Returns whether the copy can be repaired.
    pub async fn report_bad_copy(
        &self,
        digest: &Digest,
        location: &LocationId,
        problem: CopyProblem,
    ) -> Result<bool> {
        let meta = &self.inner.metadata;
        metrics::counter!("quay_storage_bad_copies_total",
            "location" => location.to_string(), "problem" => problem.as_str())
        .increment(1);
        let recoverable = meta.record_bad_copy(digest, location, problem).await?;
        if !recoverable {
            metrics::counter!("quay_storage_unrecoverable_copies_total",
                "location" => location.to_string())
            .increment(1);
            error!(%digest, %location, problem = problem.as_str(),
                "the only copy of a blob is bad: the blob cannot be served or repaired");
            return Ok(false);
        }
        warn!(%digest, %location, problem = problem.as_str(), "bad copy found; repairing it");
        if problem == CopyProblem::Corrupt {
            let storage = self.location(location)?;
            storage.delete(&digest.object_path()).await?;
            // A copy being written back right now started before this delete: it is refused
            // and retried (see `PlacementIndex::add_placement`).
            meta.record_removed_copy(digest, location).await?;
        }
        if let Some(queue) = &self.inner.queue {
            let job = JobSpec {
                kind: JobKind::Replicate,
                digest: digest.clone(),
                target: location.clone(),
            };
            queue.enqueue(&[job]).await?;
        }
        Ok(true)
    }

    /// [`Registry::report_bad_copy`] from a read: its failure is logged, never the read's.
    pub(super) async fn bad_copy_found(
        &self,
        digest: &Digest,
        location: &LocationId,
        problem: CopyProblem,
    ) {
        if let Err(e) = self.report_bad_copy(digest, location, problem).await {
            warn!(%digest, %location, error = %e, "could not record a bad copy");
        }
    }

    /// Reads the copy of `digest` (of `size` bytes) in `location` and checks its size and
    /// sha256. `pace` is told of each chunk's length before the next is read (a rate limit).
    pub async fn check_copy<F, Fut>(
        &self,
        digest: &Digest,
        size: u64,
        location: &LocationId,
        mut pace: F,
    ) -> Result<CopyCheck>
    where
        F: FnMut(u64) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let storage = self.location(location)?;
        let mut stream = match storage.read(&digest.object_path(), None).await {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(CopyCheck::Bad(CopyProblem::Missing))
            }
            Err(e) => return Err(e),
        };
        let mut hasher = DigestHasher::new(digest.algorithm());
        let mut seen = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Ok(CopyCheck::Bad(CopyProblem::Missing))
                }
                Err(e) => return Err(e),
            };
            seen += chunk.len() as u64;
            if seen > size {
                return Ok(CopyCheck::Bad(CopyProblem::Corrupt));
            }
            hasher.update(&chunk);
            pace(chunk.len() as u64).await;
        }
        Ok(if seen == size && &hasher.finish() == digest {
            CopyCheck::Good
        } else {
            CopyCheck::Bad(CopyProblem::Corrupt)
        })
    }

    /// Replaces a bad copy now, through the verified copy path, after
    /// [`Registry::report_bad_copy`] dropped its placement. Returns whether the location holds
    /// a verified copy again.
    pub async fn repair_copy(&self, digest: &Digest, location: &LocationId) -> Result<bool> {
        match self.replicate_blob(digest, location, false).await? {
            super::ReplicaOutcome::Copied { source, .. } => {
                metrics::counter!("quay_storage_repairs_total", "location" => location.to_string())
                    .increment(1);
                info!(%digest, %location, %source, "bad copy replaced by a verified copy");
                Ok(true)
            }
            super::ReplicaOutcome::Noop => Ok(true),
            other => {
                warn!(%digest, %location, outcome = ?other, "repair deferred");
                Ok(false)
            }
        }
    }

    /// Rereads which locations are drained (from the metadata store, shared by every
    /// instance); the background runner calls it with the health probes.
    pub async fn refresh_drained(&self) -> Result<()> {
        let drained = self.inner.metadata.drained_locations().await?;
        let mut set = match self.inner.drained.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        set.clear();
        set.extend(drained);
        Ok(())
    }

    /// Whether `location` is drained (as last read).
    pub fn is_drained(&self, location: &LocationId) -> bool {
        match self.inner.drained.read() {
            Ok(g) => g.contains(location),
            Err(p) => p.into_inner().contains(location),
        }
    }
}
