//! One configured database over the daemon's life: wait until it exists ([`presence`]),
//! replicate it while the path names that file ([`service`]), and when the file is deleted
//! or replaced, stop (the final sync uploads what was captured) and wait for the next one.
//! A database that follows another at the same path never continues the old one's WAL
//! position: its first capture is a full image at the next TXID, and a new snapshot follows.
//!
//! [`presence`]: crate::presence
//! [`service`]: crate::service

use std::sync::Arc;
use std::time::Duration;

use sluice_storage::ReplicaClient;
use tokio::sync::{mpsc, watch};

use crate::presence::{self, DbFile, Gone};
use crate::service::{ReplicateOptions, Request, replicate_db};
use sluice_engine::error::{Error, Result};
use sluice_engine::write::metrics::DbMetrics;

/// A second auto-recovery sooner than this after the first stops replication instead: the
/// damage is coming back, and each recovery reads the whole database.
const RECOVERY_MIN_GAP: Duration = Duration::from_secs(60);
/// Shortest interval between checks that the database file is still there.
const MIN_GONE_CHECK: Duration = Duration::from_millis(50);

/// Replicates the database at `opts.db_path` until `shutdown` turns true: waits for it to
/// exist, replicates it, and starts over whenever the file is deleted or replaced. Nothing
/// is created and no replica request is made before a SQLite database is at the path.
pub async fn replicate(
    opts: ReplicateOptions,
    client: ReplicaClient,
    metrics: Arc<DbMetrics>,
    mut shutdown: watch::Receiver<bool>,
    mut requests: mpsc::Receiver<Request>,
) -> Result<()> {
    let db = opts.db_path.clone();
    let every = opts.monitor_interval.max(MIN_GONE_CHECK);
    let mut previous: Option<DbFile> = None;
    let mut recovered_at = None;
    let mut events = opts.events.database(&db);
    loop {
        let Some(file) = presence::wait_for_database(&db, &mut events, &mut shutdown, &mut requests).await else {
            return Ok(());
        };
        if let Some(prev) = previous.filter(|p| p.page_size != file.page_size) {
            // Compaction, snapshots and restores cannot cross a page size change.
            return Err(Error::PageSizeChanged { db, was: prev.page_size, now: file.page_size });
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let session =
            replicate_db(opts.clone(), client.clone(), metrics.clone(), stop_rx, &mut requests, previous.is_none());
        tokio::pin!(session);
        let gone = presence::gone(&db, file, every, &mut events);
        tokio::pin!(gone);
        let mut went: Option<Gone> = None;
        let mut stopping = false;
        let result = loop {
            tokio::select! {
                r = &mut session => break r,
                changed = shutdown.changed(), if !stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        stopping = true;
                        let _ = stop_tx.send(true);
                    }
                }
                g = &mut gone, if !stopping => {
                    went = Some(g);
                    stopping = true;
                    let _ = stop_tx.send(true);
                }
            }
        };
        // A session can also fail on its own because the file went away under it.
        let went = went.or_else(|| if *shutdown.borrow() { None } else { presence::changed(&db, file) });
        if went.is_none()
            && let Err(Error::ReplacedInPlace { reason, .. }) = &result
        {
            tracing::warn!(db = %db.display(), %reason, "stopped replicating: the database was replaced in place; \
                its new content starts a new snapshot at the next TXID");
            if !crate::recover::settle(&db, &mut shutdown).await {
                return Ok(());
            }
            previous = Some(file);
            continue;
        }
        if went.is_none()
            && let Err(Error::LocalState { reason, .. }) = &result
        {
            if !opts.auto_recover {
                tracing::error!(db = %db.display(), %reason, "stopped replicating: the local files awaiting upload no \
                    longer continue the replica. A restart of the daemon starts a new snapshot (set `auto-recover: \
                    true` on the replica to have that done without stopping)");
                return result;
            }
            if recovered_at.is_some_and(|t: std::time::Instant| t.elapsed() < RECOVERY_MIN_GAP) {
                tracing::error!(db = %db.display(), %reason, "stopped replicating: auto-recover did not help (the \
                    local state was reset moments ago and is damaged again)");
                return result;
            }
            recovered_at = Some(std::time::Instant::now());
            tracing::warn!(db = %db.display(), %reason, "auto-recover: removing the local replication state; the \
                database's current content starts a new snapshot at the next TXID");
            crate::recover::reset_local_state(&opts.meta_dir, false)?;
            previous = Some(file);
            continue;
        }
        let Some(how) = went else { return result };
        match result {
            Err(e @ Error::Conflict { .. }) => return Err(e),
            // Its last capture fails on a file that is gone; what was captured is uploaded.
            Err(e) => tracing::debug!(db = %db.display(), error = %e, "last sync of the previous database"),
            Ok(()) => {}
        }
        let how = match how {
            Gone::Deleted => "was deleted",
            Gone::Replaced => "was replaced by another file",
        };
        tracing::warn!(db = %db.display(), "stopped replicating: the database file {how}; a database created at this path \
            starts a new snapshot");
        previous = Some(file);
    }
}
