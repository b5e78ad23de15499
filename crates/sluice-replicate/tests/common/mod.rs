//! Helpers shared by the replication tests of `sluice-engine`: options with shortened
//! intervals, an in-memory replica, a writer thread, a running `replicate` task, restores
//! and history checks. Each test file compiles this module separately, so items only some
//! files use are allowed to be dead there.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::memory::InMemory;
use sluice_engine::Error;
use sluice_engine::restore::{self, RestoreOptions};
use sluice_engine::write::compaction::Retention;
use sluice_engine::write::metrics::DbMetrics;
use sluice_ltx::TxId;
use sluice_replicate::{ReplicateOptions, Request, replicate};
use sluice_storage::{FaultyStore, FileInfo, ReplicaClient, StoreKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub const PREFIX: &str = "db";

/// Shortened intervals so a test sees every periodic job several times within seconds.
pub fn options(db: &Path) -> ReplicateOptions {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    ReplicateOptions {
        db_path: db.to_path_buf(),
        meta_dir: db.parent().unwrap().join(format!(".{name}-litestream")),
        sync_interval: Duration::from_millis(100),
        monitor_interval: Duration::from_millis(50),
        busy_timeout: Duration::from_secs(1),
        checkpoint_pages: 1000,
        hard_limit_pages: 121_359,
        checkpoint_interval: Duration::from_secs(1),
        max_sync_wal_bytes: 64 << 20,
        levels: vec![Duration::from_secs(1), Duration::from_secs(2)],
        snapshot_interval: Duration::from_secs(3),
        // L0 retention off (zero keeps L0 forever), so level 0 is the whole history to check.
        retention: Retention {
            enabled: true,
            snapshot_retention: Duration::from_secs(24 * 3600),
            l0_retention: Duration::ZERO,
        },
        shutdown_sync_timeout: Duration::from_secs(10),
        stall_timeout: Duration::from_secs(30),
        lease_ttl: Duration::from_secs(600),
        max_pending_size: 0,
        events: sluice_replicate::fsevents::FsEvents::start(),
        limits: Default::default(),
        auto_recover: false,
    }
}

pub fn memory_store() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

/// A client straight on `store`: no faults, default retries.
pub fn clean_client(store: &Arc<dyn ObjectStore>) -> ReplicaClient {
    ReplicaClient::new(store.clone(), StoreKind::File, PREFIX)
}

/// A client on `store` through a `FaultyStore` (seeded by `seed`) that the test drives.
pub fn faulty_client(store: &Arc<dyn ObjectStore>, seed: u64) -> (FaultyStore<Arc<dyn ObjectStore>>, ReplicaClient) {
    let faulty = FaultyStore::new(store.clone(), seed);
    let client = ReplicaClient::new(Arc::new(faulty.clone()), StoreKind::File, PREFIX);
    (faulty, client)
}

/// A database in WAL mode with `t(id INTEGER PRIMARY KEY, v TEXT)`.
pub fn create_db(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);").unwrap();
}

pub fn open_writer(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// Commits rows `from..from+n`, one transaction each; returns the next id.
pub fn insert_rows(c: &rusqlite::Connection, tag: &str, from: u64, n: u64) -> u64 {
    for id in from..from + n {
        c.execute("INSERT INTO t(id, v) VALUES (?1, ?2)", rusqlite::params![id as i64, format!("{tag}-{id}")]).unwrap();
    }
    from + n
}

/// A writer thread committing one row per transaction until stopped. `committed` is the
/// highest id whose COMMIT returned.
pub struct Writer {
    pub stop: Arc<AtomicBool>,
    pub committed: Arc<AtomicU64>,
    pub handle: ThreadHandle<()>,
}

impl Writer {
    pub fn start(path: &Path, tag: &'static str, pause: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (s, c, p) = (stop.clone(), committed.clone(), path.to_path_buf());
        let handle = std::thread::spawn(move || {
            let conn = open_writer(&p);
            let mut id = 1;
            while !s.load(Ordering::Relaxed) {
                conn.execute(
                    "INSERT INTO t(id, v) VALUES (?1, ?2)",
                    rusqlite::params![id as i64, format!("{tag}-{id}-{}", "x".repeat(200))],
                )
                .unwrap();
                c.store(id, Ordering::SeqCst);
                id += 1;
                std::thread::sleep(pause);
            }
        });
        Writer { stop, committed, handle }
    }

    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("writer thread panicked");
        self.committed.load(Ordering::SeqCst)
    }
}

/// A running `replicate` task and its handles.
pub struct Running {
    pub shutdown: watch::Sender<bool>,
    pub requests: mpsc::Sender<Request>,
    pub metrics: Arc<DbMetrics>,
    pub task: JoinHandle<sluice_engine::Result<()>>,
}

impl Running {
    pub fn start(db: &Path, client: ReplicaClient) -> Running {
        Running::start_with(options(db), client)
    }

    /// Like [`Running::start`] with options of the test's choosing.
    pub fn start_with(opts: ReplicateOptions, client: ReplicaClient) -> Running {
        let db = opts.db_path.clone();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (requests, req_rx) = mpsc::channel(4);
        let metrics = Arc::new(DbMetrics { db: db.display().to_string(), ..DbMetrics::default() });
        let task = tokio::spawn(replicate(opts, client, metrics.clone(), shutdown_rx, req_rx));
        Running { shutdown, requests, metrics, task }
    }

    /// `Request::Sync`; `Err(Task)` if the replicator has already stopped.
    pub async fn sync(&self) -> sluice_engine::Result<TxId> {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Sync(tx)).await.is_err() {
            return Err(Error::Task("replicator stopped".into()));
        }
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Task("replicator dropped the sync request".into())),
            Err(_) => panic!("Request::Sync did not answer within 60 s"),
        }
    }

    /// Signals shutdown and returns the task's result.
    pub async fn stop(self) -> sluice_engine::Result<()> {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("replicate did not stop within 60 s")
            .expect("replicate task panicked")
    }
}

/// Polls `cond` every 20 ms for up to `timeout`.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Restores the latest state into `dir/name` through a fault-free client.
pub async fn restore_latest(client: &ReplicaClient, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let summary = restore::restore(client, &out, &RestoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("restore into {} failed: {e}", out.display()));
    eprintln!("restored {} at TXID {} from {} files", out.display(), summary.txid, summary.plan.len());
    out
}

/// `(id, v)` rows of the restored table, ordered by id.
pub fn rows(db: &Path) -> Vec<(u64, String)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut st = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Level-0 files must form one history: sorted by min TXID, each starts right after the
/// previous one ends (no gap, no overlap). Returns the files.
pub async fn assert_level0_contiguous(client: &ReplicaClient) -> Vec<FileInfo> {
    for level in 1..=9 {
        let f = client.list_level(level).await.unwrap();
        if !f.is_empty() {
            let r: Vec<String> = f.iter().map(|f| format!("{}-{}", f.min_txid, f.max_txid)).collect();
            eprintln!("level {level}: {}", r.join(" "));
        }
    }
    let files = client.list_level(0).await.unwrap();
    let ranges: Vec<String> = files.iter().map(|f| format!("{}-{}", f.min_txid, f.max_txid)).collect();
    eprintln!("level 0: {} files: {}", files.len(), ranges.join(" "));
    assert!(!files.is_empty(), "level 0 is empty");
    assert_eq!(files[0].min_txid, TxId(1), "level 0 does not start at TXID 1: {ranges:?}");
    for w in files.windows(2) {
        assert!(w[0].min_txid <= w[0].max_txid, "inverted range {}-{}", w[0].min_txid, w[0].max_txid);
        assert_eq!(
            w[1].min_txid.0,
            w[0].max_txid.0 + 1,
            "level 0 forks or has a gap between {}-{} and {}-{}: {ranges:?}",
            w[0].min_txid,
            w[0].max_txid,
            w[1].min_txid,
            w[1].max_txid
        );
    }
    files
}
