//! A hydrated reader following a live replica, written by the real `sluice replicate` and by
//! the real `litestream replicate` 0.5.17: once hydrated, each new transaction costs at most
//! one GET per new LTX file (the poll's LISTs aside), its pages are then read locally, and the
//! copy's content equals the source's after every commit.
//!
//! The reader is the VFS's read path in-process (`sluice_engine::read::Replica`, the code the
//! extension runs), over a store wrapper that counts requests.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{Daemon, free_port, open_app, wait_ready};
use sluice_engine::read::{Hydration, ReadOptions, Replica};
use sluice_storage::{FaultyStore, ReplicaClient, RetryPolicy, StoreKind};
use sluice_testkit::peer;
use sluice_testkit::process::{ChildGuard, wait_until};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for anything the test waits for (not an expectation).
const PATIENCE: Duration = Duration::from_secs(60);

fn digest(c: &rusqlite::Connection) -> (i64, i64) {
    c.query_row("SELECT count(*), coalesce(sum(length(v) + id), 0) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
}

/// Every page of the reader's latest state, as a database file, and its digest.
fn read_back(r: &Arc<Replica>, dir: &Path) -> (i64, i64) {
    let v = r.latest();
    let ps = v.page_size as usize;
    let mut image = vec![0u8; v.file_size() as usize];
    for (i, page) in image.chunks_exact_mut(ps).enumerate() {
        r.read_page(&v, i as u32 + 1, page).unwrap_or_else(|e| panic!("page {}: {e}", i + 1));
    }
    let path = dir.join("read-back.db");
    std::fs::write(&path, &image).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let d = digest(&c);
    drop(c);
    let _ = std::fs::remove_file(&path);
    d
}

fn follow(dir: &Path, src: &rusqlite::Connection, replica: &Path, who: &str) {
    let plain = ReplicaClient::from_url(&format!("file://{}", replica.display())).unwrap();
    let counted = FaultyStore::new(plain.store().clone(), 1);
    let prefix: &str = plain.prefix().as_ref();
    let client =
        ReplicaClient::new(Arc::new(counted.clone()), StoreKind::File, prefix).with_retry_policy(RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
        });
    let opts = ReadOptions { poll_interval: Duration::from_millis(50), ..ReadOptions::default() };
    let r = Replica::open_hydrated(client, opts, &Hydration::Temp).unwrap_or_else(|e| panic!("{who}: {e}"));
    assert!(wait_until(PATIENCE, || r.hydration_progress() == Some(100)), "{who}: hydration never completed");

    let mut gets_per_file = Vec::new();
    for g in 0..6 {
        let before = r.latest().txid;
        let counts = counted.counts();
        src.execute("INSERT INTO t (v) VALUES (randomblob(?1))", [3000 + g * 500]).unwrap();
        let want = digest(src);
        // Seen, applied, and served locally: reading every page makes no request.
        let caught_up = wait_until(PATIENCE, || {
            if r.latest().txid == before {
                return false;
            }
            let c = counted.counts();
            read_back(&r, dir) == want && counted.counts().get_range == c.get_range && counted.counts().get == c.get
        });
        assert!(caught_up, "{who}: commit {g} never read locally with the source's content");
        let after = r.latest().txid;
        let new_files = plain_l0_files(replica).iter().filter(|(min, max)| *min > before.0 && *max <= after.0).count();
        let c = counted.counts();
        let gets = (c.get + c.get_range) - (counts.get + counts.get_range);
        assert!(new_files >= 1, "{who}: no new level-0 file between {before} and {after}");
        assert!(gets <= new_files as u64, "{who}: {gets} GETs for {new_files} new LTX files");
        gets_per_file.push(format!("{gets}/{new_files}"));
    }
    eprintln!("{who}: GETs per new LTX files, commit by commit: {gets_per_file:?}");
}

/// (min, max) TXIDs of the level-0 files in a `file://` replica.
fn plain_l0_files(replica: &Path) -> Vec<(u64, u64)> {
    std::fs::read_dir(replica.join("ltx").join("0"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| sluice_ltx::parse_filename(&e.file_name().to_string_lossy()))
        .map(|(a, b)| (a.0, b.0))
        .collect()
}

fn source(dir: &Path) -> rusqlite::Connection {
    let c = open_app(&dir.join("app.db"), Duration::from_secs(5));
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);").unwrap();
    for _ in 0..200 {
        c.execute("INSERT INTO t (v) VALUES (randomblob(1500))", []).unwrap();
    }
    c
}

#[test]
fn a_hydrated_reader_follows_sluice_replicate_with_one_get_per_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let replica = tmp.path().join("replica");
    let port = free_port();
    let config = tmp.path().join("sluice.yml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:{port}\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    \
             replica: {{url: \"file://{}\", sync-interval: 200ms}}\n",
            tmp.path().join("app.db").display(),
            replica.display()
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&config, &[], &tmp.path().join("sluice.log"));
    wait_ready(&mut d, port);
    follow(tmp.path(), &src, &replica, "sluice replicate");
    d.stop_ok();
}

#[test]
fn a_hydrated_reader_follows_litestream_replicate_with_one_get_per_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let replica = tmp.path().join("replica");
    let config = tmp.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: '{}'\n    monitor-interval: 200ms\n    replica:\n      url: 'file://{}'\n      \
             sync-interval: 200ms\n",
            tmp.path().join("app.db").display(),
            replica.display()
        ),
    )
    .unwrap();
    let log_path = tmp.path().join("litestream.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = peer::litestream_command();
    cmd.args(["replicate", "-config"]).arg(&config).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    let mut guard = ChildGuard::spawn(&mut cmd);
    let ready = wait_until(PATIENCE, || !plain_l0_files(&replica).is_empty());
    assert!(ready, "litestream did not replicate; log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    follow(tmp.path(), &src, &replica, "litestream replicate");
    let (_, clean) = guard.stop("TERM", Duration::from_secs(60));
    assert!(clean, "litestream did not stop");
}
