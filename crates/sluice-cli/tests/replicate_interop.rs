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

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{
    Daemon, Rng, checkpoint, force_sync, free_port, ok, open_app, restore, run, sluice_ltx, text, wait_ready,
};
use rusqlite::{Connection, params};
use sluice_testkit::{hash, peer, s3};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// The replica's `sync-interval`: short, so background uploads interleave with the forced
/// uploads of `sluice sync` at every step.
const SYNC_INTERVAL: &str = "200ms";

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
