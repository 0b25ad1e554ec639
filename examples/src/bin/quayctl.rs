//! `quayctl`: the admin tool. Reads the same `--config FILE` as `quay-server`.
//!
//! - `quayctl status [--json] [--wait] [--timeout SECS]`: per location, blobs and bytes held
//!   and missing; the queue; dead-lettered jobs. `--wait` blocks until nothing is missing.
//! - `quayctl backfill`: enqueues every missing copy.
//! - `quayctl remove-location LOCATION [--yes] [--force]`: forgets a location, refusing to
//!   drop the last copy of any blob unless forced.
//! - `quayctl worker`: the standalone replication worker (and reconciler).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use quay_core::config::QuayConfig;
use quay_core::{ErrorKind, JobQueue, LocationId};
use quay_http::{ConfigOptions, Quay};
use quay_replication::{reconciler, status};

#[path = "quayctl/gc.rs"]
mod gc;

/// Admin tool of the quay-rs registry.
#[derive(Debug, Parser)]
#[command(name = "quayctl", version, about)]
struct Args {
    /// A Quay-style config.yaml (the same as the servers').
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Folder of the embedded default (without --config).
    #[arg(long, global = true, default_value = "./quay-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// How far replication has come.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Wait until no default location lacks any blob; exit 0 then, non-zero at the timeout.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Enqueue every copy missing from a default location.
    Backfill {
        /// Also put dead-lettered jobs back in the queue.
        #[arg(long)]
        retry_dead: bool,
    },
    /// Forget a storage location: its placements and its pending jobs.
    RemoveLocation {
        /// The location id.
        location: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Remove even when some blobs have their only copy there (those blobs are lost).
        #[arg(long)]
        force: bool,
    },
    /// Run the replication worker and reconciler until SIGINT/SIGTERM.
    Worker,
    /// Run one garbage-collection pass now and print what it removed.
    Gc {
        /// Print what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Skip the sweep of each location for objects with no database row.
        #[arg(long)]
        no_orphans: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tag history (Quay's time machine): list it, or put a tag back.
    Tag {
        #[command(subcommand)]
        command: TagCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TagCommand {
    /// Former targets of a tag (REPO:TAG) or of every tag of a repository (REPO), newest first.
    History {
        /// REPO or REPO:TAG.
        reference: String,
    },
    /// Points a tag back at a manifest it had within the time-machine window
    /// (REPO:TAG@DIGEST).
    Restore {
        /// REPO:TAG@DIGEST.
        reference: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quayctl: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> quay_core::Result<ExitCode> {
    let preference = std::env::var("QUAY_DISTRIBUTED_STORAGE_PREFERENCE").ok();
    let config = match &args.config {
        Some(path) => QuayConfig::from_file(path, preference.as_deref())?,
        None => QuayConfig::embedded_default(&args.data_dir)?,
    };
    let options = ConfigOptions {
        metrics: false,
        ..ConfigOptions::new(args.config.as_deref(), &args.data_dir)
    };
    let quay = Quay::from_config(&config, &options).await?;
    let registry = quay.registry();
    let metadata = registry.metadata().clone();
    let queue: Arc<dyn JobQueue> = registry
        .queue()
        .cloned()
        .ok_or_else(|| quay_core::Error::internal("the metadata store has no job queue"))?;
    let defaults = config.default_locations.clone();
    match args.command {
        Command::Status {
            json,
            wait,
            timeout,
        } => {
            let deadline = Instant::now() + Duration::from_secs(timeout);
            loop {
                let report =
                    status::gather(metadata.as_ref(), queue.as_ref(), &defaults, 20).await?;
                if !wait || report.complete || Instant::now() >= deadline {
                    if json {
                        let text = serde_json::to_string_pretty(&report).map_err(|e| {
                            quay_core::Error::internal("cannot encode the report").with_source(e)
                        })?;
                        println!("{text}");
                    } else {
                        print!("{}", report.render());
                    }
                    if wait && !report.complete {
                        eprintln!("quayctl: replication not complete after {timeout}s");
                        return Ok(ExitCode::from(1));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Command::Backfill { retry_dead } => {
            if retry_dead {
                let n = queue.retry_dead().await?;
                println!("{n} dead-lettered jobs put back in the queue");
            }
            let tty = std::io::stderr().is_terminal();
            let started = Instant::now();
            let totals = reconciler::reconcile(metadata.as_ref(), queue.as_ref(), &defaults, |t| {
                if tty {
                    eprint!(
                        "\r{} blobs lacking a copy, {} copies missing, {} enqueued",
                        t.blobs, t.missing, t.enqueued
                    );
                    let _ = std::io::stderr().flush();
                }
            })
            .await?;
            if tty {
                eprintln!();
            }
            println!(
                "backfill: {} blobs lacked a copy; {} missing copies; {} jobs enqueued ({} already queued) in {:.1}s",
                totals.blobs,
                totals.missing,
                totals.enqueued,
                totals.missing - totals.enqueued,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::RemoveLocation {
            location,
            yes,
            force,
        } => {
            let id: LocationId = location.parse()?;
            let sole = metadata.sole_copies(&id).await?;
            if sole > 0 && !force {
                eprintln!(
                    "quayctl: refusing to remove {id}: {sole} blobs have their only copy there.\n\
                     Run `quayctl backfill`, then `quayctl status --wait`, and try again \
                     (or pass --force to drop those blobs)."
                );
                return Ok(ExitCode::from(1));
            }
            if !yes {
                eprint!(
                    "Remove location {id}: forget every placement there and its pending jobs{}? [y/N] ",
                    if sole > 0 { format!(" ({sole} blobs will be LOST)") } else { String::new() }
                );
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                if std::io::stdin().read_line(&mut answer).is_err()
                    || !matches!(answer.trim(), "y" | "Y" | "yes")
                {
                    eprintln!("quayctl: not removed");
                    return Ok(ExitCode::from(1));
                }
            }
            match metadata.remove_location(&id, force).await {
                Ok(done) => {
                    println!(
                        "removed location {id}: {} placements and {} queued jobs forgotten{}",
                        done.placements,
                        done.jobs,
                        if done.sole_copies > 0 {
                            format!("; {} blobs had their only copy there", done.sole_copies)
                        } else {
                            String::new()
                        }
                    );
                    println!(
                        "remove {id} from DISTRIBUTED_STORAGE_CONFIG and the preferences next."
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    eprintln!("quayctl: refusing to remove {id}: {}", e.message());
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e),
            }
        }
        Command::Gc {
            dry_run,
            no_orphans,
            json,
        } => gc::run(&quay, &config, dry_run, !no_orphans, json).await,
        Command::Tag { command } => match command {
            TagCommand::History { reference } => gc::history(&quay, &reference).await,
            TagCommand::Restore { reference } => gc::restore(&quay, &config, &reference).await,
        },
        Command::Worker => {
            if !config.replication {
                eprintln!("quayctl: FEATURE_STORAGE_REPLICATION is off; the worker only deletes copies then");
            }
            let settings = &config.replication_settings;
            let worker = quay_replication::worker::WorkerConfig {
                concurrency: settings.workers,
                lease: Duration::from_secs(settings.lease_secs),
                ..Default::default()
            };
            let background = quay
                .background()
                .worker(worker)
                .reconciler(Duration::from_secs(settings.reconcile_interval_secs))
                .without_health()
                .without_upload_expiry()
                .spawn(quay_http::serve::shutdown_signal());
            background.join().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
