//! The `abs://` and `gs://` backends against real emulators: Azurite and fake-gcs-server, which
//! `scripts/test` starts (no mocks: object_store's real Azure and GCS clients talk HTTP to them).
//!
//! How each tool is pointed at an emulator, the way a user would:
//! * Azure: the replica's `endpoint` key (`http://127.0.0.1:PORT/devstoreaccount1`) with
//!   `account-name` / `account-key`, which both Sluice and Litestream 0.5.17 read from the config
//!   file; Sluice also takes `abs://account@container/path?endpoint=…` as a URL (restore, VFS),
//!   with the key from `LITESTREAM_AZURE_ACCOUNT_KEY`. Litestream's `abs://` URLs carry no
//!   endpoint, so Litestream is given a config file.
//! * GCS: `STORAGE_EMULATOR_HOST`, which Go's GCS client (Litestream's) and Sluice both honour,
//!   with plain `gs://bucket/path` URLs.
//!
//! Azure: `sluice replicate` ships a workload (several transactions, an application checkpoint
//! in the middle, then more), is stopped, and `sluice restore` and the real `litestream restore`
//! must give the source's `logical-v1` content at the latest TXID and at an intermediate one; the
//! Sluice VFS (in Debian's Python) reads the same content from the emulator.
//!
//! Both: `litestream replicate` ships the workload and `sluice restore` must give the source's
//! content at the latest TXID and, at every level-0 boundary, a state the application committed;
//! the Sluice VFS reads the latest state.
//!
//! **Sluice cannot write to fake-gcs-server**, so GCS has no `sluice replicate` test here:
//! object_store uploads through GCS's XML API (`PUT /<bucket>/<object>`, with
//! `x-goog-if-generation-match` for create-only puts), which real GCS serves but fake-gcs-server
//! does not: it implements uploads only in the JSON API (`/upload/storage/v1/…`) and answers
//! such a PUT `400 invalid uploadType` (fsouza/fake-gcs-server issue #331; the XML API pull
//! request #1164 is unmerged, and object_store's own CI runs a fork). Reads (JSON API listing,
//! plain GETs and ranged GETs) work, and are what the GCS tests cover.
//!
//! Randomized payloads: the seed is printed (`SEED=`) and can be replayed with `SEED=<n>`.
//! Run via `scripts/test -p sluice-cli --test backends_emulated`.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DAEMON_DEADLINE, Daemon, Rng, checkpoint, force_sync, free_port, ok, open_app, run, sluice, wait_ready};
use rusqlite::{Connection, params};
use sluice_testkit::process::{ChildGuard, wait_until};
use sluice_testkit::vfs_worker::VfsWorker;
use sluice_testkit::{emulators, hash, peer, vfs};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// One replica on an emulator, and how every process reaches it.
struct Emulated {
    label: &'static str,
    /// The `replica:` keys (YAML flow mapping entries) both Sluice and Litestream read.
    replica_keys: Vec<String>,
    /// The URL `sluice restore` and the VFS are given.
    url: String,
    /// Added to every process's environment (credentials, `STORAGE_EMULATOR_HOST`).
    env: Vec<(String, String)>,
}

fn azure(prefix: &str) -> Emulated {
    let az = emulators::azurite();
    let container = az.new_container(prefix);
    Emulated {
        label: "abs",
        replica_keys: vec![
            "type: abs".into(),
            format!("bucket: {container}"),
            "path: db".into(),
            format!("account-name: {}", az.account),
            format!("account-key: \"{}\"", az.key),
            format!("endpoint: \"{}\"", az.endpoint),
        ],
        // With a trailing '/' on the endpoint, as users may write it: it must not become
        // `…/devstoreaccount1//container` (Azurite answers such paths with an error).
        url: format!("{}/", az.url(&container, "db")),
        env: vec![("LITESTREAM_AZURE_ACCOUNT_KEY".into(), az.key)],
    }
}

fn gcs(prefix: &str) -> Emulated {
    let bucket = emulators::new_gcs_bucket(prefix);
    let url = format!("gs://{bucket}/db");
    Emulated {
        label: "gs",
        replica_keys: vec![format!("url: \"{url}\"")],
        url,
        env: vec![("STORAGE_EMULATOR_HOST".into(), emulators::gcs_endpoint())],
    }
}

impl Emulated {
    /// A config file for `db` (Sluice's if `addr` is given, else Litestream's: same keys).
    fn write_config(&self, path: &Path, db: &Path, addr: Option<u16>) {
        let addr = addr.map(|p| format!("addr: 127.0.0.1:{p}\n")).unwrap_or_default();
        let yaml = format!(
            "{addr}l0-retention: 1h\nlevels: [{{interval: 2s}}, {{interval: 5s}}]\nsnapshot: {{interval: 10s, retention: 1h}}\n\
             dbs:\n  - path: {db}\n    monitor-interval: 100ms\n    checkpoint-interval: 1s\n    \
             min-checkpoint-page-count: 50\n    replica: {{{keys}, sync-interval: 200ms}}\n",
            db = db.display(),
            keys = self.replica_keys.join(", ")
        );
        std::fs::write(path, yaml).expect("write config");
    }

    /// `sluice restore` of the URL into `out` (latest, or at `txid`).
    fn sluice_restore(&self, out: &Path, txid: Option<u64>) {
        let mut cmd = sluice();
        cmd.arg("restore").arg("-o").arg(out).envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(t) = txid {
            cmd.args(["--txid", &format!("{t:016x}")]);
        }
        cmd.arg(&self.url);
        ok(&run(&mut cmd), &format!("[{}] sluice restore {:?} of {}", self.label, txid, self.url));
    }

    /// The real `litestream restore -config C DB` into `out` (latest, or at `txid`).
    fn litestream_restore(&self, config: &Path, db: &Path, out: &Path, txid: Option<u64>) {
        let mut cmd = peer::litestream_command();
        cmd.arg("restore").arg("-config").arg(config).arg("-o").arg(out).envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(t) = txid {
            cmd.args(["-txid", &format!("{t:016x}")]);
        }
        cmd.arg(db);
        ok(&run(&mut cmd), &format!("[{}] litestream restore {:?}", self.label, txid));
    }

    /// Max TXIDs of the level-0 files, from `sluice ltx --level 0 URL`.
    fn level0_boundaries(&self) -> Vec<u64> {
        let mut cmd = sluice();
        cmd.args(["ltx", "--level", "0", &self.url]).envs(self.env.iter().map(|(k, v)| (k, v)));
        let listing = ok(&run(&mut cmd), &format!("[{}] sluice ltx", self.label));
        let mut maxes: Vec<u64> = listing
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').nth(2))
            .map(|h| u64::from_str_radix(h.trim(), 16).unwrap_or_else(|e| panic!("bad TXID {h:?}: {e}")))
            .collect();
        maxes.sort_unstable();
        maxes
    }
}

// ---------------------------------------------------------------------------------------------
// The workload: every step is one transaction, so every TXID boundary is a state it recorded.

/// The content the VFS check compares: every row, in order (small tables, so a plain string).
const CONTENT_SQL: &str = "SELECT count(*) || '|' || coalesce(group_concat(id || ':' || s || ':' || hex(v), ','), '') FROM (SELECT * FROM t ORDER BY id)";

fn insert_rows(c: &Connection, rng: &mut Rng, n: usize, blob: usize) {
    let tx = c.unchecked_transaction().expect("begin");
    for _ in 0..n {
        let s = rng.word(8);
        let len = blob / 2 + rng.below(blob as u64) as usize;
        let v = rng.bytes(len);
        tx.execute("INSERT INTO t(s, v) VALUES (?1, ?2)", params![s, v]).expect("insert");
    }
    tx.commit().expect("commit");
}

/// The first step, before any replicator runs (both wait for the database to exist).
fn create(db: &Path, rng: &mut Rng) -> Connection {
    let c = open_app(db, Duration::from_secs(5));
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT NOT NULL, v BLOB NOT NULL);").expect("schema");
    insert_rows(&c, rng, 20, 200);
    c
}

/// The rest of the workload; `after_step` runs after each transaction (and after the
/// checkpoint). Returns nothing: callers record what they need in `after_step`.
fn workload(c: &Connection, rng: &mut Rng, after_step: &mut dyn FnMut(&'static str)) {
    insert_rows(c, rng, 60, 1500);
    after_step("inserts");
    {
        let tx = c.unchecked_transaction().expect("begin");
        tx.execute("UPDATE t SET s = s || '-u' WHERE id % 3 = 0", []).expect("update");
        tx.commit().expect("commit");
    }
    after_step("updates");
    // The application checkpoints in the middle: later pages come from the database file.
    let (busy, log, done) = checkpoint(c, "TRUNCATE").expect("checkpoint");
    eprintln!("application checkpoint(TRUNCATE): busy {busy}, log {log}, checkpointed {done}");
    insert_rows(c, rng, 10, 800);
    after_step("after checkpoint");
    {
        let tx = c.unchecked_transaction().expect("begin");
        tx.execute("DELETE FROM t WHERE id % 5 = 0", []).expect("delete");
        tx.execute("CREATE INDEX t_s ON t(s)", []).expect("index");
        tx.commit().expect("commit");
    }
    after_step("delete + index");
    insert_rows(c, rng, 30, 400);
    after_step("final inserts");
}

#[derive(Debug)]
struct Step {
    label: &'static str,
    txid: u64,
    hash: String,
}

/// The application's content: `logical-v1` without the tables Litestream adds to the databases
/// it replicates (`_litestream_seq`, `_litestream_lock`), which its own commits change.
fn app_hash(db: &Path) -> String {
    let c = hash::open_read_only(db).unwrap_or_else(|e| panic!("{e:#}"));
    hash::logical_sha256_conn_without_litestream(&c).unwrap_or_else(|e| panic!("hash {}: {e:#}", db.display()))
}

#[track_caller]
fn assert_restored(path: &Path, want: &str, what: &str) {
    assert_eq!(hash::integrity_check(path), "ok", "{what}: PRAGMA integrity_check");
    assert_eq!(hash::logical_sha256(path), want, "{what}: content differs from the source");
}

// ---------------------------------------------------------------------------------------------

/// Sluice replicates; both tools restore (latest and an intermediate TXID); the VFS reads.
fn sluice_replicates(e: Emulated) {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let label = e.label;
    eprintln!("[{label}] replica {}", e.url);
    let port = free_port();
    let config = dir.path().join("sluice.yml");
    e.write_config(&config, &db, Some(port));

    let app = create(&db, &mut rng);
    let mut daemon = Daemon::start_with_env(&config, &e.env, &dir.path().join("daemon.log"));
    wait_ready(&mut daemon, port);

    let mut steps: Vec<Step> = Vec::new();
    let mut record = |step: &'static str| {
        let txid = force_sync(&db, &config);
        let h = hash::logical_sha256(&db);
        eprintln!("[{label}] step {step}: txid {txid:016x} hash {h}");
        steps.push(Step { label: step, txid, hash: h });
    };
    record("create");
    workload(&app, &mut rng, &mut record);
    daemon.stop_ok();
    let want_content: String = app.query_row(CONTENT_SQL, [], |r| r.get(0)).expect("source content");
    drop(app);

    let last = steps.last().expect("steps");
    let mid = &steps[steps.len() / 2];
    assert!(mid.txid < last.txid, "[{label}] the intermediate step {mid:?} is not before the last {last:?}");

    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir out");
    for (step, txid) in [(last, None), (mid, Some(mid.txid))] {
        let what = format!("[{label}] sluice restore at {} ({:016x})", step.label, step.txid);
        let path = out.join(format!("sluice-{:016x}.db", step.txid));
        e.sluice_restore(&path, txid);
        assert_restored(&path, &step.hash, &what);
    }

    // The real Litestream reads what Sluice wrote (same config file: the keys are Litestream's).
    let ls_config = dir.path().join("litestream.yml");
    e.write_config(&ls_config, &db, None);
    for (step, txid) in [(last, None), (mid, Some(mid.txid))] {
        let what = format!("[{label}] litestream restore at {} ({:016x})", step.label, step.txid);
        let path = out.join(format!("litestream-{:016x}.db", step.txid));
        e.litestream_restore(&ls_config, &db, &path, txid);
        assert_restored(&path, &step.hash, &what);
    }

    vfs_reads(&e, dir.path(), last.txid, &want_content);
}

/// The Sluice VFS (the real .so in Debian's Python) reads the replica on the emulator: the
/// latest TXID, a sound database, the source's rows.
fn vfs_reads(e: &Emulated, dir: &Path, txid: u64, want_content: &str) {
    let label = e.label;
    let mut w = VfsWorker::spawn_with_env("vfs", dir, &e.env);
    w.open("r", &vfs::uri("app.db", &e.url, &[]));
    assert_eq!(w.q("r", "PRAGMA integrity_check"), "ok", "[{label}] VFS integrity_check; log:\n{}", w.log_text());
    assert_eq!(w.q("r", "SELECT sluice_txid()"), format!("{txid:016x}"), "[{label}] VFS TXID");
    assert!(w.q("r", CONTENT_SQL) == want_content, "[{label}] the VFS sees other rows than the source");
    w.close("r");
    w.exit();
}

/// Litestream replicates; Sluice restores the latest TXID and every level-0 boundary.
fn litestream_replicates(e: Emulated) {
    let seed = sluice_testkit::seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let label = e.label;
    eprintln!("[{label}] replica {}", e.url);
    let config = dir.path().join("litestream.yml");
    e.write_config(&config, &db, None);

    let app = create(&db, &mut rng);
    let mut hashes = vec![app_hash(&db)];
    let log = dir.path().join("litestream.log");
    let f = File::create(&log).expect("create litestream log");
    let mut cmd: Command = peer::litestream_command();
    cmd.arg("replicate")
        .arg("-config")
        .arg(&config)
        .envs(e.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("clone log"))
        .stderr(f);
    let mut child = ChildGuard::spawn(&mut cmd);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    // Ready once it has shipped its first file (listed through Sluice's own client).
    let ready = wait_until(DAEMON_DEADLINE, || child.try_wait().is_some() || !e.level0_boundaries().is_empty());
    assert!(ready && child.try_wait().is_none(), "[{label}] litestream not replicating; log:\n{}", log_text());

    workload(&app, &mut rng, &mut |_| hashes.push(app_hash(&db)));
    let final_hash = hashes.last().expect("hashes").clone();
    let want_content: String = app.query_row(CONTENT_SQL, [], |r| r.get(0)).expect("source content");
    drop(app);

    // Wait until Litestream's own restore has the final state, then stop it. Its shutdown sync
    // is not relied on: in one run on fake-gcs-server, a SIGTERM right after the last commit
    // left that commit unshipped (exit 0; Litestream's own restore lacked it too).
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir out");
    let ls_latest = out.join("litestream-latest.db");
    let caught_up = wait_until(DAEMON_DEADLINE, || {
        let _ = std::fs::remove_file(&ls_latest);
        e.litestream_restore(&config, &db, &ls_latest, None);
        app_hash(&ls_latest) == final_hash
    });
    assert!(caught_up, "[{label}] Litestream's restore never reached the final state; log:\n{}", log_text());
    let (status, clean) = child.stop("TERM", DAEMON_DEADLINE);
    assert!(clean && status.success(), "[{label}] litestream stop: {status:?}; log:\n{}", log_text());

    let mut cmd = sluice();
    cmd.args(["ltx", &e.url]).envs(e.env.iter().map(|(k, v)| (k, v)));
    eprintln!("[{label}] Litestream's replica:\n{}", ok(&run(&mut cmd), "sluice ltx"));
    let latest = out.join("latest.db");
    e.sluice_restore(&latest, None);
    assert_eq!(hash::integrity_check(&latest), "ok", "[{label}] sluice restore (latest): integrity_check");
    assert_eq!(app_hash(&latest), final_hash, "[{label}] sluice restore (latest) of Litestream's replica");

    // Each step is one transaction, so every file boundary is a state the application had.
    let boundaries = e.level0_boundaries();
    eprintln!("[{label}] Litestream's level-0 boundaries: {boundaries:x?}");
    let mut last_index = 0;
    for txid in boundaries {
        let path = out.join(format!("{txid:016x}.db"));
        e.sluice_restore(&path, Some(txid));
        assert_eq!(hash::integrity_check(&path), "ok", "[{label}] sluice restore at {txid:016x}");
        let h = app_hash(&path);
        let index = hashes.iter().position(|x| *x == h);
        let index = index.unwrap_or_else(|| {
            panic!("[{label}] restore at {txid:016x}: not a state the application had: {:?}", hash::row_counts(&path))
        });
        assert!(index >= last_index, "[{label}] restore at {txid:016x} is older than the previous boundary's");
        last_index = index;
    }
    let last = e.level0_boundaries().last().copied().expect("level-0 files");
    vfs_reads(&e, dir.path(), last, &want_content);
}

#[test]
fn abs_sluice_replicates_both_tools_restore_vfs_reads() {
    sluice_replicates(azure("sluice-abs"));
}

#[test]
fn abs_litestream_replicates_sluice_restores() {
    litestream_replicates(azure("litestream-abs"));
}

#[test]
fn gs_litestream_replicates_sluice_restores() {
    litestream_replicates(gcs("litestream-gs"));
}
