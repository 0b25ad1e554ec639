//! A host application with the registry inside: the host keeps its own `/hello`, `/metrics`
//! and fallback, merges the OCI API (`/v2/…`), nests the registry's health and metrics under
//! `/registry`, and runs the registry's background duties. Three calls: `Quay::from_config`,
//! the merge, `background().spawn`. Run: `cargo run -p quay-examples --example embed`.
use axum::{http::StatusCode, routing::get, Router};
use quay_core::config::QuayConfig;
use quay_http::{ConfigOptions, Quay};

/// The host's router with the registry in it, on the embedded default under `data_dir`.
pub async fn host_app(data_dir: &std::path::Path) -> quay_core::Result<(Router, Quay)> {
    let config = QuayConfig::embedded_default(data_dir)?;
    let quay = Quay::from_config(&config, &ConfigOptions::new(None, data_dir)).await?;
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the host" }))
        .route("/metrics", get(|| async { "host_up 1\n" }))
        .merge(quay.oci_routes())
        .nest("/registry", quay.ops_routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not a page of the host") });
    Ok((app, quay))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5000".into());
    let (app, quay) = host_app("./embed-data".as_ref()).await?;
    let background = quay.background().spawn(std::future::pending());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("host app with a registry on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(quay_http::serve::shutdown_signal())
        .await?;
    background.stop().await;
    Ok(())
}
