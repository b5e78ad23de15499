//! Random access: find the page index from a file's tail, then decode single frames
//! fetched by byte range. This is how a reader serves pages without downloading files.
//!
//! ```text
//! ... [ varints: (pgno, offset, size)* 0 ][ u64 varint length ][ post-apply u64 ][ file checksum u64 ]
//!                                                                 \______ trailer (16) ______/
//! ```

use std::ops::Range;

use crate::encoder::{PAGE_FLAG_SIZE, PAGE_HEADER_SIZE, PageIndexEntry};
use crate::error::{Error, Result, Section};
use crate::header::{HEADER_SIZE, TRAILER_SIZE, Trailer};
use crate::lz4frame::{FrameError, read_frame};
use crate::varint::get_uvarint;

/// How many tail bytes to fetch first: Litestream's `DefaultEstimatedPageIndexSize`.
pub const ESTIMATED_INDEX_TAIL: u64 = 32 << 10;

/// Bytes after the varint region: its u64 length plus the trailer.
const FOOTER_SIZE: u64 = 8 + TRAILER_SIZE as u64;

/// Where the page index lies, learned from the last bytes of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexLocation {
    /// Byte range of the varint region (including its 0 terminator).
    pub range: Range<u64>,
    /// The trailer.
    pub trailer: Trailer,
}

/// Reads the index location from `tail`, the last `tail.len()` (≥ 24) bytes of a file of
/// `file_size` bytes.
pub fn locate_index(file_size: u64, tail: &[u8]) -> Result<IndexLocation> {
    let min = HEADER_SIZE as u64 + PAGE_HEADER_SIZE as u64 + 1 + FOOTER_SIZE;
    if file_size < min || (tail.len() as u64) < FOOTER_SIZE || tail.len() as u64 > file_size {
        return Err(Error::Truncated { section: Section::Trailer, offset: file_size });
    }
    let f = &tail[tail.len() - FOOTER_SIZE as usize..];
    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("BUG: 8-byte slice"));
    let len = be(&f[..8]);
    let trailer = Trailer { post_apply_checksum: be(&f[8..16]), file_checksum: be(&f[16..24]) };
    let end = file_size - FOOTER_SIZE;
    if len == 0 || len > end - HEADER_SIZE as u64 - PAGE_HEADER_SIZE as u64 {
        return Err(Error::CorruptIndex(format!("index length {len} does not fit a {file_size}-byte file")));
    }
    Ok(IndexLocation { range: end - len..end, trailer })
}

/// Parses the varint region of a page index.
pub fn parse_index(varints: &[u8]) -> Result<Vec<PageIndexEntry>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let next = |pos: &mut usize| -> Result<u64> {
        let (v, n) = get_uvarint(&varints[*pos..]).ok_or_else(|| Error::CorruptIndex("truncated varint".into()))?;
        *pos += n;
        Ok(v)
    };
    loop {
        let pgno = next(&mut pos)?;
        if pgno == 0 {
            break;
        }
        let (offset, size) = (next(&mut pos)?, next(&mut pos)?);
        let pgno = u32::try_from(pgno).map_err(|_| Error::CorruptIndex(format!("page number {pgno} too large")))?;
        if out.last().is_some_and(|e: &PageIndexEntry| e.pgno >= pgno) {
            return Err(Error::CorruptIndex(format!("page {pgno} out of order")));
        }
        if size < PAGE_HEADER_SIZE as u64 || offset < HEADER_SIZE as u64 {
            return Err(Error::CorruptIndex(format!("page {pgno} has impossible frame {offset}+{size}")));
        }
        out.push(PageIndexEntry { pgno, offset, size });
    }
    if pos != varints.len() {
        return Err(Error::CorruptIndex(format!("{} bytes after the index terminator", varints.len() - pos)));
    }
    Ok(out)
}

/// Index of a file from its tail, or the range still to fetch when the tail was too short.
pub enum TailIndex {
    /// The whole index was in the tail.
    Complete(Vec<PageIndexEntry>, Trailer),
    /// Fetch this range and call [`parse_index`] on it.
    NeedRange(IndexLocation),
}

/// Parses the index from the last bytes of a file if they hold all of it.
pub fn index_from_tail(file_size: u64, tail: &[u8]) -> Result<TailIndex> {
    let loc = locate_index(file_size, tail)?;
    let tail_start = file_size - tail.len() as u64;
    if loc.range.start < tail_start {
        return Ok(TailIndex::NeedRange(loc));
    }
    let s = (loc.range.start - tail_start) as usize;
    let e = (loc.range.end - tail_start) as usize;
    Ok(TailIndex::Complete(parse_index(&tail[s..e])?, loc.trailer))
}

/// Decodes one page frame (as located by the index) into `out` (one page); returns its pgno.
///
/// A single frame cannot be checked against the file checksum; callers that need that
/// guarantee verify whole files with the [`crate::Decoder`].
pub fn decode_page_frame(frame: &[u8], out: &mut [u8]) -> Result<u32> {
    let bad = |pgno, reason: String| Error::CorruptFrame { pgno, offset: 0, reason };
    if frame.len() < PAGE_HEADER_SIZE {
        return Err(Error::Truncated { section: Section::Page, offset: frame.len() as u64 });
    }
    let pgno = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let flags = u16::from_be_bytes([frame[4], frame[5]]);
    if pgno == 0 {
        return Err(bad(0, "frame has page number 0".into()));
    }
    let body = &frame[PAGE_HEADER_SIZE..];
    match flags {
        PAGE_FLAG_SIZE => {
            if body.len() < 4 {
                return Err(Error::Truncated { section: Section::Page, offset: frame.len() as u64 });
            }
            let csize = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
            if body.len() - 4 != csize {
                return Err(bad(pgno, format!("frame is {} bytes, header says {}", body.len() - 4, csize)));
            }
            match lz4_flex::block::decompress_into(&body[4..], out) {
                Ok(n) if n == out.len() => Ok(pgno),
                Ok(n) => Err(bad(pgno, format!("LZ4 block decompresses to {n} bytes"))),
                Err(e) => Err(bad(pgno, format!("LZ4 block: {e}"))),
            }
        }
        0 => {
            let mut r = body;
            let mut scratch = Vec::new();
            match read_frame(&mut r, out, &mut scratch) {
                Ok(_) if r.is_empty() => Ok(pgno),
                Ok(_) => Err(bad(pgno, "bytes after the LZ4 frame".into())),
                Err(FrameError::Io(_)) => Err(Error::Truncated { section: Section::Page, offset: frame.len() as u64 }),
                Err(FrameError::Corrupt(m)) => Err(bad(pgno, m)),
            }
        }
        f => Err(bad(pgno, format!("unknown page flags {f:#06x}"))),
    }
}
