//! # quay-replication
//!
//! Background replication of blobs between storage locations:
//!
//! - job queues implementing [`quay_core::JobQueue`]: the SQL queue lives beside the schema in
//!   `quay_storage::SqlJobQueue` (blob commits write their jobs in the same transaction);
//!   [`redis`] holds the Redis queue and the relay that feeds it from that SQL outbox;
//! - [`worker`]: claims jobs, copies blobs between locations with verification, records
//!   placements, deletes copies;
//! - [`reconciler`]: finds blobs missing from a default location and enqueues them;
//! - [`status`]: how far replication has come.
//!
//! With the `testkit` feature, [`testkit`] holds the `JobQueue` conformance suite.
#![deny(missing_docs)]

pub mod metrics;
pub mod reconciler;
pub mod redis;
pub mod status;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod worker;
