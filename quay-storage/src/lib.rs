//! # quay-storage
//!
//! Implementations of `quay-core`'s storage and metadata traits:
//!
//! - [`OpendalStorage`]: a [`quay_core::StorageEngine`] over Apache OpenDAL (fs, memory, the S3
//!   family, GCS, Azure Blob, Swift), built from a location's configuration by
//!   [`build_location`];
//! - [`layers`]: wrappers around any engine (timeouts, metrics, fault injection), each with the
//!   [`StorageLayer`](quay_core::registry::StorageLayer) the registry builder applies;
//! - [`SqlMetadataStore`]: a [`quay_core::MetadataStore`] over sea-orm, on SQLite (the embedded
//!   default) and PostgreSQL, with its own schema migrations, and [`SqlJobQueue`], the job
//!   queue on its `replication_jobs` table (the store's outbox).
//!
//! With the `testkit` feature, [`testkit`] exposes the conformance suites that every
//! implementation of those traits must pass, so a downstream backend can run the same cases.
#![deny(missing_docs)]

pub mod layers;
mod location;
pub mod opendal;
pub mod sql;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use crate::location::build_location;
pub use crate::opendal::OpendalStorage;
pub use crate::sql::{SqlJobQueue, SqlMetadataStore};
