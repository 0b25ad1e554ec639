//! # quay-http
//!
//! The OCI Distribution API v1.1 over HTTP, on axum and hyper, in front of a
//! [`quay_core::Registry`]. [`router`] gives an [`axum::Router`] to serve or to nest into a
//! larger application.
//!
//! Every `/v2/` request is parsed once ([`request`]): the access check ([`auth::guard`]) and
//! the handlers read that one parse, and a request whose meaning is ambiguous (a parameter the
//! registry reads, given twice) is refused with `400` before either runs. Request bodies are
//! bounded in how slowly they may arrive ([`body`]).
//!
//! Every error is an OCI error body (`{"errors":[{"code","message","detail"}]}`) with the code
//! and status of one table ([`error::oci_code`]). Blob bodies stream in both directions; no
//! handler holds a whole blob in memory. Manifests are limited to
//! [`quay_core::manifest::MAX_MANIFEST_SIZE`].
#![deny(missing_docs)]

pub mod auth;
pub mod body;
pub mod error;
pub mod health;
pub mod request;
mod routes;
pub mod users;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use quay_core::{ErrorKind, Registry};

pub use request::{parse_path, Endpoint, OciRequest};

/// The header every `/v2/` response carries.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";

/// Renders the process's metrics in the Prometheus text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub registry: Registry,
    metrics: Option<MetricsRender>,
    health: Option<Arc<health::HealthMonitor>>,
    auth: Option<Arc<auth::AuthConfig>>,
    body_limits: body::BodyLimits,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("registry", &self.registry)
            .field("metrics", &self.metrics.is_some())
            .field("health", &self.health)
            .field("auth", &self.auth)
            .field("body_limits", &self.body_limits)
            .finish()
    }
}

/// Optional parts of the HTTP frontend.
#[derive(Clone, Default)]
pub struct RouterOptions {
    /// Serves `GET /metrics` from this renderer.
    pub metrics: Option<MetricsRender>,
    /// Serves `/health/instance` and `/health/endtoend` from this monitor's latest results.
    pub health: Option<Arc<health::HealthMonitor>>,
    /// Access control; `None` serves every request (for loopback development).
    pub auth: Option<Arc<auth::AuthConfig>>,
    /// How slowly a client may send a request body.
    pub body_limits: body::BodyLimits,
}

/// The OCI Distribution API routes for `registry`.
pub fn router(registry: Registry) -> Router {
    router_with(registry, RouterOptions::default())
}

/// The OCI Distribution API routes for `registry`, with the optional parts of `options`.
pub fn router_with(registry: Registry, options: RouterOptions) -> Router {
    let state = AppState {
        registry,
        metrics: options.metrics,
        health: options.health,
        auth: options.auth,
        body_limits: options.body_limits,
    };
    Router::new()
        .route(
            auth::TOKEN_PATH,
            get(auth::token_get).post(auth::token_post),
        )
        .route("/v2", any(routes::dispatch))
        .route("/v2/", any(routes::dispatch))
        .route("/v2/{*rest}", any(routes::dispatch))
        .route("/metrics", get(metrics))
        .route("/health/instance", get(health::instance))
        .route("/health/endtoend", get(health::endtoend))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn(request::parse_once))
        .layer(axum::middleware::map_response(add_api_version))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(render) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => not_found().await,
    }
}

async fn add_api_version(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    resp
}

async fn not_found() -> Response {
    error::ApiError::new(ErrorKind::NotFound, "no such endpoint").into_response()
}
