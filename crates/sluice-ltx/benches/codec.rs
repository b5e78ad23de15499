//! Encode and decode throughput in MB/s of page data, for 4 KiB pages of table-like data
//! and for the pages of a real database from the fixtures.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_ltx::{Decoder, Encoder, Header, TxId};

const PS: usize = 4096;

/// Pages shaped like SQLite table leaves: packed records of integers, short text and
/// numbers with the repetition real rows have, varied by a cheap PRNG.
fn table_pages(n: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let kinds = ["click", "view", "purchase", "signup", "refund"];
    (0..n)
        .map(|p| {
            let mut page = Vec::with_capacity(PS);
            page.extend_from_slice(&[0x0d, 0, 0, 0, 0, 0, 0, 0]);
            let mut id = p as u64 * 40;
            while page.len() < PS - 120 {
                id += 1;
                let r = next();
                let rec = format!(
                    "{id}|user-{}|{}|2026-11-{:02}T{:02}:{:02}:{:02}Z|{}.{:02}|{{\"sku\":\"SKU{:06}\",\"q\":{}}}",
                    r % 5000,
                    kinds[(r >> 20) as usize % kinds.len()],
                    1 + (r >> 8) % 28,
                    (r >> 13) % 24,
                    (r >> 18) % 60,
                    (r >> 24) % 60,
                    (r >> 30) % 1000,
                    (r >> 40) % 100,
                    (r >> 44) % 1_000_000,
                    (r >> 50) % 9
                );
                page.extend_from_slice(rec.as_bytes());
            }
            page.resize(PS, 0);
            page
        })
        .collect()
}

fn fixture_pages() -> Vec<Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/litestream-0.5.17/basic/expected/latest.db");
    let db = std::fs::read(path).expect("fixture database");
    db.chunks(PS).map(<[u8]>::to_vec).collect()
}

fn encode(pages: &[Vec<u8>]) -> Vec<u8> {
    let h = Header::new(PS as u32, pages.len() as u32, TxId(1), TxId(1), 0);
    let mut enc = Encoder::new(Vec::with_capacity(pages.len() * PS), h).unwrap();
    for (i, p) in pages.iter().enumerate() {
        enc.encode_page(i as u32 + 1, p).unwrap();
    }
    enc.finish(0).unwrap().0
}

fn decode(file: &[u8]) -> u64 {
    let mut dec = Decoder::new(file).unwrap();
    let mut buf = vec![0u8; PS];
    let mut sum = 0u64;
    while let Some(p) = dec.next_page(&mut buf).unwrap() {
        sum += u64::from(p) + u64::from(buf[100]);
    }
    sum
}

fn bench(c: &mut Criterion) {
    for (name, pages) in [("table_4k", table_pages(2048)), ("fixture_basic_4k", fixture_pages())] {
        let bytes = (pages.len() * PS) as u64;
        let file = encode(&pages);
        eprintln!("{name}: {} pages, compressed to {:.1}%", pages.len(), 100.0 * file.len() as f64 / bytes as f64);
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function("encode", |b| b.iter(|| black_box(encode(black_box(&pages)))));
        g.bench_function("decode_verify", |b| b.iter(|| black_box(decode(black_box(&file)))));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
