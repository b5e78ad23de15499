//! Checkpoints and the write barrier: the only moments Sluice lets SQLite restart the WAL,
//! always after capturing every frame the restart will discard.

use std::time::Duration;

use super::{Checkpoint, Shipper, Synced};
use crate::conn::{passive, sqlite_err};
use sluice_engine::error::Result;

/// Rounds of read-and-copy before the barrier, each copying what the application committed
/// during the previous one, until at most [`BARRIER_FRAMES`] frames are left for the barrier:
/// its checkpoint must fsync what it copies while the application waits. Under a busy writer
/// the rounds stop converging after the first (each lasts its two fsyncs, while the writer
/// adds as much again); measured, two rounds keep the writer's rate of four at less CPU.
const PRE_ROUNDS: usize = 2;
const BARRIER_FRAMES: u64 = 32;

impl Shipper {
    pub(super) fn take_barrier(&mut self) -> Result<bool> {
        match self.barrier.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => Ok(true),
            Err(e) => match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => Ok(false),
                _ => Err(sqlite_err("take write barrier on", &self.db_path, e)),
            },
        }
    }

    /// Checkpoints the whole WAL under a write barrier, after reading every frame: nothing can
    /// commit in between, so the WAL restart that follows discards only frames already read.
    pub fn checkpoint(&mut self, truncate: bool) -> Result<(Checkpoint, Option<Synced>)> {
        // First, without the barrier: read the backlog and move our read lock to its end, so a
        // PASSIVE checkpoint can copy it while the application keeps writing; then read what
        // was committed during that copy. The barrier is left with the last few frames and
        // blocks the application for well under a millisecond instead of for a whole capture.
        let mut pre = None;
        for _ in 0..PRE_ROUNDS {
            let before = self.frames_read;
            pre = self.read_ahead(true)?.or(pre);
            if self.frames_read - before <= BARRIER_FRAMES {
                break;
            }
            let _ = passive(&self.readers[1 - self.active]);
        }
        if !self.take_barrier()? {
            // Our read lock may be ahead of what was read: sync_all reads to the end first.
            return Ok((Checkpoint::Busy, self.sync_all()?.or(pre)));
        }
        let held = std::time::Instant::now();
        let result = self.checkpoint_under_barrier();
        let _ = self.barrier.execute_batch("ROLLBACK");
        tracing::debug!(held_us = held.elapsed().as_micros() as u64, "write barrier released");
        // What was read stays deferred: the next capture writes it with whatever follows.
        let written = pre;
        let result = result?;
        if matches!(result, Checkpoint::Done { .. })
            && let Some(hdr) = self.wal_header
            && self.pos.is_some_and(|p| p.salts == (hdr.salt1, hdr.salt2))
        {
            // The WAL may restart any moment now: a crash before the next local file can
            // resume from the journal instead of a full image.
            self.save_journal(&hdr);
        }
        if truncate && matches!(result, Checkpoint::Done { .. }) {
            // TRUNCATE needs the write lock. Our reader now sits on read mark 0 (the WAL is
            // fully copied), which forbids copying any newer frame, so TRUNCATE either finds
            // nothing new and truncates or gives up busy. Never a loss.
            let c = &self.readers[1 - self.active];
            let _ = c.busy_timeout(Duration::ZERO);
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            let _ = c.busy_timeout(self.opts.busy_timeout);
        }
        Ok((result, written))
    }

    fn checkpoint_under_barrier(&mut self) -> Result<Checkpoint> {
        let t0 = std::time::Instant::now();
        self.read_ahead(false)?;
        tracing::debug!(read_us = t0.elapsed().as_micros() as u64, "barrier read");
        let frames = self.wal_frames();
        // Both our read locks must go, or the checkpoint cannot copy the last frames.
        self.end_read(self.active);
        let idle = 1 - self.active;
        let t1 = std::time::Instant::now();
        let res = passive(&self.readers[idle]);
        tracing::debug!(passive_us = t1.elapsed().as_micros() as u64, "barrier passive");
        if let Err(e) = self.begin_read(self.active) {
            // No read lock at all now: a restart could pass unseen, taking frames read ahead
            // with it. The next sync writes a full image.
            self.forget_position();
            return Err(e);
        }
        // Our own checkpoint wrote the database file: not a rewrite in place.
        self.note_witness();
        let (busy, log, done) = res.map_err(|e| sqlite_err("checkpoint", &self.db_path, e))?;
        tracing::debug!(busy, log, done, "passive checkpoint under barrier");
        if log < 0 {
            // The checkpoint could not run at all (its lock stayed taken).
            return Ok(Checkpoint::Busy);
        }
        if log != done {
            // Another reader kept part of the WAL from being copied.
            return Ok(Checkpoint::Partial);
        }
        // The database file now holds everything: page reads must no longer point into a WAL
        // that the next write will restart and overwrite.
        self.wal_map.clear();
        Ok(Checkpoint::Done { frames })
    }
}
