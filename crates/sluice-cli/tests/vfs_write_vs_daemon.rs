//! A VFS writer (a Python process on the real extension, write mode) against a running
//! `sluice replicate` of the same `file://` replica: exactly one of them writes. The daemon
//! holds the replica's lease, so the VFS opens read-only (its writes fail with
//! `SQLITE_READONLY`, its log names the daemon), while the daemon's transactions keep arriving
//! in the replica (visible to the refused connection) as one chain of level-0 files. Once the
//! daemon stopped cleanly (lease released), a new VFS connection writes and continues that
//! chain.
//!
//! (In this crate because only its tests have the `sluice` binary; the other multi-writer tests
//! are in `crates/sluice-vfs/tests/vfs_write_writers.rs`.)

mod common;

use std::time::Duration;

use common::{Daemon, free_port, open_app, restore, sluice_ltx, wait_ready};
use sluice_testkit::process::wait_until;
use sluice_testkit::vfs_worker::{Answer, PATIENCE, VfsWorker as Worker};
use sluice_testkit::{hash, vfs};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// `count(*)` of `t` through connection `conn` of the worker.
#[track_caller]
fn count(w: &mut Worker, conn: &str) -> i64 {
    w.q(conn, "SELECT count(*) FROM t").parse().expect("count")
}

#[track_caller]
fn assert_readonly(result: Answer, what: &str) {
    match result {
        Err((name, msg)) => {
            assert_eq!(name, "SQLITE_READONLY", "{what}: {msg}");
            assert!(msg.contains("readonly"), "{what}: {msg}");
        }
        Ok(v) => panic!("{what}: the VFS wrote ({v:?}) to a replica the daemon holds"),
    }
}

/// The level-0 files form one chain from TXID 1; returns its last TXID.
#[track_caller]
fn assert_one_l0_chain(url: &str) -> u64 {
    let l0: Vec<(u64, u64)> = sluice_ltx(url).into_iter().filter(|f| f.level == 0).map(|f| (f.min, f.max)).collect();
    assert!(!l0.is_empty(), "no level-0 file in {url}");
    assert_eq!(l0[0].0, 1, "the level-0 chain does not start at TXID 1: {l0:x?}");
    for w in l0.windows(2) {
        assert_eq!(w[1].0, w[0].1 + 1, "level-0 files {:x?} then {:x?}: a gap, an overlap or a fork", w[0], w[1]);
    }
    l0[l0.len() - 1].1
}

fn insert_daemon_rows(app: &rusqlite::Connection, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        app.execute("INSERT INTO t(id, who, v) VALUES (?1, 'daemon', randomblob(200))", [id]).expect("app insert");
    }
}

#[test]
fn a_vfs_writer_is_read_only_while_sluice_replicate_holds_the_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("app.db");
    let url = format!("file://{}", dir.join("replica").display());
    let app = open_app(&db, Duration::from_secs(10));
    app.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT NOT NULL, v BLOB)").unwrap();
    insert_daemon_rows(&app, 1..=50);

    let port = free_port();
    let config = dir.join("sluice.yml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:{port}\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    \
             replica: {{url: \"{url}\", sync-interval: 200ms}}\n",
            db.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[], &dir.join("sluice.log"));
    wait_ready(&mut daemon, port);
    let daemon_pid = daemon.guard.id();

    // The VFS opens the replica in write mode: refused, read-only, the log names the daemon.
    let mut w = Worker::spawn("vfs-worker", dir);
    let uri = vfs::uri(
        "vfs.db",
        &url,
        &[("write", "1"), ("buffer", dir.join("vfs.buffer").to_str().unwrap()), ("poll", "200ms")],
    );
    w.open("c", &uri);
    assert!(!w.write_enabled("c"), "the VFS writes while the daemon holds the lease; log:\n{}", w.log_text());
    let log = w.log_text();
    assert!(
        log.contains("write mode refused")
            && log.contains("another sluice daemon writes this replica")
            && log.contains(&format!("pid {daemon_pid}"))
            && log.contains(&db.display().to_string()),
        "the VFS log does not name the daemon (pid {daemon_pid}, {}):\n{log}",
        db.display()
    );
    let seen = wait_until(PATIENCE, || count(&mut w, "c") == 50);
    assert!(seen, "the VFS never saw the daemon's first 50 rows; log:\n{}", w.log_text());
    assert_readonly(w.call(&["q", "c", "INSERT INTO t(id, who) VALUES (100000, 'vfs')"]), "INSERT through the VFS");

    // The daemon goes on: its rows keep arriving in the replica, seen by the refused connection.
    for batch in 0..10 {
        let from = 51 + batch * 25;
        insert_daemon_rows(&app, from..=from + 24);
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = wait_until(PATIENCE, || count(&mut w, "c") == 300);
    assert!(seen, "the daemon's rows did not reach the VFS reader; daemon log:\n{}", daemon.log_text());
    assert_readonly(w.call(&["q", "c", "INSERT INTO t(id, who) VALUES (100001, 'vfs')"]), "a later INSERT");
    // A new connection of the same process is refused too: the daemon still holds the lease.
    w.close("c");
    w.open("c", &uri);
    assert!(!w.write_enabled("c"), "a reopened VFS connection writes while the daemon runs");
    assert_readonly(w.call(&["q", "c", "DELETE FROM t"]), "DELETE through a reopened connection");
    assert_eq!(count(&mut w, "c"), 300);
    w.close("c");
    daemon.assert_running();
    let dlog = daemon.log_text();
    assert!(!dlog.contains("taken over") && !dlog.contains("ERROR"), "daemon log:\n{dlog}");

    // The daemon's history is one chain and holds every row it captured, none of the VFS's.
    daemon.stop_ok();
    let daemon_last = assert_one_l0_chain(&url);
    let restored = dir.join("restored-daemon.db");
    restore("sluice", &url, &restored, None);
    assert_eq!(hash::integrity_check(&restored), "ok");
    assert_eq!(hash::row_counts(&restored)["t"], 300);
    let r = rusqlite::Connection::open(&restored).unwrap();
    let vfs_rows: i64 = r.query_row("SELECT count(*) FROM t WHERE who <> 'daemon'", [], |x| x.get(0)).unwrap();
    assert_eq!(vfs_rows, 0);
    drop(r);

    // The daemon stopped cleanly and gave the lease back: a new VFS connection writes now,
    // on top of the daemon's history.
    w.open("c", &uri);
    assert!(w.write_enabled("c"), "the VFS is still refused after the daemon stopped; log:\n{}", w.log_text());
    assert_eq!(count(&mut w, "c"), 300);
    w.q("c", "INSERT INTO t(id, who) VALUES (100002, 'vfs')");
    let synced = w.sync("c");
    assert!(synced > daemon_last, "the VFS's sync {synced} is not past the daemon's {daemon_last}");
    w.close("c");
    w.exit();
    assert_eq!(assert_one_l0_chain(&url), synced, "the VFS continued the daemon's chain");
    let restored = dir.join("restored-vfs.db");
    restore("sluice", &url, &restored, None);
    assert_eq!(hash::integrity_check(&restored), "ok");
    assert_eq!(hash::row_counts(&restored)["t"], 301);
}
