//! Replication webhooks (`QUAY_REPLICATION_WEBHOOKS`): an event is posted once per image when
//! every blob of it is in every default location (`image_replicated`), and once per
//! dead-lettered replication or removal job (`blob_dead_lettered`).
//!
//! Every instance's background runner may run [`Webhooks`]; the database decides who owns
//! what (see [`quay_core::events`]):
//!
//! 1. **Detect.** Tagged images pushed within the watch window that have no event yet are
//!    checked with [`Registry::image_status`]; a complete one is recorded, once per webhook,
//!    under the key `image_replicated:<repo>@<digest>`. Dead-lettered jobs of the queue are
//!    recorded under `blob_dead_lettered:<digest>:<target>:<job>:<enqueued at>`. Only the
//!    instance whose insert wins records an event: two instances noticing one image at once
//!    make one event.
//! 2. **Deliver.** Deliveries due are claimed under a lease and posted as JSON
//!    (`Content-Type: application/json`, `X-Quay-Event: <kind>`, `X-Quay-Event-Id: <key>`, and
//!    with a secret `X-Quay-Signature: sha256=<hex HMAC-SHA256 of the body>`). A 2xx answer
//!    ends it; anything else (refused, timed out, another status) is retried after 1 s, 2 s,
//!    4 s … up to 5 minutes between attempts, and given up after the webhook's
//!    `max_attempts`.
//!
//! Delivery is at least once in a strict sense: an instance that dies after the receiver
//! answered but before recording it delivers again after its lease; the event id header lets a
//! receiver drop such a repeat.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use quay_core::config::WebhookConfig;
use quay_core::events::{Delivery, EventStore, NewEvent, BLOB_DEAD_LETTERED, IMAGE_REPLICATED};
use quay_core::metadata::now_ms;
use quay_core::{Digest, JobKind, JobQueue, Reference, Registry, RepositoryName, Result};
use sha2::Sha256;
use tracing::{debug, info, warn};

/// Images looked at per page of the detection.
const PAGE: u64 = 500;

/// Dead-lettered jobs looked at per pass.
const DEAD_PAGE: u64 = 1000;

/// Deliveries claimed per pass.
const CLAIM: u64 = 32;

/// The longest pause between two attempts of a delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookPass {
    /// Events this instance recorded.
    pub recorded: u64,
    /// Deliveries that succeeded.
    pub delivered: u64,
    /// Deliveries that failed (to be retried or given up).
    pub failed: u64,
}

/// The webhook duty of the background runner; see the [module docs](self).
#[derive(Clone)]
pub struct Webhooks {
    registry: Registry,
    store: Arc<dyn EventStore>,
    queue: Option<Arc<dyn JobQueue>>,
    hooks: Vec<WebhookConfig>,
    interval: Duration,
    window: Duration,
    client: reqwest::Client,
    owner: String,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("hooks", &self.hooks)
            .field("interval", &self.interval)
            .field("window", &self.window)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Posts `registry`'s replication events to `hooks`, recording them in `store`. Dead
    /// letters are read from the registry's queue.
    pub fn new(registry: Registry, store: Arc<dyn EventStore>, hooks: Vec<WebhookConfig>) -> Self {
        let queue = registry.queue().cloned();
        Webhooks {
            registry,
            store,
            queue,
            hooks,
            interval: Duration::from_secs(5),
            window: Duration::from_secs(86_400),
            client: reqwest::Client::new(),
            owner: format!(
                "{}:{}:{}",
                crate::background::host_name(),
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
        }
    }

    /// How often a pass runs (5 s by default).
    #[must_use]
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every.max(Duration::from_millis(50));
        self
    }

    /// Images tagged within this long are watched (a day by default).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    fn urls_for(&self, event: &str) -> Vec<String> {
        let mut urls: Vec<String> = self
            .hooks
            .iter()
            .filter(|h| h.events.iter().any(|e| e == event))
            .map(|h| h.url.clone())
            .collect();
        urls.dedup();
        urls
    }

    /// One pass: records the events due, then delivers what is due. `seen` remembers the dead
    /// letters this process has recorded already, so they are not inserted every pass.
    pub async fn pass(&self, seen: &mut HashSet<String>) -> Result<WebhookPass> {
        let mut report = WebhookPass::default();
        report.recorded += self.detect_images().await?;
        report.recorded += self.detect_dead_letters(seen).await?;
        let (delivered, failed) = self.deliver().await?;
        report.delivered = delivered;
        report.failed = failed;
        Ok(report)
    }

    async fn detect_images(&self) -> Result<u64> {
        let urls = self.urls_for(IMAGE_REPLICATED);
        if urls.is_empty() {
            return Ok(0);
        }
        let since = now_ms() - i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let mut recorded = 0;
        let mut after: Option<(RepositoryName, Digest)> = None;
        loop {
            let page = self
                .store
                .unannounced_images(since, after.as_ref(), PAGE)
                .await?;
            let full = page.len() as u64 == PAGE;
            for (repository, digest) in &page {
                let status = match self
                    .registry
                    .image_status(repository, &Reference::Digest(digest.clone()))
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(%repository, %digest, error = %e, "cannot tell where an image stands");
                        continue;
                    }
                };
                if !status.complete {
                    continue;
                }
                let payload = serde_json::json!({
                    "event": IMAGE_REPLICATED,
                    "id": format!("{IMAGE_REPLICATED}:{repository}@{digest}"),
                    "repository": repository,
                    "digest": digest,
                    "media_type": status.media_type,
                    "manifests": status.manifests,
                    "blobs": status.blobs,
                    "bytes": status.bytes,
                    "locations": status.locations.iter().map(|l| &l.location).collect::<Vec<_>>(),
                    "at": now_ms(),
                });
                let event = NewEvent {
                    key: format!("{IMAGE_REPLICATED}:{repository}@{digest}"),
                    kind: IMAGE_REPLICATED.to_owned(),
                    repository: Some(repository.clone()),
                    digest: Some(digest.clone()),
                    payload: payload.to_string(),
                };
                if self.store.record_event(&event, &urls).await? {
                    info!(%repository, %digest, "image fully replicated: webhook event recorded");
                    recorded += 1;
                }
            }
            after = page.last().cloned();
            if !full {
                break;
            }
        }
        Ok(recorded)
    }

    async fn detect_dead_letters(&self, seen: &mut HashSet<String>) -> Result<u64> {
        let urls = self.urls_for(BLOB_DEAD_LETTERED);
        let Some(queue) = self.queue.as_ref().filter(|_| !urls.is_empty()) else {
            return Ok(0);
        };
        let mut recorded = 0;
        for job in queue.dead_jobs(DEAD_PAGE).await? {
            let key = format!(
                "{BLOB_DEAD_LETTERED}:{}:{}:{}:{}",
                job.spec.digest, job.spec.target, job.id, job.enqueued_at
            );
            if seen.contains(&key) {
                continue;
            }
            let kind = match job.spec.kind {
                JobKind::Replicate => "replicate",
                JobKind::Delete => "delete",
            };
            let payload = serde_json::json!({
                "event": BLOB_DEAD_LETTERED,
                "id": key,
                "digest": job.spec.digest,
                "target": job.spec.target,
                "job": kind,
                "attempts": job.attempts,
                "error": job.last_error,
                "at": now_ms(),
            });
            let event = NewEvent {
                key: key.clone(),
                kind: BLOB_DEAD_LETTERED.to_owned(),
                repository: None,
                digest: Some(job.spec.digest.clone()),
                payload: payload.to_string(),
            };
            if self.store.record_event(&event, &urls).await? {
                recorded += 1;
            }
            seen.insert(key);
        }
        Ok(recorded)
    }

    fn hook(&self, url: &str) -> Option<&WebhookConfig> {
        self.hooks.iter().find(|h| h.url == url)
    }

    /// Claims the deliveries due and posts them, all at once.
    async fn deliver(&self) -> Result<(u64, u64)> {
        let longest = self
            .hooks
            .iter()
            .map(|h| h.timeout_secs)
            .max()
            .unwrap_or(10);
        let lease =
            i64::try_from(longest.saturating_add(30).saturating_mul(1000)).unwrap_or(i64::MAX);
        let claimed = self
            .store
            .claim_deliveries(&self.owner, now_ms(), lease, CLAIM)
            .await?;
        let outcomes = futures::future::join_all(claimed.iter().map(|d| self.post(d))).await;
        let (mut delivered, mut failed) = (0, 0);
        for (d, outcome) in claimed.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    self.store.delivery_done(d.id, &self.owner).await?;
                    debug!(webhook = %d.webhook, event = %d.key, "webhook delivered");
                    delivered += 1;
                }
                Err(why) => {
                    failed += 1;
                    let max = self.hook(&d.webhook).map_or(20, |h| h.max_attempts);
                    let attempts = d.attempts.saturating_add(1);
                    let retry_at = (attempts < max).then(|| now_ms() + backoff_ms(attempts));
                    if retry_at.is_none() {
                        warn!(webhook = %d.webhook, event = %d.key, attempts, error = %why,
                              "webhook delivery given up");
                    } else {
                        debug!(webhook = %d.webhook, event = %d.key, attempts, error = %why,
                               "webhook delivery failed; will retry");
                    }
                    self.store
                        .delivery_failed(d.id, &self.owner, &why, retry_at)
                        .await?;
                }
            }
        }
        Ok((delivered, failed))
    }

    /// Posts one delivery; the error is what to record.
    async fn post(&self, d: &Delivery) -> std::result::Result<(), String> {
        let hook = self.hook(&d.webhook);
        let timeout = Duration::from_secs(hook.map_or(10, |h| h.timeout_secs));
        let mut request = self
            .client
            .post(&d.webhook)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("x-quay-event", &d.kind)
            .header("x-quay-event-id", &d.key);
        if let Some(secret) = hook.and_then(|h| h.secret.as_ref()) {
            request = request.header("x-quay-signature", signature(secret.expose(), &d.payload));
        }
        match request.body(d.payload.clone()).send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("the receiver answered {}", resp.status())),
            // Never the URL's query or credentials: only what went wrong.
            Err(e) if e.is_timeout() => Err(format!("no answer within {}s", timeout.as_secs())),
            Err(e) if e.is_connect() => Err("cannot connect to the receiver".to_owned()),
            Err(_) => Err("the request failed".to_owned()),
        }
    }

    /// Runs a pass every interval until `shutdown`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut seen = HashSet::new();
        let mut healthy = true;
        loop {
            match self.pass(&mut seen).await {
                Ok(_) => healthy = true,
                Err(e) if healthy => {
                    healthy = false;
                    warn!(error = %e, "webhook pass failed; will retry");
                }
                Err(e) => debug!(error = %e, "webhook pass failed"),
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

/// The pause before attempt `attempts + 1`: 1 s doubled per failure, at most 5 minutes.
fn backoff_ms(attempts: u32) -> i64 {
    let ms = 1000u64.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    i64::try_from(ms.min(MAX_BACKOFF.as_millis() as u64)).unwrap_or(i64::MAX)
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`.
fn signature(secret: &str, body: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body.as_bytes());
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(4), 8000);
        assert_eq!(backoff_ms(30), 300_000);
    }

    #[test]
    fn signature_is_hex_hmac() {
        let s = signature("key", "body");
        assert!(s.starts_with("sha256="));
        assert_eq!(s.len(), "sha256=".len() + 64);
    }
}
