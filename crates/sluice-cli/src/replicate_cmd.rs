//! `sluice replicate`: the daemon. Replicates every database of the config (or one given on
//! the command line) until SIGINT/SIGTERM, then syncs one last time and exits 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sluice_config::{Config, DbConfig, ReplicaSettings};
use sluice_engine::write::Limits;
use sluice_engine::write::compaction::Retention;
use sluice_replicate::fsevents::FsEvents;
use sluice_replicate::presence::{self, Presence};
use sluice_replicate::{ReplicateOptions, Request};
use sluice_storage::ReplicaClient;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};

use crate::control;
use crate::daemon::serve_metrics;
use crate::discover;
use crate::registry::{Registry, Source};

/// Arguments of `sluice replicate`.
#[derive(clap::Args)]
pub struct Args {
    /// Database to replicate (with REPLICA_URL), instead of a config file.
    db_path: Option<PathBuf>,
    /// Replica URL for DB_PATH.
    replica_url: Option<String>,
    /// Config file (Litestream-compatible YAML). Default: $SLUICE_CONFIG, $LITESTREAM_CONFIG,
    /// /etc/sluice.yml, /etc/litestream.yml.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Do not expand $VARS in the config file.
    #[arg(long)]
    no_expand_env: bool,
    /// Run this command as a child; exit with its status when it exits.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// Before replicating, restore each database that does not exist from its replica (as the
    /// per-database `restore-if-db-not-exists: true` does); an empty replica restores nothing.
    #[arg(long)]
    restore_if_db_not_exists: bool,
    /// Replicate every database once (capture and upload what it holds now), then exit:
    /// non-zero if any failed. For cron jobs and tests; every database must exist.
    #[arg(long, conflicts_with = "exec")]
    once: bool,
    /// With --once: take a snapshot of every database after its sync.
    #[arg(long, requires = "once")]
    force_snapshot: bool,
    /// With --once: apply snapshot and L0 retention after the sync.
    #[arg(long, requires = "once")]
    enforce_retention: bool,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let cfg = match (&args.db_path, &args.replica_url) {
        (Some(db), Some(url)) => {
            let path = std::path::absolute(db).with_context(|| format!("invalid path {}", db.display()))?;
            Config { dbs: vec![DbConfig::new(path, ReplicaSettings::from_url(url.clone()))], ..Config::default() }
        }
        (Some(_), None) => bail!("a replica URL is required after the database path"),
        _ => Config::load(args.config.as_deref(), !args.no_expand_env).context("cannot load the config file")?,
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if cfg.dbs.is_empty() && cfg.dirs.is_empty() && cfg.socket.is_none() {
        bail!("no databases to replicate: give DB_PATH REPLICA_URL or a config file with `dbs:`");
    }
    for db in &cfg.dbs {
        if (args.restore_if_db_not_exists || db.restore_if_db_not_exists) && !db.path.exists() {
            restore_missing(db).await?;
        }
        if args.once && !matches!(presence::probe(&db.path), Presence::Ready(_)) {
            bail!("--once: database {} does not exist (or is not a SQLite database yet)", db.path.display());
        }
    }
    // Handlers first: `sluice sync` may signal as soon as the pid file exists, and SIGUSR1's
    // default action would kill the daemon.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let events = FsEvents::start();
    let cfg = Arc::new(cfg);
    let (registry, mut done) = Registry::new(cfg.clone(), events.clone());
    for db in &cfg.dbs {
        registry.add(db, Source::Config)?;
    }
    for dir in &cfg.dirs {
        // The first scan before start-up completes, so `--once` includes what it finds.
        let found = discover::register(dir, &registry);
        if dir.watch && !args.once {
            tokio::spawn(discover::watch(dir.clone(), found, registry.clone(), events.clone(), shutdown_rx.clone()));
        }
    }
    if let Some(url) = &cfg.heartbeat_url {
        tokio::spawn(crate::heartbeat::run(url.clone(), cfg.heartbeat_interval, registry.clone(), shutdown_rx.clone()));
    }
    if !args.once {
        tokio::spawn(crate::validate::run(registry.clone(), shutdown_rx.clone()));
    }
    if let Some(addr) = &cfg.addr {
        let addr = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.clone() };
        let listener =
            tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        tokio::spawn(serve_metrics(listener, registry.clone()));
    }
    let _socket = match &cfg.socket {
        Some(sc) => Some(control::serve(sc, registry.clone()).await?),
        None => None,
    };
    let mut child = match args.exec.as_ref().or(cfg.exec.as_ref()) {
        Some(cmd) => Some(
            // Its own process group, so signals reach every process of a shell command.
            tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .process_group(0)
                .spawn()
                .with_context(|| format!("cannot run --exec command {cmd:?}"))?,
        ),
        None => None,
    };
    let mut exit = ExitCode::SUCCESS;
    let mut failed = 0;
    if args.once {
        failed += replicate_once(&registry, args.force_snapshot, args.enforce_retention).await;
    }
    // Without watched directories or a socket, the daemon ends when its last database does.
    let fixed = cfg.dirs.iter().all(|d| !d.watch) && cfg.socket.is_none();
    if !args.once {
        loop {
            tokio::select! {
                _ = term.recv() => { forward(&child, "TERM"); break; }
                _ = int.recv() => { forward(&child, "INT"); break; }
                _ = usr1.recv() => registry.sync_all_with_ack(),
                status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                    let code = status.ok().and_then(|s| s.code()).unwrap_or(1);
                    tracing::info!(code, "child process exited; stopping");
                    exit = ExitCode::from(u8::try_from(code).unwrap_or(1));
                    child = None;
                    break;
                }
                Some(d) = done.recv() => {
                    match (&d.result, d.removed) {
                        (Ok(()), true) => {
                            tracing::info!(db = %d.path.display(), "stopped replicating (removed)");
                            continue;
                        }
                        (Err(e), true) => {
                            tracing::warn!(db = %d.path.display(), "last sync of a removed database failed: {}", crate::logging::chain(e));
                            continue;
                        }
                        (Err(e), false) => tracing::error!(db = %d.path.display(), "stopped replicating: {}", crate::logging::chain(e)),
                        (Ok(()), false) => tracing::error!(db = %d.path.display(), "stopped replicating"),
                    }
                    failed += 1;
                    // Fail closed: the application must never run on unprotected; its supervisor
                    // sees the non-zero exit and can restart both once the cause is fixed.
                    if child.is_some() {
                        tracing::error!("replication stopped for a database; stopping the --exec command so it does not \
                            run unreplicated");
                        forward(&child, "TERM");
                        break;
                    }
                    if registry.len() == 0 && fixed {
                        break;
                    }
                }
            }
        }
    }
    let _ = shutdown_tx.send(true);
    registry.stop_all();
    // A second signal aborts the final sync.
    let drain = async {
        while registry.len() > 0 {
            let Some(d) = done.recv().await else { break };
            if let Err(e) = d.result {
                failed += 1;
                tracing::error!(db = %d.path.display(), "final sync failed: {}", crate::logging::chain(&e));
            }
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = term.recv() => tracing::warn!("second signal: exiting without a final sync"),
        _ = int.recv() => tracing::warn!("second signal: exiting without a final sync"),
    }
    if let Some(mut c) = child {
        let _ = c.wait().await;
    }
    if failed > 0 && exit == ExitCode::SUCCESS {
        exit = ExitCode::FAILURE;
    }
    Ok(exit)
}

/// `--once`: one sync of every database (capture and upload now), then the snapshot and
/// retention asked for; the number of databases that failed.
async fn replicate_once(registry: &Registry, snapshot: bool, retention: bool) -> usize {
    let mut failed = 0;
    for (path, _) in registry.paths() {
        let outcome = async {
            let txid = answer(registry.ask(&path, Request::Sync)).await?;
            tracing::info!(db = %path.display(), %txid, "replicated once");
            if snapshot {
                match answer(registry.ask(&path, Request::Snapshot)).await? {
                    Some(t) => tracing::info!(db = %path.display(), txid = %t, "snapshot taken"),
                    None => tracing::info!(db = %path.display(), "the latest snapshot is current"),
                }
            }
            if retention {
                answer(registry.ask(&path, Request::EnforceRetention)).await?;
                tracing::info!(db = %path.display(), "retention enforced");
            }
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = outcome.await {
            failed += 1;
            tracing::error!(db = %path.display(), "replicating once failed: {}", crate::logging::chain(&e));
        }
    }
    failed
}

/// The reply to a request sent with [`Registry::ask`].
async fn answer<T>(rx: Result<oneshot::Receiver<sluice_engine::Result<T>>>) -> Result<T> {
    Ok(rx?.await.map_err(|_| anyhow::anyhow!("replication stopped"))??)
}

/// Restores a database that does not exist from its replica before it is replicated; an empty
/// replica leaves it missing (the daemon then waits for the application to create it).
async fn restore_missing(db: &DbConfig) -> Result<()> {
    let client = ReplicaClient::open(&db.replica.storage)
        .with_context(|| format!("invalid replica for {}", db.path.display()))?;
    if let Some(dir) = db.path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let started = std::time::Instant::now();
    match sluice_engine::restore::restore(&client, &db.path, &sluice_engine::restore::RestoreOptions::default()).await {
        Ok(summary) => {
            tracing::info!(db = %db.path.display(), replica = %client.description(), txid = %summary.txid,
                elapsed = ?started.elapsed(), "restored the missing database from its replica");
            Ok(())
        }
        Err(sluice_engine::Error::EmptyReplica { .. }) => {
            tracing::info!(db = %db.path.display(), replica = %client.description(),
                "the database does not exist and its replica is empty: nothing to restore");
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("cannot restore {} from {}", db.path.display(), client.description())),
    }
}

/// Forwards a signal to the child's whole process group.
fn forward(child: &Option<tokio::process::Child>, sig: &str) {
    if let Some(pid) = child.as_ref().and_then(|c| c.id()) {
        let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg("--").arg(format!("-{pid}")).status();
    }
}

/// Engine options for one database from the config.
pub fn options(cfg: &Config, db: &DbConfig, events: &FsEvents, limits: &Arc<Limits>) -> ReplicateOptions {
    ReplicateOptions {
        db_path: db.path.clone(),
        meta_dir: db.meta_dir(),
        sync_interval: db.replica.sync_interval,
        monitor_interval: db.monitor_interval,
        busy_timeout: db.busy_timeout,
        checkpoint_pages: db.min_checkpoint_page_count,
        hard_limit_pages: db.truncate_page_n,
        checkpoint_interval: db.checkpoint_interval,
        max_sync_wal_bytes: db.max_sync_wal_bytes,
        levels: cfg.levels.clone(),
        snapshot_interval: cfg.snapshot_interval,
        retention: Retention {
            enabled: cfg.retention_enabled,
            snapshot_retention: cfg.snapshot_retention,
            l0_retention: cfg.l0_retention,
        },
        shutdown_sync_timeout: cfg.shutdown_sync_timeout,
        stall_timeout: sluice_replicate::DEFAULT_STALL_TIMEOUT,
        lease_ttl: cfg.lease_ttl,
        max_pending_size: cfg.max_pending_size,
        events: events.clone(),
        limits: limits.clone(),
        auto_recover: db.replica.auto_recover,
    }
}

/// The meta directory of `db` per the config rules (for `sluice sync`).
pub fn meta_dir_of(db: &Path, config: Option<&Path>, expand_env: bool) -> Result<PathBuf> {
    let abs = std::path::absolute(db)?;
    if let Ok(cfg) = Config::load(config, expand_env) {
        if let Some(d) = cfg.db(&abs) {
            return Ok(d.meta_dir());
        }
        if let Some(d) = cfg.dirs.iter().find_map(|dir| dir.db(&abs)) {
            return Ok(d.meta_dir());
        }
    }
    Ok(DbConfig::new(abs, ReplicaSettings::from_url("file:///unused")).meta_dir())
}
