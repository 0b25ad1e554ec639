//! How far replication has come: per location, blobs and bytes held and missing; the queue;
//! dead-lettered jobs with their reasons. Answers "is replication done?".

use quay_core::metadata::now_ms;
use quay_core::{Job, JobQueue, LocationId, LocationStats, MetadataStore, QueueStats, Result};
use serde::Serialize;

/// A status report.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Per default location.
    pub locations: Vec<LocationReport>,
    /// Jobs waiting.
    pub pending_jobs: u64,
    /// Jobs being worked on.
    pub leased_jobs: u64,
    /// Jobs dead-lettered.
    pub dead_jobs: u64,
    /// Age of the oldest job not dead, in seconds.
    pub oldest_pending_age_secs: Option<f64>,
    /// The dead-lettered jobs (up to a limit), with their last error.
    pub dead: Vec<DeadJob>,
    /// True when no default location lacks any blob.
    pub complete: bool,
}

/// One location's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LocationReport {
    /// The location.
    pub location: String,
    /// Blobs held.
    pub blobs: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Blobs missing.
    pub missing_blobs: u64,
    /// Bytes missing.
    pub missing_bytes: u64,
}

/// A dead-lettered job.
#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    /// Job id.
    pub id: String,
    /// `replicate` or `delete`.
    pub kind: String,
    /// The blob.
    pub digest: String,
    /// The location.
    pub target: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: Option<String>,
}

impl From<LocationStats> for LocationReport {
    fn from(s: LocationStats) -> Self {
        LocationReport {
            location: s.location.to_string(),
            blobs: s.blobs,
            bytes: s.bytes,
            missing_blobs: s.missing_blobs,
            missing_bytes: s.missing_bytes,
        }
    }
}

impl From<Job> for DeadJob {
    fn from(j: Job) -> Self {
        DeadJob {
            id: j.id,
            kind: j.spec.kind.to_string(),
            digest: j.spec.digest.to_string(),
            target: j.spec.target.to_string(),
            attempts: j.attempts,
            error: j.last_error,
        }
    }
}

/// Gathers a report for the default `locations`.
pub async fn gather(
    metadata: &dyn MetadataStore,
    queue: &dyn JobQueue,
    locations: &[LocationId],
    dead_limit: u64,
) -> Result<StatusReport> {
    let stats = metadata.location_stats(locations).await?;
    let q: QueueStats = queue.stats().await?;
    let dead = queue.dead_jobs(dead_limit).await?;
    let complete = stats.iter().all(|s| s.missing_blobs == 0);
    Ok(StatusReport {
        locations: stats.into_iter().map(LocationReport::from).collect(),
        pending_jobs: q.pending,
        leased_jobs: q.leased,
        dead_jobs: q.dead,
        oldest_pending_age_secs: q
            .oldest_pending
            .map(|t| ((now_ms() - t).max(0) as f64) / 1000.0),
        dead: dead.into_iter().map(DeadJob::from).collect(),
        complete,
    })
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl StatusReport {
    /// A human-readable rendering.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<20} {:>10} {:>12} {:>10} {:>12}\n",
            "LOCATION", "BLOBS", "BYTES", "MISSING", "MISSING B"
        ));
        for l in &self.locations {
            out.push_str(&format!(
                "{:<20} {:>10} {:>12} {:>10} {:>12}\n",
                l.location,
                l.blobs,
                human_bytes(l.bytes),
                l.missing_blobs,
                human_bytes(l.missing_bytes)
            ));
        }
        out.push_str(&format!(
            "queue: {} pending, {} in progress, {} dead",
            self.pending_jobs, self.leased_jobs, self.dead_jobs
        ));
        if let Some(age) = self.oldest_pending_age_secs {
            out.push_str(&format!("; oldest pending {age:.1}s"));
        }
        out.push('\n');
        for d in &self.dead {
            out.push_str(&format!(
                "dead: {} {} -> {} after {} attempts: {}\n",
                d.kind,
                d.digest,
                d.target,
                d.attempts,
                d.error.as_deref().unwrap_or("")
            ));
        }
        out.push_str(if self.complete {
            "replication complete\n"
        } else {
            "replication in progress\n"
        });
        out
    }
}
