//! The replica writer: everything after capture, shared by `sluice replicate` and the VFS's
//! write mode. It takes the lease and learns the replica ([`connect`]), uploads local L0
//! files once per sync interval through outages (the uploader task), runs the compaction
//! ladder, snapshots and retention (the maintenance task), and at the end uploads what is
//! left and gives the lease back ([`ReplicaWriter::finish`]). Whoever captures — the WAL
//! shipper or the VFS write buffer — writes local L0 files and calls
//! [`ReplicaWriter::captured`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_ltx::{Header, TxId};
use sluice_storage::{FileInfo, ReplicaClient};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::compaction::{self, Retention};
use super::index::{ReplicaIndex, SharedIndex, lock};
use super::lease::Lease;
use super::local::MetaDir;
use super::metrics::DbMetrics;
use super::outage::{Backoff, Outage, is_permanent};
use super::uploader::{consolidate_pending, note_pending, upload_pending};
use super::{ImageSource, SNAPSHOT_LEVEL};
use crate::error::{Error, Result};

/// Settings of a replica writer (defaults as Litestream's, see `sluice-config`).
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// How often captured changes are uploaded.
    pub sync_interval: Duration,
    /// Compaction intervals of levels 1, 2, …
    pub levels: Vec<Duration>,
    /// Snapshot interval.
    pub snapshot_interval: Duration,
    /// Retention settings.
    pub retention: Retention,
    /// How long the final upload keeps trying.
    pub shutdown_sync_timeout: Duration,
    /// How long the replica lease stays valid without renewal.
    pub lease_ttl: Duration,
    /// Bounds shared with the other databases of the process.
    pub limits: Arc<Limits>,
}

/// Process-wide bounds on storage work, shared by the writers of every database, so that a
/// burst across a thousand databases queues instead of opening a thousand connections and
/// holding a thousand uploads in memory.
#[derive(Debug)]
pub struct Limits {
    /// Uploads and connects (lease + listing) in flight.
    pub transfers: tokio::sync::Semaphore,
    /// Compactions and snapshots in flight (they read and write whole files).
    pub maintenance: tokio::sync::Semaphore,
}

impl Limits {
    /// Default transfers in flight.
    pub const TRANSFERS: usize = 32;
    /// Default compactions and snapshots in flight.
    pub const MAINTENANCE: usize = 4;

    /// Limits with `transfers` uploads and `maintenance` compactions at a time (each ≥ 1).
    pub fn new(transfers: usize, maintenance: usize) -> Self {
        Limits {
            transfers: tokio::sync::Semaphore::new(transfers.max(1)),
            maintenance: tokio::sync::Semaphore::new(maintenance.max(1)),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(Self::TRANSFERS, Self::MAINTENANCE)
    }
}

/// Waits for a permit; a closed semaphore (never closed here) lets the work through.
async fn permit(s: &tokio::sync::Semaphore) -> Option<tokio::sync::SemaphorePermit<'_>> {
    s.acquire().await.ok()
}

impl WriterOptions {
    /// Longest wait between two attempts to reach storage: short enough that replication
    /// catches up within a few sync intervals after an outage ends. During an outage an
    /// attempt costs one small request (renewing the lease), not an upload.
    pub fn retry_cap(&self) -> Duration {
        (self.sync_interval * 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

/// Takes the lease and lists the replica, retrying transient failures until storage answers
/// (a machine may boot before its network, or during a storage incident); errors no retry
/// can fix end it at once, and so does `shutdown` ([`Error::NeverConnected`]).
pub async fn connect(
    client: &ReplicaClient,
    meta_dir: &Path,
    db: &Path,
    opts: &WriterOptions,
    metrics: &DbMetrics,
    outage: &Outage,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(Lease, ReplicaIndex)> {
    let mut backoff = Backoff::new(Duration::from_millis(200), opts.retry_cap());
    loop {
        let attempt = async {
            let _permit = permit(&opts.limits.transfers).await;
            let lease = Lease::acquire(client, meta_dir, db, opts.lease_ttl).await?;
            Ok::<_, Error>((lease, ReplicaIndex::load(client).await?))
        };
        match attempt.await {
            Ok(connected) => {
                outage.succeeded(metrics);
                return Ok(connected);
            }
            Err(e) if is_permanent(&e) || !matches!(e, Error::Storage(_)) => return Err(e),
            Err(e) => {
                outage.failed(metrics, "connect", &e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.changed() => return Err(Error::NeverConnected(Box::new(e))),
                }
            }
        }
    }
}

/// How long after the first upload a new replica's first image is copied as its snapshot:
/// the first compaction level's interval (capped at a minute).
fn first_snapshot_delay(opts: &WriterOptions) -> Duration {
    opts.levels.first().copied().unwrap_or(Duration::from_secs(30)).min(Duration::from_secs(60))
}

/// One replica's writer. Cheap to clone: the clones share everything.
#[derive(Clone)]
pub struct ReplicaWriter {
    client: ReplicaClient,
    meta: MetaDir,
    index: SharedIndex,
    metrics: Arc<DbMetrics>,
    lease: Arc<tokio::sync::Mutex<Lease>>,
    outage: Arc<Outage>,
    opts: WriterOptions,
    /// Something was captured: the uploader should look.
    wake: Arc<Notify>,
    /// An upload finished: a first snapshot may follow.
    uploaded: Arc<Notify>,
    /// One snapshot at a time (the first one, the daily one, `--force-snapshot`): they
    /// share a temp file, and the second finds the first's result.
    snapshotting: Arc<tokio::sync::Mutex<()>>,
}

/// The writer's background tasks; [`ReplicaWriter::finish`] stops them.
pub struct Tasks {
    uploader: JoinHandle<Result<()>>,
    maintenance: JoinHandle<Result<()>>,
    stop: watch::Sender<bool>,
}

impl Tasks {
    /// Waits until a task stops by itself (a permanent error): the reason.
    pub async fn ended(&mut self) -> Error {
        tokio::select! {
            r = &mut self.uploader => task_end("uploader", r),
            r = &mut self.maintenance => task_end("maintenance", r),
        }
    }
}

impl ReplicaWriter {
    /// A writer over a connected replica whose local staging is `meta`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: ReplicaClient,
        meta: MetaDir,
        lease: Lease,
        index: ReplicaIndex,
        metrics: Arc<DbMetrics>,
        outage: Arc<Outage>,
        opts: WriterOptions,
    ) -> Self {
        ReplicaWriter {
            client,
            meta,
            index: Arc::new(std::sync::Mutex::new(index)),
            metrics,
            lease: Arc::new(tokio::sync::Mutex::new(lease)),
            outage,
            opts,
            wake: Arc::new(Notify::new()),
            uploaded: Arc::new(Notify::new()),
            snapshotting: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The replica's highest TXID.
    pub fn remote_max(&self) -> TxId {
        lock(&self.index).max_txid()
    }

    /// Whether the replica has no snapshot yet.
    pub fn has_snapshot(&self) -> bool {
        !lock(&self.index).files(SNAPSHOT_LEVEL).is_empty()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<DbMetrics> {
        &self.metrics
    }

    /// Starts the uploader and the maintenance task. `needs_snapshot`: take one as soon as
    /// the first upload is done (`first_image`: a full image at that TXID; at TXID 1 it is
    /// copied as the snapshot, shortly after). `source` gives a database image when the replica has no
    /// snapshot to merge one from.
    pub fn start(&self, source: Arc<dyn ImageSource>, needs_snapshot: bool, first_image: Option<TxId>) -> Tasks {
        let (stop, stop_rx) = watch::channel(false);
        let uploader = tokio::spawn(self.clone().upload_loop(stop_rx.clone()));
        let maintenance = tokio::spawn(self.clone().maintenance_loop(source, needs_snapshot, first_image, stop_rx));
        Tasks { uploader, maintenance, stop }
    }

    /// A local L0 file with `header` was written: metrics, and the uploader's wake-up.
    pub fn captured(&self, header: &Header) {
        self.metrics.syncs.fetch_add(1, Ordering::Relaxed);
        self.metrics.local_txid.store(header.max_txid.0, Ordering::Relaxed);
        if self.metrics.oldest_pending_ms.load(Ordering::Relaxed) == 0 {
            self.metrics.oldest_pending_ms.store(header.timestamp_ms as u64, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    /// Refreshes the lag and pending-bytes metrics from the local files.
    pub fn note_pending(&self) {
        note_pending(&self.meta, &self.index, &self.metrics);
    }

    /// Renews the lease if due, then uploads what is pending; the replica's TXID after it.
    /// Holding the lease's lock for the whole upload serialises the background uploader,
    /// forced syncs and the final upload.
    pub async fn upload_now(&self) -> Result<TxId> {
        let mut held = self.lease.lock().await;
        if self.outage.is_active() {
            // Probe with the lease before merging what is pending (and re-check it: the
            // outage may have outlasted its TTL and another writer may have taken over).
            held.renew_now().await?;
        } else {
            held.renew_if_due().await?;
        }
        let _permit = permit(&self.opts.limits.transfers).await;
        upload_pending(&self.client, &self.meta, &self.index, &self.metrics).await
    }

    /// Uploads what is pending, then takes a snapshot now (`replicate --once
    /// --force-snapshot`); the snapshot's TXID, or `None` if the replica's latest one is current.
    pub async fn snapshot_now(&self, source: &dyn ImageSource) -> Result<Option<TxId>> {
        self.upload_now().await?;
        let _permit = permit(&self.opts.limits.maintenance).await;
        Ok(self.latest_snapshot(source).await?.map(|f| f.max_txid))
    }

    /// A snapshot at the replica's latest TXID (the daily one, `--force-snapshot`); `None`
    /// if the latest snapshot is current. A replica without one first gets its first image
    /// copied as one, so the new snapshot is merged from the replica, not read from the
    /// database.
    async fn latest_snapshot(&self, source: &dyn ImageSource) -> Result<Option<FileInfo>> {
        let _one = self.snapshotting.lock().await;
        if !self.has_snapshot() {
            self.first_image_as_snapshot().await?;
        }
        compaction::snapshot(&self.client, &self.meta, source, &self.index, &self.metrics).await
    }

    /// The snapshot a session starts with (a new replica, or a database that replaced the
    /// one replicated before): a new replica's first image copied, or else one built from
    /// the replica or the database.
    async fn first_snapshot(&self, source: &dyn ImageSource) -> Result<()> {
        let _one = self.snapshotting.lock().await;
        if !self.has_snapshot() && self.first_image_as_snapshot().await? {
            return Ok(());
        }
        compaction::snapshot(&self.client, &self.meta, source, &self.index, &self.metrics).await.map(|_| ())
    }

    /// Applies snapshot and L0 retention now (`replicate --once --enforce-retention`).
    pub async fn enforce_retention_now(&self) -> Result<()> {
        let _permit = permit(&self.opts.limits.maintenance).await;
        let ret = &self.opts.retention;
        compaction::enforce_snapshot_retention(&self.client, &self.index, ret, &self.metrics).await?;
        compaction::enforce_l0_retention(&self.client, &self.meta, &self.index, ret, &self.metrics).await
    }

    /// During an outage: merges pending local files into one (see [`consolidate_pending`]).
    /// Only an optimisation, so a failure (a full disk) is logged and left to the next try.
    async fn consolidate(&self) {
        let _held = self.lease.lock().await;
        match consolidate_pending(&self.meta, &self.index).await {
            Ok(true) => self.note_pending(),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "merging pending local files failed"),
        }
    }

    /// Stops the tasks, uploads what is left (retrying until the shutdown timeout), and
    /// releases the lease unless another writer took it. The error of the final upload, if
    /// any; `conflict`: the caller already knows another writer holds the replica.
    pub async fn finish(self, tasks: Tasks, conflict: bool) -> Option<Error> {
        let _ = tasks.stop.send(true);
        let deadline = Instant::now() + self.opts.shutdown_sync_timeout;
        let mut last_err = None;
        if !conflict {
            loop {
                match self.upload_now().await {
                    Ok(_) => {
                        self.outage.succeeded(&self.metrics);
                        // A new replica stopped before its first image was copied as its
                        // snapshot: one request now saves reading the database later.
                        // (Not while a snapshot is being taken: that one finishes the job.)
                        if let Ok(_one) = self.snapshotting.try_lock()
                            && !self.has_snapshot()
                            && let Err(e) = self.first_image_as_snapshot().await
                        {
                            tracing::debug!(error = %e, "copying the first image as the snapshot failed");
                        }
                        break;
                    }
                    Err(e) if is_permanent(&e) || Instant::now() >= deadline => {
                        last_err = Some(e);
                        break;
                    }
                    Err(e) => {
                        self.outage.failed(&self.metrics, "final upload", &e);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        tasks.uploader.abort();
        tasks.maintenance.abort();
        if !conflict && !matches!(last_err, Some(Error::Conflict { .. })) {
            // Our lease (not someone else's): let another writer take over at once.
            let release = async { self.lease.lock().await.release_ref().await };
            let _ = tokio::time::timeout(Duration::from_secs(5), release).await;
        }
        last_err
    }

    /// Uploads at most once per sync interval, sooner after a quiet period; through an
    /// outage, retries with backoff for as long as it lasts.
    async fn upload_loop(self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let interval = self.opts.sync_interval;
        let mut backoff = Backoff::new(interval, self.opts.retry_cap());
        let mut wait = Duration::ZERO;
        let mut last = Instant::now() - interval;
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.changed() => return Ok(()),
            }
            // Pace uploads: everything captured within one interval goes up as one file.
            tokio::select! {
                _ = tokio::time::sleep_until(last + interval.max(wait)) => {}
                _ = stop.changed() => return Ok(()),
            }
            last = Instant::now();
            match self.upload_now().await {
                Ok(_) => {
                    backoff.reset();
                    wait = Duration::ZERO;
                    self.outage.succeeded(&self.metrics);
                    self.uploaded.notify_one();
                }
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    self.metrics.errors_upload.fetch_add(1, Ordering::Relaxed);
                    wait = backoff.next_delay();
                    if matches!(e, Error::Storage(_)) {
                        self.outage.failed(&self.metrics, "upload", &e);
                    } else {
                        tracing::warn!(error = %e, retry_in = ?wait, "upload failed");
                    }
                    self.consolidate().await;
                    self.note_pending();
                    self.wake.notify_one();
                }
            }
        }
    }

    async fn maintenance_loop(
        self,
        source: Arc<dyn ImageSource>,
        mut needs_snapshot: bool,
        first_image: Option<TxId>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let (client, meta, index, metrics, opts) = (&self.client, &self.meta, &self.index, &self.metrics, &self.opts);
        let mut due: Vec<Instant> = opts.levels.iter().map(|d| next_boundary(*d)).collect();
        let mut snap_due = next_boundary(opts.snapshot_interval);
        let mut snapshot_failed = false;
        loop {
            if needs_snapshot {
                // Wait for the first upload so the snapshot never runs ahead of level 0; after
                // a failure, retry on a timer too (an idle database may not upload again).
                tokio::select! {
                    _ = self.uploaded.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)), if snapshot_failed => {}
                    _ = stop.changed() => return Ok(()),
                }
                if first_image == Some(TxId(1)) && !snapshot_failed {
                    // A new replica: its first image becomes the snapshot by a copy, a little
                    // later, so that when many databases start at once every first level-0
                    // upload goes before any copy (a stop copies at once).
                    tokio::select! {
                        _ = tokio::time::sleep(first_snapshot_delay(opts)) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                }
                let _permit = permit(&opts.limits.maintenance).await;
                match self.first_snapshot(source.as_ref()).await {
                    Ok(()) => needs_snapshot = false,
                    Err(e) => {
                        snapshot_failed = true;
                        self.maintenance_failed("snapshot", &e);
                    }
                }
                continue;
            }
            // Only levels with new input wake this task: an idle database has no timer of its
            // own (bar the daily snapshot) until its next upload.
            let idle = (1..=opts.levels.len()).all(|l| {
                let index = lock(index);
                index.level_max(l as u8 - 1) <= index.level_max(l as u8)
            });
            let next = due.iter().copied().chain([snap_due]).min().unwrap_or(snap_due);
            tokio::select! {
                _ = tokio::time::sleep_until(next), if !idle => {}
                _ = tokio::time::sleep_until(snap_due), if idle => {}
                _ = self.uploaded.notified(), if idle => {
                    // New input: go on at the levels' next boundaries.
                    let now = Instant::now();
                    for (i, at) in due.iter_mut().enumerate() {
                        if *at <= now {
                            *at = next_boundary(opts.levels[i]);
                        }
                    }
                    continue;
                }
                _ = stop.changed() => return Ok(()),
            }
            let now = Instant::now();
            for (i, at) in due.iter_mut().enumerate() {
                if *at > now {
                    continue;
                }
                *at = next_boundary(opts.levels[i]);
                let level = (i + 1) as u8;
                let _permit = permit(&opts.limits.maintenance).await;
                match compaction::compact_level(client, meta, index, level, metrics).await {
                    Ok(Some(_)) if level == 1 => {
                        if let Err(e) =
                            compaction::enforce_l0_retention(client, meta, index, &opts.retention, metrics).await
                        {
                            metrics.errors_retention.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "L0 retention failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => self.maintenance_failed("compaction", &e),
                }
            }
            if snap_due <= now {
                snap_due = next_boundary(opts.snapshot_interval);
                let _permit = permit(&opts.limits.maintenance).await;
                match self.latest_snapshot(source.as_ref()).await {
                    Ok(Some(_)) => {
                        if let Err(e) =
                            compaction::enforce_snapshot_retention(client, index, &opts.retention, metrics).await
                        {
                            metrics.errors_retention.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "snapshot retention failed");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => self.maintenance_failed("snapshot", &e),
                }
            }
        }
    }

    /// A new replica's first level-0 file, a full image at TXID 1, is byte for byte its first
    /// snapshot: copied on the server instead of encoded and sent again. `false` if there is
    /// no such file or no such copy.
    async fn first_image_as_snapshot(&self) -> Result<bool> {
        let first = lock(&self.index).files(0).iter().find(|f| (f.min_txid, f.max_txid) == (TxId(1), TxId(1))).cloned();
        let Some(f) = first else { return Ok(false) };
        match self.client.copy_file(0, SNAPSHOT_LEVEL, (f.min_txid, f.max_txid), f.size, f.created_at).await {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            // Our own earlier copy (the listing had none) whose reply or fsync failed.
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
        lock(&self.index).add(FileInfo { level: SNAPSHOT_LEVEL, ..f });
        self.metrics.snapshots.fetch_add(1, Ordering::Relaxed);
        self.metrics.files_uploaded.fetch_add(1, Ordering::Relaxed);
        tracing::info!(txid = %f.max_txid, bytes = f.size, "stored snapshot (a copy of the first image)");
        Ok(true)
    }

    /// A failed compaction or snapshot: part of an outage when storage failed (logged once
    /// for the outage), else worth a warning of its own. Retried at its next due time.
    fn maintenance_failed(&self, op: &str, e: &Error) {
        self.metrics.errors_compaction.fetch_add(1, Ordering::Relaxed);
        if matches!(e, Error::Storage(_)) {
            self.outage.failed(&self.metrics, op, e);
        } else {
            tracing::warn!(error = %e, "{op} failed");
        }
    }
}

fn task_end(name: &str, r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Error {
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(())) => Error::Task(format!("{name} task stopped")),
        Err(e) => Error::Task(format!("{name} task failed: {e}")),
    }
}

/// Next wall-clock multiple of `every` (Litestream aligns levels to the epoch).
fn next_boundary(every: Duration) -> Instant {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let every_ms = every.as_millis().max(1);
    let wait = every_ms - now.as_millis() % every_ms;
    Instant::now() + Duration::from_millis(wait as u64)
}
