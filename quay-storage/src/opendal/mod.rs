//! [`OpendalStorage`]: a storage location over an Apache OpenDAL operator: fs and memory here,
//! the object stores (s3 and S3-compatible, azblob, swift) in `services.rs`.
//!
//! Cross-cutting concerns (timeouts, retries, fault injection) are wrappers around the
//! `StorageEngine` trait, not code in here.

mod error;
mod multipart;
mod services;

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use opendal::Operator;
use quay_core::storage::{MultipartPart, MultipartUpload};
use quay_core::{
    ByteStream, EntryStream, Error, ErrorKind, ObjectEntry, ObjectMeta, Result,
    StorageCapabilities, StorageEngine,
};

/// Bytes a writer gathers before it sends a part to the backend (multipart uploads on object
/// stores). Memory per write is about `WRITE_CHUNK × WRITE_CONCURRENCY`. An object smaller than
/// this is sent in one PUT when the write closes, which is also the fast path on servers where
/// multipart uploads are costly (`s3s-fs` copies every part again on completion).
pub const WRITE_CHUNK: usize = 8 * 1024 * 1024;
/// Parts of one write in flight at once.
pub const WRITE_CONCURRENCY: usize = 2;
/// Objects of known size from this size up go to S3 as one streamed `PUT` (of a presigned
/// request) instead of a multipart upload: one request instead of several, and nothing for the
/// server to assemble. Smaller objects are sent in one `PUT` by the writer anyway.
pub const SINGLE_PUT_MIN: u64 = WRITE_CHUNK as u64;
/// S3 refuses single `PUT`s above 5 GiB: larger objects go multipart.
pub const SINGLE_PUT_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// How long the presigned `PUT` of a streamed write is valid (checked when the request starts).
const SINGLE_PUT_EXPIRY: Duration = Duration::from_secs(3600);
/// Bytes of an error answer to a streamed `PUT` read for its S3 error code.
const ERROR_BODY_LIMIT: usize = 4096;

/// A storage location backed by an OpenDAL [`Operator`].
#[derive(Clone)]
pub struct OpendalStorage {
    op: Operator,
    name: String,
    chunked_writes: bool,
    presign: bool,
    /// The client of streamed single `PUT`s (S3 only).
    single_put: Option<reqwest::Client>,
    /// The client of native multipart uploads (S3, path-style, only).
    multipart: Option<multipart::S3Multipart>,
}

impl fmt::Debug for OpendalStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The operator's configuration may hold credentials: show only the scheme.
        f.debug_struct("OpendalStorage")
            .field("name", &self.name)
            .field("scheme", &self.op.info().scheme().to_string())
            .finish()
    }
}

impl OpendalStorage {
    /// Wraps an operator; `name` is used in errors and logs (e.g. the location id).
    pub fn new(op: Operator, name: impl Into<String>) -> Self {
        let caps = op.info().capability();
        let scheme = op.info().scheme().to_string();
        let single_put = (scheme == "s3" && caps.presign_write)
            .then(|| reqwest::Client::builder().build().ok())
            .flatten();
        OpendalStorage {
            chunked_writes: caps.write_can_multi && scheme != "fs",
            presign: caps.presign_read,
            single_put,
            multipart: None,
            op,
            name: name.into(),
        }
    }

    /// Whether this engine offers presigned reads: `false` withholds them even where the
    /// backend can sign (azblob signs URLs with write rights); `true` offers them only if the
    /// backend can.
    #[must_use]
    pub fn with_presign(mut self, presign: bool) -> Self {
        self.presign = presign && self.op.info().capability().presign_read;
        self
    }

    /// A location on the local filesystem under `root` (created if missing). Writes go to a
    /// temporary file and are renamed into place, so a partial object is never visible.
    pub fn fs(root: &Path, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let root_str = root.to_string_lossy().to_string();
        let tmp = root.join(".tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| {
            Error::new(ErrorKind::Config, "cannot create the storage directory")
                .with_context("location", &name)
                .with_context("path", &root_str)
                .with_source(e)
        })?;
        let builder = opendal::services::Fs::default()
            .root(&root_str)
            .atomic_write_dir(&tmp.to_string_lossy());
        let op =
            Operator::new(builder).map_err(|e| error::map(e, &name, "configure", &root_str))?;
        Ok(Self::new(op, name))
    }

    /// A location in memory, for tests and examples.
    pub fn memory(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let op = Operator::new(opendal::services::Memory::default())
            .map_err(|e| error::map(e, &name, "configure", ""))?;
        Ok(Self::new(op, name))
    }

    /// The underlying operator.
    pub fn operator(&self) -> &Operator {
        &self.op
    }

    fn multipart_client(&self) -> Result<&multipart::S3Multipart> {
        self.multipart.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "multipart uploads are not supported",
            )
        })
    }

    fn err(&self, e: opendal::Error, operation: &'static str, path: &str) -> Error {
        error::map(e, &self.name, operation, path)
    }
}

#[async_trait]
impl StorageEngine for OpendalStorage {
    fn capabilities(&self) -> StorageCapabilities {
        let caps = self.op.info().capability();
        StorageCapabilities {
            presign: self.presign,
            copy: caps.copy,
            rename: caps.rename,
            multipart: self.multipart.is_some(),
        }
    }

    async fn stat(&self, path: &str) -> Result<ObjectMeta> {
        let meta = self
            .op
            .stat(path)
            .await
            .map_err(|e| self.err(e, "stat", path))?;
        if meta.is_dir() {
            return Err(Error::not_found("not an object").with_context("path", path));
        }
        Ok(ObjectMeta {
            size: meta.content_length(),
        })
    }

    async fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        // No `chunk`: one request whose body is passed on as it arrives. A chunked reader
        // fetches each chunk whole before the first byte of it moves on, which holds memory
        // and, on S3, makes a copy alternate between reading and writing.
        let ranged = range.is_some();
        let reader = self
            .op
            .reader_with(path)
            .await
            .map_err(|e| error::map_read(e, &self.name, path, ranged))?;
        let stream = match range {
            Some(r) => reader.into_bytes_stream(r).await,
            None => reader.into_bytes_stream(..).await,
        }
        .map_err(|e| error::map_read(e, &self.name, path, ranged))?;
        let name = self.name.clone();
        let owned = path.to_owned();
        Ok(Box::pin(stream.map(move |chunk| {
            chunk.map_err(|e| error::map_io(e, &name, &owned, ranged))
        })))
    }

    async fn write(&self, path: &str, mut data: ByteStream) -> Result<u64> {
        let mut builder = self.op.writer_with(path);
        if self.chunked_writes {
            builder = builder.chunk(WRITE_CHUNK).concurrent(WRITE_CONCURRENCY);
        }
        let writer = builder.await.map_err(|e| self.err(e, "write", path))?;
        // Aborts the write if this future is dropped before it ends (a client gone, a timeout
        // above): no temporary file or multipart upload is left behind.
        let mut guard = AbortOnDrop(Some(writer));
        let mut written = 0u64;
        while let Some(chunk) = data.next().await {
            let outcome = match (chunk, guard.0.as_mut()) {
                (Ok(bytes), Some(writer)) => {
                    written += bytes.len() as u64;
                    writer
                        .write(bytes)
                        .await
                        .map_err(|e| self.err(e, "write", path))
                }
                (Err(e), _) => Err(e),
                (Ok(_), None) => Err(Error::internal("writer already finished")),
            };
            if let Err(e) = outcome {
                // Nothing partial may become visible.
                if let Some(mut writer) = guard.0.take() {
                    let _ = writer.abort().await;
                }
                return Err(e);
            }
        }
        let Some(mut writer) = guard.0.take() else {
            return Err(Error::internal("writer already finished"));
        };
        if let Err(e) = writer.close().await {
            let _ = writer.abort().await;
            return Err(self.err(e, "write", path));
        }
        Ok(written)
    }

    async fn write_sized(&self, path: &str, data: ByteStream, size: u64) -> Result<u64> {
        match &self.single_put {
            Some(client) if (SINGLE_PUT_MIN..=SINGLE_PUT_MAX).contains(&size) => {
                self.put_streamed(client, path, data, size).await
            }
            _ => quay_core::storage::write_then_check_length(self, path, data, size).await,
        }
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.op.delete(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(e, "delete", path)),
        }
    }

    async fn list_entries(&self, prefix: &str) -> Result<EntryStream> {
        let lister = match self.op.lister_with(prefix).recursive(true).await {
            Ok(lister) => lister,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                return Ok(Box::pin(futures::stream::empty()))
            }
            Err(e) => return Err(self.err(e, "list", prefix)),
        };
        let (name, owned) = (self.name.clone(), prefix.to_owned());
        let entries = lister.filter_map(move |entry| {
            let out = match entry {
                Ok(entry) if entry.metadata().is_file() => {
                    let meta = entry.metadata();
                    Some(Ok(ObjectEntry {
                        path: entry.path().to_owned(),
                        size: Some(meta.content_length()),
                        last_modified: meta
                            .last_modified()
                            .map(|t| t.into_inner().as_millisecond()),
                    }))
                }
                Ok(_) => None,
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => None,
                Err(e) => Some(Err(error::map(e, &name, "list", &owned))),
            };
            futures::future::ready(out)
        });
        Ok(Box::pin(entries))
    }

    async fn delete_all(&self, prefix: &str) -> Result<()> {
        match self.op.delete_with(prefix).recursive(true).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(e, "delete", prefix)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e, "list", prefix)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| e.path().to_owned())
            .collect())
    }

    async fn probe(&self) -> Result<()> {
        // Listing at most one entry of the root: cheap, and unlike a stat of a missing object
        // it fails when the bucket or container itself is missing.
        let mut lister = self
            .op
            .lister_with("/")
            .limit(1)
            .await
            .map_err(|e| self.err(e, "probe", "/"))?;
        match lister.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.err(e, "probe", "/")),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.op
            .copy(from, to)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e, "copy", from))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.op
            .rename(from, to)
            .await
            .map_err(|e| self.err(e, "rename", from))
    }

    async fn multipart_start(&self, path: &str) -> Result<String> {
        self.multipart_client()?.start(path).await
    }

    async fn multipart_put_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        data: ByteStream,
        size: u64,
    ) -> Result<String> {
        let data = exact_length(data, size, path);
        self.multipart_client()?
            .put_part(path, upload_id, number, data, size)
            .await
    }

    async fn multipart_complete(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<()> {
        self.multipart_client()?
            .complete(path, upload_id, parts)
            .await
    }

    async fn multipart_abort(&self, path: &str, upload_id: &str) -> Result<()> {
        self.multipart_client()?.abort(path, upload_id).await
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        self.multipart_client()?.list(prefix).await
    }

    async fn presign_read(&self, path: &str, expires: Duration) -> Result<String> {
        if !self.presign {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "presigned reads are not supported",
            ));
        }
        let req = self
            .op
            .presign_read(path, expires)
            .await
            .map_err(|e| self.err(e, "presign", path))?;
        Ok(req.uri().to_string())
    }
}

/// An OpenDAL writer that is aborted in the background if it is dropped unfinished.
struct AbortOnDrop(Option<opendal::Writer>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(mut writer) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = writer.abort().await {
                        tracing::warn!(error = %e, "could not abort an unfinished write");
                    }
                });
            }
            Err(_) => tracing::warn!("an unfinished write was dropped outside a runtime"),
        }
    }
}

fn length_error(got: u64, size: u64, path: &str) -> Error {
    Error::new(
        ErrorKind::SizeInvalid,
        format!("the data is {got} bytes long, {size} were announced"),
    )
    .with_context("path", path)
}

/// Where [`exact_length`] is.
enum Exact {
    /// Passing chunks on; fewer than `size` bytes seen.
    Streaming,
    /// The chunk that completes `size`, held back until the input is known to end there.
    Holding(Bytes),
    /// Ended (or failed).
    Done,
}

/// `data`, failing when it holds more or fewer than `size` bytes. The chunk that completes
/// `size` is passed on only once the input has ended, so that a `PUT` with
/// `Content-Length: size` (which stops reading at `size`) never stores a prefix of longer data.
fn exact_length(data: ByteStream, size: u64, path: &str) -> ByteStream {
    use std::task::Poll;
    let path = path.to_owned();
    let mut data = data;
    let mut seen = 0u64;
    let mut state = Exact::Streaming;
    Box::pin(futures::stream::poll_fn(move |cx| loop {
        match std::mem::replace(&mut state, Exact::Done) {
            Exact::Done => return Poll::Ready(None),
            Exact::Streaming => match data.poll_next_unpin(cx) {
                Poll::Pending => {
                    state = Exact::Streaming;
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(bytes))) => {
                    seen += bytes.len() as u64;
                    if seen > size {
                        return Poll::Ready(Some(Err(length_error(seen, size, &path))));
                    }
                    if seen == size {
                        state = Exact::Holding(bytes);
                        continue;
                    }
                    state = Exact::Streaming;
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if seen == size => return Poll::Ready(None),
                Poll::Ready(None) => {
                    return Poll::Ready(Some(Err(length_error(seen, size, &path))))
                }
            },
            Exact::Holding(last) => match data.poll_next_unpin(cx) {
                Poll::Pending => {
                    state = Exact::Holding(last);
                    return Poll::Pending;
                }
                Poll::Ready(None) => return Poll::Ready(Some(Ok(last))),
                Poll::Ready(Some(Ok(more))) if more.is_empty() => {
                    state = Exact::Holding(last);
                }
                Poll::Ready(Some(Ok(more))) => {
                    let got = seen + more.len() as u64;
                    return Poll::Ready(Some(Err(length_error(got, size, &path))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            },
        }
    }))
}

impl OpendalStorage {
    /// One streamed `PUT` of a presigned request: S3 stores the object when the last byte
    /// arrives and the length matches, so nothing partial is ever visible.
    async fn put_streamed(
        &self,
        client: &reqwest::Client,
        path: &str,
        data: ByteStream,
        size: u64,
    ) -> Result<u64> {
        let signed = self
            .op
            .presign_write(path, SINGLE_PUT_EXPIRY)
            .await
            .map_err(|e| self.err(e, "write", path))?;
        let mut request = client.request(signed.method().clone(), signed.uri().to_string());
        for (name, value) in signed.header() {
            request = request.header(name, value);
        }
        let body = reqwest::Body::wrap_stream(exact_length(data, size, path));
        let sent = request
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                // The source's own error, when the body stream failed, is in the chain.
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                while let Some(err) = source {
                    if let Some(ours) = err.downcast_ref::<Error>() {
                        return Err(Error::new(ours.kind(), ours.message().to_owned())
                            .set_temporary(ours.is_temporary()));
                    }
                    source = err.source();
                }
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{}: the PUT of {path} failed: {}",
                        self.name,
                        e.without_url()
                    ),
                ));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(size);
        }
        let mut text = String::new();
        let mut body = response.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.len() >= ERROR_BODY_LIMIT {
                break;
            }
        }
        let code = text
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(code, _)| code.to_owned())
            .unwrap_or_default();
        let kind = if status.is_server_error() || status.as_u16() == 429 {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Internal
        };
        Err(Error::new(
            kind,
            format!("{}: the PUT of {path} answered {status} {code}", self.name),
        ))
    }
}
