//! Several writers on one replica, each a separate process on the real `.so` (Debian's Python
//! or the `sqlite3` shell):
//!
//! * two processes open the same replica in write mode at once (`file://` and moto S3):
//!   exactly one writes, the other's writes fail with `SQLITE_READONLY` and its log names the
//!   holder; once the first closes, a new connection in the second writes; the replica's
//!   level-0 files stay one chain (no fork) and a restore has both processes' rows;
//! * a writer killed with SIGKILL keeps the replica until its lease expires (`lease_ttl`),
//!   then another process takes over, with the killed writer's synced rows and one chain;
//! * the `sqlite3` shell writes a new replica through `.load` and a URI `.open`.
//!
//! (A VFS writer against a running `sluice replicate` is in
//! `crates/sluice-cli/tests/vfs_write_vs_daemon.rs`: only that crate's tests have the binary.)

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_one_l0_chain, file_url, restore};
use rusqlite::Connection;
use sluice_engine::restore::Target;
use sluice_testkit::process::{output_with_timeout, wait_until};
use sluice_testkit::{s3, vfs};

use sluice_testkit::vfs_worker::{Answer, PATIENCE, VfsWorker as Worker};

/// Inserts rows `ids` as `who` in one statement (a transaction of its own).
#[track_caller]
fn insert(w: &mut Worker, conn: &str, who: &str, ids: std::ops::RangeInclusive<u32>) -> Answer {
    let values: Vec<String> = ids.map(|i| format!("({i}, '{who}', randomblob(300))")).collect();
    w.call(&["q", conn, &format!("INSERT INTO t(id, who, v) VALUES {}", values.join(", "))])
}

/// The write-mode URI of `app.db` on `replica` with the buffer `buffer`.
fn write_uri(replica: &str, buffer: &Path, extra: &[(&str, &str)]) -> String {
    let mut params = vec![("write", "1"), ("buffer", buffer.to_str().expect("utf-8 path")), ("poll", "200ms")];
    params.extend_from_slice(extra);
    vfs::uri("app.db", replica, &params)
}

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT NOT NULL, v BLOB)";

/// `who -> count(*)` of `t`, from `sluice restore`'s output of `url`, whose integrity is checked.
fn restored_rows(url: &str, dir: &Path) -> Vec<(String, i64)> {
    let db = restore(url, Target::Latest, dir);
    let c = Connection::open(&db).expect("open restored");
    assert_eq!(vfs::integrity_check(&c).expect("integrity_check"), "ok", "restore of {url}");
    let mut stmt = c.prepare("SELECT who, count(*) FROM t GROUP BY who ORDER BY who").expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").collect::<Result<_, _>>().expect("rows")
}

/// Asserts that the failure of a write on a connection another process's lease keeps
/// read-only is `SQLITE_READONLY`.
#[track_caller]
fn assert_readonly(result: Result<String, (String, String)>, what: &str) {
    match result {
        Err((name, msg)) => {
            assert_eq!(name, "SQLITE_READONLY", "{what}: {msg}");
            assert!(msg.contains("readonly"), "{what}: {msg}");
        }
        Ok(v) => panic!("{what}: the write succeeded ({v:?}) on a replica another process holds"),
    }
}

/// The log of a refused writer names the process that holds the lease.
#[track_caller]
fn assert_log_names_holder(refused: &Worker, holder_pid: u32) {
    let log = refused.log_text();
    assert!(
        log.contains("write mode refused")
            && log.contains("another sluice daemon writes this replica")
            && log.contains(&format!("pid {holder_pid}")),
        "the log of {} does not name the holder (pid {holder_pid}):\n{log}",
        refused.name
    );
}

/// Two processes open `url` in write mode at the same moment: one writes, the other is
/// read-only until the first closes; the history stays one chain.
fn two_processes_one_writer(url: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Worker::spawn("a", tmp.path());
    let mut b = Worker::spawn("b", tmp.path());
    let uri_a = write_uri(url, &tmp.path().join("a.buffer"), &[]);
    let uri_b = write_uri(url, &tmp.path().join("b.buffer"), &[]);
    // Both opens in flight at once: they race for the lease.
    a.send(&["open", "c", &uri_a]);
    b.send(&["open", "c", &uri_b]);
    if let Err(e) = a.answer() {
        panic!("open a: {e:?}; log:\n{}", a.log_text());
    }
    if let Err(e) = b.answer() {
        panic!("open b: {e:?}; log:\n{}", b.log_text());
    }
    let (ea, eb) = (a.write_enabled("c"), b.write_enabled("c"));
    assert!(ea != eb, "exactly one process writes: a={ea} b={eb}\na:\n{}\nb:\n{}", a.log_text(), b.log_text());
    let (mut w, (mut r, uri_r)) = if ea { (a, (b, uri_b)) } else { (b, (a, uri_a)) };
    eprintln!("writer: {} (pid {}), refused: {} (pid {})", w.name, w.pid, r.name, r.pid);
    assert_log_names_holder(&r, w.pid);

    // The writer commits and syncs; the refused process sees its rows (read-only view).
    w.q("c", SCHEMA);
    let w_who = w.name.clone();
    insert(&mut w, "c", &w_who, 1..=20).unwrap_or_else(|e| panic!("writer insert: {e:?}"));
    let first_sync = w.sync("c");
    assert!(first_sync >= 1);
    let seen = wait_until(PATIENCE, || matches!(r.call(&["q", "c", "SELECT count(*) FROM t"]), Ok(n) if n == "20"));
    assert!(seen, "the refused process never saw the writer's 20 rows; log:\n{}", r.log_text());
    let r_who = r.name.clone();
    assert_readonly(insert(&mut r, "c", &r_who, 21..=21), "INSERT on the refused connection");
    assert_readonly(r.call(&["q", "c", "CREATE TABLE other (x)"]), "CREATE TABLE on the refused connection");
    assert!(!r.write_enabled("c"));
    // The writer goes on meanwhile.
    insert(&mut w, "c", &w_who, 22..=30).unwrap_or_else(|e| panic!("writer insert: {e:?}"));

    // The writer closes cleanly (final sync, lease released); the other process closes its
    // read-only connection and reopens: the new connection writes.
    w.close("c");
    w.exit();
    r.close("c");
    r.open_until_writing("c", &uri_r);
    let n = r.q("c", "SELECT count(*) FROM t");
    assert_eq!(n, "29", "the second writer starts from everything the first committed");
    insert(&mut r, "c", &r_who, 31..=50)
        .unwrap_or_else(|e| panic!("second writer insert: {e:?}; log:\n{}", r.log_text()));
    let last = r.sync("c");
    assert!(last > first_sync);
    r.close("c");
    r.exit();

    let mut want = vec![(w_who, 29), (r_who, 20)];
    want.sort();
    assert_eq!(restored_rows(url, tmp.path()), want, "sluice restore has both processes' rows");
    assert_eq!(assert_one_l0_chain(url), last, "the level-0 chain ends at the last sync");
}

#[test]
fn two_processes_on_a_file_replica_one_writes_then_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    two_processes_one_writer(&file_url(&tmp.path().join("replica")));
}

#[test]
fn two_processes_on_an_s3_replica_one_writes_then_the_other() {
    let bucket = s3::new_bucket("vfs-writers");
    two_processes_one_writer(&s3::s3_url(&bucket, "app"));
}

#[test]
fn a_killed_writer_keeps_the_replica_until_its_lease_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("replica"));
    // A never syncs on its own (1 h): only sluice_sync() uploads.
    let uri_a = write_uri(&url, &tmp.path().join("a.buffer"), &[("lease_ttl", "10s"), ("sync", "1h")]);
    let uri_b = write_uri(&url, &tmp.path().join("b.buffer"), &[("lease_ttl", "10s"), ("sync", "200ms")]);
    // B is started first, so that its open follows A's death at once.
    let mut b = Worker::spawn("b", tmp.path());
    let mut a = Worker::spawn("a", tmp.path());
    let a_opened = std::time::Instant::now();
    a.open("c", &uri_a);
    assert!(a.write_enabled("c"), "A writes a new replica; log:\n{}", a.log_text());
    a.q("c", SCHEMA);
    insert(&mut a, "c", "a", 1..=10).unwrap_or_else(|e| panic!("A insert: {e:?}"));
    let synced = a.sync("c");
    // Committed into A's buffer but never synced: must not reach the replica.
    insert(&mut a, "c", "a-unsynced", 11..=15).unwrap_or_else(|e| panic!("A insert: {e:?}"));
    let a_pid = a.pid;
    let status = a.guard.kill(); // SIGKILL: no final sync, the lease stays
    assert!(!status.success());
    drop(a);

    // B, at once: A's lease is live, B is read-only and sees A's synced rows.
    b.open("c", &uri_b);
    // (A's lease was taken at its open, 10 s before it expires; printed to tell a starved
    // machine from a bug should this fail.)
    eprintln!("B opened {:?} after A did", a_opened.elapsed());
    assert!(!b.write_enabled("c"), "B wrote while A's lease was live; log:\n{}", b.log_text());
    assert_log_names_holder(&b, a_pid);
    assert_eq!(b.q("c", "SELECT who, count(*) FROM t GROUP BY who ORDER BY who"), "a,10");
    assert_readonly(insert(&mut b, "c", "b", 100..=100), "B's INSERT under A's lease");
    b.close("c");

    // After the TTL a fresh open writes, on top of A's synced rows.
    b.open_until_writing("c", &uri_b);
    assert_eq!(b.q("c", "SELECT who, count(*) FROM t GROUP BY who ORDER BY who"), "a,10");
    insert(&mut b, "c", "b", 100..=119).unwrap_or_else(|e| panic!("B insert: {e:?}; log:\n{}", b.log_text()));
    let last = b.sync("c");
    assert!(last > synced, "B's sync {last} after A's {synced}");
    b.close("c");
    b.exit();

    assert_eq!(restored_rows(&url, tmp.path()), vec![("a".to_string(), 10), ("b".to_string(), 20)]);
    assert_eq!(assert_one_l0_chain(&url), last, "the level-0 chain ends at B's last sync");

    // A restarts on its buffer: the replica moved past it (B's writes), so the commits A never
    // synced are discarded with a warning, not replayed on top of B's history.
    let mut a = Worker::spawn("a-restarted", tmp.path());
    a.open("c", &uri_a);
    assert!(a.write_enabled("c"), "A writes again once B closed; log:\n{}", a.log_text());
    assert_eq!(a.q("c", "SELECT who, count(*) FROM t GROUP BY who ORDER BY who"), "a,10;b,20");
    let log = a.log_text();
    assert!(log.contains("discarding its unsynced transactions") && log.contains("a.buffer"), "{log}");
    a.close("c");
    a.exit();
    assert_eq!(restored_rows(&url, tmp.path()), vec![("a".to_string(), 10), ("b".to_string(), 20)]);
    assert_eq!(assert_one_l0_chain(&url), last, "a restart with nothing to sync adds no TXID");
}

#[test]
fn the_sqlite3_shell_writes_a_new_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("replica"));
    let so = vfs::debug_so();
    let uri =
        vfs::uri("app.db", &url, &[("write", "1"), ("buffer", tmp.path().join("shell.buffer").to_str().unwrap())]);
    let script = format!(
        ".bail on\n.load {so}\n.open '{uri}'\nPRAGMA sluice_write_enabled;\n\
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);\n\
         INSERT INTO t(v) VALUES ('tea'), ('coffee'), ('water');\n\
         BEGIN;\n\
         WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 500) \
         INSERT INTO t(v) SELECT 'row ' || x FROM s;\n\
         COMMIT;\n\
         SELECT count(*) FROM t;\nSELECT sluice_sync();\n.quit\n",
        so = so.with_extension("").display()
    );
    let script_path = tmp.path().join("script.sql");
    std::fs::write(&script_path, &script).unwrap();
    let out = output_with_timeout(
        Command::new("/usr/bin/sqlite3").arg(":memory:").arg(format!(".read {}", script_path.display())),
        PATIENCE,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "sqlite3 failed ({:?})\nscript:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(lines[0], "1", "PRAGMA sluice_write_enabled");
    assert_eq!(lines[1], "503");
    assert_eq!(lines[2].len(), 16, "sluice_sync() printed {:?}", lines[2]);
    let txid = u64::from_str_radix(lines[2], 16).unwrap();

    let db = restore(&url, Target::Latest, tmp.path());
    let c = Connection::open(&db).unwrap();
    assert_eq!(vfs::integrity_check(&c).unwrap(), "ok");
    let (n, tea): (i64, String) = c
        .query_row("SELECT count(*), (SELECT v FROM t WHERE id = 1) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((n, tea.as_str()), (503, "tea"));
    // The shell quit cleanly: the close synced nothing new after sluice_sync().
    assert_eq!(assert_one_l0_chain(&url), txid);
}
