//! Operational behaviour of `sluice replicate` (the daemon), end to end through the CLI:
//!
//! * (a) application checkpoints (TRUNCATE / RESTART / PASSIVE, many times) while a writer
//!   commits numbered rows continuously lose nothing: every committed row is in the restore;
//! * (b) with a small checkpoint threshold the daemon checkpoints often under its write barrier,
//!   yet a writer with busy_timeout 2 s never gets SQLITE_BUSY and the WAL stays bounded;
//! * (c) `--exec`: the child's exit status becomes the daemon's; SIGTERM reaches the child;
//! * (d) `/metrics` serves `sluice_replica_txid` equal to the TXID `sluice sync` printed;
//! * (e) compaction to level 1 and new level-9 snapshots happen on their intervals;
//! * (f) a restart after writes made while the daemon was down continues the TXID sequence
//!   without a gap, and the restore equals the source;
//! * a forced `sluice sync` racing the background uploader must neither fail nor kill the daemon.
//!
//! Randomized payloads print their seed (`SEED=`), replay with `SEED=<n>`.
//! Run via `scripts/test -p sluice-cli` (the restores compare with the real Litestream).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    DAEMON_DEADLINE, Daemon, Listed, Rng, checkpoint, force_sync, free_port, get_metrics, metric, open_app, restore,
    run, sluice, sluice_ltx, text, wait_ready,
};
use rusqlite::{Connection, params};
use sluice_testkit::hash;
use sluice_testkit::process::wait_until;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------

/// A fresh database + config in a temp dir.
struct Setup {
    dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
    url: String,
    port: u16,
}

impl Setup {
    /// `db_extra` / `top_extra`: YAML lines added to the db entry (indented 4) / the top level.
    fn new(top_extra: &str, db_extra: &str, sync_interval: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("app.db");
        let url = format!("file://{}", dir.path().join("replica").display());
        let port = free_port();
        let config = dir.path().join("sluice.yml");
        let mut y = format!("addr: 127.0.0.1:{port}\nl0-retention: 1h\n{top_extra}");
        y.push_str(&format!(
            "dbs:\n  - path: {}\n    monitor-interval: 100ms\n{db_extra}    replica: {{url: \"{url}\", sync-interval: {sync_interval}}}\n",
            db.display()
        ));
        std::fs::write(&config, &y).expect("write config");
        eprintln!("config:\n{y}");
        Setup { dir, db, config, url, port }
    }

    fn start(&self, extra: &[&str]) -> Daemon {
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        Daemon::start(&self.config, extra, &self.dir.path().join(format!("daemon-{n}.log")))
    }

    fn start_ready(&self) -> Daemon {
        let mut d = self.start(&[]);
        wait_ready(&mut d, self.port);
        d
    }

    /// Restores latest with both tools; asserts integrity and equality with the source hash.
    #[track_caller]
    fn check_restores(&self, tag: &str, want: &str, txid: Option<u64>) {
        for tool in ["sluice", "litestream"] {
            let out = self.dir.path().join(format!("restore-{tag}-{tool}.db"));
            restore(tool, &self.url, &out, txid);
            assert_eq!(hash::integrity_check(&out), "ok", "{tool} restore {tag}: integrity_check");
            assert_eq!(hash::logical_sha256(&out), want, "{tool} restore {tag} differs from the source");
        }
    }
}

fn create_numbered(db: &Path) -> Connection {
    let app = open_app(db, Duration::from_secs(5));
    app.execute_batch("CREATE TABLE n(id INTEGER PRIMARY KEY, v BLOB NOT NULL);").expect("schema");
    app
}

fn ids(db: &Path) -> Vec<i64> {
    let c = hash::open_read_only(db).expect("open restore");
    let mut st = c.prepare("SELECT id FROM n ORDER BY id").unwrap();
    st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

/// Level-0 files must chain without a gap from TXID 1 to `last`.
#[track_caller]
fn assert_l0_contiguous(listing: &[Listed], last: u64) {
    let mut l0: Vec<Listed> = listing.iter().copied().filter(|f| f.level == 0).collect();
    l0.sort();
    assert!(!l0.is_empty(), "no level-0 files");
    assert_eq!(l0[0].min, 1, "first level-0 file does not start at TXID 1: {l0:?}");
    for w in l0.windows(2) {
        assert_eq!(w[1].min, w[0].max + 1, "gap or overlap between level-0 files {:?} and {:?}: {l0:?}", w[0], w[1]);
    }
    assert_eq!(
        l0.last().unwrap().max,
        last,
        "level-0 files end at {:#x}, not at the synced TXID {last:#x}",
        l0.last().unwrap().max
    );
}

/// Sync interval: short, so background uploads run concurrently with the forced syncs of
/// `sluice sync` (they must serialise; `forced_sync_concurrent_with_background_upload`).
const QUIET: &str = "200ms";

// ---------------------------------------------------------------------------------------------
// (a)

#[test]
fn app_checkpoints_during_continuous_replication_lose_nothing() {
    let seed = sluice_testkit::seed();
    let s = Setup::new("", "    checkpoint-interval: 1s\n    min-checkpoint-page-count: 200\n", QUIET);
    let app = create_numbered(&s.db);
    app.execute("INSERT INTO n VALUES (0, x'00')", []).unwrap();
    let mut daemon = s.start_ready();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (s.db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let c = open_app(&db, Duration::from_secs(5));
            let (mut committed, mut errors) = (vec![0i64], Vec::new());
            let mut id = 1i64;
            while !stop.load(Ordering::Relaxed) {
                let len = 50 + rng.below(3000) as usize;
                match c.execute("INSERT INTO n VALUES (?1, ?2)", params![id, rng.bytes(len)]) {
                    Ok(_) => committed.push(id),
                    Err(e) => errors.push(format!("id {id}: {e}")),
                }
                id += 1;
            }
            (committed, errors)
        })
    };

    let ck = open_app(&s.db, Duration::from_secs(2));
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut stats: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new(); // mode -> (complete, busy, error)
    for i in 0..45 {
        let mode = ["TRUNCATE", "RESTART", "PASSIVE"][i % 3];
        let e = stats.entry(mode).or_default();
        match checkpoint(&ck, mode) {
            Ok((0, _, _)) => e.0 += 1,
            Ok(_) => e.1 += 1,
            Err(err) => {
                e.2 += 1;
                eprintln!("app checkpoint {mode}: {err}");
            }
        }
        // Pacing between checkpoints so the writer commits in between (not a wait for an effect).
        std::thread::sleep(Duration::from_millis(10 + rng.below(40)));
    }
    stop.store(true, Ordering::Relaxed);
    let (committed, errors) = writer.join().expect("writer thread");
    eprintln!("app checkpoints (complete, busy, error) by mode: {stats:?}; committed rows: {}", committed.len());
    assert!(errors.is_empty(), "writer errors (busy_timeout 5 s): {errors:?}");
    assert!(committed.len() > 100, "writer committed only {} rows", committed.len());
    let restarts = stats.get("TRUNCATE").map_or(0, |s| s.0) + stats.get("RESTART").map_or(0, |s| s.0);
    assert!(
        restarts > 0,
        "no application TRUNCATE/RESTART checkpoint completed, so the test proved nothing: {stats:?}"
    );

    let txid = force_sync(&s.db, &s.config);
    daemon.stop_ok();
    let want = hash::logical_sha256(&s.db);
    assert_eq!(ids(&s.db), committed, "source lost rows?!");
    s.check_restores("latest", &want, None);
    let restored = s.dir.path().join("restore-latest-sluice.db");
    assert_eq!(ids(&restored), committed, "restored ids differ from the committed ones");
    assert_l0_contiguous(&sluice_ltx(&s.url), txid);
}

// ---------------------------------------------------------------------------------------------
// (b)

#[test]
fn daemon_checkpoints_never_block_app_beyond_busy_timeout_and_bound_the_wal() {
    const THRESHOLD: u64 = 50;
    let seed = sluice_testkit::seed();
    let s =
        Setup::new("", &format!("    checkpoint-interval: 1s\n    min-checkpoint-page-count: {THRESHOLD}\n"), QUIET);
    let app = create_numbered(&s.db);
    let page_size: i64 = app.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    let page_size = page_size as u64;
    let mut daemon = s.start_ready();

    let wal = PathBuf::from(format!("{}-wal", s.db.display()));
    let stop = Arc::new(AtomicBool::new(false));
    let max_wal = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_wal) = (stop.clone(), max_wal.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                max_wal.fetch_max(len, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let mut rng = Rng::new(seed);
    let c = open_app(&s.db, Duration::from_secs(2));
    let (mut busy, mut other, mut committed) = (0u32, Vec::new(), 0u32);
    let mut slowest = Duration::ZERO;
    for id in 0..2500i64 {
        let t = Instant::now();
        let len = 100 + rng.below(400) as usize;
        let r = if id % 10 == 9 {
            // Now and then a transaction touching several pages.
            let victim = rng.below(id as u64) as i64;
            c.execute_batch("BEGIN IMMEDIATE").and_then(|_| {
                c.execute("INSERT INTO n VALUES (?1, ?2)", params![id, rng.bytes(len)])?;
                c.execute("UPDATE n SET v = randomblob(300) WHERE id = ?1", params![victim])?;
                c.execute_batch("COMMIT")
            })
        } else {
            c.execute("INSERT INTO n VALUES (?1, ?2)", params![id, rng.bytes(len)]).map(|_| ())
        };
        slowest = slowest.max(t.elapsed());
        match r {
            Ok(()) => committed += 1,
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                busy += 1;
                let _ = c.execute_batch("ROLLBACK");
            }
            Err(e) => {
                other.push(format!("{id}: {e}"));
                let _ = c.execute_batch("ROLLBACK");
            }
        }
        // An application does other work between transactions.
        std::thread::sleep(Duration::from_micros(500));
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let body = get_metrics(s.port).map(|(_, b)| b).unwrap_or_default();
    let checkpoints = metric(&body, "sluice_checkpoints_total").unwrap_or(0.0);
    let max_wal = max_wal.load(Ordering::Relaxed);
    let frame = page_size + 24;
    eprintln!(
        "committed {committed}, busy {busy}, other errors {other:?}, slowest commit {slowest:?}, daemon checkpoints {checkpoints}, max WAL {max_wal} bytes = {} frames",
        max_wal.saturating_sub(32) / frame
    );
    assert_eq!(busy, 0, "the writer got SQLITE_BUSY (busy_timeout 2 s) {busy} times");
    assert!(other.is_empty(), "writer errors: {other:?}");
    assert!(
        checkpoints >= 3.0,
        "the daemon checkpointed only {checkpoints} times; the test needs it to checkpoint often"
    );
    // Bound: the daemon looks at the WAL size every 100 ms (and captures every monitor-interval,
    // 100 ms) and checkpoints once it holds >= THRESHOLD frames; after a complete checkpoint the
    // application's next commit restarts the WAL from its start, so the file's high-water mark is
    // THRESHOLD frames plus what the writer commits during one detection + capture + checkpoint
    // round (up to ~200 ms; this writer, ~1-3 frames per commit then a pause, measured ~3.5x
    // THRESHOLD at most). 20x THRESHOLD leaves room for a daemon starved for a second on a
    // loaded 2-core machine (another test's writer and daemon share it) while still catching
    // a WAL that checkpoints do not keep in check: without them this workload grows the WAL to
    // ~3000+ frames (3x the bound).
    let bound = 20 * THRESHOLD * frame + 32;
    assert!(
        max_wal <= bound,
        "WAL grew to {max_wal} bytes (> {bound} = 20 x {THRESHOLD} frames of {frame} bytes + header)"
    );

    let txid = force_sync(&s.db, &s.config);
    daemon.stop_ok();
    let want = hash::logical_sha256(&s.db);
    s.check_restores("latest", &want, None);
    assert_l0_contiguous(&sluice_ltx(&s.url), txid);
}

// ---------------------------------------------------------------------------------------------
// (c)

#[test]
fn exec_child_exit_status_becomes_the_daemons() {
    let s = Setup::new("", "", QUIET);
    drop(create_numbered(&s.db));
    let mut d = s.start(&["--exec", "sh -c 'exit 7'"]);
    let status = d.guard.wait_timeout(DAEMON_DEADLINE);
    let status = status.unwrap_or_else(|| {
        panic!("daemon still running {DAEMON_DEADLINE:?} after its child exited; log:\n{}", d.log_text())
    });
    assert_eq!(status.code(), Some(7), "daemon exit status; log:\n{}", d.log_text());
}

/// The pid of the process whose argv is exactly `argv`, if any.
fn find_process(argv: &[&str]) -> Option<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()).find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // A zombie has an empty cmdline anyway; also skip it explicitly.
        (cmdline == want && !stat.contains(") Z ")).then_some(pid)
    })
}

/// Kills (by pid) a leftover child the test caused, so a failing test does not leave it behind.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
    }
}

#[test]
fn sigterm_is_forwarded_to_the_exec_child_and_the_daemon_exits_promptly() {
    let s = Setup::new("", "", QUIET);
    drop(create_numbered(&s.db));
    // A unique argument so the child can be found among the machine's processes.
    let secs = format!("60.{:06}", sluice_testkit::seed::random_u64() % 1_000_000);
    let mut d = s.start(&["--exec", &format!("sleep {secs}")]);
    wait_ready(&mut d, s.port);
    let mut found = None;
    assert!(
        wait_until(DAEMON_DEADLINE, || {
            found = find_process(&["sleep", &secs]);
            found.is_some()
        }),
        "the --exec child `sleep {secs}` never showed up"
    );
    let sleep_pid = found.unwrap();
    let _cleanup = KillOnDrop(Some(sleep_pid));
    eprintln!("exec child sleep {secs} has pid {sleep_pid}");

    let t = Instant::now();
    let status = d.stop();
    eprintln!("daemon exited {status:?} {:?} after SIGTERM", t.elapsed());
    let gone = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{sleep_pid}/cmdline")).map_or(true, |c| !c.starts_with("sleep"))
            || std::fs::read_to_string(format!("/proc/{sleep_pid}/stat")).is_ok_and(|st| st.contains(") Z "))
    });
    assert!(
        gone,
        "the --exec child `sleep {secs}` (pid {sleep_pid}) is still running after the daemon exited: \
         SIGTERM was not forwarded to it; log:\n{}",
        d.log_text()
    );
    assert!(status.success() || status.code().is_some(), "daemon status {status:?}");
}

// ---------------------------------------------------------------------------------------------
// (d)

#[test]
fn metrics_endpoint_reports_the_synced_txid() {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let s = Setup::new("", "", QUIET);
    let app = create_numbered(&s.db);
    let mut d = s.start_ready();
    for round in 0..3 {
        for i in 0..20 {
            let len = 10 + rng.below(2000) as usize;
            app.execute("INSERT INTO n VALUES (?1, ?2)", params![round * 100 + i, rng.bytes(len)]).unwrap();
        }
        let txid = force_sync(&s.db, &s.config);
        let (code, body) = get_metrics(s.port).expect("/metrics answers");
        assert_eq!(code, 200, "GET /metrics status; body:\n{body}");
        let replica =
            metric(&body, "sluice_replica_txid").unwrap_or_else(|| panic!("no sluice_replica_txid in:\n{body}"));
        assert_eq!(replica, txid as f64, "sluice_replica_txid vs `sluice sync` TXID {txid:016x}; metrics:\n{body}");
        let local = metric(&body, "sluice_local_txid").unwrap_or_else(|| panic!("no sluice_local_txid in:\n{body}"));
        assert_eq!(local, txid as f64, "sluice_local_txid after a sync with no later writes; metrics:\n{body}");
        let lag = metric(&body, "sluice_replication_lag_seconds").unwrap_or_else(|| panic!("no lag in:\n{body}"));
        assert_eq!(lag, 0.0, "replication lag right after a sync with no later writes; metrics:\n{body}");
        for name in ["sluice_checkpoints_total", "sluice_uploaded_files_total", "sluice_errors_total"] {
            assert!(metric(&body, name).is_some(), "{name} missing from:\n{body}");
        }
        assert_eq!(metric(&body, "sluice_uploaded_files_total").map(|v| v >= 1.0), Some(true), "{body}");
    }
    // Other paths are 404.
    let mut sock = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    sock.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 404"), "GET /nope: {resp:?}");
    d.stop_ok();
}

// ---------------------------------------------------------------------------------------------
// (e)

#[test]
fn compaction_and_snapshots_happen_on_their_intervals() {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let s = Setup::new("levels: [{interval: 1s}]\nsnapshot: {interval: 2s, retention: 1h}\n", "", QUIET);
    let app = create_numbered(&s.db);
    let mut d = s.start_ready();
    let mut write = |from: i64, n: i64| {
        for i in from..from + n {
            let len = 10 + rng.below(3000) as usize;
            app.execute("INSERT INTO n VALUES (?1, ?2)", params![i, rng.bytes(len)]).unwrap();
        }
    };
    write(0, 30);
    let t1 = force_sync(&s.db, &s.config);
    write(100, 30);
    let t2 = force_sync(&s.db, &s.config);
    let h2 = hash::logical_sha256(&s.db);

    let mut listing = Vec::new();
    let l1 = wait_until(Duration::from_secs(20), || {
        listing = sluice_ltx(&s.url);
        listing.iter().any(|f| f.level == 1 && f.max >= t2)
    });
    assert!(
        l1,
        "no level-1 file reaching TXID {t2:#x} within 20 s (levels: [1s]); listing {listing:?}; log:\n{}",
        d.log_text()
    );
    let snap_before = listing.iter().filter(|f| f.level == 9).map(|f| f.max).max().unwrap_or(0);

    write(200, 40);
    let t3 = force_sync(&s.db, &s.config);
    let snap = wait_until(Duration::from_secs(20), || {
        listing = sluice_ltx(&s.url);
        listing.iter().any(|f| f.level == 9 && f.max >= t3)
    });
    assert!(
        snap,
        "no new level-9 snapshot at TXID >= {t3:#x} within 20 s (snapshot interval 2 s; previous snapshot {snap_before:#x}); listing {listing:?}; log:\n{}",
        d.log_text()
    );
    for f in listing.iter().filter(|f| f.level == 9) {
        assert_eq!(f.min, 1, "snapshot files start at TXID 1: {f:?}");
    }
    d.stop_ok();
    let want = hash::logical_sha256(&s.db);
    s.check_restores("latest", &want, None);
    s.check_restores("t2", &h2, Some(t2));
    assert!(t1 < t2 && t2 < t3);
    assert_l0_contiguous(&sluice_ltx(&s.url), t3);
}

// ---------------------------------------------------------------------------------------------
// (f)

#[test]
fn restart_after_offline_writes_continues_without_gaps() {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let s = Setup::new("", "    checkpoint-interval: 1s\n", QUIET);
    let app = create_numbered(&s.db);
    let mut next = 0i64;
    let mut write = |app: &Connection, n: i64| {
        for _ in 0..n {
            let len = 10 + rng.below(2000) as usize;
            app.execute("INSERT INTO n VALUES (?1, ?2)", params![next, rng.bytes(len)]).unwrap();
            next += 1;
        }
    };
    write(&app, 20);
    let mut d = s.start_ready();
    write(&app, 20);
    let t1 = force_sync(&s.db, &s.config);
    d.stop_ok();

    // 1. Plain writes while the daemon is down (same WAL generation).
    write(&app, 25);
    let mut d = s.start_ready();
    write(&app, 5);
    let t2 = force_sync(&s.db, &s.config);
    assert!(t2 > t1);
    let h2 = hash::logical_sha256(&s.db);
    d.stop_ok();
    s.check_restores("restart1", &h2, None);
    assert_l0_contiguous(&sluice_ltx(&s.url), t2);

    // 2. Writes, an application TRUNCATE checkpoint (nobody holds a read lock now, so it
    // completes and the WAL starts over) and more writes while the daemon is down.
    write(&app, 25);
    let r = checkpoint(&app, "TRUNCATE").expect("TRUNCATE while the daemon is down");
    assert_eq!(r.0, 0, "TRUNCATE checkpoint without a daemon should complete: {r:?}");
    write(&app, 25);
    let mut d = s.start_ready();
    let t3 = force_sync(&s.db, &s.config);
    assert!(t3 > t2);
    let h3 = hash::logical_sha256(&s.db);
    d.stop_ok();
    s.check_restores("restart2", &h3, None);
    s.check_restores("restart2-at-t2", &h2, Some(t2));
    let listing = sluice_ltx(&s.url);
    eprintln!("listing after two restarts: {listing:?}");
    assert_l0_contiguous(&listing, t3);
}

// ---------------------------------------------------------------------------------------------
// Forced sync vs the background uploader.

/// `sluice sync` makes the daemon capture and upload at once (service.rs, `Request::Sync` →
/// `upload_pending`), while the uploader task may be uploading the same pending local L0 files
/// (`upload_loop` → `upload_pending`). Nothing serializes the two, so both PUT the same
/// `<min>-<max>.ltx`; the loser gets "already exists" and reports a Conflict ("another writer is
/// replicating to this replica"). If the loser is the uploader task, replication stops and the
/// daemon exits 1. A short sync-interval, a busy writer and a few forced syncs reproduce it.
#[test]
fn forced_sync_concurrent_with_background_upload() {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let s = Setup::new("", "", "100ms");
    let app = create_numbered(&s.db);
    let mut d = s.start_ready();
    // A background writer keeps the uploader busy (a capture, hence an upload, every 100 ms).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (s.db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed ^ 0xbeef);
            let c = open_app(&db, Duration::from_secs(5));
            let mut id = 1_000_000i64;
            while !stop.load(Ordering::Relaxed) {
                let len = 100 + rng.below(2000) as usize;
                c.execute("INSERT INTO n VALUES (?1, ?2)", params![id, rng.bytes(len)]).expect("writer insert");
                id += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut failures = Vec::new();
    for i in 0..30i64 {
        let len = 100 + rng.below(4000) as usize;
        app.execute("INSERT INTO n VALUES (?1, ?2)", params![i, rng.bytes(len)]).unwrap();
        let out = run(sluice().arg("sync").arg("--config").arg(&s.config).arg(&s.db));
        if !out.status.success() {
            failures.push(format!("sync {i}: {}", text(&out.stderr).trim()));
        }
        if let Some(st) = d.guard.try_wait() {
            failures.push(format!("daemon exited {st:?} during the test"));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(failures.is_empty(), "forced syncs failed:\n{}\ndaemon log:\n{}", failures.join("\n"), d.log_text());
    let last = force_sync(&s.db, &s.config);
    d.stop_ok();
    let want = hash::logical_sha256(&s.db);
    s.check_restores("latest", &want, None);
    assert_l0_contiguous(&sluice_ltx(&s.url), last);
}
