//! `quayctl backfill [--retry-dead]`: enqueues every copy missing from a default location.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use quay_replication::reconciler;

use crate::Ctx;

#[derive(Debug, clap::Args)]
pub(crate) struct BackfillArgs {
    /// Also put dead-lettered jobs back in the queue.
    #[arg(long)]
    retry_dead: bool,
}

pub(crate) async fn run(ctx: &Ctx, args: &BackfillArgs) -> quay_core::Result<ExitCode> {
    if args.retry_dead {
        let n = ctx.queue.retry_dead().await?;
        println!("{n} dead-lettered jobs put back in the queue");
    }
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let totals = reconciler::reconcile(
        ctx.metadata.as_ref(),
        ctx.queue.as_ref(),
        &ctx.defaults,
        |t| {
            if tty {
                eprint!(
                    "\r{} blobs lacking a copy, {} copies missing, {} enqueued",
                    t.blobs, t.missing, t.enqueued
                );
                let _ = std::io::stderr().flush();
            }
        },
    )
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
