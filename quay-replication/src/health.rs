//! `/health/instance` and `/health/endtoend`, with Quay's response shape:
//! `{"data": {"services": {NAME: bool}, "services_expanded": {NAME: {...}}}, "status_code": N}`.
//!
//! Checks run in the background on an interval ([`HealthMonitor::run`]); the endpoints answer
//! from the latest results, so a load balancer polling every second does not probe every
//! bucket every second. Storage probes also feed the engine's per-location circuit breakers.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quay_core::{HealthCheck, HealthStatus, HealthTracker, LocationId, Registry, StorageEngine};
use serde_json::json;

use crate::AppState;

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
        let result = match tokio::time::timeout(self.timeout, self.storage.probe()).await {
            Ok(r) => r,
            Err(_) => Err(quay_core::Error::new(
                quay_core::ErrorKind::Timeout,
                format!("no answer within {:?}", self.timeout),
            )),
        };
        self.tracker.record(&self.location, &result);
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

    /// The standard checks of a registry: `database` (critical everywhere), and one
    /// `storage_<id>` per location: the first preferred location is critical, the others are
    /// reported only on `/health/endtoend`.
    pub fn for_registry(
        registry: &Registry,
        database: Arc<dyn HealthCheck>,
        timeout: Duration,
    ) -> Self {
        let mut monitor = HealthMonitor::new(timeout).with_check(
            database,
            CheckRole {
                instance: true,
                endtoend_critical: true,
            },
        );
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

    /// The response of `/health/instance` (`instance = true`) or `/health/endtoend`.
    pub fn report(&self, instance: bool) -> (StatusCode, serde_json::Value) {
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
        let code = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            code,
            json!({
                "data": {"services": services, "services_expanded": expanded},
                "status_code": code.as_u16(),
            }),
        )
    }
}

fn respond(state: &AppState, instance: bool) -> Response {
    match &state.health {
        Some(monitor) => {
            let (code, body) = monitor.report(instance);
            (code, axum::Json(body)).into_response()
        }
        None => {
            let body = json!({"data": {"services": {}}, "status_code": 200});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
    }
}

pub(crate) async fn instance(State(state): State<AppState>) -> Response {
    respond(&state, true)
}

pub(crate) async fn endtoend(State(state): State<AppState>) -> Response {
    respond(&state, false)
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
