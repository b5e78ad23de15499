//! Helpers shared by the `sluice-cli` integration tests.
//!
//! Each test file is its own crate and compiles this module separately (`mod common;`), so the
//! items that only some test files use carry `#[allow(dead_code)]`.
//!
//! Every test file that includes this module defines its own `RUN_TIMEOUT` at its root: the
//! safety net [`run`] applies to one CLI run (not a timing assertion).
//!
//! Submodules (mostly for `replicate_configs.rs`): [`settings`] draws SQLite settings from a
//! seed (also used by the crash test), [`app`] is the numbered-transaction application with its
//! recorded history, [`replicators`] drives `sluice replicate` or the real `litestream
//! replicate`, [`verify`] checks a replica's restores against the history.

#[allow(dead_code)]
pub mod app;
#[allow(dead_code)]
pub mod replicators;
#[allow(dead_code)]
pub mod settings;
#[allow(dead_code)]
pub mod verify;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use rusqlite::Connection;
use sluice_testkit::peer;
use sluice_testkit::process::{ChildGuard, output_with_timeout, wait_until};

/// How long the daemon may take to become ready / to stop (upper bounds, not expectations).
#[allow(dead_code)]
pub const DAEMON_DEADLINE: Duration = Duration::from_secs(30);

/// The `sluice` binary under test.
pub fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Runs `cmd` to completion, bounded by the test file's `RUN_TIMEOUT`.
pub fn run(cmd: &mut Command) -> Output {
    output_with_timeout(cmd, crate::RUN_TIMEOUT)
}

#[allow(dead_code)]
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts that `out` succeeded (`what` names the command); returns its stdout.
#[allow(dead_code)]
#[track_caller]
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// xorshift64* for payloads (reproducible from the printed seed).
#[allow(dead_code)]
pub struct Rng(u64);

#[allow(dead_code)]
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 24) as u8).collect()
    }

    pub fn word(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'a' + self.below(26) as u8)).collect()
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound, then released).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A running `sluice replicate`, output going to a log file.
#[allow(dead_code)]
pub struct Daemon {
    pub guard: ChildGuard,
    log: PathBuf,
}

#[allow(dead_code)]
impl Daemon {
    pub fn start(config: &Path, extra: &[&str], log: &Path) -> Daemon {
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

    /// As [`Daemon::start`] (no extra arguments), with `env` added to the daemon's environment.
    pub fn start_with_env(config: &Path, env: &[(String, String)], log: &Path) -> Daemon {
        let f = File::create(log).expect("create daemon log");
        let mut cmd = sluice();
        cmd.arg("replicate")
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone log"))
            .stderr(f);
        Daemon { guard: ChildGuard::spawn(&mut cmd), log: log.to_path_buf() }
    }

    /// As [`Daemon::start`], under `umask` (set by a shell that then execs the daemon, so the
    /// daemon is the child that is signalled and waited for).
    pub fn start_with_umask(config: &Path, umask: u32, log: &Path) -> Daemon {
        let f = File::create(log).expect("create daemon log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask:03o} && exec \"$0\" replicate --config \"$1\""))
            .arg(env!("CARGO_BIN_EXE_sluice"))
            .arg(config)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone log"))
            .stderr(f);
        Daemon { guard: ChildGuard::spawn(&mut cmd), log: log.to_path_buf() }
    }

    /// Number of log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(needle)).count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit; returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        let (status, clean) = self.guard.stop("TERM", DAEMON_DEADLINE);
        assert!(clean, "daemon did not exit within {DAEMON_DEADLINE:?} of SIGTERM; log:\n{}", self.log_text());
        status
    }

    #[track_caller]
    pub fn stop_ok(&mut self) {
        let status = self.stop();
        assert_eq!(status.code(), Some(0), "daemon exit status after SIGTERM: {status:?}; log:\n{}", self.log_text());
    }

    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(s) = self.guard.try_wait() {
            panic!("daemon exited unexpectedly ({s:?}); log:\n{}", self.log_text());
        }
    }
}

/// `GET /metrics` on 127.0.0.1:port: (status code, body), or `None` if nothing listens.
#[allow(dead_code)]
pub fn get_metrics(port: u16) -> Option<(u16, String)> {
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
#[allow(dead_code)]
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// Waits until the daemon serves /metrics and has uploaded something (so its signal handlers
/// are installed and `sluice sync` can talk to it).
#[allow(dead_code)]
#[track_caller]
pub fn wait_ready(d: &mut Daemon, port: u16) {
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
#[allow(dead_code)]
#[track_caller]
pub fn force_sync(db: &Path, config: &Path) -> u64 {
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

/// One file of a `sluice ltx` listing.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub level: u8,
    pub min: u64,
    pub max: u64,
}

/// `sluice ltx URL` (all levels), parsed and sorted.
#[allow(dead_code)]
pub fn sluice_ltx(url: &str) -> Vec<Listed> {
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

/// Opens the application's connection to `db` in WAL mode with the given busy timeout.
#[allow(dead_code)]
pub fn open_app(db: &Path, busy: Duration) -> Connection {
    let c = Connection::open(db).expect("open app db");
    c.busy_timeout(busy).expect("busy timeout");
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("journal_mode");
    assert_eq!(mode.to_lowercase(), "wal");
    c
}

/// `PRAGMA wal_checkpoint(mode)`: (busy, log frames, checkpointed frames).
#[allow(dead_code)]
pub fn checkpoint(c: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// Restores `url` with Sluice (`tool = "sluice"`) or Litestream into `out`.
#[allow(dead_code)]
#[track_caller]
pub fn restore(tool: &str, url: &str, out: &Path, txid: Option<u64>) {
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

/// A temp dir with a config replicating `app.db` (which need not exist yet) to `replica/`,
/// with short intervals; `replica_extra` adds keys to the replica block (e.g.
/// `, auto-recover: true`). Test files add their own methods in `impl common::Setup` blocks.
#[allow(dead_code)]
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub config: PathBuf,
    pub url: String,
}

#[allow(dead_code)]
impl Setup {
    pub fn new(replica_extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("app.db");
        let url = format!("file://{}", dir.path().join("replica").display());
        let config = dir.path().join("sluice.yml");
        let y = format!(
            "l0-retention: 1h\nsnapshot: {{interval: 1h, retention: 24h}}\ndbs:\n  - path: {}\n    \
             monitor-interval: 100ms\n    replica: {{url: \"{url}\", sync-interval: 200ms{replica_extra}}}\n",
            db.display()
        );
        std::fs::write(&config, &y).expect("write config");
        eprintln!("config:\n{y}");
        Setup { dir, db, config, url }
    }

    /// `name` in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The database's path with `suffix` (`-wal`, `-shm`).
    pub fn side(&self, suffix: &str) -> PathBuf {
        let mut p = self.db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    }
}

/// Creates a WAL database at `path` with a few rows; page size varies with `seed`.
#[allow(dead_code)]
pub fn create_wal_db(path: &Path, seed: u64) -> Connection {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = Connection::open(path).unwrap();
    let page = [1024, 4096, 8192, 65536][(seed % 4) as usize];
    c.execute_batch(&format!(
        "PRAGMA page_size={page}; PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);"
    ))
    .unwrap();
    write_rows(&c, seed, 5);
    c
}

#[allow(dead_code)]
pub fn write_rows(c: &Connection, seed: u64, rows: usize) {
    let mut rng = Rng::new(seed);
    for _ in 0..rows {
        let n = 10 + rng.below(3000) as usize;
        c.execute("INSERT INTO t(v) VALUES (?1)", [rng.bytes(n)]).unwrap();
    }
}
