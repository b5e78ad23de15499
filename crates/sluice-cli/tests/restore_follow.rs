//! `sluice restore -f` (follow): a live replica is applied in place to the output until
//! SIGINT/SIGTERM, with Litestream's protocol (`<out>-txid` sidecar, SQLite lock bytes,
//! rollback-journal page 1), so both tools follow each other's replicas.
//!
//! Every scenario runs a workload with application checkpoints on a WAL database while a
//! replicator ships it; each transaction appends row `seq` to `log` and sets `meta.n = seq`,
//! so any committed state has `count(*) = max(seq) = meta.n`. After the writer stops, the
//! follower's sidecar is polled until it equals the replica's newest TXID (no timing
//! assertions), the follower is stopped (exit 0) and the output must equal the source
//! (`logical-v1` hash) and pass `PRAGMA integrity_check`.
//!
//! * `sluice replicate` → `sluice restore -f`, `file://` (with a reader thread that loops
//!   during following: integrity ok, an invariant-holding state, never going back) and S3
//!   (moto);
//! * the real `litestream replicate` 0.5.17 → `sluice restore -f`;
//! * `sluice replicate` → the real `litestream restore -f`;
//! * a follower killed with SIGKILL resumes from its sidecar;
//! * `--integrity-check`, `--json`, and the refusals (sidecar beyond the replica, output
//!   without sidecar, damaged sidecar).
//!
//! Randomized payloads: the seed is printed (`SEED=`). Run via `scripts/test -p sluice-cli
//! --test restore_follow`.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Daemon, Rng, checkpoint, force_sync, free_port, ok, open_app, run, sluice, sluice_ltx, text, wait_ready};
use rusqlite::{Connection, OpenFlags, params};
use sluice_testkit::process::{ChildGuard, wait_until};
use sluice_testkit::{hash, peer, s3};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for the follower to catch up / a replicator to ship (not an expectation).
const CATCH_UP: Duration = Duration::from_secs(120);
const STEPS: u64 = 120;

/// `sluice replicate` config: short intervals, compactions and snapshots during the run,
/// checkpoints by the daemon too.
fn sluice_config(dir: &Path, db: &Path, url: &str) -> (PathBuf, u16) {
    let port = free_port();
    let config = dir.join("sluice.yml");
    let yaml = format!(
        "addr: 127.0.0.1:{port}\nlevels: [{{interval: 2s}}, {{interval: 5s}}]\n\
         snapshot: {{interval: 6s, retention: 1h}}\nl0-retention: 4s\n\
         dbs:\n  - path: {db}\n    monitor-interval: 50ms\n    checkpoint-interval: 1s\n    \
         min-checkpoint-page-count: 50\n    replica: {{url: \"{url}\", sync-interval: 100ms}}\n",
        db = db.display()
    );
    std::fs::write(&config, yaml).expect("write config");
    (config, port)
}

fn new_source(dir: &Path) -> (PathBuf, Connection) {
    let db = dir.join("app.db");
    let app = open_app(&db, Duration::from_secs(10));
    app.execute_batch(
        "CREATE TABLE log(seq INTEGER PRIMARY KEY, payload BLOB);
         CREATE TABLE meta(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT INTO meta VALUES (1, 0);",
    )
    .expect("schema");
    (db, app)
}

/// One transaction per step; checkpoints now and then. Returns the last `seq`.
fn workload(app: &Connection, rng: &mut Rng, from: u64, steps: u64) -> u64 {
    for seq in from + 1..=from + steps {
        let tx = app.unchecked_transaction().expect("begin");
        let len = 100 + rng.below(3000) as usize;
        tx.execute("INSERT INTO log(seq, payload) VALUES (?1, ?2)", params![seq as i64, rng.bytes(len)]).unwrap();
        tx.execute("UPDATE meta SET n = ?1", [seq as i64]).unwrap();
        if rng.below(4) == 0 {
            let victim = 1 + rng.below(seq) as i64;
            tx.execute("UPDATE log SET payload = NULL WHERE seq = ?1", [victim]).unwrap();
        }
        tx.commit().expect("commit");
        if seq % 25 == 0 {
            // Busy while a replicator reads is fine: a later one gets through.
            let _ = checkpoint(app, "TRUNCATE");
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(40)));
    }
    from + steps
}

fn max_txid(url: &str) -> u64 {
    sluice_ltx(url).iter().map(|f| f.max).max().unwrap_or(0)
}

fn sidecar(out: &Path) -> Option<u64> {
    let mut p = out.as_os_str().to_owned();
    p.push("-txid");
    let s = std::fs::read_to_string(PathBuf::from(p)).ok()?;
    assert!(s.len() == 17 && s.ends_with('\n'), "sidecar is not 16 hex + newline: {s:?}");
    u64::from_str_radix(s.trim(), 16).ok()
}

/// A running `restore -f` of either tool.
struct Follower {
    guard: ChildGuard,
    log: PathBuf,
    out: PathBuf,
}

impl Follower {
    fn start(tool: &str, url: &str, out: &Path, log: &Path) -> Follower {
        let f = File::options().create(true).append(true).open(log).expect("log");
        let mut cmd = if tool == "sluice" { sluice() } else { peer::litestream_command() };
        let interval = if tool == "sluice" { "--follow-interval" } else { "-follow-interval" };
        cmd.args(["restore", "-f", interval, "200ms", "-o"])
            .arg(out)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone"))
            .stderr(f);
        Follower { guard: ChildGuard::spawn(&mut cmd), log: log.to_path_buf(), out: out.to_path_buf() }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the sidecar says `txid` (the follower must keep running).
    #[track_caller]
    fn wait_for(&mut self, txid: u64) {
        let reached = wait_until(CATCH_UP, || sidecar(&self.out) == Some(txid) || self.guard.try_wait().is_some());
        assert!(
            reached && sidecar(&self.out) == Some(txid),
            "follower did not reach TXID {txid:#x} (sidecar {:?}, exited {:?}); log:\n{}",
            sidecar(&self.out),
            self.guard.try_wait(),
            self.log_text()
        );
    }

    #[track_caller]
    fn stop(&mut self, signal: &str) {
        let (status, clean) = self.guard.stop(signal, Duration::from_secs(30));
        assert!(clean && status.success(), "follower exit after SIG{signal}: {status:?}; log:\n{}", self.log_text());
    }
}

/// Reads the output in a loop (its own connection, kept open, rollback-journal mode) until
/// stopped, then once more: every read must pass `integrity_check`, satisfy the workload's
/// invariant, and never go back. Returns (reads, distinct states seen, the last state).
fn reader(out: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64, i64)> {
    std::thread::spawn(move || {
        let conn = Connection::open_with_flags(&out, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("reader open");
        conn.busy_timeout(Duration::from_secs(30)).expect("busy timeout");
        let (mut reads, mut states, mut last) = (0u64, 0u64, -1i64);
        loop {
            // The flag is read first, so the last read starts after the follower caught up.
            let stopping = stop.load(Ordering::Relaxed);
            conn.execute_batch("BEGIN").expect("reader begin");
            let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
            let (count, max): (i64, Option<i64>) =
                conn.query_row("SELECT count(*), max(seq) FROM log", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            let n: i64 = conn.query_row("SELECT n FROM meta", [], |r| r.get(0)).unwrap();
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
            conn.execute_batch("COMMIT").expect("reader commit");
            assert_eq!(check, "ok", "reader: integrity_check after {reads} reads");
            assert_eq!((count, max.unwrap_or(0)), (n, n), "reader: not a committed state");
            assert!(n >= last, "reader: went back from {last} to {n}");
            assert_eq!(mode, "delete", "reader: output not in rollback-journal mode");
            states += u64::from(n != last);
            last = n;
            reads += 1;
            if stopping {
                return (reads, states, last);
            }
        }
    })
}

fn assert_same(out: &Path, source: &Path, what: &str) {
    assert_eq!(hash::integrity_check(out), "ok", "{what}: integrity_check");
    assert_eq!(hash::logical_sha256(out), hash::logical_sha256(source), "{what}: output differs from the source");
}

/// `sluice replicate` → follower of `tool`; with a reader thread when `with_reader`.
fn sluice_writer(url: &str, dir: &Path, tool: &str, with_reader: bool) {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let (db, app) = new_source(dir);
    let (config, port) = sluice_config(dir, &db, url);
    let mut daemon = Daemon::start(&config, &[], &dir.join("daemon.log"));
    wait_ready(&mut daemon, port);
    let out = dir.join("out.db");
    let mut seq = workload(&app, &mut rng, 0, 10);
    let first = force_sync(&db, &config);
    let mut follower = Follower::start(tool, url, &out, &dir.join("follower.log"));
    follower.wait_for_at_least(first);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = with_reader.then(|| reader(out.clone(), stop.clone()));
    seq = workload(&app, &mut rng, seq, STEPS);
    force_sync(&db, &config);
    daemon.stop_ok();
    let latest = max_txid(url);
    follower.wait_for(latest);
    if let Some(r) = reads {
        stop.store(true, Ordering::Relaxed);
        let (n, states, last) = r.join().expect("reader thread panicked (see above)");
        eprintln!("[{tool}] reader: {n} consistent reads, {states} distinct states, last n = {last}");
        // Its connection stayed open: seeing the final state means its cache was invalidated.
        assert_eq!(last, seq as i64, "the reader's open connection does not see the final state");
        assert!(states > 1, "the reader never saw the output change");
    }
    follower.stop("INT");
    eprintln!("[{tool}] followed to TXID {latest:#x} after {seq} transactions");
    assert_same(&out, &db, &format!("{tool} restore -f of {url}"));
}

impl Follower {
    /// Waits until the sidecar is at least `txid`.
    #[track_caller]
    fn wait_for_at_least(&mut self, txid: u64) {
        let reached = wait_until(CATCH_UP, || sidecar(&self.out).is_some_and(|t| t >= txid));
        assert!(reached, "follower never reached TXID {txid:#x}; log:\n{}", self.log_text());
    }
}

#[test]
fn follows_sluice_replicate_file_with_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("replica").display());
    sluice_writer(&url, dir.path(), "sluice", true);
}

#[test]
fn follows_sluice_replicate_s3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = s3::s3_url(&s3::new_bucket("sluice-follow"), "app");
    sluice_writer(&url, dir.path(), "sluice", false);
}

#[test]
fn litestream_follows_sluice_replicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("replica").display());
    sluice_writer(&url, dir.path(), "litestream", false);
}

#[test]
fn follows_litestream_replicate() {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (db, app) = new_source(dir);
    let url = format!("file://{}", dir.join("replica").display());
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "levels: [{{interval: 2s}}]\nl0-retention: 4s\ndbs:\n  - path: '{}'\n    monitor-interval: 100ms\n    \
             checkpoint-interval: 1s\n    min-checkpoint-page-count: 50\n    replica:\n      url: '{url}'\n      \
             sync-interval: 100ms\n",
            db.display()
        ),
    )
    .expect("config");
    let log = dir.join("litestream.log");
    let f = File::create(&log).expect("log");
    let mut cmd = peer::litestream_command();
    cmd.args(["replicate", "-config"]).arg(&config).stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f);
    let mut writer = ChildGuard::spawn(&mut cmd);
    let mut seq = workload(&app, &mut rng, 0, 10);
    let shipped = wait_until(CATCH_UP, || max_txid_quiet(&url) > 0);
    assert!(shipped, "litestream shipped nothing; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    let out = dir.join("out.db");
    let mut follower = Follower::start("sluice", &url, &out, &dir.join("follower.log"));
    follower.wait_for_at_least(1);
    seq = workload(&app, &mut rng, seq, STEPS);
    drop(app);
    let (status, clean) = writer.stop("TERM", Duration::from_secs(60));
    assert!(clean && status.success(), "litestream exit {status:?}");
    let latest = max_txid(&url);
    follower.wait_for(latest);
    follower.stop("TERM");
    eprintln!("followed litestream's replica to TXID {latest:#x} after {seq} transactions");
    assert_same(&out, &db, "sluice restore -f of litestream's replica");
}

fn max_txid_quiet(url: &str) -> u64 {
    let out = run(sluice().args(["ltx", url]));
    if !out.status.success() {
        return 0;
    }
    text(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(2).and_then(|h| u64::from_str_radix(h, 16).ok()))
        .max()
        .unwrap_or(0)
}

#[test]
fn resumes_after_kill() {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let url = format!("file://{}", dir.join("replica").display());
    let (db, app) = new_source(dir);
    let (config, port) = sluice_config(dir, &db, &url);
    let mut daemon = Daemon::start(&config, &[], &dir.join("daemon.log"));
    wait_ready(&mut daemon, port);
    let out = dir.join("out.db");
    let log = dir.join("follower.log");
    let mut seq = workload(&app, &mut rng, 0, 10);
    let first = force_sync(&db, &config);
    let mut follower = Follower::start("sluice", &url, &out, &log);
    follower.wait_for_at_least(first);
    seq = workload(&app, &mut rng, seq, STEPS / 2);
    follower.guard.kill();
    let at_kill = sidecar(&out).expect("sidecar after kill");
    // Meanwhile more history, compacted and pruned from L0 while nobody follows.
    seq = workload(&app, &mut rng, seq, STEPS / 2);
    force_sync(&db, &config);
    let mut follower = Follower::start("sluice", &url, &out, &log);
    seq = workload(&app, &mut rng, seq, 20);
    force_sync(&db, &config);
    daemon.stop_ok();
    let latest = max_txid(&url);
    follower.wait_for(latest);
    follower.stop("INT");
    assert!(follower.log_text().contains("resuming follow"), "no resume; log:\n{}", follower.log_text());
    eprintln!("resumed at {at_kill:#x}, followed to {latest:#x} after {seq} transactions");
    assert_same(&out, &db, "resumed follower");
}

/// A finished replica copied from the fixtures (final TXID known from its manifest).
fn fixture_replica(dir: &Path) -> (String, u64) {
    let r = sluice_testkit::fixtures::copy_replica_to("basic", dir.join("replica"));
    let final_txid = sluice_testkit::fixtures::load_manifest("basic").final_txid();
    (format!("file://{}", r.display()), final_txid)
}

#[test]
fn integrity_check_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, final_txid) = fixture_replica(dir.path());
    let out = dir.path().join("out.db");
    let o = run(sluice().args(["restore", "--integrity-check", "full", "--json", "-o"]).arg(&out).arg(&url));
    let json: serde_json::Value = serde_json::from_str(&ok(&o, "restore --json")).expect("JSON on stdout");
    assert_eq!(json["txid"], format!("{final_txid:016x}"));
    assert_eq!(json["integrity_check"], "full");
    assert_eq!(json["replica"], "file");
    assert_eq!(json["follow"], false);
    let pages: u64 = json["page_count"].as_u64().expect("page_count");
    let size: u64 = json["page_size"].as_u64().expect("page_size");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), pages * size);
    assert!(json["files"].as_u64().unwrap() > 0 && json["bytes"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(hash::integrity_check(&out), "ok");

    // Litestream spelling; quick check.
    let out2 = dir.path().join("out2.db");
    let o = run(sluice().args(["restore", "-integrity-check", "quick", "-json", "-o"]).arg(&out2).arg(&url));
    let json: serde_json::Value = serde_json::from_str(&ok(&o, "restore -json")).expect("JSON");
    assert_eq!(json["integrity_check"], "quick");
    assert_eq!(hash::logical_sha256(&out2), hash::logical_sha256(&out));

    let o = run(sluice().args(["restore", "--integrity-check", "bogus", "-o"]).arg(dir.path().join("x.db")).arg(&url));
    assert!(!o.status.success(), "bad --integrity-check accepted");
}

/// Follow with `--json` prints its summary when stopped; the output is in rollback-journal mode.
#[test]
fn follow_json_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (url, final_txid) = fixture_replica(dir);
    let out = dir.join("out.db");
    let stdout = dir.join("stdout.json");
    let log = dir.join("follower.log");
    let mut cmd = sluice();
    cmd.args(["restore", "-f", "--integrity-check", "full", "--json", "-o"])
        .arg(&out)
        .arg(&url)
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&log).unwrap());
    let mut g = ChildGuard::spawn(&mut cmd);
    assert!(wait_until(CATCH_UP, || sidecar(&out) == Some(final_txid)), "no sidecar; log:\n{}", read(&log));
    let (status, clean) = g.stop("INT", Duration::from_secs(30));
    assert!(clean && status.success(), "exit {status:?}; log:\n{}", read(&log));
    let json: serde_json::Value = serde_json::from_str(&read(&stdout)).expect("JSON summary on stdout");
    assert_eq!(json["txid"], format!("{final_txid:016x}"));
    assert_eq!(json["follow"], true);
    let header = std::fs::read(&out).unwrap();
    assert_eq!((header[18], header[19]), (1, 1), "page 1 not in rollback-journal mode");
    let want = hash::logical_sha256(&out);

    let refuse = |args: &[&str], needle: &str| {
        let o = run(sluice().args(["restore"]).args(args).arg("-o").arg(&out).arg(&url));
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded; stderr:\n{err}");
        assert!(err.contains(needle), "{args:?}: expected {needle:?} in:\n{err}");
    };
    // A sidecar beyond the replica (e.g. a replica reset): never continue.
    std::fs::write(dir.join("out.db-txid"), "00000000000000ff\n").unwrap();
    refuse(&["-f"], "latest TXID");
    // A damaged sidecar.
    std::fs::write(dir.join("out.db-txid"), "hello\n").unwrap();
    refuse(&["-f"], "does not hold a TXID");
    // An output that restore -f did not write.
    std::fs::remove_file(dir.join("out.db-txid")).unwrap();
    refuse(&["-f"], "--force");
    // Without -f, an existing output is refused as before; -f conflicts with --txid.
    refuse(&[], "already exists");
    refuse(&["-f", "--txid", "0000000000000001"], "cannot be used with");
    assert_eq!(hash::logical_sha256(&out), want, "a refused run changed the output");

    // --force starts over.
    let mut cmd = sluice();
    cmd.args(["restore", "-f", "--force", "-o"]).arg(&out).arg(&url).stdout(Stdio::null()).stderr(Stdio::null());
    let mut g = ChildGuard::spawn(&mut cmd);
    assert!(wait_until(CATCH_UP, || sidecar(&out) == Some(final_txid)), "no sidecar after --force");
    let (status, clean) = g.stop("TERM", Duration::from_secs(30));
    assert!(clean && status.success(), "exit {status:?}");
    assert_eq!(hash::logical_sha256(&out), want);
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A replica whose only file is a valid LTX snapshot of a damaged database (page 2, the
/// table's root, has an invalid b-tree page type): the LTX checks pass, SQLite's do not.
fn damaged_replica(dir: &Path) -> String {
    let src = dir.join("damaged.db");
    let c = Connection::open(&src).unwrap();
    c.execute_batch(
        "PRAGMA page_size=1024; CREATE TABLE t(x);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 500)
         INSERT INTO t SELECT randomblob(100) FROM n;",
    )
    .unwrap();
    drop(c);
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[1024] = 0x07;
    let commit = (bytes.len() / 1024) as u32;
    let header = sluice_ltx::Header::new(1024, commit, sluice_ltx::TxId(1), sluice_ltx::TxId(1), 1_700_000_000_000);
    let mut enc = sluice_ltx::Encoder::new(Vec::new(), header).unwrap();
    for (i, page) in bytes.chunks(1024).enumerate() {
        enc.encode_page(i as u32 + 1, page).unwrap();
    }
    let (ltx, _) = enc.finish(0).unwrap();
    let level = dir.join("replica/ltx/0");
    std::fs::create_dir_all(&level).unwrap();
    std::fs::write(level.join("0000000000000001-0000000000000001.ltx"), ltx).unwrap();
    format!("file://{}", dir.join("replica").display())
}

#[test]
fn integrity_check_failure_deletes_the_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = damaged_replica(dir.path());
    let out = dir.path().join("out.db");
    // Without a check the damaged database restores (its LTX file is valid).
    ok(&run(sluice().args(["restore", "-o"]).arg(&out).arg(&url)), "restore without a check");
    assert_ne!(hash::integrity_check(&out), "ok", "the test database is not damaged");
    std::fs::remove_file(&out).unwrap();
    for (mode, follow) in [("quick", false), ("full", false), ("full", true)] {
        let mut cmd = sluice();
        cmd.args(["restore", "--integrity-check", mode, "-o"]).arg(&out).arg(&url);
        if follow {
            cmd.arg("-f");
        }
        let o = run(&mut cmd);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{mode} (follow {follow}): damaged restore accepted");
        assert!(err.contains("integrity check") && err.contains("output deleted"), "{mode}: {err}");
        assert!(!out.exists(), "{mode}: output left behind");
        assert!(sidecar(&out).is_none(), "{mode}: sidecar left behind");
    }
}
