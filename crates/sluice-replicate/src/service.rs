//! One database's replication: the capture loop (WAL → local L0, checkpoints), the uploader
//! (local L0 → replica) and maintenance (compaction ladder, snapshots, retention), as three
//! tasks so a slow upload never delays capturing or checkpointing. It runs while one
//! database file exists; [`lifecycle`](crate::lifecycle) waits for the file and
//! starts it again for the next one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_engine::error::{Error, Result};
use sluice_engine::write::compaction::Retention;
use sluice_engine::write::metrics::DbMetrics;
use sluice_engine::write::outage::Outage;
use sluice_engine::write::{ReplicaWriter, WriterOptions, connect};
use sluice_storage::ReplicaClient;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::actor::ShipperHandle;
use crate::fsevents::{DbEvents, FsEvents};
use crate::poll::{self, WalWatch};
use crate::shipper::{Checkpoint, ShipperOptions};

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
    /// How long the replica lease stays valid without renewal.
    pub lease_ttl: Duration,
    /// Bytes of local files awaiting upload past which capture and checkpoints pause (the
    /// WAL keeps the changes meanwhile); 0 = no limit.
    pub max_pending_size: u64,
    /// The daemon's file-change notifier (a quiet database waits for it instead of polling).
    pub events: FsEvents,
    /// Bounds on storage work shared by the daemon's databases.
    pub limits: Arc<sluice_engine::write::Limits>,
    /// `auto-recover`: local files awaiting upload that are missing or damaged are removed
    /// and a new snapshot starts, instead of replication stopping with an error.
    pub auto_recover: bool,
}

impl ReplicateOptions {
    /// The replica writer's part of the settings.
    pub fn writer_options(&self) -> WriterOptions {
        WriterOptions {
            sync_interval: self.sync_interval,
            levels: self.levels.clone(),
            snapshot_interval: self.snapshot_interval,
            retention: self.retention.clone(),
            shutdown_sync_timeout: self.shutdown_sync_timeout,
            lease_ttl: self.lease_ttl,
            limits: self.limits.clone(),
        }
    }
}

/// What a [`Request::Capture`] did.
#[derive(Clone, Copy, Debug)]
pub struct Captured {
    /// Whether it found new commits.
    pub changed: bool,
    /// The last TXID captured locally.
    pub txid: sluice_ltx::TxId,
}

/// The reply a sync request waits for.
enum SyncReply {
    Upload(oneshot::Sender<Result<sluice_ltx::TxId>>),
    Local(oneshot::Sender<Result<Captured>>),
}

impl SyncReply {
    fn fail(self, e: Error) {
        match self {
            SyncReply::Upload(r) => drop(r.send(Err(e))),
            SyncReply::Local(r) => drop(r.send(Err(e))),
        }
    }
}

/// Requests a running replicator accepts.
pub enum Request {
    /// Sync and upload now; replies with the replica's TXID afterwards.
    Sync(oneshot::Sender<Result<sluice_ltx::TxId>>),
    /// Capture now and reply at once (the upload follows as usual).
    Capture(oneshot::Sender<Result<Captured>>),
    /// The database's page checksums at a TXID just captured (replica validation); `None`
    /// when it cannot be read right now.
    PageSums(oneshot::Sender<Result<Option<sluice_engine::validate::PageSums>>>),
    /// Sync and upload, then take a snapshot now; replies with its TXID (`None`: the latest
    /// snapshot is current).
    Snapshot(oneshot::Sender<Result<Option<sluice_ltx::TxId>>>),
    /// Apply snapshot and L0 retention now.
    EnforceRetention(oneshot::Sender<Result<()>>),
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
    let outage = Arc::new(Outage::default());
    let wopts = opts.writer_options();
    let (lease, index) =
        connect(&client, &opts.meta_dir, &opts.db_path, &wopts, &metrics, &outage, &mut shutdown).await?;
    let remote_max = index.max_txid();
    let sopts = ShipperOptions { busy_timeout: opts.busy_timeout, max_sync_wal_bytes: opts.max_sync_wal_bytes, resume };
    let shipper = Arc::new(ShipperHandle::spawn(opts.db_path.clone(), opts.meta_dir.clone(), remote_max, sopts).await?);
    // The shipper opened (and cleaned) the directory; temp files of running tasks must stay.
    let meta = shipper.meta().clone();
    let frame = 24 + u64::from(shipper.page_size());
    tracing::info!(db = %opts.db_path.display(), replica = client.description(), txid = %remote_max, "replicating");
    let writer = ReplicaWriter::new(client, meta, lease, index, metrics.clone(), outage, wopts);

    // First capture: a full image when there is no usable position.
    let first = first_capture(&shipper).await?;
    let needs_snapshot = first.as_ref().is_some_and(|s| s.full) || !writer.has_snapshot();
    // A first full image at TXID 1 becomes the first snapshot as it is uploaded.
    let first_image = first.as_ref().filter(|s| s.full).map(|s| s.header.max_txid);
    let mut tasks = writer.start(shipper.clone(), needs_snapshot, first_image);
    note_synced(&writer, first.as_ref());
    // A resumed database with nothing new captures no file: its TXIDs are where it stands.
    metrics.replica_txid.fetch_max(remote_max.0, Ordering::Relaxed);
    if let Ok(Some(pos)) = shipper.position().await {
        metrics.local_txid.store(pos.txid.0, Ordering::Relaxed);
    }

    let mut monitor = tokio::time::interval(opts.monitor_interval);
    monitor.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut watch = WalWatch::new(&opts.db_path);
    let mut events = opts.events.database(&opts.db_path);
    // Quiet: waiting for a file event instead of polling.
    let mut parked = false;
    // The WAL file's (length, mtime) when the last capture began: a database only parks while
    // the WAL is still so.
    let mut wal_seen = None;
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
    // Since when committed frames have been failing to be captured, or local writes failing.
    let (mut stalled_since, mut sync_failing): (Option<Instant>, Option<Instant>) = (None, None);
    // Capture paused: local files awaiting upload exceed `max_pending_size`.
    let mut paused = false;
    let mut budget_warned = false;
    let result: Result<()> = loop {
        let mut checkpoint_now = false;
        // When a time-based checkpoint falls due (writes since the last one): a parked database
        // wakes for it, and a polling one goes on to the checkpoint below.
        let checkpoint_at = (dirty && !opts.checkpoint_interval.is_zero())
            .then(|| (last_checkpoint + opts.checkpoint_interval).max(checkpoint_hold));
        tokio::select! {
            // The monitor tick is the safety net of polling; file events replace it.
            _ = monitor.tick(), if !events.enabled() => {}
            _ = pause(&mut events, parked, poll_delay, checkpoint_at) => {
                if parked {
                    tracing::debug!("woken");
                    // Whatever woke us (a write, a checkpoint, an entry of the database changing),
                    // capture once: that also re-reads the files' state after someone else's
                    // checkpoint, and a commit whose index update was still being published.
                    parked = false;
                    pending = true;
                    poll_delay = poll::MIN_POLL;
                }
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
                let time_checkpoint = checkpoint_at.is_some_and(|at| Instant::now() >= at);
                if !(checkpoint_now || time_checkpoint || pending && Instant::now() >= capture_due) {
                    if pending {
                        // Wake up when the capture is due, not up to a poll later.
                        let until_due = capture_due.saturating_duration_since(Instant::now());
                        poll_delay = poll_delay.min(until_due.max(Duration::from_millis(1)));
                    } else if poll_delay >= poll::MAX_POLL && wal_stat(&opts.db_path) == wal_seen && events.arm() {
                        // Quiet at the slowest pace, and the WAL file is as the last capture
                        // left it (a commit still publishing its index would show there): park
                        // until the next write. One more look catches a write that landed
                        // between the poll and the arming.
                        let seen = watch.observe();
                        let moved = seen.changed || wal_stat(&opts.db_path) != wal_seen;
                        pending |= moved;
                        parked = !moved;
                        tracing::debug!(parked, "quiet");
                        if moved {
                            poll_delay = poll::MIN_POLL;
                        }
                    }
                    continue;
                }
            }
            r = requests.recv(), if requests_open => {
                let reply = match r {
                    Some(Request::Sync(reply)) => SyncReply::Upload(reply),
                    Some(Request::Capture(reply)) => SyncReply::Local(reply),
                    Some(Request::PageSums(reply)) => {
                        // Reads the whole database: off this loop, as snapshots are.
                        let shipper = shipper.clone();
                        tokio::spawn(async move { drop(reply.send(shipper.page_sums().await)) });
                        continue;
                    }
                    Some(Request::Snapshot(reply)) => {
                        let captured = capture(&shipper, &writer).await;
                        dirty |= captured.as_ref().is_ok_and(|c| *c);
                        let (writer, shipper) = (writer.clone(), shipper.clone());
                        tokio::spawn(async move {
                            let r = match captured {
                                Ok(_) => writer.snapshot_now(shipper.as_ref()).await,
                                Err(e) => Err(e),
                            };
                            drop(reply.send(r));
                        });
                        continue;
                    }
                    Some(Request::EnforceRetention(reply)) => {
                        let writer = writer.clone();
                        tokio::spawn(async move { drop(reply.send(writer.enforce_retention_now().await)) });
                        continue;
                    }
                    None => {
                        requests_open = false;
                        continue;
                    }
                };
                let res = capture(&shipper, &writer).await;
                dirty |= res.as_ref().is_ok_and(|c| *c);
                match (res, reply) {
                    // Upload off this loop: waiting for a running upload must not stall
                    // capturing and checkpoints.
                    (Ok(_), SyncReply::Upload(reply)) => {
                        let writer = writer.clone();
                        tokio::spawn(async move {
                            let _ = reply.send(writer.upload_now().await);
                        });
                    }
                    (Ok(changed), SyncReply::Local(reply)) => {
                        let txid = sluice_ltx::TxId(metrics.local_txid.load(Ordering::Relaxed));
                        drop(reply.send(Ok(Captured { changed, txid })));
                    }
                    // As from a poll's capture: the lifecycle starts over (the caller retries).
                    (Err(Error::ReplacedInPlace { db, reason }), reply) => {
                        reply.fail(Error::ReplacedInPlace { db: db.clone(), reason: reason.clone() });
                        break Err(Error::ReplacedInPlace { db, reason });
                    }
                    (Err(e), reply) => reply.fail(e),
                }
                continue;
            }
            e = tasks.ended() => break Err(e),
            _ = shutdown.changed() => break Ok(()),
        }
        // Past the local budget (a long outage), new changes stay in the WAL: our read lock
        // stays put, so no checkpoint can discard them.
        let over_budget =
            opts.max_pending_size > 0 && metrics.pending_bytes.load(Ordering::Relaxed) >= opts.max_pending_size;
        if over_budget != paused {
            paused = over_budget;
            tracing::debug!(db = %opts.db_path.display(), paused, "max-pending-size");
        }
        // Logged once per episode: during an outage, merging the pending files makes room
        // now and then, so capture may pause and resume several times before it ends.
        let outage = metrics.outage_since_ms.load(Ordering::Relaxed) != 0;
        if paused && !budget_warned {
            budget_warned = true;
            tracing::warn!(db = %opts.db_path.display(), limit = opts.max_pending_size,
                "local files awaiting upload reached max-pending-size; capture and checkpoints pause \
                 until uploads catch up (the WAL keeps the changes and grows meanwhile)");
        } else if budget_warned && !paused && !outage {
            budget_warned = false;
            tracing::info!(db = %opts.db_path.display(), "local files below max-pending-size; capturing again");
        }
        if paused {
            continue;
        }
        if !checkpoint_now {
            // Taken before the capture: a write racing it shows as a change, never as none.
            let stat_before = wal_stat(&opts.db_path);
            let captured = capture(&shipper, &writer).await;
            last_capture = Instant::now();
            if captured.is_ok() {
                wal_seen = stat_before;
            }
            match captured {
                Ok(captured) => {
                    dirty |= captured;
                    if captured {
                        writer.note_pending();
                    }
                    if let Some(since) = stalled_since.take().or(sync_failing.take()) {
                        tracing::info!(db = %opts.db_path.display(), after = ?since.elapsed(), "capturing again");
                    }
                }
                // Its WAL position means nothing now; the lifecycle starts over.
                Err(e @ Error::ReplacedInPlace { .. }) => break Err(e),
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
                    // Local trouble (a full disk, say): retried every sync interval; nothing is
                    // lost, the read lock stays until the frames are written. Logged once.
                    metrics.errors_sync.fetch_add(1, Ordering::Relaxed);
                    if sync_failing.is_none() {
                        tracing::error!(error = %e, "capture failed; retrying every sync interval \
                            (the WAL keeps the changes until it succeeds)");
                    } else {
                        tracing::debug!(error = %e, "capture still failing");
                    }
                    sync_failing.get_or_insert_with(Instant::now);
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
        if frames == 0 {
            // The WAL holds nothing of ours (the application checkpointed and restarted it):
            // no time-based checkpoint is owed.
            dirty = false;
        }
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
                    note_synced(&writer, synced.as_ref());
                }
                Ok((Checkpoint::Partial, synced)) => {
                    // A reader pins part of the WAL: retrying at once would only take the write
                    // barrier again and again. Usually a passing race, so retry soon; a reader
                    // that stays (a long query of the application) backs us off to a second.
                    checkpoint_hold = Instant::now() + partial_backoff;
                    partial_backoff = (partial_backoff * 2).min(opts.monitor_interval.max(Duration::from_secs(1)));
                    metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
                    note_synced(&writer, synced.as_ref());
                }
                Ok((Checkpoint::Busy, _)) => {
                    // Retried after a pause, not at every poll.
                    checkpoint_hold = Instant::now() + opts.monitor_interval;
                    tracing::debug!("checkpoint skipped: database busy");
                }
                Err(e) => {
                    checkpoint_hold = Instant::now() + opts.monitor_interval;
                    metrics.errors_checkpoint.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "checkpoint failed");
                }
            }
        }
    };

    // Shutdown: capture the last commits and upload them, bounded in time.
    let final_capture = capture(&shipper, &writer).await;
    let conflict = matches!(result, Err(Error::Conflict { .. }));
    let upload_err = writer.finish(tasks, conflict).await;
    match (result, final_capture.err().or(upload_err)) {
        (Err(e), _) | (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
    }
}

/// The WAL file's length and mtime (`None` without one).
fn wal_stat(db: &std::path::Path) -> Option<(u64, Option<std::time::SystemTime>)> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(std::path::PathBuf::from(wal)).ok().map(|m| (m.len(), m.modified().ok()))
}

/// The wait between polls: `delay`, or while parked until a file event (or `limit`).
async fn pause(events: &mut DbEvents, parked: bool, delay: Duration, limit: Option<Instant>) {
    if !parked {
        return tokio::time::sleep(delay).await;
    }
    match limit {
        Some(at) => {
            tokio::select! {
                _ = events.changed() => {}
                _ = tokio::time::sleep_until(at) => {}
            }
        }
        None => events.changed().await,
    }
}

/// Syncs; `true` if a local L0 file was written.
async fn capture(shipper: &ShipperHandle, writer: &ReplicaWriter) -> Result<bool> {
    let synced = shipper.sync().await?;
    note_synced(writer, synced.as_ref());
    Ok(synced.is_some())
}

/// Tells the writer about a new local file.
fn note_synced(writer: &ReplicaWriter, synced: Option<&crate::shipper::Synced>) {
    if let Some(s) = synced {
        writer.captured(&s.header);
    }
}

/// The first capture, retried a few times: while the WAL was fully checkpointed our read
/// mark is 0, which does not stop the application from restarting or truncating the WAL
/// under a full image being read; the image is then abandoned (see `read_page`) and read
/// again rather than stopping replication.
async fn first_capture(shipper: &ShipperHandle) -> Result<Option<crate::shipper::Synced>> {
    let mut wait = Duration::from_millis(20);
    for _ in 0..10 {
        match shipper.sync().await {
            Err(e @ (Error::Io { .. } | Error::Ltx { .. })) => {
                tracing::info!(error = %e, retry_in = ?wait, "first capture raced the application's WAL; reading again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            r => return r,
        }
    }
    shipper.sync().await
}
