//! Checks a replica against the history an [`App`](super::app::App) recorded: restores at the
//! latest TXID and at intermediate ones, with one or both tools, must each be an exact,
//! sound prefix of that history.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sluice_testkit::hash;

use super::app::{HashKind, State};
use super::settings::{AutoVacuum, SplitMix};
use super::{restore, sluice_ltx};

/// What a replica must match.
pub struct Expected<'a> {
    pub history: &'a BTreeMap<u64, State>,
    pub final_seq: u64,
    pub page_size: u32,
    pub hash: HashKind,
}

/// What a restored database holds.
#[derive(Debug, PartialEq, Eq)]
struct Restored {
    seq: u64,
    user_version: u64,
    page_size: u32,
    auto_vacuum: AutoVacuum,
    hash: String,
    file_sha256: String,
}

fn inspect(path: &Path, kind: HashKind) -> Restored {
    let integrity = hash::integrity_check(path);
    assert_eq!(integrity, "ok", "{}: PRAGMA integrity_check", path.display());
    let c = hash::open_read_only(path).unwrap_or_else(|e| panic!("{e:#}"));
    let objects: i64 = c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).expect("read schema");
    if objects == 0 {
        // The database as the application created it, before its first table: setting WAL
        // mode commits the header alone, and a daemon watching the directory may capture it.
        let (page_size, av): (u32, i64) = c
            .query_row("SELECT * FROM pragma_page_size, pragma_auto_vacuum", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("read header fields");
        return Restored {
            seq: 0,
            user_version: 0,
            page_size,
            auto_vacuum: AutoVacuum::from_pragma(av),
            hash: String::new(),
            file_sha256: hash::file_sha256(path),
        };
    }
    let (seq, user_version, page_size, av): (i64, i64, u32, i64) = c
        .query_row(
            "SELECT (SELECT n FROM seq), * FROM pragma_user_version, pragma_page_size, pragma_auto_vacuum",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap_or_else(|e| panic!("{}: read seq and header fields: {e}", path.display()));
    Restored {
        seq: seq as u64,
        user_version: user_version as u64,
        page_size,
        auto_vacuum: AutoVacuum::from_pragma(av),
        hash: kind.of_conn(&c),
        file_sha256: hash::file_sha256(path),
    }
}

/// Restores `txid` (latest if `None`) with each tool; checks each result against the history
/// and the tools against each other (byte-identical files). Returns the restored seq.
fn check_restore(label: &str, url: &str, out: &Path, tools: &[&str], txid: Option<u64>, exp: &Expected) -> u64 {
    let at = txid.map_or_else(|| "latest".to_string(), |t| format!("{t:016x}"));
    let mut first: Option<(&str, Restored)> = None;
    for &tool in tools {
        let path = out.join(format!("{tool}-{at}.db"));
        restore(tool, url, &path, txid);
        let r = inspect(&path, exp.hash);
        let what = format!("[{label}] {tool} restore at {at} (seq {})", r.seq);
        assert_eq!(r.page_size, exp.page_size, "{what}: page size");
        assert_eq!(r.user_version, r.seq, "{what}: user_version (page 1) disagrees with the seq table");
        if r.seq == 0 {
            // The empty database before the application's first transaction: a real prefix
            // of history, never the latest state.
            assert!(txid.is_some(), "{what}: the latest restore is the empty database");
            match &first {
                None => first = Some((tool, r)),
                Some((t0, r0)) => assert_eq!(&r, r0, "{what}: differs from the {t0} restore of the same TXID"),
            }
            continue;
        }
        let state =
            exp.history.get(&r.seq).unwrap_or_else(|| panic!("{what}: the application never committed this seq"));
        assert_eq!(r.hash, state.hash, "{what}: content differs from the application's state at that seq");
        assert!(
            state.auto_vacuum.contains(&r.auto_vacuum),
            "{what}: auto_vacuum {:?}, the source had {:?}",
            r.auto_vacuum,
            state.auto_vacuum
        );
        if txid.is_none() {
            assert_eq!(r.seq, exp.final_seq, "{what}: latest restore lacks committed transactions");
        }
        match &first {
            None => first = Some((tool, r)),
            Some((t0, r0)) => assert_eq!(&r, r0, "{what}: differs from the {t0} restore of the same TXID"),
        }
        std::fs::remove_file(&path).expect("remove restored file");
    }
    first.expect("BUG: no tools").1.seq
}

/// Verifies the replica at `url`: latest, and `picks` intermediate TXIDs (file boundaries of
/// any level, drawn from `rng`), each restored by every tool in `tools`. Restored seqs must
/// not decrease as the TXID grows. Returns a one-line summary.
pub fn verify_replica(
    label: &str,
    url: &str,
    out: &Path,
    tools: &[&str],
    exp: &Expected,
    picks: usize,
    rng: &mut SplitMix,
) -> String {
    std::fs::create_dir_all(out).expect("create restore dir");
    let listing = sluice_ltx(url);
    let last = listing.iter().map(|f| f.max).max().unwrap_or_else(|| panic!("[{label}] empty replica {url}"));
    let mut candidates: Vec<u64> =
        listing.iter().map(|f| f.max).collect::<BTreeSet<_>>().into_iter().filter(|&t| t < last).collect();
    let mut txids = BTreeSet::new();
    while txids.len() < picks && !candidates.is_empty() {
        txids.insert(candidates.swap_remove(rng.below(candidates.len() as u64) as usize));
    }
    let latest = check_restore(label, url, out, tools, None, exp);
    let mut seqs = Vec::new();
    for &t in &txids {
        seqs.push((t, check_restore(label, url, out, tools, Some(t), exp)));
    }
    seqs.push((last, latest));
    for w in seqs.windows(2) {
        assert!(
            w[0].1 <= w[1].1,
            "[{label}] restored seq went backwards: TXID {:x} -> seq {}, TXID {:x} -> seq {}",
            w[0].0,
            w[0].1,
            w[1].0,
            w[1].1
        );
    }
    let levels: BTreeSet<u8> = listing.iter().map(|f| f.level).collect();
    let seqs: Vec<String> = seqs.iter().map(|(t, s)| format!("{t:x}→{s}")).collect();
    format!(
        "[{label}] {} files (levels {levels:?}) up to TXID {last:x}; restored by {tools:?}, TXID→seq: {}",
        listing.len(),
        seqs.join(" ")
    )
}
