//! Storage faults under write mode, through a proxy in front of moto: 20% of requests cut,
//! then an outage. Commits go on into the buffer, `sluice_pending()` shows the backlog, syncs
//! catch up afterwards, nothing is lost, and the L0 TXIDs have no gap and no duplicate.
//! (Statements may fail with `SQLITE_IOERR_READ` meanwhile, when they read pages synced earlier
//! back from storage; they are retried.)

mod common;

use std::time::Duration;

use common::restore;
use rusqlite::{Connection, OpenFlags};
use sluice_engine::restore::Target;
use sluice_testkit::proxy::Proxy;
use sluice_testkit::{s3, vfs};

fn pending(c: &Connection) -> (u64, u64) {
    let p: String = c.query_row("SELECT sluice_pending()", [], |r| r.get(0)).unwrap();
    let mut it = p.split(' ').map(|x| x.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// `<min>-<max>.ltx` TXID ranges of the level-0 files, in order.
fn l0_ranges(bucket: &str) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = s3::list_keys(bucket, "db/0000/")
        .iter()
        .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".ltx").map(str::to_string))
        .filter_map(|n| {
            let (a, b) = n.split_once('-')?;
            Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
        })
        .collect();
    r.sort_unstable();
    r
}

#[test]
fn flaky_storage_and_an_outage_lose_nothing_and_leave_no_txid_gap() {
    let bucket = s3::new_bucket("vfs-write-faults");
    let upstream = s3::endpoint().trim_start_matches("http://").to_string();
    let mut proxy = Proxy::start(&upstream).expect("start proxy");
    let url = format!("s3://{bucket}/db?endpoint={}&region={}&forcePathStyle=true", proxy.endpoint(), s3::REGION);
    let tmp = tempfile::tempdir().unwrap();
    vfs::load(&vfs::debug_so());
    let buffer = tmp.path().join("faults.buffer");
    let u = vfs::uri("faults.db", &url, &[("write", "1"), ("buffer", buffer.to_str().unwrap()), ("sync", "200ms")]);
    let c = Connection::open_with_flags(&u, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI).unwrap();
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)").unwrap();
    let mut n = 0i64;
    // A statement may fail with SQLITE_IOERR_READ while requests are cut: pages synced
    // earlier are read back from storage. It is then retried, as an application would.
    let insert = |c: &Connection, n: &mut i64| {
        for attempt in 0.. {
            match c.execute("INSERT INTO t VALUES (?1, randomblob(500))", [*n + 1]) {
                Ok(_) => break,
                Err(e) if attempt < 50 && e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure) => {}
                Err(e) => panic!("insert {}: {e}", *n + 1),
            }
        }
        *n += 1;
    };

    // 20% of requests cut while committing. A fast machine does 300 commits in a few syncs,
    // which 20% may all spare, so the phase goes on until several requests were really cut.
    proxy.set_fail_ratio(0.2, sluice_testkit::seed::random_u64());
    let give_up = std::time::Instant::now() + Duration::from_secs(120);
    while n < 300 || (proxy.cut_requests() < 5 && std::time::Instant::now() < give_up) {
        insert(&c, &mut n);
        if n % 10 == 0 {
            std::thread::sleep(Duration::from_millis(20)); // let syncs happen between commits
        }
    }
    proxy.set_fail_ratio(0.0, 0);
    let durable: i64 = c.query_row("SELECT sluice_wait_durable(120000)", [], |r| r.get(0)).unwrap();
    assert_eq!(durable, 1, "caught up after the flaky phase");
    assert!(proxy.cut_requests() >= 5, "the proxy cut {} requests: the test proved little", proxy.cut_requests());

    // Storage down: commits continue into the buffer, the backlog shows.
    let outage: u64 = std::env::var("SLUICE_TEST_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    proxy.down();
    let deadline = std::time::Instant::now() + Duration::from_secs(outage);
    while std::time::Instant::now() < deadline {
        insert(&c, &mut n);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (txns, bytes) = pending(&c);
    assert!(txns > 0 && bytes > 0, "the backlog shows during the outage: {txns} {bytes}");
    let durable: i64 = c.query_row("SELECT sluice_wait_durable(0)", [], |r| r.get(0)).unwrap();
    assert_eq!(durable, 0);
    proxy.up().expect("proxy up");
    let durable: i64 = c.query_row("SELECT sluice_wait_durable(120000)", [], |r| r.get(0)).unwrap();
    assert_eq!(durable, 1, "caught up after the outage");
    assert_eq!(pending(&c), (0, 0));
    let count: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(count, n);
    drop(c);

    let ranges = l0_ranges(&bucket);
    assert!(!ranges.is_empty());
    for w in ranges.windows(2) {
        assert_eq!(w[1].0, w[0].1 + 1, "L0 files {:x?} then {:x?}: a gap or an overlap", w[0], w[1]);
    }
    let restored = restore(&s3::s3_url(&bucket, "db"), Target::Latest, tmp.path());
    let r = Connection::open(&restored).unwrap();
    let (cnt, max): (i64, i64) =
        r.query_row("SELECT count(*), max(id) FROM t", [], |row| Ok((row.get(0)?, row.get(1)?))).unwrap();
    assert_eq!((cnt, max), (n, n), "every committed row is in the replica");
}
