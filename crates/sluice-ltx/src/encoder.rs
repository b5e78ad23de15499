//! Streaming LTX encoder, byte-compatible with ltx v0.5.2 (Litestream 0.5.16+).
//!
//! Memory is one compressed-page scratch buffer plus 16 bytes of index per page: the page
//! index must follow the pages and needs their offsets, as in Go's encoder.

use std::io::Write;

use crate::checksum::{CHECKSUM_FLAG, Crc64};
use crate::error::{Error, Result};
use crate::header::{HEADER_SIZE, Header, Trailer, lock_pgno};
use crate::varint::{get_uvarint, put_uvarint};

/// Page-header flag: a u32 compressed size and an LZ4 block follow.
pub const PAGE_FLAG_SIZE: u16 = 0x0001;
/// Bytes of a page header: pgno (4) + flags (2).
pub const PAGE_HEADER_SIZE: usize = 6;

/// One entry of the page index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageIndexEntry {
    /// Page number.
    pub pgno: u32,
    /// Offset of the frame's page header in the file.
    pub offset: u64,
    /// Length of the whole frame (header, size field, compressed data).
    pub size: u64,
}

/// Writes one LTX file page by page.
pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    crc: Crc64,
    written: u64,
    prev_pgno: u32,
    /// The page index as varint (pgno delta, frame size) pairs — about 3 bytes a page
    /// instead of 16: a snapshot holds one entry per database page until the end. Offsets
    /// are the running sum of sizes, so they are restored when the index is written.
    index: Vec<u8>,
    pages: usize,
    scratch: Vec<u8>,
    lock_pgno: u32,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it.
    pub fn new(mut w: W, header: Header) -> Result<Self> {
        header.validate()?;
        let bytes = header.to_bytes();
        w.write_all(&bytes)?;
        let mut crc = Crc64::new();
        crc.update(&bytes);
        let bound = lz4_flex::block::get_maximum_output_size(header.page_size as usize);
        Ok(Encoder {
            w,
            header,
            crc,
            written: HEADER_SIZE as u64,
            prev_pgno: 0,
            index: Vec::new(),
            pages: 0,
            scratch: vec![0; bound],
            lock_pgno: lock_pgno(header.page_size),
        })
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Pages encoded so far.
    pub fn page_count(&self) -> usize {
        self.pages
    }

    /// Appends a page, LZ4-compressed. Pages must come in increasing pgno order; a snapshot
    /// must hold exactly pages 1..=commit without the lock page.
    pub fn encode_page(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        self.check_page(pgno, data)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        // A stored block may have left it shorter than the bound.
        scratch.resize(lz4_flex::block::get_maximum_output_size(data.len()), 0);
        let res = lz4_flex::block::compress_into(data, &mut scratch).map_err(|e| Error::Io(std::io::Error::other(e)));
        let res = res.and_then(|csize| self.write_frame(pgno, data, &scratch[..csize]));
        self.scratch = scratch;
        res
    }

    /// Appends a page as a stored LZ4 block (one literal run, no compression): valid LTX that
    /// costs a copy instead of a compression. For short-lived local files whose pages are
    /// compressed once, later, by [`Encoder::encode_page_block`] in a merge.
    pub fn encode_page_stored(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        self.check_page(pgno, data)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        stored_block(data, &mut scratch);
        let res = self.write_frame(pgno, data, &scratch);
        self.scratch = scratch;
        res
    }

    /// Appends a page whose LZ4 block is already known to decompress to `data` (a merge
    /// copies the winning frame instead of compressing it again). A block not smaller than
    /// the page — stored, or incompressible — is compressed afresh.
    pub fn encode_page_block(&mut self, pgno: u32, data: &[u8], block: &[u8]) -> Result<()> {
        if block.len() >= data.len() {
            return self.encode_page(pgno, data);
        }
        self.check_page(pgno, data)?;
        self.write_frame(pgno, data, block)
    }

    fn check_page(&self, pgno: u32, data: &[u8]) -> Result<()> {
        if data.len() != self.header.page_size as usize {
            return Err(Error::PageSizeMismatch { expected: self.header.page_size, actual: data.len() });
        }
        if pgno == 0 || pgno > self.header.commit {
            return Err(Error::PageOutOfRange { pgno, commit: self.header.commit });
        }
        if pgno == self.lock_pgno {
            return Err(Error::LockPage { pgno });
        }
        if pgno <= self.prev_pgno {
            return Err(Error::PageOrder { pgno, prev: self.prev_pgno });
        }
        if self.header.is_snapshot() {
            let expected = self.next_snapshot_pgno();
            if pgno != expected {
                return Err(Error::MissingPage { pgno: expected, commit: self.header.commit });
            }
        }
        Ok(())
    }

    /// Writes one frame; the file checksum covers the uncompressed page, as in Go's encoder.
    fn write_frame(&mut self, pgno: u32, data: &[u8], block: &[u8]) -> Result<()> {
        let mut head = [0u8; PAGE_HEADER_SIZE + 4];
        head[..4].copy_from_slice(&pgno.to_be_bytes());
        head[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        head[6..10].copy_from_slice(&(block.len() as u32).to_be_bytes());
        self.w.write_all(&head)?;
        self.w.write_all(block)?;
        self.crc.update(&head);
        self.crc.update(data);
        let size = (head.len() + block.len()) as u64;
        put_uvarint(&mut self.index, u64::from(pgno - self.prev_pgno));
        put_uvarint(&mut self.index, size);
        self.pages += 1;
        self.written += size;
        self.prev_pgno = pgno;
        Ok(())
    }

    fn next_snapshot_pgno(&self) -> u32 {
        let next = self.prev_pgno + 1;
        if next == self.lock_pgno { next + 1 } else { next }
    }

    /// Writes the end marker, page index and trailer; returns the writer and the trailer.
    ///
    /// `post_apply_checksum` must be 0 for NoChecksum files (what Litestream writes).
    pub fn finish(mut self, post_apply_checksum: u64) -> Result<(W, Trailer)> {
        let h = self.header;
        if h.is_snapshot() && self.prev_pgno < h.commit {
            let next = self.next_snapshot_pgno();
            if next <= h.commit {
                return Err(Error::MissingPage { pgno: next, commit: h.commit });
            }
        }
        if h.no_checksum() && post_apply_checksum != 0 {
            return Err(Error::InvalidHeader("post-apply checksum must be zero in a NoChecksum file".into()));
        }
        if !h.no_checksum() && post_apply_checksum & CHECKSUM_FLAG == 0 {
            return Err(Error::InvalidHeader("post-apply checksum must be set when the file carries checksums".into()));
        }
        if h.commit == 0 && post_apply_checksum != CHECKSUM_FLAG {
            // Mirrors Go's encoder: an empty database needs the empty-database checksum.
            return Err(Error::InvalidHeader("commit size 0 requires checksums".into()));
        }
        // End marker, then the index entry by entry (streamed: no second per-page buffer).
        let marker = [0u8; PAGE_HEADER_SIZE];
        self.w.write_all(&marker)?;
        self.crc.update(&marker);
        let (mut pgno, mut offset, mut index_len) = (0u64, HEADER_SIZE as u64, 0u64);
        let (mut i, mut chunk) = (0, Vec::with_capacity(64 << 10));
        while i < self.index.len() {
            let (delta, a) = get_uvarint(&self.index[i..]).expect("BUG: own index entry");
            let (size, b) = get_uvarint(&self.index[i + a..]).expect("BUG: own index entry");
            i += a + b;
            pgno += delta;
            put_uvarint(&mut chunk, pgno);
            put_uvarint(&mut chunk, offset);
            put_uvarint(&mut chunk, size);
            offset += size;
            if chunk.len() >= (64 << 10) - 30 || i == self.index.len() {
                self.w.write_all(&chunk)?;
                self.crc.update(&chunk);
                index_len += chunk.len() as u64;
                chunk.clear();
            }
        }
        let mut tail = Vec::with_capacity(32);
        put_uvarint(&mut tail, 0);
        index_len += tail.len() as u64;
        tail.extend_from_slice(&index_len.to_be_bytes());
        tail.extend_from_slice(&post_apply_checksum.to_be_bytes());
        self.crc.update(&tail);
        let file_checksum = self.crc.finish() | CHECKSUM_FLAG;
        tail.extend_from_slice(&file_checksum.to_be_bytes());
        self.w.write_all(&tail)?;
        self.w.flush()?;
        Ok((self.w, Trailer { post_apply_checksum, file_checksum }))
    }
}

/// An LZ4 block holding `data` as a single literal run (the block format's last sequence:
/// a token, the length in 255-steps, the bytes).
fn stored_block(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let n = data.len();
    if n < 15 {
        out.push((n as u8) << 4);
    } else {
        out.push(0xF0);
        let mut rest = n - 15;
        while rest >= 255 {
            out.push(255);
            rest -= 255;
        }
        out.push(rest as u8);
    }
    out.extend_from_slice(data);
}
