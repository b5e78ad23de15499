//! `heartbeat-url`: the daemon GETs the URL (a tiny HTTP server of the test's) once every
//! database has replicated, at most once per `heartbeat-interval`, and never while a
//! database is failing; once the failing replica works again, the ping comes.
//!
//! Run via `scripts/test -p sluice-cli --test replicate_heartbeat`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{DAEMON_DEADLINE, Daemon, open_app};
use sluice_testkit::process::wait_until;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
#[allow(dead_code)]
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Counts `GET /ping` requests; answers 200 to everything.
fn ping_server() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/ping", l.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let mut r = BufReader::new(&stream);
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            if first.starts_with("GET /ping ") {
                c.fetch_add(1, Ordering::SeqCst);
            }
            let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, count)
}

fn db_with_rows(path: &Path) {
    let c = open_app(path, Duration::from_secs(5));
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);").expect("create");
}

fn config(dir: &Path, url: &str, dbs: &[(&Path, String)]) -> std::path::PathBuf {
    let mut y = format!("heartbeat-url: {url}\nheartbeat-interval: 1m\ndbs:\n");
    for (db, replica) in dbs {
        y += &format!(
            "  - path: {}\n    monitor-interval: 100ms\n    replica: {{url: \"{replica}\", sync-interval: 200ms}}\n",
            db.display()
        );
    }
    let p = dir.join("sluice.yml");
    std::fs::write(&p, &y).expect("config");
    eprintln!("config:\n{y}");
    p
}

#[test]
fn pings_once_per_interval_when_every_database_replicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, count) = ping_server();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    db_with_rows(&a);
    db_with_rows(&b);
    let replica = |n: &str| format!("file://{}", dir.path().join(n).display());
    let cfg = config(dir.path(), &url, &[(&a, replica("ra")), (&b, replica("rb"))]);
    let mut d = Daemon::start(&cfg, &[], &dir.path().join("daemon.log"));
    let pinged = wait_until(DAEMON_DEADLINE, || count.load(Ordering::SeqCst) >= 1);
    d.assert_running();
    assert!(pinged, "no heartbeat within {DAEMON_DEADLINE:?}; log:\n{}", d.log_text());
    // Health is looked at every second: a ping per check would show within a few.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count.load(Ordering::SeqCst), 1, "more than one ping within the 1m interval");
    d.stop_ok();
}

#[test]
fn no_ping_while_a_database_fails_then_one_when_it_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, count) = ping_server();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    db_with_rows(&a);
    db_with_rows(&b);
    // b's replica lies under a regular file: every write to it fails until it is removed.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").expect("blocker");
    let good = format!("file://{}", dir.path().join("ra").display());
    let bad = format!("file://{}", blocker.join("rb").display());
    let cfg = config(dir.path(), &url, &[(&a, good), (&b, bad)]);
    let mut d = Daemon::start(&cfg, &[], &dir.path().join("daemon.log"));
    let held = wait_until(DAEMON_DEADLINE, || d.log_count("heartbeat held back") >= 1);
    d.assert_running();
    assert!(held, "the daemon never held the heartbeat back; log:\n{}", d.log_text());
    // Several health checks (one a second) while b keeps failing: still no ping.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count.load(Ordering::SeqCst), 0, "pinged while b.db fails; log:\n{}", d.log_text());
    std::fs::remove_file(&blocker).expect("rm blocker");
    let pinged = wait_until(Duration::from_secs(120), || count.load(Ordering::SeqCst) >= 1);
    d.assert_running();
    assert!(pinged, "no heartbeat after b.db's replica recovered; log:\n{}", d.log_text());
    d.stop_ok();
}
