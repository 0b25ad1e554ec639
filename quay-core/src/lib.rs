//! # quay-core
//!
//! The domain of the quay-rs registry engine: validated names and digests, manifest parsing,
//! the error model, the pluggable traits, and the [`Registry`] engine that composes them.
//!
//! This crate does no I/O of its own. Storage locations ([`StorageEngine`]), the metadata
//! store ([`MetadataStore`]) and health checks ([`HealthCheck`]) are traits implemented in other
//! crates (`quay-storage` for OpenDAL and sea-orm) or by the embedding service.
//!
//! ```text
//!   HTTP (quay-http) ──► Registry ──► MetadataStore  (uploads, blobs, placements, manifests)
//!                            └──────► StorageEngine × locations (content-addressed objects)
//! ```
#![deny(missing_docs)]

pub mod auth;
pub mod digest;
pub mod error;
pub mod health;
pub mod manifest;
pub mod metadata;
pub mod names;
pub mod queue;
pub mod range;
pub mod registry;
pub mod storage;

pub use auth::{Actions, Authenticator, Authorizer, Identity, Secret};
pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::{Error, ErrorKind, Result};
pub use health::{BreakerConfig, HealthCheck, HealthStatus, HealthTracker, LocationState};
pub use manifest::{media_types, parse_manifest, Descriptor, ManifestKind, ParsedManifest};
pub use metadata::{
    BlobCommit, BlobIndex, BlobRecord, LocationRemoval, LocationStats, ManifestIndex,
    ManifestRecord, MetadataStore, NewManifest, Page, PlacementIndex, UploadPart, UploadRecord,
    UploadStore,
};
pub use names::{LocationId, Reference, RepositoryName, Tag};
pub use queue::{FailOutcome, Job, JobKind, JobQueue, JobSpec, Lease, QueueStats, RetryPolicy};
pub use range::ByteRange;
pub use registry::{Registry, RegistryConfig};
pub use storage::{
    ByteStream, EntryStream, ObjectEntry, ObjectMeta, StorageCapabilities, StorageEngine,
};
