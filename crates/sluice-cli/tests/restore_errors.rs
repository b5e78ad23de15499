//! `sluice restore` on bad input: every case must exit non-zero with an `error:` line on stderr
//! that names what failed, and must leave **nothing** in the output directory (no database, no
//! temp file, no `-wal`/`-shm`).
//!
//! Replicas are private copies of the Litestream 0.5.17 `pitr` fixture (mtimes re-applied by
//! `copy_replica_to`), damaged as each case needs. S3 cases use the moto server `scripts/test`
//! starts; the credentials case starts a second moto with IAM auth enforced.
//!
//! Run via `scripts/test -p sluice-cli` (the helpers panic, never skip, without its environment).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{free_port, run, sluice};
use sluice_testkit::{fixtures, hash, peer, s3};

/// Generous upper bound for one CLI run; a safety net against hangs, not a timing assertion
/// (used by `common::run`).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Latest TXID of the `pitr` fixture.
const PITR_LATEST: &str = "0000000000000033";

fn restore(args: &[&str], out: &Path, replica: &str) -> Output {
    run(sluice().arg("restore").args(args).arg("-o").arg(out).arg(replica))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Non-zero exit, an `error:` line, and every `needle` somewhere in stderr.
#[track_caller]
fn assert_fails_with(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got {:?}\nstdout: {}\nstderr: {err}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.lines().any(|l| l.starts_with("error:")), "stderr has no line starting with `error:`:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr does not mention {n:?}:\n{err}");
    }
    err
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[track_caller]
fn assert_dir_empty(dir: &Path) {
    let e = entries(dir);
    assert!(e.is_empty(), "output directory {} is not empty after a failed restore: {e:?}", dir.display());
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// A private copy of the `pitr` replica and an empty output directory.
struct Case {
    _tmp: tempfile::TempDir,
    replica: PathBuf,
    out_dir: PathBuf,
}

impl Case {
    fn pitr() -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let replica = fixtures::copy_replica_to("pitr", tmp.path().join("replica"));
        let out_dir = tmp.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        Case { _tmp: tmp, replica, out_dir }
    }

    fn out(&self) -> PathBuf {
        self.out_dir.join("restored.db")
    }

    fn url(&self) -> String {
        file_url(&self.replica)
    }

    fn l(&self, level: u8, min: u64, max: u64) -> PathBuf {
        self.replica.join("ltx").join(level.to_string()).join(format!("{min:016x}-{max:016x}.ltx"))
    }
}

// ---------------------------------------------------------------------------------------------
// Empty replicas

#[test]
fn empty_file_replica_is_refused() {
    let c = Case::pitr();
    let empty = c.replica.parent().unwrap().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let url = file_url(&empty);
    let out = restore(&[], &c.out(), &url);
    assert_fails_with(&out, &["empty", &empty.display().to_string()]);
    assert_dir_empty(&c.out_dir);

    // An existing but empty `ltx/` tree (level dirs without files) is just as empty.
    std::fs::create_dir_all(empty.join("ltx/0")).unwrap();
    std::fs::create_dir_all(empty.join("ltx/9")).unwrap();
    let out = restore(&[], &c.out(), &url);
    assert_fails_with(&out, &["empty"]);
    assert_dir_empty(&c.out_dir);

    // `--if-replica-exists` turns it into a successful no-op (Litestream's -if-replica-exists).
    let out = restore(&["-if-replica-exists"], &c.out(), &url);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_dir_empty(&c.out_dir);
}

#[test]
fn empty_s3_prefix_is_refused() {
    let bucket = s3::new_bucket("sluice-err-empty");
    // Another prefix in the same bucket holds a complete replica; it must not be picked up.
    s3::upload_replica(&fixtures::replica_dir("pitr"), &bucket, "other");
    let c = Case::pitr();
    let url = s3::s3_url(&bucket, "missing");
    let out = restore(&[], &c.out(), &url);
    assert_fails_with(&out, &["empty", &bucket]);
    assert_dir_empty(&c.out_dir);

    // A prefix that is a string prefix of the populated one ("oth") is still empty.
    let out = restore(&[], &c.out(), &s3::s3_url(&bucket, "oth"));
    assert_fails_with(&out, &["empty", &bucket]);
    assert_dir_empty(&c.out_dir);
}

// ---------------------------------------------------------------------------------------------
// Broken chains

/// L0 TXID 0x20 and the L1 file 0x14-0x30 covering it are gone: the newest chain has a hole.
#[test]
fn txid_gap_is_refused() {
    let c = Case::pitr();
    for p in [c.l(0, 0x20, 0x20), c.l(1, 0x14, 0x30)] {
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
    }
    let out = restore(&[], &c.out(), &c.url());
    let err =
        assert_fails_with(&out, &["non-contiguous", "000000000000001f", "0/0000000000000021-0000000000000021.ltx"]);
    assert_dir_empty(&c.out_dir);

    // The real Litestream refuses it as well.
    let ls = run(peer::litestream_command().args(["restore", "-o"]).arg(c.out()).arg(c.url()));
    assert!(!ls.status.success(), "litestream restored a replica with a gap; sluice said: {err}");
    assert!(stderr(&ls).contains("non-contiguous"), "litestream: {}", stderr(&ls));
    assert_dir_empty(&c.out_dir);

    // A TXID past the gap is not restorable either, and names itself.
    let out = restore(&["-txid", "0000000000000025"], &c.out(), &c.url());
    assert_fails_with(&out, &["0000000000000025", "not restorable"]);
    assert_dir_empty(&c.out_dir);

    // The part before the gap is intact (sanity: the failures above are about the gap).
    let out = restore(&["-txid", "000000000000001f"], &c.out(), &c.url());
    assert!(out.status.success(), "{}", stderr(&out));
    let m = fixtures::load_manifest("pitr");
    let want = &m.summary_by_txid["000000000000001f"];
    assert_eq!(Some(hash::logical_sha256(c.out())), want.logical_sha256);
}

/// One byte of page data flipped in the L1 file 2-0x13 that the latest plan applies second.
#[test]
fn corrupt_ltx_in_chain_is_refused_and_leaves_no_temp_file() {
    let c = Case::pitr();
    let victim = c.l(1, 0x2, 0x13);
    let mut bytes = std::fs::read(&victim).unwrap();
    let m = fixtures::load_manifest("pitr");
    let entry = m.ltx_files.iter().find(|f| f.path == "ltx/1/0000000000000002-0000000000000013.ltx").unwrap();
    // Middle of the page block (header is 100 bytes; the page index starts after the pages).
    let off = (100 + entry.page_index_offset as usize) / 2;
    bytes[off] ^= 0x5a;
    std::fs::write(&victim, &bytes).unwrap();
    fixtures::set_ltx_mtimes(&c.replica).unwrap();

    let out = restore(&[], &c.out(), &c.url());
    assert_fails_with(&out, &["1/0000000000000002-0000000000000013.ltx"]);
    assert_dir_empty(&c.out_dir);

    // Litestream agrees the file is bad.
    let ls = run(peer::litestream_command().args(["restore", "-o"]).arg(c.out()).arg(c.url()));
    assert!(!ls.status.success(), "litestream restored past the corrupt file");
    assert_dir_empty(&c.out_dir);

    // A restore whose plan avoids the damaged file still works (TXID 1 is the L9 snapshot).
    let out = restore(&["-txid", "0000000000000001"], &c.out(), &c.url());
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// Bad targets

#[test]
fn txid_beyond_latest_is_refused() {
    let c = Case::pitr();
    let out = restore(&["-txid", "0000000000000100"], &c.out(), &c.url());
    assert_fails_with(&out, &["0000000000000100", PITR_LATEST]);
    assert_dir_empty(&c.out_dir);
    let out = restore(&["--txid", "ffffffffffffffff"], &c.out(), &c.url());
    assert_fails_with(&out, &["ffffffffffffffff", PITR_LATEST]);
    assert_dir_empty(&c.out_dir);
}

#[test]
fn malformed_txid_is_refused() {
    let c = Case::pitr();
    let cases: [&[&str]; 5] = [
        &["-txid", "10"],
        &["-txid", "000000000000000g"],
        &["-txid", "00000000000000010"],
        &["-txid=-1"],
        &["-txid", ""],
    ];
    for bad in cases {
        let out = restore(bad, &c.out(), &c.url());
        let err = stderr(&out);
        assert!(!out.status.success(), "{bad:?} accepted: {err}");
        assert!(err.starts_with("error:"), "{bad:?}: {err}");
        assert!(err.to_lowercase().contains("txid"), "{bad:?}: message does not name the TXID: {err}");
        assert_dir_empty(&c.out_dir);
    }
    // --txid and --timestamp together are refused (Litestream: mutually exclusive).
    let out = restore(&["-txid", "0000000000000002", "-timestamp", "2026-11-26T10:37:45Z"], &c.out(), &c.url());
    assert_fails_with(&out, &["timestamp"]);
    assert_dir_empty(&c.out_dir);
}

#[test]
fn timestamp_before_first_snapshot_is_refused() {
    let c = Case::pitr();
    let m = fixtures::load_manifest("pitr");
    let first = m.l0_timestamps.as_ref().expect("pitr manifest has l0_timestamps")["0000000000000001"].timestamp_ms;
    // One hour before TXID 1, and exactly at it (CreatedAt must be strictly before the target).
    for ts in [fixtures::rfc3339_ms(first - 3_600_000), fixtures::rfc3339_ms(first)] {
        let out = restore(&["-timestamp", &ts], &c.out(), &c.url());
        let err = assert_fails_with(&out, &[]);
        let ts_secs = &ts[..19];
        assert!(err.contains(ts_secs), "message does not name the timestamp {ts}: {err}");
        assert_dir_empty(&c.out_dir);
    }
    let out = restore(&["-timestamp", "yesterday"], &c.out(), &c.url());
    assert_fails_with(&out, &["timestamp", "yesterday"]);
    assert_dir_empty(&c.out_dir);
}

// ---------------------------------------------------------------------------------------------
// S3 failures

fn s3_url_at(endpoint: &str, bucket: &str, prefix: &str) -> String {
    format!("s3://{bucket}/{prefix}?endpoint={endpoint}&region=us-east-1&forcePathStyle=true")
}

fn restore_with_wrong_credentials() -> (Output, String, PathBuf, tempfile::TempDir) {
    let moto = s3::start_auth_moto();
    let out_dir = tempfile::tempdir().unwrap();
    let out_db = out_dir.path().join("restored.db");
    let bucket = "sluice-auth-bucket";
    let url = s3_url_at(&moto.endpoint, bucket, "db");
    let out = run(sluice()
        .args(["restore", "-o"])
        .arg(&out_db)
        .arg(&url)
        .env("AWS_ACCESS_KEY_ID", "AKIASLUICEWRONGKEY00")
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret"));
    (out, bucket.to_string(), out_db, out_dir)
}

/// moto accepts any credentials by default, so a second instance enforces IAM auth; the wrong
/// key must fail with a 403 that names the bucket and the object key (prefix) being listed.
#[test]
fn wrong_s3_credentials_fail_with_403() {
    let (out, bucket, _out_db, out_dir) = restore_with_wrong_credentials();
    let err = assert_fails_with(&out, &["403", &bucket, "LIST db"]);
    assert!(err.contains("InvalidAccessKeyId"), "the server's reason is lost: {err}");
    assert!(!err.contains("wrong-secret"), "the secret key leaked into the message: {err}");
    assert_dir_empty(out_dir.path());
}

/// A 403 InvalidAccessKeyId on the first request a restore makes (LIST) names its cause:
/// the store rejected the credentials (not a missing permission, not a network failure).
#[test]
fn wrong_s3_credentials_are_reported_as_rejected() {
    let (out, _bucket, _out_db, out_dir) = restore_with_wrong_credentials();
    assert_fails_with(&out, &["credentials rejected by the store"]);
    assert_dir_empty(out_dir.path());
}

/// Nothing listens on the port: the client's bounded retries give up and the error names the
/// endpoint; the run is bounded by RUN_TIMEOUT (a hang fails the test).
#[test]
fn unreachable_endpoint_fails_after_bounded_retries() {
    let port = free_port(); // bound and released: closed now
    let out_dir = tempfile::tempdir().unwrap();
    let url = s3_url_at(&format!("http://127.0.0.1:{port}"), "sluice-unreachable", "db");
    let out = restore(&[], &out_dir.path().join("restored.db"), &url);
    assert_fails_with(&out, &[&format!("127.0.0.1:{port}"), "sluice-unreachable"]);
    assert_dir_empty(out_dir.path());
}

#[test]
fn bad_urls_are_refused() {
    let out_dir = tempfile::tempdir().unwrap();
    let out_db = out_dir.path().join("restored.db");
    for (url, needle) in [
        ("s3://", "bucket"),
        ("s3:///prefix", "bucket"),
        ("ftp://x", "ftp"),
        ("file://somehost/x", "somehost"),
        ("http://", "http"),
    ] {
        let out = restore(&[], &out_db, url);
        let err = assert_fails_with(&out, &[needle]);
        assert!(err.contains("URL") || err.contains("url"), "{url}: message does not say the URL is bad: {err}");
        assert_dir_empty(out_dir.path());
    }
    // A URL target without -o has nowhere to go.
    let out = run(sluice().args(["restore", &s3::s3_url("some-bucket", "db")]).current_dir(out_dir.path()));
    assert_fails_with(&out, &["-o"]);
    assert_dir_empty(out_dir.path());
}

// ---------------------------------------------------------------------------------------------
// Existing output

#[test]
fn existing_output_is_refused_unless_forced() {
    let c = Case::pitr();
    let out = c.out();
    let precious = b"not a database, but somebody's file";
    std::fs::write(&out, precious).unwrap();

    let r = restore(&[], &out, &c.url());
    assert_fails_with(&r, &["already exists", &out.display().to_string()]);
    assert_eq!(std::fs::read(&out).unwrap(), precious, "refused restore changed the file");
    assert_eq!(entries(&c.out_dir), ["restored.db"], "temp files left behind");

    let r = restore(&["-if-db-not-exists"], &out, &c.url());
    assert!(r.status.success(), "--if-db-not-exists with an existing file must exit 0: {}", stderr(&r));
    assert_eq!(std::fs::read(&out).unwrap(), precious);
    assert_eq!(entries(&c.out_dir), ["restored.db"]);

    // --dry-run never writes, even with an existing file.
    let r = restore(&["-dry-run"], &out, &c.url());
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(std::fs::read(&out).unwrap(), precious);

    for force in ["-force", "--force"] {
        std::fs::write(&out, precious).unwrap();
        let r = restore(&[force], &out, &c.url());
        assert!(r.status.success(), "{force}: {}", stderr(&r));
        let m = fixtures::load_manifest("pitr");
        let latest = m.restores.iter().find(|r| r.is_latest()).unwrap().result.as_ref().unwrap();
        assert_eq!(hash::logical_sha256(&out), latest.logical_sha256, "{force}");
        assert_eq!(hash::integrity_check(&out), "ok");
        assert_eq!(entries(&c.out_dir), ["restored.db"], "{force}: temp files left behind");
    }
}

/// A stale `-wal` beside a missing output would be replayed over the restored file by SQLite:
/// refused without --force, removed with it.
#[test]
fn stale_wal_beside_output_is_refused_unless_forced() {
    let c = Case::pitr();
    let out = c.out();
    let wal = c.out_dir.join("restored.db-wal");
    std::fs::write(&wal, b"stale wal").unwrap();
    let r = restore(&[], &out, &c.url());
    assert_fails_with(&r, &["restored.db-wal"]);
    assert_eq!(entries(&c.out_dir), ["restored.db-wal"]);

    let r = restore(&["--force"], &out, &c.url());
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(entries(&c.out_dir), ["restored.db"]);
    assert_eq!(hash::integrity_check(&out), "ok");
}
