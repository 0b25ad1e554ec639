//! [`TimeoutStorage`]: bounds every remote call of a storage engine, so a dead endpoint costs
//! a bounded wait.
//!
//! Single operations (stat, delete, list, probe, copy, rename, presign, opening a read) are
//! bounded by `op_timeout`. Streams are bounded by `io_timeout` of inactivity: a read whose
//! next chunk does not arrive in time fails, and a write whose backend makes no progress (takes
//! no input, or a final commit that does not return) in time fails. A write waiting for its
//! *input* is not stalled: a client that stops sending is the client's fault, bounded by the
//! HTTP layer's body timeouts, and must never count against the location's health. A timeout
//! is [`ErrorKind::Timeout`], temporary.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use quay_core::registry::{LayerOrder, StorageLayer};
use quay_core::storage::{MultipartPart, MultipartUpload};
use quay_core::{
    ByteStream, EntryStream, Error, ErrorKind, LocationId, ObjectMeta, Result, StorageCapabilities,
    StorageEngine,
};

/// The [`StorageLayer`] that bounds every location's calls ([`LayerOrder::Timeout`]).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    op_timeout: Duration,
    io_timeout: Duration,
}

impl TimeoutLayer {
    /// Single operations bounded by `op_timeout`, streams by `io_timeout` of inactivity.
    pub fn new(op_timeout: Duration, io_timeout: Duration) -> Self {
        TimeoutLayer {
            op_timeout,
            io_timeout,
        }
    }
}

impl StorageLayer for TimeoutLayer {
    fn order(&self) -> LayerOrder {
        LayerOrder::Timeout
    }

    fn layer(
        &self,
        location: &LocationId,
        inner: Arc<dyn StorageEngine>,
    ) -> Arc<dyn StorageEngine> {
        Arc::new(TimeoutStorage::new(
            inner,
            location.as_str(),
            self.op_timeout,
            self.io_timeout,
        ))
    }
}

/// A storage engine whose calls are bounded in time.
#[derive(Debug, Clone)]
pub struct TimeoutStorage {
    inner: Arc<dyn StorageEngine>,
    name: String,
    op_timeout: Duration,
    io_timeout: Duration,
}

impl TimeoutStorage {
    /// Runs a write of `data`, failing it when the backend has made no progress for the I/O
    /// timeout, however long the whole transfer takes. Time spent waiting for the input (a
    /// client that sends slowly, a source that stalls) is not the backend's: the input's own
    /// timeouts deal with it, and it never fails the write as a storage timeout.
    async fn watched_write<'a, T, F, Fut>(&'a self, data: ByteStream, write: F) -> Result<T>
    where
        F: FnOnce(ByteStream) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + 'a,
    {
        let progress = Arc::new(AtomicU64::new(0));
        let waiting = Arc::new(AtomicBool::new(false));
        let counted: ByteStream = Box::pin(InputWatch {
            inner: data,
            progress: progress.clone(),
            waiting: waiting.clone(),
        });
        let write = write(counted);
        tokio::pin!(write);
        let io = self.io_timeout;
        let tick = (io / 4).max(Duration::from_millis(10));
        let mut last_seen = 0u64;
        let mut last_change = Instant::now();
        loop {
            tokio::select! {
                r = &mut write => return r,
                _ = tokio::time::sleep(tick) => {
                    let now = progress.load(Ordering::Relaxed);
                    if now != last_seen || waiting.load(Ordering::Relaxed) {
                        last_seen = now;
                        last_change = Instant::now();
                    } else if last_change.elapsed() >= io {
                        return Err(self.timeout_error("write", io));
                    }
                }
            }
        }
    }

    /// Wraps `inner` (named `name` in errors).
    pub fn new(
        inner: Arc<dyn StorageEngine>,
        name: impl Into<String>,
        op_timeout: Duration,
        io_timeout: Duration,
    ) -> Self {
        TimeoutStorage {
            inner,
            name: name.into(),
            op_timeout,
            io_timeout,
        }
    }

    fn timeout_error(&self, operation: &str, after: Duration) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!("storage {operation} got no answer within {after:?}"),
        )
        .with_context("location", &self.name)
    }

    async fn bounded<T>(&self, operation: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(self.timeout_error(operation, self.op_timeout)),
        }
    }
}

#[async_trait]
impl StorageEngine for TimeoutStorage {
    fn capabilities(&self) -> StorageCapabilities {
        self.inner.capabilities()
    }

    async fn stat(&self, path: &str) -> Result<ObjectMeta> {
        self.bounded("stat", self.inner.stat(path)).await
    }

    async fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let stream = self.bounded("read", self.inner.read(path, range)).await?;
        let io = self.io_timeout;
        let err = self.timeout_error("read", io);
        let s = futures::stream::unfold(Some(stream), move |state| {
            let err = err.clone_shallow();
            async move {
                let mut stream = state?;
                match tokio::time::timeout(io, stream.next()).await {
                    Ok(Some(item)) => Some((item, Some(stream))),
                    Ok(None) => None,
                    Err(_) => Some((Err(err), None)),
                }
            }
        });
        Ok(Box::pin(s))
    }

    async fn write(&self, path: &str, data: ByteStream) -> Result<u64> {
        self.watched_write(data, |counted| self.inner.write(path, counted))
            .await
    }

    async fn write_sized(&self, path: &str, data: ByteStream, size: u64) -> Result<u64> {
        self.watched_write(data, |counted| self.inner.write_sized(path, counted, size))
            .await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.bounded("delete", self.inner.delete(path)).await
    }

    async fn multipart_start(&self, path: &str) -> Result<String> {
        self.bounded("multipart_start", self.inner.multipart_start(path))
            .await
    }

    async fn multipart_put_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        data: ByteStream,
        size: u64,
    ) -> Result<String> {
        self.watched_write(data, |counted| {
            self.inner
                .multipart_put_part(path, upload_id, number, counted, size)
        })
        .await
    }

    async fn multipart_complete(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<()> {
        // Completion assembles the parts on the server, which may take a while for large
        // objects: bounded like a write's input, by the operation timeout per request.
        self.bounded(
            "multipart_complete",
            self.inner.multipart_complete(path, upload_id, parts),
        )
        .await
    }

    async fn multipart_abort(&self, path: &str, upload_id: &str) -> Result<()> {
        self.bounded(
            "multipart_abort",
            self.inner.multipart_abort(path, upload_id),
        )
        .await
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        self.bounded("list", self.inner.multipart_list(prefix))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.bounded("list", self.inner.list(prefix)).await
    }

    async fn list_entries(&self, prefix: &str) -> Result<EntryStream> {
        let stream = self
            .bounded("list", self.inner.list_entries(prefix))
            .await?;
        let op = self.op_timeout;
        let err = self.timeout_error("list", op);
        let s = futures::stream::unfold(Some(stream), move |state| {
            let err = err.clone_shallow();
            async move {
                let mut stream = state?;
                match tokio::time::timeout(op, stream.next()).await {
                    Ok(Some(item)) => Some((item, Some(stream))),
                    Ok(None) => None,
                    Err(_) => Some((Err(err), None)),
                }
            }
        });
        Ok(Box::pin(s))
    }

    async fn delete_all(&self, prefix: &str) -> Result<()> {
        self.bounded("delete", self.inner.delete_all(prefix)).await
    }

    async fn probe(&self) -> Result<()> {
        self.bounded("probe", self.inner.probe()).await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.bounded("copy", self.inner.copy(from, to)).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.bounded("rename", self.inner.rename(from, to)).await
    }

    async fn presign_read(&self, path: &str, expires: Duration) -> Result<String> {
        self.bounded("presign", self.inner.presign_read(path, expires))
            .await
    }
}

/// The input of a watched write: counts what passes, and says whether the write is waiting for
/// the input (the last poll found nothing ready) rather than for the backend.
struct InputWatch {
    inner: ByteStream,
    progress: Arc<AtomicU64>,
    waiting: Arc<AtomicBool>,
}

impl Stream for InputWatch {
    type Item = Result<bytes::Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Pending => self.waiting.store(true, Ordering::Relaxed),
            Poll::Ready(item) => {
                self.waiting.store(false, Ordering::Relaxed);
                let len = match item {
                    Some(Ok(chunk)) => chunk.len() as u64,
                    _ => 0,
                };
                self.progress.fetch_add(len + 1, Ordering::Relaxed);
            }
        }
        polled
    }
}

trait CloneShallow {
    fn clone_shallow(&self) -> Self;
}

impl CloneShallow for Error {
    /// Errors carry a boxed source and are not `Clone`; a timeout error has none.
    fn clone_shallow(&self) -> Self {
        let mut e = Error::new(self.kind(), self.message());
        for (k, v) in self.context() {
            e = e.with_context(k, v);
        }
        e
    }
}
