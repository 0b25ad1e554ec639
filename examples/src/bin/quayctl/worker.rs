//! `quayctl worker`: the standalone replication worker (and reconciler), until SIGINT or
//! SIGTERM. It records a heartbeat that `quayctl status` lists, logs a progress line at INFO
//! while it copies and each finished job at DEBUG.

use std::process::ExitCode;
use std::time::Duration;

use quay_replication::worker::WorkerConfig;
use tracing::{info, warn};

use crate::Ctx;

pub(crate) async fn run(ctx: &Ctx) -> quay_core::Result<ExitCode> {
    let config = &ctx.config;
    if !config.replication {
        warn!(
            "FEATURE_STORAGE_REPLICATION is off: the worker only removes copies of deleted blobs"
        );
    }
    let settings = &config.replication_settings;
    let worker = WorkerConfig {
        concurrency: settings.workers,
        lease: Duration::from_secs(settings.lease_secs),
        ..Default::default()
    };
    info!(
        defaults = ?ctx.defaults,
        preference = ?config.preference,
        "quayctl worker starting"
    );
    let background = ctx
        .quay
        .background()
        .role("quayctl worker")
        .worker(worker)
        .reconciler(Duration::from_secs(settings.reconcile_interval_secs))
        .without_health()
        .without_upload_expiry()
        .spawn(quay_http::serve::shutdown_signal());
    background.join().await;
    info!("quayctl worker stopped");
    Ok(ExitCode::SUCCESS)
}
