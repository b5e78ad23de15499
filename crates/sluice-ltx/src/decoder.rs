//! Streaming LTX decoder: validates structure while reading and the file checksum at the end.

use std::io::{BufReader, ErrorKind, Read};

use crate::checksum::{CHECKSUM_FLAG, Crc64};
use crate::encoder::{PAGE_FLAG_SIZE, PAGE_HEADER_SIZE};
use crate::error::{ChecksumKind, Error, Result, Section};
use crate::header::{HEADER_SIZE, Header, TRAILER_SIZE, Trailer, lock_pgno};
use crate::lz4frame::{FrameError, read_frame};
use crate::varint::get_uvarint;

/// Reads one LTX file page by page.
///
/// Call [`Decoder::next_page`] until it returns `None`, which reads and checks the index and
/// the trailer, or call [`Decoder::finish`] to drain and verify.
pub struct Decoder<R: Read> {
    r: BufReader<R>,
    header: Header,
    crc: Crc64,
    offset: u64,
    prev_pgno: u32,
    /// What the index must say, kept as a hash and a count rather than a list: memory stays
    /// constant however many pages a file holds.
    expected_index: IndexHash,
    frames: usize,
    scratch: Vec<u8>,
    trailer: Option<Trailer>,
    lock_pgno: u32,
    max_block: usize,
    /// The last page came as an LZ4 block, held in `scratch`.
    block_in_scratch: bool,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header.
    pub fn new(r: R) -> Result<Self> {
        Self::with_buffer(r, 64 << 10)
    }

    /// Like [`Decoder::new`] with a read buffer of `capacity` bytes (merges of many local
    /// files use small buffers to keep memory low).
    pub fn with_buffer(r: R, capacity: usize) -> Result<Self> {
        let mut r = BufReader::with_capacity(capacity, r);
        let mut head = [0u8; HEADER_SIZE];
        let n = read_full(&mut r, &mut head)?;
        let header = Header::from_bytes(&head[..n])?;
        let mut crc = Crc64::new();
        crc.update(&head);
        let max_block = lz4_flex::block::get_maximum_output_size(header.page_size as usize);
        Ok(Decoder {
            r,
            header,
            crc,
            offset: HEADER_SIZE as u64,
            prev_pgno: 0,
            expected_index: IndexHash::default(),
            frames: 0,
            scratch: Vec::with_capacity(max_block),
            trailer: None,
            lock_pgno: lock_pgno(header.page_size),
            max_block,
            block_in_scratch: false,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The trailer, once the end of the file was reached and verified.
    pub fn trailer(&self) -> Option<Trailer> {
        self.trailer
    }

    /// The LZ4 block the last page returned by [`Decoder::next_page`] was decoded from (`None`
    /// for the legacy frame encoding). Merges copy it instead of compressing the page again.
    pub fn last_block(&self) -> Option<&[u8]> {
        self.block_in_scratch.then_some(self.scratch.as_slice())
    }

    /// Decodes the next page into `buf` (exactly one page long) and returns its number, or
    /// `None` after the last page once the index and trailer verified.
    pub fn next_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        if buf.len() != self.header.page_size as usize {
            return Err(Error::PageSizeMismatch { expected: self.header.page_size, actual: buf.len() });
        }
        let start = self.offset;
        self.block_in_scratch = false;
        let mut ph = [0u8; PAGE_HEADER_SIZE];
        self.read_exact(&mut ph, Section::Page)?;
        let pgno = u32::from_be_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let flags = u16::from_be_bytes([ph[4], ph[5]]);
        self.crc.update(&ph);
        if pgno == 0 {
            if flags != 0 {
                return Err(self.corrupt(0, start, "end-of-pages marker has non-zero flags"));
            }
            self.finish_pages()?;
            return Ok(None);
        }
        self.check_pgno(pgno)?;
        match flags {
            PAGE_FLAG_SIZE => self.read_block(pgno, start, buf)?,
            0 => self.read_legacy(pgno, start, buf)?,
            f => return Err(self.corrupt(pgno, start, &format!("unknown page flags {f:#06x}"))),
        }
        self.crc.update(buf);
        self.expected_index.add(u64::from(pgno), start, self.offset - start);
        self.frames += 1;
        self.prev_pgno = pgno;
        Ok(Some(pgno))
    }

    /// Reads any remaining pages, verifies the index and checksums, and returns the trailer.
    pub fn finish(mut self) -> Result<Trailer> {
        let mut page = vec![0u8; self.header.page_size as usize];
        while self.next_page(&mut page)?.is_some() {}
        Ok(self.trailer.expect("BUG: next_page returned None without a trailer"))
    }

    fn check_pgno(&self, pgno: u32) -> Result<()> {
        if pgno > self.header.commit {
            return Err(Error::PageOutOfRange { pgno, commit: self.header.commit });
        }
        if pgno == self.lock_pgno {
            return Err(Error::LockPage { pgno });
        }
        if pgno <= self.prev_pgno {
            return Err(Error::PageOrder { pgno, prev: self.prev_pgno });
        }
        if self.header.is_snapshot() && pgno != self.next_snapshot_pgno() {
            return Err(Error::MissingPage { pgno: self.next_snapshot_pgno(), commit: self.header.commit });
        }
        Ok(())
    }

    fn next_snapshot_pgno(&self) -> u32 {
        let next = self.prev_pgno + 1;
        if next == self.lock_pgno { next + 1 } else { next }
    }

    fn read_block(&mut self, pgno: u32, start: u64, buf: &mut [u8]) -> Result<()> {
        let mut sz = [0u8; 4];
        self.read_exact(&mut sz, Section::Page)?;
        self.crc.update(&sz);
        let csize = u32::from_be_bytes(sz) as usize;
        if csize > self.max_block {
            return Err(self.corrupt(pgno, start, &format!("compressed size {csize} exceeds the LZ4 bound")));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(csize, 0);
        let res = self.read_exact(&mut scratch, Section::Page);
        let res = res.and_then(|()| match lz4_flex::block::decompress_into(&scratch, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => Err(self.corrupt(pgno, start, &format!("LZ4 block decompresses to {n} bytes"))),
            Err(e) => Err(self.corrupt(pgno, start, &format!("LZ4 block: {e}"))),
        });
        self.scratch = scratch;
        self.block_in_scratch = res.is_ok();
        res
    }

    fn read_legacy(&mut self, pgno: u32, start: u64, buf: &mut [u8]) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let res = read_frame(&mut self.r, buf, &mut scratch);
        self.scratch = scratch;
        match res {
            Ok(n) => {
                self.offset += n;
                Ok(())
            }
            Err(FrameError::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                Err(Error::Truncated { section: Section::Page, offset: self.offset })
            }
            Err(FrameError::Io(e)) => Err(Error::Io(e)),
            Err(FrameError::Corrupt(m)) => Err(self.corrupt(pgno, start, &m)),
        }
    }

    /// After the end marker: the index must list exactly the frames read, then the trailer.
    fn finish_pages(&mut self) -> Result<()> {
        if self.header.is_snapshot() && self.prev_pgno < self.header.commit {
            let next = self.next_snapshot_pgno();
            if next <= self.header.commit {
                return Err(Error::MissingPage { pgno: next, commit: self.header.commit });
            }
        }
        let index_start = self.offset;
        let (mut entries, mut listed) = (0usize, IndexHash::default());
        loop {
            let pgno = self.read_uvarint()?;
            if pgno == 0 {
                break;
            }
            let (offset, size) = (self.read_uvarint()?, self.read_uvarint()?);
            entries += 1;
            if entries > self.frames {
                return Err(Error::CorruptIndex(format!(
                    "index lists page {pgno} beyond the {} frames read",
                    self.frames
                )));
            }
            listed.add(pgno, offset, size);
        }
        if entries != self.frames {
            return Err(Error::CorruptIndex(format!("index lists {entries} of {} pages", self.frames)));
        }
        if listed != self.expected_index {
            return Err(Error::CorruptIndex("index entries differ from the frames read (page, offset or size)".into()));
        }
        let varint_len = self.offset - index_start;
        let mut len = [0u8; 8];
        self.read_exact(&mut len, Section::Index)?;
        self.crc.update(&len);
        if u64::from_be_bytes(len) != varint_len {
            return Err(Error::CorruptIndex(format!(
                "index length field says {} bytes, index is {varint_len}",
                u64::from_be_bytes(len)
            )));
        }
        let mut tr = [0u8; TRAILER_SIZE];
        self.read_exact(&mut tr, Section::Trailer)?;
        let post = u64::from_be_bytes([tr[0], tr[1], tr[2], tr[3], tr[4], tr[5], tr[6], tr[7]]);
        let stored = u64::from_be_bytes([tr[8], tr[9], tr[10], tr[11], tr[12], tr[13], tr[14], tr[15]]);
        self.crc.update(&tr[..8]);
        let actual = self.crc.finish() | CHECKSUM_FLAG;
        if stored != actual {
            return Err(Error::ChecksumMismatch { which: ChecksumKind::File, expected: stored, actual });
        }
        if self.header.no_checksum() && post != 0 {
            return Err(Error::InvalidHeader("post-apply checksum set in a NoChecksum file".into()));
        }
        if !self.header.no_checksum() && post & CHECKSUM_FLAG == 0 {
            return Err(Error::InvalidHeader("post-apply checksum missing".into()));
        }
        let mut extra = [0u8; 1];
        if read_full(&mut self.r, &mut extra)? != 0 {
            return Err(Error::TrailingData { offset: self.offset });
        }
        self.trailer = Some(Trailer { post_apply_checksum: post, file_checksum: stored });
        Ok(())
    }

    fn read_uvarint(&mut self) -> Result<u64> {
        let mut b = [0u8; 10];
        for i in 0..b.len() {
            self.read_exact(&mut b[i..=i], Section::Index)?;
            self.crc.update(&b[i..=i]);
            if b[i] & 0x80 == 0 {
                return get_uvarint(&b[..=i])
                    .map(|(v, _)| v)
                    .ok_or_else(|| Error::CorruptIndex("varint overflows 64 bits".into()));
            }
        }
        Err(Error::CorruptIndex("varint longer than 10 bytes".into()))
    }

    fn read_exact(&mut self, buf: &mut [u8], section: Section) -> Result<()> {
        let n = read_full(&mut self.r, buf)?;
        self.offset += n as u64;
        if n < buf.len() {
            return Err(Error::Truncated { section, offset: self.offset });
        }
        Ok(())
    }

    fn corrupt(&self, pgno: u32, offset: u64, reason: &str) -> Error {
        Error::CorruptFrame { pgno, offset, reason: reason.to_string() }
    }
}

/// An order-dependent 64-bit hash of index entries (splitmix64 chaining): a structural check
/// that costs a few multiplications per page. Damage is caught by the file checksum anyway;
/// this catches an index that disagrees with the frames.
#[derive(Default, PartialEq, Eq)]
struct IndexHash(u64);

impl IndexHash {
    fn add(&mut self, pgno: u64, offset: u64, size: u64) {
        for v in [pgno, offset, size] {
            let mut z = (self.0 ^ v).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            self.0 = z ^ (z >> 31);
        }
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(n)
}

/// What [`verify`] learned about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSummary {
    /// The header.
    pub header: Header,
    /// The trailer.
    pub trailer: Trailer,
    /// Page numbers present, ascending.
    pub pgnos: Vec<u32>,
    /// Total bytes.
    pub size: u64,
}

/// Decodes a whole file and checks every structural rule and the file checksum.
pub fn verify<R: Read>(r: R) -> Result<FileSummary> {
    let mut dec = Decoder::new(r)?;
    let mut page = vec![0u8; dec.header.page_size as usize];
    let mut pgnos = Vec::new();
    while let Some(p) = dec.next_page(&mut page)? {
        pgnos.push(p);
    }
    let trailer = dec.trailer.expect("BUG: decoder finished without a trailer");
    Ok(FileSummary { header: dec.header, trailer, pgnos, size: dec.offset })
}
