//! What repairs ask of the metadata store: recording a stored copy found missing or corrupt
//! (by a read or by the scrubber), dropping its placement while a good copy exists elsewhere,
//! and the list of problems for status reports. The repair itself is
//! [`Registry::report_bad_copy`](crate::Registry::report_bad_copy) and the scrub
//! [`Registry::scrub_location`](crate::Registry::scrub_location).

use async_trait::async_trait;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::TimestampMs;
use crate::names::LocationId;

/// What is wrong with a stored copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyProblem {
    /// The object is not there.
    Missing,
    /// The object's size or sha256 is not the blob's.
    Corrupt,
}

impl CopyProblem {
    /// `missing` or `corrupt`.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyProblem::Missing => "missing",
            CopyProblem::Corrupt => "corrupt",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<CopyProblem> {
        match s {
            "missing" => Some(CopyProblem::Missing),
            "corrupt" => Some(CopyProblem::Corrupt),
            _ => None,
        }
    }
}

/// A copy found bad and not repaired yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadCopy {
    /// The blob.
    pub digest: Digest,
    /// Where its copy is bad.
    pub location: LocationId,
    /// What is wrong.
    pub problem: CopyProblem,
    /// When it was found.
    pub found_at: TimestampMs,
    /// Whether another location held a placement when it was found (else the blob may be
    /// lost).
    pub recoverable: bool,
}

fn unsupported() -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "this metadata store does not record copy problems",
    )
}

/// Copy problems and repairs in the metadata store.
///
/// # Behavior
///
/// - `record_bad_copy` notes a problem (once per blob and location; a later finding replaces
///   it) and, when another location holds a placement of the blob, removes this location's
///   placement in the same transaction, so that reads stop trying it and replication copies a
///   good one back. It returns whether it removed the placement; a sole placement is kept (the
///   blob has no other copy) and the problem marked unrecoverable.
/// - `resolve_bad_copy` forgets a problem once the location holds a verified copy again.
/// - `bad_copies` lists problems not resolved, oldest first.
/// - The defaults answer [`ErrorKind::Unsupported`].
#[async_trait]
pub trait RepairIndex: Send + Sync {
    /// Notes a bad copy; see the trait's behaviour.
    async fn record_bad_copy(
        &self,
        digest: &Digest,
        location: &LocationId,
        problem: CopyProblem,
    ) -> Result<bool> {
        let _ = (digest, location, problem);
        Err(unsupported())
    }

    /// Forgets the problem of a copy that was repaired.
    async fn resolve_bad_copy(&self, digest: &Digest, location: &LocationId) -> Result<()> {
        let _ = (digest, location);
        Err(unsupported())
    }

    /// Problems not resolved, oldest first, at most `limit`.
    async fn bad_copies(&self, limit: u64) -> Result<Vec<BadCopy>> {
        let _ = limit;
        Err(unsupported())
    }

    /// The blobs with a placement in `location`, by digest after `after`, at most `limit`,
    /// with their sizes: what a scrub of the location reads.
    async fn placed_blobs(
        &self,
        location: &LocationId,
        after: Option<&Digest>,
        limit: u64,
    ) -> Result<Vec<(Digest, u64)>> {
        let _ = (location, after, limit);
        Err(unsupported())
    }

    /// Marks `location` drained (no new blob is written there; reads prefer other holders;
    /// replication into it goes on) or not.
    async fn set_drained(&self, location: &LocationId, drained: bool) -> Result<()> {
        let _ = (location, drained);
        Err(unsupported())
    }

    /// The drained locations.
    async fn drained_locations(&self) -> Result<Vec<LocationId>> {
        Ok(Vec::new())
    }
}
