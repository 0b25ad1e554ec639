//! Replication events and their webhook deliveries, kept in the database so that several
//! instances deliver each event once.
//!
//! An event is recorded once per webhook under a key (`image_replicated:<repo>@<digest>`, …):
//! the first instance to record it owns it, any other's attempt is a no-op. Deliveries are
//! then claimed under a lease, like replication jobs, retried with a back-off while the
//! receiver is down, and marked done or given up.

use async_trait::async_trait;

use crate::digest::Digest;
use crate::error::Result;
use crate::metadata::TimestampMs;
use crate::names::RepositoryName;

/// The event sent when every blob of an image is in every default location.
pub const IMAGE_REPLICATED: &str = "image_replicated";

/// The event sent when a blob's replication (or removal) job is dead-lettered.
pub const BLOB_DEAD_LETTERED: &str = "blob_dead_lettered";

/// An event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// What makes it unique (the same key is recorded once per webhook, ever).
    pub key: String,
    /// [`IMAGE_REPLICATED`] or [`BLOB_DEAD_LETTERED`].
    pub kind: String,
    /// The image's repository, for image events.
    pub repository: Option<RepositoryName>,
    /// The image's manifest digest, or the blob's.
    pub digest: Option<Digest>,
    /// The JSON body to post.
    pub payload: String,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its id in the store.
    pub id: i64,
    /// The webhook's URL.
    pub webhook: String,
    /// The event's key.
    pub key: String,
    /// The event's kind.
    pub kind: String,
    /// The JSON body to post.
    pub payload: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// Where a delivery stands, for tests and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    /// The webhook's URL.
    pub webhook: String,
    /// The event's key.
    pub key: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was delivered, if it was.
    pub delivered_at: Option<TimestampMs>,
    /// Whether it was given up.
    pub given_up: bool,
    /// The latest failure.
    pub last_error: Option<String>,
}

/// Events and their deliveries.
///
/// # Behavior
///
/// - `unannounced_images` pages (by repository, then digest, after `after`) through manifests
///   a tag points at, pushed at or after `since`, for which no [`IMAGE_REPLICATED`] event is
///   recorded yet.
/// - `record_event` records the event once per webhook of `webhooks` in one transaction and
///   returns true, or returns false and records nothing when its key was recorded before (by
///   this or another instance).
/// - `claim_deliveries` hands out deliveries neither done nor given up, whose next attempt is
///   due at `now` and that no other claim holds (or whose lease expired), leasing each to
///   `owner` until `now + lease_ms`.
/// - `delivery_done` and `delivery_failed` act only while `owner` holds the lease; a failure
///   with `retry_at` schedules the next attempt, without it gives the delivery up.
#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// Tagged images with no [`IMAGE_REPLICATED`] event yet (see the trait's behaviour).
    async fn unannounced_images(
        &self,
        since: TimestampMs,
        after: Option<&(RepositoryName, Digest)>,
        limit: u64,
    ) -> Result<Vec<(RepositoryName, Digest)>>;
    /// Records `event` for each of `webhooks`, once ever per key.
    async fn record_event(&self, event: &NewEvent, webhooks: &[String]) -> Result<bool>;
    /// Claims deliveries due at `now`.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: TimestampMs,
        lease_ms: i64,
        limit: u64,
    ) -> Result<Vec<Delivery>>;
    /// Marks a delivery done.
    async fn delivery_done(&self, id: i64, owner: &str) -> Result<()>;
    /// Records a failed attempt; retries at `retry_at`, or gives up without it.
    async fn delivery_failed(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_at: Option<TimestampMs>,
    ) -> Result<()>;
    /// Every delivery of events whose key starts with `key_prefix`, oldest first.
    async fn deliveries(&self, key_prefix: &str) -> Result<Vec<DeliveryState>>;
}
