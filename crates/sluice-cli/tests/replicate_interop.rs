//! Interoperability of `sluice replicate` with the real Litestream 0.5.17.
//!
//! An application workload runs on a WAL-mode database (rusqlite, busy_timeout 5 s) while the
//! Sluice daemon replicates it to (a) a `file://` replica and (b) a moto S3 replica: inserts,
//! updates, deletes, a schema change (CREATE TABLE / ALTER TABLE ADD COLUMN / CREATE INDEX), a
//! big DELETE then VACUUM that shrinks the database, and application checkpoints (PASSIVE and
//! TRUNCATE). After every step `sluice sync DB` forces a sync + upload and the TXID it prints is
//! recorded with the source's `logical-v1` hash.
//!
//! The daemon is stopped with SIGTERM (exit 0 expected). Then, for the replica:
//! * `sluice restore` and `litestream restore`, latest and `-txid` at every recorded TXID that is
//!   a file boundary (the max TXID of a level-0 file; L0 retention is 1 h so all of them are),
//!   must equal the source hash recorded at that TXID and pass `PRAGMA integrity_check`;
//! * the real Litestream VFS extension, loaded by the venv's Python in a child process, opens the
//!   replica and must see the same `logical-v1` hash and row counts as the source.
//!
//! Randomized payloads: the seed is printed (`SEED=`) and can be replayed with `SEED=<n>`.
//! Run via `scripts/test -p sluice-cli` (needs the venv and moto).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use rusqlite::{Connection, params};
use sluice_testkit::process::{ChildGuard, output_with_timeout, wait_until};
use sluice_testkit::{hash, peer, s3};

/// Safety net for one CLI run (not a timing assertion).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may take to become ready / to stop (upper bounds, not expectations).
const DAEMON_DEADLINE: Duration = Duration::from_secs(30);
/// The replica's `sync-interval`: short, so background uploads interleave with the forced
/// uploads of `sluice sync` at every step.
const SYNC_INTERVAL: &str = "200ms";

// ---------------------------------------------------------------------------------------------
// Helpers (duplicated in replicate_ops.rs: each integration test file is its own crate).

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn run(cmd: &mut Command) -> Output {
    output_with_timeout(cmd, RUN_TIMEOUT)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// xorshift64* for payloads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 24) as u8).collect()
    }

    fn word(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'a' + self.below(26) as u8)).collect()
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A running `sluice replicate`, output going to a log file.
struct Daemon {
    guard: ChildGuard,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, extra: &[&str], log: &Path) -> Daemon {
        let f = File::create(log).expect("create daemon log");
        let mut cmd = sluice();
        cmd.arg("replicate")
            .arg("--config")
            .arg(config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone log"))
            .stderr(f);
        Daemon { guard: ChildGuard::spawn(&mut cmd), log: log.to_path_buf() }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit; returns its status.
    fn stop(&mut self) -> ExitStatus {
        let (status, clean) = self.guard.stop("TERM", DAEMON_DEADLINE);
        assert!(clean, "daemon did not exit within {DAEMON_DEADLINE:?} of SIGTERM; log:\n{}", self.log_text());
        status
    }

    #[track_caller]
    fn stop_ok(&mut self) {
        let status = self.stop();
        assert_eq!(status.code(), Some(0), "daemon exit status after SIGTERM: {status:?}; log:\n{}", self.log_text());
    }

    #[track_caller]
    fn assert_running(&mut self) {
        if let Some(s) = self.guard.try_wait() {
            panic!("daemon exited unexpectedly ({s:?}); log:\n{}", self.log_text());
        }
    }
}

/// `GET /metrics` on 127.0.0.1:port: (status code, body), or `None` if nothing listens.
fn get_metrics(port: u16) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = text(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The value of the first sample of `name` (`name{...} value`).
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// Waits until the daemon serves /metrics and has uploaded something (so its signal handlers
/// are installed and `sluice sync` can talk to it).
#[track_caller]
fn wait_ready(d: &mut Daemon, port: u16) {
    let ready = wait_until(DAEMON_DEADLINE, || {
        get_metrics(port)
            .and_then(|(code, body)| (code == 200).then_some(body))
            .and_then(|b| metric(&b, "sluice_replica_txid"))
            .is_some_and(|v| v > 0.0)
    });
    d.assert_running();
    assert!(ready, "daemon not ready (no upload seen on /metrics) within {DAEMON_DEADLINE:?}; log:\n{}", d.log_text());
}

/// `sluice sync --config C DB`; returns the TXID it printed.
#[track_caller]
fn force_sync(db: &Path, config: &Path) -> u64 {
    let out = run(sluice().arg("sync").arg("--config").arg(config).arg(db));
    let stdout = ok(&out, "sluice sync");
    let hex = stdout
        .split("to TXID ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("unexpected `sluice sync` output: {stdout:?}"));
    assert_eq!(hex.len(), 16, "TXID printed by sluice sync is not 16 hex digits: {stdout:?}");
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("bad TXID in {stdout:?}: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Listed {
    level: u8,
    min: u64,
    max: u64,
}

/// `sluice ltx URL` (all levels), parsed and sorted.
fn sluice_ltx(url: &str) -> Vec<Listed> {
    let out = run(sluice().args(["ltx", url]));
    let s = ok(&out, "sluice ltx");
    let mut v: Vec<Listed> = s
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let hex = |s: &str| u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("bad txid in {l:?}: {e}"));
            Listed {
                level: c[0].parse().unwrap_or_else(|e| panic!("bad level in {l:?}: {e}")),
                min: hex(c[1]),
                max: hex(c[2]),
            }
        })
        .collect();
    v.sort();
    v
}

fn open_app(db: &Path, busy: Duration) -> Connection {
    let c = Connection::open(db).expect("open app db");
    c.busy_timeout(busy).expect("busy timeout");
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("journal_mode");
    assert_eq!(mode.to_lowercase(), "wal");
    c
}

fn checkpoint(c: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// Restores `url` with Sluice (`tool = "sluice"`) or Litestream into `out`.
#[track_caller]
fn restore(tool: &str, url: &str, out: &Path, txid: Option<u64>) {
    let hex = txid.map(|t| format!("{t:016x}"));
    let mut cmd = if tool == "sluice" { sluice() } else { peer::litestream_command() };
    cmd.arg("restore").arg("-o").arg(out);
    if let Some(h) = &hex {
        cmd.args([if tool == "sluice" { "--txid" } else { "-txid" }, h.as_str()]);
    }
    cmd.arg(url);
    let o = run(&mut cmd);
    ok(&o, &format!("{tool} restore {} of {url}", hex.as_deref().unwrap_or("latest")));
    assert!(out.is_file(), "{tool} restore wrote no {}", out.display());
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Step {
    label: &'static str,
    txid: u64,
    logical: String,
    page_count: i64,
}

enum Target {
    File,
    S3,
}

fn config_yaml(db: &Path, url: &str, port: u16) -> String {
    format!(
        "levels: [{{interval: 2s}}, {{interval: 5s}}]\n\
         snapshot: {{interval: 10s, retention: 1h}}\n\
         l0-retention: 1h\n\
         addr: 127.0.0.1:{port}\n\
         dbs:\n  - path: {db}\n    monitor-interval: 100ms\n    checkpoint-interval: 1s\n    \
         min-checkpoint-page-count: 200\n    replica: {{url: \"{url}\", sync-interval: {SYNC_INTERVAL}}}\n",
        db = db.display()
    )
}

/// The Python program run with the real VFS: prints `RESULT <logical-v1 hash> <row counts JSON>`.
const VFS_SCRIPT: &str = r#"
import hashlib, json, sqlite3, struct, sys
m = sqlite3.connect(":memory:")
m.enable_load_extension(True)
m.load_extension(sys.argv[1])
c = sqlite3.connect("file:replica.db?vfs=litestream", uri=True)
def enc(v):
    if v is None: return "n"
    if isinstance(v, int): return "i%d" % v
    if isinstance(v, float): return "f" + struct.pack(">d", v).hex()
    if isinstance(v, str): return "t" + v.encode("utf-8").hex()
    if isinstance(v, bytes): return "b" + v.hex()
    raise TypeError(type(v))
h = hashlib.sha256()
tables = []
for row in c.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"):
    h.update(("schema " + " ".join(enc(x) for x in row) + "\n").encode())
    if row[0] == "table":
        tables.append(row[1])
counts = {}
for t in tables:
    h.update(("table " + enc(t) + "\n").encode())
    n = 0
    for r in c.execute('SELECT * FROM "%s" ORDER BY rowid' % t.replace('"', '""')):
        h.update(("row" + "".join(" " + enc(x) for x in r) + "\n").encode())
        n += 1
    counts[t] = n
print("RESULT " + h.hexdigest() + " " + json.dumps(counts, sort_keys=True), flush=True)
"#;

/// Reads the replica through the real Litestream VFS; returns (logical hash, row counts).
fn read_through_vfs(url: &str, tmp: &Path) -> (String, BTreeMap<String, u64>) {
    let mut cmd = peer::python_command();
    cmd.arg("-c")
        .arg(VFS_SCRIPT)
        .arg(peer::litestream_vfs_so())
        .env("LITESTREAM_REPLICA_URL", url)
        .env("TMPDIR", tmp)
        .env_remove("AWS_CA_BUNDLE")
        .current_dir(tmp);
    let out = run(&mut cmd);
    let stdout = ok(&out, "python + litestream VFS");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT from the VFS script; stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr)));
    let (h, json) = line.split_once(' ').expect("RESULT <hash> <json>");
    // {"t": 12, "u": 3}: tiny flat JSON of name → count.
    let counts = json
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once(':').expect("k: v");
            (k.trim().trim_matches('"').to_string(), v.trim().parse::<u64>().expect("count"))
        })
        .collect();
    (h.to_string(), counts)
}

fn page_count(c: &Connection) -> i64 {
    c.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("page_count")
}

fn insert_rows(c: &Connection, rng: &mut Rng, n: usize, blob: usize) {
    let tx = c.unchecked_transaction().expect("begin");
    {
        let mut st = tx.prepare("INSERT INTO t(name, score, data) VALUES (?1, ?2, ?3)").expect("prepare");
        for _ in 0..n {
            let len = 5 + rng.below(20) as usize;
            let name = if rng.below(10) == 0 { None } else { Some(rng.word(len)) };
            let score = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 1000.0 - 500.0;
            let len = blob / 2 + rng.below(blob as u64) as usize;
            let data = rng.bytes(len);
            st.execute(params![name, score, data]).expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn scenario(target: Target) {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let (url, label) = match target {
        Target::File => {
            let r = dir.path().join("replica");
            (format!("file://{}", r.display()), "file")
        }
        Target::S3 => {
            let bucket = s3::new_bucket("sluice-replicate-interop");
            (s3::s3_url(&bucket, "app"), "s3")
        }
    };
    eprintln!("[{label}] replica {url}");
    let port = free_port();
    let config = dir.path().join("sluice.yml");
    std::fs::write(&config, config_yaml(&db, &url, port)).expect("write config");

    let app = open_app(&db, Duration::from_secs(5));
    app.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB);").expect("schema");
    insert_rows(&app, &mut rng, 100, 200);

    let mut daemon = Daemon::start(&config, &[], &dir.path().join("daemon.log"));
    wait_ready(&mut daemon, port);

    let mut steps: Vec<Step> = Vec::new();
    let record = |step: &'static str, app: &Connection, steps: &mut Vec<Step>| {
        let txid = force_sync(&db, &config);
        let logical = hash::logical_sha256(&db);
        let pc = page_count(app);
        if let Some(prev) = steps.last() {
            assert!(txid > prev.txid, "[{label}] step {step}: TXID {txid:#x} did not advance past {:#x}", prev.txid);
        }
        eprintln!("[{label}] step {step}: txid {txid:016x} pages {pc} hash {logical}");
        steps.push(Step { label: step, txid, logical, page_count: pc });
    };
    record("initial", &app, &mut steps);

    // 1. inserts (several transactions).
    for _ in 0..3 {
        insert_rows(&app, &mut rng, 150, 300);
    }
    record("inserts", &app, &mut steps);

    // 2. updates.
    let max_id: i64 = app.query_row("SELECT max(id) FROM t", [], |r| r.get(0)).unwrap();
    {
        let tx = app.unchecked_transaction().unwrap();
        for _ in 0..120 {
            let id = 1 + rng.below(max_id as u64) as i64;
            tx.execute("UPDATE t SET name = ?1, score = score * 2 WHERE id = ?2", params![rng.word(12), id]).unwrap();
        }
        tx.commit().unwrap();
    }
    record("updates", &app, &mut steps);

    // 3. deletes.
    app.execute("DELETE FROM t WHERE id % 7 = ?1", params![rng.below(7) as i64]).unwrap();
    record("deletes", &app, &mut steps);

    // 4. schema change.
    app.execute_batch(
        "CREATE TABLE u(k TEXT PRIMARY KEY, v INTEGER);
         ALTER TABLE t ADD COLUMN note TEXT DEFAULT 'n/a';
         CREATE INDEX t_name ON t(name);
         CREATE INDEX t_score ON t(score DESC);",
    )
    .unwrap();
    for i in 0..50 {
        app.execute(
            "INSERT INTO u VALUES (?1, ?2)",
            params![format!("k{i:03}-{}", rng.word(4)), rng.next() as i64 >> 8],
        )
        .unwrap();
    }
    app.execute("UPDATE t SET note = 'touched' WHERE id % 3 = 0", []).unwrap();
    record("schema", &app, &mut steps);

    // 5. application PASSIVE checkpoint, then more writes.
    let r = checkpoint(&app, "PASSIVE").expect("app PASSIVE checkpoint");
    eprintln!("[{label}] app PASSIVE checkpoint -> {r:?}");
    insert_rows(&app, &mut rng, 50, 100);
    record("passive-checkpoint", &app, &mut steps);

    // 6. grow the database.
    for _ in 0..4 {
        insert_rows(&app, &mut rng, 500, 800);
    }
    record("grow", &app, &mut steps);

    // 7. big DELETE then VACUUM: the database shrinks.
    app.execute("DELETE FROM t WHERE id % 10 != 0", []).unwrap();
    app.execute_batch("VACUUM").unwrap();
    record("delete-vacuum", &app, &mut steps);
    let (grown, shrunk) = (steps[steps.len() - 2].page_count, steps[steps.len() - 1].page_count);
    assert!(shrunk * 2 < grown, "VACUUM did not shrink the database: {grown} -> {shrunk} pages");

    // 8. application TRUNCATE checkpoint (the daemon holds a read lock: SQLite waits for it to
    // move on, within the 5 s busy timeout), then a write in the new WAL generation.
    let r = checkpoint(&app, "TRUNCATE").expect("app TRUNCATE checkpoint");
    eprintln!("[{label}] app TRUNCATE checkpoint -> {r:?}");
    app.execute("UPDATE u SET v = v + 1", []).unwrap();
    insert_rows(&app, &mut rng, 30, 100);
    record("truncate-checkpoint", &app, &mut steps);

    // 9. final inserts and deletes.
    insert_rows(&app, &mut rng, 80, 400);
    app.execute("DELETE FROM u WHERE v % 2 = 0", []).unwrap();
    record("final", &app, &mut steps);

    daemon.assert_running();
    daemon.stop_ok();
    let source_final = hash::logical_sha256(&db);
    let source_counts = hash::row_counts(&db);
    let last = steps.last().unwrap().clone();
    assert_eq!(source_final, last.logical, "source changed after the last sync?");

    let listing = sluice_ltx(&url);
    eprintln!("[{label}] replica files: {listing:?}");
    let l0_max: Vec<u64> = listing.iter().filter(|f| f.level == 0).map(|f| f.max).collect();
    let replica_max = listing.iter().filter(|f| f.level == 0).map(|f| f.max).max().unwrap_or(0);
    assert_eq!(replica_max, last.txid, "replica's newest L0 TXID differs from the last `sluice sync` TXID");

    let out_dir = dir.path().join("restores");
    std::fs::create_dir_all(&out_dir).unwrap();

    // Latest, both tools.
    for tool in ["sluice", "litestream"] {
        let out = out_dir.join(format!("{tool}-latest.db"));
        restore(tool, &url, &out, None);
        assert_eq!(hash::integrity_check(&out), "ok", "{tool} latest restore: integrity_check");
        assert_eq!(hash::logical_sha256(&out), source_final, "{tool} latest restore differs from the source");
        assert_eq!(hash::row_counts(&out), source_counts, "{tool} latest restore: row counts");
    }

    // Every recorded step that is an L0 boundary, both tools.
    let mut checked = 0;
    for s in &steps {
        if !l0_max.contains(&s.txid) {
            eprintln!("[{label}] step {} txid {:016x} is not an L0 boundary; skipped", s.label, s.txid);
            continue;
        }
        for tool in ["sluice", "litestream"] {
            let out = out_dir.join(format!("{tool}-{:016x}.db", s.txid));
            restore(tool, &url, &out, Some(s.txid));
            assert_eq!(
                hash::integrity_check(&out),
                "ok",
                "{tool} restore -txid {:016x} ({}): integrity",
                s.txid,
                s.label
            );
            assert_eq!(
                hash::logical_sha256(&out),
                s.logical,
                "{tool} restore -txid {:016x} differs from the source after step {}",
                s.txid,
                s.label
            );
        }
        checked += 1;
    }
    // Forced syncs upload everything pending as one L0 file ending at the TXID they print, and
    // L0 retention is 1 h: every step must be a boundary.
    assert_eq!(checked, steps.len(), "some recorded TXIDs are not L0 file boundaries: {listing:?}");

    // The real Litestream VFS reads the replica.
    let vfs_tmp = dir.path().join("vfs");
    std::fs::create_dir_all(&vfs_tmp).unwrap();
    let (vfs_hash, vfs_counts) = read_through_vfs(&url, &vfs_tmp);
    assert_eq!(vfs_counts, source_counts, "Litestream VFS row counts differ from the source");
    assert_eq!(vfs_hash, source_final, "Litestream VFS content differs from the source");
    eprintln!("[{label}] {} steps verified with sluice + litestream restore and the VFS", steps.len());
}

#[test]
fn replicate_workload_to_file_replica_interoperates_with_litestream() {
    scenario(Target::File);
}

#[test]
fn replicate_workload_to_s3_replica_interoperates_with_litestream() {
    scenario(Target::S3);
}
