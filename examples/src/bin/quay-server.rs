//! `quay-server`: the registry server. Argument parsing and logging, then the library's
//! [`Quay::from_config`], its background runner and its server.

#[path = "../logging.rs"]
mod logging;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use quay_core::config::{LogFormat, QuayConfig};
use quay_http::{ConfigOptions, Quay};
use tracing::{error, info, warn};

/// What `--help` says the tool is for.
const ABOUT: &str = "Serves a geo-replicated OCI container registry: the OCI Distribution API \
(push and pull with skopeo, podman, docker), /health/*, /metrics and a status page at /status, \
from a Quay config.yaml; and runs its background work (replication worker, reconciler, health \
probes, upload expiry). Several instances, one per region, share one database.";

const AFTER_HELP: &str = "\
Without --config, it serves the embedded default: SQLite and one filesystem location under
--data-dir (created when missing).";

#[derive(Debug, Parser)]
#[command(
    name = "quay-server",
    version,
    about = ABOUT,
    after_help = format!("{AFTER_HELP}\n\n{}", logging::ENVIRONMENT_HELP),
)]
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
    /// Seconds between background health probes (database, Redis, every storage location).
    #[arg(long, default_value_t = 2)]
    health_interval_secs: u64,
    /// Do not run the replication worker, the reconciler and the Redis queue's outbox relay in
    /// this process (run `quayctl worker` instead).
    #[arg(long)]
    no_worker: bool,
    /// PEM certificate chain to serve TLS with (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest request head (request line and headers) accepted, in bytes; larger gets 431.
    #[arg(long, default_value_t = quay_http::serve::DEFAULT_MAX_HEADER_BYTES)]
    max_header_bytes: usize,
    /// Log lines as `text` or `json` (default: the config's QUAY_LOG_FORMAT, else text).
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // The configuration first: it may choose the log format. Its error is logged once, below.
    let preference = std::env::var("QUAY_DISTRIBUTED_STORAGE_PREFERENCE").ok();
    let config = match &args.config {
        Some(path) => QuayConfig::from_file(path, preference.as_deref()),
        None => QuayConfig::embedded_default(&args.data_dir),
    };
    let format = match args.log_format.as_deref().map(str::parse) {
        Some(Ok(f)) => f,
        _ => config.as_ref().map_or(LogFormat::Text, |c| c.log_format),
    };
    logging::init(format, "info");
    let result = match config {
        Ok(config) => run(args, config).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, config: QuayConfig) -> quay_core::Result<()> {
    if !config.ignored_keys.is_empty() {
        info!(keys = %config.ignored_keys.join(", "), "config keys not used by this engine (ignored)");
    }
    let options = ConfigOptions {
        tls_files: args.tls_cert.clone().zip(args.tls_key.clone()),
        upload_expiry: Duration::from_secs(args.upload_expiry_secs),
        health_interval: Duration::from_secs(args.health_interval_secs.max(1)),
        max_header_bytes: args.max_header_bytes,
        ..ConfigOptions::new(args.config.as_deref(), &args.data_dir)
    };
    let quay = Quay::from_config(&config, &options).await?;
    let tls = quay.serve_options().tls.is_some();
    if !tls && !args.listen.ip().is_loopback() {
        warn!(address = %args.listen, "serving plain HTTP on a non-loopback address: \
               configure TLS (--tls-cert/--tls-key) for anything but development");
    }
    match quay.auth() {
        Some(a) => info!(service = %a.service, "access control on (token authentication)"),
        None => warn!("no users configured: access control is off, anyone may push and delete"),
    }
    info!(preference = ?config.preference, replication = config.replication, tls, "registry ready");
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| config_error(format!("cannot listen on {}", args.listen), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| config_error("no local address".into(), e))?;
    info!(address = %local, "listening");
    quay.refresh_health().await;
    let mut background = quay.background().role("quay-server");
    if args.no_worker {
        // Replication runs elsewhere (`quayctl worker`), and so does the relay that feeds a
        // Redis queue from the outbox.
        background = background
            .without_worker()
            .without_reconciler()
            .without_relay();
    }
    let background = background.spawn(std::future::pending());
    let served = quay
        .serve(listener, quay_http::serve::shutdown_signal())
        .await;
    info!("shut down");
    background.stop().await;
    served
}

fn config_error(message: String, e: std::io::Error) -> quay_core::Error {
    quay_core::Error::new(quay_core::ErrorKind::Config, message).with_source(e)
}
