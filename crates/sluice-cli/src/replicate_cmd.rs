//! `sluice replicate`: the daemon. Replicates every database of the config (or one given on
//! the command line) until SIGINT/SIGTERM, then syncs one last time and exits 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};
use sluice_config::{Config, DbConfig, ReplicaSettings};
use sluice_engine::write::compaction::Retention;
use sluice_engine::write::metrics::DbMetrics;
use sluice_replicate::presence::{self, Presence};
use sluice_replicate::{ReplicateOptions, Request, replicate};
use sluice_storage::ReplicaClient;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};

use crate::daemon::{DaemonLock, serve_metrics};

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
    if cfg.dbs.is_empty() {
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
    let mut tasks = tokio::task::JoinSet::new();
    let mut all_metrics = Vec::new();
    let mut senders: Vec<(mpsc::Sender<Request>, Arc<OnceLock<DaemonLock>>)> = Vec::new();
    for db in &cfg.dbs {
        let client = ReplicaClient::open(&db.replica.storage)
            .with_context(|| format!("invalid replica for {}", db.path.display()))?;
        let opts = options(&cfg, db);
        // The lock file lives in the meta directory, which takes the database's permissions
        // and is not created before the database: taken now if the database exists (so a
        // second daemon is refused at once), otherwise once it appears.
        let lock = Arc::new(OnceLock::new());
        if matches!(presence::probe(&db.path), Presence::Ready(_)) {
            let held = DaemonLock::acquire(&opts.meta_dir, &db.path)
                .with_context(|| format!("cannot replicate {}", db.path.display()))?;
            let _ = lock.set(held);
        }
        let metrics = Arc::new(DbMetrics { db: db.path.display().to_string(), ..DbMetrics::default() });
        all_metrics.push(metrics.clone());
        let (req_tx, req_rx) = mpsc::channel(4);
        senders.push((req_tx, lock.clone()));
        let name = db.path.display().to_string();
        let rx = shutdown_rx.clone();
        tasks.spawn(async move {
            let result = replicate_when_present(opts, client, metrics, rx, req_rx, &lock).await;
            (name, result)
        });
    }
    if let Some(url) = &cfg.heartbeat_url {
        tokio::spawn(crate::heartbeat::run(
            url.clone(),
            cfg.heartbeat_interval,
            all_metrics.clone(),
            shutdown_rx.clone(),
        ));
    }
    if let Some(addr) = &cfg.addr {
        let addr = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.clone() };
        let listener =
            tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        tokio::spawn(serve_metrics(listener, all_metrics));
    }
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
        failed += replicate_once(&cfg, &senders).await;
    }
    if !args.once {
        loop {
            tokio::select! {
                _ = term.recv() => { forward(&child, "TERM"); break; }
                _ = int.recv() => { forward(&child, "INT"); break; }
                _ = usr1.recv() => {
                    for (tx, lock) in &senders {
                        let (r_tx, r_rx) = oneshot::channel();
                        // Never waits: a database whose queue is full must not hold up signals.
                        if tx.try_send(Request::Sync(r_tx)).is_ok() {
                            let lock = lock.clone();
                            tokio::spawn(async move {
                                let outcome = match r_rx.await {
                                    Ok(Ok(txid)) => txid.to_string(),
                                    Ok(Err(e)) => format!("error: {e}"),
                                    Err(_) => "error: replication stopped".to_string(),
                                };
                                // No lock yet: the database does not exist, so no `sluice sync` waits.
                                if let Some(lock) = lock.get() {
                                    lock.ack(&outcome);
                                }
                            });
                        }
                    }
                }
                status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                    let code = status.ok().and_then(|s| s.code()).unwrap_or(1);
                    tracing::info!(code, "child process exited; stopping");
                    exit = ExitCode::from(u8::try_from(code).unwrap_or(1));
                    child = None;
                    break;
                }
                Some(done) = tasks.join_next() => {
                    failed += 1;
                    match done {
                        Ok((name, Err(e))) => tracing::error!(db = %name, "stopped replicating: {e:#}"),
                        Ok((name, Ok(()))) => tracing::error!(db = %name, "stopped replicating"),
                        Err(e) => tracing::error!("replication task failed: {e}"),
                    }
                    // Fail closed: the application must never run on unprotected; its supervisor
                    // sees the non-zero exit and can restart both once the cause is fixed.
                    if child.is_some() {
                        tracing::error!("replication stopped for a database; stopping the --exec command so it does not \
                            run unreplicated");
                        forward(&child, "TERM");
                        break;
                    }
                    if tasks.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    let _ = shutdown_tx.send(true);
    // A second signal aborts the final sync.
    let drain = async {
        while let Some(done) = tasks.join_next().await {
            if let Ok((name, Err(e))) = done {
                failed += 1;
                tracing::error!(db = %name, "final sync failed: {e:#}");
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

/// `--once`: one sync of every database (capture and upload now); the number that failed.
async fn replicate_once(cfg: &Config, senders: &[(mpsc::Sender<Request>, Arc<OnceLock<DaemonLock>>)]) -> usize {
    let mut failed = 0;
    for (db, (tx, _)) in cfg.dbs.iter().zip(senders) {
        let (r_tx, r_rx) = oneshot::channel();
        let outcome = match tx.send(Request::Sync(r_tx)).await {
            Ok(()) => {
                r_rx.await.map_err(|_| anyhow::anyhow!("replication stopped")).and_then(|r| r.map_err(Into::into))
            }
            Err(_) => Err(anyhow::anyhow!("replication stopped")),
        };
        match outcome {
            Ok(txid) => tracing::info!(db = %db.path.display(), %txid, "replicated once"),
            Err(e) => {
                failed += 1;
                tracing::error!(db = %db.path.display(), "replicating once failed: {e:#}");
            }
        }
    }
    failed
}

/// Waits for the database to exist if it did not at start, takes its daemon lock then, and
/// replicates it until shutdown.
async fn replicate_when_present(
    opts: ReplicateOptions,
    client: ReplicaClient,
    metrics: Arc<DbMetrics>,
    mut shutdown: watch::Receiver<bool>,
    mut requests: mpsc::Receiver<Request>,
    lock: &OnceLock<DaemonLock>,
) -> Result<()> {
    if lock.get().is_none() {
        if presence::wait_for_database(&opts.db_path, &mut shutdown, &mut requests).await.is_none() {
            return Ok(());
        }
        let held = DaemonLock::acquire(&opts.meta_dir, &opts.db_path)
            .with_context(|| format!("cannot replicate {}", opts.db_path.display()))?;
        let _ = lock.set(held);
    }
    Ok(replicate(opts, client, metrics, shutdown, requests).await?)
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
pub fn options(cfg: &Config, db: &DbConfig) -> ReplicateOptions {
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
    }
}

/// The meta directory of `db` per the config rules (for `sluice sync`).
pub fn meta_dir_of(db: &Path, config: Option<&Path>, expand_env: bool) -> Result<PathBuf> {
    let abs = std::path::absolute(db)?;
    if let Ok(cfg) = Config::load(config, expand_env)
        && let Some(d) = cfg.db(&abs)
    {
        return Ok(d.meta_dir());
    }
    Ok(DbConfig::new(abs, ReplicaSettings::from_url("file:///unused")).meta_dir())
}
