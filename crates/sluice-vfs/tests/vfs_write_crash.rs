//! kill -9 of a write-mode process at random moments (a Python process on the real `.so`),
//! in both fsync modes: after every kill the replica is a gapless prefix of what was
//! committed (it ends at a sync), and the next open recovers every committed row from the
//! buffer (a killed process loses nothing the kernel already had, whichever the mode; `commit`
//! additionally survives a machine crash, which a test cannot do here).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use common::{file_url, try_restore};
use sluice_engine::restore::Target;
use sluice_testkit::{peer, vfs};

const WORKER: &str = r#"
import sqlite3, sys
b = sqlite3.connect(":memory:"); b.enable_load_extension(True); b.load_extension(sys.argv[1])
c = sqlite3.connect(sys.argv[2], uri=True, isolation_level=None)
c.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
n, top = c.execute("SELECT count(*), coalesce(max(id), 0) FROM t").fetchone()
print("open", n, top, flush=True)
k = top
while True:
    k += 1
    if k % 7 == 0:
        c.execute("BEGIN")
        c.execute("INSERT INTO t VALUES (?, randomblob(3000))", (k,))
        c.execute("INSERT INTO t VALUES (?, randomblob(10))", (k + 1,))
        c.execute("COMMIT")
        k += 1
    else:
        c.execute("INSERT INTO t VALUES (?, randomblob(?))", (k, 100 + k % 500))
    print("c", k, flush=True)
"#;

fn spawn(so: &Path, uri: &str) -> Child {
    peer::python_command()
        .arg("-c")
        .arg(WORKER)
        .arg(so.with_extension(""))
        .arg(uri)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn python")
}

/// Ids in the restored replica: must be 1..=m without gaps. A kill before the first sync
/// leaves the replica empty, which is the empty prefix.
fn replica_prefix(url: &str, dir: &Path) -> u64 {
    let db = match try_restore(url, Target::Latest, dir) {
        Ok(db) => db,
        Err(sluice_engine::Error::EmptyReplica { .. }) => return 0,
        Err(e) => panic!("sluice restore {url}: {e}"),
    };
    let c = rusqlite::Connection::open(&db).unwrap();
    let (n, top): (i64, i64) =
        c.query_row("SELECT count(*), coalesce(max(id), 0) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(n, top, "the replica has a gap: {n} rows up to id {top}");
    drop(c);
    std::fs::remove_file(&db).unwrap();
    u64::try_from(top).unwrap()
}

fn crash_cycles(fsync: &str) {
    let cycles: u64 = std::env::var("SLUICE_TEST_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let so = vfs::debug_so();
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("replica"));
    let buffer = tmp.path().join("app.buffer");
    let uri = vfs::uri(
        "app.db",
        &url,
        &[("write", "1"), ("buffer", buffer.to_str().unwrap()), ("sync", "150ms"), ("fsync", fsync)],
    );
    let mut rng = sluice_testkit::seed::random_u64() | 1;
    let mut committed = 0u64;
    let mut in_replica = 0u64;
    for cycle in 0..=cycles {
        let mut child = spawn(&so, &uri);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let open = lines.next().expect("the worker opened").expect("stdout");
        let v: Vec<u64> = open.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
        assert_eq!(v[0], v[1], "cycle {cycle}: rows have a gap after recovery: {open}");
        assert!(v[1] >= committed, "cycle {cycle} ({fsync}): committed up to {committed}, recovered {open}");
        assert!(v[1] >= in_replica);
        if cycle == cycles {
            let _ = child.kill();
            break;
        }
        // Kill after a random number of commits (0..400), i.e. at a random moment.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wait = rng % 400;
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for (i, l) in lines.by_ref().enumerate() {
                let Ok(l) = l else { break };
                last = l.strip_prefix("c ").and_then(|k| k.parse::<u64>().ok()).or(last);
                if i as u64 == wait {
                    break;
                }
            }
            (last, lines)
        });
        let (last, lines) = reader.join().unwrap();
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        // Lines printed before the kill landed are committed too.
        let rest: Option<u64> =
            lines.map_while(Result::ok).filter_map(|l| l.strip_prefix("c ").and_then(|k| k.parse().ok())).last();
        committed = committed.max(rest.or(last).unwrap_or(0));
        let prefix = replica_prefix(&url, tmp.path());
        assert!(prefix >= in_replica, "the replica went back: {prefix} < {in_replica}");
        assert!(prefix <= committed, "the replica has uncommitted rows: {prefix} > {committed}");
        in_replica = prefix;
    }
    assert!(committed > cycles, "the workers committed too little to mean anything: {committed}");
}

#[test]
fn kill_9_with_commit_fsync_loses_nothing_committed() {
    crash_cycles("commit");
}

#[test]
fn kill_9_with_sync_fsync_recovers_the_buffer_and_the_replica_is_a_prefix() {
    crash_cycles("sync");
}
