//! `quayctl scrub` and `quayctl location drain|undrain`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use quay_core::{Error, ErrorKind, LocationId, Result};
use quay_replication::scrub::{scrub, ScrubOptions};

use crate::Ctx;

/// `quayctl scrub`.
#[derive(Debug, clap::Args)]
pub(crate) struct ScrubArgs {
    /// Scrub only this location (repeatable); default: every configured location.
    #[arg(long = "location", value_name = "L")]
    locations: Vec<String>,
    /// Replace each missing or corrupt copy now from a good one, through the verified copy
    /// path (without it a repair job is queued for the worker).
    #[arg(long, conflicts_with = "dry_run")]
    repair: bool,
    /// Report only: record nothing, queue nothing, repair nothing.
    #[arg(long)]
    dry_run: bool,
    /// Read at most this many bytes per second (default: as fast as storage answers).
    #[arg(long, value_name = "BYTES")]
    rate: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `quayctl location`.
#[derive(Debug, clap::Args)]
pub(crate) struct LocationArgs {
    #[command(subcommand)]
    command: LocationCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LocationCommand {
    /// Takes a location out of the write path: no new blob is written there, reads prefer
    /// other holders, replication into it goes on. Running servers see it within a probe
    /// interval.
    Drain {
        /// The location's name (a key of DISTRIBUTED_STORAGE_CONFIG).
        location: String,
    },
    /// Puts a drained location back into the write path.
    Undrain {
        /// The location's name.
        location: String,
    },
    /// Lists the configured locations, marking drained ones.
    List,
}

/// A configured location named `name`, or an error that lists the configured ones.
fn configured(ctx: &Ctx, name: &str) -> Result<LocationId> {
    let locations = ctx.quay.registry().locations();
    locations
        .keys()
        .find(|l| l.as_str() == name)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = locations.keys().map(|l| l.as_str()).collect();
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "no storage location {name:?} in DISTRIBUTED_STORAGE_CONFIG (configured: {})",
                    known.join(", ")
                ),
            )
        })
}

/// Runs `quayctl scrub`: exit 0 when every copy read is good, 1 when some is bad.
pub(crate) async fn run(ctx: &Ctx, args: &ScrubArgs) -> Result<ExitCode> {
    let locations = if args.locations.is_empty() {
        ctx.quay.registry().locations().keys().cloned().collect()
    } else {
        args.locations
            .iter()
            .map(|l| configured(ctx, l))
            .collect::<Result<Vec<_>>>()?
    };
    let options = ScrubOptions {
        repair: args.repair,
        dry_run: args.dry_run,
        bytes_per_sec: args.rate,
    };
    let tty = std::io::stderr().is_terminal();
    let report = scrub(
        ctx.quay.registry(),
        &locations,
        options,
        |location, found| {
            if tty {
                eprint!(
                    "\r\x1b[2K{location}: {} copies checked, {} missing, {} corrupt",
                    found.checked,
                    found.missing.len(),
                    found.corrupt.len()
                );
                let _ = std::io::stderr().flush();
            }
        },
    )
    .await?;
    if tty {
        eprint!("\r\x1b[2K");
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::internal(format!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.render(args.dry_run));
    }
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs `quayctl location …`.
pub(crate) async fn location(ctx: &Ctx, args: &LocationArgs) -> Result<ExitCode> {
    let metadata = &ctx.metadata;
    match &args.command {
        LocationCommand::Drain { location } => {
            let l = configured(ctx, location)?;
            metadata.set_drained(&l, true).await?;
            println!("{l} drained: no new blob is written there; replication into it goes on");
        }
        LocationCommand::Undrain { location } => {
            let l = configured(ctx, location)?;
            metadata.set_drained(&l, false).await?;
            println!("{l} undrained: it takes new blobs again");
        }
        LocationCommand::List => {
            let drained = metadata.drained_locations().await?;
            for l in ctx.quay.registry().locations().keys() {
                let mark = if drained.contains(l) { "  drained" } else { "" };
                println!("{l}{mark}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
