//! `quayctl bench --from L1 --to L2 [--blobs N] [--size BYTES] [--concurrency N]`: writes test
//! blobs under a scratch prefix of L1, copies them to L2 with the production copy path, prints
//! MB/s and blobs/s (with progress on a terminal), and removes every object it wrote. For
//! measuring real locations before a rollout; it needs no database.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use quay_core::config::QuayConfig;
use quay_core::LocationId;
use quay_replication::bench::{self, BenchOptions, BenchProgress, Phase};
use quay_replication::status::human_bytes;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The location to copy from (an id of DISTRIBUTED_STORAGE_CONFIG).
    #[arg(long)]
    from: String,
    /// The location to copy to.
    #[arg(long)]
    to: String,
    /// Test blobs to copy.
    #[arg(long, default_value_t = 32)]
    blobs: usize,
    /// Size of each test blob, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    size: u64,
    /// Copies at once (default: the config's QUAY_REPLICATION_WORKERS).
    #[arg(long)]
    concurrency: Option<usize>,
}

pub(crate) async fn run(config: &QuayConfig, args: &BenchArgs) -> quay_core::Result<ExitCode> {
    let from: LocationId = args.from.parse()?;
    let to: LocationId = args.to.parse()?;
    let source = quay_http::configured_location(config, &from)?;
    let target = quay_http::configured_location(config, &to)?;
    let options = BenchOptions {
        blobs: args.blobs,
        size: args.size,
        concurrency: args
            .concurrency
            .unwrap_or(config.replication_settings.workers)
            .max(1),
    };
    println!(
        "bench: {} blobs of {} from {from} to {to}, {} at once",
        options.blobs,
        human_bytes(options.size),
        options.concurrency
    );
    let tty = std::io::stderr().is_terminal();
    let mut show = |p: &BenchProgress| {
        if tty {
            let what = match p.phase {
                Phase::Writing => format!("writing test blobs into {from}"),
                Phase::Copying => format!("copying {from} -> {to}"),
            };
            eprint!(
                "\r\x1b[2K{what}: {}/{} blobs, {:.1} MB/s",
                p.done,
                p.total,
                p.mb_per_sec()
            );
            if p.done == p.total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    };
    let report = bench::run(source, target, &options, &mut show).await?;
    println!(
        "write {from}: {} in {:.2}s, {:.1} MB/s (writing the test blobs, for comparison)",
        human_bytes(report.bytes),
        report.write_time.as_secs_f64(),
        report.write_mb_per_sec()
    );
    println!(
        "copy {from} -> {to}: {} blobs, {} in {:.2}s: {:.1} MB/s, {:.1} blobs/s",
        report.blobs,
        human_bytes(report.bytes),
        report.copy_time.as_secs_f64(),
        report.mb_per_sec(),
        report.blobs_per_sec()
    );
    if report.left_behind > 0 {
        eprintln!(
            "quayctl: {} objects are left under {} in {from} or {to}: remove them by hand",
            report.left_behind, report.prefix
        );
        return Ok(ExitCode::from(1));
    }
    println!(
        "removed everything under {} in {from} and {to}",
        report.prefix
    );
    Ok(ExitCode::SUCCESS)
}
