//! # quay-storage
//!
//! Implementations of `quay-core`'s storage and metadata traits:
//!
//! - [`OpendalStorage`]: a [`quay_core::StorageEngine`] over Apache OpenDAL (fs, memory, the S3
//!   family, GCS, Azure Blob, Swift), and [`layers`] that wrap any engine (timeouts, metrics,
//!   fault injection).
//! - [`SqlMetadataStore`]: a [`quay_core::MetadataStore`] over sea-orm, on SQLite (the embedded
//!   default) and PostgreSQL, with its own schema migrations.
//!
//! With the `testkit` feature, [`testkit`] exposes the conformance suites that every
//! implementation of those traits must pass, so a downstream backend can run the same cases.
#![deny(missing_docs)]

pub mod config;
#[cfg(feature = "backends")]
pub mod layers;
#[cfg(feature = "backends")]
pub mod opendal;
#[cfg(feature = "backends")]
pub mod sql;
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "backends")]
pub use crate::opendal::OpendalStorage;
#[cfg(feature = "backends")]
pub use crate::sql::{SqlJobQueue, SqlMetadataStore};
