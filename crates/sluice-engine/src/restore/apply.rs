//! Applying LTX files in plan order to a database image on disk: later pages win, the file
//! is truncated to the final commit size, and every page 1..commit must have been supplied.
//! Synchronous: runs on a blocking thread.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use sluice_ltx::{CHECKSUM_FLAG, Decoder, Header, TxId, lock_pgno, page_checksum};
use sluice_storage::FileInfo;

use crate::error::{Error, Result};
use crate::restore::plan::file_label;

/// A database image being rebuilt in a temporary file.
pub struct Image {
    file: File,
    path: PathBuf,
    page_size: u32,
    commit: u32,
    /// One bit per page: supplied by some file.
    present: Vec<u64>,
    /// Per-page checksums, kept only while every file carries database checksums.
    checksums: Option<Vec<u64>>,
    db_checksum: u64,
    last_txid: TxId,
    buf: Vec<u8>,
}

impl Image {
    /// Starts an empty image in `file` (already created at `path`).
    pub fn new(file: File, path: PathBuf) -> Self {
        Image {
            file,
            path,
            page_size: 0,
            commit: 0,
            present: Vec::new(),
            checksums: Some(Vec::new()),
            db_checksum: 0,
            last_txid: TxId(0),
            buf: Vec::new(),
        }
    }

    /// Continues an existing database of `commit` pages at `txid` in place (`restore
    /// --follow` resuming). Page checksums are unknown (page 1's header bytes were rewritten),
    /// so the checksum chain is not verified for this image.
    pub fn resume(file: File, path: PathBuf, page_size: u32, commit: u32, txid: TxId) -> Self {
        let mut image = Image::new(file, path);
        image.page_size = page_size;
        image.buf = vec![0; page_size as usize];
        image.checksums = None;
        for pgno in 1..=commit {
            image.mark(pgno);
        }
        image.commit = commit;
        image.last_txid = txid;
        image
    }

    /// The database file being written.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// TXID of the state applied so far (0 before the first file).
    pub fn txid(&self) -> TxId {
        self.last_txid
    }

    /// Size in pages after the last applied file.
    pub fn commit(&self) -> u32 {
        self.commit
    }

    /// Page size (0 before the first file).
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Applies one LTX file read from `r`, verifying it completely.
    pub fn apply<R: Read>(&mut self, info: &FileInfo, r: R) -> Result<()> {
        let label = file_label(info);
        let ltx = |source| Error::Ltx { file: label.clone(), source };
        let mut dec = Decoder::new(r).map_err(ltx)?;
        let h = *dec.header();
        self.check_header(info, &h, &label)?;
        if self.buf.len() != h.page_size as usize {
            self.page_size = h.page_size;
            self.buf = vec![0; h.page_size as usize];
        }
        let track = !h.no_checksum() && self.checksums.is_some();
        if !track {
            self.checksums = None;
        }
        // A pre-apply checksum describes the state at min-1, which is ours only without overlap.
        if track && !h.is_snapshot() && h.min_txid.0 == self.last_txid.0 + 1 && h.pre_apply_checksum != self.db_value()
        {
            return Err(self.chain_err(&label, "pre-apply", h.pre_apply_checksum));
        }
        while let Some(pgno) = dec.next_page(&mut self.buf).map_err(ltx)? {
            let off = u64::from(pgno - 1) * u64::from(h.page_size);
            self.file.write_all_at(&self.buf, off).map_err(|e| Error::io("write", &self.path, e))?;
            self.mark(pgno);
            if let Some(sums) = self.checksums.as_mut() {
                let idx = pgno as usize;
                if sums.len() <= idx {
                    sums.resize(idx + 1, 0);
                }
                let new = page_checksum(pgno, &self.buf);
                self.db_checksum ^= sums[idx] ^ new;
                sums[idx] = new;
            }
        }
        self.truncate_to(h.commit);
        if track {
            let post = dec.trailer().map(|t| t.post_apply_checksum).unwrap_or(0);
            if post != self.db_value() {
                return Err(self.chain_err(&label, "post-apply", post));
            }
        }
        self.commit = h.commit;
        self.last_txid = h.max_txid;
        Ok(())
    }

    fn check_header(&self, info: &FileInfo, h: &Header, label: &str) -> Result<()> {
        let mismatch = |reason: String| Err(Error::FileMismatch { file: label.to_string(), reason });
        if h.min_txid != info.min_txid || h.max_txid != info.max_txid {
            return mismatch(format!("header covers {}-{}, name says otherwise", h.min_txid, h.max_txid));
        }
        if self.page_size != 0 && h.page_size != self.page_size {
            return mismatch(format!("page size {} differs from earlier files' {}", h.page_size, self.page_size));
        }
        if self.last_txid.0 != 0 && (h.min_txid.0 > self.last_txid.0 + 1 || h.max_txid <= self.last_txid) {
            return mismatch(format!("does not continue the chain ending at {}", self.last_txid));
        }
        if self.last_txid.0 == 0 && !h.is_snapshot() {
            return mismatch("the first file must be a snapshot".into());
        }
        Ok(())
    }

    fn mark(&mut self, pgno: u32) {
        let (w, b) = ((pgno / 64) as usize, pgno % 64);
        if self.present.len() <= w {
            self.present.resize(w + 1, 0);
        }
        self.present[w] |= 1 << b;
    }

    /// True when some applied file supplied page `pgno`.
    pub fn has_page(&self, pgno: u32) -> bool {
        self.is_present(pgno)
    }

    fn is_present(&self, pgno: u32) -> bool {
        self.present.get((pgno / 64) as usize).is_some_and(|w| w & (1 << (pgno % 64)) != 0)
    }

    /// Forgets pages beyond `commit` (the database shrank).
    fn truncate_to(&mut self, commit: u32) {
        let Some(max) = self.present.len().checked_mul(64) else { return };
        for pgno in commit + 1..(max as u32).max(commit + 1) {
            if self.is_present(pgno) {
                self.present[(pgno / 64) as usize] &= !(1 << (pgno % 64));
                if let Some(sums) = self.checksums.as_mut()
                    && let Some(s) = sums.get_mut(pgno as usize)
                {
                    self.db_checksum ^= *s;
                    *s = 0;
                }
            }
        }
    }

    fn db_value(&self) -> u64 {
        self.db_checksum | CHECKSUM_FLAG
    }

    fn chain_err(&self, label: &str, which: &'static str, expected: u64) -> Error {
        Error::ChecksumChain { file: label.to_string(), which, expected, actual: self.db_value() }
    }

    /// Sets the final length, checks no page is missing, and fsyncs (when `durable`). Returns
    /// (commit, page size).
    pub fn finish(self, durable: bool) -> Result<(File, u32, u32)> {
        let lock = lock_pgno(self.page_size.max(512));
        for pgno in 1..=self.commit {
            if pgno != lock && !self.is_present(pgno) {
                return Err(Error::MissingPage { pgno, commit: self.commit });
            }
        }
        self.set_len(durable)?;
        Ok((self.file, self.commit, self.page_size))
    }

    /// Sets the file's length to the current commit and fsyncs (when `durable`).
    pub fn set_len(&self, durable: bool) -> Result<()> {
        let len = u64::from(self.commit) * u64::from(self.page_size);
        // set_len zero-fills growth, which also writes the lock page as zeros.
        self.file.set_len(len).map_err(|e| Error::io("truncate", &self.path, e))?;
        if durable {
            self.file.sync_all().map_err(|e| Error::io("fsync", &self.path, e))?;
        }
        Ok(())
    }
}
