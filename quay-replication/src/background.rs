//! [`Background`]: every duty a registry instance runs besides answering requests, as one set
//! of tasks started together and stopped by one shutdown signal.
//!
//! | part | what it does | on by default in `from_config` |
//! |---|---|---|
//! | worker | claims replication and delete jobs and does them ([`ReplicationWorker`]), and records a heartbeat in the queue every few seconds ([`JobQueue::record_worker`]) | with replication |
//! | reconciler | enqueues every missing copy, every interval ([`reconciler`](crate::reconciler)) | with replication |
//! | relay | moves jobs from the metadata store's outbox to another queue (Redis) | with a Redis queue |
//! | health | runs the health checks behind `/health/*` ([`HealthMonitor`]) | yes |
//! | upload expiry | removes idle upload sessions and upload leftovers | yes |
//! | collector | garbage collection passes and the orphan sweep ([`collector`](crate::collector)) | with `FEATURE_GARBAGE_COLLECTION` |
//! | scrubber | reads every stored copy at a bounded rate, repairs bad ones ([`scrub`](crate::scrub)) | with `QUAY_SCRUB_BYTES_PER_SEC` |
//! | webhooks | posts replication events to webhooks ([`webhooks`](crate::webhooks)) | with `QUAY_REPLICATION_WEBHOOKS` |
//!
//! With the health probes, the runner also rereads which locations an operator drained.
//!
//! Each part is switched on with a method and off with its `without_` twin, then
//! [`Background::spawn`] starts them. A part that needs a queue (worker, reconciler) is
//! skipped when the registry has none (replication off).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use quay_core::metadata::now_ms;
use quay_core::{ErrorKind, JobQueue, Registry, WorkerBeat};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::collector::CollectorConfig;
use crate::health::HealthMonitor;
use crate::redis::OutboxRelay;
use crate::worker::{ReplicationWorker, WorkerConfig, WorkerCounters};

/// How often the relay moves the outbox.
const RELAY_INTERVAL: Duration = Duration::from_millis(250);

/// The longest pause between two passes of the upload expiry.
const EXPIRY_PASS_MAX: Duration = Duration::from_secs(600);

/// How often a running worker records its heartbeat in the queue.
pub const WORKER_HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The background duties of one registry instance; see the [module docs](self).
#[derive(Debug)]
pub struct Background {
    registry: Registry,
    worker: Option<WorkerConfig>,
    reconcile_every: Option<Duration>,
    relay: Option<OutboxRelay>,
    health: Option<(Arc<HealthMonitor>, Duration)>,
    upload_expiry: Option<(Duration, bool)>,
    collector: Option<CollectorConfig>,
    scrubber: Option<(u64, Duration)>,
    webhooks: Option<crate::webhooks::Webhooks>,
    role: String,
    heartbeat_every: Duration,
}

impl Background {
    /// No part switched on yet.
    pub fn new(registry: Registry) -> Self {
        Background {
            registry,
            worker: None,
            reconcile_every: None,
            relay: None,
            health: None,
            upload_expiry: None,
            collector: None,
            scrubber: None,
            webhooks: None,
            role: "worker".to_owned(),
            heartbeat_every: WORKER_HEARTBEAT_EVERY,
        }
    }

    /// Scrubs every location at `bytes_per_sec`, a full pass per `every` across the registry.
    #[must_use]
    pub fn scrubber(mut self, bytes_per_sec: u64, every: Duration) -> Self {
        self.scrubber = Some((bytes_per_sec, every));
        self
    }

    /// Posts replication events to webhooks.
    #[must_use]
    pub fn webhooks(mut self, webhooks: crate::webhooks::Webhooks) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    /// No webhooks from this process.
    #[must_use]
    pub fn without_webhooks(mut self) -> Self {
        self.webhooks = None;
        self
    }

    /// No background scrub.
    #[must_use]
    pub fn without_scrubber(mut self) -> Self {
        self.scrubber = None;
        self
    }

    /// Only the duties that write nothing (health probes): for an instance in read-only mode.
    #[must_use]
    pub fn read_only(self) -> Self {
        self.without_worker()
            .without_reconciler()
            .without_relay()
            .without_upload_expiry()
            .without_collector()
            .without_scrubber()
            .without_webhooks()
    }

    /// Runs the garbage collector.
    #[must_use]
    pub fn collector(mut self, config: CollectorConfig) -> Self {
        self.collector = Some(config);
        self
    }

    /// No garbage collection in this process.
    #[must_use]
    pub fn without_collector(mut self) -> Self {
        self.collector = None;
        self
    }

    /// How often the worker records its heartbeat ([`WORKER_HEARTBEAT_EVERY`] by default;
    /// readers count a worker as running for [`crate::status::WORKER_SEEN_WITHIN`]).
    #[must_use]
    pub fn heartbeat_every(mut self, every: Duration) -> Self {
        self.heartbeat_every = every.max(Duration::from_millis(10));
        self
    }

    /// What the worker's heartbeat says runs it (`worker` by default), e.g. `quay-server` or
    /// `quayctl worker`: shown by `quayctl status` and the status page.
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// Runs the replication worker on the registry's queue.
    #[must_use]
    pub fn worker(mut self, config: WorkerConfig) -> Self {
        self.worker = Some(config);
        self
    }

    /// No replication worker in this process (another runs it, e.g. `quayctl worker`).
    #[must_use]
    pub fn without_worker(mut self) -> Self {
        self.worker = None;
        self
    }

    /// Runs the reconciler every `every`.
    #[must_use]
    pub fn reconciler(mut self, every: Duration) -> Self {
        self.reconcile_every = Some(every);
        self
    }

    /// No reconciler.
    #[must_use]
    pub fn without_reconciler(mut self) -> Self {
        self.reconcile_every = None;
        self
    }

    /// Runs `relay` from the outbox to the replication queue.
    #[must_use]
    pub fn relay(mut self, relay: OutboxRelay) -> Self {
        self.relay = Some(relay);
        self
    }

    /// No outbox relay.
    #[must_use]
    pub fn without_relay(mut self) -> Self {
        self.relay = None;
        self
    }

    /// Refreshes `monitor`'s checks every `every`.
    #[must_use]
    pub fn health(mut self, monitor: Arc<HealthMonitor>, every: Duration) -> Self {
        self.health = Some((monitor, every));
        self
    }

    /// No health checks (the `/health/*` answers stay as they are).
    #[must_use]
    pub fn without_health(mut self) -> Self {
        self.health = None;
        self
    }

    /// Removes upload sessions idle for `after`, with their data, and (with
    /// `sweep_leftovers`, Quay's `CLEAN_BLOB_UPLOAD_FOLDER`) upload leftovers that no session
    /// owns, untouched for as long.
    #[must_use]
    pub fn upload_expiry(mut self, after: Duration, sweep_leftovers: bool) -> Self {
        self.upload_expiry = Some((after, sweep_leftovers));
        self
    }

    /// No upload expiry.
    #[must_use]
    pub fn without_upload_expiry(mut self) -> Self {
        self.upload_expiry = None;
        self
    }

    /// Starts the parts switched on; they stop when `shutdown` resolves or the handle's
    /// [`stop`](BackgroundHandle::stop) is called.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> BackgroundHandle {
        let (stop, stopped) = watch::channel(false);
        let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
        let until = || stopped_future(stopped.clone());
        let queue = self.registry.queue().cloned();
        if let Some(relay) = self.relay {
            tasks.push(("relay", tokio::spawn(relay.run(RELAY_INTERVAL, until()))));
        }
        match (self.worker, &queue) {
            (Some(config), Some(queue)) => {
                let worker = ReplicationWorker::new(self.registry.clone(), queue.clone(), config);
                let beat = heartbeat(
                    queue.clone(),
                    worker.counters().clone(),
                    self.role.clone(),
                    self.heartbeat_every,
                    until(),
                );
                tasks.push(("worker", tokio::spawn(worker.run(until()))));
                tasks.push(("worker heartbeat", tokio::spawn(beat)));
            }
            (Some(_), None) => info!("replication is off: no replication worker"),
            _ => {}
        }
        if let (Some(every), Some(queue)) = (self.reconcile_every, &queue) {
            let reconcile = crate::reconciler::run(
                self.registry.metadata().clone(),
                queue.clone(),
                self.registry.config().default_locations.clone(),
                every,
                until(),
            );
            tasks.push(("reconciler", tokio::spawn(reconcile)));
        }
        if let Some((monitor, every)) = self.health {
            let every = every.max(Duration::from_millis(100));
            tasks.push(("health", tokio::spawn(monitor.run(every, until()))));
            tasks.push((
                "drained locations",
                tokio::spawn(refresh_drained(self.registry.clone(), every, until())),
            ));
        }
        if let Some((rate, every)) = self.scrubber {
            tasks.push((
                "scrubber",
                tokio::spawn(crate::scrub::run(
                    self.registry.clone(),
                    rate,
                    every,
                    until(),
                )),
            ));
        }
        if let Some((after, sweep)) = self.upload_expiry {
            tasks.push((
                "upload expiry",
                tokio::spawn(expire_uploads(self.registry.clone(), after, sweep, until())),
            ));
        }
        if let Some(config) = self.collector {
            tasks.push((
                "collector",
                tokio::spawn(crate::collector::run(
                    self.registry.clone(),
                    config,
                    until(),
                )),
            ));
        }
        if let Some(webhooks) = self.webhooks {
            tasks.push(("webhooks", tokio::spawn(webhooks.run(until()))));
        }
        // The shutdown signal given here stops everything too.
        let signal = stop.clone();
        let watcher = tokio::spawn(async move {
            shutdown.await;
            let _ = signal.send(true);
        });
        BackgroundHandle {
            stop,
            tasks,
            watcher,
        }
    }
}

/// The running background duties.
#[derive(Debug)]
pub struct BackgroundHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    watcher: JoinHandle<()>,
}

impl BackgroundHandle {
    /// The names of the running parts.
    pub fn parts(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(name, _)| *name).collect()
    }

    /// Stops every part and waits for them (a running replication job is finished first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.join().await;
    }

    /// Waits until every part has stopped (after the shutdown signal).
    pub async fn join(self) {
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                warn!(part = name, error = %e, "a background task ended abnormally");
            }
        }
        self.watcher.abort();
    }
}

/// Rereads the drained locations every `every`.
async fn refresh_drained(registry: Registry, every: Duration, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        if let Err(e) = registry.refresh_drained().await {
            warn!(error = %e, "cannot read which locations are drained");
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped_future(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Every `min(after, 10 min)`, removes upload sessions idle for `after` and upload leftovers.
async fn expire_uploads(
    registry: Registry,
    after: Duration,
    sweep_leftovers: bool,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let every = EXPIRY_PASS_MAX.min(after.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(every) => {}
        }
        let cutoff = now_ms() - i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        match registry.expire_uploads(cutoff, sweep_leftovers).await {
            Ok(sweep) if sweep.is_empty() => {}
            Ok(sweep) => info!(
                sessions = sweep.sessions,
                orphaned = sweep.orphaned_sessions,
                temporary_files = sweep.temporary_files,
                "removed abandoned uploads"
            ),
            Err(e) => warn!(error = %e, "upload expiry failed"),
        }
    }
}

/// The name of this machine (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), or `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Records the worker's beat every `every` until `shutdown`, then removes
/// it: `quayctl status` lists the workers seen recently and warns when there is none.
async fn heartbeat(
    queue: Arc<dyn JobQueue>,
    counters: Arc<WorkerCounters>,
    role: String,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let started_at = now_ms();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (host, pid) = (host_name(), std::process::id());
    let mut healthy = true;
    // A beat every `every`, and sooner (once a second at most) while the counts move, so that
    // what status shows is at most a second behind a busy worker.
    let tick = every.min(Duration::from_secs(1));
    let mut last: Option<(crate::worker::WorkerTotals, std::time::Instant)> = None;
    loop {
        let t = counters.totals();
        let due = last.is_none_or(|(seen, at)| seen != t || at.elapsed() >= every);
        if due {
            let beat = WorkerBeat {
                id: id.clone(),
                host: host.clone(),
                pid,
                role: role.clone(),
                started_at,
                seen_at: now_ms(),
                jobs_done: t.done,
                jobs_failed: t.failed,
                bytes_copied: t.bytes,
                running: u32::try_from(t.running).unwrap_or(u32::MAX),
            };
            match queue.record_worker(&beat).await {
                Ok(()) => healthy = true,
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    warn!(error = %e, "the queue cannot record worker heartbeats: \
                           `quayctl status` will not see this worker");
                    return;
                }
                // Once per outage: the database or Redis being down is reported elsewhere too.
                Err(e) if healthy => {
                    healthy = false;
                    warn!(error = %e, "cannot record the worker heartbeat; will retry");
                }
                Err(e) => tracing::debug!(error = %e, "cannot record the worker heartbeat"),
            }
            last = Some((t, std::time::Instant::now()));
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    if let Err(e) = queue.forget_worker(&id).await {
        tracing::debug!(error = %e, "cannot remove the worker heartbeat");
    }
}
