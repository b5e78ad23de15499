//! Helpers shared by the VFS integration tests: what `sluice restore` produces for a replica,
//! to compare with what the VFS shows.
//!
//! Each test file compiles this module separately, so items only some files use carry
//! `#[allow(dead_code)]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use sluice_engine::restore::{RestoreOptions, Target};
use sluice_ltx::TxId;
use sluice_storage::ReplicaClient;
use sluice_testkit::fixtures::RestoreCase;
use sluice_testkit::hash;

/// The content of one database state, as compared between a restore and the VFS.
#[derive(Debug, PartialEq, Eq)]
pub struct Content {
    pub logical_sha256: String,
    pub integrity: String,
    pub row_counts: BTreeMap<String, u64>,
    pub page_size: u32,
}

/// Restores `url` at `target` with the engine `sluice restore` runs into `dir`.
#[allow(dead_code)]
pub fn restore(url: &str, target: Target, dir: &Path) -> PathBuf {
    try_restore(url, target, dir).unwrap_or_else(|e| panic!("sluice restore {url} at {target:?}: {e}"))
}

/// [`restore`], returning the engine's error (for example an empty replica) to the caller.
#[allow(dead_code)]
pub fn try_restore(url: &str, target: Target, dir: &Path) -> Result<PathBuf, sluice_engine::Error> {
    let out = dir.join(format!("restored-{:016x}.db", sluice_testkit::seed::random_u64()));
    let client = ReplicaClient::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let opts = RestoreOptions { target, ..RestoreOptions::default() };
    rt.block_on(sluice_engine::restore::restore(&client, &out, &opts))?;
    Ok(out)
}

/// The content of a restored database file.
#[allow(dead_code)]
pub fn content_of_file(db: &Path) -> Content {
    let conn = hash::open_read_only(db).unwrap_or_else(|e| panic!("{e:#}"));
    content_of(&conn).unwrap_or_else(|e| panic!("{}: {e:#}", db.display()))
}

/// The content seen through `conn` (for example a VFS connection).
pub fn content_of(conn: &Connection) -> anyhow::Result<Content> {
    let logical_sha256 = hash::logical_sha256_conn(conn)?;
    let integrity = sluice_testkit::vfs::integrity_check(conn)?;
    let mut row_counts = BTreeMap::new();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name in names {
        let n: i64 =
            conn.query_row(&format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\"")), [], |r| r.get(0))?;
        row_counts.insert(name, u64::try_from(n)?);
    }
    let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(Content { logical_sha256, integrity, row_counts, page_size })
}

/// The restore target a manifest case stands for.
#[allow(dead_code)]
pub fn target_of(case: &RestoreCase) -> Target {
    if let Some(t) = case.txid_arg() {
        Target::Txid(TxId(t))
    } else if let Some(ts) = case.timestamp_arg() {
        Target::Timestamp(chrono::DateTime::parse_from_rfc3339(ts).expect("manifest timestamp").to_utc())
    } else {
        Target::Latest
    }
}

/// `file://` URL of a replica directory.
#[allow(dead_code)]
pub fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// `(min, max)` TXID ranges of the replica's LTX files at `level`, sorted (the listing
/// `sluice restore` plans from).
#[allow(dead_code)]
pub fn level_ranges(url: &str, level: u8) -> Vec<(u64, u64)> {
    let client = ReplicaClient::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let files = rt.block_on(client.list_level(level)).unwrap_or_else(|e| panic!("list level {level} of {url}: {e}"));
    let mut ranges: Vec<(u64, u64)> = files.iter().map(|f| (f.min_txid.0, f.max_txid.0)).collect();
    ranges.sort_unstable();
    ranges
}

/// Asserts that the level-0 files of `url` form one chain starting at TXID 1 (each file
/// starts right after the previous one ends: no gap, no overlap, no two files for one TXID,
/// i.e. no fork) and returns the TXID it ends at.
#[allow(dead_code)]
#[track_caller]
pub fn assert_one_l0_chain(url: &str) -> u64 {
    let ranges = level_ranges(url, 0);
    assert!(!ranges.is_empty(), "{url} has no level-0 file");
    assert_eq!(ranges[0].0, 1, "the level-0 chain of {url} does not start at TXID 1: {ranges:x?}");
    for w in ranges.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].1 + 1,
            "level-0 files {:x?} then {:x?} of {url}: a gap, an overlap or a fork",
            w[0],
            w[1]
        );
    }
    for r in &ranges {
        assert!(r.0 <= r.1, "level-0 file {r:x?} of {url} ends before it starts");
    }
    ranges[ranges.len() - 1].1
}
