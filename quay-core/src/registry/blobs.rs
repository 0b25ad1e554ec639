//! Blob reads (routed to the closest location that holds the blob), stats and deletes.

use std::ops::Range;

use futures::StreamExt;
use tracing::{debug, instrument, warn};

use super::Registry;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::BlobRecord;
use crate::names::{LocationId, RepositoryName};
use crate::queue::{JobKind, JobSpec};
use crate::range::ByteRange;
use crate::repair::CopyProblem;
use crate::storage::ByteStream;

/// How a blob's bytes reach the client.
pub enum BlobBody {
    /// Streamed through this instance from `location`.
    Stream {
        /// The location read from.
        location: LocationId,
        /// The bytes (of the range, if one was asked).
        stream: ByteStream,
    },
    /// Fetched by the client from a presigned URL of `location`.
    Redirect {
        /// The location the URL points into.
        location: LocationId,
        /// The presigned URL.
        url: String,
    },
}

impl std::fmt::Debug for BlobBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobBody::Stream { location, .. } => write!(f, "Stream({location})"),
            // The URL carries a signature: keep it out of logs.
            BlobBody::Redirect { location, .. } => write!(f, "Redirect({location})"),
        }
    }
}

/// A blob read: its size, the byte range served (if partial) and the body.
#[derive(Debug)]
pub struct BlobRead {
    /// The blob's digest.
    pub digest: Digest,
    /// The whole blob's size.
    pub size: u64,
    /// The half-open range served, when a range was asked.
    pub range: Option<Range<u64>>,
    /// The bytes, or where to fetch them.
    pub body: BlobBody,
}

fn blob_unknown(digest: &Digest) -> Error {
    Error::new(
        ErrorKind::BlobUnknown,
        format!("blob {digest} is not known to this repository"),
    )
}

impl Registry {
    /// A blob's record (size and placements) from the metadata store alone.
    pub async fn stat_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobRecord> {
        self.inner
            .metadata
            .repository_blob(repository, digest)
            .await?
            .ok_or_else(|| blob_unknown(digest))
    }

    /// The order in which this instance reads the locations holding `blob` (whatever their
    /// health; [`Registry::route`] skips those that are down).
    pub fn read_order(&self, blob: &BlobRecord) -> Vec<LocationId> {
        super::route::order_placements(&self.inner.config.preference, &blob.locations)
    }

    /// Opens a blob for reading from the closest location that holds it, trying the next one
    /// when a location fails. A `range` that cannot be satisfied is
    /// [`ErrorKind::RangeInvalid`]; when no location can serve it, [`ErrorKind::Unavailable`].
    #[instrument(skip(self), fields(repository = %repository, digest = %digest))]
    pub async fn read_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead> {
        let blob = self.stat_blob(repository, digest).await?;
        self.want_local_copy(digest, &blob).await;
        let range = match range {
            Some(r) => Some(r.resolve(blob.size)?),
            None => None,
        };
        let path = digest.object_path();
        let mut last_error: Option<Error> = None;
        let mut route = self.route(&blob, None);
        for (location, storage) in route.by_ref() {
            // Redirect only into a location that is up and whose latest probe passed (never as
            // a recovery trial), and only once the object is known to be there: a copy lost
            // behind the registry's back is passed over, not handed to the client as a 404.
            let redirect = !self.inner.config.proxy_storage
                && storage.capabilities().presign
                && range.is_none()
                && self.inner.health.may_redirect(&location);
            if redirect {
                match storage.stat(&path).await {
                    Ok(meta) if meta.size == blob.size => {}
                    Ok(_) => {
                        self.bad_copy_found(digest, &location, CopyProblem::Corrupt)
                            .await;
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        self.bad_copy_found(digest, &location, CopyProblem::Missing)
                            .await;
                        continue;
                    }
                    Err(e) => {
                        warn!(%location, error = %e, "blob stat failed, trying the next location");
                        last_error = Some(e.with_context("location", &location));
                        continue;
                    }
                }
                match storage
                    .presign_read(&path, self.inner.config.presign_expiry)
                    .await
                {
                    Ok(url) => {
                        return Ok(BlobRead {
                            digest: digest.clone(),
                            size: blob.size,
                            range,
                            body: BlobBody::Redirect { location, url },
                        })
                    }
                    Err(e) => {
                        warn!(%location, error = %e, "presign failed, trying the next location");
                        last_error = Some(e);
                        continue;
                    }
                }
            }
            // Streamed through this instance (a server-side recovery trial, when the location
            // was down); the location's health layer counts the outcome.
            match open_checked(storage.read(&path, range.clone()).await, blob.size == 0).await {
                Ok(stream) => {
                    // A whole blob is verified as it streams: the last chunk is held back until
                    // size and digest are checked, so a corrupt copy is never served whole.
                    let stream = match &range {
                        Some(_) => stream,
                        None => self.verified(stream, digest, blob.size, &location),
                    };
                    return Ok(BlobRead {
                        digest: digest.clone(),
                        size: blob.size,
                        range,
                        body: BlobBody::Stream { location, stream },
                    });
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    warn!(%location, "a placed copy is missing, trying the next location");
                    self.bad_copy_found(digest, &location, CopyProblem::Missing)
                        .await;
                    last_error = Some(e.with_context("location", &location));
                }
                Err(e) => {
                    warn!(%location, error = %e, "blob read failed, trying the next location");
                    last_error = Some(e.with_context("location", &location));
                }
            }
        }
        let skipped = route.skipped().to_vec();
        let mut message =
            format!("blob {digest} could not be read from any storage location that holds it");
        if !skipped.is_empty() {
            let names: Vec<&str> = skipped.iter().map(|l| l.as_str()).collect();
            message.push_str(&format!("; down: {}", names.join(", ")));
        }
        let mut err = Error::new(ErrorKind::Unavailable, message);
        if let Some(e) = last_error {
            err = err.with_source(e);
        }
        Err(err)
    }

    /// A pull of `blob` is about to be served from afar because this instance's own location
    /// (its first preference) lacks it: the pending job that copies it there goes to the
    /// front of the queue, so that the next pull is local. Best effort: a queue that cannot
    /// prioritize, or fails to, leaves the job where it is and the pull goes on.
    async fn want_local_copy(&self, digest: &Digest, blob: &BlobRecord) {
        let config = &self.inner.config;
        let Some(own) = config.preference.first() else {
            return;
        };
        if !config.replication
            || blob.locations.contains(own)
            || !config.default_locations.contains(own)
        {
            return;
        }
        let Some(queue) = &self.inner.queue else {
            return;
        };
        let job = JobSpec {
            kind: JobKind::Replicate,
            digest: digest.clone(),
            target: own.clone(),
        };
        match queue.prioritize(std::slice::from_ref(&job)).await {
            Ok(moved) => debug!(%digest, location = %own, moved,
                                "pull served from afar: local copy prioritized"),
            Err(e) if e.kind() == ErrorKind::Unsupported => {}
            Err(e) => warn!(%digest, location = %own, error = %e,
                            "cannot prioritize the local copy of a pulled blob"),
        }
    }

    /// Removes a blob from a repository. When no repository links it any more, its records and
    /// stored copies are deleted.
    #[instrument(skip(self), fields(repository = %repository, digest = %digest))]
    pub async fn delete_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<()> {
        if !self.inner.metadata.unlink_blob(repository, digest).await? {
            return Err(blob_unknown(digest));
        }
        let queued = self.inner.config.replication;
        let former = self
            .inner
            .metadata
            .delete_blob_if_unreferenced(digest, queued)
            .await?;
        // With replication on, delete jobs were recorded with the removal; the worker deletes
        // the copies and retries while a location is unreachable.
        if let Some(locations) = former.filter(|_| !queued) {
            let path = digest.object_path();
            for location in locations {
                match self.location(&location) {
                    Ok(storage) => {
                        if let Err(e) = storage.delete(&path).await {
                            warn!(%location, error = %e, "could not delete a blob's stored copy");
                        }
                    }
                    Err(e) => warn!(%location, error = %e, "blob copy left in an unknown location"),
                }
            }
        }
        Ok(())
    }
}

impl Registry {
    /// `stream`, the whole blob `digest` read from `location`, with its last chunk held back
    /// until the size and digest of everything before it are checked. A copy that does not
    /// verify ends the stream with an error instead of its last chunk, and is reported (and
    /// repaired from a good copy).
    fn verified(
        &self,
        stream: ByteStream,
        digest: &Digest,
        size: u64,
        location: &LocationId,
    ) -> ByteStream {
        let (lagged, check) = super::stream::hold_last(stream, digest.algorithm());
        let (registry, digest, location) = (self.clone(), digest.clone(), location.clone());
        let tail = futures::stream::once(async move {
            let (bytes, got, last) = check.take()?;
            if bytes == size && got.as_ref() == Some(&digest) {
                return last.map(Ok);
            }
            warn!(%location, %digest, bytes, "a served copy does not verify; the read is cut off");
            registry
                .bad_copy_found(&digest, &location, CopyProblem::Corrupt)
                .await;
            Some(Err(Error::new(
                ErrorKind::Unavailable,
                format!("the copy of {digest} in {location} is corrupt; it is being repaired"),
            )))
        })
        .filter_map(futures::future::ready);
        Box::pin(lagged.chain(tail))
    }
}

/// Reads the first chunk before answering, so that a location that fails at once is detected
/// while another can still be tried.
async fn open_checked(opened: Result<ByteStream>, empty: bool) -> Result<ByteStream> {
    let mut stream = opened?;
    if empty {
        return Ok(stream);
    }
    match stream.next().await {
        Some(Ok(first)) => Ok(Box::pin(
            futures::stream::once(async move { Ok(first) }).chain(stream),
        )),
        Some(Err(e)) => Err(e),
        None => Err(Error::new(
            ErrorKind::Unavailable,
            "stored blob is empty but its record says otherwise",
        )),
    }
}
