//! # quay-core
//!
//! The domain of the quay-rs registry engine, with no I/O of its own:
//!
//! - validated names and digests ([`names`], [`digest`]), manifest parsing ([`manifest`]),
//!   byte ranges, and the one error type ([`error`]);
//! - the traits every backend implements: [`StorageEngine`] (one storage location),
//!   [`MetadataStore`] (uploads, blobs, placements, manifests, and the job outbox),
//!   [`JobQueue`], [`HealthCheck`], [`Authenticator`] and [`Authorizer`], with the Docker
//!   token format ([`auth`]);
//! - Quay's `config.yaml`, parsed and validated ([`config`]), readable by every crate;
//! - the engine, [`Registry`], assembled by [`RegistryBuilder`]: storage layers applied in one
//!   order ([`registry::layers`]), the per-location circuit breakers, placement routing for
//!   reads and copies ([`registry::route`]), the verified copy ([`registry::copy`]), uploads,
//!   manifests and tags.
//!
//! ```text
//!   HTTP (quay-http) ──► Registry ──► MetadataStore  (uploads, blobs, placements, manifests, outbox)
//!   background ─────────┘    └──────► StorageEngine × locations (layered, content-addressed)
//! ```
//!
//! Implementations live elsewhere: `quay-storage` (OpenDAL, sea-orm), `quay-replication`
//! (Redis queue, background runner), `quay-http` (the HTTP API and the assembly of a server).
#![deny(missing_docs)]

pub mod auth;
pub mod config;
pub mod digest;
pub mod error;
pub mod events;
pub mod gc;
pub mod health;
pub mod manifest;
pub mod metadata;
pub mod names;
pub mod queue;
pub mod range;
pub mod registry;
pub mod repair;
pub mod sha256_state;
pub mod storage;

pub use auth::{Actions, Authenticator, Authorizer, Identity, Secret};
pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::{Error, ErrorKind, Result};
pub use events::{Delivery, DeliveryState, EventStore, NewEvent};
pub use gc::{CollectedBlob, GarbageIndex, GcCutoffs, TagHistoryEntry};
pub use health::{BreakerConfig, HealthCheck, HealthStatus, HealthTracker, LocationState};
pub use manifest::{media_types, parse_manifest, Descriptor, ManifestKind, ParsedManifest};
pub use metadata::{
    BlobCommit, BlobIndex, BlobRecord, JobOutbox, LocationRemoval, LocationStats, ManifestIndex,
    ManifestRecord, MetadataStore, NewManifest, Page, PlacedCopy, PlacementIndex, PlacementToAdd,
    UploadPart, UploadRecord, UploadStore,
};
pub use names::{LocationId, Reference, RepositoryName, Tag};
pub use queue::{
    FailOutcome, Job, JobKind, JobQueue, JobSpec, Lease, QueueStats, RetryPolicy, TargetStats,
    WorkerBeat,
};
pub use range::ByteRange;
pub use registry::{Registry, RegistryBuilder, RegistryConfig};
pub use repair::{BadCopy, CopyProblem, RepairIndex};
pub use storage::{
    ByteStream, EntryStream, ObjectEntry, ObjectMeta, StorageCapabilities, StorageEngine,
};
