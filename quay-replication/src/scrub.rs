//! The scrubber: reads every stored copy of a location at a bounded rate, checks its size and
//! sha256, and has the engine record and repair what is missing or corrupt
//! ([`Registry::report_bad_copy`], [`Registry::repair_copy`]). Run by `quayctl scrub` and, when
//! `QUAY_SCRUB_BYTES_PER_SEC` is set, by the background runner (one full pass per
//! `QUAY_SCRUB_INTERVAL_SECS` across the registry, under a lease).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `quay_scrub_copies_checked_total` | counter | `location` | copies read and checked |
//! | `quay_scrub_bytes_checked_total` | counter | `location` | their bytes |
//! | `quay_scrub_runs_total` | counter | `outcome` (`ok`, `error`) | scrub passes of a location |
//!
//! Bad copies count in `quay_storage_bad_copies_total` and, when no other copy exists,
//! `quay_storage_unrecoverable_copies_total`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use quay_core::registry::CopyCheck;
use quay_core::{CopyProblem, Digest, LocationId, Registry, Result};
use tracing::{info, warn};

/// Blobs read per page of placements.
const PAGE: u64 = 500;
/// Copies read at once: a location answers many small reads far faster side by side than one
/// after the other (the rate limit, when set, holds across all of them).
const READS_AT_ONCE: usize = 8;
/// The lease that spaces background scrubs across the registry.
pub const SCRUB_LEASE: &str = "scrub";

/// How a scrub runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrubOptions {
    /// Replace bad copies now, through the verified copy path (else a repair job is queued).
    pub repair: bool,
    /// Report only: record nothing, repair nothing.
    pub dry_run: bool,
    /// Bytes read per second at most (`None`: as fast as the location answers).
    pub bytes_per_sec: Option<u64>,
}

/// What a scrub of one location found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LocationScrub {
    /// Copies read.
    pub checked: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Copies missing.
    pub missing: Vec<Digest>,
    /// Copies whose size or digest is wrong.
    pub corrupt: Vec<Digest>,
    /// Bad copies replaced by a verified copy (with `repair`).
    pub repaired: u64,
    /// Bad copies of blobs with no other copy: they cannot be repaired.
    pub unrecoverable: Vec<Digest>,
}

/// A scrub's findings per location.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScrubReport {
    /// Per location.
    pub locations: BTreeMap<LocationId, LocationScrub>,
}

impl ScrubReport {
    /// Whether every copy read was good.
    pub fn clean(&self) -> bool {
        self.locations
            .values()
            .all(|l| l.missing.is_empty() && l.corrupt.is_empty())
    }

    /// The report as an operator reads it.
    pub fn render(&self, dry_run: bool) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (location, l) in &self.locations {
            let _ = writeln!(
                out,
                "{location}: {} copies ({} bytes) checked, {} missing, {} corrupt{}",
                l.checked,
                l.bytes,
                l.missing.len(),
                l.corrupt.len(),
                if dry_run {
                    String::new()
                } else {
                    format!(", {} repaired", l.repaired)
                }
            );
            for d in &l.missing {
                let _ = writeln!(out, "  missing  {d}");
            }
            for d in &l.corrupt {
                let _ = writeln!(out, "  corrupt  {d}");
            }
            for d in &l.unrecoverable {
                let _ = writeln!(out, "  NO GOOD COPY LEFT  {d}");
            }
        }
        if self.clean() {
            out.push_str("every copy checked is good\n");
        }
        out
    }
}

/// Keeps reads under a rate: sleeps as needed after each chunk.
struct Pacer {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    /// Counts `n` more bytes; the sleep that keeps the reads under the rate.
    fn pace(&mut self, n: u64) -> tokio::time::Sleep {
        self.bytes += n;
        let wait = match self.rate.filter(|r| *r > 0) {
            Some(rate) => {
                let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
                due.saturating_sub(self.started.elapsed())
            }
            None => Duration::ZERO,
        };
        tokio::time::sleep(wait)
    }
}

/// Scrubs `location`: every copy placed there is read and checked; bad ones are recorded and
/// repaired (queued, or now with `repair`), unless `dry_run`. `progress` gets the running
/// count after each copy.
pub async fn scrub_location(
    registry: &Registry,
    location: &LocationId,
    options: ScrubOptions,
    mut progress: impl FnMut(&LocationScrub),
) -> Result<LocationScrub> {
    let mut found = LocationScrub::default();
    let pacer = std::sync::Mutex::new(Pacer {
        rate: options.bytes_per_sec,
        started: Instant::now(),
        bytes: 0,
    });
    // The sleep that keeps the reads under the rate (the lock is held only to count).
    let pace = |n: u64| {
        let sleep = match pacer.lock() {
            Ok(mut p) => p.pace(n),
            Err(poisoned) => poisoned.into_inner().pace(n),
        };
        sleep
    };
    let mut after: Option<Digest> = None;
    loop {
        let page = registry
            .metadata()
            .placed_blobs(location, after.as_ref(), PAGE)
            .await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        // Reads run side by side; their findings are handled in page order, one at a time.
        let page_full = page.len() as u64 == PAGE;
        let mut checks = futures::stream::iter(page)
            .map(|(digest, size)| async move {
                let check = registry.check_copy(&digest, size, location, pace).await;
                (digest, size, check)
            })
            .buffered(READS_AT_ONCE);
        while let Some((digest, size, check)) = checks.next().await {
            let check = check?;
            found.checked += 1;
            found.bytes += size;
            metrics::counter!("quay_scrub_copies_checked_total", "location" => location.to_string())
                .increment(1);
            metrics::counter!("quay_scrub_bytes_checked_total", "location" => location.to_string())
                .increment(size);
            if let CopyCheck::Bad(problem) = check {
                match problem {
                    CopyProblem::Missing => found.missing.push(digest.clone()),
                    CopyProblem::Corrupt => found.corrupt.push(digest.clone()),
                }
                if !options.dry_run {
                    let recoverable = registry.report_bad_copy(&digest, location, problem).await?;
                    if !recoverable {
                        found.unrecoverable.push(digest.clone());
                    } else if options.repair && registry.repair_copy(&digest, location).await? {
                        found.repaired += 1;
                    }
                }
            }
            progress(&found);
        }
        if !page_full {
            break;
        }
    }
    Ok(found)
}

/// Scrubs `locations` one after the other.
pub async fn scrub(
    registry: &Registry,
    locations: &[LocationId],
    options: ScrubOptions,
    mut progress: impl FnMut(&LocationId, &LocationScrub),
) -> Result<ScrubReport> {
    let mut report = ScrubReport::default();
    for location in locations {
        let result = scrub_location(registry, location, options, |f| progress(location, f)).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("quay_scrub_runs_total", "outcome" => outcome).increment(1);
        report.locations.insert(location.clone(), result?);
    }
    Ok(report)
}

/// Scrubs every location at `bytes_per_sec`, once per `every` across the registry, until
/// `shutdown` resolves.
pub(crate) async fn run(
    registry: Registry,
    bytes_per_sec: u64,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        // One instance per interval takes the lease (a fresh holder: only an expired lease is
        // taken) and scrubs.
        let holder = uuid::Uuid::new_v4().to_string();
        let due = registry
            .metadata()
            .acquire_lease(SCRUB_LEASE, &holder, every)
            .await;
        if let Ok(true) = due {
            let locations: Vec<LocationId> = registry.locations().keys().cloned().collect();
            let options = ScrubOptions {
                repair: false,
                dry_run: false,
                bytes_per_sec: Some(bytes_per_sec),
            };
            let pass = scrub(&registry, &locations, options, |_, _| {});
            tokio::select! {
                _ = &mut shutdown => break,
                result = pass => match result {
                    Ok(report) if report.clean() => info!("scrub found every copy good"),
                    Ok(report) => warn!(report = %report.render(false), "scrub found bad copies"),
                    Err(e) => warn!(error = %e, "scrub failed"),
                },
            }
        } else if let Err(e) = due {
            warn!(error = %e, "cannot take the scrub lease");
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_secs(60).min(every)) => {}
        }
    }
}
