//! `quay-server`: the reference registry server.
//!
//! With no arguments it serves on `127.0.0.1:5000` with the embedded default (SQLite and one
//! filesystem location under `./quay-data`). `--config FILE` reads a Quay `config.yaml`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use quay_core::metadata::now_ms;
use tracing::{error, info, warn};

/// A geo-replicated OCI registry server.
#[derive(Debug, Parser)]
#[command(name = "quay-server", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Folder for the embedded default's SQLite database and storage.
    #[arg(long, default_value = "./quay-data")]
    data_dir: PathBuf,
    /// A Quay-style config.yaml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Upload sessions idle this long (seconds) are removed with their data.
    #[arg(long, default_value_t = 24 * 3600)]
    upload_expiry_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("quay-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> quay_core::Result<()> {
    let config = match &args.config {
        Some(path) => quay_examples::load_config(path)?,
        None => quay_examples::default_config(&args.data_dir)?,
    };
    if !config.ignored_keys.is_empty() {
        info!(keys = %config.ignored_keys.join(", "), "config keys not used by this engine (ignored)");
    }
    for (id, driver) in &config.locations {
        info!(location = %id, driver = %quay_examples::describe(driver), "storage location");
    }
    let registry = quay_examples::open_registry(&config, &args.data_dir).await?;
    info!(preference = ?config.preference, "registry ready");

    let expiry = Duration::from_secs(args.upload_expiry_secs);
    let janitor = registry.clone();
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(Duration::from_secs(600).min(expiry.max(Duration::from_secs(1))));
        loop {
            tick.tick().await;
            let cutoff = now_ms() - expiry.as_millis() as i64;
            match janitor.expire_uploads(cutoff).await {
                Ok(0) => {}
                Ok(n) => info!(sessions = n, "expired abandoned upload sessions"),
                Err(e) => warn!(error = %e, "upload expiry failed"),
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            quay_core::Error::new(
                quay_core::ErrorKind::Config,
                format!("cannot listen on {}", args.listen),
            )
            .with_source(e)
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| quay_core::Error::internal("no local address").with_source(e))?;
    info!(address = %local, "listening");
    let app = quay_http::router(registry);
    axum_serve(listener, app).await
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) -> quay_core::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| quay_core::Error::internal("server failed").with_source(e))?;
    info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("SIGINT received, shutting down"),
        _ = term => info!("SIGTERM received, shutting down"),
    }
}
