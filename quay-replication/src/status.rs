//! How far replication has come: per location, blobs and bytes held and missing, the jobs
//! acting on it and how far behind it is; the queue; dead-lettered jobs with their reasons;
//! the workers seen recently. Answers "is replication done?", and "is anyone working on it?".

use std::time::Duration;

use quay_core::metadata::{now_ms, TimestampMs};
use quay_core::{
    BadCopy, ErrorKind, Job, JobQueue, LocationId, LocationStats, MetadataStore, QueueStats,
    Result, TargetStats, WorkerBeat,
};
use serde::Serialize;

/// A worker counts as running when its last heartbeat is at most this old (six beats).
pub const WORKER_SEEN_WITHIN: Duration = Duration::from_secs(30);

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
    /// The workers whose heartbeat is at most [`WORKER_SEEN_WITHIN`] old, most recent first.
    pub workers: Vec<WorkerReport>,
    /// False when the queue cannot record workers: `workers` is then empty, and says nothing.
    pub workers_recorded: bool,
    /// True when no default location lacks any blob.
    pub complete: bool,
    /// Locations an operator drained (`quayctl location drain`): no new blob is written there.
    pub drained: Vec<LocationId>,
    /// Copies found missing or corrupt and not repaired yet (up to the dead-job limit),
    /// oldest first; an unrecoverable one has no good copy left anywhere.
    pub bad_copies: Vec<BadCopy>,
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
    /// How long ago the oldest blob the location lacks was committed, in seconds: how far
    /// behind the location is (`None` when it lacks nothing).
    pub lag_secs: Option<f64>,
    /// Jobs acting on the location: waiting, being worked on, dead (`None` when the queue
    /// cannot count per location).
    pub queue: Option<LocationQueue>,
    /// The location's health, when the caller knows it (the status page does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// The jobs acting on one location.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocationQueue {
    /// Jobs waiting.
    pub pending: u64,
    /// Jobs being worked on.
    pub leased: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Age of the oldest of its jobs not dead, in seconds.
    pub oldest_pending_age_secs: Option<f64>,
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

/// A worker seen recently.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    /// The worker's id.
    pub id: String,
    /// Its machine.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// What runs it (`quay-server`, `quayctl worker`, …).
    pub role: String,
    /// Seconds since its last heartbeat.
    pub seen_secs_ago: f64,
    /// Seconds since it started.
    pub up_secs: f64,
    /// Jobs it finished.
    pub jobs_done: u64,
    /// Failed attempts.
    pub jobs_failed: u64,
    /// Bytes it copied.
    pub bytes_copied: u64,
    /// Jobs running at its last heartbeat.
    pub running: u32,
}

fn age_secs(then: TimestampMs, now: TimestampMs) -> f64 {
    ((now - then).max(0) as f64) / 1000.0
}

impl LocationReport {
    fn new(s: LocationStats, queue: Option<&QueueStats>, now: TimestampMs) -> Self {
        LocationReport {
            location: s.location.to_string(),
            blobs: s.blobs,
            bytes: s.bytes,
            missing_blobs: s.missing_blobs,
            missing_bytes: s.missing_bytes,
            lag_secs: s.oldest_missing_at.map(|t| age_secs(t, now)),
            queue: queue.map(|q| LocationQueue {
                pending: q.pending,
                leased: q.leased,
                dead: q.dead,
                oldest_pending_age_secs: q.oldest_pending.map(|t| age_secs(t, now)),
            }),
            health: None,
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

impl WorkerReport {
    fn new(b: WorkerBeat, now: TimestampMs) -> Self {
        WorkerReport {
            seen_secs_ago: age_secs(b.seen_at, now),
            up_secs: age_secs(b.started_at, now),
            id: b.id,
            host: b.host,
            pid: b.pid,
            role: b.role,
            jobs_done: b.jobs_done,
            jobs_failed: b.jobs_failed,
            bytes_copied: b.bytes_copied,
            running: b.running,
        }
    }
}

/// Gathers a report for the default `locations`, with up to `dead_limit` dead jobs.
pub async fn gather(
    metadata: &dyn MetadataStore,
    queue: &dyn JobQueue,
    locations: &[LocationId],
    dead_limit: u64,
) -> Result<StatusReport> {
    let stats = metadata.location_stats(locations).await?;
    let q: QueueStats = queue.stats().await?;
    let per_target = match queue.target_stats().await {
        Ok(t) => Some(t),
        Err(e) if e.kind() == ErrorKind::Unsupported => None,
        Err(e) => return Err(e),
    };
    let dead = queue.dead_jobs(dead_limit).await?;
    let now = now_ms();
    let seen_since = now - i64::try_from(WORKER_SEEN_WITHIN.as_millis()).unwrap_or(0);
    let (workers, workers_recorded) = match queue.workers(seen_since).await {
        Ok(w) => (w, true),
        Err(e) if e.kind() == ErrorKind::Unsupported => (Vec::new(), false),
        Err(e) => return Err(e),
    };
    let complete = stats.iter().all(|s| s.missing_blobs == 0);
    let drained = metadata.drained_locations().await?;
    let bad_copies = match metadata.bad_copies(dead_limit).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::Unsupported => Vec::new(),
        Err(e) => return Err(e),
    };
    let queue_of = |l: &LocationId| -> Option<QueueStats> {
        let per_target: &Vec<TargetStats> = per_target.as_ref()?;
        Some(
            per_target
                .iter()
                .find(|t| &t.target == l)
                .map(|t| t.stats.clone())
                .unwrap_or_default(),
        )
    };
    Ok(StatusReport {
        locations: stats
            .into_iter()
            .map(|s| {
                let q = queue_of(&s.location);
                LocationReport::new(s, q.as_ref(), now)
            })
            .collect(),
        pending_jobs: q.pending,
        leased_jobs: q.leased,
        dead_jobs: q.dead,
        oldest_pending_age_secs: q.oldest_pending.map(|t| age_secs(t, now)),
        dead: dead.into_iter().map(DeadJob::from).collect(),
        workers: workers
            .into_iter()
            .map(|b| WorkerReport::new(b, now))
            .collect(),
        workers_recorded,
        complete,
        drained,
        bad_copies,
    })
}

/// `n` bytes in binary units: `512 B`, `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
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

/// `secs` as `42s`, `3m05s` or `2h10m`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl StatusReport {
    /// Copies missing over every location.
    pub fn missing_copies(&self) -> u64 {
        self.locations.iter().map(|l| l.missing_blobs).sum()
    }

    /// Bytes missing over every location.
    pub fn missing_bytes(&self) -> u64 {
        self.locations.iter().map(|l| l.missing_bytes).sum()
    }

    /// Whether work waits (a copy missing, or a job queued) while no worker was seen within
    /// [`WORKER_SEEN_WITHIN`]. False when the queue cannot record workers (nothing is known).
    pub fn nobody_working(&self) -> bool {
        self.workers_recorded
            && self.workers.is_empty()
            && (!self.complete || self.pending_jobs + self.leased_jobs > 0)
    }

    /// The warning for [`StatusReport::nobody_working`].
    pub fn no_worker_warning() -> String {
        format!(
            "no replication worker seen in the last {}s: nothing is draining the queue \
             (run `quayctl worker`, or quay-server without --no-worker)",
            WORKER_SEEN_WITHIN.as_secs()
        )
    }

    /// A human-readable rendering.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<20} {:>10} {:>12} {:>10} {:>12} {:>8} {:>10}\n",
            "LOCATION", "BLOBS", "BYTES", "MISSING", "MISSING B", "JOBS", "LAG"
        ));
        for l in &self.locations {
            out.push_str(&format!(
                "{:<20} {:>10} {:>12} {:>10} {:>12} {:>8} {:>10}\n",
                l.location,
                l.blobs,
                human_bytes(l.bytes),
                l.missing_blobs,
                human_bytes(l.missing_bytes),
                l.queue
                    .as_ref()
                    .map_or("-".to_owned(), |q| (q.pending + q.leased).to_string()),
                l.lag_secs.map_or("-".to_owned(), human_duration),
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
        if !self.workers_recorded {
            out.push_str("workers: this queue does not record them\n");
        } else if self.workers.is_empty() {
            out.push_str(&format!(
                "workers: none seen in the last {}s\n",
                WORKER_SEEN_WITHIN.as_secs()
            ));
        }
        for w in &self.workers {
            out.push_str(&format!(
                "worker: {}:{} ({}) up {}, {} jobs done, {} failed, {} copied, {} running, seen {} ago\n",
                w.host,
                w.pid,
                w.role,
                human_duration(w.up_secs),
                w.jobs_done,
                w.jobs_failed,
                human_bytes(w.bytes_copied),
                w.running,
                human_duration(w.seen_secs_ago)
            ));
        }
        for l in &self.drained {
            out.push_str(&format!("drained: {l} (no new blob is written there)\n"));
        }
        for b in &self.bad_copies {
            out.push_str(&format!(
                "{}: {} copy of {} in {}{}\n",
                if b.recoverable { "bad copy" } else { "LOST" },
                b.problem.as_str(),
                b.digest,
                b.location,
                if b.recoverable {
                    ", repair queued"
                } else {
                    ": no good copy left anywhere"
                }
            ));
        }
        if self.nobody_working() {
            out.push_str(&format!("WARNING: {}\n", Self::no_worker_warning()));
        }
        out.push_str(if self.complete {
            "replication complete\n"
        } else {
            "replication in progress\n"
        });
        out
    }
}
