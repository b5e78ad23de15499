//! Shaped inputs: random page sets across a run of files; compaction must equal applying
//! the files in order (the same model as the property test, explored by coverage).
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sluice_ltx::{compact, Decoder, Encoder, Header, TxId};

#[derive(Arbitrary, Debug)]
struct File {
    commit: u8,
    pages: Vec<(u8, u8)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    page_shift: u8,
    files: Vec<File>,
}

fuzz_target!(|input: Input| {
    let ps = 1u32 << (9 + input.page_shift % 8);
    let mut files = Vec::new();
    let mut model: BTreeMap<u32, u8> = BTreeMap::new();
    let mut prev_commit = 0u32;
    for (i, f) in input.files.iter().take(6).enumerate() {
        let commit = u32::from(f.commit % 32) + 1;
        let mut pages: BTreeMap<u32, u8> = f.pages.iter().map(|&(p, v)| (u32::from(p % 32) + 1, v)).collect();
        pages.retain(|p, _| *p <= commit);
        let from = if i == 0 { 1 } else { prev_commit + 1 };
        for p in from..=commit {
            pages.entry(p).or_insert(p as u8);
        }
        prev_commit = commit;
        let txid = TxId(i as u64 + 1);
        let mut enc = Encoder::new(Vec::new(), Header::new(ps, commit, txid, txid, i as i64)).unwrap();
        for (&p, &v) in &pages {
            enc.encode_page(p, &vec![v; ps as usize]).unwrap();
        }
        files.push(enc.finish(0).unwrap().0);
        model.extend(pages);
        model.retain(|p, _| *p <= commit);
    }
    if files.is_empty() {
        return;
    }
    let decs = files.iter().map(|f| Decoder::new(&f[..]).unwrap()).collect();
    let (out, _) = compact(decs, Vec::new()).unwrap();
    let mut dec = Decoder::new(&out[..]).unwrap();
    let mut buf = vec![0u8; ps as usize];
    let mut got = BTreeMap::new();
    while let Some(p) = dec.next_page(&mut buf).unwrap() {
        got.insert(p, buf[0]);
    }
    assert_eq!(got, model);
});
