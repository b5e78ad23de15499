//! While the daemon runs, its read lock must keep the application from restarting the WAL
//! over frames it has not captured. With Sluice's own checkpoints disabled, an application
//! whose auto-checkpoints run constantly must therefore never see the WAL restart.
//!
//! Regression test: the daemon once opened and closed the `-shm` file to read the WAL index;
//! closing any descriptor drops all of a process's POSIX locks on that file, which silently
//! released SQLite's read lock and let the WAL restart over uncaptured frames.

use std::sync::Arc;
use std::time::Duration;

use sluice_engine::write::compaction::Retention;
use sluice_engine::write::metrics::DbMetrics;
use sluice_replicate::{ReplicateOptions, replicate};
use sluice_storage::{ReplicaClient, StoreKind};
use tokio::sync::{mpsc, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_never_restarts_under_the_daemons_read_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    rusqlite::Connection::open(&db).unwrap().execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v TEXT);").unwrap();
    let opts = ReplicateOptions {
        db_path: db.clone(),
        meta_dir: dir.path().join(".app.db-litestream"),
        sync_interval: Duration::from_millis(100),
        monitor_interval: Duration::from_millis(50),
        busy_timeout: Duration::from_secs(1),
        checkpoint_pages: u64::MAX, // Sluice never checkpoints in this test
        hard_limit_pages: u64::MAX,
        checkpoint_interval: Duration::ZERO,
        max_sync_wal_bytes: 64 << 20,
        levels: vec![Duration::from_secs(3600)],
        snapshot_interval: Duration::from_secs(3600),
        retention: Retention {
            enabled: false,
            snapshot_retention: Duration::from_secs(3600),
            l0_retention: Duration::ZERO,
        },
        shutdown_sync_timeout: Duration::from_secs(10),
        stall_timeout: Duration::from_secs(30),
        lease_ttl: Duration::from_secs(600),
        max_pending_size: 0,
        events: sluice_replicate::fsevents::FsEvents::start(),
        limits: Default::default(),
        auto_recover: false,
    };
    let client = ReplicaClient::new(Arc::new(object_store::memory::InMemory::new()), StoreKind::File, "r");
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_req_tx, req_rx) = mpsc::channel(1);
    let metrics = Arc::new(DbMetrics::default());
    let task = tokio::spawn(replicate(opts, client, metrics.clone(), stop_rx, req_rx));
    // Wait until the daemon captured the initial state (it holds its read lock from then on).
    for _ in 0..3000 {
        if metrics.local_txid.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(metrics.local_txid.load(std::sync::atomic::Ordering::Relaxed) > 0, "daemon never captured");
    // The application runs in another process: POSIX locks only guard against other
    // processes, and an in-process writer would not notice a released lock.
    let script = r#"
import sqlite3, sys
path = sys.argv[1]
def salt():
    with open(path + "-wal", "rb") as f:
        return f.read(20)[16:20]
c = sqlite3.connect(path, isolation_level=None, timeout=10)
c.execute("PRAGMA synchronous=NORMAL"); c.execute("PRAGMA wal_autocheckpoint=100")
c.execute("INSERT INTO t VALUES ('first')")  # the first write may start a fresh WAL header
restarts, last = 0, salt()
for i in range(3000):
    c.execute("INSERT INTO t VALUES (?)", ("%0300d" % i,))
    now = salt()
    if now != last:
        restarts, last = restarts + 1, now
print(restarts)
"#;
    let db2 = db.clone();
    let app = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("/usr/bin/python3").arg("-c").arg(script).arg(&db2).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap()
    });
    let restarts = app.await.unwrap();
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(restarts, 0, "the WAL restarted {restarts} times while the daemon held its read lock");
}
