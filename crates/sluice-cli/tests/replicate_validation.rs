//! `validation: {interval}`: the daemon restores each replica on its own and compares it with
//! the database. (a) A healthy replica validates ok, at the replica's TXID, also after more
//! writes; (b) one flipped byte in the replica's snapshot file is reported: an error result
//! in `/metrics` and an ERROR log line naming the file and the TXID. On a `file://` replica
//! and on S3 (moto).
//!
//! Run via `scripts/test -p sluice-cli --test replicate_validation`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, free_port, get_metrics, metric, open_app, sluice_ltx};
use sluice_testkit::process::wait_until;
use sluice_testkit::s3;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
#[allow(dead_code)]
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Generous bound for a validation to show up (the interval is 1s).
const DEADLINE: Duration = Duration::from_secs(90);

/// `sluice_validation_total{…,result="<result>"}`.
fn validations(body: &str, result: &str) -> f64 {
    let tag = format!("result=\"{result}\"");
    body.lines()
        .find(|l| l.starts_with("sluice_validation_total{") && l.contains(&tag))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn scrape(port: u16) -> String {
    get_metrics(port).map(|(_, b)| b).unwrap_or_default()
}

/// A database of a few dozen pages of incompressible rows (so a flipped byte in the middle of
/// its snapshot lands in page data).
fn write_rows(db: &Path, n: usize) {
    let c = open_app(db, Duration::from_secs(5));
    c.execute_batch("CREATE TABLE IF NOT EXISTS t(x BLOB)").expect("create");
    for _ in 0..n {
        c.execute("INSERT INTO t VALUES (randomblob(300))", []).expect("insert");
    }
}

fn config(dir: &Path, db: &Path, url: &str, port: u16) -> PathBuf {
    let y = format!(
        "addr: 127.0.0.1:{port}\nvalidation:\n  interval: 1s\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    \
         replica: {{url: \"{url}\", sync-interval: 200ms}}\n",
        db.display()
    );
    let p = dir.join("sluice.yml");
    std::fs::write(&p, &y).expect("config");
    eprintln!("config:\n{y}");
    p
}

/// Waits until a validation with result "ok" newer than `after` reached the replica's TXID,
/// which must be the newest TXID of the listing; returns the number of ok validations.
fn wait_ok_at_replica_txid(d: &mut Daemon, port: u16, url: &str, after: f64) -> f64 {
    let mut seen = (0.0, 0.0, 0.0, 0);
    let ok = wait_until(DEADLINE, || {
        let body = scrape(port);
        let replica = metric(&body, "sluice_replica_txid").unwrap_or(0.0);
        let last = metric(&body, "sluice_validation_last_txid").unwrap_or(-1.0);
        // The replica's newest file, listed after the scrape: an upload may land in between,
        // and then the next round looks again.
        let newest = sluice_ltx(url).iter().map(|f| f.max).max().unwrap_or(0);
        seen = (validations(&body, "ok"), last, replica, newest);
        seen.0 > after && last == replica && replica > 0.0 && last as u64 == newest
    });
    d.assert_running();
    assert!(
        ok,
        "no ok validation at the replica's newest TXID (ok, last_txid, replica_txid, newest file) = {seen:?}; log:\n{}",
        d.log_text()
    );
    let body = scrape(port);
    assert_eq!(validations(&body, "error") + validations(&body, "mismatch"), 0.0, "{body}");
    assert!(metric(&body, "sluice_validation_last_success_timestamp_seconds").unwrap_or(0.0) > 1.6e9, "{body}");
    assert!(d.log_count("replica validated") >= 1, "no info line; log:\n{}", d.log_text());
    seen.0
}

/// Waits for a failed validation naming `file` (e.g. `9/0000000000000001-…ltx`).
fn wait_failure(d: &mut Daemon, port: u16, file: &str) {
    let failed = wait_until(DEADLINE, || {
        let body = scrape(port);
        validations(&body, "error") + validations(&body, "mismatch") > 0.0
    });
    d.assert_running();
    assert!(failed, "the corrupt file was not reported on /metrics; log:\n{}", d.log_text());
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("replica validation failed"))
        .unwrap_or_else(|| panic!("no ERROR line for the failed validation; log:\n{log}"));
    assert!(line.contains(file), "the error line does not name {file}: {line}");
    assert!(line.contains("txid="), "the error line does not name the TXID: {line}");
}

/// The snapshot file (level 9) of a listing, as `9/<min>-<max>.ltx`. A new replica's first
/// snapshot comes one compaction interval (30 s) after its first upload: waited for.
fn snapshot_label(url: &str) -> String {
    let mut snap = None;
    let found = wait_until(SNAPSHOT_DEADLINE, || {
        snap = sluice_ltx(url).into_iter().filter(|f| f.level == 9).max();
        snap.is_some()
    });
    let snap = snap.filter(|_| found).expect("a snapshot in the replica");
    format!("9/{:016x}-{:016x}.ltx", snap.min, snap.max)
}

/// Bound for a new replica's first snapshot (the first compaction interval, 30 s).
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(120);

fn flip_middle(bytes: &mut [u8]) {
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
}

#[test]
fn file_replica_validates_then_reports_a_flipped_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    write_rows(&db, 100);
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let port = free_port();
    let cfg = config(dir.path(), &db, &url, port);
    let mut d = Daemon::start(&cfg, &[], &dir.path().join("daemon.log"));

    let ok = wait_ok_at_replica_txid(&mut d, port, &url, 0.0);
    // More writes: later validations follow the replica.
    write_rows(&db, 50);
    wait_ok_at_replica_txid(&mut d, port, &url, ok);

    let label = snapshot_label(&url);
    let path = replica.join("ltx").join(&label);
    let mut bytes = std::fs::read(&path).expect("read snapshot");
    flip_middle(&mut bytes);
    std::fs::write(&path, &bytes).expect("write snapshot");
    wait_failure(&mut d, port, &label);
    d.stop_ok();
}

#[test]
fn s3_replica_validates_then_reports_a_flipped_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    write_rows(&db, 100);
    let bucket = s3::new_bucket("validation");
    let url = s3::s3_url(&bucket, "app");
    let port = free_port();
    let cfg = config(dir.path(), &db, &url, port);
    let mut d = Daemon::start(&cfg, &[], &dir.path().join("daemon.log"));

    wait_ok_at_replica_txid(&mut d, port, &url, 0.0);

    let label = snapshot_label(&url);
    let keys = s3::list_keys(&bucket, "app/");
    let key =
        keys.iter().find(|k| k.ends_with(&label)).unwrap_or_else(|| panic!("no key for {label} in {keys:?}")).clone();
    let mut bytes = s3::get_object(&bucket, &key).unwrap_or_else(|| panic!("no object {key}"));
    flip_middle(&mut bytes);
    s3::put_object(&bucket, &key, &bytes);
    wait_failure(&mut d, port, &label);
    d.stop_ok();
}

/// A replica file that is valid LTX but holds other data than the database (as a bug in
/// capture or compaction would produce): restores fine, so only the comparison catches it.
#[test]
fn a_valid_replica_file_with_other_data_is_a_mismatch() {
    use sluice_ltx::{Decoder, Encoder};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    write_rows(&db, 100);
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let port = free_port();
    let cfg = config(dir.path(), &db, &url, port);
    let mut d = Daemon::start(&cfg, &[], &dir.path().join("daemon.log"));
    wait_ok_at_replica_txid(&mut d, port, &url, 0.0);

    // No writes since the start: the snapshot alone is the restore plan. Re-encode it with one
    // byte of row data changed in its last page.
    let label = snapshot_label(&url);
    let path = replica.join("ltx").join(&label);
    let mut dec = Decoder::new(std::fs::File::open(&path).expect("open")).expect("decode");
    let header = *dec.header();
    let mut pages = Vec::new();
    let mut buf = vec![0u8; header.page_size as usize];
    while let Some(pgno) = dec.next_page(&mut buf).expect("page") {
        pages.push((pgno, buf.clone()));
    }
    let (pgno, last) = pages.last_mut().expect("pages");
    let end = last.len() - 8;
    last[end] ^= 0x01;
    let changed = *pgno;
    let tmp = path.with_extension("tmp");
    let mut enc = Encoder::new(std::fs::File::create(&tmp).expect("create"), header).expect("encoder");
    for (p, data) in &pages {
        enc.encode_page(*p, data).expect("encode");
    }
    enc.finish(0).expect("finish");
    std::fs::rename(&tmp, &path).expect("rename");

    let failed = wait_until(DEADLINE, || validations(&scrape(port), "mismatch") > 0.0);
    d.assert_running();
    assert!(failed, "the altered replica was not reported as a mismatch; log:\n{}", d.log_text());
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("differs from the database"))
        .unwrap_or_else(|| panic!("no ERROR line for the mismatch; log:\n{log}"));
    assert!(line.contains(&format!("differing pages [{changed}]")), "{line}");
    assert!(line.contains(&label) && line.contains("txid="), "{line}");
    d.stop_ok();
}

/// Validations while the application writes without pause: never a false failure (the local
/// checksums are taken at a captured TXID and moved forward to the restored one).
#[test]
fn validations_under_continuous_writes_never_fail_falsely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    write_rows(&db, 100);
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let port = free_port();
    let cfg = config(dir.path(), &db, &url, port);
    let mut d = Daemon::start(&cfg, &[], &dir.path().join("daemon.log"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let c = open_app(&db, Duration::from_secs(5));
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.execute("INSERT INTO t VALUES (randomblob(300))", []).expect("insert");
                c.execute("UPDATE t SET x = randomblob(200) WHERE rowid = ?1", [n % 100 + 1]).expect("update");
                n += 1;
            }
            n
        })
    };
    let mut body = String::new();
    let enough = wait_until(DEADLINE, || {
        body = scrape(port);
        validations(&body, "ok") >= 4.0
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().expect("writer");
    d.assert_running();
    eprintln!("{writes} write pairs; metrics:\n{body}");
    assert!(enough, "fewer than 4 ok validations under writes; log:\n{}", d.log_text());
    let body = scrape(port);
    assert_eq!(validations(&body, "mismatch") + validations(&body, "error"), 0.0, "{body}\nlog:\n{}", d.log_text());
    d.stop_ok();
}
