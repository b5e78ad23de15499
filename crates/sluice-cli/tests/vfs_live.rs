//! The VFS extension reading a replica while a replicator keeps writing to it: the real
//! `sluice replicate` binary, and the real `litestream replicate` 0.5.17.
//!
//! The source database (WAL, written by this test) holds `kv(k, v, gen)`, `acct(id, bal)`
//! and `meta(gen)`. Transaction `g` sets `meta.gen = g`, rewrites a few `kv` rows as
//! `v = value(k, g), gen = g`, inserts key `KEYS + g`, and moves money between two accounts
//! (the total never changes). Every write is recorded (before its commit) in a [`History`],
//! so a reader's result can be checked against the exact state of generation `meta.gen`:
//! a row is right only if it is the last write to its key at or before that generation.
//!
//! * eight threads, each with its own connection, run random point queries for 10 s: no
//!   error, every row consistent with the generation the same statement saw;
//! * one read transaction checks the invariants across many statements while new
//!   transactions land and other connections see them: it keeps one generation and TXID;
//! * new transactions become visible to a reader (within the poll and sync intervals; the
//!   delays are printed, the test only bounds them at 60 s), from both replicators.
//!
//! Randomized: the seed is printed (`SEED=`) and can be replayed with `SEED=<n>`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::{Daemon, Rng, free_port, open_app, wait_ready};
use rusqlite::{Connection, OptionalExtension, params};
use sluice_testkit::peer;
use sluice_testkit::process::{ChildGuard, wait_until};
use sluice_testkit::vfs;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for anything the test waits for (not an expectation).
const PATIENCE: Duration = Duration::from_secs(60);
const KEYS: i64 = 2000;
const ACCOUNTS: i64 = 50;
const TOTAL: i64 = ACCOUNTS * 1000;
const POLL: &str = "200ms";

fn value(k: i64, gn: u64) -> i64 {
    (k.wrapping_mul(1_000_003) ^ (gn as i64).wrapping_mul(7_919)) & 0x7fff_ffff
}

/// Every write to `kv`, by key: the generations that wrote it, ascending (0 = initial load).
#[derive(Default)]
struct History {
    writes: HashMap<i64, Vec<u64>>,
    /// Highest generation recorded (its commit may still be in flight).
    last: u64,
}

impl History {
    /// Checks one point-query result against the state of generation `m`.
    fn check(&self, k: i64, m: u64, row: Option<(i64, i64)>) -> Result<(), String> {
        if m > self.last {
            return Err(format!("generation {m} was never written (last {})", self.last));
        }
        let expected = self.writes.get(&k).and_then(|gens| gens.iter().rev().find(|g| **g <= m)).copied();
        match (expected, row) {
            (None, None) => Ok(()),
            (Some(g), Some((v, gn))) if gn == g as i64 && v == value(k, g) => Ok(()),
            (e, r) => Err(format!("key {k} at generation {m}: expected write of generation {e:?}, read {r:?}")),
        }
    }
}

/// The source database and the transactions written to it.
struct Source {
    db: PathBuf,
    conn: Connection,
    rng: Rng,
    current: u64,
    history: Arc<RwLock<History>>,
}

impl Source {
    fn create(dir: &Path, seed: u64) -> Source {
        let db = dir.join("app.db");
        let conn = open_app(&db, Duration::from_secs(5));
        conn.execute_batch(
            "CREATE TABLE meta(id INTEGER PRIMARY KEY CHECK (id = 1), gen INTEGER NOT NULL);
             CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER NOT NULL, gen INTEGER NOT NULL, pad BLOB);
             CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL);
             INSERT INTO meta VALUES (1, 0);",
        )
        .unwrap();
        let mut history = History::default();
        let tx = conn.unchecked_transaction().unwrap();
        for k in 1..=KEYS {
            tx.execute("INSERT INTO kv VALUES (?1, ?2, 0, randomblob(300))", params![k, value(k, 0)]).unwrap();
            history.writes.insert(k, vec![0]);
        }
        for a in 1..=ACCOUNTS {
            tx.execute("INSERT INTO acct VALUES (?1, 1000)", [a]).unwrap();
        }
        tx.commit().unwrap();
        Source { db, conn, rng: Rng::new(seed), current: 0, history: Arc::new(RwLock::new(history)) }
    }

    /// Commits the next generation.
    fn commit(&mut self) -> u64 {
        let g = self.current + 1;
        let keys: Vec<i64> = (0..8).map(|_| 1 + self.rng.below(KEYS as u64) as i64).collect();
        {
            let mut h = self.history.write().unwrap();
            for k in keys.iter().copied().chain([KEYS + g as i64]) {
                let gens = h.writes.entry(k).or_default();
                if gens.last() != Some(&g) {
                    gens.push(g);
                }
            }
            h.last = g;
        }
        let (from, to) = (1 + self.rng.below(ACCOUNTS as u64) as i64, 1 + self.rng.below(ACCOUNTS as u64) as i64);
        let amount = self.rng.below(100) as i64;
        let tx = self.conn.unchecked_transaction().unwrap();
        tx.execute("UPDATE meta SET gen = ?1", [g as i64]).unwrap();
        for k in keys {
            tx.execute("UPDATE kv SET v = ?2, gen = ?3 WHERE k = ?1", params![k, value(k, g), g as i64]).unwrap();
        }
        tx.execute(
            "INSERT INTO kv VALUES (?1, ?2, ?3, randomblob(300))",
            params![KEYS + g as i64, value(KEYS + g as i64, g), g as i64],
        )
        .unwrap();
        tx.execute("UPDATE acct SET bal = bal - ?2 WHERE id = ?1", params![from, amount]).unwrap();
        tx.execute("UPDATE acct SET bal = bal + ?2 WHERE id = ?1", params![to, amount]).unwrap();
        tx.commit().unwrap();
        self.current = g;
        g
    }
}

/// One point query in one statement (one read transaction): (generation, row).
fn point(conn: &Connection, k: i64) -> rusqlite::Result<(u64, Option<(i64, i64)>)> {
    conn.query_row("SELECT (SELECT gen FROM meta), kv.v, kv.gen FROM (SELECT 1) LEFT JOIN kv ON kv.k = ?1", [k], |r| {
        let m: i64 = r.get(0)?;
        let v: Option<i64> = r.get(1)?;
        let g: Option<i64> = r.get(2)?;
        Ok((m as u64, v.zip(g)))
    })
}

fn generation(conn: &Connection) -> u64 {
    conn.query_row("SELECT gen FROM meta", [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

fn total(conn: &Connection) -> i64 {
    conn.query_row("SELECT sum(bal) FROM acct", [], |r| r.get(0)).unwrap()
}

fn reader(url: &str) -> Connection {
    vfs::open(url, &[("poll", POLL)]).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `sluice replicate` of `src` to `url`, ready (it uploaded something).
fn start_sluice(dir: &Path, src: &Source, url: &str) -> Daemon {
    let port = free_port();
    let config = dir.join("sluice.yml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:{port}\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    \
             replica: {{url: \"{url}\", sync-interval: 200ms}}\n",
            src.db.display()
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&config, &[], &dir.join("sluice.log"));
    wait_ready(&mut d, port);
    d
}

/// `litestream replicate` of `src` to the `file://` replica at `replica`, ready (an L0 file
/// exists).
fn start_litestream(dir: &Path, src: &Source, replica: &Path) -> ChildGuard {
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: '{}'\n    monitor-interval: 200ms\n    replica:\n      url: 'file://{}'\n      \
             sync-interval: 200ms\n",
            src.db.display(),
            replica.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("litestream.log")).unwrap();
    let mut cmd = peer::litestream_command();
    cmd.args(["replicate", "-config"]).arg(&config).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    let mut guard = ChildGuard::spawn(&mut cmd);
    let l0 = replica.join("ltx").join("0");
    let ready = wait_until(PATIENCE, || std::fs::read_dir(&l0).is_ok_and(|mut d| d.next().is_some()));
    assert!(ready && guard.try_wait().is_none(), "litestream did not replicate; log:\n{}", log_of(dir));
    guard
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("litestream.log")).unwrap_or_default()
}

#[test]
fn eight_readers_see_consistent_states_while_sluice_replicates() {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("replica").display());
    let mut src = Source::create(tmp.path(), seed);
    let mut daemon = start_sluice(tmp.path(), &src, &url);
    let history = src.history.clone();
    let stop = AtomicBool::new(false);
    let (queries, lowest, highest) = (AtomicU64::new(0), AtomicU64::new(u64::MAX), AtomicU64::new(0));
    let failures: std::sync::Mutex<Vec<String>> = Default::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                src.commit();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let readers: Vec<_> = (0..8u64)
            .map(|i| {
                let (url, history, failures) = (&url, &history, &failures);
                let (queries, lowest, highest) = (&queries, &lowest, &highest);
                s.spawn(move || {
                    let conn = reader(url);
                    let mut rng = Rng::new(seed ^ (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let end = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < end {
                        let k = 1 + rng.below(KEYS as u64 + 500) as i64;
                        let checked = match point(&conn, k) {
                            Ok((m, row)) => {
                                lowest.fetch_min(m, Ordering::Relaxed);
                                highest.fetch_max(m, Ordering::Relaxed);
                                history.read().unwrap().check(k, m, row)
                            }
                            Err(e) => Err(format!("query error: {e}")),
                        };
                        if queries.fetch_add(1, Ordering::Relaxed) % 64 == 0 && total(&conn) != TOTAL {
                            failures.lock().unwrap().push("the accounts' total changed".into());
                        }
                        if let Err(e) = checked {
                            failures.lock().unwrap().push(format!("reader {i}: {e}"));
                        }
                    }
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
    });
    daemon.stop_ok();
    let failures = failures.into_inner().unwrap();
    let (lo, hi) = (lowest.into_inner(), highest.into_inner());
    eprintln!("{} point queries by 8 readers saw generations {lo}..={hi} of {}", queries.into_inner(), src.current);
    assert!(failures.is_empty(), "{} failures, first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(hi > lo, "the replica never changed while the readers ran");
}

#[test]
fn a_read_transaction_keeps_one_view_while_writes_land() {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("replica").display());
    let mut src = Source::create(tmp.path(), seed);
    let mut daemon = start_sluice(tmp.path(), &src, &url);
    let history = src.history.clone();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                src.commit();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let conn = reader(&url);
        let other = reader(&url);
        let mut rng = Rng::new(seed);
        conn.execute_batch("BEGIN").unwrap();
        let g0 = generation(&conn);
        let txid0 = vfs::txid(&conn).unwrap();
        let (mut statements, start) = (0, Instant::now());
        // Until another connection has seen several newer transactions.
        while generation(&other) < g0 + 5 {
            assert!(start.elapsed() < PATIENCE, "the replica did not advance past generation {g0}");
            assert_eq!(generation(&conn), g0, "after {statements} statements");
            assert_eq!(vfs::txid(&conn).unwrap(), txid0, "after {statements} statements");
            assert_eq!(total(&conn), TOTAL);
            for _ in 0..20 {
                let k = 1 + rng.below(KEYS as u64 + 200) as i64;
                let (m, row) = point(&conn, k).unwrap();
                assert_eq!(m, g0);
                history.read().unwrap().check(k, m, row).unwrap();
            }
            statements += 23;
        }
        let newer = generation(&other);
        conn.execute_batch("COMMIT").unwrap();
        eprintln!("{statements} statements at generation {g0} (TXID {txid0}) while others reached {newer}");
        assert!(generation(&conn) >= newer, "the next transaction sees the newer state");
        assert_ne!(vfs::txid(&conn).unwrap(), txid0);
        stop.store(true, Ordering::SeqCst);
    });
    daemon.stop_ok();
}

/// Commits a few generations one at a time and waits for a reader to see each; prints the
/// delays. Then compares the application tables through the VFS with the source.
fn follow(src: &mut Source, url: &str, who: &str) {
    let conn = reader(url);
    let mut delays = Vec::new();
    for _ in 0..6 {
        let g = src.commit();
        let t = Instant::now();
        let seen = wait_until(PATIENCE, || generation(&conn) >= g);
        assert!(seen, "{who}: generation {g} not visible after {PATIENCE:?} (reader at {})", generation(&conn));
        delays.push(t.elapsed());
        let history = src.history.read().unwrap();
        for k in [1, KEYS / 2, KEYS, KEYS + g as i64] {
            let (m, row) = point(&conn, k).unwrap();
            history.check(k, m, row).unwrap_or_else(|e| panic!("{who}: {e}"));
        }
    }
    eprintln!("{who}: new transactions visible to a reader after {delays:?} (poll {POLL}, sync 200ms)");
    let digest = |c: &Connection| -> (i64, i64, i64, i64) {
        c.query_row("SELECT count(*), sum(v), sum(gen), (SELECT sum(bal) FROM acct) FROM kv", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
    };
    assert_eq!(digest(&conn), digest(&src.conn), "{who}: the reader's tables equal the source's");
    assert_eq!(vfs::integrity_check(&conn).unwrap(), "ok");
    let lag: Option<i64> = conn.query_row("SELECT sluice_lag()", [], |r| r.get(0)).optional().unwrap().flatten();
    assert!(lag.is_some_and(|l| l >= 0), "{who}: sluice_lag() = {lag:?}");
}

#[test]
fn a_reader_follows_sluice_replicate() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("replica").display());
    let mut src = Source::create(tmp.path(), sluice_testkit::seed());
    let mut daemon = start_sluice(tmp.path(), &src, &url);
    follow(&mut src, &url, "sluice replicate");
    daemon.stop_ok();
}

#[test]
fn a_reader_follows_litestream_replicate() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = tmp.path().join("replica");
    let mut src = Source::create(tmp.path(), sluice_testkit::seed());
    let mut litestream = start_litestream(tmp.path(), &src, &replica);
    follow(&mut src, &format!("file://{}", replica.display()), "litestream replicate");
    let (_, clean) = litestream.stop("TERM", Duration::from_secs(60));
    assert!(clean, "litestream did not stop; log:\n{}", log_of(tmp.path()));
}
