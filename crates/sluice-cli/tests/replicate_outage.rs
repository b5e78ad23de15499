//! `sluice replicate` through storage outages and a full local disk, end to end: moto behind a
//! TCP proxy that can be switched off (connections refused, open ones cut).
//!
//! * started during a 10 s outage, the daemon keeps retrying and replicates everything once
//!   storage answers;
//! * an outage longer than the lease TTL in the middle of continuous writes loses nothing,
//!   keeps the WAL bounded, is logged once when it begins and once when it ends
//!   (`SLUICE_OUTAGE_SECS` sets its length: 20 s here, 600 for the long run in
//!   `bench/outage.sh`; catch-up time and local bytes are printed);
//! * a second daemon that takes the expired lease during the outage: the first one stops when
//!   storage returns, the history never forks;
//! * a full disk under the meta directory (a small tmpfs, so the tests need root): a clear
//!   error, and nothing lost once space returns.
//!
//! Run via `scripts/test -p sluice-cli --test replicate_outage`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    DAEMON_DEADLINE, Daemon, force_sync, free_port, get_metrics, metric, open_app, restore, sluice_ltx, wait_ready,
};
use sluice_testkit::process::wait_until;
use sluice_testkit::proxy::Proxy;
use sluice_testkit::{hash, s3};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const OUTAGE_BEGINS: &str = "storage unavailable";
const OUTAGE_ENDS: &str = "storage available again";

/// A database, its config and its replica (S3 through `proxy`, or a directory).
struct Setup {
    dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
    /// The replica, reached directly (for restores; the daemon may go through the proxy).
    direct_url: String,
    port: u16,
}

impl Setup {
    fn new(name: &str, url: &str, direct_url: &str, top: &str, db_extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join(name);
        let port = free_port();
        let config = dir.path().join("sluice.yml");
        let y = format!(
            "addr: 127.0.0.1:{port}\nl0-retention: 1h\n{top}dbs:\n  - path: {}\n    monitor-interval: 50ms\n    \
             min-checkpoint-page-count: 200\n{db_extra}    replica: {{url: \"{url}\", sync-interval: 500ms}}\n",
            db.display()
        );
        std::fs::write(&config, &y).expect("write config");
        eprintln!("config:\n{y}");
        let app = open_app(&db, Duration::from_secs(5));
        app.execute_batch("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB NOT NULL);").expect("schema");
        Setup { dir, db, config, direct_url: direct_url.into(), port }
    }

    fn start(&self) -> Daemon {
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        Daemon::start(&self.config, &[], &self.dir.path().join(format!("daemon-{n}.log")))
    }

    fn metric(&self, name: &str) -> Option<f64> {
        get_metrics(self.port).and_then(|(_, body)| metric(&body, name))
    }

    /// Restores the latest state directly from storage and checks it against the source.
    #[track_caller]
    fn assert_restores_source(&self, committed: u64) {
        let out = self.dir.path().join(format!("restored-{}.db", sluice_testkit::seed::random_u64()));
        restore("sluice", &self.direct_url, &out, None);
        assert_eq!(hash::integrity_check(&out), "ok");
        let c = rusqlite::Connection::open(&out).expect("open restore");
        let (rows, max): (i64, Option<i64>) =
            c.query_row("SELECT count(*), max(n) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).expect("count");
        assert_eq!((rows as u64, max.unwrap_or(0) as u64), (committed, committed), "every committed row, no holes");
        assert_eq!(hash::logical_sha256(&out), hash::logical_sha256(&self.db), "restore equals the source");
    }
}

/// Commits one numbered 1 KiB row per transaction at about `per_sec` until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    handle: JoinHandle<()>,
}

impl Writer {
    fn start(db: &Path, per_sec: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (s, c, db) = (stop.clone(), committed.clone(), db.to_path_buf());
        let handle = std::thread::spawn(move || {
            let app = open_app(&db, Duration::from_secs(10));
            let pause = Duration::from_micros(1_000_000 / per_sec);
            let mut n = c.load(Ordering::SeqCst);
            while !s.load(Ordering::Relaxed) {
                n += 1;
                app.execute("INSERT INTO t VALUES (?1, randomblob(1024))", [n as i64]).expect("insert");
                c.store(n, Ordering::SeqCst);
                std::thread::sleep(pause);
            }
        });
        Writer { stop, committed, handle }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("writer panicked");
        self.committed.load(Ordering::SeqCst)
    }
}

fn moto_proxy() -> Proxy {
    let upstream = s3::endpoint().trim_start_matches("http://").to_string();
    Proxy::start(&upstream).expect("start proxy")
}

fn s3_urls(proxy: &Proxy, bucket: &str) -> (String, String) {
    let via = format!("s3://{bucket}/db?endpoint={}&region=us-east-1&forcePathStyle=true", proxy.endpoint());
    (via, s3::s3_url(bucket, "db"))
}

/// The outage was logged once when it began and once when it ended.
#[track_caller]
fn assert_logged_once(d: &Daemon) {
    let log = d.log_text();
    assert_eq!(log.matches(OUTAGE_BEGINS).count(), 1, "one line when the outage begins; log:\n{log}");
    assert_eq!(log.matches(OUTAGE_ENDS).count(), 1, "one line when it ends; log:\n{log}");
}

/// Level 0 is one history: each file starts right after the previous one.
#[track_caller]
fn assert_one_history(url: &str) {
    let l0: Vec<_> = sluice_ltx(url).into_iter().filter(|f| f.level == 0).collect();
    assert!(!l0.is_empty());
    for w in l0.windows(2) {
        assert_eq!(w[1].min, w[0].max + 1, "level 0 forks or has a gap: {l0:?}");
    }
}

#[test]
fn daemon_started_during_an_outage_replicates_everything_once_it_ends() {
    let mut proxy = moto_proxy();
    let (url, direct) = s3_urls(&proxy, &s3::new_bucket("outage-start"));
    let s = Setup::new("app.db", &url, &direct, "", "");
    proxy.down();
    let writer = Writer::start(&s.db, 50);
    let started = Instant::now();
    let mut d = s.start();
    let logged = wait_until(DAEMON_DEADLINE, || d.log_text().contains(OUTAGE_BEGINS));
    assert!(logged, "outage not logged; log:\n{}", d.log_text());
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    d.assert_running();
    proxy.up().expect("proxy up");
    wait_ready(&mut d, s.port);
    let committed = writer.finish();
    force_sync(&s.db, &s.config);
    d.stop_ok();
    assert_logged_once(&d);
    s.assert_restores_source(committed);
}

#[test]
fn an_outage_longer_than_the_lease_loses_nothing_and_keeps_the_wal_bounded() {
    let outage =
        Duration::from_secs(std::env::var("SLUICE_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20));
    let mut proxy = moto_proxy();
    let (url, direct) = s3_urls(&proxy, &s3::new_bucket("outage-long"));
    let s = Setup::new("app.db", &url, &direct, "lease-ttl: 5s\n", "");
    let writer = Writer::start(&s.db, 100);
    let mut d = s.start();
    wait_ready(&mut d, s.port);

    proxy.down();
    let began = Instant::now();
    let (mut max_wal, mut max_pending, mut outage_seen) = (0u64, 0f64, 0f64);
    let wal = PathBuf::from(format!("{}-wal", s.db.display()));
    while began.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(500));
        max_wal = max_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        max_pending = max_pending.max(s.metric("sluice_pending_bytes").unwrap_or(0.0));
        outage_seen = outage_seen.max(s.metric("sluice_storage_outage_seconds").unwrap_or(0.0));
        d.assert_running();
    }
    let local_at_end = s.metric("sluice_local_txid").unwrap_or(0.0);
    proxy.up().expect("proxy up");
    let back = Instant::now();
    let caught_up =
        wait_until(Duration::from_secs(120), || s.metric("sluice_replica_txid").is_some_and(|r| r >= local_at_end));
    let catch_up = back.elapsed();
    assert!(caught_up, "replica never caught up after the outage; log:\n{}", d.log_text());
    let committed = writer.finish();
    eprintln!(
        "outage {outage:?} at 100 tx/s: catch-up {catch_up:?}, peak local pending {:.1} MB, peak WAL {:.1} MB, \
         {committed} transactions",
        max_pending / 1e6,
        max_wal as f64 / 1e6
    );
    assert!(outage_seen > 0.0, "the outage shows in sluice_storage_outage_seconds");
    assert!(max_pending > 0.0, "captures went on locally during the outage");
    // The checkpoint threshold is 200 pages (0.8 MB); unbounded, 100 tx/s of 1 KiB rows
    // would pass 8 MB well within the outage.
    assert!(max_wal < 8 << 20, "the WAL stays bounded during the outage: {max_wal} bytes");
    force_sync(&s.db, &s.config);
    d.stop_ok();
    assert_logged_once(&d);
    assert_one_history(&direct);
    s.assert_restores_source(committed);
}

#[test]
fn a_second_daemon_taking_the_expired_lease_never_forks_the_history() {
    let mut proxy = moto_proxy();
    let (url, direct) = s3_urls(&proxy, &s3::new_bucket("outage-lease"));
    let first = Setup::new("one.db", &url, &direct, "lease-ttl: 3s\n", "");
    let w1 = Writer::start(&first.db, 50);
    let mut d1 = first.start();
    wait_ready(&mut d1, first.port);
    proxy.down();
    std::thread::sleep(Duration::from_secs(5)); // past the first daemon's lease

    // Another machine takes over the replica meanwhile (reaching storage directly).
    let second = Setup::new("two.db", &direct, &direct, "lease-ttl: 3s\n", "");
    let w2 = Writer::start(&second.db, 50);
    let mut d2 = second.start();
    wait_ready(&mut d2, second.port);
    std::thread::sleep(Duration::from_secs(2));

    proxy.up().expect("proxy up");
    let status = d1.guard.wait_timeout(DAEMON_DEADLINE);
    let log1 = d1.log_text();
    let status = status.unwrap_or_else(|| panic!("the first daemon kept going after losing its lease; log:\n{log1}"));
    assert_ne!(status.code(), Some(0), "log:\n{log1}");
    assert!(log1.contains("lease was taken over"), "the first daemon says why it stopped; log:\n{log1}");
    w1.finish();
    d2.assert_running();
    let committed = w2.finish();
    force_sync(&second.db, &second.config);
    d2.stop_ok();
    assert_one_history(&direct);
    second.assert_restores_source(committed);
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill the disk and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` (one file, written until ENOSPC).
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("ballast");
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_under_the_meta_directory_loses_nothing() {
    let replica = tempfile::tempdir().unwrap();
    let url = format!("file://{}", replica.path().display());
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path().join("meta");
    let _mount = Tmpfs::mount(&meta, "8m");
    let s = Setup::new("app.db", &url, &url, "", &format!("    meta-path: {}\n", meta.display()));
    let writer = Writer::start(&s.db, 100);
    let mut d = s.start();
    wait_ready(&mut d, s.port);

    let ballast = meta.join("ballast");
    fill(&ballast);
    let failed = wait_until(DAEMON_DEADLINE, || d.log_text().contains("No space left on device"));
    assert!(failed, "a full disk gives a clear error; log:\n{}", d.log_text());
    std::thread::sleep(Duration::from_secs(3));
    d.assert_running();
    let log = d.log_text();
    assert_eq!(log.matches("capture failed; retrying").count(), 1, "logged once, not per retry; log:\n{log}");

    std::fs::remove_file(&ballast).expect("free space");
    let resumed = wait_until(DAEMON_DEADLINE, || d.log_text().contains("capturing again"));
    assert!(resumed, "replication resumes by itself; log:\n{}", d.log_text());
    let committed = writer.finish();
    force_sync(&s.db, &s.config);
    d.stop_ok();
    let leftovers: Vec<_> = walk(&meta).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "no partial files left behind: {leftovers:?}");
    assert_one_history(&url);
    s.assert_restores_source(committed);
}

/// Size of the largest local level-0 file holding one capture (one TXID, not a merge).
fn largest_capture(db: &Path) -> u64 {
    let name = db.file_name().expect("db name").to_string_lossy();
    let l0 = db.with_file_name(format!(".{name}-litestream")).join("ltx").join("0");
    walk(&l0)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            n.strip_suffix(".ltx").and_then(|r| r.split_once('-')).is_some_and(|(a, b)| a == b)
        })
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_pending_budget_pauses_capture_and_the_wal_keeps_the_changes() {
    let mut proxy = moto_proxy();
    let (url, direct) = s3_urls(&proxy, &s3::new_bucket("outage-budget"));
    let s = Setup::new("app.db", &url, &direct, "max-pending-size: 256KB\n", "");
    let writer = Writer::start(&s.db, 100);
    let mut d = s.start();
    wait_ready(&mut d, s.port);
    proxy.down();
    let paused = wait_until(DAEMON_DEADLINE, || d.log_text().contains("reached max-pending-size"));
    assert!(paused, "reaching the budget is logged; log:\n{}", d.log_text());
    // Capture waits while over the budget (merging the pending files may make room again), so
    // the pending files stay within the budget plus one capture. A capture's size depends on
    // how long the machine let the writer run since the last one: measured, not assumed.
    let (mut peak, mut capture) = (0.0f64, 0u64);
    for _ in 0..30 {
        // Looked at before and after, as a merge of the pending files may replace it.
        capture = capture.max(largest_capture(&s.db));
        peak = peak.max(s.metric("sluice_pending_bytes").unwrap_or(0.0));
        capture = capture.max(largest_capture(&s.db));
        std::thread::sleep(Duration::from_millis(100));
    }
    capture = capture.max(largest_capture(&s.db));
    eprintln!("pending bytes peaked at {peak}; largest capture {capture} bytes");
    assert!(capture > 0, "no local capture file seen");
    assert!(
        peak > 0.0 && peak <= 256_000.0 + capture as f64,
        "pending bytes peaked at {peak} (largest capture {capture} bytes); log:\n{}",
        d.log_text()
    );
    d.assert_running();
    let log = d.log_text();
    assert_eq!(log.matches("reached max-pending-size").count(), 1, "logged once per outage; log:\n{log}");
    proxy.up().expect("proxy up");
    let resumed = wait_until(DAEMON_DEADLINE, || d.log_text().contains("below max-pending-size"));
    assert!(resumed, "capture resumes once uploads catch up; log:\n{}", d.log_text());
    let committed = writer.finish();
    force_sync(&s.db, &s.config);
    d.stop_ok();
    s.assert_restores_source(committed);
}
