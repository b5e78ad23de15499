//! `sluice restore`: rebuild a database from a replica, latest or at a TXID or time.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sluice_engine::restore::{self, RestoreOptions, Target, file_label};
use sluice_ltx::TxId;
use sluice_storage::ReplicaClient;

use crate::replica::resolve_replica;
use crate::restore_follow::{self, FollowArgs, IntegrityCheck, Outcome};

/// Arguments of `sluice restore`.
#[derive(clap::Args)]
pub struct Args {
    /// Database path (its replica comes from the config) or replica URL.
    target: String,
    /// Output path (default: the database path; required with a replica URL).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: Option<PathBuf>,
    /// Restore up to and including this TXID (16 hex digits).
    #[arg(long, value_name = "TXID", conflicts_with = "timestamp")]
    txid: Option<TxId>,
    /// Restore the state as of this instant (RFC 3339), from files created before it.
    #[arg(long, value_name = "RFC3339")]
    timestamp: Option<String>,
    /// Do nothing (exit 0) if the output database already exists.
    #[arg(long)]
    if_db_not_exists: bool,
    /// Do nothing (exit 0) if the replica holds no files.
    #[arg(long)]
    if_replica_exists: bool,
    /// Files downloaded ahead of the applier.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallelism: u16,
    /// Print the plan and exit.
    #[arg(long)]
    dry_run: bool,
    /// Replace an existing output file. (No `-f` short form: in Litestream `-f` means
    /// "follow".) With --follow: start over instead of resuming.
    #[arg(long)]
    force: bool,
    /// Keep following: after the restore, apply new files in place until SIGINT/SIGTERM
    /// (resumes from `<output>-txid` if the output exists).
    #[arg(short = 'f', long, conflicts_with_all = ["txid", "timestamp", "dry_run"])]
    follow: bool,
    /// How often --follow polls the replica.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    follow_interval: std::time::Duration,
    /// Check the restored database: none, quick (`PRAGMA quick_check`) or full
    /// (`PRAGMA integrity_check`); on failure the output is deleted.
    #[arg(long, value_enum, default_value = "none", value_name = "MODE")]
    integrity_check: IntegrityCheck,
    /// Print a JSON summary on stdout instead of the summary line.
    #[arg(long)]
    json: bool,
    /// Config file (Litestream-compatible YAML).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Do not expand $VARS in the config file.
    #[arg(long)]
    no_expand_env: bool,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let (client, db_path) = resolve_replica(&args.target, args.config.as_deref(), !args.no_expand_env)?;
    let out = match (&args.output, &db_path) {
        (Some(o), _) => o.clone(),
        (None, Some(db)) => db.clone(),
        (None, None) => bail!("-o/--output is required when restoring from a replica URL"),
    };
    if args.if_db_not_exists && out.exists() {
        eprintln!("database {} already exists, skipping restore", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let target = match (&args.txid, &args.timestamp) {
        (Some(t), _) => Target::Txid(*t),
        (None, Some(ts)) => Target::Timestamp(
            chrono::DateTime::parse_from_rfc3339(ts)
                .with_context(|| format!("invalid --timestamp {ts:?}: expected RFC 3339, e.g. 2026-11-26T10:37:40Z"))?
                .to_utc(),
        ),
        _ => Target::Latest,
    };
    if args.if_replica_exists && restore::list_all(&client, false).await?.is_empty() {
        eprintln!("replica {} is empty, skipping restore", client.description());
        return Ok(ExitCode::SUCCESS);
    }
    if args.follow {
        if args.follow_interval.is_zero() {
            bail!("--follow-interval must be more than 0");
        }
        let opts = RestoreOptions {
            parallelism: usize::from(args.parallelism),
            overwrite: args.force,
            progress: Some(progress_reporter()),
            ..RestoreOptions::default()
        };
        let a = FollowArgs {
            interval: args.follow_interval,
            force: args.force,
            check: args.integrity_check,
            json: args.json,
            opts,
        };
        return restore_follow::run(client, out, a).await;
    }
    let plan = restore::plan_restore(&client, target)
        .await
        .with_context(|| format!("cannot restore from {}", client.description()))?;
    if args.dry_run {
        print_plan(&plan);
        return Ok(ExitCode::SUCCESS);
    }
    let opts = RestoreOptions {
        target,
        parallelism: usize::from(args.parallelism),
        overwrite: args.force,
        durable: true,
        progress: Some(progress_reporter()),
    };
    let started = std::time::Instant::now();
    let summary = restore::restore_plan(&client, plan, &out, &opts)
        .await
        .with_context(|| format!("restore from {} to {} failed", client.description(), out.display()))?;
    restore_follow::integrity_check(&out, args.integrity_check)?;
    let (files, bytes) = restore_follow::plan_totals(&summary);
    let outcome = Outcome {
        client: &client,
        out: &out,
        txid: summary.txid,
        page_size: summary.page_size,
        page_count: summary.commit,
        files,
        bytes,
        check: args.integrity_check,
        follow: false,
        started,
    };
    restore_follow::report(&outcome, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &[sluice_storage::FileInfo]) {
    for f in plan {
        println!(
            "{}\t{}\t{}",
            file_label(f),
            f.size,
            f.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }
}

/// A progress bar on a terminal, nothing otherwise (the summary line is logged at the end).
fn progress_reporter() -> restore::Progress {
    if !std::io::stderr().is_terminal() {
        return Arc::new(|_, _| {});
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Arc::new(move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
        }
    })
}

/// True when `s` names a replica by URL rather than a database path.
pub fn is_url(s: &str) -> bool {
    s.contains("://")
}

/// Exposed for `sluice ltx`.
pub fn client_for(target: &str, config: Option<&Path>, expand_env: bool) -> Result<ReplicaClient> {
    Ok(resolve_replica(target, config, expand_env)?.0)
}
