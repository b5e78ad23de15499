//! Storage faults under the extension, through a proxy in front of moto: a share of requests
//! cut, or every request held past the read deadline. Queries get SQLite I/O errors, never
//! wrong rows, and the same connection works again once storage recovers.
//!
//! The page cache is set to nothing (`cache_size=1`), so every read of every query goes to
//! storage and meets the faults.

mod common;

use std::time::{Duration, Instant};

use common::{Content, content_of, content_of_file, restore};
use rusqlite::{Connection, ErrorCode};
use sluice_engine::restore::Target;
use sluice_testkit::fixtures::replica_dir;
use sluice_testkit::proxy::Proxy;
use sluice_testkit::{s3, seed, vfs};

struct Setup {
    proxy: Proxy,
    conn: Connection,
    expected: Content,
}

fn setup(fixture: &str, timeout: &str) -> Setup {
    let bucket = s3::new_bucket(&format!("vfs-faults-{fixture}"));
    s3::upload_replica(&replica_dir(fixture), &bucket, "db");
    let tmp = tempfile::tempdir().unwrap();
    let expected = content_of_file(&restore(&s3::s3_url(&bucket, "db"), Target::Latest, tmp.path()));
    let upstream = s3::endpoint().trim_start_matches("http://").to_string();
    let proxy = Proxy::start(&upstream).expect("start proxy");
    let url = format!("s3://{bucket}/db?endpoint={}&region={}&forcePathStyle=true", proxy.endpoint(), s3::REGION);
    let conn = vfs::open(&url, &[("cache_size", "1"), ("timeout", timeout), ("poll", "200ms")]).unwrap();
    assert_eq!(content_of(&conn).unwrap(), expected, "healthy storage");
    Setup { proxy, conn, expected }
}

/// The SQLite error code behind a failed read.
fn code(e: &anyhow::Error) -> Option<ErrorCode> {
    e.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code)
}

/// Runs full reads with `ratio` of the requests cut; returns (right reads, failed reads).
fn flaky_rounds(s: &Setup, ratio: f64, seed: u64, rounds: usize) -> (usize, usize) {
    let cuts_before = s.proxy.cut_requests();
    s.proxy.set_fail_ratio(ratio, seed);
    let (mut right, mut errors) = (0, 0);
    for round in 0..rounds {
        match content_of(&s.conn) {
            Ok(c) => {
                assert_eq!(c, s.expected, "{ratio}, round {round}: rows differ from the replica's");
                right += 1;
            }
            Err(e) => {
                assert_eq!(code(&e), Some(ErrorCode::SystemIoFailure), "{ratio}, round {round}: {e:#}");
                errors += 1;
            }
        }
    }
    s.proxy.set_fail_ratio(0.0, seed);
    let cuts = s.proxy.cut_requests() - cuts_before;
    eprintln!(
        "{:.0}% of requests cut ({cuts}): {right} full reads right, {errors} failed with I/O errors",
        ratio * 100.0
    );
    assert!(cuts > 0, "the proxy cut no request: the faults never happened");
    (right, errors)
}

#[test]
fn failing_requests_give_errors_or_right_rows() {
    let s = setup("compacted", "5s");
    let seed = seed::seed();
    // 20%: the storage layer's retries absorb nearly all of it.
    flaky_rounds(&s, 0.2, seed, 30);
    // 70%: retries run out, and reads fail with I/O errors.
    flaky_rounds(&s, 0.7, seed, 15);
    assert_eq!(content_of(&s.conn).unwrap(), s.expected, "after recovery");
}

#[test]
fn storage_stalled_past_the_deadline_fails_the_query_and_recovers() {
    let s = setup("pitr", "1s");
    s.proxy.set_stalled(true);
    for round in 0..3 {
        let t = Instant::now();
        let e = content_of(&s.conn).expect_err("no page can be read while storage hangs");
        assert_eq!(code(&e), Some(ErrorCode::SystemIoFailure), "round {round}: {e:#}");
        // Not a timing assertion: it only bounds a hang, far above the 1 s deadline.
        assert!(t.elapsed() < Duration::from_secs(60), "round {round}: the query hung for {:?}", t.elapsed());
    }
    let lag: i64 = s.conn.query_row("SELECT sluice_lag()", [], |r| r.get(0)).unwrap();
    eprintln!("lag while stalled: {lag}s");
    s.proxy.set_stalled(false);
    assert_eq!(content_of(&s.conn).unwrap(), s.expected, "after recovery");
}

#[test]
fn storage_down_fails_the_query_and_recovers() {
    let mut s = setup("basic", "2s");
    s.proxy.down();
    let e = content_of(&s.conn).expect_err("storage is down");
    assert_eq!(code(&e), Some(ErrorCode::SystemIoFailure), "{e:#}");
    s.proxy.up().unwrap();
    assert_eq!(content_of(&s.conn).unwrap(), s.expected, "after recovery");
}
