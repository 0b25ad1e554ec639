//! `quayctl remove-location LOCATION [--yes] [--force]`: forgets a location, refusing to drop
//! the last copy of any blob unless forced.

use std::io::Write;
use std::process::ExitCode;

use quay_core::{ErrorKind, LocationId};

use crate::Ctx;

#[derive(Debug, clap::Args)]
pub(crate) struct RemoveLocationArgs {
    /// The location id.
    location: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Remove even when some blobs have their only copy there (those blobs are lost).
    #[arg(long)]
    force: bool,
}

pub(crate) async fn run(ctx: &Ctx, args: &RemoveLocationArgs) -> quay_core::Result<ExitCode> {
    let metadata = &ctx.metadata;
    let id: LocationId = args.location.parse()?;
    let sole = metadata.sole_copies(&id).await?;
    if sole > 0 && !args.force {
        eprintln!(
            "quayctl: refusing to remove {id}: {sole} blobs have their only copy there.\n\
             Run `quayctl backfill`, then `quayctl status --wait`, and try again \
             (or pass --force to drop those blobs)."
        );
        return Ok(ExitCode::from(1));
    }
    if !args.yes {
        eprint!(
            "Remove location {id}: forget every placement there and its pending jobs{}? [y/N] ",
            if sole > 0 {
                format!(" ({sole} blobs will be LOST)")
            } else {
                String::new()
            }
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
    match metadata.remove_location(&id, args.force).await {
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
            println!("remove {id} from DISTRIBUTED_STORAGE_CONFIG and the preferences next.");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == ErrorKind::Conflict => {
            eprintln!("quayctl: refusing to remove {id}: {}", e.message());
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e),
    }
}
