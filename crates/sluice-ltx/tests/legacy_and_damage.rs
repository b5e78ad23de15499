//! The legacy page encoding (a full LZ4 frame per page, Litestream ≤ 0.5.15), re-encoding
//! fixtures, and damage anywhere in a file giving an error rather than a panic.

use std::io::Write;
use std::path::Path;

use sluice_ltx::checksum::Crc64;
use sluice_ltx::index::decode_page_frame;
use sluice_ltx::{CHECKSUM_FLAG, Decoder, Encoder, Header, TxId, verify};

/// Builds a file the way ltx v0.5.0/v0.5.1 did: page header flags 0, then an LZ4 frame.
fn legacy_file(h: Header, pages: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = h.to_bytes().to_vec();
    let mut crc = Crc64::new();
    crc.update(&out);
    let mut index = Vec::new();
    for (pgno, data) in pages {
        let off = out.len();
        let mut head = pgno.to_be_bytes().to_vec();
        head.extend_from_slice(&[0, 0]);
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(data).unwrap();
        let frame = enc.finish().unwrap();
        out.extend_from_slice(&head);
        out.extend_from_slice(&frame);
        crc.update(&head);
        crc.update(data);
        index.push((*pgno, off, 6 + frame.len()));
    }
    let mut tail = vec![0u8; 6];
    let start = tail.len();
    for (p, o, s) in index {
        for v in [p as u64, o as u64, s as u64] {
            let mut v = v;
            while v >= 0x80 {
                tail.push(v as u8 | 0x80);
                v >>= 7;
            }
            tail.push(v as u8);
        }
    }
    tail.push(0);
    let len = (tail.len() - start) as u64;
    tail.extend_from_slice(&len.to_be_bytes());
    tail.extend_from_slice(&0u64.to_be_bytes());
    crc.update(&tail);
    tail.extend_from_slice(&(crc.finish() | CHECKSUM_FLAG).to_be_bytes());
    out.extend_from_slice(&tail);
    out
}

#[test]
fn legacy_frames_decode_streaming_and_by_range() {
    for ps in [512u32, 4096, 65536] {
        let pages: Vec<(u32, Vec<u8>)> =
            (1..=3).map(|p| (p, (0..ps).map(|i| ((i / 3) as u8).wrapping_add(p as u8)).collect())).collect();
        let bytes = legacy_file(Header::new(ps, 3, TxId(1), TxId(1), 5), &pages);
        let s = verify(&bytes[..]).unwrap();
        assert_eq!(s.pgnos, vec![1, 2, 3]);
        let mut dec = Decoder::new(&bytes[..]).unwrap();
        let mut buf = vec![0u8; ps as usize];
        for (p, data) in &pages {
            assert_eq!(dec.next_page(&mut buf).unwrap(), Some(*p));
            assert_eq!(&buf, data);
        }
        // Random access through the index.
        let tail = &bytes[bytes.len().saturating_sub(1024)..];
        let sluice_ltx::index::TailIndex::Complete(idx, _) =
            sluice_ltx::index::index_from_tail(bytes.len() as u64, tail).unwrap()
        else {
            panic!("small index")
        };
        for (e, (_, data)) in idx.iter().zip(&pages) {
            decode_page_frame(&bytes[e.offset as usize..(e.offset + e.size) as usize], &mut buf).unwrap();
            assert_eq!(&buf, data);
        }
    }
}

/// Re-encoding a Litestream file's pages with our encoder gives a file that decodes to the
/// same pages and verifies; record how many are byte-identical (LZ4 compressors may differ).
#[test]
fn reencoded_fixture_files_match_pages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/litestream-0.5.17/basic/replica/ltx/0");
    let mut identical = 0;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let mut dec = Decoder::new(&bytes[..]).unwrap();
        let h = *dec.header();
        let mut enc = Encoder::new(Vec::new(), h).unwrap();
        let mut buf = vec![0u8; h.page_size as usize];
        while let Some(p) = dec.next_page(&mut buf).unwrap() {
            enc.encode_page(p, &buf).unwrap();
        }
        let (ours, _) = enc.finish(0).unwrap();
        assert_eq!(verify(&ours[..]).unwrap().pgnos, verify(&bytes[..]).unwrap().pgnos);
        identical += usize::from(ours == bytes);
        total += 1;
    }
    eprintln!("{identical}/{total} re-encoded files are byte-identical to Litestream's");
    assert!(total > 0);
}

#[test]
fn damage_anywhere_is_an_error_not_a_panic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/litestream-0.5.17/pitr/replica/ltx/0/0000000000000002-0000000000000002.ltx");
    let good = std::fs::read(path).unwrap();
    for cut in 0..good.len() {
        assert!(verify(&good[..cut]).is_err(), "truncated at {cut} verified");
    }
    // The file checksum covers decompressed pages, not LZ4 bytes, so a flip that leaves
    // every page unchanged (e.g. in a redundant LZ4 length byte) is harmless; any other flip
    // must fail.
    let pages = |b: &[u8]| -> Vec<Vec<u8>> {
        let mut dec = Decoder::new(b).unwrap();
        let mut buf = vec![0u8; dec.header().page_size as usize];
        let mut out = Vec::new();
        while dec.next_page(&mut buf).unwrap().is_some() {
            out.push(buf.clone());
        }
        out
    };
    let original = pages(&good);
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        if verify(&bad[..]).is_ok() {
            assert_eq!(pages(&bad), original, "bit flip at {i} verified but changed a page");
        }
    }
    let mut longer = good;
    longer.push(0);
    assert_eq!(verify(&longer[..]).unwrap_err().kind_name(), "trailing_data");
}
