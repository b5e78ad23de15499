//! Databases past 1 GiB: SQLite never uses or writes the page that holds byte offset 2^30
//! (the lock-byte page, page `2^30 / page_size + 1`), so a replicator and a restore must leave
//! it out while keeping every page after it at its number. A database that crosses it
//! replicates (first image, then WAL commits on both sides of it, a level-1 compaction and a
//! merged level-9 snapshot spanning it) and restores correctly, at 4 KiB and 64 KiB pages:
//! `sluice restore` and the real `litestream restore`, at the latest TXID, at a TXID mid-way
//! and at the first image, equal the source (logical hash, page count, file size,
//! `integrity_check`) and each other byte for byte.
//!
//! Long-running (a 1.1 GiB database per page size), so `#[ignore]`d: `bench/lock_page.sh`
//! runs both in release mode (`scripts/test --release -p sluice-cli --test lock_page --
//! --ignored --nocapture`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Daemon, force_sync, free_port, get_metrics, metric, restore, sluice_ltx};
use rusqlite::Connection;
use sluice_testkit::hash;
use sluice_testkit::process::wait_until;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(1800);
/// Bytes per row: every row distinct (its id), so every page is, but compressible.
const ROW_BYTES: usize = 1000;
/// Rows before the daemon starts: about 1.05 GiB, past the lock page.
const INITIAL_ROWS: i64 = 1_080_000;
/// Row ids around the lock page (rows are stored in id order, ~1 KiB each).
const AROUND_LOCK_PAGE: std::ops::Range<i64> = 1_000_000..1_100_000;
const LOCK_BYTE_OFFSET: u64 = 1 << 30;

fn insert_range(c: &Connection, from: i64, to: i64, tag: &str) {
    c.execute(
        &format!(
            "WITH RECURSIVE n(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM n WHERE x < ?2)
             INSERT INTO big(id, tag, body) SELECT x, '{tag}', printf('%d:%0{}d', x, x) FROM n",
            ROW_BYTES - 8
        ),
        [from, to],
    )
    .expect("insert rows");
}

fn page_count(c: &Connection) -> u64 {
    c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0)).expect("page_count") as u64
}

/// Fills a new database with `INITIAL_ROWS` rows, without a journal (fast), then switches it
/// to WAL.
fn create(db: &Path, page_size: u32) {
    let c = Connection::open(db).expect("create");
    c.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
         CREATE TABLE big(id INTEGER PRIMARY KEY, tag TEXT NOT NULL, body TEXT NOT NULL);"
    ))
    .expect("schema");
    for chunk in (1..=INITIAL_ROWS).step_by(200_000) {
        insert_range(&c, chunk, (chunk + 199_999).min(INITIAL_ROWS), "initial");
    }
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("WAL");
    assert_eq!(mode, "wal");
    let pages = page_count(&c);
    assert!(pages * page_size as u64 > LOCK_BYTE_OFFSET, "only {pages} pages: not past the lock page");
}

/// Waits (up to 20 minutes: the first image of 1 GiB) until the daemon uploaded something.
fn wait_uploaded(d: &mut Daemon, port: u16) {
    let ok = wait_until(Duration::from_secs(1200), || {
        get_metrics(port)
            .and_then(|(code, body)| (code == 200).then_some(body))
            .and_then(|b| metric(&b, "sluice_replica_txid"))
            .is_some_and(|v| v > 0.0)
    });
    d.assert_running();
    assert!(ok, "no upload of the first image; log:\n{}", d.log_text());
}

/// Restores `txid` with both tools; both must equal the source state `want` (hash, pages).
fn check(url: &str, dir: &Path, txid: Option<u64>, want: &str, pages: u64, page_size: u32) {
    let mut shas = Vec::new();
    for tool in ["sluice", "litestream"] {
        let out = dir.join(format!("{tool}.db"));
        let t = Instant::now();
        restore(tool, url, &out, txid);
        let restore_s = t.elapsed().as_secs_f64();
        let what = format!("{tool} restore at {}", txid.map_or("latest".into(), |t| format!("{t:016x}")));
        let len = std::fs::metadata(&out).expect("restored file").len();
        assert_eq!(len, pages * page_size as u64, "{what}: file size");
        assert_eq!(hash::integrity_check(&out), "ok", "{what}: integrity_check");
        assert_eq!(hash::logical_sha256(&out), want, "{what}: content differs from the source");
        shas.push(hash::file_sha256(&out));
        std::fs::remove_file(&out).expect("remove restore");
        eprintln!(
            "{what}: ok ({len} bytes; restore {restore_s:.1} s, checks {:.1} s)",
            t.elapsed().as_secs_f64() - restore_s
        );
    }
    assert_eq!(shas[0], shas[1], "sluice and litestream restores differ byte for byte");
}

fn lock_page(page_size: u32) {
    let started = Instant::now();
    let lap = |what: &str| eprintln!("[{page_size}] {what} at {:.1} s", started.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("big.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let port = free_port();
    let config = dir.path().join("sluice.yml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:{port}\nl0-retention: 1h\nlevels:\n  - interval: 2s\nsnapshot:\n  interval: 5s\n  \
             retention: 1h\ndbs:\n  - path: {}\n    replica:\n      url: \"{url}\"\n      sync-interval: 500ms\n",
            db.display()
        ),
    )
    .expect("config");

    create(&db, page_size);
    let first = hash::logical_sha256(&db);
    let first_pages = page_count(&Connection::open(&db).expect("open"));
    lap(&format!(
        "created {first_pages} pages ({} MiB), lock page {}",
        (first_pages * page_size as u64) >> 20,
        LOCK_BYTE_OFFSET / page_size as u64 + 1
    ));

    let mut daemon = Daemon::start(&config, &[], &dir.path().join("daemon.log"));
    wait_uploaded(&mut daemon, port);
    lap("first image uploaded");

    let mid = write_while_replicating(&db, &config);
    lap(&format!("written; mid-way TXID {:x} ({} pages)", mid.txid, mid.pages));
    let pages = page_count(&Connection::open(&db).expect("open"));
    let txid = force_sync(&db, &config);
    // Let a level-1 compaction and a level-9 snapshot (merged from the replica's files) cover
    // the final TXID, so the latest restore goes through files that span the lock page.
    let merged = wait_until(Duration::from_secs(600), || {
        let l = sluice_ltx(&url);
        [1, 9].iter().all(|&level| l.iter().any(|f| f.level == level && f.max == txid))
    });
    assert!(merged, "no level-1 and level-9 files up to TXID {txid:x}: {:?}", sluice_ltx(&url));
    daemon.stop_ok();
    lap(&format!("synced to TXID {txid:x}, compacted, snapshotted and stopped"));

    let latest = hash::logical_sha256(&db);
    let out = dir.path().join("restores");
    std::fs::create_dir_all(&out).expect("restore dir");
    check(&url, &out, None, &latest, pages, page_size);
    lap("latest restores checked");
    check(&url, &out, Some(mid.txid), &mid.hash, mid.pages, page_size);
    lap("mid-way restores checked");
    check(&url, &out, Some(1), &first, first_pages, page_size);
    lap("first-image restores checked");
}

/// A state the replica must reproduce.
struct Synced {
    txid: u64,
    hash: String,
    pages: u64,
}

/// Commits while the daemon runs, each group synced into its own level-0 file: rewrite the
/// pages on both sides of the lock page, free pages below it, grow further past it (the state
/// returned, restored later through snapshot 1 + the files after it), then checkpoint and
/// write once more.
fn write_while_replicating(db: &Path, config: &Path) -> Synced {
    let c = Connection::open(db).expect("open");
    c.busy_timeout(Duration::from_secs(60)).expect("busy");
    c.execute_batch("PRAGMA synchronous=NORMAL").expect("synchronous");
    for (i, from) in AROUND_LOCK_PAGE.step_by(25_000).enumerate() {
        c.execute(
            "UPDATE big SET tag = ?1, body = replace(body, ':', '#') WHERE id BETWEEN ?2 AND ?3 AND id % 3 = 0",
            rusqlite::params![format!("touched-{i}"), from, from + 24_999],
        )
        .expect("update around the lock page");
        force_sync(db, config);
    }
    c.execute("DELETE FROM big WHERE id BETWEEN 500000 AND 520000", []).expect("delete");
    let mut next = INITIAL_ROWS + 1;
    for _ in 0..4 {
        insert_range(&c, next, next + 19_999, "grown");
        next += 20_000;
        force_sync(db, config);
    }
    let mid = Synced {
        txid: force_sync(db, config),
        hash: hash::logical_sha256_conn(&c).expect("hash"),
        pages: page_count(&c),
    };
    let r: (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("checkpoint");
    eprintln!("application TRUNCATE checkpoint: {r:?}");
    insert_range(&c, next, next + 999, "last");
    c.execute("UPDATE big SET tag = 'last' WHERE id % 1000 = 0", []).expect("update across the file");
    mid
}

#[test]
#[ignore = "1.1 GiB database; run by bench/lock_page.sh"]
fn lock_page_4k() {
    lock_page(4096);
}

#[test]
#[ignore = "1.1 GiB database; run by bench/lock_page.sh"]
fn lock_page_64k() {
    lock_page(65536);
}
