//! Replica validation's two checksums (`validation.interval`): the local database's at a TXID
//! and a restored image's, both LTX's rolling database checksum (the XOR of every page's
//! CRC-64, so pages can be replaced one at a time). The daemon restores with
//! [`crate::restore`] and compares them.
//!
//! The local side starts from the database itself, read at a captured TXID under the shipper's
//! write barrier, and is moved forward to the replica's TXID with the local L0 files (the pages
//! the shipper read from the database at each capture). Local L0 files carry no checksums
//! (Litestream 0.5 writes none), so they cannot be the starting point.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use sluice_ltx::{CHECKSUM_FLAG, Decoder, TxId, lock_pgno, page_checksum, parse_filename};

use crate::error::{Error, Result};

/// The database as of one TXID, as one checksum per page.
#[derive(Clone, Debug)]
pub struct PageSums {
    /// TXID of this state.
    pub txid: TxId,
    /// Page size.
    pub page_size: u32,
    /// Size in pages.
    pub commit: u32,
    /// `sums[pgno]`: the page's checksum; 0 for an absent page (the lock page).
    sums: Vec<u64>,
}

/// Why [`PageSums::advance`] could not reach a TXID (not a validation failure: the local
/// files needed are gone or not there yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoLocalChecksum {
    /// How far the local files led.
    pub reached: TxId,
}

impl PageSums {
    /// An empty database of `commit` pages at `txid`; fill it with [`PageSums::set`].
    pub fn new(txid: TxId, page_size: u32, commit: u32) -> Self {
        PageSums { txid, page_size, commit, sums: vec![0; commit as usize + 1] }
    }

    /// Records page `pgno`'s contents.
    pub fn set(&mut self, pgno: u32, data: &[u8]) {
        let idx = pgno as usize;
        if self.sums.len() <= idx {
            self.sums.resize(idx + 1, 0);
        }
        self.sums[idx] = page_checksum(pgno, data);
    }

    /// The database checksum (flagged, as LTX stores it).
    pub fn checksum(&self) -> u64 {
        let end = (self.commit as usize + 1).min(self.sums.len());
        self.sums[..end].iter().fold(0, |acc, s| acc ^ s) | CHECKSUM_FLAG
    }

    /// Applies the local L0 files of `l0_dir` after `self.txid` up to exactly `to`. Only reads:
    /// the daemon owns the directory. A file removed meanwhile (local retention) ends the walk.
    pub fn advance(&mut self, l0_dir: &Path, to: TxId) -> Result<Result<(), NoLocalChecksum>> {
        let mut files: Vec<(TxId, TxId)> = match std::fs::read_dir(l0_dir) {
            Ok(rd) => rd.flatten().filter_map(|e| parse_filename(&e.file_name().to_string_lossy())).collect(),
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("list", l0_dir, e)),
        };
        files.sort();
        let mut buf = vec![0u8; self.page_size as usize];
        while self.txid < to {
            // The furthest-reaching file that continues the state without passing `to`; one
            // starting earlier is fine: it holds every page changed in its range as of its end.
            let next =
                files.iter().filter(|(min, max)| min.0 <= self.txid.0 + 1 && *max > self.txid && *max <= to).max();
            let Some(&(min, max)) = next else { break };
            let path = l0_dir.join(sluice_ltx::format_filename(min, max));
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => return Err(Error::io("open", &path, e)),
            };
            self.apply(BufReader::new(file), &path, &mut buf)?;
        }
        Ok(if self.txid == to { Ok(()) } else { Err(NoLocalChecksum { reached: self.txid }) })
    }

    fn apply(&mut self, r: impl Read, path: &Path, buf: &mut [u8]) -> Result<()> {
        let ltx = |source| Error::Ltx { file: path.display().to_string(), source };
        let mut dec = Decoder::new(r).map_err(ltx)?;
        let h = *dec.header();
        if h.page_size != self.page_size {
            return Err(Error::FileMismatch {
                file: path.display().to_string(),
                reason: format!("page size {} differs from the database's {}", h.page_size, self.page_size),
            });
        }
        // Applied to a copy: a file that fails to verify must not leave half its pages.
        let mut next = self.clone();
        while let Some(pgno) = dec.next_page(buf).map_err(ltx)? {
            next.set(pgno, buf);
        }
        next.commit = h.commit;
        next.sums.truncate(h.commit as usize + 1);
        next.txid = h.max_txid;
        *self = next;
        Ok(())
    }
}

impl PageSums {
    /// The page checksums of a database file at `txid` (every page but SQLite's lock page,
    /// which LTX never stores), e.g. a restored image.
    pub fn of_file(path: &Path, txid: TxId, page_size: u32) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut buf = vec![0u8; page_size as usize];
        let lock = lock_pgno(page_size);
        let mut sums = PageSums::new(txid, page_size, 0);
        loop {
            match r.read_exact(&mut buf) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(Error::io("read", path, e)),
            }
            sums.commit += 1;
            if sums.commit != lock {
                sums.set(sums.commit, &buf);
            }
        }
        Ok(sums)
    }

    /// Pages (up to `limit` of them) whose contents differ from `other`'s, for messages.
    pub fn differing_pages(&self, other: &PageSums, limit: usize) -> Vec<u32> {
        let at = |s: &PageSums, p: u32| if p <= s.commit { s.sums.get(p as usize).copied().unwrap_or(0) } else { 0 };
        (1..=self.commit.max(other.commit)).filter(|&p| at(self, p) != at(other, p)).take(limit).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_ltx::{Encoder, Header, format_filename};

    const PS: u32 = 512;

    fn write_l0(dir: &Path, min: u64, max: u64, commit: u32, pages: &[(u32, u8)]) {
        let h = Header::new(PS, commit, TxId(min), TxId(max), 0);
        let f = File::create(dir.join(format_filename(TxId(min), TxId(max)))).expect("create");
        let mut enc = Encoder::new(f, h).expect("encoder");
        for &(p, fill) in pages {
            enc.encode_page(p, &[fill; PS as usize]).expect("page");
        }
        enc.finish(0).expect("finish");
    }

    fn db_of(pages: &[u8]) -> u64 {
        let mut s = PageSums::new(TxId(1), PS, pages.len() as u32);
        for (i, fill) in pages.iter().enumerate() {
            s.set(i as u32 + 1, &[*fill; PS as usize]);
        }
        s.checksum()
    }

    #[test]
    fn advance_follows_local_files_and_shrinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = PageSums::new(TxId(3), PS, 2);
        s.set(1, &[1; 512]);
        s.set(2, &[2; 512]);
        write_l0(dir.path(), 2, 3, 2, &[(1, 1)]);
        write_l0(dir.path(), 4, 4, 3, &[(3, 3)]);
        write_l0(dir.path(), 5, 6, 3, &[(2, 9)]);
        write_l0(dir.path(), 7, 7, 1, &[(1, 7)]);
        let mut a = s.clone();
        assert_eq!(a.advance(dir.path(), TxId(6)).expect("advance"), Ok(()));
        assert_eq!(a.checksum(), db_of(&[1, 9, 3]));
        assert_eq!(a.advance(dir.path(), TxId(7)).expect("advance"), Ok(()));
        assert_eq!((a.commit, a.checksum()), (1, db_of(&[7])));
        // A TXID inside a file's range is not reachable; nor one past the last file.
        let mut b = s.clone();
        assert_eq!(b.advance(dir.path(), TxId(5)).expect("advance"), Err(NoLocalChecksum { reached: TxId(4) }));
        let mut c = s;
        assert_eq!(c.advance(dir.path(), TxId(9)).expect("advance"), Err(NoLocalChecksum { reached: TxId(7) }));
    }

    #[test]
    fn file_sums_match_page_sums() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let mut data = Vec::new();
        for fill in [4u8, 5, 6] {
            data.extend_from_slice(&[fill; PS as usize]);
        }
        std::fs::write(&path, &data).expect("write");
        let good = PageSums::of_file(&path, TxId(1), PS).expect("sums");
        assert_eq!((good.commit, good.checksum()), (3, db_of(&[4, 5, 6])));
        data[PS as usize + 7] ^= 1;
        std::fs::write(&path, &data).expect("write");
        let bad = PageSums::of_file(&path, TxId(1), PS).expect("sums");
        assert_ne!(bad.checksum(), good.checksum());
        assert_eq!(bad.differing_pages(&good, 10), [2]);
    }
}
