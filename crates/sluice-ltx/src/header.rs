//! The 100-byte LTX header and the 16-byte trailer.
//!
//! ```text
//!  0   4  magic "LTX1"          40  8  pre-apply checksum   72  8  node ID
//!  4   4  flags                 48  8  WAL offset           80 20  reserved (zero)
//!  8   4  page size             56  8  WAL size
//! 12   4  commit (pages)        64  4  WAL salt 1
//! 16   8  min TXID              68  4  WAL salt 2
//! 24   8  max TXID
//! 32   8  timestamp (ms since the Unix epoch)
//! ```
//! All integers are big-endian.

use crate::TxId;
use crate::checksum::CHECKSUM_FLAG;
use crate::error::{Error, Result};

/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 100;
/// Size of the trailer in bytes.
pub const TRAILER_SIZE: usize = 16;
/// File magic.
pub const MAGIC: [u8; 4] = *b"LTX1";
/// Header flag: the file carries no rolling database checksums (what Litestream 0.5 writes).
pub const FLAG_NO_CHECKSUM: u32 = 0x2;

const FLAGS_OFFSET: usize = 4;
const PAGE_SIZE_OFFSET: usize = FLAGS_OFFSET + 4;
const COMMIT_OFFSET: usize = PAGE_SIZE_OFFSET + 4;
const MIN_TXID_OFFSET: usize = COMMIT_OFFSET + 4;
const MAX_TXID_OFFSET: usize = MIN_TXID_OFFSET + 8;
const TIMESTAMP_OFFSET: usize = MAX_TXID_OFFSET + 8;
const PRE_APPLY_OFFSET: usize = TIMESTAMP_OFFSET + 8;
const WAL_OFFSET_OFFSET: usize = PRE_APPLY_OFFSET + 8;
const WAL_SIZE_OFFSET: usize = WAL_OFFSET_OFFSET + 8;
const WAL_SALT1_OFFSET: usize = WAL_SIZE_OFFSET + 8;
const WAL_SALT2_OFFSET: usize = WAL_SALT1_OFFSET + 4;
const NODE_ID_OFFSET: usize = WAL_SALT2_OFFSET + 4;

/// The page number SQLite reserves for its byte-range locks; never stored in LTX.
pub fn lock_pgno(page_size: u32) -> u32 {
    0x4000_0000 / page_size + 1
}

/// An LTX file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Flags; Litestream 0.5 always writes [`FLAG_NO_CHECKSUM`].
    pub flags: u32,
    /// Database page size in bytes.
    pub page_size: u32,
    /// Database size in pages after applying this file.
    pub commit: u32,
    /// First TXID covered.
    pub min_txid: TxId,
    /// Last TXID covered.
    pub max_txid: TxId,
    /// Creation time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Rolling database checksum before applying (0 with `FLAG_NO_CHECKSUM`).
    pub pre_apply_checksum: u64,
    /// Byte offset in the source WAL where this file's frames start (0 if not from a WAL).
    pub wal_offset: i64,
    /// Bytes of WAL covered.
    pub wal_size: i64,
    /// WAL salt 1 at the time.
    pub wal_salt1: u32,
    /// WAL salt 2 at the time.
    pub wal_salt2: u32,
    /// Always 0 in Litestream.
    pub node_id: u64,
}

impl Header {
    /// A Litestream-style header (NoChecksum, no WAL fields) for the given range.
    pub fn new(page_size: u32, commit: u32, min: TxId, max: TxId, timestamp_ms: i64) -> Self {
        Header {
            flags: FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms,
            pre_apply_checksum: 0,
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: 0,
        }
    }

    /// A snapshot holds every page from 1 to commit.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == TxId(1)
    }

    /// True when the file carries no rolling database checksums.
    pub fn no_checksum(&self) -> bool {
        self.flags & FLAG_NO_CHECKSUM != 0
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..4].copy_from_slice(&MAGIC);
        put32(&mut b, FLAGS_OFFSET, self.flags);
        put32(&mut b, PAGE_SIZE_OFFSET, self.page_size);
        put32(&mut b, COMMIT_OFFSET, self.commit);
        put64(&mut b, MIN_TXID_OFFSET, self.min_txid.0);
        put64(&mut b, MAX_TXID_OFFSET, self.max_txid.0);
        put64(&mut b, TIMESTAMP_OFFSET, self.timestamp_ms as u64);
        put64(&mut b, PRE_APPLY_OFFSET, self.pre_apply_checksum);
        put64(&mut b, WAL_OFFSET_OFFSET, self.wal_offset as u64);
        put64(&mut b, WAL_SIZE_OFFSET, self.wal_size as u64);
        put32(&mut b, WAL_SALT1_OFFSET, self.wal_salt1);
        put32(&mut b, WAL_SALT2_OFFSET, self.wal_salt2);
        put64(&mut b, NODE_ID_OFFSET, self.node_id);
        b
    }

    /// Parses and validates a header. `b` must hold at least [`HEADER_SIZE`] bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER_SIZE {
            if b.len() >= 4 && b[..4] != MAGIC {
                return Err(Error::BadMagic { found: [b[0], b[1], b[2], b[3]] });
            }
            return Err(Error::Truncated { section: crate::Section::Header, offset: b.len() as u64 });
        }
        if b[..4] != MAGIC {
            return Err(Error::BadMagic { found: [b[0], b[1], b[2], b[3]] });
        }
        let h = Header {
            flags: get32(b, FLAGS_OFFSET),
            page_size: get32(b, PAGE_SIZE_OFFSET),
            commit: get32(b, COMMIT_OFFSET),
            min_txid: TxId(get64(b, MIN_TXID_OFFSET)),
            max_txid: TxId(get64(b, MAX_TXID_OFFSET)),
            timestamp_ms: get64(b, TIMESTAMP_OFFSET) as i64,
            pre_apply_checksum: get64(b, PRE_APPLY_OFFSET),
            wal_offset: get64(b, WAL_OFFSET_OFFSET) as i64,
            wal_size: get64(b, WAL_SIZE_OFFSET) as i64,
            wal_salt1: get32(b, WAL_SALT1_OFFSET),
            wal_salt2: get32(b, WAL_SALT2_OFFSET),
            node_id: get64(b, NODE_ID_OFFSET),
        };
        h.validate()?;
        Ok(h)
    }

    /// Checks the rules of ltx's `Header.Validate`.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: &str| Err(Error::InvalidHeader(s.to_string()));
        if self.flags & !FLAG_NO_CHECKSUM != 0 {
            return Err(Error::UnsupportedFlags { flags: self.flags });
        }
        if !(512..=65536).contains(&self.page_size) || !self.page_size.is_power_of_two() {
            return Err(Error::InvalidHeader(format!(
                "page size {} is not a power of two in 512..65536",
                self.page_size
            )));
        }
        if self.min_txid.0 == 0 || self.max_txid.0 == 0 {
            return bad("TXIDs must be at least 1");
        }
        if self.min_txid > self.max_txid {
            return Err(Error::InvalidHeader(format!(
                "min TXID {} is greater than max TXID {}",
                self.min_txid, self.max_txid
            )));
        }
        if self.wal_offset < 0 || self.wal_size < 0 {
            return bad("negative WAL offset or size");
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0 || self.wal_size != 0) && self.wal_offset == 0 {
            return bad("WAL salts or size require a WAL offset");
        }
        if self.is_snapshot() || self.no_checksum() {
            if self.pre_apply_checksum != 0 {
                return bad("pre-apply checksum must be zero in a snapshot or a NoChecksum file");
            }
        } else if self.pre_apply_checksum & CHECKSUM_FLAG == 0 {
            return bad("pre-apply checksum must be set when the file carries checksums");
        }
        Ok(())
    }
}

/// The 16-byte trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Trailer {
    /// Rolling database checksum after applying (0 with `FLAG_NO_CHECKSUM`).
    pub post_apply_checksum: u64,
    /// CRC-64/GO-ISO of the file's logical contents, flagged.
    pub file_checksum: u64,
}

pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn get32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(a)
}

pub(crate) fn get64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_offsets() {
        let mut h = Header::new(4096, 7, TxId(8), TxId(8), 0x1a21765c3ae);
        h.wal_offset = 32;
        h.wal_size = 4120;
        h.wal_salt1 = 0x9b5d0d23;
        h.wal_salt2 = 0x95c26931;
        let b = h.to_bytes();
        // Bytes of the spec's hex walkthrough (sample-l0.ltx).
        assert_eq!(&b[..16], &[0x4c, 0x54, 0x58, 0x31, 0, 0, 0, 2, 0, 0, 0x10, 0, 0, 0, 0, 7]);
        assert_eq!(&b[0x40..0x48], &[0x9b, 0x5d, 0x0d, 0x23, 0x95, 0xc2, 0x69, 0x31]);
        assert_eq!(Header::from_bytes(&b).unwrap(), h);
    }

    #[test]
    fn validation_rules() {
        let ok = Header::new(4096, 1, TxId(1), TxId(1), 0);
        let cases: Vec<(Header, &str)> = vec![
            (Header { flags: 0x4, ..ok }, "unsupported_flags"),
            (Header { page_size: 1000, ..ok }, "invalid_header"),
            (Header { page_size: 256, ..ok }, "invalid_header"),
            (Header { min_txid: TxId(0), ..ok }, "invalid_header"),
            (Header { min_txid: TxId(3), max_txid: TxId(2), ..ok }, "invalid_header"),
            (Header { wal_salt1: 1, ..ok }, "invalid_header"),
            (Header { pre_apply_checksum: 1 << 63, ..ok }, "invalid_header"),
            (Header { flags: 0, min_txid: TxId(2), max_txid: TxId(2), ..ok }, "invalid_header"),
        ];
        for (h, want) in cases {
            assert_eq!(Header::from_bytes(&h.to_bytes()).unwrap_err().kind_name(), want, "{h:?}");
        }
        let mut b = ok.to_bytes();
        b[0] = b'X';
        assert_eq!(Header::from_bytes(&b).unwrap_err().kind_name(), "bad_magic");
        assert_eq!(lock_pgno(4096), 262145);
        assert_eq!(lock_pgno(65536), 16385);
    }
}
