//! The reconciler: compares placements with the default locations and enqueues a replication
//! job for every copy that is missing. It heals a lost queue (a flushed Redis), blobs pushed
//! before replication was turned on, and a location added to the defaults later.
//!
//! It pages through blobs by digest, one set-based query per page (not one per blob), and
//! enqueues each page in one call; enqueuing is idempotent, so running it while jobs are
//! queued adds nothing twice.

use std::time::Duration;

use quay_core::{JobKind, JobQueue, JobSpec, LocationId, MetadataStore, Result};
use tracing::{info, warn};

use crate::metrics as m;

/// Blobs examined per page.
pub const PAGE: u64 = 1000;

/// What one pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Blobs lacking at least one default location.
    pub blobs: u64,
    /// Missing copies found.
    pub missing: u64,
    /// Jobs that were not queued already.
    pub enqueued: u64,
}

/// One pass over every blob. `progress` is called after each page with the totals so far.
pub async fn reconcile(
    metadata: &dyn MetadataStore,
    queue: &dyn JobQueue,
    targets: &[LocationId],
    mut progress: impl FnMut(&Reconciled),
) -> Result<Reconciled> {
    let mut totals = Reconciled::default();
    let mut after = None;
    loop {
        let page = metadata
            .missing_placements(targets, after.as_ref(), PAGE)
            .await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        let next = last.digest.clone();
        let specs: Vec<JobSpec> = page
            .iter()
            .flat_map(|(blob, lacking)| {
                lacking.iter().map(|t| JobSpec {
                    kind: JobKind::Replicate,
                    digest: blob.digest.clone(),
                    target: t.clone(),
                })
            })
            .collect();
        totals.blobs += page.len() as u64;
        totals.missing += specs.len() as u64;
        let added = queue.enqueue(&specs).await?;
        totals.enqueued += added;
        m::enqueued("reconciler", added);
        progress(&totals);
        after = Some(next);
    }
    Ok(totals)
}

/// Runs [`reconcile`] every `interval` until `shutdown` resolves.
pub async fn run(
    metadata: std::sync::Arc<dyn MetadataStore>,
    queue: std::sync::Arc<dyn JobQueue>,
    targets: Vec<LocationId>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        match reconcile(metadata.as_ref(), queue.as_ref(), &targets, |_| {}).await {
            Ok(r) if r.enqueued > 0 => {
                info!(
                    missing = r.missing,
                    enqueued = r.enqueued,
                    "reconciler enqueued missing copies"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "reconciler pass failed"),
        }
        if let Ok(stats) = queue.stats().await {
            m::queue_gauges(&stats, quay_core::metadata::now_ms());
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
