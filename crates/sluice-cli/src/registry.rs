//! The daemon's databases, whichever way they came: the config's `dbs:`, `dir:` discovery, or
//! the control socket. Each runs as one task with its own stop signal, so a database can be
//! added or removed while the others keep replicating. A database can also be stopped and
//! started again (Litestream's `stop`/`start`): stopped, it stays registered with no task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use sluice_config::{Config, DbConfig};
use sluice_engine::validate::PageSums;
use sluice_engine::write::Limits;
use sluice_engine::write::metrics::DbMetrics;
use sluice_ltx::TxId;
use sluice_replicate::fsevents::FsEvents;
use sluice_replicate::presence::{self, Presence};
use sluice_replicate::{Captured, ReplicateOptions, Request, replicate};
use sluice_storage::ReplicaClient;
use tokio::sync::{mpsc, oneshot, watch};

use crate::daemon::DaemonLock;

/// Where a database's registration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A `path:` entry of the config.
    Config,
    /// Found by a `dir:` entry (its index in `dirs`).
    Dir,
    /// Registered through the control socket.
    Socket,
}

/// A database task that ended.
pub struct Done {
    /// The database.
    pub path: PathBuf,
    /// How replication ended.
    pub result: Result<()>,
    /// It was removed on purpose (unregistered, or its file left a watched directory).
    pub removed: bool,
}

/// One registered database, as `list` shows it (Litestream's fields first).
#[derive(Clone, Debug, Serialize)]
pub struct DbInfo {
    /// Database path.
    pub path: PathBuf,
    /// `replicating`, `waiting` (for the database file to exist) or `stopped`.
    pub status: &'static str,
    /// When the last upload finished (RFC 3339), if any since the daemon started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync_at: Option<String>,
    /// Replica, credentials redacted.
    pub replica: String,
    /// How it was registered.
    pub source: Source,
    /// Last TXID captured locally and last TXID in the replica (16 hex digits).
    pub local_txid: String,
    /// See `local_txid`.
    pub replica_txid: String,
}

/// A stopped database: what `start` needs to run it again.
struct Parked {
    db: DbConfig,
    source: Source,
    replica: String,
    metrics: Arc<DbMetrics>,
}

#[derive(Default)]
struct Dbs {
    map: BTreeMap<PathBuf, Entry>,
    /// Stopped databases (not in `map`).
    stopped: BTreeMap<PathBuf, Parked>,
    /// Shutting down: nothing new is added.
    closed: bool,
    /// Databases whose replication ended on its own (an error), over the daemon's life.
    failed: u64,
}

impl std::ops::Deref for Dbs {
    type Target = BTreeMap<PathBuf, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Dbs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

/// Reports a database task's end even if it panicked: its entry goes (into `stopped` when it
/// was stopped on purpose), `Done` is sent.
struct EndGuard {
    registry: Registry,
    path: PathBuf,
    removed: Arc<std::sync::atomic::AtomicBool>,
    parked: Option<Parked>,
    result: Option<Result<()>>,
}

impl EndGuard {
    fn finish(mut self, result: Result<()>) {
        self.result = Some(result);
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let removed = self.removed.load(std::sync::atomic::Ordering::Relaxed);
        let result = self.result.take().unwrap_or_else(|| Err(anyhow!("replication task panicked")));
        let mut dbs = self.registry.lock();
        let entry = dbs.remove(&self.path);
        if removed
            && entry.is_some_and(|e| e.park.load(std::sync::atomic::Ordering::Relaxed))
            && let Some(parked) = self.parked.take()
        {
            dbs.stopped.insert(self.path.clone(), parked);
        }
        if result.is_err() && !removed {
            dbs.failed += 1;
        }
        drop(dbs);
        let _ = self.registry.done.send(Done { path: self.path.clone(), result, removed });
    }
}

struct Entry {
    requests: mpsc::Sender<Request>,
    lock: Arc<OnceLock<DaemonLock>>,
    metrics: Arc<DbMetrics>,
    stop: watch::Sender<bool>,
    source: Source,
    replica: String,
    removed: Arc<std::sync::atomic::AtomicBool>,
    /// Removed to be stopped, not unregistered: it goes to `stopped` when its task ends.
    park: Arc<std::sync::atomic::AtomicBool>,
    validation: Option<crate::validate::Target>,
}

/// The registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    dbs: Arc<Mutex<Dbs>>,
    cfg: Arc<Config>,
    events: FsEvents,
    limits: Arc<Limits>,
    done: mpsc::UnboundedSender<Done>,
}

impl Registry {
    /// A registry whose ended tasks are reported on the returned channel.
    pub fn new(cfg: Arc<Config>, events: FsEvents) -> (Self, mpsc::UnboundedReceiver<Done>) {
        let (done, done_rx) = mpsc::unbounded_channel();
        let limits = Arc::new(Limits::new(cfg.max_concurrent_uploads, cfg.max_concurrent_compactions));
        (Registry { dbs: Arc::default(), cfg, events, limits, done }, done_rx)
    }

    fn lock(&self) -> MutexGuard<'_, Dbs> {
        self.dbs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts replicating `db`; `Ok(false)` if it is already registered. An error if it is
    /// still stopping from a removal (try again once it has), or the daemon is shutting down.
    pub fn add(&self, db: &DbConfig, source: Source) -> Result<bool> {
        self.add_with(db, source, None)
    }

    /// [`Self::add`], keeping `metrics` when given (a database started again).
    fn add_with(&self, db: &DbConfig, source: Source, metrics: Option<Arc<DbMetrics>>) -> Result<bool> {
        {
            let dbs = self.lock();
            if dbs.closed {
                bail!("the daemon is shutting down");
            }
            if dbs.stopped.contains_key(&db.path) {
                return Ok(false);
            }
            if let Some(e) = dbs.get(&db.path) {
                if e.removed.load(std::sync::atomic::Ordering::Relaxed) {
                    bail!("{} is still stopping (its last sync is running); try again", db.path.display());
                }
                return Ok(false);
            }
        }
        let client = ReplicaClient::open(&db.replica.storage)
            .with_context(|| format!("invalid replica for {}", db.path.display()))?;
        let opts = self.options(db);
        // The lock file lives in the meta directory, which takes the database's permissions
        // and is not created before the database: taken now if the database exists (so a
        // second daemon is refused at once), otherwise once it appears.
        let lock = Arc::new(OnceLock::new());
        if matches!(presence::probe(&db.path), Presence::Ready(_)) {
            let held = DaemonLock::acquire(&opts.meta_dir, &db.path)
                .with_context(|| format!("cannot replicate {}", db.path.display()))?;
            let _ = lock.set(held);
        }
        let metrics = metrics
            .unwrap_or_else(|| Arc::new(DbMetrics { db: db.path.display().to_string(), ..DbMetrics::default() }));
        let (req_tx, req_rx) = mpsc::channel(4);
        let (stop, stop_rx) = watch::channel(false);
        let removed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let entry = Entry {
            requests: req_tx,
            lock: lock.clone(),
            metrics: metrics.clone(),
            stop,
            source,
            replica: client.description().to_string(),
            removed: removed.clone(),
            park: Arc::default(),
            validation: crate::validate::Target::new(&self.cfg, db, source, &client, &metrics),
        };
        let parked = Parked { db: db.clone(), source, replica: entry.replica.clone(), metrics: metrics.clone() };
        let mut dbs = self.lock();
        if dbs.closed || dbs.contains_key(&db.path) || dbs.stopped.contains_key(&db.path) {
            return Ok(false);
        }
        dbs.insert(db.path.clone(), entry);
        drop(dbs);
        let guard =
            EndGuard { registry: self.clone(), path: db.path.clone(), removed, parked: Some(parked), result: None };
        tokio::spawn(async move {
            let result = replicate_when_present(opts, client, metrics, stop_rx, req_rx, &lock).await;
            // The daemon lock goes before the entry, so a re-registration finds it free.
            drop(lock);
            guard.finish(result);
        });
        Ok(true)
    }

    /// Stops replicating `path` (after a last sync) and forgets it; false if it was not
    /// registered.
    pub fn remove(&self, path: &Path) -> bool {
        let mut dbs = self.lock();
        if dbs.stopped.remove(path).is_some() {
            return true;
        }
        let Some(entry) = dbs.get(path) else { return false };
        entry.park.store(false, std::sync::atomic::Ordering::Relaxed);
        entry.removed.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = entry.stop.send(true);
        true
    }

    /// Stops replicating `path` (after a last sync) but keeps it registered, for [`Self::start`].
    pub fn stop(&self, path: &Path) -> Result<Toggle> {
        let dbs = self.lock();
        if dbs.stopped.contains_key(path) {
            return Ok(Toggle::Already);
        }
        let entry = dbs.get(path).ok_or_else(|| not_found(path))?;
        if entry.removed.load(std::sync::atomic::Ordering::Relaxed) {
            // Stopping already (a `stop` in flight, or unregistering): the caller waits.
            return Ok(Toggle::Done);
        }
        entry.park.store(true, std::sync::atomic::Ordering::Relaxed);
        entry.removed.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = entry.stop.send(true);
        Ok(Toggle::Done)
    }

    /// Replicates a stopped database again.
    pub fn start(&self, path: &Path) -> Result<Toggle> {
        let parked = {
            let mut dbs = self.lock();
            if dbs.closed {
                bail!("the daemon is shutting down");
            }
            if let Some(e) = dbs.get(path) {
                if e.removed.load(std::sync::atomic::Ordering::Relaxed) {
                    bail!("{} is still stopping (its last sync is running); try again", path.display());
                }
                return Ok(Toggle::Already);
            }
            dbs.stopped.remove(path).ok_or_else(|| not_found(path))?
        };
        match self.add_with(&parked.db, parked.source, Some(parked.metrics.clone())) {
            Ok(_) => Ok(Toggle::Done),
            Err(e) => {
                // Still registered, still stopped: `start` may be tried again.
                self.lock().stopped.insert(path.to_path_buf(), parked);
                Err(e)
            }
        }
    }

    /// Whether `path` is registered and stopped.
    pub fn is_stopped(&self, path: &Path) -> bool {
        self.lock().stopped.contains_key(path)
    }

    /// Whether `path` is registered but stopping (removed, its last sync still running).
    pub fn is_stopping(&self, path: &Path) -> bool {
        self.lock().get(path).is_some_and(|e| e.removed.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Tells every database to stop (each syncs one last time); none is added afterwards.
    pub fn stop_all(&self) {
        let mut dbs = self.lock();
        dbs.closed = true;
        for entry in dbs.values() {
            let _ = entry.stop.send(true);
        }
    }

    /// Databases whose replication ended with an error (not removed on purpose) so far.
    pub fn failed(&self) -> u64 {
        self.lock().failed
    }

    /// Number of running database tasks.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Number of registered databases, stopped ones included.
    pub fn registered(&self) -> usize {
        let dbs = self.lock();
        dbs.len() + dbs.stopped.len()
    }

    /// Registered paths (stopped ones included) and where they came from.
    pub fn paths(&self) -> Vec<(PathBuf, Source)> {
        let dbs = self.lock();
        let running = dbs.iter().map(|(p, e)| (p.clone(), e.source));
        running.chain(dbs.stopped.iter().map(|(p, s)| (p.clone(), s.source))).collect()
    }

    /// Whether `path` has a running task (stopping ones included).
    pub fn is_running(&self, path: &Path) -> bool {
        self.lock().contains_key(path)
    }

    /// Every database's metrics.
    pub fn metrics(&self) -> Vec<Arc<DbMetrics>> {
        self.lock().values().map(|e| e.metrics.clone()).collect()
    }

    /// The registered databases, stopped ones included, by path.
    pub fn list(&self) -> Vec<DbInfo> {
        let dbs = self.lock();
        let running = dbs.iter().map(|(p, e)| {
            let status = if e.lock.get().is_some() { "replicating" } else { "waiting" };
            info(p, status, &e.replica, e.source, &e.metrics)
        });
        let stopped = dbs.stopped.iter().map(|(p, s)| info(p, "stopped", &s.replica, s.source, &s.metrics));
        let mut all: Vec<DbInfo> = running.chain(stopped).collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    }

    /// Asks `path` to capture and upload now; resolves with the replica's TXID afterwards.
    pub fn sync(&self, path: &Path) -> Result<oneshot::Receiver<sluice_engine::Result<TxId>>> {
        self.ask(path, Request::Sync)
    }

    /// Asks `path` to capture now (not waiting for the upload); resolves with what it did.
    pub fn capture(&self, path: &Path) -> Result<oneshot::Receiver<sluice_engine::Result<Captured>>> {
        self.ask(path, Request::Capture)
    }

    /// Sends `path` the request `make` builds around a reply channel. Never waits for a full
    /// queue (a stuck database must not hold up the caller).
    pub fn ask<T>(
        &self,
        path: &Path,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<oneshot::Receiver<T>> {
        let dbs = self.lock();
        if dbs.stopped.contains_key(path) {
            bail!("{} is stopped (`sluice start` replicates it again)", path.display());
        }
        let entry = dbs.get(path).ok_or_else(|| not_found(path))?;
        let (tx, rx) = oneshot::channel();
        entry.requests.try_send(make(tx)).map_err(|_| anyhow!("{} is busy with earlier requests", path.display()))?;
        Ok(rx)
    }

    /// Sends a sync request to every database; each reply goes to `ack` with its lock file (for
    /// `sluice sync` waiting on the file).
    pub fn sync_all_with_ack(&self) {
        // Collected first: the registry's lock must not be held while `sync` takes it.
        let dbs: Vec<(PathBuf, Arc<OnceLock<DaemonLock>>)> =
            self.lock().iter().map(|(p, e)| (p.clone(), e.lock.clone())).collect();
        for (path, lock) in dbs {
            let Ok(rx) = self.sync(&path) else { continue };
            tokio::spawn(async move {
                let outcome = match rx.await {
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

    /// Databases whose replica is validated.
    pub fn validation_targets(&self) -> Vec<crate::validate::Target> {
        self.lock().values().filter_map(|e| e.validation.clone()).collect()
    }

    /// Asks `path` for its page checksums at a TXID just captured (replica validation).
    pub fn page_sums(&self, path: &Path) -> Result<oneshot::Receiver<sluice_engine::Result<Option<PageSums>>>> {
        self.ask(path, Request::PageSums)
    }

    /// Engine options for one database.
    pub fn options(&self, db: &DbConfig) -> ReplicateOptions {
        crate::replicate_cmd::options(&self.cfg, db, &self.events, &self.limits)
    }
}

/// What `stop` or `start` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    /// It was running (stopped) or stopped (started), and now is being changed.
    Done,
    /// It already was as asked.
    Already,
}

fn not_found(path: &Path) -> anyhow::Error {
    anyhow!("{} is not replicated by this daemon", path.display())
}

fn info(path: &Path, status: &'static str, replica: &str, source: Source, m: &DbMetrics) -> DbInfo {
    use std::sync::atomic::Ordering::Relaxed;
    let last = m.last_upload_ms.load(Relaxed);
    let last_sync_at = (last > 0)
        .then(|| chrono::DateTime::from_timestamp_millis(last as i64))
        .flatten()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    DbInfo {
        path: path.to_path_buf(),
        status,
        last_sync_at,
        replica: replica.to_string(),
        source,
        local_txid: TxId(m.local_txid.load(Relaxed)).to_string(),
        replica_txid: TxId(m.replica_txid.load(Relaxed)).to_string(),
    }
}

/// Waits for the database to exist if it did not at start, takes its daemon lock then, and
/// replicates it until `shutdown`.
async fn replicate_when_present(
    opts: ReplicateOptions,
    client: ReplicaClient,
    metrics: Arc<DbMetrics>,
    mut shutdown: watch::Receiver<bool>,
    mut requests: mpsc::Receiver<Request>,
    lock: &OnceLock<DaemonLock>,
) -> Result<()> {
    if lock.get().is_none() {
        let mut events = opts.events.database(&opts.db_path);
        if presence::wait_for_database(&opts.db_path, &mut events, &mut shutdown, &mut requests).await.is_none() {
            return Ok(());
        }
        let held = DaemonLock::acquire(&opts.meta_dir, &opts.db_path)
            .with_context(|| format!("cannot replicate {}", opts.db_path.display()))?;
        let _ = lock.set(held);
    }
    Ok(replicate(opts, client, metrics, shutdown, requests).await?)
}
