//! The main database file in write mode: pages come from the write session (its buffer over
//! the replica), writes go into it, and SQLite's locks are shared with the process's other
//! connections on the replica through a [`LockManager`].
//!
//! # The commit point
//! A transaction commits when its connection gives up RESERVED or more (`xUnlock` to SHARED
//! or NONE) after writing or truncating the database. SQLite does that exactly once per write
//! transaction, after the database was written and synced and the journal finalized, in every
//! journal mode this VFS supports (DELETE, TRUNCATE, PERSIST, MEMORY, OFF). A rollback after a
//! cache spill first plays the original pages back through `xWrite`/`xTruncate`, so what is
//! committed at the unlock is the original state again. A transaction during which a write
//! failed (a full buffer, a disk error) is rolled back in the buffer instead, since SQLite's own
//! playback may have failed too. `PRAGMA locking_mode=EXCLUSIVE` never unlocks, so nothing it
//! writes would commit: the VFS refuses it (see `pragma`).
//!
//! # Page 1
//! Presented as in read mode as far as the journal mode goes (format versions 1: SQLite uses
//! a rollback journal), but with the file change counter as stored: while this process holds
//! the replica lease only SQLite's own commits change the database, and each one increments
//! the counter, which is what tells the other connections' page caches to drop.

use crate::codes::lock;
use crate::db_file::ReadOutcome;
use crate::error::{Error, Result};
use crate::locks::{LockManager, Owner};

/// What a write-mode file needs from the write session (a trait, so this state machine is
/// tested without storage).
pub trait WriteBackend: Send + Sync + 'static {
    /// Page `pgno` as of the last commit, or of the open transaction (blocking).
    fn read_page(&self, pgno: u32, buf: &mut [u8]) -> sluice_engine::Result<()>;
    /// Writes a page of the open transaction.
    fn write_page(&self, pgno: u32, data: &[u8]) -> sluice_engine::Result<()>;
    /// Commits the open transaction: `commit` pages.
    fn commit(&self, commit: u32) -> sluice_engine::Result<()>;
    /// Drops the open transaction.
    fn rollback(&self) -> sluice_engine::Result<()>;
    /// Database size in pages as of the last commit.
    fn commit_size(&self) -> u32;
    /// Page size.
    fn page_size(&self) -> u32;
    /// The locks of the process's connections on this replica.
    fn locks(&self) -> &LockManager;
    /// The redacted replica URL.
    fn description(&self) -> &str;
}

/// The transaction a connection writes (from RESERVED to the unlock).
#[derive(Clone, Copy, Debug)]
struct Txn {
    /// Database size in pages, as written so far.
    pages: u32,
    page_size: u32,
    /// Something was written or truncated.
    dirty: bool,
    /// A write failed: roll back at the end whatever SQLite does.
    failed: bool,
}

/// The main database file of one write-mode connection.
pub struct WriteFile<W: WriteBackend> {
    w: W,
    owner: Owner,
    name: String,
    lock: i32,
    txn: Option<Txn>,
    scratch: Vec<u8>,
}

/// Offsets of the file format versions in the database header.
const WRITE_VERSION: usize = 18;
const READ_VERSION: usize = 19;

impl<W: WriteBackend> WriteFile<W> {
    /// A file of `w`; `owner` is unique among the replica's open files.
    pub fn new(w: W, owner: Owner, name: String) -> Self {
        WriteFile { w, owner, name, lock: lock::NONE, txn: None, scratch: Vec::new() }
    }

    /// The session behind this file.
    pub fn backend(&self) -> &W {
        &self.w
    }

    /// The name SQLite opened.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The held lock level.
    #[cfg(test)]
    pub fn lock_level(&self) -> i32 {
        self.lock
    }

    fn page_size(&self) -> u32 {
        self.txn.map_or_else(|| self.w.page_size(), |t| t.page_size)
    }

    /// Size in bytes: the open transaction's for its writer, else the last commit's.
    pub fn file_size(&self) -> u64 {
        let pages = self.txn.map_or_else(|| self.w.commit_size(), |t| t.pages);
        u64::from(pages) * u64::from(self.page_size())
    }

    /// `xLock`. A connection that goes above SHARED starts a write transaction.
    pub fn lock(&mut self, level: i32) -> Result<()> {
        if level <= self.lock {
            return Ok(());
        }
        if self.lock == lock::NONE && level != lock::SHARED {
            return Err(Error::LockTransition { db: self.name.clone(), from: self.lock, to: level });
        }
        let result = self.w.locks().lock(self.owner, self.lock, level);
        let (held, busy) = match result {
            Ok(held) => (held, false),
            Err((held, _)) => (held, true),
        };
        if held > lock::SHARED && self.txn.is_none() {
            let pages = self.w.commit_size();
            self.txn = Some(Txn { pages, page_size: self.w.page_size(), dirty: false, failed: false });
        }
        self.lock = held;
        if busy {
            Err(Error::Busy { db: self.name.clone(), replica: self.w.description().to_string() })
        } else {
            Ok(())
        }
    }

    /// `xUnlock`: the end of a write transaction commits it (see the module docs).
    pub fn unlock(&mut self, level: i32) -> Result<()> {
        if level > lock::SHARED {
            return Err(Error::LockTransition { db: self.name.clone(), from: self.lock, to: level });
        }
        if level >= self.lock {
            return Ok(());
        }
        let ended = self.txn.take();
        let result = match ended {
            // On failure, leave nothing half-open in the buffer for the next transaction.
            Some(t) if t.dirty && !t.failed => self.w.commit(t.pages).inspect_err(|_| {
                let _ = self.w.rollback();
            }),
            Some(t) if t.dirty => self.w.rollback(),
            _ => Ok(()),
        };
        self.w.locks().unlock(self.owner, self.lock, level);
        self.lock = level;
        result.map_err(|source| self.write_error("commit", source))
    }

    /// `xCheckReservedLock`.
    pub fn reserved(&self) -> bool {
        self.w.locks().reserved()
    }

    fn write_error(&self, op: &'static str, source: sluice_engine::Error) -> Error {
        Error::Write { db: self.name.clone(), replica: self.w.description().to_string(), op, source: Box::new(source) }
    }

    /// `xWrite`: whole pages only (SQLite writes nothing else to a database in rollback mode).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let bad =
            |why: String| Error::Host(format!("write of {} bytes at {offset} to {}: {why}", data.len(), self.name));
        let Some(mut t) = self.txn else {
            return Err(bad("no write lock held".into()));
        };
        // The first write to an empty database sets its page size.
        if t.pages == 0 && offset == 0 {
            t.page_size = u32::try_from(data.len()).map_err(|_| bad("page too large".into()))?;
        }
        let ps = u64::from(t.page_size);
        if ps == 0 || data.len() as u64 != ps || !offset.is_multiple_of(ps) {
            return Err(bad(format!("not one whole {ps}-byte page")));
        }
        let pgno = u32::try_from(offset / ps + 1).map_err(|_| bad("beyond the largest page number".into()))?;
        t.dirty = true;
        let r = self.w.write_page(pgno, data);
        match &r {
            Ok(()) => t.pages = t.pages.max(pgno),
            Err(_) => t.failed = true,
        }
        self.txn = Some(t);
        r.map_err(|source| self.write_error("write", source))
    }

    /// `xTruncate`: the transaction's database ends at `size`.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        let Some(t) = self.txn.as_mut() else {
            return Err(Error::Host(format!("truncate of {} without a write lock", self.name)));
        };
        let ps = u64::from(t.page_size.max(1));
        t.pages = u32::try_from(size.div_ceil(ps)).unwrap_or(u32::MAX);
        t.dirty = true;
        Ok(())
    }

    /// `xRead` of `buf.len()` bytes at `offset`.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadOutcome> {
        let (size, ps) = (self.file_size(), self.page_size() as usize);
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            if pos >= size || ps == 0 {
                buf[done..].fill(0);
                return Ok(ReadOutcome::Short);
            }
            let pgno = u32::try_from(pos / ps as u64 + 1).map_err(|_| Error::Host(format!("read at {pos}")))?;
            let in_page = (pos % ps as u64) as usize;
            let n = (ps - in_page).min(buf.len() - done);
            let mut page = std::mem::take(&mut self.scratch);
            page.resize(ps, 0);
            let r = self.w.read_page(pgno, &mut page);
            if r.is_ok() && pgno == 1 && page.len() > READ_VERSION {
                page[WRITE_VERSION] = 1;
                page[READ_VERSION] = 1;
            }
            buf[done..done + n].copy_from_slice(&page[in_page..in_page + n]);
            self.scratch = page;
            r.map_err(|source| Error::Read {
                replica: self.w.description().to_string(),
                pgno,
                txid: 0,
                source: Box::new(source),
            })?;
            done += n;
        }
        Ok(ReadOutcome::Full)
    }
}

impl<W: WriteBackend> Drop for WriteFile<W> {
    /// SQLite unlocks before closing; a file dropped while locked (a panic, a failed open)
    /// must not keep the other connections out.
    fn drop(&mut self) {
        if self.txn.take().is_some_and(|t| t.dirty) {
            let _ = self.w.rollback();
        }
        self.w.locks().unlock(self.owner, self.lock, lock::NONE);
    }
}

#[cfg(test)]
#[path = "write_file_tests.rs"]
mod tests;
