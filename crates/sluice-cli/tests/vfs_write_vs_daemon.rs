//! A VFS writer (a Python process on the real extension, write mode) against a running
//! `sluice replicate` of the same `file://` replica: exactly one of them writes. The daemon
//! holds the replica's lease, so the VFS opens read-only (its writes fail with
//! `SQLITE_READONLY`, its log names the daemon), while the daemon's transactions keep arriving
//! in the replica (visible to the refused connection) as one chain of level-0 files. Once the
//! daemon stopped cleanly (lease released), a new VFS connection writes and continues that
//! chain.
//!
//! (In this crate because only its tests have the `sluice` binary; the other multi-writer tests
//! are in `crates/sluice-vfs/tests/vfs_write_writers.rs`.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use common::{Daemon, free_port, open_app, restore, sluice_ltx, wait_ready};
use sluice_testkit::process::{ChildGuard, wait_until};
use sluice_testkit::{hash, peer, vfs};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for one worker command or one wait (not an expectation).
const PATIENCE: Duration = Duration::from_secs(120);

/// A Python process on the real extension running commands from stdin, one per line,
/// tab-separated: `open NAME URI`, `close NAME`, `q NAME SQL` (rows as `a,b;c,d`), `exit`.
/// Each answers one line: `ok[\tvalue]` or `err\t<SQLITE_…>\t<message>`.
const WORKER: &str = r#"
import os, sqlite3, sys
b = sqlite3.connect(":memory:"); b.enable_load_extension(True); b.load_extension(sys.argv[1])
conns = {}
def reply(*parts):
    sys.stdout.write("\t".join(str(p).replace("\t", " ").replace("\n", " ") for p in parts) + "\n")
    sys.stdout.flush()
reply("ready", os.getpid())
for line in sys.stdin:
    parts = line.rstrip("\n").split("\t")
    op = parts[0]
    try:
        if op == "open":
            conns[parts[1]] = sqlite3.connect(parts[2], uri=True, isolation_level=None, timeout=30)
            reply("ok")
        elif op == "close":
            conns.pop(parts[1]).close()
            reply("ok")
        elif op == "q":
            rows = conns[parts[1]].execute(parts[2]).fetchall()
            reply("ok", ";".join(",".join(str(v) for v in r) for r in rows))
        elif op == "exit":
            for c in conns.values():
                c.close()
            reply("ok")
            break
        else:
            reply("err", "BADOP", op)
    except sqlite3.Error as e:
        reply("err", getattr(e, "sqlite_errorname", None) or type(e).__name__, e)
    except Exception as e:
        reply("err", type(e).__name__, e)
"#;

type Answer = Result<String, (String, String)>;

struct Worker {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: PathBuf,
}

impl Worker {
    fn spawn(dir: &Path) -> Worker {
        let log = dir.join("vfs-worker.log");
        let f = std::fs::File::create(&log).expect("create worker log");
        let so = vfs::debug_so();
        let mut cmd = peer::python_command();
        cmd.arg("-c")
            .arg(WORKER)
            .arg(so.with_extension(""))
            .env("SLUICE_LOG_LEVEL", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(f);
        let mut guard = ChildGuard::spawn(&mut cmd);
        let stdin = guard.inner().stdin.take();
        let stdout = guard.inner().stdout.take().expect("worker stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = guard.id();
        let mut w = Worker { guard, stdin, lines, log };
        let ready = w.recv_line();
        assert_eq!(ready, format!("ready\t{pid}"), "log:\n{}", w.log_text());
        w
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn recv_line(&mut self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("the worker did not answer within {PATIENCE:?}; log:\n{}", self.log_text())
            }
            Err(RecvTimeoutError::Disconnected) => panic!(
                "the worker exited ({:?}); log:\n{}",
                self.guard.wait_timeout(Duration::from_secs(5)),
                self.log_text()
            ),
        }
    }

    fn call(&mut self, parts: &[&str]) -> Answer {
        let line = parts.join("\t");
        let stdin = self.stdin.as_mut().expect("worker stdin");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("send {line:?} to the worker: {e}; log:\n{}", self.log_text()));
        let answer = self.recv_line();
        let mut p = answer.splitn(3, '\t');
        match (p.next(), p.next(), p.next()) {
            (Some("ok"), v, None) => Ok(v.unwrap_or_default().to_string()),
            (Some("err"), Some(name), msg) => Err((name.to_string(), msg.unwrap_or_default().to_string())),
            _ => panic!("unexpected answer {answer:?}"),
        }
    }

    #[track_caller]
    fn ok(&mut self, parts: &[&str]) -> String {
        self.call(parts).unwrap_or_else(|e| panic!("{parts:?}: {e:?}; log:\n{}", self.log_text()))
    }

    #[track_caller]
    fn write_enabled(&mut self, conn: &str) -> bool {
        match self.ok(&["q", conn, "PRAGMA sluice_write_enabled"]).as_str() {
            "1" => true,
            "0" => false,
            v => panic!("PRAGMA sluice_write_enabled = {v:?}"),
        }
    }

    #[track_caller]
    fn count(&mut self, conn: &str) -> i64 {
        self.ok(&["q", conn, "SELECT count(*) FROM t"]).parse().expect("count")
    }

    #[track_caller]
    fn exit(mut self) {
        assert_eq!(self.call(&["exit"]), Ok(String::new()), "log:\n{}", self.log_text());
        drop(self.stdin.take());
        let status = self.guard.wait_timeout(PATIENCE);
        assert!(status.is_some_and(|s| s.success()), "worker exit: {status:?}; log:\n{}", self.log_text());
    }
}

#[track_caller]
fn assert_readonly(result: Answer, what: &str) {
    match result {
        Err((name, msg)) => {
            assert_eq!(name, "SQLITE_READONLY", "{what}: {msg}");
            assert!(msg.contains("readonly"), "{what}: {msg}");
        }
        Ok(v) => panic!("{what}: the VFS wrote ({v:?}) to a replica the daemon holds"),
    }
}

/// The level-0 files form one chain from TXID 1; returns its last TXID.
#[track_caller]
fn assert_one_l0_chain(url: &str) -> u64 {
    let l0: Vec<(u64, u64)> = sluice_ltx(url).into_iter().filter(|f| f.level == 0).map(|f| (f.min, f.max)).collect();
    assert!(!l0.is_empty(), "no level-0 file in {url}");
    assert_eq!(l0[0].0, 1, "the level-0 chain does not start at TXID 1: {l0:x?}");
    for w in l0.windows(2) {
        assert_eq!(w[1].0, w[0].1 + 1, "level-0 files {:x?} then {:x?}: a gap, an overlap or a fork", w[0], w[1]);
    }
    l0[l0.len() - 1].1
}

fn insert_daemon_rows(app: &rusqlite::Connection, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        app.execute("INSERT INTO t(id, who, v) VALUES (?1, 'daemon', randomblob(200))", [id]).expect("app insert");
    }
}

#[test]
fn a_vfs_writer_is_read_only_while_sluice_replicate_holds_the_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("app.db");
    let url = format!("file://{}", dir.join("replica").display());
    let app = open_app(&db, Duration::from_secs(10));
    app.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT NOT NULL, v BLOB)").unwrap();
    insert_daemon_rows(&app, 1..=50);

    let port = free_port();
    let config = dir.join("sluice.yml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:{port}\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    \
             replica: {{url: \"{url}\", sync-interval: 200ms}}\n",
            db.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[], &dir.join("sluice.log"));
    wait_ready(&mut daemon, port);
    let daemon_pid = daemon.guard.id();

    // The VFS opens the replica in write mode: refused, read-only, the log names the daemon.
    let mut w = Worker::spawn(dir);
    let uri = vfs::uri(
        "vfs.db",
        &url,
        &[("write", "1"), ("buffer", dir.join("vfs.buffer").to_str().unwrap()), ("poll", "200ms")],
    );
    w.ok(&["open", "c", &uri]);
    assert!(!w.write_enabled("c"), "the VFS writes while the daemon holds the lease; log:\n{}", w.log_text());
    let log = w.log_text();
    assert!(
        log.contains("write mode refused")
            && log.contains("another sluice daemon writes this replica")
            && log.contains(&format!("pid {daemon_pid}"))
            && log.contains(&db.display().to_string()),
        "the VFS log does not name the daemon (pid {daemon_pid}, {}):\n{log}",
        db.display()
    );
    let seen = wait_until(PATIENCE, || w.count("c") == 50);
    assert!(seen, "the VFS never saw the daemon's first 50 rows; log:\n{}", w.log_text());
    assert_readonly(w.call(&["q", "c", "INSERT INTO t(id, who) VALUES (100000, 'vfs')"]), "INSERT through the VFS");

    // The daemon goes on: its rows keep arriving in the replica, seen by the refused connection.
    for batch in 0..10 {
        let from = 51 + batch * 25;
        insert_daemon_rows(&app, from..=from + 24);
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = wait_until(PATIENCE, || w.count("c") == 300);
    assert!(seen, "the daemon's rows did not reach the VFS reader; daemon log:\n{}", daemon.log_text());
    assert_readonly(w.call(&["q", "c", "INSERT INTO t(id, who) VALUES (100001, 'vfs')"]), "a later INSERT");
    // A new connection of the same process is refused too: the daemon still holds the lease.
    w.ok(&["close", "c"]);
    w.ok(&["open", "c", &uri]);
    assert!(!w.write_enabled("c"), "a reopened VFS connection writes while the daemon runs");
    assert_readonly(w.call(&["q", "c", "DELETE FROM t"]), "DELETE through a reopened connection");
    assert_eq!(w.count("c"), 300);
    w.ok(&["close", "c"]);
    daemon.assert_running();
    let dlog = daemon.log_text();
    assert!(!dlog.contains("taken over") && !dlog.contains("ERROR"), "daemon log:\n{dlog}");

    // The daemon's history is one chain and holds every row it captured, none of the VFS's.
    daemon.stop_ok();
    let daemon_last = assert_one_l0_chain(&url);
    let restored = dir.join("restored-daemon.db");
    restore("sluice", &url, &restored, None);
    assert_eq!(hash::integrity_check(&restored), "ok");
    assert_eq!(hash::row_counts(&restored)["t"], 300);
    let r = rusqlite::Connection::open(&restored).unwrap();
    let vfs_rows: i64 = r.query_row("SELECT count(*) FROM t WHERE who <> 'daemon'", [], |x| x.get(0)).unwrap();
    assert_eq!(vfs_rows, 0);
    drop(r);

    // The daemon stopped cleanly and gave the lease back: a new VFS connection writes now,
    // on top of the daemon's history.
    w.ok(&["open", "c", &uri]);
    assert!(w.write_enabled("c"), "the VFS is still refused after the daemon stopped; log:\n{}", w.log_text());
    assert_eq!(w.count("c"), 300);
    w.ok(&["q", "c", "INSERT INTO t(id, who) VALUES (100002, 'vfs')"]);
    let synced = u64::from_str_radix(&w.ok(&["q", "c", "SELECT sluice_sync()"]), 16).expect("sluice_sync() TXID");
    assert!(synced > daemon_last, "the VFS's sync {synced} is not past the daemon's {daemon_last}");
    w.ok(&["close", "c"]);
    w.exit();
    assert_eq!(assert_one_l0_chain(&url), synced, "the VFS continued the daemon's chain");
    let restored = dir.join("restored-vfs.db");
    restore("sluice", &url, &restored, None);
    assert_eq!(hash::integrity_check(&restored), "ok");
    assert_eq!(hash::row_counts(&restored)["t"], 301);
}
