//! The [`StorageEngine`] trait: one storage location's blob store.

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::error::{Error, ErrorKind, Result};

/// A stream of bytes, as read from or written to storage and HTTP bodies.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// What is known about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
}

/// An object found by [`StorageEngine::list_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Its path, relative to the location's root.
    pub path: String,
    /// Size in bytes, when the listing tells.
    pub size: Option<u64>,
    /// When it was last written (milliseconds since the Unix epoch), when the listing tells.
    pub last_modified: Option<crate::metadata::TimestampMs>,
}

/// Objects of a listing, as the backend pages through them.
pub type EntryStream = Pin<Box<dyn Stream<Item = Result<ObjectEntry>> + Send + 'static>>;

/// [`StorageEngine::write`], then a length check: an object of another length than `size` is
/// removed and the write fails with `SizeInvalid`. The default of
/// [`StorageEngine::write_sized`], for backends that cannot enforce the length while writing.
pub async fn write_then_check_length<E: StorageEngine + ?Sized>(
    engine: &E,
    path: &str,
    data: ByteStream,
    size: u64,
) -> Result<u64> {
    let written = engine.write(path, data).await?;
    if written != size {
        let _ = engine.delete(path).await;
        return Err(Error::new(
            ErrorKind::SizeInvalid,
            format!("wrote {written} bytes where {size} were announced"),
        )
        .with_context("path", path));
    }
    Ok(written)
}

/// Optional abilities a backend declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageCapabilities {
    /// [`StorageEngine::presign_read`] returns URLs a client may fetch directly.
    pub presign: bool,
    /// [`StorageEngine::copy`] copies inside the backend without streaming through us.
    pub copy: bool,
    /// [`StorageEngine::rename`] moves an object atomically inside the backend.
    pub rename: bool,
    /// The `multipart_*` operations drive the backend's native multipart upload (S3), whose
    /// state the caller keeps between requests.
    pub multipart: bool,
}

/// The smallest part of a multipart upload but the last (S3's limit).
pub const MULTIPART_MIN_PART: u64 = 5 * 1024 * 1024;

/// The most parts of one multipart upload (S3's limit).
pub const MULTIPART_MAX_PARTS: u32 = 10_000;

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MultipartPart {
    /// Its number (1 to [`MULTIPART_MAX_PARTS`]); completion takes parts in this order.
    pub number: u32,
    /// The entity tag the backend answered.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A multipart upload in progress, as [`StorageEngine::multipart_list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    /// The object it will create, relative to the location's root.
    pub path: String,
    /// The backend's id of the upload.
    pub upload_id: String,
    /// When it was started (milliseconds since the Unix epoch), when the backend tells.
    pub initiated: Option<crate::metadata::TimestampMs>,
}

fn multipart_unsupported() -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "multipart uploads are not supported",
    )
}

/// One storage location's object store, addressed by relative paths such as
/// `sha256/ab/abcdef…` or `uploads/<id>/<part>`.
///
/// # Behavior
///
/// - `stat` and `read` of a missing object fail with [`ErrorKind::NotFound`].
/// - `read` with a range returns exactly the bytes of that range; a range past the end is an
///   error of kind [`ErrorKind::RangeInvalid`] or [`ErrorKind::Internal`], never a panic.
/// - `write` streams: it never holds the whole object in memory. It returns the number of
///   bytes written. Overwriting an object replaces it.
/// - `delete` of a missing object succeeds.
/// - `list` returns every object path under a prefix (recursively), in no set order;
///   `list_entries` streams the same objects with their size and age where the backend tells,
///   fetching them page by page.
/// - `delete_all` removes every object under a prefix that ends in `/`, and on backends with
///   real folders (the filesystem) the folders too, so nothing is left behind.
/// - A write that fails, or whose future is dropped before it finishes, leaves no object and
///   no temporary data behind (a temporary file, an unfinished multipart upload) once it has
///   been cleaned up, which may happen just after the drop.
/// - Failures of the backend's service are [`ErrorKind::Unavailable`] or
///   [`ErrorKind::Timeout`] and marked temporary.
/// - `copy`, `rename` and `presign_read` are optional; backends that lack them answer
///   [`ErrorKind::Unsupported`] and say so in [`StorageEngine::capabilities`].
#[async_trait]
pub trait StorageEngine: Send + Sync + fmt::Debug + 'static {
    /// What optional operations the backend supports.
    fn capabilities(&self) -> StorageCapabilities;

    /// Size of the object at `path`.
    async fn stat(&self, path: &str) -> Result<ObjectMeta>;

    /// Streams the object at `path`, or the byte `range` of it.
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream>;

    /// Writes `data` to `path`, returning the number of bytes written.
    async fn write(&self, path: &str, data: ByteStream) -> Result<u64>;

    /// Writes `data`, which the caller knows to be `size` bytes long, to `path`. A backend may
    /// use the size to send the object in one request (S3: one streamed `PUT` rather than a
    /// multipart upload). A stream of another length fails the write and leaves no object at
    /// `path`. The default writes as [`StorageEngine::write`] does, then checks the length and
    /// removes a wrong object.
    async fn write_sized(&self, path: &str, data: ByteStream, size: u64) -> Result<u64> {
        write_then_check_length(self, path, data, size).await
    }

    /// Deletes the object at `path`; a missing object is not an error.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Every object path under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// The objects under `prefix`, with size and modification time where the backend gives
    /// them. The default lists paths with [`StorageEngine::list`] and knows neither.
    async fn list_entries(&self, prefix: &str) -> Result<EntryStream> {
        let paths = self.list(prefix).await?;
        Ok(Box::pin(futures::stream::iter(paths.into_iter().map(
            |path| {
                Ok(ObjectEntry {
                    path,
                    size: None,
                    last_modified: None,
                })
            },
        ))))
    }

    /// Deletes every object under `prefix` (a folder path ending in `/`) and, where the backend
    /// has folders, the folders. The default deletes what [`StorageEngine::list`] finds.
    async fn delete_all(&self, prefix: &str) -> Result<()> {
        for path in self.list(prefix).await? {
            self.delete(&path).await?;
        }
        Ok(())
    }

    /// A cheap check that the backend answers (a read probe, not a write).
    async fn probe(&self) -> Result<()>;

    /// Copies `from` to `to` inside this backend.
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let _ = (from, to);
        Err(Error::new(ErrorKind::Unsupported, "copy is not supported"))
    }

    /// Moves `from` to `to` inside this backend.
    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let _ = (from, to);
        Err(Error::new(
            ErrorKind::Unsupported,
            "rename is not supported",
        ))
    }

    /// Starts a multipart upload of the object at `path`; returns the backend's upload id.
    /// Nothing is visible at `path` until [`StorageEngine::multipart_complete`].
    async fn multipart_start(&self, path: &str) -> Result<String> {
        let _ = path;
        Err(multipart_unsupported())
    }

    /// Uploads part `number` (`data`, exactly `size` bytes) of the upload `upload_id` of
    /// `path`; returns its entity tag. A part uploaded again under the same number replaces
    /// the former one.
    async fn multipart_put_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        data: ByteStream,
        size: u64,
    ) -> Result<String> {
        let _ = (path, upload_id, number, data, size);
        Err(multipart_unsupported())
    }

    /// Completes the upload `upload_id` of `path` from `parts` (in ascending number order):
    /// the object appears at `path` whole, and parts not listed are discarded.
    async fn multipart_complete(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<()> {
        let _ = (path, upload_id, parts);
        Err(multipart_unsupported())
    }

    /// Aborts the upload `upload_id` of `path` and frees its parts; an upload that is gone
    /// already is not an error.
    async fn multipart_abort(&self, path: &str, upload_id: &str) -> Result<()> {
        let _ = (path, upload_id);
        Err(multipart_unsupported())
    }

    /// The multipart uploads in progress for objects under `prefix`. Backends (or servers)
    /// that cannot list them answer [`ErrorKind::Unsupported`].
    async fn multipart_list(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        let _ = prefix;
        Err(multipart_unsupported())
    }

    /// A URL from which a client can read the object for `expires`.
    async fn presign_read(&self, path: &str, expires: Duration) -> Result<String> {
        let _ = (path, expires);
        Err(Error::new(
            ErrorKind::Unsupported,
            "presigned reads are not supported",
        ))
    }
}
