//! Conformance suites for implementations of `quay-core`'s traits, and helpers that give each
//! test run an isolated backend. Enabled by the `testkit` feature.
//!
//! A backend whose service is missing makes these helpers fail with a message that says how to
//! start it: they never skip.

pub mod azure;
pub mod metadata;
pub mod postgres;
pub mod s3;
pub mod storage;
