//! # quay-http
//!
//! The OCI Distribution API v1.1 over HTTP, on axum and hyper, in front of a
//! [`quay_core::Registry`], and the assembly of a whole registry instance: [`Quay`].
//!
//! ```no_run
//! # async fn run() -> quay_core::Result<()> {
//! use quay_core::config::QuayConfig;
//! use quay_http::{ConfigOptions, Quay};
//!
//! let config = QuayConfig::from_file("config.yaml".as_ref(), None)?;
//! let quay = Quay::from_config(&config, &ConfigOptions::default()).await?;
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hello" }))
//!     .merge(quay.oci_routes()) // /v2/…: no fallback, no ops routes
//!     .nest("/quay", quay.ops_routes()); // /quay/health/…, /quay/metrics
//! let background = quay.background().spawn(std::future::pending());
//! # Ok(()) }
//! ```
//!
//! - [`Quay::from_config`] does, from a Quay `config.yaml`, what `quay-server` does: the
//!   metadata store, the locations with their layers, the queue, access control, TLS, health
//!   checks and metrics. [`Quay::builder`] takes a [`Registry`] built by hand instead.
//! - [`Quay::oci_routes`] is the OCI API (`/v2/…`) as a router with no fallback and no
//!   operations routes, to merge into a host application; [`Quay::ops_routes`] holds
//!   `/health/instance`, `/health/endtoend` and `/metrics` (open, for load balancers and
//!   scrapers), to merge or nest; [`Quay::status_routes`] holds the status page `/status`
//!   (behind the catalog's access check); [`Quay::router`] is the three with an OCI `404`
//!   fallback, what `quay-server` serves.
//! - Every request to the OCI and status routes writes one access-log line ([`access_log`]);
//!   the library installs no `tracing` subscriber, the binaries do.
//! - [`Quay::background`] is the runner of every background duty
//!   ([`quay_replication::Background`]); [`Quay::serve`] serves the router with TLS and limits.
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

pub mod access_log;
mod assemble;
pub mod auth;
pub mod body;
pub mod error;
mod ops;
mod quay;
pub mod request;
mod routes;
pub mod serve;
pub mod status_page;
pub mod users;
pub mod write_gate;

use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::Response;
use quay_core::Registry;
use quay_replication::HealthMonitor;

pub use assemble::{collector_config, configured_location, gc_policy, ConfigOptions};
pub use ops::{prometheus, MetricsRender};
pub use quay::{Quay, QuayBuilder};
pub use request::{parse_path, Endpoint, OciRequest};

/// The header every `/v2/` response carries.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The engine.
    pub(crate) registry: Registry,
    pub(crate) metrics: Option<MetricsRender>,
    pub(crate) health: Arc<HealthMonitor>,
    pub(crate) auth: Option<Arc<auth::AuthConfig>>,
    pub(crate) body_limits: body::BodyLimits,
    pub(crate) write_mode: write_gate::WriteMode,
    /// The instance's name, in access-log lines and on the status page.
    pub(crate) instance: Arc<str>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("registry", &self.registry)
            .field("metrics", &self.metrics.is_some())
            .field("health", &self.health)
            .field("auth", &self.auth)
            .field("body_limits", &self.body_limits)
            .field("write_mode", &self.write_mode)
            .field("instance", &self.instance)
            .finish()
    }
}

async fn add_api_version(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    resp
}
