//! `quayctl gc` and `quayctl tag history|restore`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use quay_core::config::QuayConfig;
use quay_core::metadata::now_ms;
use quay_core::{Digest, Error, ErrorKind, RepositoryName, Result, Tag};
use quay_http::Quay;
use quay_replication::collector::collect_once;

use crate::Ctx;

/// `quayctl gc`.
#[derive(Debug, clap::Args)]
pub(crate) struct GcArgs {
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Skip the sweep of each location for objects with no database row.
    #[arg(long)]
    no_orphans: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `quayctl tag`.
#[derive(Debug, clap::Args)]
pub(crate) struct TagArgs {
    #[command(subcommand)]
    command: TagCommand,
}

#[derive(Debug, clap::Subcommand)]
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

/// Runs `quayctl tag …`.
pub(crate) async fn tag(ctx: &Ctx, args: &TagArgs) -> Result<ExitCode> {
    match &args.command {
        TagCommand::History { reference } => history(&ctx.quay, reference).await,
        TagCommand::Restore { reference } => restore(&ctx.quay, &ctx.config, reference).await,
    }
}

/// One pass now, under the registry's collection lease.
pub(crate) async fn run(ctx: &Ctx, args: &GcArgs) -> Result<ExitCode> {
    let (quay, config) = (&ctx.quay, &ctx.config);
    let json = args.json;
    let mut policy = quay_http::gc_policy(config);
    policy.dry_run = args.dry_run;
    if !args.no_orphans {
        policy.orphan_grace = Some(Duration::from_secs(config.gc.orphan_grace_secs));
    }
    let tty = std::io::stderr().is_terminal();
    let holder = format!("quayctl-{}", uuid_like());
    let report = collect_once(quay.registry(), &policy, &holder, |step| {
        if tty {
            eprint!("\r\x1b[2K{step}…");
            let _ = std::io::stderr().flush();
        }
    })
    .await?;
    if tty {
        eprint!("\r\x1b[2K");
    }
    let Some(report) = report else {
        eprintln!("quayctl: another instance is collecting right now; try again in a moment");
        return Ok(ExitCode::from(1));
    };
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::internal("cannot encode the report").with_source(e))?;
        println!("{text}");
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn uuid_like() -> String {
    format!("{:x}{:x}", std::process::id(), now_ms())
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

/// `REPO[:TAG]`.
fn repo_and_tag(reference: &str) -> Result<(RepositoryName, Option<Tag>)> {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => Ok((repo.parse()?, Some(tag.parse()?))),
        _ => Ok((reference.parse()?, None)),
    }
}

/// Prints the history of a tag or of a repository's tags.
async fn history(quay: &Quay, reference: &str) -> Result<ExitCode> {
    let (repository, tag) = repo_and_tag(reference)?;
    let entries = quay
        .registry()
        .metadata()
        .tag_history(&repository, tag.as_ref(), 1000)
        .await?;
    if entries.is_empty() {
        println!("no history for {reference}");
    }
    let now = now_ms();
    for e in entries {
        let ago = (now - e.ended_at).max(0) / 1000;
        println!(
            "{}:{}  {}  ended {}s ago",
            e.repository, e.tag, e.digest, ago
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts `REPO:TAG@DIGEST` back within the time-machine window.
async fn restore(quay: &Quay, config: &QuayConfig, reference: &str) -> Result<ExitCode> {
    let (name, digest) = reference
        .split_once('@')
        .ok_or_else(|| invalid(format!("{reference:?} is not REPO:TAG@DIGEST")))?;
    let (repository, tag) = repo_and_tag(name)?;
    let tag = tag.ok_or_else(|| invalid(format!("{reference:?} names no tag")))?;
    let digest: Digest = digest.parse()?;
    let window =
        i64::try_from(config.gc.tag_expiration_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let restored = quay
        .registry()
        .metadata()
        .restore_tag(&repository, &tag, &digest, now_ms() - window)
        .await?;
    if restored {
        println!("{repository}:{tag} points at {digest} again");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "quayctl: {repository}:{tag} did not point at {digest} within the time-machine \
             window (DEFAULT_TAG_EXPIRATION), or that manifest is gone"
        );
        Ok(ExitCode::from(1))
    }
}
