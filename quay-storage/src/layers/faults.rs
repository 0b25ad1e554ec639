//! [`FaultyStorage`]: fault injection around any storage engine, toggled at run time, for
//! tests: errors, added latency, or a hard partition (calls hang, as with a dead endpoint that
//! drops packets; pair it with [`TimeoutStorage`](super::TimeoutStorage)).

use std::ops::Range;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use quay_core::registry::{LayerOrder, StorageLayer};
use quay_core::storage::{MultipartPart, MultipartUpload};
use quay_core::{
    ByteStream, EntryStream, Error, ErrorKind, LocationId, ObjectMeta, Result, StorageCapabilities,
    StorageEngine,
};

/// What the wrapper does to each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Nothing: calls pass through.
    #[default]
    None,
    /// Every call fails at once with an outage error.
    Error,
    /// Every call is delayed, then passes through.
    Latency(Duration),
    /// Every call hangs forever.
    Partition,
}

/// A handle that switches the fault of one or more wrappers.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<RwLock<Fault>>);

impl FaultSwitch {
    /// Sets the fault.
    pub fn set(&self, fault: Fault) {
        match self.0.write() {
            Ok(mut g) => *g = fault,
            Err(p) => *p.into_inner() = fault,
        }
    }

    /// The current fault.
    pub fn get(&self) -> Fault {
        match self.0.read() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }
}

/// The [`StorageLayer`] of fault injection ([`LayerOrder::Faults`], right around the backend):
/// the locations named get the fault of their switch; the others pass through.
#[derive(Debug, Clone, Default)]
pub struct FaultLayer {
    switches: std::collections::BTreeMap<LocationId, FaultSwitch>,
}

impl FaultLayer {
    /// No location faulted yet.
    pub fn new() -> Self {
        FaultLayer::default()
    }

    /// `location` takes the fault of `switch`.
    #[must_use]
    pub fn location(mut self, location: LocationId, switch: FaultSwitch) -> Self {
        self.switches.insert(location, switch);
        self
    }
}

impl StorageLayer for FaultLayer {
    fn order(&self) -> LayerOrder {
        LayerOrder::Faults
    }

    fn layer(
        &self,
        location: &LocationId,
        inner: Arc<dyn StorageEngine>,
    ) -> Arc<dyn StorageEngine> {
        match self.switches.get(location) {
            Some(switch) => Arc::new(FaultyStorage::new(inner, switch.clone())),
            None => inner,
        }
    }
}

/// A storage engine with injectable faults.
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    inner: Arc<dyn StorageEngine>,
    switch: FaultSwitch,
}

impl FaultyStorage {
    /// Wraps `inner`; `switch` controls it.
    pub fn new(inner: Arc<dyn StorageEngine>, switch: FaultSwitch) -> Self {
        FaultyStorage { inner, switch }
    }

    async fn gate(&self) -> Result<()> {
        match self.switch.get() {
            Fault::None => Ok(()),
            Fault::Error => Err(Error::new(ErrorKind::Unavailable, "injected storage fault")),
            Fault::Latency(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Fault::Partition => {
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl StorageEngine for FaultyStorage {
    fn capabilities(&self) -> StorageCapabilities {
        self.inner.capabilities()
    }
    async fn stat(&self, path: &str) -> Result<ObjectMeta> {
        self.gate().await?;
        self.inner.stat(path).await
    }
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        self.gate().await?;
        self.inner.read(path, range).await
    }
    async fn write(&self, path: &str, data: ByteStream) -> Result<u64> {
        self.gate().await?;
        self.inner.write(path, data).await
    }
    async fn write_sized(&self, path: &str, data: ByteStream, size: u64) -> Result<u64> {
        self.gate().await?;
        self.inner.write_sized(path, data, size).await
    }
    async fn delete(&self, path: &str) -> Result<()> {
        self.gate().await?;
        self.inner.delete(path).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.gate().await?;
        self.inner.list(prefix).await
    }
    async fn list_entries(&self, prefix: &str) -> Result<EntryStream> {
        self.gate().await?;
        self.inner.list_entries(prefix).await
    }
    async fn delete_all(&self, prefix: &str) -> Result<()> {
        self.gate().await?;
        self.inner.delete_all(prefix).await
    }
    async fn probe(&self) -> Result<()> {
        self.gate().await?;
        self.inner.probe().await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.gate().await?;
        self.inner.copy(from, to).await
    }
    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.gate().await?;
        self.inner.rename(from, to).await
    }
    async fn multipart_start(&self, path: &str) -> Result<String> {
        self.gate().await?;
        self.inner.multipart_start(path).await
    }
    async fn multipart_put_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        data: ByteStream,
        size: u64,
    ) -> Result<String> {
        self.gate().await?;
        self.inner
            .multipart_put_part(path, upload_id, number, data, size)
            .await
    }
    async fn multipart_complete(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<()> {
        self.gate().await?;
        self.inner.multipart_complete(path, upload_id, parts).await
    }
    async fn multipart_abort(&self, path: &str, upload_id: &str) -> Result<()> {
        self.gate().await?;
        self.inner.multipart_abort(path, upload_id).await
    }
    async fn multipart_list(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        self.gate().await?;
        self.inner.multipart_list(prefix).await
    }
    async fn presign_read(&self, path: &str, expires: Duration) -> Result<String> {
        self.gate().await?;
        self.inner.presign_read(path, expires).await
    }
}
