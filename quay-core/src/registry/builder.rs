//! [`RegistryBuilder`]: assembles a [`Registry`] from a metadata store, named locations, layers
//! and a job queue.
//!
//! ```
//! # async fn example() -> quay_core::Result<()> {
//! # use std::sync::Arc;
//! # fn store() -> Arc<dyn quay_core::MetadataStore> { unimplemented!() }
//! # fn bucket() -> Arc<dyn quay_core::StorageEngine> { unimplemented!() }
//! use quay_core::Registry;
//! let registry = Registry::builder(store())
//!     .location("us".parse()?, bucket())
//!     .location("eu".parse()?, bucket())
//!     .preference(["us".parse()?, "eu".parse()?])
//!     .replicate_to(["us".parse()?, "eu".parse()?])
//!     .finish()?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::layers::{apply, HealthLayer, StorageLayer};
use super::{Inner, Registry, RegistryConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::health::{BreakerConfig, HealthTracker};
use crate::metadata::MetadataStore;
use crate::names::LocationId;
use crate::queue::JobQueue;
use crate::storage::StorageEngine;

/// Builds a [`Registry`]. Every setting has a default but the metadata store (given to
/// [`Registry::builder`]) and at least one location.
#[derive(Debug)]
pub struct RegistryBuilder {
    metadata: Arc<dyn MetadataStore>,
    locations: BTreeMap<LocationId, Arc<dyn StorageEngine>>,
    layers: Vec<Arc<dyn StorageLayer>>,
    config: RegistryConfig,
    preference: Option<Vec<LocationId>>,
    queue: Option<Arc<dyn JobQueue>>,
}

impl RegistryBuilder {
    pub(super) fn new(metadata: Arc<dyn MetadataStore>) -> Self {
        RegistryBuilder {
            metadata,
            locations: BTreeMap::new(),
            layers: Vec::new(),
            config: RegistryConfig::new(Vec::new()),
            preference: None,
            queue: None,
        }
    }

    /// Adds a storage location. Its engine gets the builder's layers.
    pub fn location(mut self, id: LocationId, engine: Arc<dyn StorageEngine>) -> Self {
        self.locations.insert(id, engine);
        self
    }

    /// Adds a layer around every location, applied in its [`LayerOrder`] whatever the order
    /// of the calls (see [`layers`](super::layers)).
    ///
    /// [`LayerOrder`]: super::LayerOrder
    pub fn layer(mut self, layer: impl StorageLayer + 'static) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// This instance's preference, nearest first (Quay's `DISTRIBUTED_STORAGE_PREFERENCE`).
    /// Default: the locations in the order of their ids.
    pub fn preference(mut self, ids: impl IntoIterator<Item = LocationId>) -> Self {
        self.preference = Some(ids.into_iter().collect());
        self
    }

    /// Turns replication on, towards these locations (Quay's
    /// `FEATURE_STORAGE_REPLICATION` with `DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS`). Jobs are
    /// recorded in the metadata store's [outbox](crate::JobOutbox).
    pub fn replicate_to(mut self, ids: impl IntoIterator<Item = LocationId>) -> Self {
        self.config.replication = true;
        self.config.default_locations = ids.into_iter().collect();
        self
    }

    /// Where every blob should end up, without turning replication on (status reports use
    /// it).
    pub fn default_locations(mut self, ids: impl IntoIterator<Item = LocationId>) -> Self {
        self.config.default_locations = ids.into_iter().collect();
        self
    }

    /// Stream blobs through the server even where the location can presign URLs (Quay's
    /// `FEATURE_PROXY_STORAGE`). Default: on.
    pub fn proxy_storage(mut self, on: bool) -> Self {
        self.config.proxy_storage = on;
        self
    }

    /// How long presigned blob URLs stay valid (600 s).
    pub fn presign_expiry(mut self, expiry: Duration) -> Self {
        self.config.presign_expiry = expiry;
        self
    }

    /// When a location's circuit opens and for how long.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.config.breaker = breaker;
        self
    }

    /// Push-time durability (`async` by default): see [`super::Durability`].
    pub fn durability(mut self, durability: super::Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// At most `limit` open upload sessions per repository.
    pub fn max_uploads_per_repository(mut self, limit: u64) -> Self {
        self.config.max_uploads_per_repository = Some(limit);
        self
    }

    /// How many part buffers chunked uploads into multipart uploads may hold at once
    /// ([`RegistryConfig::upload_part_buffers`]).
    pub fn upload_part_buffers(mut self, count: usize) -> Self {
        self.config.upload_part_buffers = count.max(1);
        self
    }

    /// Runs replication on `queue` (Redis, say) instead of the metadata store's outbox; a
    /// relay in the background runner then moves the outbox's jobs there.
    pub fn queue(mut self, queue: Arc<dyn JobQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Every behaviour setting at once (replacing those set so far).
    pub fn config(mut self, config: RegistryConfig) -> Self {
        if !config.preference.is_empty() {
            self.preference = Some(config.preference.clone());
        }
        self.config = config;
        self
    }

    /// Checks the settings, wraps every location in its layers and the health layer, and
    /// builds the registry. Fails with [`ErrorKind::Config`] when no location is configured,
    /// the preference or the default locations name an unknown one, or replication is on but
    /// the metadata store has no outbox and no queue was given.
    pub fn finish(self) -> Result<Registry> {
        let config_error = |message: String| Error::new(ErrorKind::Config, message);
        if self.locations.is_empty() {
            return Err(config_error("no storage location is configured".into()));
        }
        let mut config = self.config;
        config.preference = self
            .preference
            .unwrap_or_else(|| self.locations.keys().cloned().collect());
        if config.preference.is_empty() {
            return Err(config_error(
                "the storage preference names no location".into(),
            ));
        }
        for (what, ids) in [
            ("the storage preference", &config.preference),
            ("the default locations", &config.default_locations),
        ] {
            if let Some(unknown) = ids.iter().find(|id| !self.locations.contains_key(*id)) {
                return Err(config_error(format!(
                    "{what} names {unknown}, which is not a configured location"
                )));
            }
        }
        let outbox = self.metadata.outbox();
        let queue = match (self.queue, outbox.clone()) {
            (Some(queue), _) => Some(queue),
            (None, Some(outbox)) => Some(outbox),
            (None, None) if config.replication => {
                return Err(config_error(
                    "replication is on, but the metadata store records no replication jobs \
                     (its MetadataStore::outbox returned None) and no queue was given"
                        .into(),
                ))
            }
            (None, None) => None,
        };
        let health = Arc::new(HealthTracker::new(config.breaker.clone()));
        let chunked_buffers = super::slots::Slots::new(config.upload_part_buffers);
        let mut layers = self.layers;
        layers.push(Arc::new(HealthLayer::new(health.clone())));
        let locations = self
            .locations
            .into_iter()
            .map(|(id, engine)| {
                let layered = apply(&id, engine, &layers);
                (id, layered)
            })
            .collect();
        Ok(Registry {
            inner: Arc::new(Inner {
                health,
                metadata: self.metadata,
                locations,
                config,
                queue,
                outbox,
                drained: Default::default(),
                part_buffers: chunked_buffers,
                placements: super::group::GroupCommit::new(super::GROUP_BATCH)
                    .with_linger(super::PLACEMENT_LINGER),
                reads: super::group::GroupCommit::new(super::GROUP_BATCH),
            }),
        })
    }
}
