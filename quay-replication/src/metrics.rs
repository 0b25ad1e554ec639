//! Replication metrics, through the `metrics` facade (the binary installs the Prometheus
//! recorder). Labels are bounded: job kind, location, state; never a digest or repository.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `quay_replication_jobs_enqueued_total` | counter | `source` | jobs added by the reconciler or backfill (`source`); commits add theirs in their transaction |
//! | `quay_replication_jobs_completed_total` | counter | `kind`, `target` | jobs finished |
//! | `quay_replication_jobs_failed_total` | counter | `kind` | failed attempts that will be retried |
//! | `quay_replication_jobs_dead_total` | counter | `kind` | jobs dead-lettered |
//! | `quay_replication_jobs_deferred_total` | counter | `kind` | jobs put back because a location is down (no attempt counted) |
//! | `quay_replication_queue_depth` | gauge | `state` | jobs `pending`, `leased`, `dead` |
//! | `quay_replication_oldest_pending_seconds` | gauge | | age of the oldest job not dead |
//! | `quay_replication_bytes_copied_total` | counter | `source`, `target` | bytes copied per location pair |
//! | `quay_replication_lag_seconds` | histogram | `target` | from the job's enqueue (the commit) to the placement |

use quay_core::{JobKind, LocationId, QueueStats};

pub(crate) fn job_done(kind: JobKind, target: &LocationId) {
    metrics::counter!("quay_replication_jobs_completed_total",
        "kind" => kind.as_str(), "target" => target.to_string())
    .increment(1);
}

pub(crate) fn job_failed(kind: JobKind) {
    metrics::counter!("quay_replication_jobs_failed_total", "kind" => kind.as_str()).increment(1);
}

pub(crate) fn job_deferred(kind: JobKind) {
    metrics::counter!("quay_replication_jobs_deferred_total", "kind" => kind.as_str()).increment(1);
}

pub(crate) fn job_dead(kind: JobKind) {
    metrics::counter!("quay_replication_jobs_dead_total", "kind" => kind.as_str()).increment(1);
}

pub(crate) fn enqueued(source: &'static str, n: u64) {
    metrics::counter!("quay_replication_jobs_enqueued_total", "source" => source).increment(n);
}

pub(crate) fn copied(source: &LocationId, target: &LocationId, bytes: u64) {
    metrics::counter!("quay_replication_bytes_copied_total",
        "source" => source.to_string(), "target" => target.to_string())
    .increment(bytes);
}

pub(crate) fn lag(target: &LocationId, seconds: f64) {
    metrics::histogram!("quay_replication_lag_seconds", "target" => target.to_string())
        .record(seconds);
}

/// Publishes queue counts as gauges.
pub fn queue_gauges(stats: &QueueStats, now_ms: i64) {
    metrics::gauge!("quay_replication_queue_depth", "state" => "pending").set(stats.pending as f64);
    metrics::gauge!("quay_replication_queue_depth", "state" => "leased").set(stats.leased as f64);
    metrics::gauge!("quay_replication_queue_depth", "state" => "dead").set(stats.dead as f64);
    let age = stats
        .oldest_pending
        .map(|t| ((now_ms - t).max(0) as f64) / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("quay_replication_oldest_pending_seconds").set(age);
}
