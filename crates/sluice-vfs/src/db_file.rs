//! The main database file as SQLite sees it: a read-only file whose bytes are the pages of one
//! view of the replica, with locks tracked in memory.
//!
//! # Consistency
//! A connection changes view only when it takes SHARED from NONE, i.e. when SQLite starts a
//! read transaction, so every transaction reads one TXID. The new view is the replica's
//! latest, or the pinned one while time travel is on.
//!
//! # Page 1
//! SQLite must use a rollback journal (the VFS has no shared memory, so no WAL), and it must
//! drop its page cache exactly when the view changes. Page 1 is therefore presented with:
//! - bytes 18/19 (file format write/read version) = 1, "legacy": SQLite never tries WAL;
//! - bytes 24..28 (file change counter) derived from the view's TXID. SQLite's pager compares
//!   bytes 24..40 at the start of every transaction with what it saw last and discards its
//!   cache when they differ. In a WAL-mode source database the stored counter does not move
//!   with each commit, so without this SQLite could keep pages of an older view. Litestream
//!   writes random bytes here, which drops the cache at every transaction; a TXID-derived
//!   counter keeps the cache while the view is unchanged.
//!
//! The counter never equals the "version-valid-for" number at bytes 92..96, so SQLite never
//! trusts the in-header database size and always asks `xFileSize` (commit × page size).

use std::sync::Arc;

use sluice_engine::restore::Target;

use crate::backend::{Backend, ViewInfo};
use crate::codes::lock;
use crate::error::{Error, Result};

/// How a read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Every requested byte was in the file.
    Full,
    /// The request went past the end of the file; the rest of the buffer is zeros.
    Short,
}

/// What the PRAGMAs and SQL functions report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The view the current transaction reads, or the next one will.
    pub view: ViewInfo,
    /// True while time travel pins the connection to a past view.
    pub pinned: bool,
}

/// The main database file of one connection.
pub struct DbFile<B: Backend> {
    backend: B,
    /// The name SQLite opened, for messages.
    name: String,
    /// Held lock level (`codes::lock`), in memory only: the replica has no other writer
    /// this process could conflict with.
    lock: i32,
    /// The view reads are served from.
    view: Arc<B::View>,
    /// Time travel: the view every transaction uses until cleared.
    pin: Option<Arc<B::View>>,
    /// One page, for reads that do not cover a whole page.
    scratch: Vec<u8>,
    /// Page 1 as presented, for the view with this TXID.
    page1: Option<(u64, Vec<u8>)>,
}

impl<B: Backend> DbFile<B> {
    /// Opens the file on the replica's latest view.
    pub fn new(backend: B, name: String) -> Self {
        let view = backend.latest();
        DbFile { backend, name, lock: lock::NONE, view, pin: None, scratch: Vec::new(), page1: None }
    }

    /// The name SQLite opened.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The replica behind this file.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The held lock level.
    #[cfg(test)]
    pub fn lock_level(&self) -> i32 {
        self.lock
    }

    /// The facts of the view reads are served from now.
    pub fn view(&self) -> ViewInfo {
        B::info(&self.view)
    }

    /// Size in bytes of the current view.
    pub fn file_size(&self) -> u64 {
        self.view().file_size()
    }

    /// `xLock`: raises the lock to `level`. Taking SHARED from NONE starts a read transaction
    /// and switches to the newest view (or the pinned one).
    pub fn lock(&mut self, level: i32) -> Result<()> {
        if level <= self.lock {
            return Ok(());
        }
        if self.lock == lock::NONE {
            if level != lock::SHARED {
                return Err(Error::LockTransition { db: self.name.clone(), from: self.lock, to: level });
            }
            self.view = self.next_view();
        }
        self.lock = level;
        Ok(())
    }

    /// `xUnlock`: lowers the lock to `level` (SHARED or NONE).
    pub fn unlock(&mut self, level: i32) -> Result<()> {
        if level > lock::SHARED {
            return Err(Error::LockTransition { db: self.name.clone(), from: self.lock, to: level });
        }
        self.lock = self.lock.min(level);
        Ok(())
    }

    /// `xRead` of `buf.len()` bytes at `offset`.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadOutcome> {
        let info = self.view();
        let (page_size, size) = (u64::from(info.page_size), info.file_size());
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            if pos >= size {
                buf[done..].fill(0);
                return Ok(ReadOutcome::Short);
            }
            // pos < commit × page size, so the page number fits the u32 commit.
            let pgno = u32::try_from(pos / page_size + 1).expect("BUG: page number beyond the commit");
            let in_page = (pos % page_size) as usize;
            let n = (info.page_size as usize - in_page).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            if pgno == 1 {
                out.copy_from_slice(&self.page1(info)?[in_page..in_page + n]);
            } else if n == info.page_size as usize {
                self.read_page(pgno, info, out)?;
            } else {
                let mut page = std::mem::take(&mut self.scratch);
                page.resize(info.page_size as usize, 0);
                let r = self.read_page(pgno, info, &mut page);
                out.copy_from_slice(&page[in_page..in_page + n]);
                self.scratch = page;
                r?;
            }
            done += n;
        }
        Ok(ReadOutcome::Full)
    }

    /// Page 1 of the current view as SQLite must see it. SQLite reads its header at the start
    /// of every transaction; a TXID's page 1 never changes, so it is fetched once per view.
    fn page1(&mut self, info: ViewInfo) -> Result<&[u8]> {
        if self.page1.as_ref().is_none_or(|(txid, p)| *txid != info.txid || p.len() != info.page_size as usize) {
            let mut page = vec![0; info.page_size as usize];
            self.read_page(1, info, &mut page)?;
            present_page1(&mut page, info.txid);
            self.page1 = Some((info.txid, page));
        }
        Ok(self.page1.as_ref().map(|(_, p)| p.as_slice()).expect("BUG: page 1 just cached"))
    }

    fn read_page(&self, pgno: u32, info: ViewInfo, page: &mut [u8]) -> Result<()> {
        self.backend.read_page(&self.view, pgno, page).map_err(|source| Error::Read {
            replica: self.backend.description().to_string(),
            pgno,
            txid: info.txid,
            source: Box::new(source),
        })
    }

    /// Time travel: pins every later transaction to the view as of `target` (planned now, so
    /// a bad target fails here), or follows the latest state again for [`Target::Latest`].
    /// A transaction already open keeps its view.
    pub fn set_target(&mut self, target: Target, input: &str) -> Result<()> {
        self.pin = match target {
            Target::Latest => None,
            t => Some(self.backend.view_at(t).map_err(|source| Error::TimeTravel {
                replica: self.backend.description().to_string(),
                input: input.to_string(),
                source: Box::new(source),
            })?),
        };
        Ok(())
    }

    /// The state to report: the current transaction's view, or outside a transaction the
    /// view the next one would read.
    pub fn status(&self) -> Status {
        let view = if self.lock >= lock::SHARED { self.view() } else { B::info(&self.next_view()) };
        Status { view, pinned: self.pin.is_some() }
    }

    fn next_view(&self) -> Arc<B::View> {
        match &self.pin {
            Some(v) => v.clone(),
            None => self.backend.latest(),
        }
    }
}

/// Offsets in the database header (https://sqlite.org/fileformat.html#the_database_header).
const WRITE_VERSION: usize = 18;
const READ_VERSION: usize = 19;
const CHANGE_COUNTER: usize = 24;
const VERSION_VALID_FOR: usize = 92;
/// File format 1: legacy rollback journal.
const LEGACY: u8 = 1;

/// Rewrites page 1 (or the first bytes of it) as SQLite must see it for view `txid`.
pub fn present_page1(page: &mut [u8], txid: u64) {
    if page.len() < VERSION_VALID_FOR + 4 {
        return; // Not a page: SQLite's smallest is 512 bytes.
    }
    page[WRITE_VERSION] = LEGACY;
    page[READ_VERSION] = LEGACY;
    let valid_for = u32::from_be_bytes(page[VERSION_VALID_FOR..VERSION_VALID_FOR + 4].try_into().expect("4 bytes"));
    page[CHANGE_COUNTER..CHANGE_COUNTER + 4].copy_from_slice(&change_counter(txid, valid_for).to_be_bytes());
}

/// A change counter unique to `txid` (within 2^32 consecutive TXIDs) that differs from
/// `valid_for`, so SQLite ignores the header's database size.
fn change_counter(txid: u64, valid_for: u32) -> u32 {
    let c = txid as u32; // Low bits: consecutive TXIDs get different counters.
    if c == valid_for { !c } else { c }
}

#[cfg(test)]
#[path = "db_file_tests.rs"]
mod tests;
