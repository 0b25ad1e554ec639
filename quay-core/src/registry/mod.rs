//! The engine: upload sessions, blob commit, read routing across locations, manifests, tags.
//!
//! [`Registry`] is what the HTTP frontend (and any embedding service) calls. It owns no I/O:
//! it drives a [`MetadataStore`] and one [`StorageEngine`] per storage location.

mod blobs;
mod builder;
mod chunked;
pub mod copy;
mod durable;
mod gc;
mod group;
mod image;
pub mod layers;
mod manifests;
mod monolithic;
mod repair;
mod replicate;
pub mod route;
mod slots;
mod stream;
mod uploads;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::health::{BreakerConfig, HealthTracker};
use crate::metadata::MetadataStore;
use crate::names::LocationId;
use crate::queue::JobQueue;
use crate::storage::StorageEngine;

pub use blobs::{BlobBody, BlobRead};
pub use builder::RegistryBuilder;
pub use chunked::{DEFAULT_UPLOAD_PART_BUFFERS, MULTIPART_PART_SIZE};
pub use durable::Durability;
pub use gc::{GcPolicy, GcReport, Removed};
pub use image::{ImageStatus, LocationImageStatus, MissingBlob};
pub use layers::{HealthLayer, LayerOrder, StorageLayer};
pub use manifests::{accepts, ManifestPut, TagPage};
pub use repair::CopyCheck;
pub use replicate::{BeforeCopy, CopySlots, ReplicaOutcome, SMALL_COPY_BYTES};
pub use route::Route;
pub use slots::{Slot, Slots};
pub use uploads::{UploadStatus, UploadSweep, TEMPORARY_PREFIX, UPLOADS_PREFIX};

/// How the engine behaves, independent of which backends it runs on.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// This instance's storage preference, nearest first. New uploads go to the first; reads
    /// come from the first that holds the blob. Every id must name a configured location.
    pub preference: Vec<LocationId>,
    /// Stream blobs through the server even when the location can presign URLs
    /// (Quay's `FEATURE_PROXY_STORAGE`).
    pub proxy_storage: bool,
    /// How long a presigned blob URL stays valid.
    pub presign_expiry: Duration,
    /// Replicate blobs in the background (Quay's `FEATURE_STORAGE_REPLICATION`): a commit
    /// records replication jobs, and deletes of stored copies go through delete jobs.
    pub replication: bool,
    /// Where every blob should end up (`DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS`).
    pub default_locations: Vec<LocationId>,
    /// When a location is considered down, and for how long it is skipped.
    pub breaker: BreakerConfig,
    /// The most upload sessions one repository may have open; starting another fails with
    /// `TooManyRequests` (a soft limit: concurrent starts may pass it by a few). `None`: no
    /// limit.
    pub max_uploads_per_repository: Option<u64>,
    /// Push-time durability (`QUAY_REPLICATION_DURABILITY`): how many default locations must
    /// hold a blob before its push (or mount) is acknowledged. Needs `replication`.
    pub durability: Durability,
    /// How many part buffers ([`MULTIPART_PART_SIZE`] bytes each) chunked uploads into a
    /// location's multipart upload may hold at once in this process; a chunk waits for a free
    /// one (`QUAY_UPLOAD_PART_BUFFERS`, default [`DEFAULT_UPLOAD_PART_BUFFERS`]).
    pub upload_part_buffers: usize,
}

impl RegistryConfig {
    /// A configuration that prefers `preference` (nearest first) and streams blobs.
    pub fn new(preference: Vec<LocationId>) -> Self {
        RegistryConfig {
            preference,
            proxy_storage: true,
            presign_expiry: Duration::from_secs(600),
            replication: false,
            default_locations: Vec::new(),
            breaker: BreakerConfig::default(),
            max_uploads_per_repository: None,
            durability: Durability::Async,
            upload_part_buffers: DEFAULT_UPLOAD_PART_BUFFERS,
        }
    }
}

/// The registry engine: composes a metadata store and storage locations.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    health: Arc<HealthTracker>,
    metadata: Arc<dyn MetadataStore>,
    locations: BTreeMap<LocationId, Arc<dyn StorageEngine>>,
    config: RegistryConfig,
    /// The queue replication runs on: the metadata store's outbox, or one given to the
    /// builder.
    queue: Option<Arc<dyn JobQueue>>,
    /// The metadata store's outbox.
    outbox: Option<Arc<dyn JobQueue>>,
    /// Locations drained by an operator, as last read from the metadata store.
    drained: std::sync::RwLock<std::collections::BTreeSet<LocationId>>,
    /// The process's part buffers of chunked uploads into multipart uploads: a `PATCH` into a
    /// multipart upload takes one before it buffers a byte, and gives it back when it ends.
    part_buffers: slots::Slots,
    /// Verified copies waiting to be recorded, many in one transaction.
    placements: group::GroupCommit<crate::metadata::PlacementToAdd, bool>,
    /// Reads of a blob with its removals in a location, many in one statement.
    reads: group::GroupCommit<(crate::Digest, LocationId), replicate::BeforeCopy>,
}

/// Most requests in one grouped read or write of replication jobs (see `group`).
const GROUP_BATCH: usize = 64;

/// How long a leader of grouped placements waits, under load, for more to join its batch (see
/// `group`): a verified copy's record is a few milliseconds later, and the worker's copies go
/// on meanwhile (a job's database work holds no copy slot). 5 ms rather than 2: on 2000 small
/// copies on PostgreSQL (13 alternating pairs of bench runs) it took a fifth off PostgreSQL's
/// CPU per job (0.24 to 0.19 ms, lower in each pair) and raised quay / rclone from a median
/// of 1.45 to 1.52; 10 ms did no better than 5.
const PLACEMENT_LINGER: std::time::Duration = std::time::Duration::from_millis(5);

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field(
                "locations",
                &self.inner.locations.keys().collect::<Vec<_>>(),
            )
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Registry {
    /// A builder over `metadata`: add locations, layers, a preference, replication.
    pub fn builder(metadata: Arc<dyn MetadataStore>) -> RegistryBuilder {
        RegistryBuilder::new(metadata)
    }

    /// Builds an engine with `config` and no layer but health accounting. Fails with
    /// [`ErrorKind::Config`] as [`RegistryBuilder::finish`] does.
    pub fn new(
        metadata: Arc<dyn MetadataStore>,
        locations: BTreeMap<LocationId, Arc<dyn StorageEngine>>,
        config: RegistryConfig,
    ) -> Result<Self> {
        if config.preference.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the storage preference names no location",
            ));
        }
        locations
            .into_iter()
            .fold(Registry::builder(metadata).config(config), |b, (id, e)| {
                b.location(id, e)
            })
            .finish()
    }

    /// The queue replication runs on (the metadata store's outbox unless another was given),
    /// when there is one.
    pub fn queue(&self) -> Option<&Arc<dyn JobQueue>> {
        self.inner.queue.as_ref()
    }

    /// The metadata store's outbox, where commits record their jobs.
    pub fn outbox(&self) -> Option<&Arc<dyn JobQueue>> {
        self.inner.outbox.as_ref()
    }

    /// The metadata store.
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.inner.metadata
    }

    /// The per-location health tracker (circuit breakers) that routes reads, writes and
    /// replication around failed locations.
    pub fn health(&self) -> &Arc<HealthTracker> {
        &self.inner.health
    }

    /// The engine's configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// The configured locations, each wrapped in its layers.
    pub fn locations(&self) -> &BTreeMap<LocationId, Arc<dyn StorageEngine>> {
        &self.inner.locations
    }

    fn location(&self, id: &LocationId) -> Result<&Arc<dyn StorageEngine>> {
        self.inner.locations.get(id).ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("storage location {id} is not configured on this instance"),
            )
            .with_context("location", id)
        })
    }

    /// The locations a blob committed in `location` must be replicated to.
    fn replication_targets(&self, location: &LocationId) -> Vec<LocationId> {
        if !self.inner.config.replication {
            return Vec::new();
        }
        self.inner
            .config
            .default_locations
            .iter()
            .filter(|l| *l != location)
            .cloned()
            .collect()
    }

    /// The location new uploads are written to: the first preferred location that is up and
    /// not drained; when all are down, the first that accepts a server-side trial (write
    /// failover). Drained locations take no new blob.
    pub fn write_location(&self) -> Result<LocationId> {
        let pref: Vec<&LocationId> = self
            .inner
            .config
            .preference
            .iter()
            .filter(|l| !self.is_drained(l))
            .collect();
        if pref.is_empty() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "every preferred storage location is drained; undrain one to accept pushes",
            ));
        }
        if let Some(up) = pref.iter().find(|l| self.inner.health.is_up(l)) {
            return Ok((*up).clone());
        }
        if let Some(trial) = pref.iter().find(|l| self.inner.health.allow(l)) {
            return Ok((*trial).clone());
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            "every preferred storage location is down; try again shortly",
        ))
    }
}
