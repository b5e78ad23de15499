//! The read-ahead journal: after each full checkpoint, the page numbers read since the last
//! local file are saved (4 bytes per page and a CRC, no fsync), so a daemon killed before its next
//! sync can resume after the WAL restart instead of uploading a full image.
//!
//! Resuming is sound only when the WAL now holds the generation that directly follows the
//! one the journal closed: SQLite adds one to salt 1 and to the checkpoint sequence number on
//! every restart, and a WAL created afresh starts the sequence at 0. Everything the older
//! generations changed was copied into the database file before the restart, so the journal's
//! pages read from there, plus the new generation's frames, are the database's changes since
//! the last local file. Anything else — no journal, a torn one, another generation, no WAL —
//! falls back to a full image.

use rustc_hash::FxHashSet as HashSet;
use std::path::{Path, PathBuf};

use sluice_ltx::TxId;

use super::{Deferred, Shipper};
use crate::wal::{WAL_HEADER_SIZE, WalHeader};

pub(crate) const NAME: &str = "read-ahead.journal";
const MAGIC: &[u8; 4] = b"SLJ1";

/// What the journal records.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Journal {
    /// TXID of the newest local file; the pages changed after it.
    base: TxId,
    prev_commit: u32,
    commit: u32,
    /// The generation fully read and checkpointed: salts and checkpoint sequence.
    salts: (u32, u32),
    checkpoint_seq: u32,
    pgnos: Vec<u32>,
}

fn path(root: &Path) -> PathBuf {
    root.join(NAME)
}

impl Journal {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(40 + 4 * self.pgnos.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.base.0.to_be_bytes());
        for v in [self.prev_commit, self.commit, self.salts.0, self.salts.1, self.checkpoint_seq] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&(self.pgnos.len() as u32).to_be_bytes());
        for p in &self.pgnos {
            b.extend_from_slice(&p.to_be_bytes());
        }
        let crc = sluice_ltx::crc64(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Journal> {
        let (body, crc) = b.split_at_checked(b.len().checked_sub(8)?)?;
        if sluice_ltx::crc64(body).to_be_bytes() != crc || body.get(..4)? != MAGIC {
            return None;
        }
        let u32_at = |o: usize| Some(u32::from_be_bytes(body.get(o..o + 4)?.try_into().ok()?));
        let base = TxId(u64::from_be_bytes(body.get(4..12)?.try_into().ok()?));
        let n = u32_at(32)? as usize;
        if body.len() != 36 + 4 * n {
            return None;
        }
        Some(Journal {
            base,
            prev_commit: u32_at(12)?,
            commit: u32_at(16)?,
            salts: (u32_at(20)?, u32_at(24)?),
            checkpoint_seq: u32_at(28)?,
            pgnos: (0..n).map(|i| u32_at(36 + 4 * i)).collect::<Option<_>>()?,
        })
    }
}

impl Shipper {
    /// Saves the read-ahead set after a full checkpoint of generation `hdr` (best effort: a
    /// missing journal only costs a full image after a crash).
    pub(super) fn save_journal(&self, hdr: &WalHeader) {
        let Some(pos) = self.pos else { return };
        // Nothing read since the last file is a journal too: an empty one.
        let j = Journal {
            base: pos.txid,
            prev_commit: self.deferred.as_ref().map_or(pos.commit, |d| d.prev_commit),
            commit: pos.commit,
            salts: (hdr.salt1, hdr.salt2),
            checkpoint_seq: hdr.checkpoint_seq,
            pgnos: self.deferred.as_ref().map(|d| d.pgnos.iter().copied().collect()).unwrap_or_default(),
        };
        let p = path(self.meta.root());
        let tmp = p.with_extension("tmp");
        if let Err(e) = self.meta.perms().write(&tmp, &j.encode()).and_then(|()| std::fs::rename(&tmp, &p)) {
            // A full disk leaves a partial temp file: never keep one behind.
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(error = %e, "could not save the read-ahead journal");
        }
    }

    /// Drops the journal once its pages are in a local file.
    pub(super) fn clear_journal(&self) {
        let _ = std::fs::remove_file(path(self.meta.root()));
    }

    /// Resumes from the journal if it closed the generation right before `hdr`'s and follows
    /// the newest local file (TXID `base`). True if resumed.
    pub(super) fn resume_from_journal(&mut self, base: TxId, hdr: &WalHeader) -> bool {
        let Some(j) = std::fs::read(path(self.meta.root())).ok().and_then(|b| Journal::decode(&b)) else {
            return false;
        };
        let next = j.salts.0.wrapping_add(1) == hdr.salt1 && j.checkpoint_seq.wrapping_add(1) == hdr.checkpoint_seq;
        if j.base != base || !next {
            return false;
        }
        tracing::info!(txid = %base, pages = j.pgnos.len(), "resuming after the WAL restart recorded before the stop");
        self.deferred = (!j.pgnos.is_empty()).then(|| Deferred {
            start: WAL_HEADER_SIZE,
            salts: (hdr.salt1, hdr.salt2),
            prev_commit: j.prev_commit,
            pgnos: j.pgnos.into_iter().collect::<HashSet<u32>>(),
        });
        self.resume_at_header(base, (hdr.salt1, hdr.salt2), hdr.checksum, j.commit);
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any journal round-trips; any bytes at all decode to a journal or to nothing,
        /// never a panic (the file may be torn or foreign).
        #[test]
        fn encode_decode(base in any::<u64>(), prev in any::<u32>(), commit in any::<u32>(),
                         salts in any::<(u32, u32)>(), seq in any::<u32>(),
                         pgnos in proptest::collection::vec(any::<u32>(), 0..300),
                         noise in proptest::collection::vec(any::<u8>(), 0..200)) {
            let j = Journal { base: TxId(base), prev_commit: prev, commit, salts, checkpoint_seq: seq, pgnos };
            prop_assert_eq!(Journal::decode(&j.encode()), Some(j));
            let _ = Journal::decode(&noise);
            // Past the CRC too: garbage with a valid checksum.
            let mut signed = noise.clone();
            signed.extend_from_slice(&sluice_ltx::crc64(&noise).to_be_bytes());
            let _ = Journal::decode(&signed);
            let mut magic = MAGIC.to_vec();
            magic.extend_from_slice(&noise);
            magic.extend_from_slice(&sluice_ltx::crc64(&magic).to_be_bytes());
            let _ = Journal::decode(&magic);
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let j = Journal {
            base: TxId(42),
            prev_commit: 10,
            commit: 12,
            salts: (7, 9),
            checkpoint_seq: 3,
            pgnos: vec![1, 5, 12],
        };
        let b = j.encode();
        assert_eq!(Journal::decode(&b), Some(j));
        for cut in 0..b.len() {
            assert_eq!(Journal::decode(&b[..cut]), None, "torn at {cut}");
        }
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(Journal::decode(&bad), None);
    }
}
