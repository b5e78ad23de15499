//! Restore planning, as Litestream's `CalcRestorePlan`: the newest usable snapshot, then at
//! each step the file (any level) that reaches furthest without a gap.

use chrono::{DateTime, Utc};
use sluice_ltx::TxId;
use sluice_storage::FileInfo;

use crate::error::{Error, Result};

/// How far to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The newest state in the replica.
    Latest,
    /// The state right after this TXID (a file must end exactly there).
    Txid(TxId),
    /// The state as of this instant: files created strictly before it.
    Timestamp(DateTime<Utc>),
}

/// Level holding snapshots.
pub const SNAPSHOT_LEVEL: u8 = 9;

/// Name of a file for messages: `<level>/<min>-<max>.ltx`.
pub fn file_label(f: &FileInfo) -> String {
    format!("{}/{}", f.level, sluice_ltx::format_filename(f.min_txid, f.max_txid))
}

fn ts_label(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Chooses the files to apply, in order. `levels` holds every level's files (any order).
pub fn plan(files: &[FileInfo], target: Target, replica: &str) -> Result<Vec<FileInfo>> {
    if files.is_empty() {
        return Err(Error::EmptyReplica { replica: replica.to_string() });
    }
    let (txid, ts) = match target {
        Target::Latest => (None, None),
        Target::Txid(t) => (Some(t), None),
        Target::Timestamp(t) => (None, Some(t)),
    };
    if let Some(t) = ts {
        let earliest = files.iter().map(|f| f.created_at).min().expect("BUG: non-empty");
        let latest = files.iter().map(|f| f.created_at).max().expect("BUG: non-empty");
        if t < earliest || t > latest {
            return Err(Error::TimestampOutOfRange {
                ts: ts_label(t),
                earliest: ts_label(earliest),
                latest: ts_label(latest),
            });
        }
    }
    let usable = |f: &FileInfo| txid.is_none_or(|t| f.max_txid <= t) && ts.is_none_or(|t| f.created_at < t);

    let mut plan: Vec<FileInfo> = Vec::new();
    let snapshot = files
        .iter()
        .filter(|f| f.level == SNAPSHOT_LEVEL && usable(f))
        .max_by_key(|f| (f.max_txid, std::cmp::Reverse(f.created_at)));
    let mut cur = TxId(0);
    if let Some(s) = snapshot {
        cur = s.max_txid;
        plan.push(s.clone());
    }
    let chain = extend(files, cur, usable, txid);
    if let Some(last) = chain.last() {
        cur = last.max_txid;
    }
    plan.extend(chain);

    let latest = files.iter().map(|f| f.max_txid).max().expect("BUG: non-empty");
    let Some(first) = plan.first() else {
        return Err(match (txid, ts) {
            (Some(t), _) => Error::TxidNotAvailable { txid: t, reason: "no matching backup files available".into() },
            (_, Some(t)) => Error::NothingBefore { ts: ts_label(t) },
            _ => Error::NoSnapshot { first: files.iter().map(|f| f.min_txid).min().expect("BUG: non-empty") },
        });
    };
    if let Some(t) = txid
        && cur != t
    {
        let reason = if t > latest {
            format!("beyond the replica's latest TXID {latest}")
        } else {
            format!("no file ends exactly at it (nearest chain ends at {cur}); compaction or retention merged it away")
        };
        return Err(Error::TxidNotAvailable { txid: t, reason });
    }
    if first.min_txid != TxId(1) {
        return Err(Error::NoSnapshot { first: first.min_txid });
    }
    if target == Target::Latest
        && let Some(next) = files.iter().filter(|f| f.min_txid.0 > cur.0 + 1).min_by_key(|f| f.min_txid)
    {
        return Err(Error::Gap { after: cur, next: file_label(next), next_min: next.min_txid });
    }
    Ok(plan)
}

/// The files (levels 0..8) that continue a database at TXID `after` as far as the replica
/// reaches without a gap, in apply order; empty when nothing continues it. `restore --follow`
/// uses it to catch up, so both walk the replica exactly the same way.
pub fn chain_from(files: &[FileInfo], after: TxId) -> Vec<FileInfo> {
    extend(files, after, |_| true, None)
}

/// The greedy walk of `CalcRestorePlan` from `cur`: at each step the usable file that starts
/// at or before `cur + 1` and reaches furthest, until `stop` is reached or nothing qualifies.
fn extend(files: &[FileInfo], mut cur: TxId, usable: impl Fn(&FileInfo) -> bool, stop: Option<TxId>) -> Vec<FileInfo> {
    let mut chain = Vec::new();
    loop {
        if stop.is_some_and(|t| cur >= t) {
            break;
        }
        let best = files
            .iter()
            .filter(|f| f.level < SNAPSHOT_LEVEL && usable(f))
            .filter(|f| f.min_txid.0 <= cur.0 + 1 && f.max_txid > cur)
            // Furthest reach, then lowest start, then higher level, then earlier creation.
            .max_by_key(|f| (f.max_txid, std::cmp::Reverse(f.min_txid), f.level, std::cmp::Reverse(f.created_at)));
        let Some(best) = best else { break };
        cur = best.max_txid;
        chain.push(best.clone());
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min: u64, max: u64, secs: i64) -> FileInfo {
        FileInfo {
            level,
            min_txid: TxId(min),
            max_txid: TxId(max),
            size: 100,
            created_at: DateTime::from_timestamp(secs, 0).unwrap(),
        }
    }

    fn labels(p: &[FileInfo]) -> Vec<String> {
        p.iter().map(|x| format!("{}/{}-{}", x.level, x.min_txid.0, x.max_txid.0)).collect()
    }

    #[test]
    fn prefers_furthest_reach_then_higher_level() {
        let files = vec![f(9, 1, 1, 1), f(0, 2, 2, 2), f(0, 3, 3, 3), f(1, 2, 3, 3), f(0, 4, 4, 4)];
        assert_eq!(labels(&plan(&files, Target::Latest, "r").unwrap()), ["9/1-1", "1/2-3", "0/4-4"]);
        assert_eq!(labels(&plan(&files, Target::Txid(TxId(2)), "r").unwrap()), ["9/1-1", "0/2-2"]);
    }

    #[test]
    fn errors_name_the_problem() {
        let files = vec![f(9, 1, 1, 1), f(1, 2, 3, 3), f(0, 5, 5, 5)];
        assert!(matches!(plan(&files, Target::Latest, "r"), Err(Error::Gap { .. })));
        assert!(matches!(plan(&files, Target::Txid(TxId(2)), "r"), Err(Error::TxidNotAvailable { .. })));
        assert!(matches!(plan(&files, Target::Txid(TxId(9)), "r"), Err(Error::TxidNotAvailable { .. })));
        assert!(matches!(plan(&[], Target::Latest, "r"), Err(Error::EmptyReplica { .. })));
        let early = Target::Timestamp(DateTime::from_timestamp(0, 0).unwrap());
        assert!(matches!(plan(&files, early, "r"), Err(Error::TimestampOutOfRange { .. })));
        assert!(matches!(plan(&[f(0, 2, 2, 1)], Target::Latest, "r"), Err(Error::NoSnapshot { .. })));
    }

    #[test]
    fn chain_from_continues_a_txid_across_levels() {
        let files = vec![f(9, 1, 4, 1), f(0, 2, 2, 2), f(0, 3, 3, 3), f(1, 2, 3, 3), f(0, 4, 4, 4), f(0, 6, 6, 6)];
        assert_eq!(labels(&chain_from(&files, TxId(1))), ["1/2-3", "0/4-4"]);
        assert_eq!(labels(&chain_from(&files, TxId(3))), ["0/4-4"]);
        // Nothing continues 4 (5 is missing), and snapshots never do.
        assert!(chain_from(&files, TxId(4)).is_empty());
        assert!(chain_from(&files, TxId(6)).is_empty());
    }

    #[test]
    fn timestamps_are_strict() {
        let files = vec![f(9, 1, 1, 10), f(0, 2, 2, 20), f(0, 3, 3, 30)];
        let at = |s| Target::Timestamp(DateTime::from_timestamp(s, 0).unwrap());
        assert_eq!(labels(&plan(&files, at(20), "r").unwrap()), ["9/1-1"]);
        assert_eq!(labels(&plan(&files, at(21), "r").unwrap()), ["9/1-1", "0/2-2"]);
        assert!(plan(&files, at(31), "r").is_err());
    }
}
