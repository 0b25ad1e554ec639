//! `quayctl`: the operator's tool. Reads the same `--config FILE` as `quay-server`, and never
//! creates a database: a wrong folder or config is an error that names the path.
//!
//! Each subcommand lives in its own module: arguments here, the work there.

#[path = "../../logging.rs"]
mod logging;

mod backfill;
mod bench;
mod gc;
mod remove_location;
mod scrub;
mod status;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use quay_core::config::{LogFormat, QuayConfig};
use quay_core::{JobQueue, LocationId, MetadataStore};
use quay_http::{ConfigOptions, Quay};

/// What `--help` says the tool is for.
const ABOUT: &str = "The operator's tool of a quay-rs registry: is replication done (status), \
enqueue what is missing (backfill), forget a storage location, run a standalone replication \
worker, measure replication between two locations (bench), collect garbage (gc), put a \
tag back (tag history|restore), check every stored copy (scrub) and take a location out of the \
write path (location drain|undrain). It reads the same config.yaml \
as quay-server and never creates a database.";

const AFTER_HELP: &str = "\
Without --config, it works on quay-server's embedded default under --data-dir; a folder with
no registry database is an error, never a new empty registry.";

#[derive(Debug, Parser)]
#[command(
    name = "quayctl",
    version,
    about = ABOUT,
    after_help = format!("{AFTER_HELP}\n\n{}", logging::ENVIRONMENT_HELP),
)]
struct Args {
    /// The registry's Quay-style config.yaml (the same as quay-server's).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Folder of the embedded default (without --config), as quay-server's --data-dir.
    #[arg(long, global = true, default_value = "./quay-data")]
    data_dir: PathBuf,
    /// Log lines as `text` or `json` (default: the config's QUAY_LOG_FORMAT, else text).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// How far replication has come, per location, and which workers run.
    Status(status::StatusArgs),
    /// Enqueue every copy missing from a default location.
    Backfill(backfill::BackfillArgs),
    /// Forget a storage location: its placements and its pending jobs.
    RemoveLocation(remove_location::RemoveLocationArgs),
    /// Run the replication worker and reconciler until SIGINT/SIGTERM.
    Worker,
    /// Measure replication from one location to another with test blobs under a scratch
    /// prefix (removed at the end).
    Bench(bench::BenchArgs),
    /// Run one garbage-collection pass now and print what it removed.
    Gc(gc::GcArgs),
    /// Tag history (Quay's time machine): list it, or put a tag back.
    Tag(gc::TagArgs),
    /// Read every stored copy, check size and sha256, report (and repair) what is missing
    /// or corrupt per location. Exit 1 when a bad copy was found.
    Scrub(scrub::ScrubArgs),
    /// Drain a location (out of the write path for maintenance), undrain it, or list them.
    Location(scrub::LocationArgs),
}

/// What the subcommands work on.
pub(crate) struct Ctx {
    pub(crate) config: QuayConfig,
    pub(crate) quay: Quay,
    pub(crate) metadata: Arc<dyn MetadataStore>,
    pub(crate) queue: Arc<dyn JobQueue>,
    pub(crate) defaults: Vec<LocationId>,
}

impl Ctx {
    /// Opens the registry of `config`: the database must exist.
    async fn open(args: &Args, config: QuayConfig) -> quay_core::Result<Ctx> {
        let options = ConfigOptions {
            metrics: false,
            create_database: false,
            ..ConfigOptions::new(args.config.as_deref(), &args.data_dir)
        };
        let quay = Quay::from_config(&config, &options).await?;
        let registry = quay.registry();
        let metadata = registry.metadata().clone();
        let queue: Arc<dyn JobQueue> = registry
            .queue()
            .or(registry.outbox())
            .cloned()
            .ok_or_else(|| quay_core::Error::internal("the metadata store has no job queue"))?;
        Ok(Ctx {
            defaults: config.default_locations.clone(),
            config,
            quay,
            metadata,
            queue,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let preference = std::env::var("QUAY_DISTRIBUTED_STORAGE_PREFERENCE").ok();
    let config = match &args.config {
        Some(path) => QuayConfig::from_file(path, preference.as_deref()),
        None => QuayConfig::embedded_default(&args.data_dir),
    };
    let format = match args.log_format.as_deref().map(str::parse) {
        Some(Ok(f)) => f,
        _ => config.as_ref().map_or(LogFormat::Text, |c| c.log_format),
    };
    // The worker tells what it does; the other commands only warn.
    let default_filter = match args.command {
        Command::Worker => "info",
        _ => "warn",
    };
    logging::init(format, default_filter);
    let result = match config {
        Ok(config) => run(args, config).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quayctl: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args, config: QuayConfig) -> quay_core::Result<ExitCode> {
    if let Command::Bench(bench) = &args.command {
        // Storage only: no database needed.
        return bench::run(&config, bench).await;
    }
    let ctx = Ctx::open(&args, config).await?;
    match args.command {
        Command::Status(a) => status::run(&ctx, &a).await,
        Command::Backfill(a) => backfill::run(&ctx, &a).await,
        Command::RemoveLocation(a) => remove_location::run(&ctx, &a).await,
        Command::Worker => worker::run(&ctx).await,
        Command::Gc(a) => gc::run(&ctx, &a).await,
        Command::Tag(a) => gc::tag(&ctx, &a).await,
        Command::Scrub(a) => scrub::run(&ctx, &a).await,
        Command::Location(a) => scrub::location(&ctx, &a).await,
        Command::Bench(_) => Ok(ExitCode::SUCCESS),
    }
}
