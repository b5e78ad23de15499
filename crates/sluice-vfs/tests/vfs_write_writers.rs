//! Several writers on one replica, each a separate process on the real `.so` (Debian's Python
//! or the `sqlite3` shell):
//!
//! * two processes open the same replica in write mode at once (`file://` and moto S3):
//!   exactly one writes, the other's writes fail with `SQLITE_READONLY` and its log names the
//!   holder; once the first closes, a new connection in the second writes; the replica's
//!   level-0 files stay one chain (no fork) and a restore has both processes' rows;
//! * a writer killed with SIGKILL keeps the replica until its lease expires (`lease_ttl`),
//!   then another process takes over, with the killed writer's synced rows and one chain;
//! * the `sqlite3` shell writes a new replica through `.load` and a URI `.open`.
//!
//! (A VFS writer against a running `sluice replicate` is in
//! `crates/sluice-cli/tests/vfs_write_vs_daemon.rs`: only that crate's tests have the binary.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use common::{assert_one_l0_chain, file_url, restore};
use rusqlite::Connection;
use sluice_engine::restore::Target;
use sluice_testkit::process::{ChildGuard, output_with_timeout, wait_until};
use sluice_testkit::{peer, s3, vfs};

/// Upper bound for one worker command or one wait (a safety net, not an expectation).
const PATIENCE: Duration = Duration::from_secs(120);

/// A Python process on the real extension that runs commands read from stdin, one per line,
/// tab-separated: `open NAME URI`, `close NAME`, `q NAME SQL` (rows as `a,b;c,d`),
/// `exit`. Each command answers one line: `ok[\tvalue]` or `err\t<SQLITE_…>\t<message>`.
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

struct Worker {
    name: String,
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: PathBuf,
    pid: u32,
}

impl Worker {
    /// Starts a worker named `name` (its stderr, the extension's log, goes to `<dir>/<name>.log`)
    /// and waits until it loaded the extension.
    fn spawn(name: &str, dir: &Path) -> Worker {
        let log = dir.join(format!("{name}.log"));
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
        let mut w = Worker { name: name.to_string(), guard, stdin, lines, log, pid };
        let ready = w.recv_line();
        assert_eq!(ready, format!("ready\t{pid}"), "worker {name}; log:\n{}", w.log_text());
        w
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn recv_line(&mut self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("worker {} did not answer within {PATIENCE:?}; log:\n{}", self.name, self.log_text())
            }
            Err(RecvTimeoutError::Disconnected) => panic!(
                "worker {} exited ({:?}); log:\n{}",
                self.name,
                self.guard.wait_timeout(Duration::from_secs(5)),
                self.log_text()
            ),
        }
    }

    fn send(&mut self, parts: &[&str]) {
        let line = parts.join("\t");
        assert!(!line.contains('\n'), "a command is one line: {line:?}");
        let stdin = self.stdin.as_mut().expect("worker stdin");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("send {line:?} to worker {}: {e}; log:\n{}", self.name, self.log_text()));
    }

    /// The answer to the last command sent: `Ok(value)` or `Err((error name, message))`.
    fn answer(&mut self) -> Result<String, (String, String)> {
        let line = self.recv_line();
        let mut parts = line.splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ok"), v, None) => Ok(v.unwrap_or_default().to_string()),
            (Some("err"), Some(name), msg) => Err((name.to_string(), msg.unwrap_or_default().to_string())),
            _ => panic!("worker {}: unexpected answer {line:?}", self.name),
        }
    }

    fn call(&mut self, parts: &[&str]) -> Result<String, (String, String)> {
        self.send(parts);
        self.answer()
    }

    /// `q`, which must succeed.
    #[track_caller]
    fn q(&mut self, conn: &str, sql: &str) -> String {
        self.call(&["q", conn, sql]).unwrap_or_else(|e| {
            panic!("worker {}: {sql}: {e:?}; log:\n{}", self.name, self.log_text());
        })
    }

    #[track_caller]
    fn open(&mut self, conn: &str, uri: &str) {
        if let Err(e) = self.call(&["open", conn, uri]) {
            panic!("worker {}: open {uri}: {e:?}; log:\n{}", self.name, self.log_text());
        }
    }

    #[track_caller]
    fn close(&mut self, conn: &str) {
        if let Err(e) = self.call(&["close", conn]) {
            panic!("worker {}: close {conn}: {e:?}; log:\n{}", self.name, self.log_text());
        }
    }

    /// `PRAGMA sluice_write_enabled` of connection `conn`.
    #[track_caller]
    fn write_enabled(&mut self, conn: &str) -> bool {
        match self.q(conn, "PRAGMA sluice_write_enabled").as_str() {
            "1" => true,
            "0" => false,
            v => panic!("worker {}: PRAGMA sluice_write_enabled = {v:?}", self.name),
        }
    }

    /// Opens `conn` until it is a writing connection (the lease it waits for became free);
    /// connections that came back read-only are closed again.
    #[track_caller]
    fn open_until_writing(&mut self, conn: &str, uri: &str) {
        let writing = wait_until(PATIENCE, || {
            self.open(conn, uri);
            if self.write_enabled(conn) {
                return true;
            }
            self.close(conn);
            std::thread::sleep(Duration::from_millis(200));
            false
        });
        assert!(writing, "worker {}: still read-only after {PATIENCE:?}; log:\n{}", self.name, self.log_text());
    }

    /// Inserts rows `ids` as `who` in one statement (a transaction of its own).
    #[track_caller]
    fn insert(
        &mut self,
        conn: &str,
        who: &str,
        ids: std::ops::RangeInclusive<u32>,
    ) -> Result<String, (String, String)> {
        let values: Vec<String> = ids.map(|i| format!("({i}, '{who}', randomblob(300))")).collect();
        self.call(&["q", conn, &format!("INSERT INTO t(id, who, v) VALUES {}", values.join(", "))])
    }

    /// `SELECT sluice_sync()`: the replica's TXID after the sync.
    #[track_caller]
    fn sync(&mut self, conn: &str) -> u64 {
        let hex = self.q(conn, "SELECT sluice_sync()");
        assert_eq!(hex.len(), 16, "worker {}: sluice_sync() = {hex:?}", self.name);
        u64::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("sluice_sync() = {hex:?}: {e}"))
    }

    /// Closes every connection and exits; asserts a clean exit.
    #[track_caller]
    fn exit(mut self) {
        let answer = self.call(&["exit"]);
        assert_eq!(answer, Ok(String::new()), "worker {}; log:\n{}", self.name, self.log_text());
        drop(self.stdin.take());
        let status = self.guard.wait_timeout(PATIENCE);
        assert!(
            status.is_some_and(|s| s.success()),
            "worker {} exit: {status:?}; log:\n{}",
            self.name,
            self.log_text()
        );
    }
}

/// The write-mode URI of `app.db` on `replica` with the buffer `buffer`.
fn write_uri(replica: &str, buffer: &Path, extra: &[(&str, &str)]) -> String {
    let mut params = vec![("write", "1"), ("buffer", buffer.to_str().expect("utf-8 path")), ("poll", "200ms")];
    params.extend_from_slice(extra);
    vfs::uri("app.db", replica, &params)
}

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT NOT NULL, v BLOB)";

/// `who -> count(*)` of `t`, from `sluice restore`'s output of `url`, whose integrity is checked.
fn restored_rows(url: &str, dir: &Path) -> Vec<(String, i64)> {
    let db = restore(url, Target::Latest, dir);
    let c = Connection::open(&db).expect("open restored");
    assert_eq!(vfs::integrity_check(&c).expect("integrity_check"), "ok", "restore of {url}");
    let mut stmt = c.prepare("SELECT who, count(*) FROM t GROUP BY who ORDER BY who").expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").collect::<Result<_, _>>().expect("rows")
}

/// Asserts that the failure of a write on a connection another process's lease keeps
/// read-only is `SQLITE_READONLY`.
#[track_caller]
fn assert_readonly(result: Result<String, (String, String)>, what: &str) {
    match result {
        Err((name, msg)) => {
            assert_eq!(name, "SQLITE_READONLY", "{what}: {msg}");
            assert!(msg.contains("readonly"), "{what}: {msg}");
        }
        Ok(v) => panic!("{what}: the write succeeded ({v:?}) on a replica another process holds"),
    }
}

/// The log of a refused writer names the process that holds the lease.
#[track_caller]
fn assert_log_names_holder(refused: &Worker, holder_pid: u32) {
    let log = refused.log_text();
    assert!(
        log.contains("write mode refused")
            && log.contains("another sluice daemon writes this replica")
            && log.contains(&format!("pid {holder_pid}")),
        "the log of {} does not name the holder (pid {holder_pid}):\n{log}",
        refused.name
    );
}

/// Two processes open `url` in write mode at the same moment: one writes, the other is
/// read-only until the first closes; the history stays one chain.
fn two_processes_one_writer(url: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Worker::spawn("a", tmp.path());
    let mut b = Worker::spawn("b", tmp.path());
    let uri_a = write_uri(url, &tmp.path().join("a.buffer"), &[]);
    let uri_b = write_uri(url, &tmp.path().join("b.buffer"), &[]);
    // Both opens in flight at once: they race for the lease.
    a.send(&["open", "c", &uri_a]);
    b.send(&["open", "c", &uri_b]);
    if let Err(e) = a.answer() {
        panic!("open a: {e:?}; log:\n{}", a.log_text());
    }
    if let Err(e) = b.answer() {
        panic!("open b: {e:?}; log:\n{}", b.log_text());
    }
    let (ea, eb) = (a.write_enabled("c"), b.write_enabled("c"));
    assert!(ea != eb, "exactly one process writes: a={ea} b={eb}\na:\n{}\nb:\n{}", a.log_text(), b.log_text());
    let (mut w, (mut r, uri_r)) = if ea { (a, (b, uri_b)) } else { (b, (a, uri_a)) };
    eprintln!("writer: {} (pid {}), refused: {} (pid {})", w.name, w.pid, r.name, r.pid);
    assert_log_names_holder(&r, w.pid);

    // The writer commits and syncs; the refused process sees its rows (read-only view).
    w.q("c", SCHEMA);
    let w_who = w.name.clone();
    w.insert("c", &w_who, 1..=20).unwrap_or_else(|e| panic!("writer insert: {e:?}"));
    let first_sync = w.sync("c");
    assert!(first_sync >= 1);
    let seen = wait_until(PATIENCE, || matches!(r.call(&["q", "c", "SELECT count(*) FROM t"]), Ok(n) if n == "20"));
    assert!(seen, "the refused process never saw the writer's 20 rows; log:\n{}", r.log_text());
    let r_who = r.name.clone();
    assert_readonly(r.insert("c", &r_who, 21..=21), "INSERT on the refused connection");
    assert_readonly(r.call(&["q", "c", "CREATE TABLE other (x)"]), "CREATE TABLE on the refused connection");
    assert!(!r.write_enabled("c"));
    // The writer goes on meanwhile.
    w.insert("c", &w_who, 22..=30).unwrap_or_else(|e| panic!("writer insert: {e:?}"));

    // The writer closes cleanly (final sync, lease released); the other process closes its
    // read-only connection and reopens: the new connection writes.
    w.close("c");
    w.exit();
    r.close("c");
    r.open_until_writing("c", &uri_r);
    let n = r.q("c", "SELECT count(*) FROM t");
    assert_eq!(n, "29", "the second writer starts from everything the first committed");
    r.insert("c", &r_who, 31..=50).unwrap_or_else(|e| panic!("second writer insert: {e:?}; log:\n{}", r.log_text()));
    let last = r.sync("c");
    assert!(last > first_sync);
    r.close("c");
    r.exit();

    let mut want = vec![(w_who, 29), (r_who, 20)];
    want.sort();
    assert_eq!(restored_rows(url, tmp.path()), want, "sluice restore has both processes' rows");
    assert_eq!(assert_one_l0_chain(url), last, "the level-0 chain ends at the last sync");
}

#[test]
fn two_processes_on_a_file_replica_one_writes_then_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    two_processes_one_writer(&file_url(&tmp.path().join("replica")));
}

#[test]
fn two_processes_on_an_s3_replica_one_writes_then_the_other() {
    let bucket = s3::new_bucket("vfs-writers");
    two_processes_one_writer(&s3::s3_url(&bucket, "app"));
}

#[test]
fn a_killed_writer_keeps_the_replica_until_its_lease_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("replica"));
    // A never syncs on its own (1 h): only sluice_sync() uploads.
    let uri_a = write_uri(&url, &tmp.path().join("a.buffer"), &[("lease_ttl", "2s"), ("sync", "1h")]);
    let uri_b = write_uri(&url, &tmp.path().join("b.buffer"), &[("lease_ttl", "2s"), ("sync", "200ms")]);
    // B is started first, so that its open follows A's death at once.
    let mut b = Worker::spawn("b", tmp.path());
    let mut a = Worker::spawn("a", tmp.path());
    let a_opened = std::time::Instant::now();
    a.open("c", &uri_a);
    assert!(a.write_enabled("c"), "A writes a new replica; log:\n{}", a.log_text());
    a.q("c", SCHEMA);
    a.insert("c", "a", 1..=10).unwrap_or_else(|e| panic!("A insert: {e:?}"));
    let synced = a.sync("c");
    // Committed into A's buffer but never synced: must not reach the replica.
    a.insert("c", "a-unsynced", 11..=15).unwrap_or_else(|e| panic!("A insert: {e:?}"));
    let a_pid = a.pid;
    let status = a.guard.kill(); // SIGKILL: no final sync, the lease stays
    assert!(!status.success());
    drop(a);

    // B, at once: A's lease is live, B is read-only and sees A's synced rows.
    b.open("c", &uri_b);
    // (A's lease was taken at its open, 2 s before it expires; printed to tell a starved
    // machine from a bug should this fail.)
    eprintln!("B opened {:?} after A did", a_opened.elapsed());
    assert!(!b.write_enabled("c"), "B wrote while A's lease was live; log:\n{}", b.log_text());
    assert_log_names_holder(&b, a_pid);
    assert_eq!(b.q("c", "SELECT who, count(*) FROM t GROUP BY who ORDER BY who"), "a,10");
    assert_readonly(b.insert("c", "b", 100..=100), "B's INSERT under A's lease");
    b.close("c");

    // After the TTL a fresh open writes, on top of A's synced rows.
    b.open_until_writing("c", &uri_b);
    assert_eq!(b.q("c", "SELECT who, count(*) FROM t GROUP BY who ORDER BY who"), "a,10");
    b.insert("c", "b", 100..=119).unwrap_or_else(|e| panic!("B insert: {e:?}; log:\n{}", b.log_text()));
    let last = b.sync("c");
    assert!(last > synced, "B's sync {last} after A's {synced}");
    b.close("c");
    b.exit();

    assert_eq!(restored_rows(&url, tmp.path()), vec![("a".to_string(), 10), ("b".to_string(), 20)]);
    assert_eq!(assert_one_l0_chain(&url), last, "the level-0 chain ends at B's last sync");

    // A restarts on its buffer: the replica moved past it (B's writes), so the commits A never
    // synced are discarded with a warning, not replayed on top of B's history.
    let mut a = Worker::spawn("a-restarted", tmp.path());
    a.open("c", &uri_a);
    assert!(a.write_enabled("c"), "A writes again once B closed; log:\n{}", a.log_text());
    assert_eq!(a.q("c", "SELECT who, count(*) FROM t GROUP BY who ORDER BY who"), "a,10;b,20");
    let log = a.log_text();
    assert!(log.contains("discarding its unsynced transactions") && log.contains("a.buffer"), "{log}");
    a.close("c");
    a.exit();
    assert_eq!(restored_rows(&url, tmp.path()), vec![("a".to_string(), 10), ("b".to_string(), 20)]);
    assert_eq!(assert_one_l0_chain(&url), last, "a restart with nothing to sync adds no TXID");
}

#[test]
fn the_sqlite3_shell_writes_a_new_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("replica"));
    let so = vfs::debug_so();
    let uri =
        vfs::uri("app.db", &url, &[("write", "1"), ("buffer", tmp.path().join("shell.buffer").to_str().unwrap())]);
    let script = format!(
        ".bail on\n.load {so}\n.open '{uri}'\nPRAGMA sluice_write_enabled;\n\
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);\n\
         INSERT INTO t(v) VALUES ('tea'), ('coffee'), ('water');\n\
         BEGIN;\n\
         WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 500) \
         INSERT INTO t(v) SELECT 'row ' || x FROM s;\n\
         COMMIT;\n\
         SELECT count(*) FROM t;\nSELECT sluice_sync();\n.quit\n",
        so = so.with_extension("").display()
    );
    let script_path = tmp.path().join("script.sql");
    std::fs::write(&script_path, &script).unwrap();
    let out = output_with_timeout(
        Command::new("/usr/bin/sqlite3").arg(":memory:").arg(format!(".read {}", script_path.display())),
        PATIENCE,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "sqlite3 failed ({:?})\nscript:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(lines[0], "1", "PRAGMA sluice_write_enabled");
    assert_eq!(lines[1], "503");
    assert_eq!(lines[2].len(), 16, "sluice_sync() printed {:?}", lines[2]);
    let txid = u64::from_str_radix(lines[2], 16).unwrap();

    let db = restore(&url, Target::Latest, tmp.path());
    let c = Connection::open(&db).unwrap();
    assert_eq!(vfs::integrity_check(&c).unwrap(), "ok");
    let (n, tea): (i64, String) = c
        .query_row("SELECT count(*), (SELECT v FROM t WHERE id = 1) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((n, tea.as_str()), (503, "tea"));
    // The shell quit cleanly: the close synced nothing new after sluice_sync().
    assert_eq!(assert_one_l0_chain(&url), txid);
}
