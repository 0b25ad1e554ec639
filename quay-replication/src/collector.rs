//! The garbage collector of the background runner: a pass every interval, one pass at a time
//! across every instance of the registry (a lease in the metadata store, not a second
//! scheduler), and the orphan sweep of each location at most once per its own interval across
//! the registry.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `quay_gc_runs_total` | counter | `outcome` (`ok`, `error`) | collection passes |
//! | `quay_gc_duration_seconds` | histogram | | length of a pass |
//! | `quay_gc_last_run_timestamp_seconds` | gauge | | end of the last successful pass (Unix time) |
//! | `quay_gc_manifests_removed_total` | counter | | manifests removed |
//! | `quay_gc_blobs_removed_total` | counter | `location` | blobs removed (a copy per location) |
//! | `quay_gc_bytes_removed_total` | counter | `location` | their bytes |
//! | `quay_gc_orphans_removed_total` | counter | `location` | objects with no row removed |

use std::future::Future;
use std::time::Duration;

use quay_core::metadata::now_ms;
use quay_core::registry::{GcPolicy, GcReport};
use quay_core::{Registry, Result};
use tracing::{debug, warn};

/// The lease of a collection pass.
pub const GC_LEASE: &str = "gc";
/// The lease that spaces orphan sweeps across the registry (never released: it expires).
pub const SWEEP_LEASE: &str = "gc-orphan-sweep";

/// How the background collector runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorConfig {
    /// What a pass may collect (its `orphan_grace` and `dry_run` are set per pass).
    pub policy: GcPolicy,
    /// Time between passes (`GARBAGE_COLLECTION_FREQUENCY`).
    pub every: Duration,
    /// The orphan sweep: objects with no row untouched this long are removed, at most once
    /// per `sweep_every` across the registry; `None`: no sweep.
    pub orphans: Option<(Duration, Duration)>,
}

/// Runs one pass under the collection lease, as `holder`. Returns `None` when another
/// instance holds the lease. Records the pass's metrics.
pub async fn collect_once(
    registry: &Registry,
    policy: &GcPolicy,
    holder: &str,
    progress: impl FnMut(&str),
) -> Result<Option<GcReport>> {
    let meta = registry.metadata();
    let lease = lease_length(policy);
    if !meta.acquire_lease(GC_LEASE, holder, lease).await? {
        return Ok(None);
    }
    let result = registry.collect_garbage(policy, progress).await;
    if let Err(e) = meta.release_lease(GC_LEASE, holder).await {
        warn!(error = %e, "could not release the collection lease; it expires by itself");
    }
    record(&result);
    result.map(Some)
}

/// A pass is given this long before another instance may take over.
fn lease_length(policy: &GcPolicy) -> Duration {
    // Long enough for a large pass; a crashed collector's lease simply expires.
    if policy.orphan_grace.is_some() {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(600)
    }
}

fn record(result: &Result<GcReport>) {
    match result {
        Ok(report) => {
            metrics::counter!("quay_gc_runs_total", "outcome" => "ok").increment(1);
            metrics::histogram!("quay_gc_duration_seconds").record(report.seconds);
            metrics::gauge!("quay_gc_last_run_timestamp_seconds").set(now_ms() as f64 / 1000.0);
            if report.dry_run {
                return;
            }
            metrics::counter!("quay_gc_manifests_removed_total").increment(report.manifests);
            for (location, removed) in &report.blobs {
                let l = location.to_string();
                metrics::counter!("quay_gc_blobs_removed_total", "location" => l.clone())
                    .increment(removed.count);
                metrics::counter!("quay_gc_bytes_removed_total", "location" => l)
                    .increment(removed.bytes);
            }
            for (location, removed) in &report.orphans {
                metrics::counter!("quay_gc_orphans_removed_total",
                    "location" => location.to_string())
                .increment(removed.count);
            }
        }
        Err(_) => metrics::counter!("quay_gc_runs_total", "outcome" => "error").increment(1),
    }
}

/// Collects every `config.every` until `shutdown` resolves.
pub(crate) async fn run(
    registry: Registry,
    config: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let holder = uuid::Uuid::new_v4().to_string();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(config.every) => {}
        }
        let mut policy = config.policy.clone();
        policy.dry_run = false;
        policy.orphan_grace = None;
        if let Some((grace, sweep_every)) = config.orphans {
            // The sweep lease is taken for its whole interval and never given back; a fresh
            // holder each time, so that it is taken only once it has expired.
            let attempt = uuid::Uuid::new_v4().to_string();
            match registry
                .metadata()
                .acquire_lease(SWEEP_LEASE, &attempt, sweep_every)
                .await
            {
                Ok(true) => policy.orphan_grace = Some(grace),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cannot take the orphan-sweep lease"),
            }
        }
        match collect_once(&registry, &policy, &holder, |_| {}).await {
            Ok(Some(report)) => debug!(?report, "garbage collection pass done"),
            Ok(None) => debug!("another instance is collecting"),
            Err(e) => warn!(error = %e, "garbage collection pass failed"),
        }
    }
}
