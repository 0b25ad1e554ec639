//! Upload sessions: open, append chunks, finish with a verified commit, cancel, mount.
//!
//! Each chunk is its own object (`uploads/<id>/<offset>-<nonce>`) in the session's location
//! and its own row in the metadata store, appended with a compare-and-set on the session size.
//! So consecutive chunks may be taken by different instances sharing the database, and a chunk
//! that arrives out of order is refused without harming the session.

use std::ops::Range;
use std::sync::Arc;

use futures::StreamExt;
use tracing::{debug, instrument, warn};

use super::stream::{concat, tap};
use super::Registry;
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::{BlobCommit, UploadPart, UploadRecord};
use crate::names::{LocationId, RepositoryName};
use crate::storage::{ByteStream, StorageEngine};

/// The folder of upload data in each location: `uploads/<session>/<part>`.
pub const UPLOADS_PREFIX: &str = "uploads/";

/// The folder where a location's backend keeps the temporary files of writes in progress (the
/// filesystem backend writes there and renames into place).
pub const TEMPORARY_PREFIX: &str = ".tmp/";

/// What [`Registry::expire_uploads`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadSweep {
    /// Sessions idle past the expiry, removed with their data.
    pub sessions: u64,
    /// Session folders in storage that no session row owned.
    pub orphaned_sessions: u64,
    /// Temporary files of writes that never finished.
    pub temporary_files: u64,
}

impl UploadSweep {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        *self == UploadSweep::default()
    }
}

/// Where an upload session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    /// The session id.
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
}

fn upload_unknown(id: &str) -> Error {
    let shown: String = id.chars().take(64).collect();
    Error::new(
        ErrorKind::BlobUploadUnknown,
        format!("upload session {shown:?} is not known"),
    )
}

fn valid_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Registry {
    /// Opens an upload session in this instance's write location.
    #[instrument(skip(self), fields(repository = %repository))]
    pub async fn start_upload(&self, repository: &RepositoryName) -> Result<UploadStatus> {
        if let Some(limit) = self.inner.config.max_uploads_per_repository {
            let open = self.inner.metadata.count_uploads(repository).await?;
            if open >= limit {
                return Err(Error::new(
                    ErrorKind::TooManyRequests,
                    format!(
                        "{repository} has {open} open upload sessions, the limit is {limit}: \
                         finish or cancel some, or wait for abandoned ones to expire"
                    ),
                ));
            }
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let location = self.write_location()?;
        self.inner
            .metadata
            .create_upload(&id, repository, &location)
            .await?;
        debug!(upload = %id, %location, "upload session opened");
        Ok(UploadStatus { id, size: 0 })
    }

    async fn session(&self, repository: &RepositoryName, id: &str) -> Result<UploadRecord> {
        if !valid_session_id(id) {
            return Err(upload_unknown(id));
        }
        match self.inner.metadata.get_upload(id).await {
            Ok(rec) if &rec.repository == repository => Ok(rec),
            Ok(_) => Err(upload_unknown(id)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(upload_unknown(id)),
            Err(e) => Err(e),
        }
    }

    /// The status of a session.
    pub async fn upload_status(
        &self,
        repository: &RepositoryName,
        id: &str,
    ) -> Result<UploadStatus> {
        let rec = self.session(repository, id).await?;
        Ok(UploadStatus {
            id: rec.id,
            size: rec.size,
        })
    }

    /// Appends a chunk. With `range` (from `Content-Range`), the chunk must start where the
    /// session ends, else [`ErrorKind::RangeInvalid`] and the session is unchanged; the bytes
    /// received must fill the range exactly, else [`ErrorKind::BlobUploadInvalid`].
    #[instrument(skip(self, body), fields(repository = %repository, upload = %id))]
    pub async fn upload_chunk(
        &self,
        repository: &RepositoryName,
        id: &str,
        range: Option<Range<u64>>,
        body: ByteStream,
    ) -> Result<UploadStatus> {
        let rec = self.session(repository, id).await?;
        if let Some(r) = &range {
            if r.start != rec.size {
                return Err(Error::new(
                    ErrorKind::RangeInvalid,
                    format!(
                        "chunk starts at byte {} but the upload holds {} bytes",
                        r.start, rec.size
                    ),
                ));
            }
        }
        let storage = self.location(&rec.location)?.clone();
        if let Some(state) = self.chunk_multipart_state(&rec, &storage).await? {
            return self
                .append_multipart(&rec, state, &storage, range, body)
                .await;
        }
        let path = format!(
            "uploads/{}/{:020}-{}",
            rec.id,
            rec.size,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (body, seen) = tap(body, Some(Algorithm::Sha256));
        // The location's health layer counts what its backend answers; a client that stops
        // sending, sends too slowly or goes away is not the location's fault.
        let written = storage.write(&path, body).await;
        if let Err(e) = written {
            remove_quietly(&storage, &path, &rec.location).await;
            return Err(e);
        }
        let tapped = seen.finish();
        if let Some(r) = &range {
            if tapped.bytes != r.end - r.start {
                remove_quietly(&storage, &path, &rec.location).await;
                return Err(Error::new(
                    ErrorKind::BlobUploadInvalid,
                    format!(
                        "Content-Range announced {} bytes but {} arrived",
                        r.end - r.start,
                        tapped.bytes
                    ),
                ));
            }
        }
        if tapped.bytes == 0 {
            remove_quietly(&storage, &path, &rec.location).await;
            return Ok(UploadStatus {
                id: rec.id,
                size: rec.size,
            });
        }
        let part = UploadPart {
            offset: rec.size,
            size: tapped.bytes,
            path: path.clone(),
            sha256: tapped.digest,
        };
        match self
            .inner
            .metadata
            .append_upload_part(&rec.id, rec.size, &part)
            .await
        {
            Ok(size) => Ok(UploadStatus { id: rec.id, size }),
            Err(e) => {
                remove_quietly(&storage, &path, &rec.location).await;
                match e.kind() {
                    ErrorKind::Conflict => Err(Error::new(
                        ErrorKind::RangeInvalid,
                        "another chunk was appended to this upload first",
                    )),
                    ErrorKind::NotFound => Err(upload_unknown(id)),
                    _ => Err(e),
                }
            }
        }
    }

    /// Finishes an upload: appends the optional last chunk, verifies the digest of all bytes,
    /// moves the blob to its content-addressed path and commits blob, placement and link in
    /// one transaction. On a digest mismatch nothing is recorded, the session and its parts are
    /// removed, and the error is [`ErrorKind::DigestInvalid`].
    pub async fn finish_upload(
        &self,
        repository: &RepositoryName,
        id: &str,
        digest: &Digest,
        last_chunk: Option<ByteStream>,
    ) -> Result<Digest> {
        self.finish_upload_sized(repository, id, digest, last_chunk, None)
            .await
    }

    /// [`Registry::finish_upload`] with the length of `last_chunk` when the caller knows it
    /// (`Content-Length`). A session that received nothing before its last chunk is a
    /// monolithic upload: the chunk is written once, straight to the blob's content-addressed
    /// path (see [`Registry::put_blob_sized`]), with no upload part and nothing to move.
    #[instrument(skip(self, last_chunk), fields(repository = %repository, upload = %id, digest = %digest))]
    pub async fn finish_upload_sized(
        &self,
        repository: &RepositoryName,
        id: &str,
        digest: &Digest,
        last_chunk: Option<ByteStream>,
        last_chunk_size: Option<u64>,
    ) -> Result<Digest> {
        if let Some(chunk) = last_chunk {
            let rec = self.session(repository, id).await?;
            if rec.size == 0 && rec.parts.is_empty() {
                let outcome = self
                    .write_whole_blob(
                        repository,
                        digest,
                        &rec.location,
                        Some(rec.id.clone()),
                        chunk,
                        last_chunk_size,
                    )
                    .await;
                if let Err(e) = &outcome {
                    if e.kind() == ErrorKind::DigestInvalid {
                        if let Ok(storage) = self.location(&rec.location) {
                            self.discard_session(&rec, &storage.clone()).await;
                        }
                    }
                }
                return outcome;
            }
            self.upload_chunk(repository, id, None, chunk).await?;
        }
        let rec = self.session(repository, id).await?;
        let storage = self.location(&rec.location)?.clone();
        if let Some(done) = self
            .finish_multipart(repository, &rec, &storage, digest)
            .await?
        {
            return Ok(done);
        }
        let mut parts = rec.parts.clone();
        parts.sort_by_key(|p| p.offset);
        let mut expected = 0;
        for p in &parts {
            if p.offset != expected {
                return Err(Error::internal(format!(
                    "upload {} has a gap at byte {expected}",
                    rec.id
                )));
            }
            expected += p.size;
        }
        let final_path = digest.object_path();
        let (held, removals) = self.holders_and_removals(digest, &rec.location).await?;
        let removals_seen = Some(removals);
        let already_placed = held.contains(&rec.location);

        // Verify, and produce a verified object to move into place (unless one is there).
        let single_verified = parts.len() == 1 && parts[0].sha256.as_ref() == Some(digest);
        let mut source: Option<String> = None;
        let verdict = if single_verified {
            source = Some(parts[0].path.clone());
            Ok(rec.size)
        } else {
            let paths: Vec<String> = parts.iter().map(|p| p.path.clone()).collect();
            let (stream, seen) = tap(concat(storage.clone(), paths), Some(digest.algorithm()));
            let outcome = if already_placed {
                drain(stream).await
            } else {
                let assembled = format!("uploads/{}/assembled", rec.id);
                source = Some(assembled.clone());
                storage
                    .write_sized(&assembled, stream, rec.size)
                    .await
                    .map(|_| ())
            };
            match outcome {
                Err(e) => Err(e),
                Ok(()) => {
                    let t = seen.finish();
                    match t.digest {
                        Some(d) if &d == digest => Ok(t.bytes),
                        Some(d) => Err(Error::new(
                            ErrorKind::DigestInvalid,
                            format!(
                                "digest mismatch: the uploaded bytes hash to {d}, not {digest}"
                            ),
                        )),
                        None => Err(Error::internal("digest not computed")),
                    }
                }
            }
        };
        let size = match verdict {
            Ok(size) => size,
            Err(e) => {
                if e.kind() == ErrorKind::DigestInvalid {
                    self.discard_session(&rec, &storage).await;
                }
                return Err(e);
            }
        };
        if !already_placed {
            if let Some(src) = &source {
                move_object(&storage, src, &final_path).await?;
            } else {
                // An empty upload: write the empty object.
                let empty: ByteStream = Box::pin(futures::stream::empty());
                storage.write(&final_path, empty).await?;
            }
        }
        let commit = BlobCommit {
            repository: repository.clone(),
            digest: digest.clone(),
            size,
            location: rec.location.clone(),
            upload_id: Some(rec.id.clone()),
            replicate_to: self.replication_targets(&rec.location),
            removals_seen,
            copies: Vec::new(),
        };
        if let Err(failed) = self.commit_written(commit, &held, !already_placed).await {
            if failed.before_commit {
                self.discard_session(&rec, &storage).await;
            }
            return Err(failed.error);
        }
        // The parts, an assembled object (moved away already where the backend renames) and
        // the session's folder.
        remove_session_data(&storage, &rec.id, &rec.location).await;
        debug!(size, location = %rec.location, "blob committed");
        Ok(digest.clone())
    }

    /// Pushes a whole blob in one call (`POST ?digest=` with a body) of unknown length: see
    /// [`Registry::put_blob_sized`].
    pub async fn put_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<Digest> {
        self.put_blob_sized(repository, digest, body, None).await
    }

    /// Cancels a session and removes its parts.
    pub async fn cancel_upload(&self, repository: &RepositoryName, id: &str) -> Result<()> {
        let rec = self.session(repository, id).await?;
        let storage = self.location(&rec.location)?.clone();
        self.discard_session(&rec, &storage).await;
        Ok(())
    }

    pub(super) async fn discard_session(
        &self,
        rec: &UploadRecord,
        storage: &Arc<dyn StorageEngine>,
    ) {
        let multipart =
            if storage.capabilities().multipart && self.inner.metadata.keeps_multipart_state() {
                self.inner
                    .metadata
                    .get_upload_multipart(&rec.id)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
        if let Err(e) = self.inner.metadata.delete_upload(&rec.id).await {
            warn!(upload = %rec.id, error = %e, "could not delete upload session");
        }
        if let Some(saved) = &multipart {
            self.abort_multipart(&rec.id, saved, storage).await;
        }
        // Even a session that recorded nothing may have data: a part write cut off before its
        // row (its temporary file is removed with the write, but a filesystem keeps the folder).
        remove_session_data(storage, &rec.id, &rec.location).await;
    }

    /// Removes upload sessions idle since before `before_ms` with everything they stored, then
    /// (with `sweep_leftovers`) sweeps each location for upload data that no session row owns
    /// and temporary files, untouched since before `before_ms` (a crash, a write cut off).
    /// Returns what it removed.
    pub async fn expire_uploads(
        &self,
        before_ms: i64,
        sweep_leftovers: bool,
    ) -> Result<UploadSweep> {
        let mut sweep = UploadSweep::default();
        loop {
            let stale = self.inner.metadata.stale_uploads(before_ms, 1000).await?;
            let full_page = stale.len() == 1000;
            for rec in &stale {
                match self.location(&rec.location) {
                    Ok(storage) => {
                        let storage = storage.clone();
                        self.discard_session(rec, &storage).await;
                        sweep.sessions += 1;
                    }
                    Err(e) => warn!(upload = %rec.id, error = %e, "cannot expire upload"),
                }
            }
            if !full_page {
                break;
            }
        }
        for (location, storage) in &self.inner.locations {
            if !sweep_leftovers || !self.inner.health.is_up(location) {
                continue;
            }
            match self.sweep_location(storage, before_ms).await {
                Ok((sessions, temporary)) => {
                    sweep.orphaned_sessions += sessions;
                    sweep.temporary_files += temporary;
                }
                Err(e) => warn!(%location, error = %e, "could not sweep upload leftovers"),
            }
        }
        Ok(sweep)
    }

    /// Removes, from one location, the data of upload sessions that have no row any more and
    /// temporary files, when untouched since before `before_ms`.
    async fn sweep_location(
        &self,
        storage: &Arc<dyn StorageEngine>,
        before_ms: i64,
    ) -> Result<(u64, u64)> {
        // Newest write per session folder.
        let mut sessions: std::collections::BTreeMap<String, i64> = Default::default();
        let mut entries = storage.list_entries(UPLOADS_PREFIX).await?;
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            let Some(id) = entry
                .path
                .strip_prefix(UPLOADS_PREFIX)
                .and_then(|rest| rest.split('/').next())
                .filter(|id| !id.is_empty())
            else {
                continue;
            };
            let touched = entry.last_modified.unwrap_or(i64::MAX);
            let newest = sessions.entry(id.to_owned()).or_insert(i64::MIN);
            *newest = (*newest).max(touched);
        }
        let mut removed_sessions = 0;
        for (id, touched) in sessions {
            if touched >= before_ms {
                continue;
            }
            match self.inner.metadata.get_upload(&id).await {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    storage
                        .delete_all(&format!("{UPLOADS_PREFIX}{id}/"))
                        .await?;
                    removed_sessions += 1;
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        removed_sessions += self.sweep_multipart_uploads(storage, before_ms).await?;
        let mut removed_temporary = 0;
        let mut temporary = storage.list_entries(TEMPORARY_PREFIX).await?;
        while let Some(entry) = temporary.next().await {
            let entry = entry?;
            if entry.last_modified.is_some_and(|t| t < before_ms) {
                storage.delete(&entry.path).await?;
                removed_temporary += 1;
            }
        }
        Ok((removed_sessions, removed_temporary))
    }

    /// Aborts, in one location, the multipart uploads of sessions that have no row any more,
    /// started before `before_ms` (a crash between starting one and saving its id). Servers
    /// that cannot list multipart uploads are skipped: their leftovers need the bucket's own
    /// rule (S3's `AbortIncompleteMultipartUpload` lifecycle rule).
    pub(super) async fn sweep_multipart_uploads(
        &self,
        storage: &Arc<dyn StorageEngine>,
        before_ms: i64,
    ) -> Result<u64> {
        if !storage.capabilities().multipart {
            return Ok(0);
        }
        let uploads = match storage.multipart_list(UPLOADS_PREFIX).await {
            Ok(uploads) => uploads,
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                debug!(error = %e, "multipart uploads cannot be listed here");
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        let mut aborted = 0;
        for upload in uploads {
            if upload.initiated.is_none_or(|t| t >= before_ms) {
                continue;
            }
            let Some(id) = upload
                .path
                .strip_prefix(UPLOADS_PREFIX)
                .and_then(|rest| rest.split('/').next())
            else {
                continue;
            };
            match self.inner.metadata.get_upload(id).await {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    storage
                        .multipart_abort(&upload.path, &upload.upload_id)
                        .await?;
                    aborted += 1;
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        Ok(aborted)
    }

    /// Links a blob that `from` holds into `repository` (cross-repository mount). Returns false
    /// when `from` does not hold it, so the caller opens an upload session instead.
    pub async fn mount_blob(
        &self,
        repository: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        if self
            .inner
            .metadata
            .repository_blob(from, digest)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        // Push-time durability: a mount is acknowledged once enough locations hold the blob.
        if let Some(blob) = self.inner.metadata.get_blob(digest).await? {
            self.mount_durable(&blob).await?;
        }
        match self.inner.metadata.link_blob(repository, digest).await {
            // Collected meanwhile: the client uploads the blob instead.
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(false),
            other => other,
        }
    }
}

async fn drain(mut stream: ByteStream) -> Result<()> {
    while let Some(chunk) = stream.next().await {
        chunk?;
    }
    Ok(())
}

/// Moves an object inside one location: rename, else server-side copy, else a streamed copy.
pub(super) async fn move_object(
    storage: &Arc<dyn StorageEngine>,
    from: &str,
    to: &str,
) -> Result<()> {
    let caps = storage.capabilities();
    if caps.rename {
        return storage.rename(from, to).await;
    }
    if caps.copy {
        return storage.copy(from, to).await;
    }
    let stream = storage.read(from, None).await?;
    storage.write(to, stream).await.map(|_| ())
}

/// Removes everything an upload session stored: its parts, an assembled object, and the folder.
pub(super) async fn remove_session_data(
    storage: &Arc<dyn StorageEngine>,
    id: &str,
    location: &LocationId,
) {
    if let Err(e) = storage.delete_all(&format!("{UPLOADS_PREFIX}{id}/")).await {
        warn!(%location, upload = %id, error = %e, "could not remove an upload's data");
    }
}

pub(super) async fn remove_quietly(
    storage: &Arc<dyn StorageEngine>,
    path: &str,
    location: &LocationId,
) {
    if let Err(e) = storage.delete(path).await {
        warn!(%location, path, error = %e, "could not remove a temporary upload object");
    }
}
