//! Monolithic uploads: a whole blob in one request (`POST ?digest=` with a body, or the `PUT`
//! that closes a session which received nothing yet) is written once, straight to its
//! content-addressed path.
//!
//! The body is hashed as it streams into one write (a sized write when its length is known:
//! one streamed `PUT` on S3). The digest is checked at the end of the stream, before the write
//! is allowed to finish: a mismatch fails the stream itself, so the backend aborts the write
//! and no object is stored, not even briefly, and an object already at that path (a copy
//! committed by another push) is never replaced by other bytes. A blob is visible only
//! through its database row: an object written here whose commit never happens is an orphan,
//! removed by the orphan sweep of garbage collection after its grace period, never served.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tracing::{debug, instrument};

use super::Registry;
use crate::digest::{Digest, DigestHasher};
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::BlobCommit;
use crate::names::{LocationId, RepositoryName};
use crate::storage::{ByteStream, StorageEngine};

/// Bytes seen, the hasher while the stream runs, and the digest once it has ended.
type CheckState = (u64, Option<DigestHasher>, Option<Digest>);

/// What a [`checked`] stream saw.
#[derive(Clone)]
struct Check {
    state: Arc<Mutex<CheckState>>,
}

impl Check {
    /// Bytes seen and the digest they hashed to, once the stream has ended.
    fn outcome(&self) -> (u64, Option<Digest>) {
        let g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        (g.0, g.2.clone())
    }
}

fn mismatch(got: &Digest, want: &Digest) -> Error {
    Error::new(
        ErrorKind::DigestInvalid,
        format!("digest mismatch: the uploaded bytes hash to {got}, not {want}"),
    )
}

/// `body`, hashed as it passes; at its end, a digest other than `digest` is an error of the
/// stream, so a write fed by it fails (and stores nothing) instead of finishing.
fn checked(body: ByteStream, digest: &Digest) -> (ByteStream, Check) {
    let check = Check {
        state: Arc::new(Mutex::new((
            0,
            Some(DigestHasher::new(digest.algorithm())),
            None,
        ))),
    };
    let shared = check.state.clone();
    let hashed = body.map(move |chunk| {
        let chunk = chunk?;
        let mut g = match shared.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.0 += chunk.len() as u64;
        if let Some(h) = g.1.as_mut() {
            h.update(&chunk);
        }
        Ok(chunk)
    });
    let (end, want) = (check.state.clone(), digest.clone());
    let verdict = futures::stream::once(async move {
        let mut g = match end.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let got = g.1.take().map(DigestHasher::finish)?;
        g.2 = Some(got.clone());
        (got != want).then(|| Err(mismatch(&got, &want)))
    })
    .filter_map(futures::future::ready);
    (Box::pin(hashed.chain(verdict)), check)
}

impl Registry {
    /// Pushes a whole blob in one call (`POST ?digest=` with a body), of `size` bytes when the
    /// caller knows it (`Content-Length`): one write to the blob's content-addressed path in
    /// this instance's write location, then the commit. See the [module docs](self).
    #[instrument(skip(self, body), fields(repository = %repository, digest = %digest))]
    pub async fn put_blob_sized(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
        size: Option<u64>,
    ) -> Result<Digest> {
        let location = self.write_location()?;
        self.write_whole_blob(repository, digest, &location, None, body, size)
            .await
    }

    /// Writes a whole blob to `digest`'s path in `location` and commits it (deleting the
    /// session `upload_id` in the same transaction, when there is one).
    pub(super) async fn write_whole_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        location: &LocationId,
        upload_id: Option<String>,
        body: ByteStream,
        size: Option<u64>,
    ) -> Result<Digest> {
        let storage = self.location(location)?.clone();
        let path = digest.object_path();
        let (body, check) = checked(body, digest);
        // The blob's record is read while the body streams into the write, instead of before
        // it: one round trip less per push. The read must still end before the write can
        // land (a removal counted after it must refuse the commit, see
        // `holders_and_removals`), so the body's end waits for it, and a failed read fails
        // the stream: the write stores nothing.
        let (read_done, read_ended) = futures::channel::oneshot::channel::<bool>();
        let read = async {
            let read = self.holders_and_removals(digest, location).await;
            let _ = read_done.send(read.is_ok());
            read
        };
        let body = after_read(body, read_ended);
        let write = async {
            match size {
                Some(size) => storage.write_sized(&path, body, size).await,
                None => storage.write(&path, body).await,
            }
        };
        let (read, written) = futures::join!(read, write);
        let (held, removals) = read?;
        let removals_seen = Some(removals);
        // Where the location held the blob already, the write replaced it with the same
        // bytes (a write is atomic, and a mismatch stores nothing); that copy is not this
        // push's to take back.
        let already_placed = held.contains(location);
        if let Err(e) = written {
            // The digest check fails the stream, so the write stored nothing; the error the
            // stream carried is what the write reports.
            let (_, got) = check.outcome();
            return Err(match got {
                Some(got) if &got != digest => mismatch(&got, digest),
                _ => e,
            });
        }
        let (bytes, got) = check.outcome();
        match got {
            Some(got) if &got == digest => {}
            Some(got) => {
                // Only a backend that ignored the failed stream gets here: the object holds
                // other bytes than the blob's, so it must go.
                if !already_placed {
                    remove_object(&storage, &path, location).await;
                }
                return Err(mismatch(&got, digest));
            }
            None => return Err(Error::internal("the upload's digest was not computed")),
        }
        let commit = BlobCommit {
            repository: repository.clone(),
            digest: digest.clone(),
            size: bytes,
            location: location.clone(),
            upload_id,
            replicate_to: self.replication_targets(location),
            removals_seen,
            copies: Vec::new(),
        };
        self.commit_written(commit, &held, !already_placed)
            .await
            .map_err(|failed| failed.error)?;
        debug!(size = bytes, %location, "blob committed (one write)");
        Ok(digest.clone())
    }
}

/// `body`, whose end waits for `read` (the blob's record, read beside the write): a writer
/// that holds back its last bytes until its input ends (as every backend's write does) cannot
/// finish before the read has. When the read failed (or was dropped), the stream fails.
fn after_read(body: ByteStream, read: futures::channel::oneshot::Receiver<bool>) -> ByteStream {
    let end = futures::stream::once(async move {
        match read.await {
            Ok(true) => None,
            _ => Some(Err(Error::new(
                ErrorKind::Unavailable,
                "the blob's record could not be read; the write was abandoned",
            ))),
        }
    })
    .filter_map(futures::future::ready);
    Box::pin(body.chain(end))
}

async fn remove_object(storage: &Arc<dyn StorageEngine>, path: &str, location: &LocationId) {
    if let Err(e) = storage.delete(path).await {
        tracing::warn!(%location, path, error = %e, "could not remove an unverified object");
    }
}
