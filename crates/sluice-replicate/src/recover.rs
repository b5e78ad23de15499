//! Starting over after a database was replaced in place (see `shipper::witness`): the next
//! session treats the file as a new database, its first capture is a full image at the next
//! TXID and a new snapshot follows, so every earlier TXID still restores the old history.
//!
//! This happens whatever `auto-recover` says: the replacement is detected for certain, and a
//! new snapshot loses nothing, where stopping would leave the new content unreplicated.
//!
//! Local state that no longer continues the replica (level-0 files waiting for upload that are
//! missing or damaged) is what `auto-recover` is for: [`reset_local_state`] removes it and the
//! next session starts over the same way. Without it the database stops replicating with an
//! error that says how to recover (`sluice reset`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

/// How long the file must stay unchanged before it is read again: a `cp` still writing it
/// would otherwise be captured half-copied.
const SETTLE: Duration = Duration::from_secs(1);
/// How often the file is looked at meanwhile.
const LOOK: Duration = Duration::from_millis(100);

fn shape(path: &Path) -> Option<(u64, i64, i64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}

/// Waits until `path` has not changed for [`SETTLE`]; false if `shutdown` came first.
pub(crate) async fn settle(path: &Path, shutdown: &mut watch::Receiver<bool>) -> bool {
    let mut last = shape(path);
    let mut since = tokio::time::Instant::now();
    while since.elapsed() < SETTLE {
        // Shutdown may have been seen (and marked seen) before this wait began.
        if *shutdown.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return false;
                }
            }
        }
        let now = shape(path);
        if now != last {
            (last, since) = (now, tokio::time::Instant::now());
        }
    }
    true
}

/// Removes the local replication state in `meta_dir` (level-0 files, the read-ahead journal,
/// the quiet stamp), so the next session resumes from nothing: its first capture is a full
/// image at the replica's next TXID. The lock and writer-ID files stay: they say who
/// replicates, not what. Returns what it removed (`dry_run`: what it would remove).
pub fn reset_local_state(meta_dir: &Path, dry_run: bool) -> sluice_engine::error::Result<Vec<PathBuf>> {
    let targets: Vec<PathBuf> = [
        meta_dir.join("ltx"),
        meta_dir.join(crate::shipper::journal::NAME),
        meta_dir.join(crate::shipper::stamp::NAME),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect();
    if !dry_run {
        for t in &targets {
            let removed = if t.is_dir() { std::fs::remove_dir_all(t) } else { std::fs::remove_file(t) };
            removed.map_err(|e| sluice_engine::error::Error::io("remove", t, e))?;
        }
    }
    Ok(targets)
}
