//! Capture through the real binary: every page size replicates every commit, and committed
//! transactions the daemon cannot capture are an error, never a silent stall.
//!
//! * 64 KiB pages (the WAL header stores 65536 literally; it was once read as invalid, and
//!   nothing after the first image was ever captured while the daemon exited 0): the steps a
//!   user takes — create, close, start the daemon, commit for a while, SIGTERM — and every
//!   commit is in the replica, restored by Sluice and by Litestream.
//! * The WAL made unreadable on purpose (its header checksum overwritten while the
//!   application keeps committing): the daemon logs the error at error level, counts it in
//!   `sluice_errors_total{operation="capture"}`, and exits non-zero at shutdown with a message
//!   naming the database.
//!
//! Run via `scripts/test -p sluice-cli --test replicate_capture`.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{DAEMON_DEADLINE, Daemon, free_port, get_metrics, open_app, restore, wait_ready};
use sluice_testkit::hash;
use sluice_testkit::process::wait_until;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

struct Setup {
    dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
    url: String,
    port: u16,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("app.db");
        let url = format!("file://{}", dir.path().join("replica").display());
        let port = free_port();
        let config = dir.path().join("sluice.yml");
        let y = format!(
            "addr: 127.0.0.1:{port}\nl0-retention: 1h\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    \
             replica: {{url: \"{url}\", sync-interval: 200ms}}\n",
            db.display()
        );
        std::fs::write(&config, y).expect("write config");
        Setup { dir, db, config, url, port }
    }

    fn start(&self) -> Daemon {
        Daemon::start(&self.config, &[], &self.dir.path().join("daemon.log"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn create_db(db: &Path, page_size: u32) {
    let c = rusqlite::Connection::open(db).expect("create db");
    c.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=WAL; CREATE TABLE t(n INTEGER, b BLOB);"
    ))
    .expect("init db");
}

fn count(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open restored");
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("count")
}

#[test]
fn every_commit_of_a_64k_page_database_is_replicated() {
    let s = Setup::new();
    create_db(&s.db, 65536);
    let mut d = s.start();
    let app = open_app(&s.db, Duration::from_secs(5));
    // Committed before the daemon is ready too: the first image must hold those.
    let mut committed = 0i64;
    let mut commit = |app: &rusqlite::Connection| {
        committed += 1;
        // Some rows span several 64 KiB pages (overflow chains).
        let size = if committed % 7 == 0 { 150_000 } else { 100 };
        app.execute("INSERT INTO t VALUES (?1, zeroblob(?2))", [committed, size]).expect("insert");
    };
    for _ in 0..5 {
        commit(&app);
    }
    wait_ready(&mut d, s.port);
    for _ in 0..60 {
        commit(&app);
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(app);
    d.stop_ok();
    let source = hash::logical_sha256(&s.db);
    for tool in ["sluice", "litestream"] {
        let out = s.path(&format!("{tool}.db"));
        restore(tool, &s.url, &out, None);
        assert_eq!(hash::integrity_check(&out), "ok", "{tool} restore");
        assert_eq!(count(&out), committed, "{tool} restore holds every commit");
        assert_eq!(hash::logical_sha256(&out), source, "{tool} restore equals the source");
        let c = rusqlite::Connection::open(&out).expect("open");
        let ps: u32 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).expect("page_size");
        assert_eq!(ps, 65536);
    }
}

#[test]
fn committed_but_uncaptured_frames_are_an_error_and_fail_shutdown() {
    let s = Setup::new();
    create_db(&s.db, 4096);
    let mut d = s.start();
    let app = open_app(&s.db, Duration::from_secs(5));
    // No checkpoints from the application: the WAL keeps the frames the test hides.
    app.execute_batch("PRAGMA wal_autocheckpoint=0").expect("autocheckpoint");
    app.execute("INSERT INTO t VALUES (1, NULL)", []).expect("insert");
    wait_ready(&mut d, s.port);

    // Overwrite the WAL header's checksum: SQLite's connections keep going (they use the
    // WAL index), but the daemon can no longer read the WAL.
    let wal = std::fs::OpenOptions::new().write(true).open(s.path("app.db-wal")).expect("open WAL");
    wal.write_all_at(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef], 24).expect("corrupt WAL header");
    for n in 2..=20 {
        app.execute("INSERT INTO t VALUES (?1, NULL)", [n]).expect("insert");
    }

    let counted = wait_until(DAEMON_DEADLINE, || {
        get_metrics(s.port).and_then(|(_, body)| capture_errors(&body)).is_some_and(|v| v > 0.0)
    });
    d.assert_running();
    assert!(counted, "no capture error counted in /metrics; log:\n{}", d.log_text());
    let status = d.stop();
    let log = d.log_text();
    assert_ne!(status.code(), Some(0), "daemon must exit non-zero when commits were not replicated; log:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.iter().any(|l| l.contains("committed transactions are not being replicated")
            && l.contains("WAL header is not readable")),
        "error log must name the cause; log:\n{log}"
    );
    assert!(
        errors.iter().any(|l| l.contains("final sync failed") && l.contains(&s.db.display().to_string())),
        "shutdown must report the database whose commits were not replicated; log:\n{log}"
    );
}

/// `sluice_errors_total{…,operation="capture"}` (`common::metric` finds only a name's first series).
fn capture_errors(body: &str) -> Option<f64> {
    let line = body.lines().find(|l| l.starts_with("sluice_errors_total{") && l.contains("operation=\"capture\""))?;
    line.split_whitespace().last()?.parse().ok()
}
