//! `sluice`: stream SQLite changes to object storage in Litestream's format, and restore them.
//!
//! # Layout
//! - `args`: Litestream-style single-dash long flags, rewritten to GNU style.
//! - `replica`: which replica a command means (URL, directory, or config lookup).
//! - `ltx_cmd`, `restore_cmd` (+ `restore_follow`), `replicate_cmd`, `sync_cmd`, `databases_cmd`: the subcommands.
//! - `logging`: tracing subscriber from `--log-level` / `SLUICE_LOG_LEVEL` / `LOG_LEVEL`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod args;
mod control;
mod control_cmd;
mod daemon;
mod databases_cmd;
mod discover;
mod heartbeat;
mod logging;
mod ltx_cmd;
mod malloc;
mod registry;
mod replica;
mod replicate_cmd;
mod restore_cmd;
mod restore_follow;
mod status_cmd;
mod sync_cmd;
mod validate;

/// Sluice: SQLite replication to object storage, compatible with Litestream 0.5.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect LTX files, or list a replica's files per level.
    Ltx(ltx_cmd::Args),
    /// Restore a database from a replica (latest, or to a TXID or timestamp).
    Restore(restore_cmd::Args),
    /// Replicate databases continuously (the daemon).
    Replicate(replicate_cmd::Args),
    /// Ask a running daemon to sync a database now.
    Sync(sync_cmd::Args),
    /// List the databases a config file replicates, and their replicas.
    Databases(databases_cmd::Args),
    /// Show the local replication state of the config's databases (local TXID, WAL size).
    Status(status_cmd::StatusArgs),
    /// Remove a database's local replication state (the next start takes a new snapshot).
    Reset(status_cmd::ResetArgs),
    /// Start replicating a database in a running daemon (control socket).
    Register(control_cmd::RegisterArgs),
    /// Stop replicating a database in a running daemon, after a last sync, and forget it
    /// (control socket).
    Unregister(control_cmd::UnregisterArgs),
    /// Stop replicating a database in a running daemon, after a last sync; it stays
    /// registered for `start` (control socket).
    Stop(control_cmd::ToggleArgs),
    /// Replicate a stopped database again (control socket).
    Start(control_cmd::ToggleArgs),
    /// List the databases a running daemon replicates (control socket).
    List(control_cmd::QueryArgs),
    /// Show a running daemon's version, PID, uptime and database count (control socket).
    Info(control_cmd::QueryArgs),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    malloc::tune();
    let cli = Cli::parse_from(args::normalize(std::env::args()));
    logging::init(cli.log_level.as_deref());
    // Few blocking threads: each one that allocates gets its own malloc arena, which glibc
    // rarely returns; a handful is plenty for encoding, merging and file I/O.
    let runtime = match tokio::runtime::Builder::new_multi_thread().max_blocking_threads(4).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ltx(args) => ltx_cmd::run(args).await,
            Command::Restore(args) => restore_cmd::run(args).await,
            Command::Replicate(args) => replicate_cmd::run(args).await,
            Command::Sync(args) => sync_cmd::run(args).await,
            Command::Databases(args) => databases_cmd::run(args).await,
            Command::Status(args) => status_cmd::status(args).await,
            Command::Reset(args) => status_cmd::reset(args).await,
            Command::Register(args) => control_cmd::register(args).await,
            Command::Unregister(args) => control_cmd::unregister(args).await,
            Command::Stop(args) => control_cmd::toggle(args, false).await,
            Command::Start(args) => control_cmd::toggle(args, true).await,
            Command::List(args) => control_cmd::list(args).await,
            Command::Info(args) => control_cmd::info(args).await,
            Command::Version => {
                println!("sluice v{}", env!("CARGO_PKG_VERSION"));
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        // A closed pipe (`sluice ltx … | head`) is the reader's choice, not a failure.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", logging::chain(&e));
            ExitCode::FAILURE
        }
    }
}
