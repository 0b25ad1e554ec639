//! [`MeteredStorage`]: records each storage operation's latency and outcome per location.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `quay_storage_operation_duration_seconds` | histogram | `location`, `operation`, `outcome` (`ok` / error kind) |
//!
//! A read's latency is the time to open the stream (first byte ready), not to drain it.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quay_core::registry::{LayerOrder, StorageLayer};
use quay_core::storage::{MultipartPart, MultipartUpload};
use quay_core::{
    ByteStream, EntryStream, LocationId, ObjectMeta, Result, StorageCapabilities, StorageEngine,
};

/// The [`StorageLayer`] that records every location's operations ([`LayerOrder::Metrics`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl StorageLayer for MetricsLayer {
    fn order(&self) -> LayerOrder {
        LayerOrder::Metrics
    }

    fn layer(
        &self,
        location: &LocationId,
        inner: Arc<dyn StorageEngine>,
    ) -> Arc<dyn StorageEngine> {
        Arc::new(MeteredStorage::new(inner, location))
    }
}

/// A storage engine that records operation latency.
#[derive(Debug, Clone)]
pub struct MeteredStorage {
    inner: Arc<dyn StorageEngine>,
    location: String,
}

impl MeteredStorage {
    /// Wraps `inner`, labelling its figures with `location`.
    pub fn new(inner: Arc<dyn StorageEngine>, location: &LocationId) -> Self {
        MeteredStorage {
            inner,
            location: location.to_string(),
        }
    }

    fn record<T>(&self, operation: &'static str, started: Instant, result: &Result<T>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind().as_str(),
        };
        metrics::histogram!("quay_storage_operation_duration_seconds",
            "location" => self.location.clone(), "operation" => operation, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    }
}

macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.record($op, started, &result);
        result
    }};
}

#[async_trait]
impl StorageEngine for MeteredStorage {
    fn capabilities(&self) -> StorageCapabilities {
        self.inner.capabilities()
    }

    async fn stat(&self, path: &str) -> Result<ObjectMeta> {
        timed!(self, "stat", self.inner.stat(path))
    }

    async fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        timed!(self, "read", self.inner.read(path, range))
    }

    async fn write(&self, path: &str, data: ByteStream) -> Result<u64> {
        timed!(self, "write", self.inner.write(path, data))
    }

    async fn write_sized(&self, path: &str, data: ByteStream, size: u64) -> Result<u64> {
        timed!(self, "write", self.inner.write_sized(path, data, size))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        timed!(self, "delete", self.inner.delete(path))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        timed!(self, "list", self.inner.list(prefix))
    }

    async fn list_entries(&self, prefix: &str) -> Result<EntryStream> {
        timed!(self, "list", self.inner.list_entries(prefix))
    }

    async fn delete_all(&self, prefix: &str) -> Result<()> {
        timed!(self, "delete", self.inner.delete_all(prefix))
    }

    async fn probe(&self) -> Result<()> {
        timed!(self, "probe", self.inner.probe())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        timed!(self, "copy", self.inner.copy(from, to))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        timed!(self, "rename", self.inner.rename(from, to))
    }

    async fn multipart_start(&self, path: &str) -> Result<String> {
        timed!(self, "multipart_start", self.inner.multipart_start(path))
    }

    async fn multipart_put_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        data: ByteStream,
        size: u64,
    ) -> Result<String> {
        timed!(
            self,
            "multipart_part",
            self.inner
                .multipart_put_part(path, upload_id, number, data, size)
        )
    }

    async fn multipart_complete(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<()> {
        timed!(
            self,
            "multipart_complete",
            self.inner.multipart_complete(path, upload_id, parts)
        )
    }

    async fn multipart_abort(&self, path: &str, upload_id: &str) -> Result<()> {
        timed!(
            self,
            "multipart_abort",
            self.inner.multipart_abort(path, upload_id)
        )
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        timed!(self, "list", self.inner.multipart_list(prefix))
    }

    async fn presign_read(&self, path: &str, expires: Duration) -> Result<String> {
        timed!(self, "presign", self.inner.presign_read(path, expires))
    }
}
