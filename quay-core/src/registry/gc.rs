//! One garbage-collection pass: what nothing keeps alive leaves the database, and its stored
//! copies leave every location through delete jobs; objects no row owns are swept from each
//! location. Online: no read-only window; the races with concurrent pushes are closed in the
//! metadata store (see [`GarbageIndex`](crate::GarbageIndex)).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing::{debug, info, warn};

use super::Registry;
use crate::digest::Digest;
use crate::error::Result;
use crate::gc::GcCutoffs;
use crate::manifest::parse_manifest;
use crate::metadata::now_ms;
use crate::names::{LocationId, RepositoryName};

/// Manifests whose references are backfilled per round.
const BACKFILL_PAGE: u64 = 500;
/// Objects checked against the placements per query of the orphan sweep.
const SWEEP_PAGE: usize = 1000;

/// How a pass decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPolicy {
    /// The time-machine window: a moved or deleted tag keeps its former manifest this long
    /// (Quay's `DEFAULT_TAG_EXPIRATION`).
    pub tag_expiration: Duration,
    /// A manifest pushed or a blob linked this recently is never collected (Quay's
    /// `PUSH_TEMP_TAG_EXPIRATION_SEC`).
    pub push_protection: Duration,
    /// Sweep each location for objects with no row, untouched this long; `None`: no sweep.
    pub orphan_grace: Option<Duration>,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            tag_expiration: Duration::from_secs(14 * 24 * 3600),
            push_protection: Duration::from_secs(3600),
            orphan_grace: None,
            dry_run: false,
        }
    }
}

/// Blobs or objects, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    /// How many.
    pub count: u64,
    /// Their bytes (as recorded, or as listed).
    pub bytes: u64,
}

impl Removed {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// What a pass removed (or, dry, would remove).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GcReport {
    /// Whether nothing was removed because it was a dry run.
    pub dry_run: bool,
    /// Manifests whose references were recorded first (written by an older release).
    pub backfilled: u64,
    /// Tag history entries past the window.
    pub history_expired: u64,
    /// Manifests removed.
    pub manifests: u64,
    /// Blob links removed from repositories.
    pub links: u64,
    /// Blobs removed, per location that held them (each copy is deleted by a delete job).
    pub blobs: BTreeMap<LocationId, Removed>,
    /// Blobs removed from the database.
    pub blobs_total: u64,
    /// Objects with no row removed from each location by the orphan sweep.
    pub orphans: BTreeMap<LocationId, Removed>,
    /// Locations the sweep skipped (down, or failing), with the reason.
    pub skipped: BTreeMap<LocationId, String>,
    /// How long the pass took, in seconds.
    pub seconds: f64,
}

impl GcReport {
    /// The report as an operator reads it.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "garbage collection {}({:.1}s)",
            if self.dry_run { "dry run " } else { "" },
            self.seconds
        );
        let _ = writeln!(out, "  manifests {verb}: {}", self.manifests);
        let _ = writeln!(out, "  blob links {verb}: {}", self.links);
        let _ = writeln!(out, "  blobs {verb}: {}", self.blobs_total);
        for (location, r) in &self.blobs {
            let _ = writeln!(
                out,
                "    {location}: {} copies, {} bytes (deleted by delete jobs)",
                r.count, r.bytes
            );
        }
        for (location, r) in &self.orphans {
            let _ = writeln!(
                out,
                "  orphan objects in {location} {verb}: {}, {} bytes",
                r.count, r.bytes
            );
        }
        for (location, why) in &self.skipped {
            let _ = writeln!(out, "  {location} not swept: {why}");
        }
        if self.backfilled > 0 {
            let _ = writeln!(
                out,
                "  references recorded for {} older manifests",
                self.backfilled
            );
        }
        if self.history_expired > 0 {
            let _ = writeln!(
                out,
                "  tag history entries expired: {}",
                self.history_expired
            );
        }
        out
    }

    /// Whether the pass removed (or would remove) nothing.
    pub fn is_empty(&self) -> bool {
        self.manifests == 0
            && self.links == 0
            && self.blobs_total == 0
            && self.orphans.values().all(|r| r.count == 0)
    }
}

impl Registry {
    /// Runs one garbage-collection pass under `policy`. `progress` is told of each step as it
    /// starts. Call it under the collection lease ([`crate::GarbageIndex::acquire_lease`]) so
    /// that one instance at a time collects; the background runner does.
    pub async fn collect_garbage(
        &self,
        policy: &GcPolicy,
        mut progress: impl FnMut(&str),
    ) -> Result<GcReport> {
        let started = Instant::now();
        let meta = &self.inner.metadata;
        let now = now_ms();
        let cutoffs = GcCutoffs {
            history_before: now - millis(policy.tag_expiration),
            pushed_after: now - millis(policy.push_protection),
        };
        let mut report = GcReport {
            dry_run: policy.dry_run,
            ..GcReport::default()
        };
        progress("recording the references of older manifests");
        report.backfilled = self.backfill_references().await?;
        if !policy.dry_run {
            progress("expiring tag history");
            report.history_expired = meta.expire_tag_history(cutoffs.history_before).await?;
        }
        progress("collecting manifests");
        report.manifests = meta.collect_manifests(cutoffs, policy.dry_run).await?.len() as u64;
        progress("collecting blob links");
        report.links = meta.collect_links(cutoffs, policy.dry_run).await?.len() as u64;
        progress("collecting blobs");
        for blob in meta.collect_blobs(cutoffs, policy.dry_run).await? {
            report.blobs_total += 1;
            for location in &blob.locations {
                report
                    .blobs
                    .entry(location.clone())
                    .or_default()
                    .add(blob.size);
            }
        }
        if let Some(grace) = policy.orphan_grace {
            for location in self.inner.locations.keys() {
                progress(&format!("sweeping {location} for orphans"));
                if !self.inner.health.is_up(location) {
                    report
                        .skipped
                        .insert(location.clone(), "the location is down".into());
                    continue;
                }
                match self
                    .sweep_orphans(location, now - millis(grace), policy.dry_run)
                    .await
                {
                    Ok(removed) => {
                        report.orphans.insert(location.clone(), removed);
                    }
                    Err(e) => {
                        warn!(%location, error = %e, "orphan sweep failed");
                        report.skipped.insert(location.clone(), e.to_string());
                    }
                }
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        if !report.is_empty() {
            info!(
                dry_run = policy.dry_run,
                manifests = report.manifests,
                links = report.links,
                blobs = report.blobs_total,
                seconds = report.seconds,
                "garbage collection pass"
            );
        }
        Ok(report)
    }

    /// Records the references of manifests written before references were recorded.
    async fn backfill_references(&self) -> Result<u64> {
        let meta = &self.inner.metadata;
        let mut done = 0;
        loop {
            let page = meta.manifests_without_references(BACKFILL_PAGE).await?;
            if page.is_empty() {
                return Ok(done);
            }
            for (repository, record) in &page {
                let (blobs, children) = references_of(repository, record);
                meta.record_references(repository, &record.digest, &blobs, &children)
                    .await?;
                done += 1;
            }
            if (page.len() as u64) < BACKFILL_PAGE {
                return Ok(done);
            }
        }
    }

    /// Removes (unless `dry_run`) the objects of `location` under the content-addressed folders
    /// that no placement owns and that nobody wrote since `before`.
    async fn sweep_orphans(
        &self,
        location: &LocationId,
        before: i64,
        dry_run: bool,
    ) -> Result<Removed> {
        let storage = self.location(location)?.clone();
        let mut removed = Removed::default();
        for algorithm in ["sha256/", "sha512/"] {
            let mut entries = storage.list_entries(algorithm).await?;
            let mut page: Vec<(Digest, String, u64)> = Vec::new();
            loop {
                let next = entries.next().await;
                let end = next.is_none();
                if let Some(entry) = next {
                    let entry = entry?;
                    // Only objects that are old enough, and named as a blob should be.
                    let old = entry.last_modified.is_some_and(|t| t < before);
                    if let (true, Some(digest)) = (old, digest_of_path(&entry.path)) {
                        page.push((digest, entry.path, entry.size.unwrap_or(0)));
                    }
                }
                if page.len() >= SWEEP_PAGE || (end && !page.is_empty()) {
                    let digests: Vec<Digest> = page.iter().map(|(d, _, _)| d.clone()).collect();
                    let placed = self
                        .inner
                        .metadata
                        .placed_digests(location, &digests)
                        .await?;
                    for (digest, path, size) in page.drain(..) {
                        if placed.contains(&digest) {
                            continue;
                        }
                        debug!(%location, path, dry_run, "orphan object");
                        if !dry_run {
                            storage.delete(&path).await?;
                        }
                        removed.add(size);
                    }
                }
                if end {
                    break;
                }
            }
        }
        // Multipart uploads no session owns (a crash between starting one and saving it) are
        // the orphans of chunked uploads: aborted here too, where the server can list them.
        if !dry_run {
            let aborted = self.sweep_multipart_uploads(&storage, before).await?;
            if aborted > 0 {
                debug!(%location, aborted, "orphan multipart uploads aborted");
            }
        }
        Ok(removed)
    }
}

/// The digest an object path `sha256/ab/abcdef…` names, when it is one.
fn digest_of_path(path: &str) -> Option<Digest> {
    let mut parts = path.split('/');
    let (algorithm, prefix, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !hex.starts_with(prefix) {
        return None;
    }
    let digest: Digest = format!("{algorithm}:{hex}").parse().ok()?;
    (digest.object_path() == path).then_some(digest)
}

/// What a stored manifest references; a manifest that no longer parses references nothing.
fn references_of(
    repository: &RepositoryName,
    record: &crate::metadata::ManifestRecord,
) -> (Vec<Digest>, Vec<Digest>) {
    match parse_manifest(Some(&record.media_type), &record.content) {
        Ok(parsed) => super::manifests::references(&parsed),
        Err(e) => {
            warn!(%repository, digest = %record.digest, error = %e, "a stored manifest does not parse");
            (Vec::new(), Vec::new())
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_name_their_digest() {
        let hex = "ab".repeat(32);
        let d = digest_of_path(&format!("sha256/ab/{hex}")).unwrap();
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        assert!(digest_of_path(&format!("sha256/cd/{hex}")).is_none());
        assert!(digest_of_path(&format!("sha256/ab/{hex}/x")).is_none());
        assert!(digest_of_path("sha256/ab/abc").is_none());
        assert!(digest_of_path("uploads/x/y").is_none());
    }
}
