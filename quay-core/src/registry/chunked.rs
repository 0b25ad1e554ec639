//! Chunked uploads into a location's native multipart upload (S3).
//!
//! Where the location has one ([`StorageCapabilities::multipart`]) and the metadata store keeps
//! the state ([`UploadStore::keeps_multipart_state`]), the `PATCH`es of an upload are cut into
//! parts of [`MULTIPART_PART_SIZE`] streamed into one multipart upload of
//! `uploads/<session>/data`; what is left over after a `PATCH` (less than a part) is written
//! as the session's *tail* object and sent at the front of the next part. The state (the
//! backend's upload id, the parts' ETags, the SHA-256 of every byte received so far, the tail)
//! is saved in the session's row with a compare-and-set on its size, so the next chunk may go
//! to any instance. The closing `PUT` sends the tail as the last part, completes the upload,
//! checks the digest from the saved hash (no byte is read back) and makes one server-side copy
//! to the content-addressed path.
//!
//! Each `PATCH` holds at most one part buffer, and a process-wide pool bounds how many buffers
//! exist at once ([`RegistryConfig::upload_part_buffers`]): a `PATCH` waits for a buffer
//! rather than growing the process's memory.
//!
//! [`StorageCapabilities::multipart`]: crate::storage::StorageCapabilities::multipart
//! [`UploadStore::keeps_multipart_state`]: crate::metadata::UploadStore::keeps_multipart_state
//! [`RegistryConfig::upload_part_buffers`]: super::RegistryConfig::upload_part_buffers

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::uploads::{remove_quietly, UploadStatus};
use super::Registry;
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::{BlobCommit, UploadRecord};
use crate::names::RepositoryName;
use crate::sha256_state::Sha256State;
use crate::storage::{ByteStream, MultipartPart, StorageEngine, MULTIPART_MAX_PARTS};

/// The size of every part of a chunked upload but the last (S3 wants at least 5 MiB).
pub const MULTIPART_PART_SIZE: u64 = 8 * 1024 * 1024;

/// The part buffers one process may hold at once by default: 8 × 8 MiB.
pub const DEFAULT_UPLOAD_PART_BUFFERS: usize = 8;

/// The leftover bytes of a chunked upload, waiting for the next part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Tail {
    path: String,
    size: u64,
}

/// What a session's row keeps of its multipart upload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct MultipartState {
    /// Bytes received; equal to the session's size when the state is current.
    size: u64,
    /// The SHA-256 of those bytes so far ([`Sha256State`] as text).
    sha256: String,
    /// The backend's id of the multipart upload, once the first part was sent.
    upload: Option<String>,
    /// Parts sent, in order.
    parts: Vec<MultipartPart>,
    /// Bytes received and not sent as a part yet.
    tail: Option<Tail>,
}

impl MultipartState {
    fn fresh() -> Self {
        MultipartState {
            size: 0,
            sha256: Sha256State::new().to_string(),
            upload: None,
            parts: Vec::new(),
            tail: None,
        }
    }

    fn parse(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| {
            Error::internal("an upload's saved multipart state is malformed").with_source(e)
        })
    }

    fn to_text(&self) -> Result<String> {
        serde_json::to_string(self)
            .map_err(|e| Error::internal("cannot save an upload's multipart state").with_source(e))
    }
}

/// The object a session's multipart upload creates.
fn data_path(id: &str) -> String {
    format!("uploads/{id}/data")
}

fn stale_state(id: &str) -> Error {
    Error::new(
        ErrorKind::BlobUploadInvalid,
        "this upload received a chunk its multipart state does not account for; start again",
    )
    .with_context("upload", id)
}

fn one_chunk(bytes: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

impl Registry {
    /// The saved multipart state of a session, when it streams into a multipart upload.
    async fn multipart_state(
        &self,
        rec: &UploadRecord,
        storage: &Arc<dyn StorageEngine>,
    ) -> Result<Option<MultipartState>> {
        if !storage.capabilities().multipart || !self.inner.metadata.keeps_multipart_state() {
            return Ok(None);
        }
        match self.inner.metadata.get_upload_multipart(&rec.id).await? {
            Some(text) => MultipartState::parse(&text).map(Some),
            None => Ok(None),
        }
    }

    /// The multipart state a chunk appends to: the saved one, or a fresh one for a session
    /// that received nothing yet; `None` for sessions that keep each chunk as an object.
    pub(super) async fn chunk_multipart_state(
        &self,
        rec: &UploadRecord,
        storage: &Arc<dyn StorageEngine>,
    ) -> Result<Option<MultipartState>> {
        let saved = self.multipart_state(rec, storage).await?;
        if saved.is_some() {
            return Ok(saved);
        }
        let can = storage.capabilities().multipart && self.inner.metadata.keeps_multipart_state();
        Ok((can && rec.size == 0 && rec.parts.is_empty()).then(MultipartState::fresh))
    }

    /// Appends a chunk to a session that streams into a multipart upload.
    pub(super) async fn append_multipart(
        &self,
        rec: &UploadRecord,
        state: MultipartState,
        storage: &Arc<dyn StorageEngine>,
        range: Option<Range<u64>>,
        mut body: ByteStream,
    ) -> Result<UploadStatus> {
        if state.size != rec.size {
            return Err(stale_state(&rec.id));
        }
        let _buffer = self.inner.part_buffers.take().await?;
        let path = data_path(&rec.id);
        let mut hash: Sha256State = state.sha256.parse()?;
        let mut buf = BytesMut::new();
        if let Some(tail) = &state.tail {
            let mut s = storage.read(&tail.path, None).await?;
            while let Some(chunk) = s.next().await {
                buf.extend_from_slice(&chunk?);
            }
            if buf.len() as u64 != tail.size {
                return Err(Error::internal(format!(
                    "the tail of upload {} holds {} bytes, not {}",
                    rec.id,
                    buf.len(),
                    tail.size
                )));
            }
        }
        let mut upload = state.upload.clone();
        let mut created: Option<String> = None;
        let mut parts = state.parts.clone();
        let mut received = 0u64;
        let sent: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                hash.update(&chunk);
                received += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
                while buf.len() as u64 >= MULTIPART_PART_SIZE {
                    let part = buf.split_to(MULTIPART_PART_SIZE as usize).freeze();
                    let id = match &upload {
                        Some(id) => id.clone(),
                        None => {
                            let id = storage.multipart_start(&path).await?;
                            created = Some(id.clone());
                            upload = Some(id.clone());
                            id
                        }
                    };
                    let number = parts.last().map_or(1, |p| p.number + 1);
                    if number > MULTIPART_MAX_PARTS {
                        return Err(Error::new(
                            ErrorKind::TooLarge,
                            "the upload is larger than a multipart upload can hold",
                        ));
                    }
                    let size = part.len() as u64;
                    let etag = storage
                        .multipart_put_part(&path, &id, number, one_chunk(part), size)
                        .await?;
                    parts.push(MultipartPart { number, etag, size });
                }
            }
            if let Some(r) = &range {
                if received != r.end - r.start {
                    return Err(Error::new(
                        ErrorKind::BlobUploadInvalid,
                        format!(
                            "Content-Range announced {} bytes but {received} arrived",
                            r.end - r.start
                        ),
                    ));
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            abort_new(storage, &path, created).await;
            return Err(e);
        }
        if received == 0 {
            return Ok(UploadStatus {
                id: rec.id.clone(),
                size: rec.size,
            });
        }
        let new_size = rec.size + received;
        let tail = if buf.is_empty() {
            None
        } else {
            let tail = Tail {
                path: format!(
                    "uploads/{}/tail-{:020}-{}",
                    rec.id,
                    new_size,
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ),
                size: buf.len() as u64,
            };
            let written = storage
                .write_sized(&tail.path, one_chunk(buf.freeze()), tail.size)
                .await;
            if let Err(e) = written {
                remove_quietly(storage, &tail.path, &rec.location).await;
                abort_new(storage, &path, created).await;
                return Err(e);
            }
            Some(tail)
        };
        let next = MultipartState {
            size: new_size,
            sha256: hash.to_string(),
            upload,
            parts,
            tail: tail.clone(),
        };
        let saved = match next.to_text() {
            Ok(text) => {
                self.inner
                    .metadata
                    .set_upload_multipart(&rec.id, rec.size, new_size, &text)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            if let Some(t) = &tail {
                remove_quietly(storage, &t.path, &rec.location).await;
            }
            abort_new(storage, &path, created).await;
            return Err(match e.kind() {
                ErrorKind::Conflict => Error::new(
                    ErrorKind::RangeInvalid,
                    "another chunk was appended to this upload first",
                ),
                ErrorKind::NotFound => Error::new(
                    ErrorKind::BlobUploadUnknown,
                    "the upload session is not known",
                ),
                _ => e,
            });
        }
        if let Some(old) = &state.tail {
            remove_quietly(storage, &old.path, &rec.location).await;
        }
        Ok(UploadStatus {
            id: rec.id.clone(),
            size: new_size,
        })
    }

    /// Finishes a session that streams into a multipart upload, when it is one: `None` when
    /// the session keeps each chunk as an object.
    pub(super) async fn finish_multipart(
        &self,
        repository: &RepositoryName,
        rec: &UploadRecord,
        storage: &Arc<dyn StorageEngine>,
        digest: &Digest,
    ) -> Result<Option<Digest>> {
        let Some(state) = self.multipart_state(rec, storage).await? else {
            return Ok(None);
        };
        if state.size != rec.size {
            return Err(stale_state(&rec.id));
        }
        let mismatch = |got: &Digest| {
            Error::new(
                ErrorKind::DigestInvalid,
                format!("digest mismatch: the uploaded bytes hash to {got}, not {digest}"),
            )
        };
        if digest.algorithm() == Algorithm::Sha256 {
            let hash: Sha256State = state.sha256.parse()?;
            let got = Digest::new(Algorithm::Sha256, &hex::encode(hash.finish()))?;
            if &got != digest {
                self.discard_session(rec, storage).await;
                return Err(mismatch(&got));
            }
        }
        let final_path = digest.object_path();
        let location = &rec.location;
        let (held, removals) = self.holders_and_removals(digest, location).await?;
        let removals_seen = Some(removals);
        let already_placed = held.contains(location);
        let path = data_path(&rec.id);
        // The object holding every byte, unless the location has the blob already.
        let source = if already_placed {
            None
        } else {
            match (&state.upload, &state.tail) {
                (None, None) => None,
                (None, Some(tail)) => Some(tail.path.clone()),
                (Some(id), tail) => {
                    let mut parts = state.parts.clone();
                    if let Some(tail) = tail {
                        let number = parts.last().map_or(1, |p| p.number + 1);
                        let data = storage.read(&tail.path, None).await?;
                        let etag = storage
                            .multipart_put_part(&path, id, number, data, tail.size)
                            .await?;
                        parts.push(MultipartPart {
                            number,
                            etag,
                            size: tail.size,
                        });
                    }
                    match storage.multipart_complete(&path, id, &parts).await {
                        Ok(()) => {}
                        // Completed by an earlier try of this `PUT` whose end failed.
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            match storage.stat(&path).await {
                                Ok(meta) if meta.size == rec.size => {}
                                _ => return Err(e),
                            }
                        }
                        Err(e) => return Err(e),
                    }
                    Some(path.clone())
                }
            }
        };
        if digest.algorithm() != Algorithm::Sha256 {
            // The saved hash is SHA-256: other digests are checked on the stored bytes.
            let got = match &source {
                Some(p) => hash_object(storage, p, digest.algorithm()).await?,
                None if !already_placed => {
                    hash_stream(Box::pin(futures::stream::empty()), digest.algorithm()).await?
                }
                None => digest.clone(),
            };
            if &got != digest {
                self.discard_session(rec, storage).await;
                return Err(mismatch(&got));
            }
        }
        if !already_placed {
            match &source {
                Some(src) => super::uploads::move_object(storage, src, &final_path).await?,
                None => {
                    let empty: ByteStream = Box::pin(futures::stream::empty());
                    storage.write_sized(&final_path, empty, 0).await?;
                }
            }
        }
        let commit = BlobCommit {
            repository: repository.clone(),
            digest: digest.clone(),
            size: rec.size,
            location: location.clone(),
            upload_id: Some(rec.id.clone()),
            replicate_to: self.replication_targets(location),
            removals_seen,
            copies: Vec::new(),
        };
        if let Err(failed) = self.commit_written(commit, &held, !already_placed).await {
            if failed.before_commit {
                self.discard_session(rec, storage).await;
            }
            return Err(failed.error);
        }
        if already_placed {
            if let Some(id) = &state.upload {
                abort_quietly(storage, &path, id).await;
            }
        }
        if state.upload.is_some() || state.tail.is_some() {
            super::uploads::remove_session_data(storage, &rec.id, location).await;
        }
        debug!(size = rec.size, %location, parts = state.parts.len(), "blob committed (multipart)");
        Ok(Some(digest.clone()))
    }

    /// Aborts the multipart upload of a session being discarded, given its saved state.
    pub(super) async fn abort_multipart(
        &self,
        id: &str,
        saved: &str,
        storage: &Arc<dyn StorageEngine>,
    ) {
        match MultipartState::parse(saved) {
            Ok(state) => {
                if let Some(upload) = &state.upload {
                    abort_quietly(storage, &data_path(id), upload).await;
                }
            }
            Err(e) => warn!(upload = %id, error = %e, "cannot abort an upload's multipart upload"),
        }
    }
}

/// Aborts the multipart upload a failed `PATCH` started, if it started one.
async fn abort_new(storage: &Arc<dyn StorageEngine>, path: &str, created: Option<String>) {
    if let Some(id) = created {
        abort_quietly(storage, path, &id).await;
    }
}

async fn abort_quietly(storage: &Arc<dyn StorageEngine>, path: &str, upload: &str) {
    if let Err(e) = storage.multipart_abort(path, upload).await {
        warn!(path, error = %e, "could not abort a multipart upload");
    }
}

async fn hash_stream(mut stream: ByteStream, algorithm: Algorithm) -> Result<Digest> {
    let mut h = crate::digest::DigestHasher::new(algorithm);
    while let Some(chunk) = stream.next().await {
        h.update(&chunk?);
    }
    Ok(h.finish())
}

async fn hash_object(
    storage: &Arc<dyn StorageEngine>,
    path: &str,
    algorithm: Algorithm,
) -> Result<Digest> {
    hash_stream(storage.read(path, None).await?, algorithm).await
}
