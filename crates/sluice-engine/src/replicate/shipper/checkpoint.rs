//! Checkpoints and the write barrier: the only moments Sluice lets SQLite restart the WAL,
//! always after capturing every frame the restart will discard.

use std::time::Duration;

use super::{Checkpoint, Shipper, Synced};
use crate::error::Result;
use crate::replicate::conn::{passive, sqlite_err};

impl Shipper {
    /// Syncs under a brief write barrier so that our read lock pins exactly the synced state
    /// (nothing can commit between the sync and the handoff). `false` if the barrier was busy.
    pub fn pin(&mut self) -> Result<bool> {
        if !self.take_barrier()? {
            return Ok(false);
        }
        let res = self.sync_all();
        let _ = self.barrier.execute_batch("ROLLBACK");
        res.map(|_| true)
    }

    fn take_barrier(&mut self) -> Result<bool> {
        match self.barrier.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => Ok(true),
            Err(e) => match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => Ok(false),
                _ => Err(sqlite_err("take write barrier on", &self.db_path, e)),
            },
        }
    }

    /// Syncs under a write barrier, then checkpoints the whole WAL; nothing can commit in
    /// between, so the WAL restart that follows discards only frames already captured.
    pub fn checkpoint(&mut self, truncate: bool) -> Result<(Checkpoint, Option<Synced>)> {
        // First, without the barrier: capture the backlog, then copy into the database file
        // what our (just advanced) read lock allows. The application keeps writing meanwhile,
        // and the barrier below is left with only the last few frames: it blocks the
        // application for well under a millisecond instead of for a whole capture.
        let pre = self.sync_all()?;
        let _ = passive(&self.readers[1 - self.active]);
        if !self.take_barrier()? {
            return Ok((Checkpoint::Busy, pre));
        }
        let held = std::time::Instant::now();
        let result = self.checkpoint_under_barrier().map(|(c, s)| (c, s.or(pre)));
        let _ = self.barrier.execute_batch("ROLLBACK");
        tracing::debug!(held_us = held.elapsed().as_micros() as u64, "write barrier released");
        if truncate && matches!(result, Ok((Checkpoint::Done { .. }, _))) {
            // After the barrier: TRUNCATE needs the write lock. Our reader now sits on read
            // mark 0 (the WAL is fully copied), which forbids copying any newer frame, so
            // TRUNCATE either finds nothing new and truncates or gives up busy. Never a loss.
            let c = &self.readers[1 - self.active];
            let _ = c.busy_timeout(Duration::ZERO);
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            let _ = c.busy_timeout(self.opts.busy_timeout);
        }
        result
    }

    fn checkpoint_under_barrier(&mut self) -> Result<(Checkpoint, Option<Synced>)> {
        let t0 = std::time::Instant::now();
        let synced = self.sync_all()?;
        tracing::debug!(
            sync_us = t0.elapsed().as_micros() as u64,
            pages = synced.as_ref().map(|s| s.pages),
            "barrier sync"
        );
        let frames = self.wal_frames();
        // Both our read locks must go, or the checkpoint cannot copy the last frames.
        self.end_read(self.active);
        let idle = 1 - self.active;
        let t1 = std::time::Instant::now();
        let res = passive(&self.readers[idle]);
        tracing::debug!(passive_us = t1.elapsed().as_micros() as u64, "barrier passive");
        if let Err(e) = self.begin_read(self.active) {
            // No read lock at all now: a restart could pass unseen; the next WAL change must
            // be treated as unknown (full image) rather than as a clean restart.
            self.running = false;
            return Err(e);
        }
        let (busy, log, done) = res.map_err(|e| sqlite_err("checkpoint", &self.db_path, e))?;
        tracing::debug!(busy, log, done, "passive checkpoint under barrier");
        if log < 0 {
            // The checkpoint could not run at all (its lock stayed taken).
            return Ok((Checkpoint::Busy, synced));
        }
        if log != done {
            // Another reader kept part of the WAL from being copied.
            return Ok((Checkpoint::Partial, synced));
        }
        // The database file now holds everything: page reads must no longer point into a WAL
        // that the next write will restart and overwrite.
        self.wal_map.clear();
        Ok((Checkpoint::Done { frames }, synced))
    }
}
