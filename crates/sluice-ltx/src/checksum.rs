//! CRC-64/GO-ISO, the checksum of every LTX file, and the rolling database checksum.
//!
//! Go's `hash/crc64` with the ISO table: reflected polynomial 0xD800000000000000, init and
//! xorout all ones. It is *not* CRC-64/ECMA. `crc-fast` computes it with carry-less multiply
//! instructions, which keeps checksumming far below LZ4's cost.

use crc_fast::{CrcAlgorithm, Digest};

/// Every checksum stored in an LTX file has this bit set, so zero can mean "absent".
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// Streaming CRC-64/GO-ISO.
#[derive(Clone)]
pub struct Crc64(Digest);

impl Crc64 {
    /// A fresh digest.
    pub fn new() -> Self {
        Crc64(Digest::new(CrcAlgorithm::Crc64GoIso))
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The CRC of everything fed so far.
    pub fn finish(&self) -> u64 {
        self.0.finalize()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc64({:016x})", self.finish())
    }
}

/// One-shot CRC-64/GO-ISO.
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64GoIso, data)
}

/// The checksum of one database page as LTX defines it: `crc64(BE32(pgno) ‖ data) | flag`.
pub fn page_checksum(pgno: u32, data: &[u8]) -> u64 {
    let mut d = Crc64::new();
    d.update(&pgno.to_be_bytes());
    d.update(data);
    d.finish() | CHECKSUM_FLAG
}

/// The rolling database checksum: the XOR of every page's checksum, flagged.
///
/// XOR makes it updatable page by page: replacing a page XORs out its old checksum and XORs in
/// the new one, which is how LTX pre-/post-apply checksums chain across files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatabaseChecksum(u64);

impl DatabaseChecksum {
    /// The checksum of an empty database.
    pub fn new() -> Self {
        DatabaseChecksum(0)
    }

    /// Resumes from a stored (flagged) value.
    pub fn from_value(v: u64) -> Self {
        DatabaseChecksum(v & !CHECKSUM_FLAG)
    }

    /// Adds a page that was absent.
    pub fn add(&mut self, pgno: u32, data: &[u8]) {
        self.0 ^= page_checksum(pgno, data);
    }

    /// Removes a page that was present (XOR is its own inverse).
    pub fn remove(&mut self, pgno: u32, data: &[u8]) {
        self.add(pgno, data);
    }

    /// The flagged value as stored in LTX headers and trailers.
    pub fn value(self) -> u64 {
        self.0 | CHECKSUM_FLAG
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_iso_check_value() {
        assert_eq!(crc64(b"123456789"), 0xB909_56C7_75A4_1001);
        let mut d = Crc64::new();
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.finish(), 0xB909_56C7_75A4_1001);
    }

    #[test]
    fn database_checksum_is_order_free_and_invertible() {
        let (a, b) = ([1u8; 512], [2u8; 512]);
        let mut x = DatabaseChecksum::new();
        x.add(1, &a);
        x.add(2, &b);
        let mut y = DatabaseChecksum::new();
        y.add(2, &b);
        y.add(1, &a);
        assert_eq!(x, y);
        y.remove(2, &b);
        let mut z = DatabaseChecksum::new();
        z.add(1, &a);
        assert_eq!(y, z);
        assert_ne!(x.value() & CHECKSUM_FLAG, 0);
    }
}
