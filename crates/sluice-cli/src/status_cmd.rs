//! `sluice status [DB]` and `sluice reset DB`: the local replication state of the config's
//! databases (as `litestream status` / `reset`). No request to storage.
//!
//! The local state is the meta directory: the level-0 files not yet known to be uploaded (their
//! newest TXID is the local position), the WAL position journal, and the daemon's lock file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sluice_config::{Config, DbConfig};
use sluice_ltx::TxId;

use crate::daemon::LOCK_FILE;
use crate::discover;

/// Arguments of `sluice status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Only this database (default: every database of the config).
    db_path: Option<PathBuf>,
    /// Config file (default as for `replicate`).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print JSON (one object per database) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `sluice reset`.
#[derive(clap::Args)]
pub struct ResetArgs {
    /// The database whose local replication state is removed (the next start uploads a new
    /// snapshot; the replica itself is left alone).
    db_path: PathBuf,
    /// Config file (to find the database's meta directory).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
}

/// One database's local state.
#[derive(Serialize)]
struct Status {
    path: PathBuf,
    status: String,
    local_txid: Option<String>,
    wal_size: u64,
    meta_dir: PathBuf,
}

fn load(config: Option<&Path>) -> Result<Config> {
    Config::load(config, true).with_context(|| {
        let path = config.map(Path::to_path_buf).unwrap_or_else(Config::default_path);
        format!("cannot read config {}", path.display())
    })
}

/// The configured database at `path`, if any.
fn find(cfg: &Config, path: &Path) -> Result<DbConfig> {
    let abs = std::path::absolute(path)?;
    discover::configured(cfg)
        .into_iter()
        .find(|d| d.path == abs)
        .with_context(|| format!("{} is not a database of the config", abs.display()))
}

/// Highest TXID of the local level-0 files.
fn local_txid(meta: &Path) -> Option<TxId> {
    std::fs::read_dir(meta.join("ltx").join("0"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (_, max) = name.strip_suffix(".ltx")?.split_once('-')?;
            u64::from_str_radix(max, 16).ok().map(TxId)
        })
        .max()
}

/// The PID of the daemon holding the database's lock, if one does.
fn daemon_pid(meta: &Path) -> Option<String> {
    let path = meta.join(LOCK_FILE);
    let f = File::open(&path).ok()?;
    if f.try_lock_shared().is_ok() {
        return None;
    }
    Some(std::fs::read_to_string(&path).unwrap_or_default().trim().to_string())
}

fn status_of(db: &DbConfig) -> Status {
    let meta = db.meta_dir();
    let mut wal = db.path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_size = std::fs::metadata(PathBuf::from(wal)).map(|m| m.len()).unwrap_or(0);
    let txid = local_txid(&meta);
    let status = if !db.path.exists() {
        "no database".to_string()
    } else if let Some(pid) = daemon_pid(&meta) {
        format!("replicating (pid {pid})")
    } else if txid.is_some() {
        "ok".to_string()
    } else {
        "not initialized".to_string()
    };
    Status { path: db.path.clone(), status, local_txid: txid.map(|t| t.to_string()), wal_size, meta_dir: meta }
}

pub async fn status(args: StatusArgs) -> Result<ExitCode> {
    let cfg = load(args.config.as_deref())?;
    let dbs = match &args.db_path {
        Some(p) => vec![find(&cfg, p)?],
        None => discover::configured(&cfg),
    };
    let rows: Vec<Status> = dbs.iter().map(status_of).collect();
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let width = rows.iter().map(|r| r.path.display().to_string().len()).chain([4]).max().unwrap_or(4);
    println!("{:width$}  {:<24}  {:<16}  wal_size", "path", "status", "local_txid");
    for r in rows {
        let txid = r.local_txid.unwrap_or_else(|| "-".into());
        println!("{:width$}  {:<24}  {txid:<16}  {}", r.path.display().to_string(), r.status, r.wal_size);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn reset(args: ResetArgs) -> Result<ExitCode> {
    let cfg = load(args.config.as_deref());
    let db = match cfg {
        Ok(cfg) => find(&cfg, &args.db_path)?,
        // Without a config: the default meta directory beside the database.
        Err(_) if args.config.is_none() => DbConfig::new(
            std::path::absolute(&args.db_path)?,
            sluice_config::ReplicaSettings::from_url("file:///unused"),
        ),
        Err(e) => return Err(e),
    };
    let meta = db.meta_dir();
    // Held exclusively while removing, so a daemon starting meanwhile waits for its turn
    // (it refuses to start instead of replicating from half-removed state).
    let lock_path = meta.join(LOCK_FILE);
    let _held = match File::options().read(true).write(true).open(&lock_path) {
        Ok(f) => match f.try_lock() {
            Ok(()) => Some(f),
            Err(_) => {
                let pid = std::fs::read_to_string(&lock_path).unwrap_or_default();
                bail!(
                    "a sluice daemon (pid {}) is replicating {}: stop it before resetting",
                    pid.trim(),
                    db.path.display()
                );
            }
        },
        Err(_) => None,
    };
    let targets = sluice_replicate::recover::reset_local_state(&meta, args.dry_run)?;
    if targets.is_empty() {
        println!("{}: no local replication state in {}", db.path.display(), meta.display());
        return Ok(ExitCode::SUCCESS);
    }
    for t in &targets {
        println!("{} {}", if args.dry_run { "would remove" } else { "removed" }, t.display());
    }
    if !args.dry_run {
        println!("{}: the next `sluice replicate` starts with a new snapshot", db.path.display());
    }
    Ok(ExitCode::SUCCESS)
}
