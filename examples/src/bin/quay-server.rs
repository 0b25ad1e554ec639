//! `quay-server`: the reference registry server.
//!
//! With no arguments it serves on `127.0.0.1:5000` with the embedded default (SQLite and one
//! filesystem location under `./quay-data`). `--config FILE` reads a Quay `config.yaml`.
//!
//! TLS: `--tls-cert`/`--tls-key`, else `QUAY_TLS_CERT`/`QUAY_TLS_KEY` in the config, else
//! Quay's `ssl.cert`/`ssl.key` beside the config file. Without them it serves plain HTTP (for
//! loopback development). Access control is on when the config names users
//! (`QUAY_AUTH_USERS`, `QUAY_AUTH_HTPASSWD`).

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
    /// Seconds between background health probes (database, Redis, every storage location).
    #[arg(long, default_value_t = 2)]
    health_interval_secs: u64,
    /// Do not run the replication worker and reconciler in this process (run `quayctl worker`
    /// instead).
    #[arg(long)]
    no_worker: bool,
    /// PEM certificate chain to serve TLS with (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest request head (request line and headers) accepted, in bytes; larger gets 431.
    #[arg(long, default_value_t = quay_examples::serve::DEFAULT_MAX_HEADER_BYTES)]
    max_header_bytes: usize,
}

/// Where the certificate and key come from: flags, config keys, or Quay's `ssl.cert` and
/// `ssl.key` in the config folder.
fn tls_files(
    args: &Args,
    config: &quay_storage::config::QuayConfig,
    config_dir: Option<&std::path::Path>,
) -> Option<(PathBuf, PathBuf)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Some((cert.clone(), key.clone()));
    }
    if let Some(files) = &config.tls {
        return Some((
            quay_examples::relative_to(config_dir, &files.cert),
            quay_examples::relative_to(config_dir, &files.key),
        ));
    }
    let dir = config_dir?;
    let (cert, key) = (dir.join("ssl.cert"), dir.join("ssl.key"));
    (cert.is_file() && key.is_file()).then_some((cert, key))
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
    let config_dir = args
        .config
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(|d| {
            if d.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                d
            }
        });
    let tls = match tls_files(&args, &config, config_dir) {
        Some((cert, key)) => {
            info!(cert = %cert.display(), "serving TLS");
            Some(quay_examples::serve::load_tls(&cert, &key)?)
        }
        None => {
            if !args.listen.ip().is_loopback() {
                warn!(address = %args.listen, "serving plain HTTP on a non-loopback address: \
                       configure TLS (--tls-cert/--tls-key) for anything but development");
            }
            None
        }
    };
    let auth = quay_examples::auth_config(&config, config_dir, tls.is_some())?;
    match &auth {
        Some(a) => info!(service = %a.service, "access control on (token authentication)"),
        None => warn!("no users configured: access control is off, anyone may push and delete"),
    }
    let opened = quay_examples::open_registry(&config, &args.data_dir).await?;
    let registry = opened.registry.clone();
    info!(preference = ?config.preference, replication = config.replication, "registry ready");
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
        ])
        .map_err(|e| quay_core::Error::internal("bad metrics buckets").with_source(e))?
        .install_recorder()
        .map_err(|e| {
            quay_core::Error::internal("cannot install the metrics recorder").with_source(e)
        })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut background = Vec::new();
    let mut redis_queue = None;
    if config.replication && !args.no_worker {
        let (queue, relay) = quay_examples::open_queues(&config, &opened.store).await?;
        if relay.is_some() {
            redis_queue = Some(queue.clone());
        }
        background.extend(quay_examples::spawn_replication(
            &config,
            &registry,
            queue,
            relay,
            stop_rx.clone(),
        ));
    }

    let expiry = Duration::from_secs(args.upload_expiry_secs);
    let janitor = registry.clone();
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(Duration::from_secs(600).min(expiry.max(Duration::from_secs(1))));
        loop {
            tick.tick().await;
            let cutoff = now_ms() - expiry.as_millis() as i64;
            match janitor.expire_uploads(cutoff).await {
                Ok(sweep) if sweep.is_empty() => {}
                Ok(sweep) => info!(
                    sessions = sweep.sessions,
                    orphaned = sweep.orphaned_sessions,
                    temporary_files = sweep.temporary_files,
                    "removed abandoned uploads"
                ),
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
    let probe_timeout = Duration::from_secs(config.storage_timeout_secs.min(10));
    let mut monitor = quay_http::health::HealthMonitor::for_registry(
        &registry,
        std::sync::Arc::new(opened.store.clone()),
        probe_timeout,
    );
    if let Some(queue) = redis_queue {
        // Reported on /health/endtoend; a Redis outage delays replication but fails nothing.
        monitor = monitor.with_check(
            std::sync::Arc::new(quay_http::health::QueueProbe::new("redis", queue)),
            quay_http::health::CheckRole {
                instance: false,
                endtoend_critical: false,
            },
        );
    }
    let monitor = std::sync::Arc::new(monitor);
    monitor.refresh().await;
    background.push(tokio::spawn(monitor.clone().run(
        Duration::from_secs(args.health_interval_secs.max(1)),
        quay_examples::stopped(stop_rx.clone()),
    )));
    let options = quay_http::RouterOptions {
        metrics: Some(std::sync::Arc::new(move || metrics.render())),
        health: Some(monitor),
        auth,
        body_limits: quay_http::body::BodyLimits {
            idle_timeout: Duration::from_secs(config.client_body_timeout_secs),
            min_bytes_per_sec: config.client_body_min_bytes_per_sec,
        },
    };
    let app = quay_http::router_with(registry, options);
    let serve_options = quay_examples::serve::ServeOptions {
        tls,
        max_header_bytes: args.max_header_bytes,
    };
    let served = quay_examples::serve::serve(
        listener,
        app,
        serve_options,
        quay_examples::shutdown_signal(),
    )
    .await;
    info!("shut down");
    let _ = stop_tx.send(true);
    for task in background {
        let _ = task.await;
    }
    served
}
