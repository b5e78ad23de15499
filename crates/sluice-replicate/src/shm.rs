//! Reading SQLite's WAL index (the `-shm` file): which page each committed frame holds,
//! without reading the frames. SQLite keeps it up to date for every connection; reading it
//! costs 4 bytes per frame where verifying the WAL costs a whole page.
//!
//! ```text
//! 0     index header, copy 1 (48): version | – | change | init | be-cksum | page size |
//!       mxFrame | nPage | frame checksum (2) | salts (2) | header checksum (2)
//! 48    index header, copy 2 (48), written before copy 1
//! 96    checkpoint info (40)
//! 136   page numbers of frames 1..=4062 (u32 each), then a hash table
//! 32 KiB × k: page numbers of the next 4096 frames, then a hash table
//! ```
//! Integers are in the machine's byte order, except the salts (copied from the WAL header).
//! SQLite writes a frame to the WAL and its page number to the index before publishing the
//! new `mxFrame` in the header, so every frame the header counts is in both.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::wal::checksum;

const HEADER_SIZE: usize = 48;
const VERSION: u32 = 3_007_000;
/// Bytes before the first page number.
const INDEX_HEADER_SIZE: u64 = 136;
/// Size of one hash block (page numbers, then the hash table).
const BLOCK_SIZE: u64 = 32 * 1024;
/// Frames whose page numbers the first block holds (the index header takes the rest).
const FIRST_BLOCK_FRAMES: u64 = 4096 - INDEX_HEADER_SIZE / 4;
/// Frames of every later block.
const BLOCK_FRAMES: u64 = 4096;

/// A consistent snapshot of the index header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexHeader {
    /// Last committed frame (1-based; 0 when the generation has none).
    pub max_frame: u64,
    /// Database size in pages after that commit.
    pub db_pages: u32,
    /// WAL checksum chain at `max_frame`.
    pub frame_checksum: (u32, u32),
    /// Salts of the WAL generation.
    pub salts: (u32, u32),
}

#[allow(clippy::host_endian_bytes)] // the index is in the machine's byte order
fn ne32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Reads the header; `None` if it is not initialised or stays torn (SQLite writing it while
/// we read) over a few attempts.
pub fn read_header(shm: &File) -> io::Result<Option<IndexHeader>> {
    let mut b = [0u8; 2 * HEADER_SIZE];
    for _ in 0..8 {
        match shm.read_exact_at(&mut b, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (h1, h2) = b.split_at(HEADER_SIZE);
        // isInit, and both copies equal with a valid checksum (as SQLite's own readers check).
        if h1 != h2 || ne32(h1, 0) != VERSION || h1[12] == 0 {
            std::thread::yield_now();
            continue;
        }
        // The index header's own checksum is in native byte order.
        if checksum(cfg!(target_endian = "big"), &h1[..40], (0, 0)) != (ne32(h1, 40), ne32(h1, 44)) {
            std::thread::yield_now();
            continue;
        }
        return Ok(Some(IndexHeader {
            max_frame: u64::from(ne32(h1, 16)),
            db_pages: ne32(h1, 20),
            frame_checksum: (ne32(h1, 24), ne32(h1, 28)),
            salts: (be32(h1, 32), be32(h1, 36)),
        }));
    }
    Ok(None)
}

/// Frames of the current generation already copied into the database file (the checkpoint
/// info's `nBackfill`); `None` if the index is too short to hold it.
pub fn read_backfill(shm: &File) -> io::Result<Option<u64>> {
    let mut b = [0u8; 4];
    match shm.read_exact_at(&mut b, 2 * HEADER_SIZE as u64) {
        Ok(()) => Ok(Some(u64::from(ne32(&b, 0)))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Offset in the index of frame `frame`'s page number (frames are 1-based).
fn pgno_offset(frame: u64) -> u64 {
    if frame <= FIRST_BLOCK_FRAMES {
        INDEX_HEADER_SIZE + 4 * (frame - 1)
    } else {
        let i = frame - FIRST_BLOCK_FRAMES - 1;
        (i / BLOCK_FRAMES + 1) * BLOCK_SIZE + 4 * (i % BLOCK_FRAMES)
    }
}

/// Page numbers of frames `first..=last`, in frame order. A zero means the index was being
/// rewritten under us (a WAL restart): the caller must not trust the read.
pub fn read_pgnos(shm: &File, first: u64, last: u64) -> io::Result<Vec<u32>> {
    let mut out = Vec::with_capacity(last.saturating_sub(first) as usize + 1);
    let mut buf = Vec::new();
    let mut frame = first;
    while frame <= last {
        // Frames up to the end of this block are contiguous in the index.
        let block_end = if frame <= FIRST_BLOCK_FRAMES {
            FIRST_BLOCK_FRAMES
        } else {
            let i = frame - FIRST_BLOCK_FRAMES - 1;
            frame + (BLOCK_FRAMES - 1 - i % BLOCK_FRAMES)
        };
        let n = (block_end.min(last) - frame + 1) as usize;
        buf.resize(4 * n, 0);
        shm.read_exact_at(&mut buf, pgno_offset(frame))?;
        out.extend(buf.chunks_exact(4).map(|c| ne32(c, 0)));
        frame += n as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_sqlite_layout() {
        assert_eq!(pgno_offset(1), 136);
        assert_eq!(pgno_offset(FIRST_BLOCK_FRAMES), 136 + 4 * 4061);
        assert_eq!(pgno_offset(FIRST_BLOCK_FRAMES + 1), 32 * 1024);
        assert_eq!(pgno_offset(FIRST_BLOCK_FRAMES + 4096), 32 * 1024 + 4 * 4095);
        assert_eq!(pgno_offset(FIRST_BLOCK_FRAMES + 4097), 64 * 1024);
    }

    /// Agrees with reading the WAL itself, across index blocks, for a WAL written by SQLite.
    #[test]
    fn agrees_with_the_wal() {
        use crate::wal::{self, FRAME_HEADER_SIZE, WAL_HEADER_SIZE};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);").unwrap();
        for i in 0..3000 {
            c.execute("INSERT INTO t VALUES (randomblob(?1))", [100 + i % 3000]).unwrap();
        }
        let shm = File::open(dir.path().join("t.db-shm")).unwrap();
        let walf = File::open(dir.path().join("t.db-wal")).unwrap();
        let h = read_header(&shm).unwrap().unwrap();
        let wh = wal::read_header(&walf).unwrap().unwrap();
        assert!(h.max_frame > FIRST_BLOCK_FRAMES + 10, "test needs frames in a second block");
        let scan = wal::scan(&walf, &wh, WAL_HEADER_SIZE, wh.checksum, None).unwrap();
        assert_eq!(h.salts, (wh.salt1, wh.salt2));
        assert_eq!(h.frame_checksum, scan.checksum);
        assert_eq!(h.db_pages, scan.commit);
        assert_eq!(WAL_HEADER_SIZE + h.max_frame * wh.frame_size(), scan.end);
        let pgnos = read_pgnos(&shm, 1, h.max_frame).unwrap();
        assert_eq!(pgnos.len() as u64, h.max_frame);
        let mut fh = [0u8; FRAME_HEADER_SIZE as usize];
        for (i, p) in pgnos.iter().enumerate() {
            walf.read_exact_at(&mut fh, WAL_HEADER_SIZE + i as u64 * wh.frame_size()).unwrap();
            assert_eq!(*p, be32(&fh, 0), "frame {}", i + 1);
        }
        // A range starting mid-block.
        assert_eq!(read_pgnos(&shm, 4000, 4100).unwrap(), pgnos[3999..4100].to_vec());
    }
}
