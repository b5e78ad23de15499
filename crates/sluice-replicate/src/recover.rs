//! Starting over after a database was replaced in place (see `shipper::witness`): the next
//! session treats the file as a new database, its first capture is a full image at the next
//! TXID and a new snapshot follows, so every earlier TXID still restores the old history.
//!
//! This happens whatever `auto-recover` says: the replacement is detected for certain, and a
//! new snapshot loses nothing, where stopping would leave the new content unreplicated.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
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
