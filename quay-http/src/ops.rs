//! The operations routes: `/health/instance`, `/health/endtoend` and `/metrics`, answered from
//! the health monitor's latest results and the process's metrics recorder.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quay_core::{Error, Result};
use serde_json::json;

use crate::AppState;

/// Renders the process's metrics in the Prometheus text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// The histogram buckets of every latency and lag (seconds).
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

static PROMETHEUS: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();

/// Installs a Prometheus recorder as the process's metrics recorder, once (later calls return
/// the same renderer). Fails when another recorder was installed first, e.g. by the host
/// application: give that one's renderer to the builder instead.
pub fn prometheus() -> Result<MetricsRender> {
    if let Some(handle) = PROMETHEUS.get() {
        let handle = handle.clone();
        return Ok(Arc::new(move || handle.render()));
    }
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(|e| Error::internal("bad metrics buckets").with_source(e))?
        .install_recorder()
        .map_err(|e| {
            Error::internal("cannot install the Prometheus metrics recorder").with_source(e)
        })?;
    let handle = PROMETHEUS.get_or_init(|| handle).clone();
    Ok(Arc::new(move || handle.render()))
}

fn health(state: &AppState, instance: bool) -> Response {
    let (code, body) = state.health.report(instance);
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (code, axum::Json(body)).into_response()
}

pub(crate) async fn instance(State(state): State<AppState>) -> Response {
    health(&state, true)
}

pub(crate) async fn endtoend(State(state): State<AppState>) -> Response {
    health(&state, false)
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(render) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"errors": [{"code": "NOT_FOUND", "message": "no metrics recorder", "detail": null}]})),
        )
            .into_response(),
    }
}
