//! A steady writer (back-to-back transactions, never idle) is synced while it writes, not
//! only when it pauses (Litestream's VFS skips a sync whenever a transaction is open), and a
//! replica written only by the VFS is compacted (L1 files) like a daemon-written one.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::file_url;
use rusqlite::{Connection, OpenFlags};
use sluice_testkit::vfs;

fn files(dir: &Path, level: u8) -> usize {
    std::fs::read_dir(dir.join("ltx").join(level.to_string())).map_or(0, |d| d.count())
}

#[test]
fn a_steady_writer_is_synced_while_it_writes_and_gets_l1_files() {
    let secs: u64 = std::env::var("SLUICE_TEST_STEADY_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let tmp = tempfile::tempdir().unwrap();
    let replica = tmp.path().join("replica");
    vfs::load(&vfs::debug_so());
    let buffer = tmp.path().join("steady.buffer");
    let u = vfs::uri(
        "steady.db",
        &file_url(&replica),
        &[("write", "1"), ("buffer", buffer.to_str().unwrap()), ("sync", "500ms"), ("levels", "2s")],
    );
    let c = Connection::open_with_flags(&u, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI).unwrap();
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)").unwrap();
    // Back-to-back transactions; between two of them the TXID the replica reached is noted
    // each time it changed. The writer is never idle, so every change is a sync made while
    // it was writing.
    let (mut txids, mut last) = (Vec::new(), String::new());
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0i64;
    while Instant::now() < end {
        n += 1;
        c.execute_batch(&format!("BEGIN; INSERT INTO t VALUES ({n}, randomblob(200)); COMMIT;")).unwrap();
        let txid: String = c.query_row("SELECT sluice_txid()", [], |r| r.get(0)).unwrap();
        if txid != last {
            txids.push(txid.clone());
            last = txid;
        }
    }
    assert!(txids.len() >= 3, "the replica moved only {} times during {secs} s of writing: {txids:?}", txids.len());
    // L1 compaction of a VFS-only replica (interval 2 s here).
    let deadline = Instant::now() + Duration::from_secs(60);
    while files(&replica, 1) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(files(&replica, 1) > 0, "no L1 file; L0: {}", files(&replica, 0));
    let count: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(count, n);
}
