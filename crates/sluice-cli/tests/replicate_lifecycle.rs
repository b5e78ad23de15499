//! `sluice replicate` and the database's existence, end to end through the CLI:
//!
//! * a daemon started before the application creates its database creates nothing: the
//!   application's page size (64 KiB) and auto-vacuum hold, and the replica restores equal;
//! * a database deleted under the running daemon is waited for; the one created next at the
//!   same path starts with a full image at the next TXID and a new snapshot, the restore
//!   equals it and the old history still restores the old database; a successor with another
//!   page size is refused (its history could not be compacted or restored with the old one);
//! * configured databases that never appear cost no request, no file, no thread each, and
//!   next to no CPU.
//!
//! Run via `scripts/test -p sluice-cli --test replicate_lifecycle` (the restores compare with
//! the real Litestream; the S3 replicas of the last test point at a listener of the test's).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    DAEMON_DEADLINE, Daemon, Listed, Setup, force_sync, free_port, ok, open_app, restore, run, sluice, sluice_ltx, text,
};
use rusqlite::{Connection, params};
use sluice_testkit::hash;
use sluice_testkit::process::wait_until;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

impl Setup {
    fn start(&self) -> Daemon {
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        Daemon::start(&self.config, &[], &self.dir.path().join(format!("daemon-{n}.log")))
    }

    /// Restores with both tools; asserts integrity and equality with `want`.
    #[track_caller]
    fn check_restores(&self, tag: &str, want: &str, txid: Option<u64>) -> PathBuf {
        let mut last = PathBuf::new();
        for tool in ["sluice", "litestream"] {
            let out = self.dir.path().join(format!("restore-{tag}-{tool}.db"));
            restore(tool, &self.url, &out, txid);
            assert_eq!(hash::integrity_check(&out), "ok", "{tool} restore {tag}: integrity_check");
            assert_eq!(hash::logical_sha256(&out), want, "{tool} restore {tag} differs from the source");
            last = out;
        }
        last
    }
}

#[track_caller]
fn wait_for_log(d: &mut Daemon, needle: &str, count: usize) {
    let seen = wait_until(DAEMON_DEADLINE, || d.log_count(needle) >= count);
    d.assert_running();
    assert!(seen, "the daemon did not log {needle:?} ({count}x) within {DAEMON_DEADLINE:?}; log:\n{}", d.log_text());
}

/// `sluice sync` of a database that does not exist fails and says so.
#[track_caller]
fn assert_sync_refused(s: &Setup) {
    let out = run(sluice().arg("sync").arg("--config").arg(&s.config).arg(&s.db));
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("does not exist"), "sluice sync of a missing database: {err}");
}

fn pragma(c: &Connection, name: &str) -> i64 {
    c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap_or_else(|e| panic!("PRAGMA {name}: {e}"))
}

/// Forced syncs fail while the daemon has not picked up a (new) database: retry until one
/// succeeds. Returns its TXID.
#[track_caller]
fn sync_when_replicating(d: &mut Daemon, s: &Setup) -> u64 {
    let replicating = wait_until(DAEMON_DEADLINE, || {
        run(sluice().arg("sync").arg("--config").arg(&s.config).arg(&s.db)).status.success()
    });
    d.assert_running();
    assert!(replicating, "no forced sync succeeded within {DAEMON_DEADLINE:?}; log:\n{}", d.log_text());
    force_sync(&s.db, &s.config)
}

#[test]
fn a_daemon_started_first_leaves_the_format_to_the_application() {
    let s = Setup::new("");
    let mut d = s.start();
    wait_for_log(&mut d, "waiting for the database: it does not exist yet", 1);
    let meta = s.dir.path().join(".app.db-litestream");
    for p in [s.db.clone(), s.side("-wal"), s.side("-shm"), meta.clone(), s.dir.path().join("replica")] {
        assert!(!p.exists(), "{} exists before the application created its database", p.display());
    }
    assert_sync_refused(&s);

    // SQLite creates an empty file when the application opens it; the format is only
    // decided by the first write.
    let app = Connection::open(&s.db).expect("open app db");
    wait_for_log(&mut d, "waiting for the database: it is empty", 1);
    assert_eq!(std::fs::metadata(&s.db).map(|m| m.len()).ok(), Some(0), "the daemon wrote to the empty file");
    assert!(!s.side("-wal").exists() && !meta.exists(), "the daemon touched the empty database");

    app.execute_batch(
        "PRAGMA page_size=65536; PRAGMA auto_vacuum=FULL; PRAGMA journal_mode=WAL;
         CREATE TABLE n(id INTEGER PRIMARY KEY, v BLOB NOT NULL);",
    )
    .expect("create the database");
    app.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    for i in 0..200 {
        app.execute("INSERT INTO n VALUES (?1, ?2)", params![i, vec![i as u8; 700]]).expect("insert");
    }
    let t1 = sync_when_replicating(&mut d, &s);
    app.execute("DELETE FROM n WHERE id % 3 = 0", []).expect("delete");
    let t2 = force_sync(&s.db, &s.config);
    assert!(t2 > t1);
    assert_eq!(pragma(&app, "page_size"), 65536, "the application's page size did not hold");
    assert_eq!(pragma(&app, "auto_vacuum"), 1, "the application's auto_vacuum=FULL did not hold");
    d.stop_ok();

    let want = hash::logical_sha256(&s.db);
    let restored = s.check_restores("latest", &want, None);
    let r = hash::open_read_only(&restored).expect("open restore");
    assert_eq!((pragma(&r, "page_size"), pragma(&r, "auto_vacuum")), (65536, 1), "restored format");
}

#[test]
fn a_deleted_database_is_waited_for_and_its_successor_starts_a_new_snapshot() {
    let s = Setup::new("");
    let app = open_app(&s.db, Duration::from_secs(5));
    app.execute_batch("CREATE TABLE old(id INTEGER PRIMARY KEY, v TEXT)").expect("schema");
    for i in 0..100 {
        app.execute("INSERT INTO old VALUES (?1, ?2)", params![i, format!("old row {i}")]).expect("insert");
    }
    let mut d = s.start();
    let t_old = sync_when_replicating(&mut d, &s);
    let h_old = hash::logical_sha256(&s.db);

    drop(app);
    for p in [s.db.clone(), s.side("-wal"), s.side("-shm")] {
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
    }
    wait_for_log(&mut d, "stopped replicating: the database file was deleted", 1);
    wait_for_log(&mut d, "waiting for the database: it does not exist yet", 1);
    assert!(!s.db.exists(), "the daemon recreated the deleted database");
    // The daemon itself answers now (its lock file stays): the database is missing.
    assert_sync_refused(&s);

    // The successor: same path, other schema and content.
    let app = open_app(&s.db, Duration::from_secs(5));
    app.execute_batch("CREATE TABLE new(k TEXT PRIMARY KEY, n INTEGER)").expect("schema");
    for i in 0..50 {
        app.execute("INSERT INTO new VALUES (?1, ?2)", params![format!("key {i}"), i]).expect("insert");
    }
    let t_first = sync_when_replicating(&mut d, &s);
    assert!(t_first > t_old, "TXIDs go on after the deleted database: {t_first:#x} after {t_old:#x}");
    app.execute("UPDATE new SET n = n * 2 WHERE n % 2 = 1", []).expect("update");
    let t_new = force_sync(&s.db, &s.config);
    let mut listing: Vec<Listed> = Vec::new();
    let snapped = wait_until(DAEMON_DEADLINE, || {
        listing = sluice_ltx(&s.url);
        listing.iter().any(|f| f.level == 9 && f.max > t_old)
    });
    assert!(snapped, "no new snapshot after the database was recreated; listing {listing:?}; log:\n{}", d.log_text());
    d.stop_ok();

    // The successor's first file is a full image at the next TXID, not a continuation.
    let first_new = listing
        .iter()
        .find(|f| f.level == 0 && f.min == t_old + 1)
        .unwrap_or_else(|| panic!("no level-0 file starting at TXID {:#x}: {listing:?}", t_old + 1));
    let summary = ltx_summary(&s.dir.path().join("replica/ltx/0"), first_new);
    let field = |name: &str| -> u64 {
        summary
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name:?} in `sluice ltx` output:\n{summary}"))
    };
    assert_eq!(field("pages"), field("commit"), "the first file of the new database is not a full image:\n{summary}");

    let want = hash::logical_sha256(&s.db);
    let restored = s.check_restores("latest", &want, None);
    let r = hash::open_read_only(&restored).expect("open restore");
    let old_tables: i64 =
        r.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'old'", [], |x| x.get(0)).expect("schema");
    assert_eq!(old_tables, 0, "the deleted database's table is in the restore of its successor");
    s.check_restores("deleted", &h_old, Some(t_old));
    assert!(t_new > t_first);
}

#[test]
fn a_successor_with_another_page_size_is_refused() {
    let s = Setup::new("");
    let app = open_app(&s.db, Duration::from_secs(5));
    app.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").expect("create");
    let mut d = s.start();
    let t_old = sync_when_replicating(&mut d, &s);
    drop(app);
    for p in [s.db.clone(), s.side("-wal"), s.side("-shm")] {
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
    }
    wait_for_log(&mut d, "stopped replicating: the database file was deleted", 1);
    let app = Connection::open(&s.db).expect("open");
    app.execute_batch("PRAGMA page_size=8192; PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (2);")
        .expect("create");
    // Its only database refused, the daemon has nothing left to do and exits with an error.
    let status = d.guard.wait_timeout(DAEMON_DEADLINE);
    let log = d.log_text();
    assert!(status.is_some_and(|s| !s.success()), "daemon status {status:?}; log:\n{log}");
    assert!(log.contains("was recreated with page size 8192") && log.contains("page size 4096"), "log:\n{log}");
    let listing = sluice_ltx(&s.url);
    assert!(listing.iter().all(|f| f.max <= t_old), "files of the refused database were uploaded: {listing:?}");
}

fn ltx_summary(dir: &Path, f: &Listed) -> String {
    let path = dir.join(format!("{:016x}-{:016x}.ltx", f.min, f.max));
    ok(&run(sluice().arg("ltx").arg(&path)), "sluice ltx FILE")
}

#[test]
fn databases_that_never_appear_cost_no_request_file_or_thread() {
    const DBS: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    // Any connection to this port would be a request to the "S3" replicas.
    let s3 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    s3.set_nonblocking(true).expect("nonblocking");
    let s3_port = s3.local_addr().expect("addr").port();
    let mut y = format!("addr: 127.0.0.1:{}\ndbs:\n", free_port());
    for i in 0..DBS {
        let db = dir.path().join("data").join(format!("db{i}.db"));
        let url = if i % 2 == 0 {
            format!("file://{}", dir.path().join("replicas").join(i.to_string()).display())
        } else {
            format!("s3://bucket/db{i}?endpoint=http://127.0.0.1:{s3_port}&region=us-east-1&forcePathStyle=true")
        };
        y.push_str(&format!("  - path: {}\n    replica: {{url: \"{url}\"}}\n", db.display()));
    }
    let config = dir.path().join("sluice.yml");
    std::fs::write(&config, &y).expect("write config");
    let mut d = Daemon::start(&config, &[], &dir.path().join("daemon.log"));
    wait_for_log(&mut d, "waiting for the database: it does not exist yet", DBS);

    let pid = d.guard.id();
    // Past the first, quicker checks (50 ms doubling to 1.6 s) to the steady state.
    std::thread::sleep(Duration::from_secs(2));
    let cpu_before = cpu_ns(pid);
    // A window for a polling storm or per-database work to show; not a timing assertion.
    std::thread::sleep(Duration::from_secs(3));
    let cpu_ms = (cpu_ns(pid) - cpu_before) / 1_000_000;
    let threads = proc_status(pid, "Threads:");
    d.assert_running();
    eprintln!("waiting for {DBS} databases: {cpu_ms} ms of CPU in 3 s, {threads} threads");

    assert_eq!(
        d.log_count("waiting for the database"),
        DBS,
        "each missing database is reported once; log:\n{}",
        d.log_text()
    );
    for p in [dir.path().join("data"), dir.path().join("replicas")] {
        assert!(!p.exists(), "{} was created for databases that do not exist", p.display());
    }
    assert!(
        matches!(s3.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the daemon connected to the S3 endpoint of a database that does not exist"
    );
    // Tokio's workers and a few helpers, but no thread per database.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(threads <= cores + 8, "{threads} threads for {DBS} missing databases ({cores} cores)");
    // Each database is checked about once per 1.6 s (a stat and a failed open): far below
    // 10% of a core; a polling loop would take a whole one.
    assert!(cpu_ms < 300, "{cpu_ms} ms of CPU in 3 s while waiting for {DBS} databases");
    d.stop_ok();
}

/// CPU time of all threads of `pid` so far (scheduler statistics, nanoseconds).
fn cpu_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/pid/task");
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/pid/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}
