//! `quayctl status [--json] [--wait] [--timeout SECS]`: per location, blobs and bytes held and
//! missing, its jobs and lag; the queue; dead-lettered jobs; the workers seen recently, with a
//! warning when work waits and none is. `--wait` blocks until nothing is missing, showing on a
//! terminal the missing copies going down, the rate and an estimate of the time left.
//! `--image REPO:TAG|REPO@DIGEST` answers for one image (the library's
//! `Registry::image_status`), exit 1 while it is incomplete.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use quay_core::{Reference, RepositoryName};
use quay_replication::status::{self, human_bytes, human_duration, StatusReport};

use crate::Ctx;

/// Pause between two looks while waiting.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Wait until no default location lacks any blob; exit 0 then, 1 at the timeout.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// One image instead of the whole registry: `REPO:TAG` or `REPO@DIGEST`. Exits 1 while a
    /// default location lacks one of its blobs (with --wait: at the timeout).
    #[arg(long, value_name = "REPO:TAG|REPO@DIGEST")]
    image: Option<String>,
}

/// Splits `REPO:TAG` or `REPO@DIGEST` (a port in a registry host is not part of a name here).
fn parse_image(image: &str) -> quay_core::Result<(RepositoryName, Reference)> {
    let bad = || {
        quay_core::Error::new(
            quay_core::ErrorKind::InvalidInput,
            format!("--image {image:?}: expected REPO:TAG or REPO@DIGEST"),
        )
    };
    let (repo, reference) = match image.split_once('@') {
        Some((repo, digest)) => (repo, digest),
        None => {
            let (repo, tag) = image.rsplit_once(':').ok_or_else(bad)?;
            if tag.contains('/') {
                return Err(bad());
            }
            (repo, tag)
        }
    };
    Ok((repo.parse()?, reference.parse()?))
}

/// `status --image`: one image, optionally waited for.
async fn run_image(ctx: &Ctx, args: &StatusArgs, image: &str) -> quay_core::Result<ExitCode> {
    let (repository, reference) = parse_image(image)?;
    let registry = ctx.quay.registry();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let status = registry.image_status(&repository, &reference).await?;
        if status.complete || !args.wait || Instant::now() >= deadline {
            if args.json {
                let text = serde_json::to_string_pretty(&status).map_err(|e| {
                    quay_core::Error::internal("cannot encode the status").with_source(e)
                })?;
                println!("{text}");
            } else {
                print!("{}", status.render());
            }
            if status.complete {
                return Ok(ExitCode::SUCCESS);
            }
            if args.wait {
                eprintln!(
                    "quayctl: {image} not replicated after {}s: {} copies missing",
                    args.timeout,
                    status.missing_copies()
                );
            }
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) async fn run(ctx: &Ctx, args: &StatusArgs) -> quay_core::Result<ExitCode> {
    if let Some(image) = &args.image {
        return run_image(ctx, args, image).await;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let tty = std::io::stderr().is_terminal();
    let mut progress = Progress::default();
    loop {
        let report =
            status::gather(ctx.metadata.as_ref(), ctx.queue.as_ref(), &ctx.defaults, 20).await?;
        if !args.wait || report.complete || Instant::now() >= deadline {
            progress.finish(tty);
            print(&report, args.json)?;
            if args.wait && !report.complete {
                eprintln!(
                    "quayctl: replication not complete after {}s: {} copies missing",
                    args.timeout,
                    report.missing_copies()
                );
                return Ok(ExitCode::from(1));
            }
            return Ok(ExitCode::SUCCESS);
        }
        progress.show(&report, tty);
        tokio::time::sleep(POLL).await;
    }
}

fn print(report: &StatusReport, json: bool) -> quay_core::Result<()> {
    if json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| quay_core::Error::internal("cannot encode the report").with_source(e))?;
        println!("{text}");
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// What `--wait` shows while it waits: a line rewritten in place on a terminal, and the
/// no-worker warning each time the registry comes to that state (on any output).
#[derive(Default)]
struct Progress {
    first: Option<(Instant, u64)>,
    line_open: bool,
    warned: bool,
}

impl Progress {
    fn show(&mut self, report: &StatusReport, tty: bool) {
        let missing = report.missing_copies();
        let (since, at_start) = *self.first.get_or_insert((Instant::now(), missing));
        let idle = report.nobody_working();
        if idle && !self.warned {
            self.finish(tty);
            eprintln!("quayctl: warning: {}", StatusReport::no_worker_warning());
        }
        self.warned = idle;
        if !tty {
            return;
        }
        let elapsed = since.elapsed().as_secs_f64();
        let rate = at_start.saturating_sub(missing) as f64 / elapsed.max(0.001);
        let eta = if rate > 0.0 {
            human_duration(missing as f64 / rate)
        } else {
            "unknown".to_owned()
        };
        eprint!(
            "\r\x1b[2Kwaiting: {missing} copies missing ({}), {rate:.1} copies/s, ETA {eta}, \
             {} worker(s), {}",
            human_bytes(report.missing_bytes()),
            report.workers.len(),
            human_duration(elapsed)
        );
        let _ = std::io::stderr().flush();
        self.line_open = true;
    }

    /// Ends the progress line, if one is open.
    fn finish(&mut self, tty: bool) {
        if tty && self.line_open {
            eprintln!();
            self.line_open = false;
        }
    }
}
