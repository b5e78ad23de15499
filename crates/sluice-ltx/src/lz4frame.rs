//! Decoding one legacy page: a complete LZ4 *frame* (ltx v0.5.0/v0.5.1, Litestream ≤ 0.5.15).
//!
//! The frame carries no length prefix, so the reader must walk it to find its end. We parse
//! the frame format directly and decompress each block with `lz4_flex`'s block decoder:
//! lz4_flex's own frame reader may read ahead past the frame's end into the next page.
//! Header and content checksums (xxHash) are skipped: the LTX file checksum covers the
//! decompressed page anyway.

use std::io::Read;

const FRAME_MAGIC: u32 = 0x184D_2204;

/// Why a legacy frame could not be decoded.
#[derive(Debug)]
pub(crate) enum FrameError {
    Io(std::io::Error),
    Corrupt(String),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

fn corrupt<T>(msg: impl Into<String>) -> Result<T, FrameError> {
    Err(FrameError::Corrupt(msg.into()))
}

/// Reads one LZ4 frame from `r` into `out`, which it must fill exactly. Returns the number
/// of bytes the frame occupied.
pub(crate) fn read_frame<R: Read>(r: &mut R, out: &mut [u8], block: &mut Vec<u8>) -> Result<u64, FrameError> {
    let mut fixed = [0u8; 6];
    r.read_exact(&mut fixed)?;
    if u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]) != FRAME_MAGIC {
        return corrupt("missing LZ4 frame magic");
    }
    let (flg, bd) = (fixed[4], fixed[5]);
    if flg >> 6 != 0b01 || flg & 0b10 != 0 || bd & 0x8f != 0 {
        return corrupt("unsupported LZ4 frame descriptor");
    }
    let block_checksum = flg & 0x10 != 0;
    let content_checksum = flg & 0x04 != 0;
    let max_block = match (bd >> 4) & 0x7 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return corrupt("invalid LZ4 block max size"),
    };
    // Optional content size (8), dictionary ID (4), then the header checksum byte.
    let extra = if flg & 0x08 != 0 { 8 } else { 0 } + if flg & 0x01 != 0 { 4 } else { 0 } + 1;
    let mut skip = [0u8; 13];
    r.read_exact(&mut skip[..extra])?;
    let mut used = (6 + extra) as u64;
    let mut pos = 0usize;
    loop {
        let mut word = [0u8; 4];
        r.read_exact(&mut word)?;
        used += 4;
        let word = u32::from_le_bytes(word);
        if word == 0 {
            break;
        }
        let len = (word & 0x7fff_ffff) as usize;
        if len > max_block {
            return corrupt(format!("LZ4 block of {len} bytes exceeds the frame's maximum"));
        }
        block.resize(len, 0);
        r.read_exact(block)?;
        used += len as u64;
        if block_checksum {
            r.read_exact(&mut word.to_le_bytes())?;
            used += 4;
        }
        if word & 0x8000_0000 != 0 {
            let Some(dst) = out.get_mut(pos..pos + len) else {
                return corrupt("LZ4 frame decompresses past the page size");
            };
            dst.copy_from_slice(block);
            pos += len;
        } else {
            // Linked blocks may refer back into earlier output, so pass it as the dictionary.
            let (done, rest) = out.split_at_mut(pos);
            let n = lz4_flex::block::decompress_into_with_dict(block, rest, done)
                .map_err(|e| FrameError::Corrupt(format!("LZ4 block: {e}")))?;
            pos += n;
        }
    }
    if content_checksum {
        let mut c = [0u8; 4];
        r.read_exact(&mut c)?;
        used += 4;
    }
    if pos != out.len() {
        return corrupt(format!("LZ4 frame holds {pos} bytes, page size is {}", out.len()));
    }
    Ok(used)
}
