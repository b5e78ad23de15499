//! `sluice replicate` under `kill -9`, and two daemons on one replica, through the real binary.
//!
//! Crash loop: a "bank" database (`accounts(id, balance)`, constant total; `history(seq)` with
//! one strictly increasing row per transaction) is written continuously by a thread while the
//! daemon is started and `kill -9`ed after a random 100–600 ms, cycle after cycle. Every few
//! cycles the replica is restored and must be a consistent prefix of the committed history:
//! integrity ok, balances sum to the initial total, `history.seq` is exactly `1..=N` and N is at
//! most what the writer committed. A final clean run (`sluice sync`, SIGTERM → exit 0) must
//! hold every committed transaction, and level 0 must have no TXID gaps.
//!
//! The loop runs in segments of [`SEGMENT_CYCLES`] cycles, each on a new database and replica
//! whose SQLite settings (page size, auto_vacuum, synchronous, wal_autocheckpoint,
//! journal_size_limit; `common/settings.rs`) are drawn from SEED + 9 × segment: page size and
//! auto_vacuum follow the seed modulo 24, and steps of 9 move both, so the 8 segments of
//! `bench/crash_soak.sh 200` cover all eight page sizes and all three auto_vacuum modes.
//!
//! Every randomized test prints `SEED=<n>`; rerun with `SEED=<n> scripts/test -p sluice-cli
//! --test replicate_crash`. S3 cases use the moto server `scripts/test` starts.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::settings::SqliteSettings;
use common::{run, sluice, text};
use sluice_testkit::process::{ChildGuard, wait_until};
use sluice_testkit::{hash, s3};

const ACCOUNTS: i64 = 20;
const INITIAL_BALANCE: i64 = 1000;
const TOTAL: i64 = ACCOUNTS * INITIAL_BALANCE;
/// Safety net for one CLI command, not a timing assertion; used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// splitmix64: a tiny seeded generator (reproducible from the printed seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// The application's busy timeout (a safety net, not an expectation).
const BUSY: Duration = Duration::from_secs(30);
/// Kill -9 cycles per database (see the module comment).
const SEGMENT_CYCLES: usize = 25;

/// The bank database: `ACCOUNTS` accounts of `INITIAL_BALANCE`, empty history, WAL mode.
fn create_bank(path: &Path, settings: &SqliteSettings) {
    let c = settings.create(path, BUSY);
    c.execute_batch(
        "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE history(seq INTEGER PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL,
                              amount INTEGER NOT NULL, note TEXT NOT NULL);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for id in 1..=ACCOUNTS {
        tx.execute("INSERT INTO accounts(id, balance) VALUES (?1, ?2)", [id, INITIAL_BALANCE]).unwrap();
    }
    tx.commit().unwrap();
}

/// Commits bank transfer number `seq`.
fn transfer(conn: &rusqlite::Connection, rng: &mut Rng, seq: u64) {
    let src = rng.range(1, ACCOUNTS as u64 + 1) as i64;
    let dst = (src - 1 + rng.range(1, ACCOUNTS as u64) as i64) % ACCOUNTS + 1;
    let amount = rng.range(1, 50) as i64;
    let tx = conn.unchecked_transaction().unwrap();
    tx.execute("UPDATE accounts SET balance = balance - ?1 WHERE id = ?2", [amount, src]).unwrap();
    tx.execute("UPDATE accounts SET balance = balance + ?1 WHERE id = ?2", [amount, dst]).unwrap();
    tx.execute(
        "INSERT INTO history(seq, src, dst, amount, note) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![seq as i64, src, dst, amount, format!("transfer {seq} {}", "n".repeat(40))],
    )
    .unwrap();
    tx.commit().unwrap();
}

/// Commits bank transfers until stopped; `committed` is the last seq whose COMMIT returned.
struct BankWriter {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    handle: JoinHandle<()>,
}

impl BankWriter {
    fn start(path: &Path, settings: SqliteSettings, seed: u64) -> BankWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (s, c, p) = (stop.clone(), committed.clone(), path.to_path_buf());
        let handle = std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let conn = settings.open(&p, BUSY);
            let mut seq =
                conn.query_row("SELECT coalesce(max(seq), 0) FROM history", [], |r| r.get::<_, i64>(0)).unwrap() as u64;
            c.store(seq, Ordering::SeqCst);
            while !s.load(Ordering::Relaxed) {
                seq += 1;
                transfer(&conn, &mut rng, seq);
                c.store(seq, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        BankWriter { stop, committed, handle }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("bank writer panicked");
        self.committed.load(Ordering::SeqCst)
    }
}

/// A config for one database with short intervals.
fn write_config(path: &Path, db: &Path, url: &str) {
    let yaml = format!(
        "levels:\n  - interval: 1s\n  - interval: 5s\nsnapshot:\n  interval: 10s\n\
         dbs:\n  - path: {db}\n    monitor-interval: 50ms\n    checkpoint-interval: 1s\n    replica:\n      \
         url: \"{url}\"\n      sync-interval: 100ms\n",
        db = db.display()
    );
    std::fs::write(path, yaml).unwrap();
}

/// Starts `sluice replicate --config cfg`, stderr appended to `log`.
/// Waits until daemon `d` holds the database's lock (its pid is in the lock file).
fn wait_for_lock(d: &ChildGuard, db: &Path) {
    let name = db.file_name().expect("db name").to_string_lossy();
    let pid_file = db.with_file_name(format!(".{name}-litestream")).join("sluice.pid");
    let pid = d.id().to_string();
    let held =
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == pid));
    assert!(held, "daemon pid {pid} never took the lock ({})", pid_file.display());
}

fn start_daemon(cfg: &Path, log: &Path) -> ChildGuard {
    let err = File::options().create(true).append(true).open(log).unwrap();
    ChildGuard::spawn(
        sluice()
            .arg("replicate")
            .arg("--config")
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err)),
    )
}

fn log_tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// What a restored bank looks like.
#[derive(Debug)]
struct BankState {
    n: u64,
}

/// Restores the replica into a fresh file and checks the bank invariants; returns N.
#[track_caller]
fn restore_and_check(url: &str, dir: &Path, name: &str, committed_after: impl FnOnce() -> u64) -> BankState {
    let out = dir.join(name);
    let o = run(sluice().arg("restore").arg("-o").arg(&out).arg(url));
    assert!(
        o.status.success(),
        "restore failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    let committed = committed_after();
    assert_eq!(hash::integrity_check(&out), "ok", "restored database {} is damaged", out.display());
    let c = rusqlite::Connection::open_with_flags(&out, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let (accounts, sum): (i64, i64) = c
        .query_row("SELECT count(*), coalesce(sum(balance), 0) FROM accounts", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(accounts, ACCOUNTS, "restored database lost accounts");
    assert_eq!(sum, TOTAL, "restored balances do not sum to the initial total: not a consistent snapshot");
    let (count, min, max): (i64, i64, i64) = c
        .query_row("SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0) FROM history", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    if count > 0 {
        assert_eq!(min, 1, "history does not start at seq 1");
    }
    assert_eq!(count, max, "history has holes: {count} rows but max seq {max}");
    let n = count as u64;
    assert!(n <= committed, "restored N={n} exceeds the writer's committed count {committed}");
    // The balances must equal the initial ones replayed through exactly this history.
    let mut st = c
        .prepare(
            "SELECT a.id, a.balance, ?1 - coalesce((SELECT sum(amount) FROM history WHERE src = a.id), 0) + \
             coalesce((SELECT sum(amount) FROM history WHERE dst = a.id), 0) FROM accounts a",
        )
        .unwrap();
    let bad: Vec<(i64, i64, i64)> = st
        .query_map([INITIAL_BALANCE], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .into_iter()
        .filter(|(_, have, want)| have != want)
        .collect();
    assert!(bad.is_empty(), "balances disagree with the restored history (id, balance, expected): {bad:?}");
    drop(st);
    drop(c);
    let _ = std::fs::remove_file(&out);
    BankState { n }
}

/// Level-0 ranges from `sluice ltx --level 0`, and the places where they are not contiguous
/// (a gap or an overlap between neighbours).
#[track_caller]
fn level0(url: &str) -> (Vec<(u64, u64)>, Vec<String>) {
    let o = run(sluice().arg("ltx").arg("--level").arg("0").arg(url));
    assert!(o.status.success(), "sluice ltx failed: {}", text(&o.stderr));
    let out = text(&o.stdout);
    let ranges: Vec<(u64, u64)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (u64::from_str_radix(f[1], 16).unwrap(), u64::from_str_radix(f[2], 16).unwrap())
        })
        .collect();
    assert!(!ranges.is_empty(), "level 0 is empty:\n{out}");
    let gaps: Vec<String> = ranges
        .windows(2)
        .filter(|w| w[1].0 != w[0].1 + 1)
        .map(|w| format!("{:x}-{:x} then {:x}-{:x}", w[0].0, w[0].1, w[1].0, w[1].1))
        .collect();
    (ranges, gaps)
}

/// Level 0 must be one contiguous history.
#[track_caller]
fn assert_level0_contiguous(url: &str) -> Vec<(u64, u64)> {
    let (ranges, gaps) = level0(url);
    assert!(gaps.is_empty(), "level 0 of {url} has {} gaps/overlaps (of {} files): {gaps:?}", gaps.len(), ranges.len());
    ranges
}

/// Cycles for the file test: 50 in the suite; `SLUICE_CRASH_CYCLES` raises it for the long
/// run in `bench/crash_soak.sh`.
fn cycles(default: usize) -> usize {
    std::env::var("SLUICE_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(default).max(default)
}

/// `cycles` kill -9 cycles in segments of [`SEGMENT_CYCLES`], segment `i` on a new database
/// with settings drawn from SEED + 9i, replicated to `replica(i)`.
fn crash_loop(replica: &dyn Fn(u64) -> String, cycles: usize, check_every: usize) {
    let seed = sluice_testkit::seed();
    let segments = cycles.div_ceil(SEGMENT_CYCLES) as u64;
    for i in 0..segments {
        let segment_seed = seed.wrapping_add(9 * i);
        let settings = SqliteSettings::draw(segment_seed);
        let n = (cycles - i as usize * SEGMENT_CYCLES).min(SEGMENT_CYCLES);
        eprintln!("\n=== segment {}/{segments}: {n} cycles, {settings} (segment seed {segment_seed})", i + 1);
        crash_segment(&replica(i), settings, segment_seed, n, check_every);
    }
}

fn crash_segment(url: &str, settings: SqliteSettings, seed: u64, cycles: usize, check_every: usize) {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let cfg = dir.path().join("sluice.yml");
    let log = dir.path().join("daemon.log");
    create_bank(&db, &settings);
    write_config(&cfg, &db, url);
    let writer = BankWriter::start(&db, settings, rng.next());
    let mut checks = Vec::new();
    for cycle in 1..=cycles {
        let mut d = start_daemon(&cfg, &log);
        if cycle == 1 {
            // Something to restore at the first check, however slow the storage is to start.
            let up = wait_until(Duration::from_secs(60), || {
                let o = run(sluice().arg("ltx").arg("--level").arg("0").arg(url));
                o.status.success() && text(&o.stdout).lines().nth(1).is_some()
            });
            assert!(up, "the first daemon never uploaded:\n{}", log_tail(&log));
        }
        let wait = Duration::from_millis(rng.range(100, 601));
        std::thread::sleep(wait);
        if let Some(status) = d.try_wait() {
            panic!("cycle {cycle}: daemon exited on its own with {status:?} after {wait:?}:\n{}", log_tail(&log));
        }
        d.kill();
        if cycle % check_every == 0 {
            let s = restore_and_check(url, dir.path(), &format!("r{cycle}.db"), || writer.committed());
            eprintln!("cycle {cycle}: killed after {wait:?}; restored N={} (writer at {})", s.n, writer.committed());
            checks.push(s.n);
        }
    }
    assert!(checks.last().is_some_and(|n| *n > 0), "no transaction ever reached the replica: {checks:?}");

    // Clean run: every committed transaction must be in the replica after sync + SIGTERM.
    // Failures that still leave something to check are collected and reported at the end.
    let mut problems: Vec<String> = Vec::new();
    let mut d = start_daemon(&cfg, &log);
    // `sluice sync` signals the pid in the lock file: the one of the daemon killed last
    // until this one has taken the lock.
    wait_for_lock(&d, &db);
    let committed = writer.finish();
    let o = run(sluice().arg("sync").arg(&db).arg("--config").arg(&cfg));
    if o.status.success() {
        eprintln!("clean run: {}", text(&o.stdout).trim());
    } else {
        problems.push(format!("`sluice sync` failed: {}", text(&o.stderr).trim()));
    }
    let (status, clean) = d.stop("TERM", Duration::from_secs(30));
    if !(clean && status.success()) {
        problems.push(format!("daemon did not exit 0 on SIGTERM: {status:?}; log:\n{}", log_tail(&log)));
        // See whether a fresh daemon's shutdown sync completes the replica.
        let mut d = start_daemon(&cfg, &log);
        wait_for_lock(&d, &db);
        let (status, clean) = d.stop("TERM", Duration::from_secs(30));
        assert!(clean && status.success(), "a fresh daemon did not exit 0 either: {status:?}\n{}", log_tail(&log));
    }
    let s = restore_and_check(url, dir.path(), "final.db", || committed);
    assert_eq!(s.n, committed, "after a clean shutdown the replica lacks committed transactions");
    let (ranges, gaps) = level0(url);
    if !gaps.is_empty() {
        let l9 = run(sluice().arg("ltx").arg("--level").arg("9").arg(url));
        let snaps: Vec<String> =
            text(&l9.stdout).lines().skip(1).map(|l| l.split('\t').take(3).collect::<Vec<_>>().join(" ")).collect();
        problems.push(format!(
            "level 0 has {} TXID gaps/overlaps (of {} files): {gaps:?}; level 9 (snapshots): {snaps:?}",
            gaps.len(),
            ranges.len()
        ));
    }
    eprintln!(
        "crash loop ({settings}): {cycles} cycles, N at checks {checks:?}, final N={} = committed, {} L0 files up to \
         TXID {:x}, {:.1} s",
        s.n,
        ranges.len(),
        ranges.last().unwrap().1,
        started.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "crash loop problems:\n- {}", problems.join("\n- "));
}

#[test]
fn crash_loop_file_replica() {
    let dir = tempfile::tempdir().unwrap();
    let replica = |i: u64| format!("file://{}", dir.path().join(format!("replica-{i}")).display());
    crash_loop(&replica, cycles(50), 5);
}

#[test]
fn crash_loop_s3_replica() {
    let bucket = s3::new_bucket("crash");
    crash_loop(&|i| s3::s3_url(&bucket, &format!("bank-{i}")), 10, 5);
}

/// A database with `t(id, v)` and `rows` rows tagged `tag`.
fn create_plain(path: &Path, tag: &str, rows: u64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);").unwrap();
    insert(path, tag, rows);
}

fn insert(path: &Path, tag: &str, rows: u64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    for _ in 0..rows {
        c.execute("INSERT INTO t(v) VALUES (?1)", [tag]).unwrap();
    }
}

fn two_daemons(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (db1, db2) = (dir.path().join("one.db"), dir.path().join("two.db"));
    let (cfg1, cfg2) = (dir.path().join("one.yml"), dir.path().join("two.yml"));
    let (log1, log2) = (dir.path().join("one.log"), dir.path().join("two.log"));
    create_plain(&db1, "a", 10);
    create_plain(&db2, "b", 10);
    write_config(&cfg1, &db1, url);
    write_config(&cfg2, &db2, url);

    let mut a = start_daemon(&cfg1, &log1);
    // A is up once its first image is in the replica; then a write, replicated by A's own
    // uploader. (Not `sluice sync`: a forced sync can race the uploader, a separate bug that
    // `replicate_faults.rs` pins down.)
    let uploaded = |min: u64| {
        let o = run(sluice().arg("ltx").arg("--level").arg("0").arg(url));
        o.status.success() && text(&o.stdout).lines().skip(1).count() as u64 >= min
    };
    assert!(wait_until(Duration::from_secs(60), || uploaded(1)), "A never uploaded:\n{}", log_tail(&log1));
    insert(&db1, "a", 5);
    assert!(wait_until(Duration::from_secs(60), || uploaded(2)), "A never uploaded its writes:\n{}", log_tail(&log1));
    assert!(a.try_wait().is_none(), "A exited before B started:\n{}", log_tail(&log1));

    let mut b = start_daemon(&cfg2, &log2);
    // Generous: a refusing daemon exits at once, so this costs nothing when it does.
    let refused_at_start = wait_until(Duration::from_secs(30), || b.try_wait().is_some());
    let a_alive_after_b = a.try_wait().is_none();
    let mut syncs = Vec::new();
    if !refused_at_start {
        for round in 0..5 {
            insert(&db1, "a", 3);
            insert(&db2, "b", 3);
            for (name, db, cfg) in [("A", &db1, &cfg1), ("B", &db2, &cfg2)] {
                let o = run(sluice().arg("sync").arg(db).arg("--config").arg(cfg).arg("--timeout").arg("10s"));
                syncs.push(format!(
                    "round {round} sync {name}: {:?} {} {}",
                    o.status.code(),
                    text(&o.stdout).trim(),
                    text(&o.stderr).trim()
                ));
            }
            if a.try_wait().is_some() || b.try_wait().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Give a daemon that detected the conflict in its background upload time to exit.
        wait_until(Duration::from_secs(3), || a.try_wait().is_some() || b.try_wait().is_some());
    }
    let a_exited = a.try_wait();
    let b_exited = b.try_wait();
    let (sa, _) = a.stop("TERM", Duration::from_secs(30));
    let (sb, _) = b.stop("TERM", Duration::from_secs(30));
    let (ea, eb) = (std::fs::read_to_string(&log1).unwrap(), std::fs::read_to_string(&log2).unwrap());
    for s in &syncs {
        eprintln!("{s}");
    }
    eprintln!("B refused at start: {refused_at_start}");
    eprintln!("A exited on its own: {a_exited:?}, final status {sa:?}\n--- A log ---\n{}", log_tail(&log1));
    eprintln!("B exited on its own: {b_exited:?}, final status {sb:?}\n--- B log ---\n{}", log_tail(&log2));

    let failed: Vec<(&str, &String)> =
        [("A", sa, &ea), ("B", sb, &eb)].into_iter().filter(|(_, s, _)| !s.success()).map(|(n, _, e)| (n, e)).collect();
    assert!(!failed.is_empty(), "both daemons exited 0: nobody noticed the second writer");
    for (name, log) in &failed {
        let l = log.to_lowercase();
        assert!(
            l.contains("another writer") || l.contains("conflict") || l.contains("another sluice"),
            "daemon {name} failed without naming the conflict:\n{log}"
        );
    }
    assert_level0_contiguous(url);
    let out = dir.path().join("restored.db");
    let o = run(sluice().arg("restore").arg("-o").arg(&out).arg(url));
    assert!(o.status.success(), "restore after two writers failed: {}", text(&o.stderr));
    assert_eq!(hash::integrity_check(&out), "ok");
    let c = rusqlite::Connection::open(&out).unwrap();
    let tags: Vec<String> = c
        .prepare("SELECT DISTINCT v FROM t")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    eprintln!("restored rows come from {tags:?}");
    assert!(tags.len() <= 1, "restored database mixes both sources: {tags:?}");
    assert!(a_alive_after_b, "A (the legitimate writer) died when B tried to start:\n{ea}");
    assert!(
        refused_at_start,
        "spec: the second daemon must refuse at start with a clear message; B kept running (see log above)"
    );
}

#[test]
fn two_daemons_one_file_replica() {
    let dir = tempfile::tempdir().unwrap();
    two_daemons(&format!("file://{}", dir.path().join("replica").display()));
}

#[test]
fn two_daemons_one_s3_replica() {
    let bucket = s3::new_bucket("two-daemons");
    two_daemons(&s3::s3_url(&bucket, "shared"));
}

/// Opens the bank, commits `n` transfers after `seq` and closes it (with the daemon down, the
/// application is the last connection: SQLite checkpoints and deletes the WAL). The new seq.
fn burst(db: &Path, settings: SqliteSettings, rng: &mut Rng, mut seq: u64, n: u64) -> u64 {
    let conn = settings.open(db, BUSY);
    for _ in 0..n {
        seq += 1;
        transfer(&conn, rng, seq);
    }
    seq
}

/// Restarts of a database that is quiet (its WAL empty) resume without a new image when its
/// file is as the last capture left it; writes while the daemon is down (the application
/// closing last, so the WAL is checkpointed and deleted) must still reach the replica. Daemons
/// are killed (-9) or stopped (TERM, whose final sync stamps a settled file) at random, with
/// quiet spells longer than the stamp's settling time; every restore is a consistent prefix and
/// the last one holds every transaction. Cycles 1 and 2 are fixed so a stamp resume surely happens.
#[test]
fn quiet_restarts_and_writes_while_stopped_keep_a_consistent_prefix() {
    let seed = sluice_testkit::seed();
    let settings = SqliteSettings::draw(seed);
    let mut rng = Rng(seed ^ 0x9e77);
    let dir = tempfile::tempdir().unwrap();
    let (db, cfg, log) = (dir.path().join("bank.db"), dir.path().join("sluice.yml"), dir.path().join("daemon.log"));
    let url = format!("file://{}", dir.path().join("replica").display());
    create_bank(&db, &settings);
    write_config(&cfg, &db, &url);
    eprintln!("quiet restarts: {settings}");
    let mut seq = 0;
    let cycles = std::env::var("SLUICE_QUIET_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(8usize);
    for cycle in 1..=cycles {
        // Cycle 1 writes while stopped and lets the file settle; cycle 2 restarts on it untouched.
        let first = cycle == 1;
        if first || (cycle > 2 && rng.range(0, 2) == 0) {
            let n = rng.range(1, 30);
            seq = burst(&db, settings, &mut rng, seq, n);
        }
        // Longer than the stamp's settling time (3 s) in cycle 1, at random afterwards.
        let settle = if first { 4000 } else { rng.range(0, 4500) };
        std::thread::sleep(Duration::from_millis(settle));
        let mut d = start_daemon(&cfg, &log);
        wait_for_lock(&d, &db);
        let lived = if first { 1500 } else { rng.range(200, 4500) };
        std::thread::sleep(Duration::from_millis(lived / 2));
        if !first && rng.range(0, 2) == 0 {
            let n = rng.range(1, 30);
            seq = burst(&db, settings, &mut rng, seq, n);
        }
        std::thread::sleep(Duration::from_millis(lived / 2));
        let term = first || rng.range(0, 3) == 0;
        if term {
            let (status, clean) = d.stop("TERM", Duration::from_secs(30));
            assert!(clean && status.success(), "cycle {cycle}: SIGTERM did not exit 0: {status:?}\n{}", log_tail(&log));
        } else {
            d.kill();
        }
        let committed = seq;
        let s = restore_and_check(&url, dir.path(), &format!("q{cycle}.db"), || committed);
        eprintln!(
            "cycle {cycle}: {} after {lived} ms; restored N={} of {seq}",
            if term { "TERM" } else { "kill -9" },
            s.n
        );
        if term {
            assert_eq!(s.n, seq, "cycle {cycle}: a clean stop left committed transactions out");
        }
    }
    let mut d = start_daemon(&cfg, &log);
    wait_for_lock(&d, &db);
    let (status, clean) = d.stop("TERM", Duration::from_secs(30));
    assert!(clean && status.success(), "final SIGTERM: {status:?}\n{}", log_tail(&log));
    let s = restore_and_check(&url, dir.path(), "final.db", || seq);
    assert_eq!(s.n, seq, "the replica lacks committed transactions");
    assert_level0_contiguous(&url);
    let resumed =
        std::fs::read_to_string(&log).unwrap().matches("the WAL is empty and the database file is as").count();
    eprintln!("quiet-stamp resumes: {resumed}");
    assert!(resumed > 0, "no restart resumed from the quiet stamp: the test missed its point\n{}", log_tail(&log));
}
