//! Every file Litestream 0.5.17 wrote in the fixtures decodes and matches its manifest;
//! every corrupt file fails with the error the manifest names; applying a replica's files
//! in plan order reproduces Litestream's restore byte for byte.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_ltx::index::{TailIndex, decode_page_frame, index_from_tail};
use sluice_ltx::{DatabaseChecksum, Decoder, TxId, verify};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/litestream-0.5.17")
}

fn manifest(name: &str) -> Value {
    let text = fs::read_to_string(fixtures().join(name).join("manifest.json")).expect("read manifest");
    serde_json::from_str(&text).expect("parse manifest")
}

const REPLICAS: &[&str] = &["basic", "pitr", "compacted", "pagesize-1024", "pagesize-65536", "shrink", "vfs-write"];

fn hex64(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().expect("hex string"), 16).expect("hex")
}

fn expand_ranges(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

#[test]
fn every_fixture_file_decodes_and_matches_manifest() {
    let mut checked = 0;
    for name in REPLICAS {
        let m = manifest(name);
        for f in m["ltx_files"].as_array().unwrap() {
            let path = fixtures().join(name).join("replica").join(f["path"].as_str().unwrap());
            let bytes = fs::read(&path).unwrap();
            let s = verify(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let h = &f["header"];
            assert_eq!(s.header.flags as u64, h["flags"].as_u64().unwrap());
            assert_eq!(s.header.page_size as u64, h["page_size"].as_u64().unwrap());
            assert_eq!(s.header.commit as u64, h["commit"].as_u64().unwrap());
            assert_eq!(s.header.min_txid.to_string(), h["min_txid"].as_str().unwrap());
            assert_eq!(s.header.max_txid, h["max_txid"].as_str().unwrap().parse::<TxId>().unwrap());
            assert_eq!(s.header.timestamp_ms, h["timestamp_ms"].as_i64().unwrap());
            assert_eq!(s.header.wal_offset, h["wal_offset"].as_i64().unwrap());
            assert_eq!(s.header.wal_size, h["wal_size"].as_i64().unwrap());
            assert_eq!(format!("{:08x}", s.header.wal_salt1), h["wal_salt1"].as_str().unwrap());
            assert_eq!(format!("{:08x}", s.header.wal_salt2), h["wal_salt2"].as_str().unwrap());
            assert_eq!(s.trailer.file_checksum, hex64(&f["file_checksum"]));
            assert_eq!(s.trailer.post_apply_checksum, 0);
            assert_eq!(s.pgnos, expand_ranges(f["pgnos"].as_str().unwrap()));
            assert_eq!(s.size, f["size"].as_u64().unwrap());
            check_random_access(&bytes, f);
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} files checked");
}

/// The page index read from the tail serves every page identically to the streaming decoder,
/// and the XOR of page checksums matches the manifest's independent computation.
fn check_random_access(bytes: &[u8], f: &Value) {
    let tail = &bytes[bytes.len().saturating_sub(32 << 10)..];
    let TailIndex::Complete(index, _) = index_from_tail(bytes.len() as u64, tail).unwrap() else {
        panic!("fixture index fits in 32 KiB")
    };
    let idx_start = index.len(); // silence unused warnings on empty files
    assert_eq!(idx_start, f["page_count"].as_u64().unwrap() as usize);
    let mut dec = Decoder::new(bytes).unwrap();
    let ps = dec.header().page_size as usize;
    let (mut a, mut b) = (vec![0u8; ps], vec![0u8; ps]);
    let mut sum = DatabaseChecksum::new();
    for e in &index {
        let pgno = dec.next_page(&mut a).unwrap().unwrap();
        assert_eq!(pgno, e.pgno);
        let frame = &bytes[e.offset as usize..(e.offset + e.size) as usize];
        assert_eq!(decode_page_frame(frame, &mut b).unwrap(), e.pgno);
        assert_eq!(a, b);
        sum.add(pgno, &a);
    }
    assert_eq!(dec.next_page(&mut a).unwrap(), None);
    assert_eq!(sum.value(), hex64(&f["xor_of_page_checksums"]) | (1 << 63));
    let loc = sluice_ltx::index::locate_index(bytes.len() as u64, tail).unwrap();
    assert_eq!(loc.range.start, f["page_index_offset"].as_u64().unwrap());
    assert_eq!(loc.range.end - loc.range.start, f["page_index_size"].as_u64().unwrap());
}

#[test]
fn corrupt_fixtures_fail_with_named_error() {
    let m = manifest("corrupt");
    let mut failures = 0;
    for c in m["cases"].as_array().unwrap() {
        let Some(file) = c["corrupted_file"].as_str() else { continue };
        let want = c["expected_decoder_error"].as_str().unwrap();
        let bytes = fs::read(fixtures().join("corrupt").join(file)).unwrap();
        let err = verify(&bytes[..]).expect_err(file);
        assert_eq!(err.kind_name(), want, "{file}: {err}");
        failures += 1;
    }
    assert_eq!(failures, 6);
}

/// Minimal apply: later pages win, truncate to the last file's commit. The manifest's plan for
/// every successful restore must reproduce Litestream's output sha256.
#[test]
fn applying_plans_reproduces_litestream_restores() {
    let mut compared = 0;
    for name in REPLICAS {
        let m = manifest(name);
        for r in m["restores"].as_array().unwrap() {
            if r["rc"].as_i64() != Some(0) {
                continue;
            }
            let mut db: Vec<u8> = Vec::new();
            let mut commit = 0usize;
            let mut ps = 0usize;
            for p in r["plan"].as_array().unwrap() {
                let p = p.as_str().unwrap();
                let bytes = fs::read(fixtures().join(name).join("replica/ltx").join(p)).unwrap();
                let mut dec = Decoder::new(&bytes[..]).unwrap();
                ps = dec.header().page_size as usize;
                commit = dec.header().commit as usize;
                let mut page = vec![0u8; ps];
                while let Some(pgno) = dec.next_page(&mut page).unwrap() {
                    let off = (pgno as usize - 1) * ps;
                    if db.len() < off + ps {
                        db.resize(off + ps, 0);
                    }
                    db[off..off + ps].copy_from_slice(&page);
                }
            }
            db.resize(commit * ps, 0);
            let got = hex::encode(Sha256::digest(&db));
            assert_eq!(got, r["result"]["db_sha256"].as_str().unwrap(), "{name} {}", r["label"]);
            compared += 1;
        }
    }
    assert!(compared > 50, "only {compared} restores compared");
}
