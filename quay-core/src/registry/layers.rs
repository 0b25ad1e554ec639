//! Layers around each location's backend, and the one order they are applied in.
//!
//! A [`StorageLayer`] wraps a location's [`StorageEngine`] in another that adds one concern
//! (timeouts, metrics, fault injection, health accounting). The [`RegistryBuilder`] applies the
//! layers it is given in the order of their [`LayerOrder`], whatever the order they were added
//! in, innermost first:
//!
//! ```text
//!   caller ─► Custom ─► Metrics ─► Health ─► Timeout ─► Faults ─► backend
//! ```
//!
//! 1. **Faults** (tests) behave as the backend would, so everything above sees them as real.
//! 2. **Timeout** bounds every call of the backend, injected faults included.
//! 3. **Health** records what the bounded backend answered into the location's circuit
//!    breaker ([`HealthLayer`], always applied by the builder): an outage or timeout of the
//!    backend counts against the location; a failure of the *input* of a write (a client that
//!    stalls or goes away, a source that fails during a copy) never does.
//! 4. **Metrics** measure what callers see, timeouts included.
//! 5. **Custom** layers of an embedder wrap the rest.
//!
//! [`RegistryBuilder`]: super::RegistryBuilder

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::Result;
use crate::health::HealthTracker;
use crate::names::LocationId;
use crate::storage::{
    ByteStream, EntryStream, MultipartPart, MultipartUpload, ObjectMeta, StorageCapabilities,
    StorageEngine,
};

/// Where a layer sits around a location's backend; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerOrder {
    /// Fault injection, right around the backend.
    Faults,
    /// Time bounds on every call.
    Timeout,
    /// Health accounting (the builder's own [`HealthLayer`]).
    Health,
    /// Latency and outcome metrics.
    Metrics,
    /// Layers of an embedder, outermost.
    Custom,
}

/// Wraps a location's storage engine in another.
pub trait StorageLayer: Send + Sync + fmt::Debug {
    /// Where the layer goes.
    fn order(&self) -> LayerOrder;
    /// Wraps `inner`, the engine of `location` with the layers below this one.
    fn layer(&self, location: &LocationId, inner: Arc<dyn StorageEngine>)
        -> Arc<dyn StorageEngine>;
}

/// Records the outcome of every call of a location's backend into the registry's
/// [`HealthTracker`]: a success, or an answer that is not an outage (an object not found), is
/// a sign of life; an outage or a timeout is a failure. A write whose input failed is recorded
/// as nothing, since the backend did not fail.
#[derive(Debug, Clone)]
pub struct HealthLayer {
    tracker: Arc<HealthTracker>,
}

impl HealthLayer {
    /// A layer feeding `tracker`.
    pub fn new(tracker: Arc<HealthTracker>) -> Self {
        HealthLayer { tracker }
    }
}

impl StorageLayer for HealthLayer {
    fn order(&self) -> LayerOrder {
        LayerOrder::Health
    }

    fn layer(
        &self,
        location: &LocationId,
        inner: Arc<dyn StorageEngine>,
    ) -> Arc<dyn StorageEngine> {
        Arc::new(HealthAccounted {
            inner,
            location: location.clone(),
            tracker: self.tracker.clone(),
        })
    }
}

#[derive(Debug)]
struct HealthAccounted {
    inner: Arc<dyn StorageEngine>,
    location: LocationId,
    tracker: Arc<HealthTracker>,
}

impl HealthAccounted {
    fn observe<T>(&self, result: &Result<T>) {
        match result {
            Err(e) if crate::health::is_outage(e) => self.tracker.record_failure(&self.location, e),
            _ => self.tracker.record_success(&self.location),
        }
    }

    /// Runs a write whose input is watched: when the input failed, nothing is recorded.
    async fn write_watched<T, F, Fut>(&self, data: ByteStream, write: F) -> Result<T>
    where
        F: FnOnce(ByteStream) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let failed = Arc::new(AtomicBool::new(false));
        let watched: ByteStream = Box::pin(InputFailure {
            inner: data,
            failed: failed.clone(),
        });
        let result = write(watched).await;
        if !failed.load(Ordering::SeqCst) {
            self.observe(&result);
        }
        result
    }
}

/// A write's input that notes whether it yielded an error.
struct InputFailure {
    inner: ByteStream,
    failed: Arc<AtomicBool>,
}

impl Stream for InputFailure {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.failed.store(true, Ordering::SeqCst);
        }
        polled
    }
}

#[async_trait]
impl StorageEngine for HealthAccounted {
    fn capabilities(&self) -> StorageCapabilities {
        self.inner.capabilities()
    }

    async fn stat(&self, path: &str) -> Result<ObjectMeta> {
        let r = self.inner.stat(path).await;
        self.observe(&r);
        r
    }

    async fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let opened = self.inner.read(path, range).await;
        if opened.is_err() {
            self.observe(&opened);
        }
        let stream = opened?;
        // Backends open lazily: the body's first chunk (or its end) is the sign of life, and an
        // outage anywhere in the body counts against the location.
        let (tracker, location) = (self.tracker.clone(), self.location.clone());
        let mut answered = false;
        let body = stream.map(move |chunk| {
            match &chunk {
                Err(e) if crate::health::is_outage(e) => tracker.record_failure(&location, e),
                Ok(_) if !answered => tracker.record_success(&location),
                _ => {}
            }
            answered = true;
            chunk
        });
        Ok(Box::pin(body))
    }

    async fn write(&self, path: &str, data: ByteStream) -> Result<u64> {
        self.write_watched(data, |d| self.inner.write(path, d))
            .await
    }

    async fn write_sized(&self, path: &str, data: ByteStream, size: u64) -> Result<u64> {
        self.write_watched(data, |d| self.inner.write_sized(path, d, size))
            .await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let r = self.inner.delete(path).await;
        self.observe(&r);
        r
    }

    async fn multipart_start(&self, path: &str) -> Result<String> {
        let r = self.inner.multipart_start(path).await;
        self.observe(&r);
        r
    }

    async fn multipart_put_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        data: ByteStream,
        size: u64,
    ) -> Result<String> {
        self.write_watched(data, |d| {
            self.inner
                .multipart_put_part(path, upload_id, number, d, size)
        })
        .await
    }

    async fn multipart_complete(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<()> {
        let r = self.inner.multipart_complete(path, upload_id, parts).await;
        self.observe(&r);
        r
    }

    async fn multipart_abort(&self, path: &str, upload_id: &str) -> Result<()> {
        let r = self.inner.multipart_abort(path, upload_id).await;
        self.observe(&r);
        r
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        let r = self.inner.multipart_list(prefix).await;
        // A server that cannot list uploads is alive all the same.
        if !matches!(&r, Err(e) if e.kind() == crate::error::ErrorKind::Unsupported) {
            self.observe(&r);
        }
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let r = self.inner.list(prefix).await;
        self.observe(&r);
        r
    }

    async fn list_entries(&self, prefix: &str) -> Result<EntryStream> {
        let r = self.inner.list_entries(prefix).await;
        self.observe(&r);
        r
    }

    async fn delete_all(&self, prefix: &str) -> Result<()> {
        let r = self.inner.delete_all(prefix).await;
        self.observe(&r);
        r
    }

    async fn probe(&self) -> Result<()> {
        let r = self.inner.probe().await;
        // A probe is authoritative: one failure takes the location down.
        self.tracker.record_probe(&self.location, &r);
        r
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let r = self.inner.copy(from, to).await;
        self.observe(&r);
        r
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let r = self.inner.rename(from, to).await;
        self.observe(&r);
        r
    }

    async fn presign_read(&self, path: &str, expires: Duration) -> Result<String> {
        // Signing is local: it says nothing of the backend's health.
        self.inner.presign_read(path, expires).await
    }
}

/// Applies `layers` around `engine` in their [`LayerOrder`] (stable for equal orders).
pub(crate) fn apply(
    location: &LocationId,
    engine: Arc<dyn StorageEngine>,
    layers: &[Arc<dyn StorageLayer>],
) -> Arc<dyn StorageEngine> {
    let mut sorted: Vec<&Arc<dyn StorageLayer>> = layers.iter().collect();
    sorted.sort_by_key(|l| l.order());
    sorted
        .into_iter()
        .fold(engine, |inner, layer| layer.layer(location, inner))
}
