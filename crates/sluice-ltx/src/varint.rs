//! Unsigned LEB128 varints (Go's `binary.AppendUvarint`), used by the page index.

/// Appends `v` as a uvarint.
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a uvarint from the front of `b`: `(value, bytes used)`, or `None` if `b` ends first
/// or the value overflows 64 bits.
pub fn get_uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let part = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None;
        }
        v |= part << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for v in [0u64, 1, 127, 128, 260, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            assert_eq!(get_uvarint(&b), Some((v, b.len())));
        }
        let mut b = Vec::new();
        put_uvarint(&mut b, 260);
        assert_eq!(b, [0x84, 0x02]);
        assert_eq!(get_uvarint(&[0x80]), None);
    }
}
