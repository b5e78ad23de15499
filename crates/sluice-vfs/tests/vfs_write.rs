//! Write mode through the real extension (the debug `.so` loaded into rusqlite's bundled
//! SQLite): thousands of mixed transactions (growing, shrinking with DELETE + VACUUM and
//! incremental auto-vacuum, schema changes, rollbacks after cache spills) checked against a
//! native SQLite database running the same statements, in the same connection, from a second
//! connection, after reopening, and in `sluice restore`'s and `litestream restore`'s output;
//! and a second writer in the process refused while the first holds the replica.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{content_of, content_of_file, file_url, restore};
use rusqlite::{Connection, OpenFlags};
use sluice_engine::restore::Target;
use sluice_testkit::process::output_with_timeout;
use sluice_testkit::{peer, s3, vfs};

/// xorshift64*: the workload is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Syncs often, so they land at every stage of the transactions.
const SYNC: &str = "20ms";

fn open_write(name: &str, replica: &str, buffer: &Path, extra: &[(&str, &str)]) -> Connection {
    vfs::load(&vfs::debug_so());
    let mut params = vec![("write", "1"), ("buffer", buffer.to_str().expect("utf-8 path")), ("sync", SYNC)];
    params.extend_from_slice(extra);
    let u = vfs::uri(name, replica, &params);
    let c = Connection::open_with_flags(&u, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI)
        .unwrap_or_else(|e| panic!("open {u}: {e}"));
    c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    c
}

/// What the workload does next.
enum Step {
    /// Statements in one transaction, committed or rolled back.
    Txn(Vec<String>, bool),
    /// A statement on its own (VACUUM and incremental vacuum cannot run in a transaction).
    Alone(String),
}

/// A text of `len` bytes that depends on `seed` (SQL), the same on both databases.
fn filler(len: u64, seed: &str) -> String {
    format!("printf('%.*c', {len}, char(65 + ({seed}) % 26))")
}

/// Transaction `i` of the workload, drawn from `rng`.
fn step(rng: &mut Rng, i: u64) -> Step {
    match rng.below(40) {
        0 => return Step::Alone("VACUUM".into()),
        1 => return Step::Alone("PRAGMA incremental_vacuum(50)".into()),
        _ => {}
    }
    let mut sql = Vec::new();
    match rng.below(30) {
        0 => sql.push(format!("CREATE TABLE IF NOT EXISTS side{} (k INTEGER PRIMARY KEY, v BLOB)", i % 7)),
        1 => sql.push(format!("DROP TABLE IF EXISTS side{}", rng.below(7))),
        2 => sql.push("CREATE INDEX IF NOT EXISTS t_n ON t(n)".into()),
        3 => sql.push("DROP INDEX IF EXISTS t_n".into()),
        _ => {}
    }
    for _ in 0..1 + rng.below(4) {
        match rng.below(10) {
            0..=4 => {
                let big = rng.below(30) == 0;
                let rows = 1 + rng.below(if big { 400 } else { 8 });
                let v = filler(50 + rng.below(3000), &format!("x + {i}"));
                sql.push(format!(
                    "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {rows}) \
                     INSERT INTO t(n, v) SELECT (x * {i}) % 1000, {v} FROM s"
                ));
            }
            5..=6 => sql.push(format!(
                "UPDATE t SET v = {} WHERE id % 97 = {}",
                filler(10 + rng.below(2000), &format!("id + {i}")),
                rng.below(97)
            )),
            7..=8 => {
                let from = rng.below(i * 3 + 10);
                sql.push(format!("DELETE FROM t WHERE id BETWEEN {from} AND {}", from + rng.below(300)));
            }
            _ => sql.push(format!(
                "INSERT OR REPLACE INTO side{} (k, v) VALUES ({}, zeroblob(900))",
                i % 7,
                rng.below(50)
            )),
        }
    }
    Step::Txn(sql, rng.below(20) == 0)
}

/// Runs `step` on `c`; a failing statement (a side table dropped earlier) rolls its
/// transaction back, on both databases alike.
fn run_step(c: &Connection, step: &Step) -> Result<(), String> {
    let (sql, rollback) = match step {
        Step::Alone(s) => return c.execute_batch(s).map_err(|e| e.to_string()),
        Step::Txn(sql, rollback) => (sql, *rollback),
    };
    c.execute_batch("BEGIN").map_err(|e| e.to_string())?;
    for s in sql {
        if let Err(e) = c.execute_batch(s) {
            // Keep the first error: SQLite may have rolled back already (then ROLLBACK fails).
            return Err(match c.execute_batch("ROLLBACK") {
                Ok(()) => e.to_string(),
                Err(r) => format!("{e} (then {r})"),
            });
        }
    }
    c.execute_batch(if rollback { "ROLLBACK" } else { "COMMIT" }).map_err(|e| e.to_string())
}

const SCHEMA: &str = "PRAGMA auto_vacuum = INCREMENTAL; CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, v BLOB);";

/// Integrity, schema and a summary of `t` (a quick check between the full comparisons).
fn shape(c: &Connection) -> String {
    let mut out = vfs::integrity_check(c).expect("integrity_check");
    let mut stmt = c.prepare("SELECT name FROM sqlite_schema ORDER BY name").expect("schema");
    let names: Vec<String> = stmt.query_map([], |r| r.get(0)).expect("names").map(Result::unwrap).collect();
    out.push_str(&format!(" schema={names:?}"));
    let t: (i64, i64, i64) = c
        .query_row("SELECT count(*), coalesce(sum(id), 0), coalesce(sum(length(v)), 0) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("t");
    out.push_str(&format!(" t={t:?}"));
    out
}

fn txns() -> u64 {
    std::env::var("SLUICE_TEST_WRITE_TXNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

#[test]
fn mixed_transactions_match_native_sqlite_in_the_connection_after_reopen_and_in_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = tmp.path().join("replica");
    let url = file_url(&replica);
    let buffer = tmp.path().join("app.buffer");
    let native = Connection::open(tmp.path().join("native.db")).unwrap();
    let c = open_write("mixed.db", &url, &buffer, &[]);
    // A tiny page cache: big transactions spill to the database before they commit (and the
    // rollbacks among them play original pages back).
    c.execute_batch("PRAGMA cache_size = 20").unwrap();
    native.execute_batch("PRAGMA cache_size = 20").unwrap();
    c.execute_batch(SCHEMA).unwrap();
    native.execute_batch(SCHEMA).unwrap();
    let reader = open_write("mixed.db", &url, &buffer, &[]);
    let mut rng = Rng(0x05ee_d0f5_a1ce);
    let n = txns();
    for i in 1..=n {
        let step = step(&mut rng, i);
        let a = run_step(&c, &step);
        let b = run_step(&native, &step);
        assert_eq!(a, b, "step {i}");
        if i % 250 == 0 {
            let txid: String = c.query_row("SELECT sluice_sync()", [], |r| r.get(0)).unwrap();
            assert_eq!(txid.len(), 16);
        }
        if i % 100 == 0 || i == n {
            let want = shape(&native);
            assert_eq!(shape(&c), want, "txn {i}, same connection");
            assert_eq!(shape(&reader), want, "txn {i}, another connection");
            assert!(want.starts_with("ok"), "{want}");
            let vfs_hash = sluice_testkit::hash::logical_sha256_conn(&c).unwrap();
            assert_eq!(vfs_hash, sluice_testkit::hash::logical_sha256_conn(&native).unwrap(), "txn {i}");
        }
    }
    let want = content_of(&native).unwrap();
    drop((c, reader)); // the last connection closes: final sync, lease released
    let again = open_write("mixed.db", &url, &buffer, &[]);
    assert_eq!(content_of(&again).unwrap(), want, "after reopen");
    assert_eq!(again.query_row("SELECT sluice_pending()", [], |r| r.get::<_, String>(0)).unwrap(), "0 0");
    drop(again);

    let restored = restore(&url, Target::Latest, tmp.path());
    assert_eq!(content_of_file(&restored), want, "sluice restore");
    let ls = tmp.path().join("litestream.db");
    let out = output_with_timeout(
        peer::litestream_command().arg("restore").arg("-o").arg(&ls).arg(&url),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "litestream restore: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(content_of_file(&ls), want, "litestream restore");
}

#[test]
fn a_new_empty_replica_on_s3_starts_a_database_and_a_second_writer_is_refused() {
    let bucket = s3::new_bucket("vfs-write");
    let url = s3::s3_url(&bucket, "app");
    let tmp = tempfile::tempdir().unwrap();
    let c = open_write("s3.db", &url, &tmp.path().join("a.buffer"), &[]);
    c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);").unwrap();
    let txid: String = c.query_row("SELECT sluice_sync()", [], |r| r.get(0)).unwrap();
    assert_eq!(txid, "0000000000000001");
    let pending: String = c.query_row("SELECT sluice_pending()", [], |r| r.get(0)).unwrap();
    assert_eq!(pending, "0 0");
    c.execute_batch("INSERT INTO t VALUES (3)").unwrap();
    let durable: i64 = c.query_row("SELECT sluice_wait_durable(30000)", [], |r| r.get(0)).unwrap();
    assert_eq!(durable, 1);
    let enabled: String = c.query_row("PRAGMA sluice_write_enabled", [], |r| r.get(0)).unwrap();
    assert_eq!(enabled, "1");

    // A second process would hold its own session; here another replica URL spelling would
    // share it, so the second writer is a child process (Python, the real .so).
    let py = r#"
import sqlite3, sys
b = sqlite3.connect(":memory:"); b.enable_load_extension(True); b.load_extension(sys.argv[1])
c = sqlite3.connect(sys.argv[2], uri=True)
print(c.execute("PRAGMA sluice_write_enabled").fetchone()[0], c.execute("SELECT count(*) FROM t").fetchone()[0])
try:
    c.execute("INSERT INTO t VALUES (99)"); c.commit(); print("wrote")
except sqlite3.Error as e:
    print("refused", type(e).__name__, e.sqlite_errorname)
"#;
    let so = vfs::debug_so();
    let child_uri =
        |buf: &str| vfs::uri("s3.db", &url, &[("write", "1"), ("buffer", tmp.path().join(buf).to_str().unwrap())]);
    let run = |buf: &str| {
        let out = output_with_timeout(
            peer::python_command().arg("-c").arg(py).arg(so.with_extension("")).arg(child_uri(buf)),
            Duration::from_secs(120),
        );
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (stdout, stderr) = run("b.buffer");
    assert_eq!(stdout.trim(), "0 3\nrefused OperationalError SQLITE_READONLY", "{stderr}");
    assert!(stderr.contains("write mode refused") && stderr.contains("pid"), "the log names the holder: {stderr}");
    drop(c);
    let (stdout, stderr) = run("b.buffer");
    assert_eq!(stdout.trim(), "1 3\nwrote", "{stderr}");
    let restored = restore(&url, Target::Latest, tmp.path());
    assert_eq!(sluice_testkit::hash::row_counts(&restored)["t"], 4);
}
