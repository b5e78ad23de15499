//! One database's replication: the capture loop (WAL → local L0, checkpoints), the uploader
//! (local L0 → replica) and maintenance (compaction ladder, snapshots, retention), as three
//! tasks so a slow upload never delays capturing or checkpointing. It runs while one
//! database file exists; [`lifecycle`](crate::replicate::lifecycle) waits for the file and
//! starts it again for the next one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_ltx::TxId;
use sluice_storage::ReplicaClient;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::{Error, Result};
use crate::replicate::actor::ShipperHandle;
use crate::replicate::compaction::{self, Retention};
use crate::replicate::index::{ReplicaIndex, SharedIndex, lock};
use crate::replicate::lease::Lease;
use crate::replicate::local::MetaDir;
use crate::replicate::metrics::DbMetrics;
use crate::replicate::poll::{self, WalWatch};
use crate::replicate::shipper::{Checkpoint, ShipperOptions};
use crate::replicate::uploader::{note_pending, upload_pending};
use crate::restore::SNAPSHOT_LEVEL;

/// Wait before retrying a checkpoint that another reader kept from completing.
const FIRST_PARTIAL_BACKOFF: Duration = Duration::from_millis(20);

/// Settings of one replicated database (defaults as Litestream's).
#[derive(Clone, Debug)]
pub struct ReplicateOptions {
    /// The database.
    pub db_path: PathBuf,
    /// Local staging directory.
    pub meta_dir: PathBuf,
    /// How often captured changes are uploaded.
    pub sync_interval: Duration,
    /// How often the WAL is read.
    pub monitor_interval: Duration,
    /// SQLite busy timeout for our connections.
    pub busy_timeout: Duration,
    /// WAL frames that trigger a PASSIVE checkpoint.
    pub checkpoint_pages: u64,
    /// WAL frames past which the WAL file is truncated after checkpointing.
    pub hard_limit_pages: u64,
    /// Checkpoint at least this often when the WAL holds frames (zero disables).
    pub checkpoint_interval: Duration,
    /// Chunk limit of one sync.
    pub max_sync_wal_bytes: u64,
    /// Compaction intervals of levels 1, 2, …
    pub levels: Vec<Duration>,
    /// Snapshot interval.
    pub snapshot_interval: Duration,
    /// Retention settings.
    pub retention: Retention,
    /// How long shutdown keeps trying to upload.
    pub shutdown_sync_timeout: Duration,
    /// How long committed frames may fail to be captured before replication of the
    /// database stops with an error (instead of idling while the database moves on).
    pub stall_timeout: Duration,
}

/// Requests a running replicator accepts.
pub enum Request {
    /// Sync and upload now; replies with the replica's TXID afterwards.
    Sync(oneshot::Sender<Result<sluice_ltx::TxId>>),
}

/// Replicates the database file that exists now until `shutdown` turns true, then syncs
/// and uploads one last time. `resume`: whether its local state may continue (false when
/// it replaced the database replicated before; see [`ShipperOptions::resume`]).
pub(crate) async fn replicate_db(
    opts: ReplicateOptions,
    client: ReplicaClient,
    metrics: Arc<DbMetrics>,
    mut shutdown: watch::Receiver<bool>,
    requests: &mut mpsc::Receiver<Request>,
    resume: bool,
) -> Result<()> {
    let lease = Arc::new(tokio::sync::Mutex::new(Lease::acquire(&client, &opts.meta_dir, &opts.db_path).await?));
    let index: SharedIndex = Arc::new(std::sync::Mutex::new(ReplicaIndex::load(&client).await?));
    let remote_max = lock(&index).max_txid();
    let sopts = ShipperOptions { busy_timeout: opts.busy_timeout, max_sync_wal_bytes: opts.max_sync_wal_bytes, resume };
    let shipper = Arc::new(ShipperHandle::spawn(opts.db_path.clone(), opts.meta_dir.clone(), remote_max, sopts).await?);
    // The shipper opened (and cleaned) the directory; temp files of running tasks must stay.
    let meta = shipper.meta().clone();
    let frame = 24 + u64::from(shipper.page_size());
    tracing::info!(db = %opts.db_path.display(), replica = client.description(), txid = %remote_max, "replicating");

    // First capture: a full image when there is no usable position.
    let first = shipper.sync().await?;
    let needs_snapshot = first.as_ref().is_some_and(|s| s.full) || lock(&index).files(9).is_empty();
    // A first full image at TXID 1 becomes the first snapshot as it is uploaded.
    let first_image = first.as_ref().filter(|s| s.full).map(|s| s.header.max_txid);
    let uploaded = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let mut uploader = tokio::spawn(upload_loop(
        client.clone(),
        meta.clone(),
        index.clone(),
        metrics.clone(),
        lease.clone(),
        opts.sync_interval,
        wake.clone(),
        uploaded.clone(),
        stop_rx.clone(),
    ));
    let mut maint = tokio::spawn(maintenance_loop(
        client.clone(),
        meta.clone(),
        shipper.clone(),
        index.clone(),
        metrics.clone(),
        opts.clone(),
        needs_snapshot,
        first_image,
        uploaded.clone(),
        stop_rx,
    ));
    note_synced(&metrics, first.as_ref(), &wake);
    wake.notify_one();

    let mut monitor = tokio::time::interval(opts.monitor_interval);
    monitor.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut watch = WalWatch::new(&opts.db_path);
    let mut poll_delay = poll::MIN_POLL;
    let mut last_checkpoint = Instant::now();
    let mut checkpoint_hold = Instant::now();
    let mut partial_backoff = FIRST_PARTIAL_BACKOFF;
    // How long a checkpoint takes (smoothed): the WAL keeps growing meanwhile.
    let mut checkpoint_time = Duration::from_millis(5);
    let mut requests_open = true;
    // Something was captured since the last checkpoint (time-based checkpoints need it).
    let mut dirty = false;
    // The WAL changed since the last capture.
    let mut pending = false;
    let (mut observed, mut checkpointed_at) = (None, None);
    let mut last_capture = Instant::now() - opts.sync_interval;
    // Since when committed frames have been failing to be captured.
    let mut stalled_since: Option<Instant> = None;
    let result: Result<()> = loop {
        let mut checkpoint_now = false;
        tokio::select! {
            _ = monitor.tick() => {}
            _ = tokio::time::sleep(poll_delay) => {
                // Capture once per sync interval when the WAL changed (lag stays within about
                // one interval, at one capture per upload), and checkpoint as soon as the WAL
                // holds more frames than the threshold, which keeps it bounded under any load.
                let since = watch.last_poll().elapsed();
                let seen = watch.observe();
                pending |= seen.changed;
                poll_delay = watch.next_delay(seen, since, opts.checkpoint_pages, poll_delay);
                // After a full checkpoint the index keeps its count until the next write
                // restarts the WAL: do not checkpoint the same WAL again.
                // Start early enough that the WAL is restarted *before* it reaches the
                // threshold at the current write rate (the application's own auto-checkpoint
                // typically fires at the same 1000 pages and would then run after every commit).
                let lead = (poll_delay + checkpoint_time).as_secs_f64() * watch.rate();
                checkpoint_now = seen.frames.is_some_and(|f| f as f64 + lead >= opts.checkpoint_pages as f64)
                    && seen.frames != checkpointed_at
                    && Instant::now() >= checkpoint_hold;
                observed = seen.frames;
                let capture_due = last_capture + opts.sync_interval;
                if !(checkpoint_now || pending && Instant::now() >= capture_due) {
                    if pending {
                        // Wake up when the capture is due, not up to a poll later.
                        let until_due = capture_due.saturating_duration_since(Instant::now());
                        poll_delay = poll_delay.min(until_due.max(Duration::from_millis(1)));
                    }
                    continue;
                }
            }
            r = requests.recv(), if requests_open => {
                let Some(Request::Sync(reply)) = r else {
                    requests_open = false;
                    continue;
                };
                let res = capture(&shipper, &metrics, &wake).await;
                dirty |= res.as_ref().is_ok_and(|c| *c);
                match res {
                    // Upload off this loop: waiting for a running upload must not stall
                    // capturing and checkpoints.
                    Ok(_) => {
                        let (client, meta, index, metrics, lease) =
                            (client.clone(), meta.clone(), index.clone(), metrics.clone(), lease.clone());
                        tokio::spawn(async move {
                            let _ = reply.send(upload(&client, &meta, &index, &metrics, &lease).await);
                        });
                    }
                    Err(e) => drop(reply.send(Err(e))),
                }
                continue;
            }
            r = &mut uploader => break Err(task_end("uploader", r)),
            r = &mut maint => break Err(task_end("maintenance", r)),
            _ = shutdown.changed() => break Ok(()),
        }
        if !checkpoint_now {
            let captured = capture(&shipper, &metrics, &wake).await;
            last_capture = Instant::now();
            match captured {
                Ok(captured) => {
                    dirty |= captured;
                    if let Some(since) = stalled_since.take() {
                        tracing::info!(db = %opts.db_path.display(), after = ?since.elapsed(), "capturing again");
                    }
                }
                Err(e @ Error::Uncaptured { .. }) => {
                    // Retried every sync interval (`pending` stays set); never idle silently.
                    metrics.errors_capture.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "capture failed");
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= opts.stall_timeout {
                        break Err(e);
                    }
                    continue;
                }
                Err(e) => {
                    metrics.errors_sync.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "sync failed");
                    continue;
                }
            }
            pending = false;
        }
        // The logical WAL size (frames of the current generation), not the file's length:
        // SQLite reuses the file after a restart without shrinking it.
        let frames = match shipper.position().await {
            Ok(Some(p)) => p.end.saturating_sub(32) / frame,
            _ => 0,
        };
        metrics.wal_bytes.store(frames * frame, Ordering::Relaxed);
        let due = dirty
            && !opts.checkpoint_interval.is_zero()
            && last_checkpoint.elapsed() >= opts.checkpoint_interval
            && frames > 0;
        if checkpoint_now || (((dirty && frames >= opts.checkpoint_pages) || due) && Instant::now() >= checkpoint_hold)
        {
            let started = Instant::now();
            let outcome = shipper.checkpoint(frames >= opts.hard_limit_pages).await;
            checkpoint_time = (checkpoint_time * 3 + started.elapsed()) / 4;
            tracing::debug!(outcome = ?outcome.as_ref().map(|(c, _)| *c), "checkpoint");
            match outcome {
                Ok((Checkpoint::Done { .. }, synced)) => {
                    last_checkpoint = Instant::now();
                    partial_backoff = FIRST_PARTIAL_BACKOFF;
                    // The frames read stay deferred until the next capture (`pending` stays).
                    dirty = false;
                    checkpointed_at = observed;
                    metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
                    note_synced(&metrics, synced.as_ref(), &wake);
                }
                Ok((Checkpoint::Partial, synced)) => {
                    // A reader pins part of the WAL: retrying at once would only take the write
                    // barrier again and again. Usually a passing race, so retry soon; a reader
                    // that stays (a long query of the application) backs us off to a second.
                    checkpoint_hold = Instant::now() + partial_backoff;
                    partial_backoff = (partial_backoff * 2).min(opts.monitor_interval.max(Duration::from_secs(1)));
                    metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
                    note_synced(&metrics, synced.as_ref(), &wake);
                }
                Ok((Checkpoint::Busy, _)) => tracing::debug!("checkpoint skipped: database busy"),
                Err(e) => {
                    metrics.errors_checkpoint.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "checkpoint failed");
                }
            }
        }
    };

    // Shutdown: capture the last commits and upload them, bounded in time.
    let _ = stop_tx.send(true);
    let final_capture = capture(&shipper, &metrics, &wake).await;
    let deadline = Instant::now() + opts.shutdown_sync_timeout;
    let mut last_err = final_capture.err();
    loop {
        match upload(&client, &meta, &index, &metrics, &lease).await {
            Ok(_) => break,
            Err(e @ Error::Conflict { .. }) => {
                last_err = Some(e);
                break;
            }
            Err(e) if Instant::now() >= deadline => {
                last_err = Some(e);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "final upload failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    uploader.abort();
    maint.abort();
    let conflict = matches!(result, Err(Error::Conflict { .. })) || matches!(last_err, Some(Error::Conflict { .. }));
    if !conflict {
        // Our lease (not someone else's): let another daemon take over at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), async { lease.lock().await.release_ref().await }).await;
    }
    match (result, last_err) {
        (Err(e), _) | (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
    }
}

fn task_end(name: &str, r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Error {
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(())) => Error::Task(format!("{name} task stopped")),
        Err(e) => Error::Task(format!("{name} task failed: {e}")),
    }
}

/// Syncs; `true` if a local L0 file was written.
async fn capture(shipper: &ShipperHandle, metrics: &DbMetrics, wake: &Notify) -> Result<bool> {
    let synced = shipper.sync().await?;
    note_synced(metrics, synced.as_ref(), wake);
    Ok(synced.is_some())
}

/// Metrics and the uploader's wake-up after a capture.
fn note_synced(metrics: &DbMetrics, synced: Option<&crate::replicate::shipper::Synced>, wake: &Notify) {
    if let Some(s) = synced {
        metrics.syncs.fetch_add(1, Ordering::Relaxed);
        metrics.local_txid.store(s.header.max_txid.0, Ordering::Relaxed);
        if metrics.oldest_pending_ms.load(Ordering::Relaxed) == 0 {
            metrics.oldest_pending_ms.store(s.header.timestamp_ms as u64, Ordering::Relaxed);
        }
        wake.notify_one();
    }
}

/// Renews the lease if due, then uploads what is pending. Holding the lease's lock for the
/// whole upload serialises the background uploader, forced syncs and the final upload.
async fn upload(
    client: &ReplicaClient,
    meta: &MetaDir,
    index: &SharedIndex,
    metrics: &DbMetrics,
    lease: &tokio::sync::Mutex<Lease>,
) -> Result<sluice_ltx::TxId> {
    let mut held = lease.lock().await;
    held.renew_if_due().await?;
    upload_pending(client, meta, index, metrics).await
}

/// Uploads at most once per sync interval, sooner after a quiet period.
#[allow(clippy::too_many_arguments)]
async fn upload_loop(
    client: ReplicaClient,
    meta: MetaDir,
    index: SharedIndex,
    metrics: Arc<DbMetrics>,
    lease: Arc<tokio::sync::Mutex<Lease>>,
    interval: Duration,
    wake: Arc<Notify>,
    uploaded: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut backoff = Duration::ZERO;
    let mut last = Instant::now() - interval;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.changed() => return Ok(()),
        }
        // Pace uploads: everything captured within one interval goes up as one file.
        tokio::time::sleep_until(last + interval + backoff).await;
        last = Instant::now();
        match upload(&client, &meta, &index, &metrics, &lease).await {
            Ok(_) => {
                backoff = Duration::ZERO;
                uploaded.notify_one();
            }
            Err(e @ Error::Conflict { .. }) => return Err(e),
            Err(e) => {
                metrics.errors_upload.fetch_add(1, Ordering::Relaxed);
                backoff = (backoff * 2).clamp(interval, Duration::from_secs(60));
                tracing::warn!(error = %e, retry_in = ?backoff, "upload failed");
                note_pending(&meta, &index, &metrics);
                wake.notify_one();
            }
        }
    }
}

/// Next wall-clock multiple of `every` (Litestream aligns levels to the epoch).
fn next_boundary(every: Duration) -> Instant {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let every_ms = every.as_millis().max(1);
    let wait = every_ms - now.as_millis() % every_ms;
    Instant::now() + Duration::from_millis(wait as u64)
}

#[allow(clippy::too_many_arguments)]
async fn maintenance_loop(
    client: ReplicaClient,
    meta: MetaDir,
    shipper: Arc<ShipperHandle>,
    index: SharedIndex,
    metrics: Arc<DbMetrics>,
    opts: ReplicateOptions,
    mut needs_snapshot: bool,
    first_image: Option<TxId>,
    uploaded: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut due: Vec<Instant> = opts.levels.iter().map(|d| next_boundary(*d)).collect();
    let mut snap_due = next_boundary(opts.snapshot_interval);
    let mut snapshot_failed = false;
    loop {
        if needs_snapshot {
            // Wait for the first upload so the snapshot never runs ahead of level 0; after a
            // failure, retry on a timer too (an idle database may not upload again).
            tokio::select! {
                _ = uploaded.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)), if snapshot_failed => {}
                _ = stop.changed() => return Ok(()),
            }
            if first_image.is_some_and(|t| lock(&index).level_max(SNAPSHOT_LEVEL) >= t) {
                // The uploader filed the first image as the snapshot.
                needs_snapshot = false;
                continue;
            }
            match compaction::snapshot(&client, &meta, &shipper, &index, &metrics).await {
                Ok(_) => needs_snapshot = false,
                Err(e) => {
                    snapshot_failed = true;
                    metrics.errors_compaction.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "snapshot failed");
                }
            }
            continue;
        }
        let next = due.iter().copied().chain([snap_due]).min().unwrap_or(snap_due);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return Ok(()),
        }
        let now = Instant::now();
        for (i, at) in due.iter_mut().enumerate() {
            if *at > now {
                continue;
            }
            *at = next_boundary(opts.levels[i]);
            let level = (i + 1) as u8;
            match compaction::compact_level(&client, &meta, &index, level, &metrics).await {
                Ok(Some(_)) if level == 1 => {
                    if let Err(e) =
                        compaction::enforce_l0_retention(&client, &meta, &index, &opts.retention, &metrics).await
                    {
                        metrics.errors_retention.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "L0 retention failed");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.errors_compaction.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(level, error = %e, "compaction failed");
                }
            }
        }
        if snap_due <= now {
            snap_due = next_boundary(opts.snapshot_interval);
            match compaction::snapshot(&client, &meta, &shipper, &index, &metrics).await {
                Ok(Some(_)) => {
                    if let Err(e) =
                        compaction::enforce_snapshot_retention(&client, &index, &opts.retention, &metrics).await
                    {
                        metrics.errors_retention.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "snapshot retention failed");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    metrics.errors_compaction.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "snapshot failed");
                }
            }
        }
    }
}
