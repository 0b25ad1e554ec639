//! # quay-replication
//!
//! The background work of a registry instance, written against `quay-core`'s traits only
//! (no storage or database backend of its own):
//!
//! - [`Background`]: the one runner of every background duty, started together and stopped by
//!   one shutdown signal;
//! - [`worker`]: claims replication jobs and has the engine copy or remove blobs;
//! - [`reconciler`]: finds blobs missing from a default location and enqueues them;
//! - [`collector`]: garbage collection passes, one at a time across the registry;
//! - [`scrub`]: reads every stored copy at a bounded rate, records and repairs bad ones;
//! - [`redis`]: the Redis job queue, and the relay that feeds it from the metadata store's
//!   outbox (blob commits record their jobs there, in their own transaction);
//! - [`health`]: the health monitor behind `/health/*`, with storage and queue probes;
//! - [`status`]: how far replication has come, and which workers run;
//! - [`bench`]: the replication benchmark of `quayctl bench`;
//! - [`webhooks`]: replication events (an image fully replicated, a job dead-lettered) posted
//!   to webhooks, once each across instances.
//!
//! The SQL job queue lives beside its schema, in `quay_storage::SqlJobQueue`. With the
//! `testkit` feature, [`testkit`] holds the `JobQueue` conformance suite.
#![deny(missing_docs)]

pub mod background;
pub mod bench;
pub mod collector;
pub mod health;
pub mod metrics;
pub mod reconciler;
pub mod redis;
pub mod scrub;
pub mod status;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod webhooks;
pub mod worker;

pub use background::{Background, BackgroundHandle};
pub use health::{CheckRole, HealthMonitor, QueueProbe, StorageProbe};
