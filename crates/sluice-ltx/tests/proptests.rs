//! Property tests: encode→decode round trips and compaction ≡ sequential apply.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sluice_ltx::{Decoder, Encoder, Header, TxId, compact, lock_pgno, verify};

/// Page contents with some redundancy, like table data, but varying per seed.
fn page(ps: usize, pgno: u32, seed: u8) -> Vec<u8> {
    let mut p = vec![0u8; ps];
    for (i, b) in p.iter_mut().enumerate() {
        *b = if i % 7 < 3 { seed.wrapping_mul(31).wrapping_add(pgno as u8) } else { (i as u8) ^ seed };
    }
    p
}

fn encode(h: Header, pages: &BTreeMap<u32, Vec<u8>>) -> Vec<u8> {
    encode_mixed(h, pages, 0)
}

/// Encodes with the pages whose bit is set in `stored` (pgno modulo 64) as stored blocks.
fn encode_mixed(h: Header, pages: &BTreeMap<u32, Vec<u8>>, stored: u64) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    for (&pgno, data) in pages {
        if stored >> (pgno % 64) & 1 == 1 {
            enc.encode_page_stored(pgno, data).unwrap();
        } else {
            enc.encode_page(pgno, data).unwrap();
        }
    }
    enc.finish(0).unwrap().0
}

fn page_sizes() -> impl Strategy<Value = u32> {
    (9u32..=16).prop_map(|s| 1 << s)
}

/// A sequence of files: a snapshot, then incremental files that may grow or shrink the DB.
#[derive(Debug, Clone)]
struct Step {
    commit: u32,
    pages: BTreeMap<u32, u8>,
}

fn steps() -> impl Strategy<Value = (u32, Vec<Step>)> {
    let step = (1u32..40, proptest::collection::btree_map(1u32..40, any::<u8>(), 0..12))
        .prop_map(|(commit, pages)| Step { commit, pages: pages.into_iter().filter(|(p, _)| *p <= commit).collect() });
    (page_sizes(), 1u32..30, proptest::collection::vec(step, 0..8)).prop_map(|(ps, first_commit, rest)| {
        let snap = Step { commit: first_commit, pages: (1..=first_commit).map(|p| (p, p as u8)).collect() };
        let mut all = vec![snap];
        all.extend(rest);
        (ps, all)
    })
}

/// Makes each step valid for SQLite-like history: growth pages are written in the step
/// that grows the DB (as Litestream's "walgrowth" read guarantees).
fn normalise(steps: &mut [Step]) {
    let mut prev = 0;
    for s in steps.iter_mut() {
        for p in prev + 1..=s.commit {
            s.pages.entry(p).or_insert(p as u8 ^ 0x5a);
        }
        prev = s.commit;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(ps in page_sizes(), commit in 1u32..64, raw in proptest::collection::btree_map(1u32..64, any::<u8>(), 0..20), min in 2u64..1000, ts in any::<i64>(), stored in any::<u64>()) {
        let pages: BTreeMap<u32, Vec<u8>> = raw.into_iter().filter(|(p, _)| *p <= commit)
            .map(|(p, s)| (p, page(ps as usize, p, s))).collect();
        let h = Header::new(ps, commit, TxId(min), TxId(min + 3), ts);
        let bytes = encode_mixed(h, &pages, stored);
        let s = verify(&bytes[..]).unwrap();
        prop_assert_eq!(s.header, h);
        prop_assert_eq!(s.pgnos, pages.keys().copied().collect::<Vec<_>>());
        let mut dec = Decoder::new(&bytes[..]).unwrap();
        let mut buf = vec![0u8; ps as usize];
        for (pgno, data) in &pages {
            prop_assert_eq!(dec.next_page(&mut buf).unwrap(), Some(*pgno));
            prop_assert_eq!(&buf, data);
        }
        prop_assert_eq!(dec.next_page(&mut buf).unwrap(), None);
    }

    #[test]
    fn compaction_equals_sequential_apply((ps, mut steps) in steps(), split in 0usize..8, stored in any::<u64>()) {
        normalise(&mut steps);
        let ps_us = ps as usize;
        // Inputs mix stored and compressed blocks, as local captures and merged files do.
        let files: Vec<Vec<u8>> = steps.iter().enumerate().map(|(i, s)| {
            let txid = TxId(i as u64 + 1);
            let pages = s.pages.iter().map(|(&p, &seed)| (p, page(ps_us, p, seed))).collect();
            encode_mixed(Header::new(ps, s.commit, txid, txid, i as i64 * 1000), &pages, stored.rotate_left(i as u32))
        }).collect();

        // Reference model: apply files one by one into a map, truncating on shrink.
        let mut model: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for s in &steps {
            for (&p, &seed) in &s.pages { model.insert(p, page(ps_us, p, seed)); }
            model.retain(|&p, _| p <= s.commit);
        }

        // Compact in two stages (a tail merge first, like the level ladder), then fully.
        let split = split.min(files.len() - 1);
        let tail: Vec<Decoder<&[u8]>> = files[split..].iter().map(|f| Decoder::new(&f[..]).unwrap()).collect();
        let (tail_file, _) = compact(tail, Vec::new()).unwrap();
        let mut inputs: Vec<Decoder<&[u8]>> = files[..split].iter().map(|f| Decoder::new(&f[..]).unwrap()).collect();
        inputs.push(Decoder::new(&tail_file[..]).unwrap());
        let (merged, _) = compact(inputs, Vec::new()).unwrap();

        let mut dec = Decoder::new(&merged[..]).unwrap();
        let last = steps.len() as u64;
        prop_assert_eq!(dec.header().min_txid, TxId(1));
        prop_assert_eq!(dec.header().max_txid, TxId(last));
        prop_assert_eq!(dec.header().commit, steps[steps.len() - 1].commit);
        prop_assert_eq!(dec.header().timestamp_ms, (last as i64 - 1) * 1000);
        let mut got = BTreeMap::new();
        let mut buf = vec![0u8; ps_us];
        while let Some(p) = dec.next_page(&mut buf).unwrap() { got.insert(p, buf.clone()); }
        prop_assert_eq!(&got, &model);
        // Copied blocks and re-compressed stored ones alike: byte for byte what compressing
        // the final pages from scratch gives.
        let h = *Decoder::new(&merged[..]).unwrap().header();
        prop_assert_eq!(merged, encode(h, &model));
    }
}

#[test]
fn shrinking_and_empty_commits() {
    let ps = 512;
    let snap: BTreeMap<u32, Vec<u8>> = (1..=10).map(|p| (p, page(ps, p, 1))).collect();
    let a = encode(Header::new(ps as u32, 10, TxId(1), TxId(1), 1), &snap);
    // An incremental file with no pages that shrinks the database to 4 pages.
    let b = encode(Header::new(ps as u32, 4, TxId(2), TxId(2), 2), &BTreeMap::new());
    assert!(verify(&b[..]).unwrap().pgnos.is_empty());
    let (m, _) = compact(vec![Decoder::new(&a[..]).unwrap(), Decoder::new(&b[..]).unwrap()], Vec::new()).unwrap();
    let s = verify(&m[..]).unwrap();
    assert_eq!(s.pgnos, vec![1, 2, 3, 4]);
    assert_eq!(s.header.commit, 4);
}

#[test]
fn snapshot_skips_lock_page_and_rejects_gaps() {
    let ps = 65536u32;
    let lock = lock_pgno(ps);
    let h = Header::new(ps, lock + 1, TxId(1), TxId(1), 0);
    let data = vec![7u8; ps as usize];
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    for p in (1..=lock + 1).filter(|p| *p != lock) {
        enc.encode_page(p, &data).unwrap();
    }
    let (bytes, _) = enc.finish(0).unwrap();
    assert_eq!(verify(&bytes[..]).unwrap().pgnos.len(), lock as usize);

    let mut enc = Encoder::new(Vec::new(), Header::new(512, 3, TxId(1), TxId(1), 0)).unwrap();
    enc.encode_page(1, &[0; 512]).unwrap();
    assert_eq!(enc.encode_page(3, &[0; 512]).unwrap_err().kind_name(), "missing_page");
    let mut enc = Encoder::new(Vec::new(), Header::new(512, 3, TxId(2), TxId(2), 0)).unwrap();
    enc.encode_page(2, &[0; 512]).unwrap();
    assert_eq!(enc.encode_page(2, &[0; 512]).unwrap_err().kind_name(), "page_order");
    assert_eq!(enc.encode_page(4, &[0; 512]).unwrap_err().kind_name(), "page_out_of_range");
}

#[test]
fn merge_rejects_gaps_and_mixed_page_sizes() {
    let one: BTreeMap<u32, Vec<u8>> = [(1, page(512, 1, 1))].into();
    let a = encode(Header::new(512, 1, TxId(1), TxId(1), 0), &one);
    let c = encode(Header::new(512, 1, TxId(3), TxId(3), 0), &one);
    let err = compact(vec![Decoder::new(&a[..]).unwrap(), Decoder::new(&c[..]).unwrap()], Vec::new()).unwrap_err();
    assert_eq!(err.kind_name(), "non_contiguous_txid", "{err}");
    let big: BTreeMap<u32, Vec<u8>> = [(1, page(1024, 1, 1))].into();
    let d = encode(Header::new(1024, 1, TxId(2), TxId(2), 0), &big);
    let err = compact(vec![Decoder::new(&a[..]).unwrap(), Decoder::new(&d[..]).unwrap()], Vec::new()).unwrap_err();
    assert_eq!(err.kind_name(), "mixed_page_sizes");
}
