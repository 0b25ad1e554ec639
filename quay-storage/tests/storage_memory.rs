//! The storage conformance suite on OpenDAL's in-memory service.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use quay_storage::testkit::storage::MemoryFactory;

quay_storage::storage_conformance_tests!(MemoryFactory);
