//! [`Quay`]: one registry instance assembled, with its routes, its background duties and its
//! server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{any, get};
use axum::Router;
use quay_core::{HealthCheck, Registry, Result};
use quay_replication::collector::CollectorConfig;
use quay_replication::redis::OutboxRelay;
use quay_replication::webhooks::Webhooks;
use quay_replication::worker::WorkerConfig;
use quay_replication::{Background, CheckRole, HealthMonitor};

use crate::access_log::{self, AccessLog};
use crate::auth::AuthConfig;
use crate::body::BodyLimits;
use crate::serve::ServeOptions;
use crate::write_gate::WriteMode;
use crate::{add_api_version, auth, ops, request, routes, status_page, AppState, MetricsRender};

/// Default seconds between health probes.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Default bound on one health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle time after which an upload session expires.
const UPLOAD_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// Default interval of the reconciler.
const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// A registry instance: the engine, access control, health, metrics, and what runs in the
/// background. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Quay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: AppState,
    health_interval: Duration,
    serve: ServeOptions,
    worker: Option<WorkerConfig>,
    reconcile_every: Option<Duration>,
    relay: Option<OutboxRelay>,
    upload_expiry: Option<Duration>,
    clean_upload_folder: bool,
    collector: Option<CollectorConfig>,
    scrubber: Option<(u64, Duration)>,
    webhooks: Option<Webhooks>,
}

/// Builds a [`Quay`] around a [`Registry`].
pub struct QuayBuilder {
    registry: Registry,
    auth: Option<Arc<AuthConfig>>,
    metrics: Option<MetricsRender>,
    checks: Vec<(Arc<dyn HealthCheck>, CheckRole)>,
    health_timeout: Duration,
    health_interval: Duration,
    body_limits: BodyLimits,
    serve: ServeOptions,
    worker: Option<WorkerConfig>,
    reconcile_every: Option<Duration>,
    relay: Option<OutboxRelay>,
    upload_expiry: Option<Duration>,
    clean_upload_folder: bool,
    collector: Option<CollectorConfig>,
    scrubber: Option<(u64, Duration)>,
    webhooks: Option<Webhooks>,
    write_mode: WriteMode,
    instance: Option<String>,
}

impl Quay {
    /// A builder around `registry`. With replication on, the background runner gets the
    /// replication worker and the reconciler by default; upload expiry (one day) and health
    /// probes of every location (every 2 s) are on too.
    pub fn builder(registry: Registry) -> QuayBuilder {
        let replication = registry.config().replication;
        QuayBuilder {
            auth: None,
            metrics: None,
            checks: Vec::new(),
            health_timeout: HEALTH_TIMEOUT,
            health_interval: HEALTH_INTERVAL,
            body_limits: BodyLimits::default(),
            serve: ServeOptions::default(),
            worker: replication.then(WorkerConfig::default),
            reconcile_every: replication.then_some(RECONCILE_EVERY),
            relay: None,
            upload_expiry: Some(UPLOAD_EXPIRY),
            clean_upload_folder: true,
            collector: None,
            scrubber: None,
            webhooks: None,
            write_mode: WriteMode::Normal,
            instance: None,
            registry,
        }
    }

    /// The instance's name, as access-log lines and the status page give it.
    pub fn instance(&self) -> &str {
        &self.inner.state.instance
    }

    /// The engine.
    pub fn registry(&self) -> &Registry {
        &self.inner.state.registry
    }

    /// The health monitor behind `/health/*`.
    pub fn health(&self) -> &Arc<HealthMonitor> {
        &self.inner.state.health
    }

    /// Access control, when it is on.
    pub fn auth(&self) -> Option<&Arc<AuthConfig>> {
        self.inner.state.auth.as_ref()
    }

    /// Which writes the instance accepts.
    pub fn write_mode(&self) -> WriteMode {
        self.inner.state.write_mode
    }

    /// How the server serves (TLS, limits).
    pub fn serve_options(&self) -> &ServeOptions {
        &self.inner.serve
    }

    /// The OCI Distribution API: `/v2/`, `/v2/_catalog`, `/v2/<name>/…` and the token endpoint
    /// `/v2/auth`, behind the one parse of each request and the access check. No fallback and
    /// no operations routes, so it merges into a host application's router.
    pub fn oci_routes(&self) -> Router {
        let state = self.inner.state.clone();
        let router = Router::new()
            .route(
                auth::TOKEN_PATH,
                get(auth::token_get).post(auth::token_post),
            )
            .route("/v2", any(routes::dispatch))
            .route("/v2/", any(routes::dispatch))
            .route("/v2/{*rest}", any(routes::dispatch))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::guard,
            ))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::write_gate::write_gate,
            ))
            .layer(axum::middleware::from_fn(request::parse_once))
            .layer(axum::middleware::map_response(add_api_version))
            .with_state(state);
        self.access_logged(router)
    }

    /// `GET /status`, the status page ([`status_page`]): per location its health, what it
    /// holds and lacks, its jobs and lag; the queue, the workers and the latest dead letters.
    /// With access control on, it asks what `/v2/_catalog` asks. Access-logged.
    pub fn status_routes(&self) -> Router {
        let router = Router::new()
            .route(status_page::STATUS_PATH, get(status_page::page))
            .with_state(self.inner.state.clone());
        self.access_logged(router)
    }

    fn access_logged(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            AccessLog {
                instance: self.inner.state.instance.clone(),
            },
            access_log::layer,
        ))
    }

    /// `/health/instance` and `/health/endtoend` (Quay's shape), and `/metrics` when a
    /// metrics renderer is set. Open to everyone (load balancers, scrapers). Nest it under a
    /// prefix when the host application has routes of these names.
    pub fn ops_routes(&self) -> Router {
        let state = self.inner.state.clone();
        let mut router = Router::new()
            .route("/health/instance", get(ops::instance))
            .route("/health/endtoend", get(ops::endtoend));
        if state.metrics.is_some() {
            router = router.route("/metrics", get(ops::metrics));
        }
        router.with_state(state)
    }

    /// The OCI, operations and status routes with an OCI `404 NAME_UNKNOWN`-style fallback:
    /// what `quay-server` serves.
    pub fn router(&self) -> Router {
        self.oci_routes()
            .merge(self.ops_routes())
            .merge(self.status_routes())
            .fallback(routes::not_found)
    }

    /// The background runner with this instance's duties switched on (see
    /// [`Background`]); switch parts off before [`spawn`](Background::spawn)ing it.
    pub fn background(&self) -> Background {
        let mut background = Background::new(self.registry().clone())
            .health(self.health().clone(), self.inner.health_interval);
        if let Some(worker) = &self.inner.worker {
            background = background.worker(worker.clone());
        }
        if let Some(every) = self.inner.reconcile_every {
            background = background.reconciler(every);
        }
        if let Some(relay) = &self.inner.relay {
            background = background.relay(relay.clone());
        }
        if let Some(after) = self.inner.upload_expiry {
            background = background.upload_expiry(after, self.inner.clean_upload_folder);
        }
        if let Some(collector) = &self.inner.collector {
            background = background.collector(collector.clone());
        }
        if let Some((rate, every)) = self.inner.scrubber {
            background = background.scrubber(rate, every);
        }
        if let Some(webhooks) = &self.inner.webhooks {
            background = background.webhooks(webhooks.clone());
        }
        if self.inner.state.write_mode == WriteMode::ReadOnly {
            background = background.read_only();
        }
        background
    }

    /// Runs every health check once (the background runner refreshes them after).
    pub async fn refresh_health(&self) {
        self.health().refresh().await;
    }

    /// Serves [`Quay::router`] on `listener` (with TLS when configured) until `shutdown`
    /// resolves, then waits a bounded time for requests in flight.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        crate::serve::serve(listener, self.router(), self.inner.serve.clone(), shutdown).await
    }
}

impl std::fmt::Debug for QuayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let checks: Vec<&str> = self.checks.iter().map(|(c, _)| c.name()).collect();
        f.debug_struct("QuayBuilder")
            .field("registry", &self.registry)
            .field("auth", &self.auth)
            .field("metrics", &self.metrics.is_some())
            .field("checks", &checks)
            .field("body_limits", &self.body_limits)
            .field("serve", &self.serve)
            .field("worker", &self.worker)
            .field("reconcile_every", &self.reconcile_every)
            .field("upload_expiry", &self.upload_expiry)
            .field("collector", &self.collector)
            .finish_non_exhaustive()
    }
}

impl QuayBuilder {
    /// Turns access control on.
    pub fn auth(mut self, auth: Arc<AuthConfig>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Serves `/metrics` from `render` (e.g. [`crate::prometheus`]).
    pub fn metrics(mut self, render: MetricsRender) -> Self {
        self.metrics = Some(render);
        self
    }

    /// Adds a health check (the database's, a queue's) beside the storage probes.
    pub fn health_check(mut self, check: Arc<dyn HealthCheck>, role: CheckRole) -> Self {
        self.checks.push((check, role));
        self
    }

    /// How often the health checks run (2 s), and the bound on each (10 s).
    pub fn health_timing(mut self, every: Duration, timeout: Duration) -> Self {
        self.health_interval = every;
        self.health_timeout = timeout;
        self
    }

    /// How slowly a client may send a request body.
    pub fn body_limits(mut self, limits: BodyLimits) -> Self {
        self.body_limits = limits;
        self
    }

    /// TLS and request-head limits of [`Quay::serve`].
    pub fn serve_options(mut self, options: ServeOptions) -> Self {
        self.serve = options;
        self
    }

    /// The replication worker's settings (`None`: no worker in the background runner).
    pub fn worker(mut self, worker: Option<WorkerConfig>) -> Self {
        self.worker = worker;
        self
    }

    /// How often the reconciler runs (`None`: not at all).
    pub fn reconcile_every(mut self, every: Option<Duration>) -> Self {
        self.reconcile_every = every;
        self
    }

    /// A relay from the outbox to the replication queue, for the background runner.
    pub fn relay(mut self, relay: Option<OutboxRelay>) -> Self {
        self.relay = relay;
        self
    }

    /// How long an idle upload session lives (`None`: forever).
    pub fn upload_expiry(mut self, after: Option<Duration>) -> Self {
        self.upload_expiry = after;
        self
    }

    /// Sweep upload leftovers that no session owns (Quay's `CLEAN_BLOB_UPLOAD_FOLDER`, on by
    /// default).
    pub fn clean_upload_folder(mut self, on: bool) -> Self {
        self.clean_upload_folder = on;
        self
    }

    /// Runs the garbage collector in the background runner. Its blob deletions go through
    /// delete jobs, so the replication worker is switched on too when it was not.
    pub fn collector(mut self, collector: Option<CollectorConfig>) -> Self {
        if collector.is_some() && self.worker.is_none() {
            self.worker = Some(WorkerConfig::default());
        }
        self.collector = collector;
        self
    }

    /// Scrubs every location in the background at `bytes_per_sec`, a full pass per `every`
    /// across the registry (`None`: no background scrub, the default).
    pub fn scrubber(mut self, scrubber: Option<(u64, Duration)>) -> Self {
        self.scrubber = scrubber;
        self
    }

    /// Posts replication events to webhooks from the background runner (`None`: none, the
    /// default; `from_config` sets it from `QUAY_REPLICATION_WEBHOOKS`).
    pub fn webhooks(mut self, webhooks: Option<Webhooks>) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// Which writes the instance accepts (Quay's `REGISTRY_STATE: readonly` and
    /// `DISABLE_PUSHES`). In read-only mode the background duties that write are off too.
    pub fn write_mode(mut self, mode: WriteMode) -> Self {
        self.write_mode = mode;
        self
    }

    /// The instance's name in access-log lines and on the status page (default: the host
    /// name and the process id, `host:pid`, as worker heartbeats name their process).
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// The instance.
    pub fn build(self) -> Quay {
        let instance = self.instance.unwrap_or_else(|| {
            format!(
                "{}:{}",
                quay_replication::background::host_name(),
                std::process::id()
            )
        });
        let monitor = self.checks.into_iter().fold(
            HealthMonitor::for_registry(&self.registry, self.health_timeout),
            |monitor, (check, role)| monitor.with_check(check, role),
        );
        Quay {
            inner: Arc::new(Inner {
                state: AppState {
                    registry: self.registry,
                    metrics: self.metrics,
                    health: Arc::new(monitor),
                    auth: self.auth,
                    body_limits: self.body_limits,
                    write_mode: self.write_mode,
                    instance: instance.into(),
                },
                health_interval: self.health_interval,
                serve: self.serve,
                worker: self.worker,
                reconcile_every: self.reconcile_every,
                relay: self.relay,
                upload_expiry: self.upload_expiry,
                clean_upload_folder: self.clean_upload_folder,
                collector: self.collector,
                scrubber: self.scrubber,
                webhooks: self.webhooks,
            }),
        }
    }
}
