//! The VFS write mode's local write buffer: an append-only log of page versions and
//! transaction boundaries on disk (never in unbounded memory), from which each sync takes
//! the committed pages into one local L0 file.
//!
//! ```text
//! header (32): "SLWBUF01" | page size u32 | 0 u32 | base TXID u64 | crc64 of the 24 bytes before
//! record:      tag u8 | value u64 | payload | chain u64
//!   'P' page   value = pgno, payload = the page  (a page of the open transaction)
//!   'C' commit value = size in pages             (the transaction before it is committed)
//!   'R' rollback                                 (the open transaction's pages are void)
//!   'S' synced value = TXID, payload = u64 offset (what was committed before that offset is
//!                                                  in local L0 file TXID)
//! chain = crc64(previous chain || record without its chain)
//! ```
//! Recovery replays records while the chain holds: the committed transactions after the last
//! `S` come back, an open transaction's pages (no `C` after them) are dropped. The log is
//! only ever appended to (a sync may land in the middle of a transaction), and started afresh
//! when nothing in it is still needed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sluice_ltx::TxId;
use sluice_ltx::checksum::Crc64;

use crate::error::{Error, Result};
use crate::perms::Perms;

const MAGIC: &[u8; 8] = b"SLWBUF01";
const HEADER: u64 = 32;
const TAG_PAGE: u8 = b'P';
const TAG_COMMIT: u8 = b'C';
const TAG_SYNCED: u8 = b'S';
const TAG_ROLLBACK: u8 = b'R';

/// When commits reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Every commit is fsynced into the buffer: durable on this machine at commit.
    Commit,
    /// Only syncs fsync: a crash loses what was committed since the last sync.
    Sync,
}

/// Committed pages taken for a sync: page → offset of its version in the log.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Pages and where their committed versions are.
    pub pages: BTreeMap<u32, u64>,
    /// Database size in pages after the last committed transaction.
    pub commit: u32,
    /// Transactions in the batch.
    pub txns: u64,
    /// Log offset just after the batch's last commit record.
    pub end: u64,
}

/// The write buffer of one database.
pub struct WriteBuffer {
    path: PathBuf,
    file: File,
    page_size: u32,
    fsync: Fsync,
    /// Append offset and the checksum chain there.
    end: u64,
    chain: u64,
    /// TXID the unsynced transactions apply on top of.
    base: TxId,
    /// Committed, not yet synced: the latest version of each page.
    committed: BTreeMap<u32, u64>,
    /// Database size after the last commit in the buffer, if any.
    commit: Option<u32>,
    committed_txns: u64,
    /// Synced to a local L0 file but perhaps not yet in the replica view readers use: page →
    /// (offset, TXID of that file). Released once the view reaches the TXID.
    synced: BTreeMap<u32, (u64, TxId)>,
    /// The open transaction: its pages and where it began in the log.
    open: BTreeMap<u32, u64>,
    open_start: Option<u64>,
    /// Log offset just after the last commit record.
    last_commit_end: u64,
}

fn chain_of(prev: u64, record: &[u8]) -> u64 {
    let mut c = Crc64::new();
    c.update(&prev.to_be_bytes());
    c.update(record);
    c.finish()
}

impl WriteBuffer {
    /// A new, empty buffer at `path` (replacing any file there) for transactions on top of
    /// `base`.
    pub fn create(path: &Path, page_size: u32, base: TxId, perms: Perms, fsync: Fsync) -> Result<Self> {
        let io = |e| Error::io("create write buffer", path, e);
        let file =
            perms.open(path, OpenOptions::new().read(true).write(true).create(true).truncate(true)).map_err(io)?;
        let mut head = [0u8; HEADER as usize];
        head[..8].copy_from_slice(MAGIC);
        head[8..12].copy_from_slice(&page_size.to_be_bytes());
        head[16..24].copy_from_slice(&base.0.to_be_bytes());
        let crc = sluice_ltx::crc64(&head[..24]);
        head[24..32].copy_from_slice(&crc.to_be_bytes());
        file.write_all_at(&head, 0).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(WriteBuffer::empty(path, file, page_size, fsync, crc, base))
    }

    /// Reopens a buffer a crash (or a clean close with unsynced data) left: the committed
    /// transactions after its last sync come back; `None` if there is no usable buffer.
    pub fn recover(path: &Path, fsync: Fsync) -> Result<Option<Self>> {
        let io = |e| Error::io("recover write buffer", path, e);
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        let mut head = [0u8; HEADER as usize];
        if len < HEADER || file.read_exact_at(&mut head, 0).is_err() || &head[..8] != MAGIC {
            return Ok(None);
        }
        let crc = sluice_ltx::crc64(&head[..24]);
        if crc.to_be_bytes() != head[24..32] {
            return Ok(None);
        }
        let page_size = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        let base = TxId(u64::from_be_bytes(head[16..24].try_into().map_err(|_| Error::Task("BUG".into()))?));
        let mut b = WriteBuffer::empty(path, file, page_size, fsync, crc, base);
        let mut rec = vec![0u8; 9 + page_size as usize];
        let mut open: BTreeMap<u32, u64> = BTreeMap::new();
        // Offsets of the commit records since the last sync.
        let mut commits: Vec<u64> = Vec::new();
        let mut valid_end = HEADER;
        let mut valid_chain = crc;
        let mut off = HEADER;
        let mut tail = [0u8; 8];
        loop {
            if b.file.read_exact_at(&mut rec[..9], off).is_err() {
                break;
            }
            let (tag, value) = (rec[0], u64::from_be_bytes(rec[1..9].try_into().unwrap_or_default()));
            let size = match tag {
                TAG_PAGE => 9 + page_size as usize,
                TAG_SYNCED => 17,
                TAG_COMMIT | TAG_ROLLBACK => 9,
                _ => break,
            };
            if b.file.read_exact_at(&mut rec[9..size], off + 9).is_err()
                || b.file.read_exact_at(&mut tail, off + size as u64).is_err()
            {
                break;
            }
            let chain = chain_of(b.chain, &rec[..size]);
            if chain.to_be_bytes() != tail {
                break;
            }
            b.chain = chain;
            let next = off + size as u64 + 8;
            match tag {
                TAG_PAGE => {
                    open.insert(value as u32, off);
                }
                TAG_ROLLBACK => {
                    open.clear();
                    (valid_end, valid_chain) = (next, chain);
                }
                TAG_COMMIT => {
                    b.committed.append(&mut open);
                    b.committed.retain(|p, _| u64::from(*p) <= value);
                    b.commit = Some(value as u32);
                    commits.push(off);
                    (valid_end, valid_chain) = (next, chain);
                }
                _ => {
                    // Synced: what was committed before `covered` is in a local L0 file.
                    let covered = u64::from_be_bytes(rec[9..17].try_into().unwrap_or_default());
                    b.committed.retain(|_, at| *at >= covered);
                    commits.retain(|at| *at >= covered);
                    b.base = TxId(value);
                    (valid_end, valid_chain) = (next, chain);
                }
            }
            off = next;
        }
        b.committed_txns = commits.len() as u64;
        // An open transaction's pages, or a torn record: dropped.
        b.file.set_len(valid_end).map_err(io)?;
        (b.end, b.chain, b.last_commit_end) = (valid_end, valid_chain, valid_end);
        Ok(Some(b))
    }

    /// A buffer with nothing after its header (whose checksum is `crc`).
    fn empty(path: &Path, file: File, page_size: u32, fsync: Fsync, crc: u64, base: TxId) -> Self {
        WriteBuffer {
            path: path.to_path_buf(),
            file,
            page_size,
            fsync,
            end: HEADER,
            chain: crc,
            base,
            committed: BTreeMap::new(),
            commit: None,
            committed_txns: 0,
            synced: BTreeMap::new(),
            open: BTreeMap::new(),
            open_start: None,
            last_commit_end: HEADER,
        }
    }

    /// Page size of the buffered database.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// TXID the buffered transactions apply on top of.
    pub fn base(&self) -> TxId {
        self.base
    }

    /// Where the buffer lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, tag: u8, value: u64, payload: &[u8]) -> Result<u64> {
        let mut rec = Vec::with_capacity(17 + payload.len());
        rec.push(tag);
        rec.extend_from_slice(&value.to_be_bytes());
        rec.extend_from_slice(payload);
        let chain = chain_of(self.chain, &rec);
        rec.extend_from_slice(&chain.to_be_bytes());
        let at = self.end;
        self.file.write_all_at(&rec, at).map_err(|e| Error::io("write to write buffer", &self.path, e))?;
        self.end += rec.len() as u64;
        self.chain = chain;
        Ok(at)
    }

    /// Writes a page of the open transaction (beginning one if needed).
    pub fn write_page(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        if data.len() != self.page_size as usize || pgno == 0 {
            return Err(Error::Task(format!(
                "write of {} bytes to page {pgno} of {}-byte pages",
                data.len(),
                self.page_size
            )));
        }
        self.open_start.get_or_insert(self.end);
        let at = self.append(TAG_PAGE, u64::from(pgno), data)?;
        self.open.insert(pgno, at);
        Ok(())
    }

    /// Commits the open transaction with the database at `commit` pages.
    pub fn commit(&mut self, commit: u32) -> Result<()> {
        self.append(TAG_COMMIT, u64::from(commit), &[])?;
        if self.fsync == Fsync::Commit {
            self.file.sync_data().map_err(|e| Error::io("fsync write buffer", &self.path, e))?;
        }
        self.committed.append(&mut self.open);
        // Pages past the end are gone (a shrinking transaction).
        self.committed.retain(|p, _| *p <= commit);
        self.synced.retain(|p, _| *p <= commit);
        self.commit = Some(commit);
        self.committed_txns += 1;
        self.open_start = None;
        self.last_commit_end = self.end;
        Ok(())
    }

    /// Drops the open transaction.
    pub fn rollback(&mut self) -> Result<()> {
        if self.open_start.take().is_some() {
            self.append(TAG_ROLLBACK, 0, &[])?;
        }
        self.open.clear();
        Ok(())
    }

    /// Reads the buffer's newest version of `pgno` (the open transaction's first) into
    /// `buf`; `false` if the buffer has none.
    pub fn read_page(&self, pgno: u32, buf: &mut [u8]) -> Result<bool> {
        let at =
            self.open.get(&pgno).or_else(|| self.committed.get(&pgno)).or_else(|| self.synced.get(&pgno).map(|s| &s.0));
        let Some(at) = at else { return Ok(false) };
        self.read_at(*at, buf)?;
        Ok(true)
    }

    /// Reads the page stored in the record at `at`.
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> Result<()> {
        Self::read_record(&self.file, at, buf).map_err(|e| Error::io("read write buffer", &self.path, e))
    }

    /// Reads the page of the page record at `at` from another handle on the buffer file (a
    /// sync reads its batch without holding the buffer).
    pub fn read_record(file: &File, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        file.read_exact_at(buf, at + 9)
    }

    /// Database size after the buffer's last commit.
    pub fn commit_size(&self) -> Option<u32> {
        self.commit
    }

    /// Committed transactions and bytes not yet synced.
    pub fn pending(&self) -> (u64, u64) {
        (self.committed_txns, self.committed.len() as u64 * u64::from(self.page_size))
    }

    /// Bytes of the log on disk.
    pub fn size(&self) -> u64 {
        self.end
    }

    /// The committed pages to sync, or `None` if nothing was committed since the last sync.
    pub fn batch(&self) -> Option<Batch> {
        let commit = self.commit?;
        (self.committed_txns > 0).then(|| Batch {
            pages: self.committed.clone(),
            commit,
            txns: self.committed_txns,
            end: self.last_commit_end,
        })
    }

    /// `batch` is in local L0 file `txid`: records it, and forgets its pages (those committed
    /// again since keep their newer versions).
    pub fn synced(&mut self, batch: &Batch, txid: TxId) -> Result<()> {
        self.append(TAG_SYNCED, txid.0, &batch.end.to_be_bytes())?;
        self.file.sync_data().map_err(|e| Error::io("fsync write buffer", &self.path, e))?;
        for (p, at) in &batch.pages {
            if self.committed.get(p) == Some(at) {
                self.committed.remove(p);
            }
            self.synced.insert(*p, (*at, txid));
        }
        if let Some(commit) = self.commit {
            self.synced.retain(|p, _| *p <= commit);
        }
        self.committed_txns = self.committed_txns.saturating_sub(batch.txns);
        self.base = txid;
        Ok(())
    }

    /// The readers' view reached `txid`: synced pages up to it are served from there now.
    /// Returns them (page, offset of its record), to keep in the page cache.
    pub fn release(&mut self, txid: TxId) -> Vec<(u32, u64)> {
        let gone: Vec<(u32, u64)> =
            self.synced.iter().filter(|(_, (_, t))| *t <= txid).map(|(p, (at, _))| (*p, *at)).collect();
        self.synced.retain(|_, (_, t)| *t > txid);
        gone
    }

    /// Starts the log afresh (nothing open, unsynced or unreleased), so it does not grow for
    /// ever.
    pub fn reset_if_idle(&mut self) -> Result<bool> {
        if self.open_start.is_some() || !self.committed.is_empty() || self.committed_txns > 0 || !self.synced.is_empty()
        {
            return Ok(false);
        }
        let perms = Perms::from_metadata(&self.file.metadata().map_err(|e| Error::io("stat", &self.path, e))?);
        let fresh = WriteBuffer::create(&self.path, self.page_size, self.base, perms, self.fsync)?;
        let commit = self.commit;
        *self = WriteBuffer { commit, ..fresh };
        Ok(true)
    }

    /// Flushes buffered writes to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io("flush write buffer", &self.path, e))?;
        self.file.sync_data().map_err(|e| Error::io("fsync write buffer", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(v: u8) -> Vec<u8> {
        vec![v; 512]
    }

    fn read(b: &WriteBuffer, p: u32) -> Option<u8> {
        let mut buf = vec![0u8; 512];
        b.read_page(p, &mut buf).unwrap().then_some(buf[0])
    }

    #[test]
    fn commits_rollbacks_syncs_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buf");
        let perms = Perms::from_metadata(&std::fs::metadata(dir.path()).unwrap());
        let mut b = WriteBuffer::create(&path, 512, TxId(7), perms, Fsync::Commit).unwrap();
        b.write_page(1, &page(1)).unwrap();
        b.write_page(2, &page(2)).unwrap();
        b.commit(2).unwrap();
        // A rolled-back transaction leaves no trace.
        b.write_page(2, &page(9)).unwrap();
        assert_eq!(read(&b, 2), Some(9), "the open transaction reads its own pages");
        b.rollback().unwrap();
        assert_eq!(read(&b, 2), Some(2));
        // A sync takes the committed pages; later commits stay.
        let batch = b.batch().unwrap();
        assert_eq!((batch.commit, batch.txns, batch.pages.len()), (2, 1, 2));
        b.write_page(3, &page(3)).unwrap();
        b.commit(3).unwrap();
        b.synced(&batch, TxId(8)).unwrap();
        assert_eq!((read(&b, 1), read(&b, 3)), (Some(1), Some(3)), "synced pages stay readable");
        b.release(TxId(8));
        assert_eq!((read(&b, 1), read(&b, 3)), (None, Some(3)), "until the view reaches their TXID");
        assert_eq!(b.pending(), (1, 512));
        // A sync in the middle of a transaction that is then rolled back.
        b.write_page(2, &page(6)).unwrap();
        let mid = b.batch().unwrap();
        b.synced(&mid, TxId(9)).unwrap();
        b.rollback().unwrap();
        b.release(TxId(9));
        assert_eq!((read(&b, 2), read(&b, 3), b.pending().0), (None, None, 0));
        b.write_page(3, &page(3)).unwrap();
        b.commit(3).unwrap();
        // A shrinking commit drops pages past the end.
        b.write_page(1, &page(4)).unwrap();
        b.commit(2).unwrap();
        assert_eq!(read(&b, 3), None);
        // An open transaction at the crash is dropped; committed ones come back.
        b.write_page(2, &page(5)).unwrap();
        drop(b);
        let r = WriteBuffer::recover(&path, Fsync::Commit).unwrap().unwrap();
        assert_eq!(r.base(), TxId(9));
        assert_eq!((read(&r, 1), read(&r, 2), read(&r, 3)), (Some(4), None, None));
        assert_eq!((r.commit_size(), r.pending().0), (Some(2), 2));
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buf");
        let perms = Perms::from_metadata(&std::fs::metadata(dir.path()).unwrap());
        let mut b = WriteBuffer::create(&path, 512, TxId(1), perms, Fsync::Sync).unwrap();
        b.write_page(1, &page(1)).unwrap();
        b.commit(1).unwrap();
        let good = b.size();
        b.write_page(1, &page(2)).unwrap();
        b.commit(1).unwrap();
        drop(b);
        // Damage the second transaction's page record.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xff], good + 20).unwrap();
        let r = WriteBuffer::recover(&path, Fsync::Sync).unwrap().unwrap();
        assert_eq!(read(&r, 1), Some(1));
        assert_eq!(r.size(), good);
        // Not a buffer at all: nothing to recover.
        std::fs::write(&path, b"something else entirely, longer than a header....").unwrap();
        assert!(WriteBuffer::recover(&path, Fsync::Sync).unwrap().is_none());
    }
}
