//! Interoperability: the real Litestream 0.5.17 replicates a live database, and `sluice restore`
//! must rebuild exactly what `litestream restore` rebuilds from the same replica.
//!
//! The workload (one transaction per step, each waited for until a new L0 TXID shows up in the
//! replica) covers inserts, updates, deletes, deleting most rows and a VACUUM that shrinks the
//! file, an application `PRAGMA wal_checkpoint(TRUNCATE)` while Litestream holds its read lock
//! (partial), and one while Litestream is stopped (complete, WAL truncated; the restart then
//! writes a snapshotting L0). After each replicated step the source's logical hash is recorded
//! with the replica's newest L0 TXID.
//!
//! Then, for a `file://` replica and an S3 (moto) replica:
//! * the file listings of `litestream ltx` and `sluice ltx` agree;
//! * latest and every TXID 1..=latest: both tools restore (or both refuse); the outputs have the
//!   same bytes, the same logical hash, `integrity_check` = ok, and at recorded steps the hash of
//!   the source at that TXID; the `-dry-run` plans list the same files in the same order;
//! * `file://` only: `-timestamp` between two steps gives the earlier step's state, in both tools.
//!
//! Randomized payloads: the seed is printed (`SEED=`) and can be replayed with `SEED=<n>`.
//! Run via `scripts/test -p sluice-cli`.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Rng, ok, run, sluice, text};
use rusqlite::{Connection, params};
use sluice_testkit::process::{ChildGuard, wait_until};
use sluice_testkit::{fixtures, hash, peer, s3};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a step may take to show up in the replica before the test gives up.
const REPLICATION_DEADLINE: Duration = Duration::from_secs(90);

/// One row of a replica listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Listed {
    level: u8,
    min: u64,
    max: u64,
    size: u64,
}

/// `litestream ltx -level <level> URL`, parsed (whitespace-separated columns, hex TXIDs).
fn litestream_ltx(url: &str, level: &str) -> Result<Vec<Listed>, String> {
    let out = run(peer::litestream_command().args(["ltx", "-level", level, url]));
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    Ok(parse_listing(&text(&out.stdout)))
}

/// `sluice ltx --level <level> URL`, parsed (tab-separated).
fn sluice_ltx(url: &str, level: &str) -> Vec<Listed> {
    let out = run(sluice().args(["ltx", "--level", level, url]));
    parse_listing(&ok(&out, "sluice ltx"))
}

fn parse_listing(s: &str) -> Vec<Listed> {
    let mut v: Vec<Listed> = s
        .lines()
        .skip_while(|l| !l.starts_with("level"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("bad txid in {l:?}: {e}"));
            Listed {
                level: c[0].parse().unwrap_or_else(|e| panic!("bad level in {l:?}: {e}")),
                min: hex(c[1]),
                max: hex(c[2]),
                size: c[3].parse().unwrap_or_else(|e| panic!("bad size in {l:?}: {e}")),
            }
        })
        .collect();
    v.sort();
    v
}

/// Newest L0 TXID in the replica, 0 while it has none (or cannot be listed yet).
fn latest_l0(url: &str) -> u64 {
    litestream_ltx(url, "0").map(|v| v.iter().map(|f| f.max).max().unwrap_or(0)).unwrap_or(0)
}

#[derive(Clone, Debug)]
struct Step {
    label: String,
    txid: u64,
    logical: String,
    page_count: i64,
}

/// A running `litestream replicate -config CFG`, logging to a file.
struct Replicator {
    guard: ChildGuard,
    log: PathBuf,
}

impl Replicator {
    fn start(config: &Path, log: &Path) -> Replicator {
        let f = File::options().create(true).append(true).open(log).unwrap();
        let mut cmd = peer::litestream_command();
        cmd.args(["replicate", "-config"]).arg(config).stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f);
        Replicator { guard: ChildGuard::spawn(&mut cmd), log: log.to_path_buf() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let (status, clean) = self.guard.stop("TERM", Duration::from_secs(90));
        assert!(clean, "litestream did not stop on SIGTERM; log:\n{}", self.log());
        assert!(status.success(), "litestream exited with {status:?}; log:\n{}", self.log());
    }
}

struct Workload {
    dir: PathBuf,
    db: PathBuf,
    url: String,
    config: PathBuf,
    log: PathBuf,
    app: Connection,
    rng: Rng,
    steps: Vec<Step>,
}

impl Workload {
    fn new(dir: &Path, url: &str, seed: u64) -> Workload {
        let db = dir.join("app.db");
        let app = Connection::open(&db).unwrap();
        app.busy_timeout(Duration::from_secs(5)).unwrap();
        let mode: String = app.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        app.execute_batch(
            "CREATE TABLE items(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, name TEXT, payload BLOB, score REAL);
             CREATE INDEX items_grp ON items(grp);
             CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        )
        .unwrap();
        let config = dir.join("litestream.yml");
        // Litestream never checkpoints on its own here (no extra TXIDs between steps), L0 files
        // are kept, and syncs are frequent so the test stays short.
        std::fs::write(
            &config,
            format!(
                "l0-retention: 0\n\
                 dbs:\n\
                 \x20 - path: '{}'\n\
                 \x20   monitor-interval: 200ms\n\
                 \x20   checkpoint-interval: 1h\n\
                 \x20   min-checkpoint-page-count: 1000000\n\
                 \x20   replica:\n\
                 \x20     url: '{url}'\n\
                 \x20     sync-interval: 200ms\n",
                db.display()
            ),
        )
        .unwrap();
        let mut w = Workload {
            dir: dir.to_path_buf(),
            db,
            url: url.to_string(),
            config,
            log: dir.join("litestream.log"),
            app,
            rng: Rng::new(seed),
            steps: Vec::new(),
        };
        w.insert_items(100);
        w
    }

    fn insert_items(&mut self, n: usize) {
        let tx = self.app.transaction().unwrap();
        {
            let mut stmt = tx.prepare("INSERT INTO items(grp, name, payload, score) VALUES (?, ?, ?, ?)").unwrap();
            for i in 0..n {
                let len = 100 + self.rng.below(300) as usize;
                let grp = self.rng.below(10) as i64;
                let score = self.rng.next() as f64 / 3.0e15;
                stmt.execute(params![grp, format!("item-{i}-{:x}", self.rng.next()), self.rng.bytes(len), score])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    fn page_count(&self) -> i64 {
        self.app.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap()
    }

    fn last_txid(&self) -> u64 {
        self.steps.last().map_or(0, |s| s.txid)
    }

    /// Waits until the replica holds a TXID newer than the last step, then records the step.
    fn record(&mut self, label: &str, replicator: &Replicator) {
        let prev = self.last_txid();
        let mut txid = 0;
        let url = self.url.clone();
        let arrived = wait_until(REPLICATION_DEADLINE, || {
            txid = latest_l0(&url);
            txid > prev
        });
        assert!(
            arrived,
            "step {label:?}: no L0 TXID after {prev:#x} appeared in {url}; litestream log:\n{}",
            replicator.log()
        );
        let step = Step {
            label: label.to_string(),
            txid,
            logical: hash::logical_sha256(&self.db),
            page_count: self.page_count(),
        };
        eprintln!("step {label:?}: TXID {txid:016x}, {} pages", step.page_count);
        self.steps.push(step);
    }

    fn checkpoint_truncate(&self) -> (i64, i64, i64) {
        self.app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap()
    }

    /// Runs the whole workload against a running Litestream; returns the recorded steps.
    fn run(mut self) -> (Vec<Step>, PathBuf) {
        let mut rep = Replicator::start(&self.config, &self.log);
        self.record("initial snapshot (100 rows)", &rep);

        self.insert_items(3000);
        self.record("insert 3000 rows", &rep);

        // One transaction per step: Litestream may sync between two autocommits, and the step
        // would then be recorded at a TXID that holds only half of it.
        self.app
            .execute_batch(
                "BEGIN;
                 UPDATE items SET score = score * 2, name = name || '-u' WHERE id % 7 = 0;
                 INSERT INTO notes(body) VALUES ('updated every 7th item');
                 COMMIT;",
            )
            .unwrap();
        self.record("update every 7th row", &rep);

        self.app.execute("DELETE FROM items WHERE grp = 3", []).unwrap();
        self.record("delete group 3", &rep);

        self.app.execute("DELETE FROM items WHERE id % 20 != 0", []).unwrap();
        self.record("delete 95% of rows", &rep);
        let before_vacuum = self.page_count();

        self.app.execute_batch("VACUUM").unwrap();
        self.record("vacuum", &rep);
        let after_vacuum = self.page_count();
        assert!(
            after_vacuum * 4 < before_vacuum,
            "VACUUM did not shrink the database substantially: {before_vacuum} -> {after_vacuum} pages"
        );

        // Litestream holds a read transaction, so this checkpoint can only be partial (busy = 1);
        // it still copies frames into the database file underneath Litestream.
        let online = self.checkpoint_truncate();
        eprintln!("wal_checkpoint(TRUNCATE) while replicating: {online:?}");
        self.insert_items(50);
        self.record("online checkpoint(TRUNCATE) + insert 50", &rep);

        // With Litestream stopped the checkpoint completes and truncates the WAL; new writes
        // start a WAL with new salts, which Litestream must detect on restart.
        rep.stop();
        let offline = self.checkpoint_truncate();
        assert_eq!(offline.0, 0, "checkpoint(TRUNCATE) with Litestream stopped was busy: {offline:?}");
        let wal_len = std::fs::metadata(self.dir.join("app.db-wal")).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal_len, 0, "WAL not truncated by wal_checkpoint(TRUNCATE)");
        self.insert_items(40);
        self.app.execute("INSERT INTO notes(body) VALUES ('written while litestream was down')", []).unwrap();
        let mut rep = Replicator::start(&self.config, &self.log);
        self.record("offline checkpoint(TRUNCATE) + writes, restart", &rep);

        self.app
            .execute_batch(
                "BEGIN;
                 UPDATE items SET payload = zeroblob(64) WHERE id % 40 = 0;
                 DELETE FROM notes WHERE id = 1;
                 COMMIT;",
            )
            .unwrap();
        self.record("final update", &rep);
        rep.stop();

        let latest = latest_l0(&self.url);
        assert_eq!(
            latest,
            self.last_txid(),
            "Litestream wrote TXIDs after the last step; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        (self.steps, self.log)
    }
}

fn file_listing_of_plan_litestream(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("Files to fetch"))
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            format!("{}/{}", c[0], c[1])
        })
        .collect()
}

fn file_listing_of_plan_sluice(stdout: &str) -> Vec<String> {
    stdout.lines().filter(|l| !l.trim().is_empty()).map(|l| l.split('\t').next().unwrap().to_string()).collect()
}

/// Result of restoring with both tools.
struct Pair {
    sluice: Output,
    litestream: Output,
    sluice_db: PathBuf,
    litestream_db: PathBuf,
}

fn restore_both(url: &str, args: &[&str], out_dir: &Path, tag: &str) -> Pair {
    let sluice_db = out_dir.join(format!("sluice-{tag}.db"));
    let litestream_db = out_dir.join(format!("litestream-{tag}.db"));
    let s = run(sluice().arg("restore").args(args).arg("-o").arg(&sluice_db).arg(url));
    let l = run(peer::litestream_command().arg("restore").args(args).arg("-o").arg(&litestream_db).arg(url));
    Pair { sluice: s, litestream: l, sluice_db, litestream_db }
}

/// Both succeeded and agree byte for byte; returns the logical hash.
#[track_caller]
fn assert_same_restore(p: &Pair, what: &str) -> String {
    ok(&p.litestream, &format!("litestream restore {what}"));
    ok(&p.sluice, &format!("sluice restore {what}"));
    assert_eq!(hash::integrity_check(&p.sluice_db), "ok", "{what}: sluice output fails integrity_check");
    assert_eq!(hash::integrity_check(&p.litestream_db), "ok", "{what}: litestream output fails integrity_check");
    let (ls, ll) = (hash::logical_sha256(&p.sluice_db), hash::logical_sha256(&p.litestream_db));
    assert_eq!(ls, ll, "{what}: logical content differs between sluice and litestream");
    assert_eq!(
        hash::file_sha256(&p.sluice_db),
        hash::file_sha256(&p.litestream_db),
        "{what}: restored bytes differ between sluice and litestream (logical content is equal)"
    );
    ls
}

#[track_caller]
fn assert_same_plan(url: &str, args: &[&str], out_dir: &Path, what: &str) {
    let out = out_dir.join("dry-run.db");
    let s = run(sluice().arg("restore").args(args).arg("-dry-run").arg("-o").arg(&out).arg(url));
    let l = run(peer::litestream_command().arg("restore").args(args).arg("-dry-run").arg("-o").arg(&out).arg(url));
    let sp = file_listing_of_plan_sluice(&ok(&s, &format!("sluice restore -dry-run {what}")));
    let lp = file_listing_of_plan_litestream(&ok(&l, &format!("litestream restore -dry-run {what}")));
    assert!(!lp.is_empty(), "{what}: could not parse litestream's dry-run output:\n{}", text(&l.stdout));
    assert_eq!(sp, lp, "{what}: restore plans differ (left: sluice, right: litestream)");
    assert!(!out.exists(), "{what}: --dry-run wrote {}", out.display());
}

/// All checks on a replica after the workload.
fn verify_replica(url: &str, steps: &[Step], file_root: Option<&Path>) {
    let out_dir = tempfile::tempdir().unwrap();
    let by_txid: BTreeMap<u64, &Step> = steps.iter().map(|s| (s.txid, s)).collect();
    let last = steps.last().unwrap();

    // Listings agree.
    let ll = litestream_ltx(url, "all").unwrap_or_else(|e| panic!("litestream ltx {url}: {e}"));
    let sl = sluice_ltx(url, "all");
    assert_eq!(sl, ll, "sluice ltx and litestream ltx list different files");
    eprintln!("{url}: {} files: {:?}", ll.len(), ll.iter().map(|f| (f.level, f.min, f.max)).collect::<Vec<_>>());

    // Latest.
    let p = restore_both(url, &[], out_dir.path(), "latest");
    let h = assert_same_restore(&p, "latest");
    assert_eq!(h, last.logical, "latest restore differs from the source after step {:?}", last.label);
    assert_same_plan(url, &[], out_dir.path(), "latest");

    // Every TXID.
    let mut restored_steps = 0;
    for txid in 1..=last.txid {
        let hex = fixtures::format_txid(txid);
        let args = ["-txid", hex.as_str()];
        let what = format!("-txid {hex}");
        let p = restore_both(url, &args, out_dir.path(), &hex);
        if !p.litestream.status.success() {
            assert!(
                !by_txid.contains_key(&txid),
                "litestream cannot restore recorded step TXID {hex}: {}",
                text(&p.litestream.stderr)
            );
            assert!(
                !p.sluice.status.success(),
                "{what}: litestream refuses ({}) but sluice restored",
                text(&p.litestream.stderr)
            );
            assert!(!p.sluice_db.exists());
            continue;
        }
        let h = assert_same_restore(&p, &what);
        if let Some(step) = by_txid.get(&txid) {
            assert_eq!(h, step.logical, "{what}: restored state differs from the source after step {:?}", step.label);
            let pages: i64 =
                Connection::open(&p.sluice_db).unwrap().query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            assert_eq!(pages, step.page_count, "{what}: page count differs from the source after {:?}", step.label);
            restored_steps += 1;
        }
        assert_same_plan(url, &args, out_dir.path(), &what);
        std::fs::remove_file(&p.sluice_db).unwrap();
        std::fs::remove_file(&p.litestream_db).unwrap();
    }
    assert_eq!(restored_steps, steps.len(), "not every recorded step was restored");

    // Timestamps (file backend: CreatedAt = mtime = LTX header timestamp).
    let Some(root) = file_root else { return };
    let l0: Vec<&Listed> = ll.iter().filter(|f| f.level == 0).collect();
    let ts_of = |txid: u64| -> i64 {
        let f = l0.iter().find(|f| f.max == txid).unwrap_or_else(|| panic!("no L0 file ends at {txid:#x}"));
        let path = root.join("ltx/0").join(format!("{:016x}-{:016x}.ltx", f.min, f.max));
        fixtures::ltx_header_timestamp_ms(&path).unwrap().unwrap()
    };
    let mut checked = 0;
    for pair in steps.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        // Between two adjacent TXIDs only; the first step is skipped (the L9 snapshot's time).
        if b.txid != a.txid + 1 || a.txid == 1 {
            continue;
        }
        let (ta, tb) = (ts_of(a.txid), ts_of(b.txid));
        if tb - ta < 2 {
            continue;
        }
        let ts = fixtures::rfc3339_ms((ta + tb) / 2);
        let what = format!("-timestamp {ts} (between {:?} and {:?})", a.label, b.label);
        let p = restore_both(url, &["-timestamp", &ts], out_dir.path(), &format!("ts-{}", a.txid));
        let h = assert_same_restore(&p, &what);
        assert_eq!(h, a.logical, "{what}: state differs from the source after {:?}", a.label);
        assert_same_plan(url, &["-timestamp", &ts], out_dir.path(), &what);
        checked += 1;
    }
    assert!(checked >= 2, "fewer than two step pairs were usable for -timestamp restores");
}

fn seed_for(name: &str) -> u64 {
    let seed = sluice_testkit::seed();
    eprintln!("{name}: SEED={seed}");
    seed
}

#[test]
fn litestream_file_replica_restores_identically() {
    let seed = seed_for("file");
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let (steps, _log) = Workload::new(dir.path(), &url, seed).run();
    verify_replica(&url, &steps, Some(&replica));
}

#[test]
fn litestream_s3_replica_restores_identically() {
    let seed = seed_for("s3");
    let dir = tempfile::tempdir().unwrap();
    let bucket = s3::new_bucket("sluice-interop");
    let url = s3::s3_url(&bucket, "app/db");
    let (steps, _log) = Workload::new(dir.path(), &url, seed).run();
    let keys = s3::list_keys(&bucket, "app/db/");
    assert!(keys.iter().any(|k| k.starts_with("app/db/0000/")), "no L0 objects in S3 layout: {keys:?}");
    verify_replica(&url, &steps, None);
}
