//! Who may read what Sluice writes, end to end through the CLI:
//!
//! * a 0600 database replicated under umask 022 (with compaction, snapshots, checkpoints and
//!   a forced sync) leaves no file or directory more permissive than the database in its meta
//!   directory or its `file://` replica, and a restore (also under umask 022) is 0600;
//! * a 0640 database owned by another group gives the meta directory and its files exactly
//!   its mode (0640 files, 0750 directories) and group, even under umask 077;
//! * the metrics listener binds exactly the configured address (loopback stays loopback, an
//!   empty host is every interface) and serves nothing but per-database counters.
//!
//! Run via `scripts/test -p sluice-cli --test replicate_perms`.

mod common;

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{DAEMON_DEADLINE, Daemon, force_sync, free_port, get_metrics, ok, open_app, sluice_ltx, wait_ready};
use rusqlite::{Connection, params};
use sluice_testkit::process::wait_until;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A database created with `mode` (before SQLite writes it, so its `-wal` and `-shm` follow)
/// and a config replicating it to `file://…/replica` with short intervals.
struct Setup {
    dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
    url: String,
    port: u16,
}

impl Setup {
    fn new(mode: u32, addr: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&db).expect("create db file");
        std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(mode)).expect("chmod db");
        let url = format!("file://{}", dir.path().join("replica").display());
        let port = free_port();
        let addr = addr.replace("PORT", &port.to_string());
        let config = dir.path().join("sluice.yml");
        let y = format!(
            "addr: \"{addr}\"\nl0-retention: 1h\nlevels: [{{interval: 1s}}]\nsnapshot: {{interval: 2s, retention: 1h}}\n\
             dbs:\n  - path: {}\n    monitor-interval: 100ms\n    checkpoint-interval: 1s\n    min-checkpoint-page-count: 50\n\
             \x20   replica: {{url: \"{url}\", sync-interval: 200ms}}\n",
            db.display()
        );
        std::fs::write(&config, &y).expect("write config");
        eprintln!("config:\n{y}");
        Setup { dir, db, config, url, port }
    }

    fn meta(&self) -> PathBuf {
        self.dir.path().join(".s.db-litestream")
    }

    /// Writes, syncs, and waits until compaction and a second snapshot ran, so every kind of
    /// file Sluice keeps has been written.
    fn exercise(&self, d: &mut Daemon, app: &Connection) {
        let mut last = 0;
        for round in 0..3 {
            for i in 0..150 {
                let id = round * 1000 + i;
                app.execute("INSERT INTO t VALUES (?1, ?2)", params![id, vec![id as u8; 900]]).expect("insert");
            }
            last = force_sync(&self.db, &self.config);
        }
        let mut listing = Vec::new();
        let done = wait_until(DAEMON_DEADLINE, || {
            listing = sluice_ltx(&self.url);
            listing.iter().any(|f| f.level == 1 && f.max >= last)
                && listing.iter().any(|f| f.level == 9 && f.max >= last)
        });
        assert!(done, "no compaction and snapshot up to {last:#x}; listing {listing:?}; log:\n{}", d.log_text());
        eprintln!("listing after exercise: {listing:?}");
    }
}

/// Every file and directory under `root` (itself included) with its metadata.
fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        // Temp files come and go while the daemon runs.
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
        }
        out.push((p, m));
    }
    out
}

/// Nothing under `roots` grants more than `file_mode` (files) or `file_mode` plus search
/// (directories).
#[track_caller]
fn assert_no_wider_than(roots: &[PathBuf], file_mode: u32, when: &str) {
    let dir_mode = file_mode | ((file_mode & 0o444) >> 2);
    let mut seen = 0;
    for root in roots {
        for (p, m) in walk(root) {
            let allowed = if m.is_dir() { dir_mode } else { file_mode };
            let mode = m.mode() & 0o7777;
            assert_eq!(mode & !allowed, 0, "{when}: {} is {mode:o}, more than {allowed:o}", p.display());
            seen += 1;
        }
    }
    assert!(seen > 5, "{when}: only {seen} entries under {roots:?}");
}

fn app(db: &Path) -> Connection {
    let c = open_app(db, Duration::from_secs(5));
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)").expect("schema");
    c
}

#[test]
fn a_private_database_leaves_nothing_readable_by_others() {
    let s = Setup::new(0o600, "127.0.0.1:PORT");
    let app = app(&s.db);
    let mut d = Daemon::start_with_umask(&s.config, 0o022, &s.dir.path().join("daemon.log"));
    wait_ready(&mut d, s.port);
    s.exercise(&mut d, &app);
    let roots = [s.meta(), s.dir.path().join("replica")];
    assert_no_wider_than(&roots, 0o600, "while replicating");
    let names: Vec<String> = walk(&s.meta()).iter().map(|(p, _)| p.display().to_string()).collect();
    for want in ["sluice.pid", "sluice.writer-id", "sluice.sync-ack", "ltx/0"] {
        assert!(names.iter().any(|n| n.ends_with(want)), "no {want} in the meta directory: {names:?}");
    }
    d.stop_ok();
    assert_no_wider_than(&roots, 0o600, "after shutdown");

    let out = s.dir.path().join("restored.db");
    let restore = Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" restore -o \"$1\" \"$2\"")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .arg(&out)
        .arg(&s.url)
        .output()
        .expect("run sluice restore");
    ok(&restore, "sluice restore under umask 022");
    let mode = std::fs::metadata(&out).expect("restored db").mode() & 0o7777;
    assert_eq!(mode, 0o600, "restored database mode");
    let leftovers: Vec<PathBuf> =
        walk(s.dir.path()).into_iter().map(|(p, _)| p).filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "temp files left behind: {leftovers:?}");
}

/// A group for the database that is not the process's own: 1234 as root, else a
/// supplementary group of the process. `None` if neither is possible here.
fn other_group(db: &Path) -> Option<u32> {
    let own = std::fs::metadata(db).ok()?.gid();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let supplementary = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|x| x.parse::<u32>().ok()).collect::<Vec<_>>())
        .unwrap_or_default();
    [1234]
        .into_iter()
        .chain(supplementary)
        .filter(|g| *g != own)
        .find(|g| std::os::unix::fs::chown(db, None, Some(*g)).is_ok())
}

#[test]
fn a_group_readable_database_gives_its_mode_and_group_to_the_meta_files() {
    let s = Setup::new(0o640, "127.0.0.1:PORT");
    let group = other_group(&s.db);
    if group.is_none() {
        eprintln!(
            "NOTE: cannot give the database another group here (not root, no supplementary group): only modes are checked"
        );
    }
    let app = app(&s.db);
    // Under umask 077 only an explicit chmod gives 0640/0750.
    let mut d = Daemon::start_with_umask(&s.config, 0o077, &s.dir.path().join("daemon.log"));
    wait_ready(&mut d, s.port);
    s.exercise(&mut d, &app);
    d.stop_ok();
    let entries = walk(&s.meta());
    assert!(entries.len() > 5, "meta directory: {entries:?}");
    for (p, m) in &entries {
        let want = if m.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(m.mode() & 0o7777, want, "{} of a 0640 database", p.display());
        if let Some(g) = group {
            assert_eq!(m.gid(), g, "{} does not have the database's group", p.display());
        }
    }
    // The replica stays private (Litestream's file backend): never wider than the database.
    assert_no_wider_than(&[s.dir.path().join("replica")], 0o640, "replica");
}

/// Local addresses of listening TCP sockets on `port` (hex, as in /proc/net/tcp{,6}).
fn listeners(port: u16) -> Vec<String> {
    let suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // 0A: LISTEN.
            (f.len() > 3 && f[3] == "0A" && f[1].ends_with(&suffix)).then(|| f[1].to_string())
        })
        .collect()
}

#[test]
fn the_metrics_listener_binds_what_the_config_says_and_serves_only_counters() {
    for (addr, want) in
        [("127.0.0.1:PORT", &["0100007F"][..]), (":PORT", &["00000000", "00000000000000000000000000000000"])]
    {
        let s = Setup::new(0o600, addr);
        drop(app(&s.db));
        let mut d = Daemon::start(&s.config, &[], &s.dir.path().join("daemon.log"));
        wait_ready(&mut d, s.port);
        let bound = listeners(s.port);
        assert_eq!(bound.len(), 1, "{addr}: listening sockets {bound:?}");
        let host = bound[0].split(':').next().unwrap_or_default();
        assert!(want.contains(&host), "{addr}: bound {bound:?}, want one of {want:?}");

        let (code, body) = get_metrics(s.port).expect("GET /metrics");
        assert_eq!(code, 200);
        let label = format!("{{db=\"{}\"", s.db.display());
        for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (name, rest) = line.split_once('{').unwrap_or_else(|| panic!("unlabelled sample {line:?}"));
            assert!(name.starts_with("sluice_"), "{line:?}");
            assert!(format!("{{{rest}").starts_with(&label), "a label other than the database: {line:?}");
            let value = rest.rsplit_once("} ").map(|(_, v)| v).unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "not a number: {line:?}");
        }
        let other = raw_get(s.port, "/");
        assert!(other.starts_with("HTTP/1.1 404"), "GET / answered {other:?}");
        d.stop_ok();
    }
}

fn raw_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // One write: the endpoint answers after its first read.
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
