//! The health monitor behind `/health/instance` and `/health/endtoend`, with Quay's response
//! shape: `{"data": {"services": {NAME: bool}, "services_expanded": {NAME: {...}}},
//! "status_code": N}`.
//!
//! Checks run in the background on an interval ([`HealthMonitor::run`], a part of the
//! [`Background`](crate::Background) runner); the endpoints answer from the latest results, so
//! a load balancer polling every second does not probe every bucket every second. A storage
//! probe goes through the location's layers, so its outcome feeds the location's circuit
//! breaker like any other call; the gauge `quay_storage_location_up{location}` is 1 while the
//! location's latest probe passed, 0 when it failed.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use quay_core::{HealthCheck, HealthStatus, HealthTracker, LocationId, Registry, StorageEngine};
use serde_json::json;

/// A storage location's probe: a cheap read, bounded in time, whose outcome also feeds the
/// location's circuit breaker.
pub struct StorageProbe {
    name: String,
    location: LocationId,
    storage: Arc<dyn StorageEngine>,
    tracker: Arc<HealthTracker>,
    timeout: Duration,
}

impl StorageProbe {
    /// A probe of `location` named `storage_<location>`.
    pub fn new(registry: &Registry, location: &LocationId, timeout: Duration) -> Option<Self> {
        let storage = registry.locations().get(location)?.clone();
        Some(StorageProbe {
            name: format!("storage_{location}"),
            location: location.clone(),
            storage,
            tracker: registry.health().clone(),
            timeout,
        })
    }
}

#[async_trait]
impl HealthCheck for StorageProbe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> HealthStatus {
        // The location's health layer records the probe's outcome; a probe cut off here by its
        // own bound never reached it, so that failure is recorded here.
        let result = match tokio::time::timeout(self.timeout, self.storage.probe()).await {
            Ok(r) => r,
            Err(_) => {
                let e = quay_core::Error::new(
                    quay_core::ErrorKind::Timeout,
                    format!("no answer within {:?}", self.timeout),
                );
                let copy = quay_core::Error::new(e.kind(), e.message());
                self.tracker.record_probe::<()>(&self.location, &Err(copy));
                Err(e)
            }
        };
        let up = result.is_ok();
        metrics::gauge!("quay_storage_location_up", "location" => self.location.to_string())
            .set(if up { 1.0 } else { 0.0 });
        match result {
            Ok(()) => HealthStatus::Healthy,
            Err(e) => HealthStatus::Failed(e.to_string()),
        }
    }
}

/// Which endpoints a check belongs to, and whether its failure fails them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckRole {
    /// Part of `/health/instance` (and critical there).
    pub instance: bool,
    /// A failure makes `/health/endtoend` answer 503 (otherwise reported as `false` only).
    pub endtoend_critical: bool,
}

struct Entry {
    check: Arc<dyn HealthCheck>,
    role: CheckRole,
}

/// Runs health checks in the background and keeps their latest results.
pub struct HealthMonitor {
    entries: Vec<Entry>,
    latest: RwLock<BTreeMap<String, HealthStatus>>,
    timeout: Duration,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| e.check.name()).collect();
        f.debug_struct("HealthMonitor")
            .field("checks", &names)
            .finish()
    }
}

impl HealthMonitor {
    /// A monitor with no checks; each check is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        HealthMonitor {
            entries: Vec::new(),
            latest: RwLock::new(BTreeMap::new()),
            timeout,
        }
    }

    /// Adds a check.
    pub fn with_check(mut self, check: Arc<dyn HealthCheck>, role: CheckRole) -> Self {
        self.entries.push(Entry { check, role });
        self
    }

    /// The storage checks of a registry: one `storage_<id>` per location, the first preferred
    /// location critical on both endpoints, the others reported only on `/health/endtoend`.
    /// Add the database's check (critical everywhere) with [`HealthMonitor::with_check`].
    pub fn for_registry(registry: &Registry, timeout: Duration) -> Self {
        let mut monitor = HealthMonitor::new(timeout);
        let preferred = registry.config().preference.first().cloned();
        for location in registry.locations().keys() {
            if let Some(probe) = StorageProbe::new(registry, location, timeout) {
                let mine = Some(location) == preferred.as_ref();
                monitor = monitor.with_check(
                    Arc::new(probe),
                    CheckRole {
                        instance: mine,
                        endtoend_critical: mine,
                    },
                );
            }
        }
        monitor
    }

    /// Runs every check once, concurrently, each bounded by the timeout.
    pub async fn refresh(&self) {
        let runs = self.entries.iter().map(|e| {
            let check = e.check.clone();
            let timeout = self.timeout;
            async move {
                let status = match tokio::time::timeout(timeout, check.check()).await {
                    Ok(s) => s,
                    Err(_) => HealthStatus::Failed(format!("no answer within {timeout:?}")),
                };
                (check.name().to_owned(), status)
            }
        });
        let results = futures::future::join_all(runs).await;
        let mut latest = match self.latest.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for (name, status) in results {
            if let HealthStatus::Failed(msg) = &status {
                if !matches!(latest.get(&name), Some(HealthStatus::Failed(_))) {
                    tracing::warn!(check = %name, error = %msg, "health check failed");
                }
            } else if matches!(latest.get(&name), Some(HealthStatus::Failed(_))) {
                tracing::info!(check = %name, "health check recovered");
            }
            latest.insert(name, status);
        }
    }

    /// Refreshes every `interval` until `shutdown` resolves.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            self.refresh().await;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// The response of `/health/instance` (`instance = true`) or `/health/endtoend`: the HTTP
    /// status (200, or 503 when a critical check failed) and the body.
    pub fn report(&self, instance: bool) -> (u16, serde_json::Value) {
        let latest = match self.latest.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut services = serde_json::Map::new();
        let mut expanded = serde_json::Map::new();
        let mut ok = true;
        for e in &self.entries {
            if instance && !e.role.instance {
                continue;
            }
            let name = e.check.name();
            let status = latest
                .get(name)
                .cloned()
                .unwrap_or_else(|| HealthStatus::Failed("not checked yet".into()));
            let up = status.is_usable();
            if !up
                && (if instance {
                    e.role.instance
                } else {
                    e.role.endtoend_critical
                })
            {
                ok = false;
            }
            services.insert(name.to_owned(), json!(up));
            let (state, message) = match &status {
                HealthStatus::Healthy => ("healthy", None),
                HealthStatus::Degraded(m) => ("degraded", Some(m.clone())),
                HealthStatus::Failed(m) => ("failed", Some(m.clone())),
            };
            expanded.insert(
                name.to_owned(),
                json!({"status": up, "state": state, "message": message}),
            );
        }
        let code: u16 = if ok { 200 } else { 503 };
        (
            code,
            json!({
                "data": {"services": services, "services_expanded": expanded},
                "status_code": code,
            }),
        )
    }

    /// The latest result of every check, by name (checks not run yet are absent).
    pub fn latest(&self) -> BTreeMap<String, HealthStatus> {
        match self.latest.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// A job queue's health: one cheap call (its counts), bounded by the monitor's timeout.
/// Named `redis` for the Redis queue.
pub struct QueueProbe {
    name: String,
    queue: Arc<dyn quay_core::JobQueue>,
}

impl QueueProbe {
    /// A probe of `queue` named `name`.
    pub fn new(name: impl Into<String>, queue: Arc<dyn quay_core::JobQueue>) -> Self {
        QueueProbe {
            name: name.into(),
            queue,
        }
    }
}

#[async_trait]
impl HealthCheck for QueueProbe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> HealthStatus {
        match self.queue.stats().await {
            Ok(_) => HealthStatus::Healthy,
            Err(e) => HealthStatus::Failed(e.to_string()),
        }
    }
}
