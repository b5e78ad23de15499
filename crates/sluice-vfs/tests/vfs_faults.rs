//! Storage faults under the extension, through a proxy in front of moto: a share of requests
//! cut, every request held past the read deadline, or the endpoint down. Reads get SQLite
//! errors, never wrong rows, and work again once storage recovers — on new connections and on
//! a connection that was open throughout.
//!
//! Every read must reach storage for the faults to matter, so the extension's page cache is
//! set to nothing (`cache_size=1`) and each round reads through a new connection (a
//! connection keeps the pages of an unchanged state in SQLite's own page cache, which is right:
//! they cannot change). The long-lived connection is made to read from storage again after
//! recovery by travelling to another TXID and back.

mod common;

use std::time::{Duration, Instant};

use common::{Content, content_of, content_of_file, restore};
use rusqlite::{Connection, ErrorCode};
use sluice_engine::restore::Target;
use sluice_testkit::fixtures::{load_manifest, replica_dir};
use sluice_testkit::proxy::Proxy;
use sluice_testkit::{s3, seed, vfs};

struct Setup {
    proxy: Proxy,
    url: String,
    params: Vec<(&'static str, &'static str)>,
    /// Open since before the faults.
    conn: Connection,
    expected: Content,
    fixture: &'static str,
}

fn setup(fixture: &'static str, timeout: &'static str) -> Setup {
    let bucket = s3::new_bucket(&format!("vfs-faults-{fixture}"));
    s3::upload_replica(&replica_dir(fixture), &bucket, "db");
    let tmp = tempfile::tempdir().unwrap();
    let expected = content_of_file(&restore(&s3::s3_url(&bucket, "db"), Target::Latest, tmp.path()));
    let upstream = s3::endpoint().trim_start_matches("http://").to_string();
    let proxy = Proxy::start(&upstream).expect("start proxy");
    let url = format!("s3://{bucket}/db?endpoint={}&region={}&forcePathStyle=true", proxy.endpoint(), s3::REGION);
    // No cache and no automatic hydration: every read goes to storage and meets the faults.
    let params = vec![("cache_size", "1"), ("auto_hydrate", "off"), ("timeout", timeout), ("poll", "200ms")];
    let conn = vfs::open(&url, &params).unwrap();
    assert_eq!(content_of(&conn).unwrap(), expected, "healthy storage");
    Setup { proxy, url, params, conn, expected, fixture }
}

impl Setup {
    /// Opens a new connection and reads everything through it.
    fn fresh_read(&self) -> anyhow::Result<Content> {
        content_of(&vfs::open(&self.url, &self.params)?)
    }

    /// After recovery: new connections read right, and so does the long-lived one, also once
    /// it must go to storage again (a time travel to another TXID and back).
    fn assert_recovered(&self) {
        assert_eq!(self.fresh_read().unwrap(), self.expected, "a new connection after recovery");
        let earlier = load_manifest(self.fixture)
            .restores
            .iter()
            .filter(|c| c.succeeded() && c.txid_arg().is_some())
            .min_by_key(|c| c.txid_arg())
            .cloned()
            .expect("a -txid restore in the manifest");
        let txid = sluice_testkit::fixtures::format_txid(earlier.txid_arg().unwrap());
        self.conn.execute_batch(&format!("PRAGMA sluice_time = '{txid}'")).unwrap();
        let then = content_of(&self.conn).unwrap();
        assert_eq!(then.logical_sha256, earlier.result.as_ref().unwrap().logical_sha256, "TXID {txid}");
        self.conn.execute_batch("PRAGMA sluice_time = 'latest'").unwrap();
        assert_eq!(content_of(&self.conn).unwrap(), self.expected, "the long-lived connection after recovery");
    }
}

/// The SQLite error code behind a failed open or read.
fn code(e: &anyhow::Error) -> Option<ErrorCode> {
    e.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code)
}

/// Reads through new connections with `ratio` of the requests cut; returns the failed reads.
fn flaky_rounds(s: &Setup, ratio: f64, seed: u64, rounds: usize) -> usize {
    let cuts_before = s.proxy.cut_requests();
    s.proxy.set_fail_ratio(ratio, seed);
    let (mut right, mut errors) = (0, 0);
    for round in 0..rounds {
        match s.fresh_read() {
            Ok(c) => {
                assert_eq!(c, s.expected, "{ratio}, round {round}: rows differ from the replica's");
                right += 1;
            }
            Err(e) => {
                assert_eq!(code(&e), Some(ErrorCode::SystemIoFailure), "{ratio}, round {round}: {e:#}");
                errors += 1;
            }
        }
        // The long-lived connection keeps answering from its state's pages, rightly.
        assert_eq!(content_of(&s.conn).unwrap(), s.expected, "{ratio}, round {round}: long-lived connection");
    }
    s.proxy.set_fail_ratio(0.0, seed);
    let cuts = s.proxy.cut_requests() - cuts_before;
    eprintln!(
        "{:.0}% of requests cut ({cuts}): {right} full reads right, {errors} failed with I/O errors",
        ratio * 100.0
    );
    assert!(cuts > 0, "the proxy cut no request: the faults never happened");
    errors
}

#[test]
fn failing_requests_give_errors_or_right_rows() {
    let s = setup("compacted", "5s");
    let seed = seed::seed();
    // 20%: the storage layer's retries absorb nearly all of it.
    flaky_rounds(&s, 0.2, seed, 12);
    // 70%: retries run out, and reads fail with I/O errors.
    let errors = flaky_rounds(&s, 0.7, seed, 6);
    assert!(errors > 0, "with 70% of requests cut, some read should have failed");
    s.assert_recovered();
}

#[test]
fn storage_stalled_past_the_deadline_fails_reads_and_recovers() {
    let s = setup("pitr", "1s");
    s.proxy.set_stalled(true);
    for round in 0..3 {
        let t = Instant::now();
        let e = s.fresh_read().expect_err("no page can be read while storage hangs");
        assert_eq!(code(&e), Some(ErrorCode::SystemIoFailure), "round {round}: {e:#}");
        // Not a timing assertion: it only bounds a hang, far above the 1 s deadline.
        assert!(t.elapsed() < Duration::from_secs(60), "round {round}: the read hung for {:?}", t.elapsed());
    }
    let lag: i64 = s.conn.query_row("SELECT sluice_lag()", [], |r| r.get(0)).unwrap();
    eprintln!("lag while stalled: {lag}s");
    s.proxy.set_stalled(false);
    s.assert_recovered();
}

#[test]
fn storage_down_fails_reads_and_recovers() {
    let mut s = setup("shrink", "2s");
    s.proxy.down();
    let e = s.fresh_read().expect_err("storage is down");
    assert_eq!(code(&e), Some(ErrorCode::SystemIoFailure), "{e:#}");
    s.proxy.up().unwrap();
    s.assert_recovered();
}
