//! The conformance suite of [`JobQueue`](quay_core::JobQueue), and harnesses that give each
//! case an isolated queue on SQLite, PostgreSQL and Redis. Enabled by the `testkit` feature.
//!
//! A backend whose service is missing makes its harness fail with a message that says how to
//! start it: cases never skip.

pub mod queue;
pub mod redis;
pub mod sql;
