//! `sluice`: stream SQLite changes to object storage in Litestream's format, and restore them.
//!
//! # Layout
//! - `ltx_cmd`: `sluice ltx` — inspect LTX files or list a replica.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ltx_cmd;

/// Sluice: SQLite replication to object storage, compatible with Litestream 0.5.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect LTX files (header, pages, checksums) or list a replica's files per level.
    Ltx(ltx_cmd::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ltx(args) => ltx_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
