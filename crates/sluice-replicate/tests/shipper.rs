//! The WAL shipper against real SQLite: local L0 files applied in order always rebuild the
//! database exactly, across byte-limited syncs, checkpoints (ours and the application's) and
//! WAL restarts.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use sluice_engine::perms::Perms;
use sluice_engine::restore::apply::Image;
use sluice_engine::write::local::MetaDir;
use sluice_ltx::TxId;
use sluice_replicate::shipper::{Checkpoint, Shipper, ShipperOptions};
use sluice_storage::FileInfo;

fn opts(limit: u64) -> ShipperOptions {
    ShipperOptions { busy_timeout: Duration::from_secs(2), max_sync_wal_bytes: limit, resume: true }
}

fn app(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;").unwrap();
    c
}

/// Applies every local L0 file in order and compares the image with the database's content.
fn assert_local_chain_rebuilds(meta: &MetaDir, db: &Path, dir: &Path) {
    let files = meta.list_l0().unwrap();
    let out = dir.join("rebuilt.db");
    let _ = std::fs::remove_file(&out);
    let mut image = Image::new(File::create(&out).unwrap(), out.clone());
    let mut prev = 0;
    for (min, max) in &files {
        assert_eq!(min.0, prev + 1, "local L0 files must be contiguous: {files:?}");
        prev = max.0;
        let info = FileInfo { level: 0, min_txid: *min, max_txid: *max, size: 0, created_at: chrono::Utc::now() };
        image.apply(&info, File::open(meta.l0_path(*min, *max)).unwrap()).unwrap();
    }
    image.finish(true).unwrap();
    let want = sluice_testkit::hash::logical_sha256(db);
    assert_eq!(sluice_testkit::hash::logical_sha256(&out), want);
}

fn insert(c: &Connection, from: i64, n: i64) {
    let tx = c.unchecked_transaction().unwrap();
    for i in from..from + n {
        tx.execute("INSERT INTO t VALUES (?1, ?2)", (i, format!("{i:0>200}"))).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn byte_limited_syncs_split_the_backlog_without_losing_frames() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let c = app(&db);
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").unwrap();
    let meta_root = dir.path().join(".a.db-litestream");
    let mut s = Shipper::open(&db, meta_root.clone(), TxId(0), opts(64 << 10)).unwrap();
    s.sync_all().unwrap();
    for k in 0..20 {
        insert(&c, k * 100, 100);
    }
    s.sync_all().unwrap().unwrap();
    assert!(s.sync_all().unwrap().is_none(), "sync_all left frames behind");
    let meta = MetaDir::open(meta_root, Perms::of_db(&db).unwrap()).unwrap();
    let n = meta.list_l0().unwrap().len();
    assert!(n > 3, "the 64 KiB limit should split the backlog: {n} files");
    assert_local_chain_rebuilds(&meta, &db, dir.path());
}

#[test]
fn checkpoints_and_wal_restarts_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let c = app(&db);
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").unwrap();
    let meta_root = dir.path().join(".b.db-litestream");
    let mut s = Shipper::open(&db, meta_root.clone(), TxId(0), opts(0)).unwrap();
    s.sync_all().unwrap();
    let mut next = 0;
    for round in 0..6 {
        insert(&c, next, 150);
        next += 150;
        if round % 2 == 0 {
            // Our own checkpoint under the barrier; the next write restarts the WAL.
            let (ck, _) = s.checkpoint(round == 4).unwrap();
            assert!(matches!(ck, Checkpoint::Done { .. }));
        } else {
            // The application's checkpoint: it can only copy what our read lock allows, and
            // RESTART waits (up to its busy timeout) for our reader, then reports busy.
            s.sync_all().unwrap();
            c.busy_timeout(Duration::from_millis(50)).unwrap();
            c.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())).unwrap();
            c.busy_timeout(Duration::from_secs(5)).unwrap();
        }
        insert(&c, next, 50);
        next += 50;
        c.execute("DELETE FROM t WHERE id % 7 = ?1", [round]).unwrap();
        s.sync_all().unwrap();
    }
    let meta = MetaDir::open(meta_root, Perms::of_db(&db).unwrap()).unwrap();
    assert_local_chain_rebuilds(&meta, &db, dir.path());
}

/// A daemon killed between a checkpoint and its next local file resumes after the WAL
/// restart from its journal (no full image); one more restart behind its back, and it must
/// write a full image instead. Either way the local chain rebuilds the database.
#[test]
fn a_stop_after_a_checkpoint_resumes_only_across_one_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let c = app(&db);
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").unwrap();
    let meta_root = dir.path().join(".c.db-litestream");
    let mut s = Shipper::open(&db, meta_root.clone(), TxId(0), opts(0)).unwrap();
    assert!(s.sync_all().unwrap().unwrap().full);
    insert(&c, 0, 200);
    s.sync_all().unwrap();
    insert(&c, 200, 200);
    c.execute("UPDATE t SET v = 'x' WHERE id < 50", []).unwrap();
    // Frames read by the checkpoint stay in memory until the next sync, which never comes.
    let (ck, written) = s.checkpoint(false).unwrap();
    assert!(matches!(ck, Checkpoint::Done { .. }) && written.is_none());
    drop(s);
    insert(&c, 400, 100); // restarts the WAL
    let mut s = Shipper::open(&db, meta_root.clone(), TxId(0), opts(0)).unwrap();
    let resumed = s.sync_all().unwrap().unwrap();
    assert!(!resumed.full, "one restart after the journal's checkpoint: resume, no full image");
    let meta = MetaDir::open(meta_root.clone(), Perms::of_db(&db).unwrap()).unwrap();
    assert_local_chain_rebuilds(&meta, &db, dir.path());

    // Again, but the application checkpoints and restarts the WAL once more while stopped.
    insert(&c, 500, 200);
    s.sync_all().unwrap();
    insert(&c, 700, 100);
    assert!(matches!(s.checkpoint(false).unwrap().0, Checkpoint::Done { .. }));
    drop(s);
    insert(&c, 800, 100);
    c.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())).unwrap();
    insert(&c, 900, 100);
    let mut s = Shipper::open(&db, meta_root, TxId(0), opts(0)).unwrap();
    assert!(s.sync_all().unwrap().unwrap().full, "two restarts behind the journal: a full image");
    assert_local_chain_rebuilds(&meta, &db, dir.path());
}

/// Longer than the shipper waits before it trusts a database file's times.
const SETTLE: Duration = Duration::from_secs(4);

#[test]
fn a_restart_with_an_empty_wal_resumes_unless_the_database_changed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let wal = dir.path().join("q.db-wal");
    {
        let c = app(&db);
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").unwrap();
        insert(&c, 0, 50);
    } // The last connection closed: the WAL is checkpointed and deleted.
    let meta_root = dir.path().join(".q.db-litestream");
    let meta = MetaDir::open(meta_root.clone(), Perms::of_db(&db).unwrap()).unwrap();
    let mut s = Shipper::open(&db, meta_root.clone(), TxId(0), opts(0)).unwrap();
    assert!(s.sync_all().unwrap().unwrap().full, "no WAL and no history: a full image");
    // A file changed within the last seconds is not stamped (file times are coarse).
    std::thread::sleep(SETTLE);
    assert!(s.sync_all().unwrap().is_none());
    let at = s.position().unwrap().txid;
    drop(s);
    let mut s = Shipper::open(&db, meta_root.clone(), TxId(0), opts(0)).unwrap();
    assert!(s.sync_all().unwrap().is_none(), "an untouched database with an empty WAL needs no new image");
    assert_eq!(s.position().unwrap().txid, at);
    // Writes after the resume continue the chain.
    let c = app(&db);
    insert(&c, 50, 50);
    assert!(!s.sync_all().unwrap().unwrap().full);
    assert_local_chain_rebuilds(&meta, &db, dir.path());

    // Our TRUNCATE checkpoint empties the WAL: a restart after it resumes too.
    insert(&c, 100, 50);
    assert!(matches!(s.checkpoint(true).unwrap().0, Checkpoint::Done { .. }));
    s.sync_all().unwrap();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "TRUNCATE left frames");
    std::thread::sleep(SETTLE);
    assert!(s.sync_all().unwrap().is_none());
    let at = s.position().unwrap().txid;
    drop(s);
    let mut s = Shipper::open(&db, meta_root.clone(), TxId(0), opts(0)).unwrap();
    assert!(s.sync_all().unwrap().is_none(), "resumed after our own TRUNCATE");
    assert_eq!(s.position().unwrap().txid, at);
    assert_local_chain_rebuilds(&meta, &db, dir.path());

    // Written while stopped, and the WAL gone again with the application's last close: the
    // database file changed, so a full image.
    drop(s);
    insert(&c, 150, 10);
    drop(c);
    assert!(!wal.exists());
    let mut s = Shipper::open(&db, meta_root, TxId(0), opts(0)).unwrap();
    assert!(s.sync_all().unwrap().unwrap().full, "changed while stopped: a full image");
    assert_local_chain_rebuilds(&meta, &db, dir.path());
}
