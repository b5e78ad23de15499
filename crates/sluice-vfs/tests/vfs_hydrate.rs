//! Hydration through the real extension (the debug `.so` loaded into rusqlite's bundled SQLite,
//! and into Debian's Python for a second process), against `sluice restore` of the same replica
//! at the same TXID:
//!
//! * fixtures (basic, 64 KiB pages, shrink; file:// and moto S3) read as their restore while
//!   the local copy fills and after `sluice_hydration_progress()` reaches 100, on the open
//!   connection and on new ones; time travel to every manifest TXID still reads that TXID;
//! * 8 threads, each with its own connection, read across the cutover and across new files
//!   the poller finds afterwards (growing and shrinking): every transaction reads exactly the
//!   restore of the TXID it reports;
//! * while the hydration file cannot be installed, reads come from the replica (progress stays
//!   below 100), and hydration completes once it can;
//! * a kept file (`hydration_path`, `SLUICE_HYDRATION_PATH`) gets its `-sluice-meta` record at
//!   the last close, is a database equal to the restore, is reused (same inode) by the next
//!   open in another process and in this one, and is refused to a second process while held;
//! * write mode with hydration: writes made during and after hydration are read back on the
//!   writing and another connection, after the cutover, after reopening, and in
//!   `sluice restore` after `sluice_sync()`;
//! * without hydration the progress is -1.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Content, content_of, content_of_file, file_url, restore};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use sluice_engine::restore::Target;
use sluice_ltx::TxId;
use sluice_testkit::fixtures::{copy_replica_to, format_txid, load_manifest, replica_dir};
use sluice_testkit::process::{output_with_timeout, wait_until};
use sluice_testkit::proxy::Proxy;
use sluice_testkit::{peer, s3, vfs};

/// Generous: hydration of a fixture takes milliseconds, retries after a failure up to 16 s.
const DEADLINE: Duration = Duration::from_secs(90);

/// `SELECT sluice_hydration_progress()`.
fn progress(c: &Connection) -> i64 {
    c.query_row("SELECT sluice_hydration_progress()", [], |r| r.get(0)).expect("sluice_hydration_progress()")
}

/// `PRAGMA sluice_hydration_progress` (PRAGMA answers are text).
fn pragma_progress(c: &Connection) -> i64 {
    let v: String =
        c.query_row("PRAGMA sluice_hydration_progress", [], |r| r.get(0)).expect("PRAGMA sluice_hydration_progress");
    v.parse().unwrap_or_else(|e| panic!("PRAGMA sluice_hydration_progress = {v:?}: {e}"))
}

fn wait_hydrated(c: &Connection, what: &str) {
    let done = wait_until(DEADLINE, || progress(c) == 100);
    assert!(done, "{what}: hydration never completed (progress {})", progress(c));
    assert_eq!(pragma_progress(c), 100, "{what}: the PRAGMA agrees");
}

fn txid_of(c: &Connection) -> u64 {
    let hex = vfs::txid(c).expect("sluice_txid()");
    u64::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("sluice_txid() = {hex:?}: {e}"))
}

/// The content of `url` as `sluice restore --txid` writes it.
fn restored_at(url: &str, txid: u64, dir: &Path) -> Content {
    content_of_file(&restore(url, Target::Txid(TxId(txid)), dir))
}

/// One read transaction: its content and the TXID it read.
fn read_txn(c: &Connection) -> anyhow::Result<(u64, Content, i64)> {
    c.execute_batch("BEGIN")?;
    let out = content_of(c).map(|content| (txid_of(c), content, progress(c)));
    c.execute_batch("COMMIT")?;
    out
}

fn open(url: &str, params: &[(&str, &str)]) -> Connection {
    vfs::open(url, params).unwrap_or_else(|e| panic!("open {url} {params:?}: {e:#}"))
}

fn copy_file(from: &Path, to: &Path, rel: &str) {
    std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
    std::fs::copy(from.join(rel), to.join(rel)).unwrap_or_else(|e| panic!("copy {rel}: {e}"));
}

fn l0(t: u64) -> String {
    format!("ltx/0/{t:016x}-{t:016x}.ltx")
}

/// `<path>-sluice-<what>`: the hydration file's sidecars.
fn sidecar(path: &Path, what: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!("-sluice-{what}"));
    PathBuf::from(s)
}

fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// True once no process holds the kept file's lock (the last close released it).
fn lock_is_free(path: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(sidecar(path, "lock")) else { return true };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            true
        }
        Err(_) => false,
    }
}

/// Runs a Python script with the debug `.so` as `argv[1]` (Debian's Python, from the venv).
fn python(script: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let so = vfs::debug_so();
    let mut cmd = peer::python_command();
    cmd.arg("-c").arg(script).arg(so.with_extension("")).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output_with_timeout(&mut cmd, Duration::from_secs(180));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Fixtures before and after the cutover
// ---------------------------------------------------------------------------------------------

/// Opens `url` hydrated, reads at once (the copy is usually still filling) and after the
/// cutover, on the same and on a new connection, then with the replica unreachable (`storage`
/// switches it off and on), and travels to every manifest TXID. No page cache (`cache_size=1`):
/// a page read after the cutover is local or fails.
fn check_fixture_hydrated(name: &str, url: &str, tmp: &Path, storage: &mut dyn FnMut(bool)) {
    let params = [("hydration", "1"), ("poll", "100ms"), ("cache_size", "1")];
    let conn = open(url, &params);
    let first_progress = progress(&conn);
    assert!((0..=100).contains(&first_progress), "{name}: progress {first_progress}");
    let (txid, during, _) = read_txn(&conn).unwrap_or_else(|e| panic!("{name}: first read: {e:#}"));
    let manifest = load_manifest(name);
    assert_eq!(txid, manifest.final_txid(), "{name}: the latest TXID");
    let expected = restored_at(url, txid, tmp);
    assert_eq!(expected.integrity, "ok", "{name}");
    assert_eq!(during, expected, "{name}: read at progress {first_progress} vs sluice restore");

    wait_hydrated(&conn, name);
    let (txid_after, after, p) = read_txn(&conn).unwrap();
    assert_eq!((txid_after, p), (txid, 100), "{name}");
    assert_eq!(after, expected, "{name}: after the cutover, the connection open throughout");
    let fresh = open(url, &params);
    assert_eq!(progress(&fresh), 100, "{name}: a new connection shares the hydrated replica");
    assert_eq!(content_of(&fresh).unwrap(), expected, "{name}: after the cutover, a new connection");
    let size: i64 = fresh.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    assert_eq!(Some(size as u32), manifest.latest_restore().result.as_ref().unwrap().page_count, "{name}");
    assert_eq!(
        expected.logical_sha256,
        manifest.latest_restore().result.as_ref().unwrap().logical_sha256,
        "{name}: sluice restore vs litestream restore"
    );

    // Reads of the latest state are local now: a new connection reads everything while the
    // replica is unreachable.
    storage(false);
    let offline = vfs::open(url, &params).and_then(|c| Ok((content_of(&c)?, progress(&c))));
    storage(true);
    let (seen, p) = offline.unwrap_or_else(|e| panic!("{name}: read with the replica unreachable: {e:#}"));
    assert_eq!(seen, expected, "{name}: read with the replica unreachable");
    assert_eq!(p, 100, "{name}");

    // Older views than the local copy's are read from the replica, never from the copy.
    let mut travelled = 0;
    for case in manifest.restores.iter().filter(|c| c.succeeded() && c.txid_arg().is_some()) {
        let t = case.txid_arg().unwrap();
        fresh.execute_batch(&format!("PRAGMA sluice_time = '{}'", format_txid(t))).unwrap();
        let seen = content_of(&fresh).unwrap();
        assert_eq!(txid_of(&fresh), t, "{name}");
        assert_eq!(seen.logical_sha256, case.result.as_ref().unwrap().logical_sha256, "{name}: TXID {t}");
        assert_eq!(seen.integrity, "ok", "{name}: TXID {t}");
        travelled += 1;
    }
    fresh.execute_batch("PRAGMA sluice_time = 'latest'").unwrap();
    assert_eq!(content_of(&fresh).unwrap(), expected, "{name}: back to the latest state");
    assert_eq!(progress(&fresh), 100, "{name}: time travel does not undo the hydration");
    eprintln!("{name}: first read at progress {first_progress}, {travelled} TXIDs travelled to");
}

#[test]
fn fixtures_read_as_their_restore_during_and_after_hydration() {
    for name in ["basic", "pagesize-65536", "shrink"] {
        let tmp = tempfile::tempdir().unwrap();
        let url = file_url(&copy_replica_to(name, tmp.path().join("replica")));
        let (dir, away) = (tmp.path().join("replica"), tmp.path().join("replica-away"));
        let mut storage = |up: bool| {
            let (from, to) = if up { (&away, &dir) } else { (&dir, &away) };
            std::fs::rename(from, to).unwrap();
        };
        check_fixture_hydrated(name, &url, tmp.path(), &mut storage);
    }
    // On S3, behind a proxy that can be switched off.
    let bucket = s3::new_bucket("vfs-hydrate");
    s3::upload_replica(&replica_dir("pagesize-65536"), &bucket, "db");
    let upstream = s3::endpoint().trim_start_matches("http://").to_string();
    let mut proxy = Proxy::start(&upstream).expect("start proxy");
    let url = format!("s3://{bucket}/db?endpoint={}&region={}&forcePathStyle=true", proxy.endpoint(), s3::REGION);
    let tmp = tempfile::tempdir().unwrap();
    let mut storage = |up: bool| {
        if up {
            proxy.up().expect("proxy up");
        } else {
            proxy.down();
        }
    };
    check_fixture_hydrated("pagesize-65536", &url, tmp.path(), &mut storage);
}

// ---------------------------------------------------------------------------------------------
// 2. Eight connections across the cutover and across new files
// ---------------------------------------------------------------------------------------------

/// `fixture`'s replica with its snapshot and level-0 files up to `upto` in `live`; then files
/// `upto + 1 ..= final` are added one by one after the cutover while 8 connections read.
fn readers_across_the_cutover(fixture: &'static str, upto: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let full = copy_replica_to(fixture, tmp.path().join("full"));
    let live = tmp.path().join("live");
    let snapshot = "ltx/9/0000000000000001-0000000000000001.ltx";
    copy_file(&full, &live, snapshot);
    for t in 1..=upto {
        copy_file(&full, &live, &l0(t));
    }
    let last = load_manifest(fixture).final_txid();
    let full_url = file_url(&full);
    let expected: Arc<BTreeMap<u64, Content>> =
        Arc::new((upto..=last).map(|t| (t, restored_at(&full_url, t, tmp.path()))).collect());
    let url = file_url(&live);
    let params = [("hydration", "1"), ("poll", "100ms")];

    let stop = Arc::new(AtomicBool::new(false));
    let at_last = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let (url, expected, stop, at_last) = (url.clone(), expected.clone(), stop.clone(), at_last.clone());
            std::thread::spawn(move || {
                let c = open(&url, &params);
                // (TXID, progress) of each transaction checked.
                let mut seen = Vec::new();
                let mut counted_last = false;
                while !stop.load(Ordering::Relaxed) {
                    let (txid, content, p) =
                        read_txn(&c).unwrap_or_else(|e| panic!("{fixture} reader {i}: read failed: {e:#}"));
                    let want = expected.get(&txid).unwrap_or_else(|| panic!("{fixture} reader {i}: TXID {txid}?"));
                    assert_eq!(&content, want, "{fixture} reader {i}: TXID {txid} at progress {p}");
                    seen.push((txid, p));
                    if txid == last && p == 100 && !counted_last {
                        counted_last = true;
                        at_last.fetch_add(1, Ordering::SeqCst);
                    }
                }
                seen
            })
        })
        .collect();

    let main = open(&url, &params);
    wait_hydrated(&main, fixture);
    for t in upto + 1..=last {
        copy_file(&full, &live, &l0(t));
        assert!(wait_until(DEADLINE, || txid_of(&main) == t), "{fixture}: the poller never saw TXID {t}");
        assert_eq!(content_of(&main).unwrap(), expected[&t], "{fixture}: TXID {t} on the main connection");
        assert_eq!(progress(&main), 100, "{fixture}: TXID {t}");
    }
    // Every reader reaches the last TXID after the cutover (or failed: then joining says why).
    let all = wait_until(DEADLINE, || at_last.load(Ordering::SeqCst) == 8 || readers.iter().any(|r| r.is_finished()));
    stop.store(true, Ordering::Relaxed);
    let mut checks = 0;
    let mut before_cutover = 0;
    let mut txids = std::collections::BTreeSet::new();
    for r in readers {
        let seen = r.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        checks += seen.len();
        before_cutover += seen.iter().filter(|(_, p)| *p < 100).count();
        txids.extend(seen.iter().map(|(t, _)| *t));
    }
    assert!(all, "{fixture}: only {} of 8 readers saw TXID {last} hydrated", at_last.load(Ordering::SeqCst));
    assert_eq!(txids.last(), Some(&last), "{fixture}");
    eprintln!(
        "{fixture}: {checks} transactions checked by 8 connections ({before_cutover} before the cutover), TXIDs {txids:?}"
    );
}

#[test]
fn eight_connections_read_one_restored_txid_per_transaction_across_the_cutover() {
    readers_across_the_cutover("basic", 3);
    // TXID 4 shrinks the database from 274 to 32 pages.
    readers_across_the_cutover("shrink", 3);
}

// ---------------------------------------------------------------------------------------------
// 3. Reads while the copy cannot be completed
// ---------------------------------------------------------------------------------------------

#[test]
fn reads_come_from_the_replica_while_the_hydration_file_cannot_be_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&copy_replica_to("basic", tmp.path().join("replica")));
    let expected = restored_at(&url, load_manifest("basic").final_txid(), tmp.path());
    // A directory where the kept file should go: every fill fails when it renames into place.
    let kept = tmp.path().join("blocked.db");
    std::fs::create_dir(&kept).unwrap();
    std::fs::write(kept.join("occupant"), b"x").unwrap();
    let params = [("hydration_path", kept.to_str().unwrap()), ("poll", "100ms")];
    let conn = open(&url, &params);
    assert!(wait_until(DEADLINE, || progress(&conn) > 0), "the fill never started");
    for round in 0..5 {
        let (_, seen, p) = read_txn(&conn).unwrap();
        assert!((0..100).contains(&p), "round {round}: progress {p} while the file cannot be installed");
        assert_eq!(seen, expected, "round {round}: read from the replica during hydration");
        let fresh = open(&url, &params);
        assert_eq!(content_of(&fresh).unwrap(), expected, "round {round}: a new connection");
        assert!(pragma_progress(&fresh) < 100, "round {round}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_dir_all(&kept).unwrap();
    wait_hydrated(&conn, "once the path is free");
    assert!(kept.is_file(), "the hydration file is in place");
    assert_eq!(read_txn(&conn).unwrap().1, expected, "after the cutover");
    assert_eq!(content_of(&open(&url, &params)).unwrap(), expected, "a new connection after the cutover");
}

// ---------------------------------------------------------------------------------------------
// 4. Kept files
// ---------------------------------------------------------------------------------------------

/// Tries to open the replica with the kept file in a second process.
const SECOND_PROCESS: &str = r#"
import sqlite3, sys
b = sqlite3.connect(":memory:"); b.enable_load_extension(True); b.load_extension(sys.argv[1])
try:
    c = sqlite3.connect(sys.argv[2], uri=True)
    print("opened", c.execute("SELECT sluice_hydration_progress()").fetchone()[0])
except sqlite3.Error as e:
    print("refused", type(e).__name__, e.sqlite_errorname)
"#;

/// Opens the replica configured by the environment (SLUICE_REPLICA_URL, SLUICE_HYDRATION_PATH),
/// waits for hydration, prints what it reads, closes and waits for the kept file's record.
const ENV_PROCESS: &str = r#"
import os, sqlite3, sys, time
b = sqlite3.connect(":memory:"); b.enable_load_extension(True); b.load_extension(sys.argv[1])
c = sqlite3.connect("file:app.db?vfs=sluice", uri=True)
deadline = time.time() + 90
while c.execute("SELECT sluice_hydration_progress()").fetchone()[0] != 100 and time.time() < deadline:
    time.sleep(0.02)
print("progress", c.execute("PRAGMA sluice_hydration_progress").fetchone()[0])
print("integrity", c.execute("PRAGMA integrity_check").fetchone()[0])
print("txid", c.execute("SELECT sluice_txid()").fetchone()[0])
tables = [r[0] for r in c.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
for t in tables:
    print("rows", t, c.execute('SELECT count(*) FROM "%s"' % t).fetchone()[0])
print("meta-while-open", os.path.exists(sys.argv[2] + "-sluice-meta"))
c.close()
deadline = time.time() + 90
while not os.path.exists(sys.argv[2] + "-sluice-meta") and time.time() < deadline:
    time.sleep(0.02)
print("meta-after-close", os.path.exists(sys.argv[2] + "-sluice-meta"))
"#;

#[test]
fn a_kept_file_is_recorded_at_close_reused_at_reopen_and_refused_to_a_second_process() {
    let name = "pagesize-65536";
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&copy_replica_to(name, tmp.path().join("replica")));
    let final_txid = load_manifest(name).final_txid();
    let expected = restored_at(&url, final_txid, tmp.path());
    let kept = tmp.path().join("kept").join("app-hydrated.db");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    let kept_s = kept.to_str().unwrap().to_string();
    let params = [("hydration_path", kept_s.as_str()), ("poll", "100ms")];
    let meta = sidecar(&kept, "meta");

    // First open: filled, read, refused to a second process while held.
    let a = open(&url, &params);
    let b = open(&url, &params);
    wait_hydrated(&a, "first open");
    assert_eq!(progress(&b), 100);
    assert_eq!(content_of(&a).unwrap(), expected, "first open");
    assert_eq!(content_of(&b).unwrap(), expected, "first open, second connection");
    assert!(kept.is_file() && !meta.exists(), "no record while open");
    let (ok, stdout, stderr) = python(SECOND_PROCESS, &[&vfs::uri("app.db", &url, &params)], &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "refused OperationalError SQLITE_CANTOPEN", "{stderr}");
    assert!(
        stderr.contains(&kept_s) && stderr.contains("in use"),
        "the error names the hydration file:\nstdout: {stdout}\nstderr: {stderr}"
    );
    // The holder is unaffected.
    assert_eq!(content_of(&a).unwrap(), expected, "after the refusal");
    drop((a, b));

    // The record at the last close; the file is the database.
    assert!(wait_until(DEADLINE, || meta.is_file() && lock_is_free(&kept)), "no record after the last close");
    let record = std::fs::read_to_string(&meta).unwrap();
    assert!(record.contains(&format!("\"txid\":\"{}\"", format_txid(final_txid))), "record: {record}");
    let copy = tmp.path().join("kept-copy.db");
    std::fs::copy(&kept, &copy).unwrap();
    assert_eq!(content_of_file(&copy), expected, "the kept file is the restored database");
    let first_inode = inode(&kept);

    // Another process, configured by the environment, reuses it and records it again.
    let (ok, stdout, stderr) = python(
        ENV_PROCESS,
        &[&kept_s],
        &[("SLUICE_REPLICA_URL", url.as_str()), ("SLUICE_HYDRATION_PATH", kept_s.as_str())],
    );
    assert!(ok, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"progress 100"), "{stdout}\n{stderr}");
    assert!(lines.contains(&"integrity ok"), "{stdout}");
    assert!(lines.contains(&format!("txid {}", format_txid(final_txid)).as_str()), "{stdout}");
    for (table, n) in &expected.row_counts {
        assert!(lines.contains(&format!("rows {table} {n}").as_str()), "{table}: {stdout}");
    }
    assert!(lines.contains(&"meta-while-open False"), "{stdout}");
    assert!(lines.contains(&"meta-after-close True"), "{stdout}\n{stderr}");
    assert_eq!(inode(&kept), first_inode, "the other process reused the kept file");

    // Reopened here: reused again, complete, the same content.
    assert!(wait_until(DEADLINE, || lock_is_free(&kept)), "the other process still holds the file");
    let c = open(&url, &params);
    wait_hydrated(&c, "reopen");
    assert_eq!(content_of(&c).unwrap(), expected, "after reopening");
    assert_eq!(inode(&kept), first_inode, "reused, not filled again");
    assert!(!meta.exists(), "the record is removed while the file is open");
    drop(c);
    assert!(wait_until(DEADLINE, || meta.is_file()), "recorded again at close");
}

// ---------------------------------------------------------------------------------------------
// 5. Write mode with hydration
// ---------------------------------------------------------------------------------------------

fn open_write(name: &str, url: &str, buffer: &Path, extra: &[(&str, &str)]) -> Connection {
    vfs::load(&vfs::debug_so());
    let mut params = vec![("write", "1"), ("buffer", buffer.to_str().unwrap()), ("sync", "100ms"), ("poll", "100ms")];
    params.extend_from_slice(extra);
    let u = vfs::uri(name, url, &params);
    let c = Connection::open_with_flags(&u, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI)
        .unwrap_or_else(|e| panic!("open {u}: {e}"));
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// The writes of round `i` (the same on the VFS and on the native copy).
fn round_sql(i: u64) -> String {
    let rows = format!(
        "INSERT INTO h(r, v) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 150) \
         SELECT x + {i} * 1000, printf('%.*c', 300 + (x * {i}) % 900, char(65 + (x + {i}) % 26)) FROM s;"
    );
    match i {
        0 => format!(
            "CREATE TABLE h (id INTEGER PRIMARY KEY, r INTEGER, v TEXT); CREATE INDEX h_r ON h(r); {rows} \
             UPDATE items SET qty = coalesce(qty, 0) + 1 WHERE id % 2 = 0; DELETE FROM notes WHERE id % 5 = 0;"
        ),
        3 => format!("{rows} DELETE FROM h WHERE id % 3 <> 0; DELETE FROM items WHERE id % 4 = 1; VACUUM;"),
        _ => format!(
            "BEGIN; {rows} UPDATE h SET v = upper(v) || '{i}' WHERE id % 7 = {i}; \
             DELETE FROM items WHERE id % 11 = {i}; COMMIT;"
        ),
    }
}

fn sync(c: &Connection) -> u64 {
    let hex: String = c.query_row("SELECT sluice_sync()", [], |r| r.get(0)).expect("sluice_sync()");
    u64::from_str_radix(&hex, 16).unwrap()
}

#[test]
fn write_mode_with_hydration_reads_its_writes_before_and_after_the_cutover_and_in_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&copy_replica_to("basic", tmp.path().join("replica")));
    let native_path = tmp.path().join("native.db");
    std::fs::copy(restore(&url, Target::Latest, tmp.path()), &native_path).unwrap();
    let native = Connection::open(&native_path).unwrap();
    let buffer = tmp.path().join("app.buffer");
    let hyd = [("hydration", "1")];

    let c = open_write("hydrate-write.db", &url, &buffer, &hyd);
    let enabled: String = c.query_row("PRAGMA sluice_write_enabled", [], |r| r.get(0)).unwrap();
    assert_eq!(enabled, "1");
    // Round 0 right away: the copy is (usually) still filling.
    let p0 = progress(&c);
    assert!((0..=100).contains(&p0), "{p0}");
    c.execute_batch(&round_sql(0)).unwrap();
    native.execute_batch(&round_sql(0)).unwrap();
    let want = content_of(&native).unwrap();
    assert_eq!(content_of(&c).unwrap(), want, "round 0 (written at progress {p0}), before any sync");
    let other = open_write("hydrate-write.db", &url, &buffer, &hyd);
    assert_eq!(content_of(&other).unwrap(), want, "round 0, another connection");
    let mut last_txid = sync(&c);
    assert_eq!(content_of_file(&restore(&url, Target::Latest, tmp.path())), want, "round 0: sluice restore");
    wait_hydrated(&c, "write mode");
    assert_eq!(content_of(&c).unwrap(), want, "round 0 after the cutover");

    for i in 1..=4 {
        c.execute_batch(&round_sql(i)).unwrap();
        native.execute_batch(&round_sql(i)).unwrap();
        let want = content_of(&native).unwrap();
        assert_eq!(content_of(&c).unwrap(), want, "round {i}, the writing connection");
        assert_eq!(content_of(&other).unwrap(), want, "round {i}, another connection");
        let txid = sync(&c);
        assert!(txid > last_txid, "round {i}: sync moved the replica from {last_txid:x} to {txid:x}");
        last_txid = txid;
        assert_eq!(content_of(&c).unwrap(), want, "round {i}, after the sync");
        let restored = content_of_file(&restore(&url, Target::Txid(TxId(txid)), tmp.path()));
        assert_eq!(restored, want, "round {i}: sluice restore at TXID {txid:x}");
    }
    let want = content_of(&native).unwrap();
    drop((c, other));
    assert_eq!(content_of_file(&restore(&url, Target::Latest, tmp.path())), want, "after the last close");

    // Reopened with hydration: read-only, then writing again.
    let r = open(&url, &[("hydration", "1"), ("poll", "100ms")]);
    wait_hydrated(&r, "read-only reopen");
    assert_eq!(content_of(&r).unwrap(), want, "read-only reopen");
    drop(r);
    let c = open_write("hydrate-write.db", &url, &buffer, &hyd);
    wait_hydrated(&c, "write reopen");
    assert_eq!(content_of(&c).unwrap(), want, "write reopen");
    c.execute_batch(&round_sql(5)).unwrap();
    native.execute_batch(&round_sql(5)).unwrap();
    let want = content_of(&native).unwrap();
    assert_eq!(content_of(&c).unwrap(), want, "round 5");
    let txid = sync(&c);
    assert_eq!(content_of(&c).unwrap(), want, "round 5 after the sync");
    assert_eq!(content_of_file(&restore(&url, Target::Txid(TxId(txid)), tmp.path())), want, "round 5: restore");
}

// ---------------------------------------------------------------------------------------------
// 6. Without hydration
// ---------------------------------------------------------------------------------------------

#[test]
fn progress_is_minus_one_without_hydration() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&copy_replica_to("pitr", tmp.path().join("replica")));
    for params in
        [&[][..], &[("hydration", "0")][..], &[("hydration", "false"), ("hydration_path", "/nonexistent/h.db")][..]]
    {
        let c = open(&url, params);
        assert_eq!(progress(&c), -1, "{params:?}");
        assert_eq!(pragma_progress(&c), -1, "{params:?}");
    }
    // The same replica hydrated in the same process: its own setting, per database.
    let h = open(&url, &[("hydration", "1")]);
    wait_hydrated(&h, "pitr");
    assert_eq!(progress(&open(&url, &[])), -1, "a plain connection next to a hydrated one");
    // Write mode without hydration.
    let w_url = file_url(&tmp.path().join("new-replica"));
    let w = open_write("no-hydration.db", &w_url, &tmp.path().join("w.buffer"), &[]);
    assert_eq!(progress(&w), -1, "write mode");
    assert_eq!(pragma_progress(&w), -1, "write mode");
    // A value that is neither on nor off fails the open.
    let err = vfs::open(&url, &[("hydration", "maybe")]).unwrap_err();
    let code = err.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code);
    assert_eq!(code, Some(ErrorCode::CannotOpen), "{err:#}");
}
