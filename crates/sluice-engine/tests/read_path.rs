//! The VFS's read path without FFI (`sluice_engine::read`), on the real Litestream fixtures:
//!
//! * every restore Litestream performed on the fixtures (latest, each TXID, each timestamp)
//!   is matched byte for byte by reading every page of the corresponding view, and every
//!   failed one fails as a view too;
//! * polling: files appearing after the open extend the view (or re-plan it across a gap),
//!   and each new view reads as the restore at its TXID; a view taken before keeps its pages;
//! * a full scan of 3,000 pages costs a few requests, not one per page;
//! * faults: with 20% of requests failing, reads give errors or the right page, never a wrong
//!   one; a stalled store gives `ReadTimeout` within the deadline and reads work again after.

mod common;

use common::{copy_file, faulty_client, image, restored_sha_at, target_of};
use std::path::Path;
use std::time::Duration;

use sluice_engine::read::{ReadOptions, Replica};
use sluice_engine::restore::Target;
use sluice_ltx::TxId;
use sluice_storage::ReplicaClient;
use sluice_testkit::fixtures::{all_fixture_names, copy_replica_to, load_manifest};
use sluice_testkit::hash::sha256_hex;
use sluice_testkit::process::wait_until;

/// The remote read path itself: no automatic hydration (tested on its own below).
fn opts() -> ReadOptions {
    ReadOptions { poll_interval: Duration::from_millis(50), auto_hydrate_bytes: 0, ..ReadOptions::default() }
}

fn file_client(dir: &Path) -> ReplicaClient {
    ReplicaClient::from_url(&format!("file://{}", dir.display())).unwrap()
}

#[test]
fn every_fixture_view_reads_as_litestreams_restore() {
    let (mut ok, mut failed) = (0, 0);
    for name in all_fixture_names() {
        let tmp = tempfile::tempdir().unwrap();
        let replica = copy_replica_to(&name, tmp.path().join("replica"));
        let r = Replica::open(file_client(&replica), opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in &load_manifest(&name).restores {
            let view = r.view_at(target_of(case));
            if case.succeeded() {
                let v = view.unwrap_or_else(|e| panic!("{name} {}: {e}", case.label));
                let want = case.result.as_ref().unwrap();
                assert_eq!(sha256_hex(&image(&r, &v)), want.db_sha256, "{name} {}", case.label);
                ok += 1;
            } else {
                assert!(view.is_err(), "{name} {}: Litestream failed ({:?}), the view did not", case.label, case.error);
                failed += 1;
            }
        }
    }
    eprintln!("{ok} views matched restores, {failed} failed as Litestream's restores did");
    assert!(ok > 100 && failed > 10, "{ok} ok, {failed} failed");
}

#[test]
fn polling_extends_the_view_and_old_views_keep_their_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let full = copy_replica_to("basic", tmp.path().join("full"));
    let live = tmp.path().join("live");
    let l0 = |t: u64| format!("ltx/0/{t:016x}-{t:016x}.ltx");
    copy_file(&full, &live, "ltx/9/0000000000000001-0000000000000001.ltx");
    for t in 1..=2 {
        copy_file(&full, &live, &l0(t));
    }
    let r = Replica::open(file_client(&live), opts()).unwrap();
    let first = r.latest();
    assert_eq!(first.txid, TxId(2));
    let first_image = image(&r, &first);
    assert_eq!(sha256_hex(&first_image), restored_sha_at("basic", 2));

    // New files continue the chain: the poller extends the view.
    copy_file(&full, &live, &l0(3));
    assert!(wait_until(Duration::from_secs(10), || r.latest().txid == TxId(3)), "poll did not see TXID 3");
    assert_eq!(sha256_hex(&image(&r, &r.latest())), restored_sha_at("basic", 3));
    // A view taken earlier still reads as its own TXID (a read transaction's view).
    assert_eq!(image(&r, &first), first_image);

    // A gap in level 0 (4 missing, 5 and 6 there) with level 1 covering 1-4: re-planned.
    copy_file(&full, &live, "ltx/1/0000000000000001-0000000000000004.ltx");
    for t in 5..=6 {
        copy_file(&full, &live, &l0(t));
    }
    assert!(wait_until(Duration::from_secs(10), || r.latest().txid == TxId(6)), "poll did not re-plan to TXID 6");
    assert_eq!(sha256_hex(&image(&r, &r.latest())), restored_sha_at("basic", 6));
    assert!(r.lag().is_some_and(|l| l < Duration::from_secs(10)));
}

/// A replica holding one snapshot of `pages` pages of `page_size` bytes (each page filled
/// with bytes derived from its number): big enough to tell a scan's cost.
fn snapshot_replica(dir: &Path, pages: u32, page_size: u32) {
    let path = dir.join("ltx/9/0000000000000001-0000000000000001.ltx");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let header = sluice_ltx::Header::new(page_size, pages, TxId(1), TxId(1), 1_764_000_000_000);
    let mut enc = sluice_ltx::Encoder::new(std::fs::File::create(&path).unwrap(), header).unwrap();
    let lock = sluice_ltx::lock_pgno(page_size);
    for p in (1..=pages).filter(|p| *p != lock) {
        let page: Vec<u8> = (0..page_size).map(|i| (p.wrapping_mul(31) ^ (i / 64)) as u8).collect();
        enc.encode_page(p, &page).unwrap();
    }
    enc.finish(0).unwrap();
}

#[test]
fn a_full_scan_costs_a_few_requests_not_one_per_page() {
    let tmp = tempfile::tempdir().unwrap();
    snapshot_replica(tmp.path(), 3000, 4096);
    let (client, faulty) = faulty_client(tmp.path(), 1, 6);
    let r = Replica::open(client, opts()).unwrap();
    let v = r.latest();
    faulty.reset_counts();
    let got = image(&r, &v);
    let gets = faulty.counts().get_range;
    eprintln!("{} pages read with {gets} ranged GETs", v.commit);
    assert_eq!(v.commit, 3000);
    assert!(gets <= 20, "{gets} GETs for {} pages", v.commit);
    let page = |p: usize| &got[(p - 1) * 4096..p * 4096];
    assert!(page(1234).iter().enumerate().all(|(i, b)| *b == (1234u32.wrapping_mul(31) ^ (i as u32 / 64)) as u8));
}

#[test]
fn the_open_takes_two_requests_per_file_and_brings_page_one_along() {
    let tmp = tempfile::tempdir().unwrap();
    snapshot_replica(tmp.path(), 3000, 4096);
    let (client, faulty) = faulty_client(tmp.path(), 1, 6);
    let r = Replica::open(client, opts()).unwrap();
    let size = std::fs::metadata(tmp.path().join("ltx/9/0000000000000001-0000000000000001.ltx")).unwrap().len();
    assert!(size > 200 << 10, "the snapshot is read in parts, not whole: {size} bytes");
    assert_eq!(faulty.counts().get_range, 2, "its first bytes and its tail, in parallel");
    let v = r.latest();
    let mut buf = vec![0u8; 4096];
    for p in [1, 2, 3] {
        r.read_page(&v, p, &mut buf).unwrap();
        assert!(buf.iter().enumerate().all(|(i, b)| *b == (p.wrapping_mul(31) ^ (i as u32 / 64)) as u8));
    }
    assert_eq!(faulty.counts().get_range, 2, "the first pages came with the open's reads");
}

#[test]
fn random_reads_fetch_the_block_around_them() {
    let tmp = tempfile::tempdir().unwrap();
    snapshot_replica(tmp.path(), 3000, 4096);
    let (client, faulty) = faulty_client(tmp.path(), 1, 6);
    let r = Replica::open(client, opts()).unwrap();
    let v = r.latest();
    faulty.reset_counts();
    let mut buf = vec![0u8; 4096];
    let mut blocks = std::collections::BTreeSet::new();
    for i in 0..300u32 {
        // Far apart, never sequential: every read is a random one.
        let pgno = (i * 7919) % 3000 + 1;
        r.read_page(&v, pgno, &mut buf).unwrap();
        assert!(buf.iter().enumerate().all(|(j, b)| *b == (pgno.wrapping_mul(31) ^ (j as u32 / 64)) as u8));
        blocks.insert((pgno - 1) / 16);
    }
    let gets = faulty.counts().get_range;
    eprintln!("300 random reads in {} blocks of 16 pages: {gets} ranged GETs", blocks.len());
    assert!(gets <= blocks.len() as u64, "at most one request per block: {gets} for {} blocks", blocks.len());
    assert!(gets < 300);
}

#[test]
fn a_database_read_again_and_again_is_hydrated_automatically() {
    let tmp = tempfile::tempdir().unwrap();
    snapshot_replica(tmp.path(), 3000, 4096);
    let (client, faulty) = faulty_client(tmp.path(), 1, 6);
    let o = ReadOptions { auto_hydrate_bytes: 64 << 20, ..opts() };
    let r = Replica::open(client, o).unwrap();
    let v = r.latest();
    let mut buf = vec![0u8; 4096];
    let check =
        |p: u32, buf: &[u8]| buf.iter().enumerate().all(|(i, b)| *b == (p.wrapping_mul(31) ^ (i as u32 / 64)) as u8);
    assert_eq!(r.hydration_progress(), None, "no hydration before reads keep going to storage");
    for i in 0..100u32 {
        let pgno = (i * 7919) % 3000 + 1;
        r.read_page(&v, pgno, &mut buf).unwrap();
        assert!(check(pgno, &buf));
    }
    assert!(r.hydration_progress().is_some(), "random reads started hydration");
    assert!(wait_until(Duration::from_secs(30), || r.hydration_progress() == Some(100)), "hydration completed");
    faulty.reset_counts();
    for pgno in (1..=3000).step_by(7) {
        r.read_page(&v, pgno, &mut buf).unwrap();
        assert!(check(pgno, &buf), "page {pgno}");
    }
    let c = faulty.counts();
    assert_eq!(c.get + c.get_range, 0, "reads are local now: {c:?}");

    // Larger than the limit: never.
    let (client, _) = faulty_client(tmp.path(), 1, 6);
    let r = Replica::open(client, ReadOptions { auto_hydrate_bytes: 1 << 20, ..opts() }).unwrap();
    for i in 0..100u32 {
        r.read_page(&v, (i * 7919) % 3000 + 1, &mut buf).unwrap();
    }
    assert_eq!(r.hydration_progress(), None, "a 12 MB database is past a 1 MB limit");
}

#[test]
fn faults_give_errors_never_wrong_pages_and_reads_recover() {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let replica = copy_replica_to("compacted", tmp.path().join("replica"));
    let want = {
        let r = Replica::open(file_client(&replica), opts()).unwrap();
        image(&r, &r.latest())
    };
    // No retries: faults reach the reader.
    let (client, faulty) = faulty_client(&replica, seed, 1);
    // No cache either: the open reads small files whole, which would otherwise serve every page.
    let o = ReadOptions { read_timeout: Duration::from_millis(500), cache_bytes: 0, ..opts() };
    let r = Replica::open(client, o).unwrap();
    let v = r.latest();
    let ps = v.page_size as usize;
    let mut buf = vec![0u8; ps];

    faulty.set_transient_failure_rate(0.2);
    let (mut good, mut errors) = (0, 0);
    for round in 0..3u32 {
        for p in 1..=v.commit {
            // Random-ish order so the cache and read-ahead do not hide every fault.
            let pgno = (p * 7919 + round * 31) % v.commit + 1;
            match r.read_page(&v, pgno, &mut buf) {
                Ok(()) => {
                    let at = (pgno as usize - 1) * ps;
                    assert_eq!(&buf[..], &want[at..at + ps], "page {pgno} read wrong under faults (SEED={seed})");
                    good += 1;
                }
                Err(_) => errors += 1,
            }
        }
    }
    eprintln!("under 20% faults: {good} pages right, {errors} errors, none wrong");
    assert!(good > 0 && errors > 0, "both outcomes happen (SEED={seed})");

    // A store that stalls past the deadline: a timeout, not a hang.
    faulty.set_transient_failure_rate(0.0);
    faulty.set_latency(Duration::from_secs(3), 0.0, Duration::ZERO);
    let fresh = Replica::open(file_client(&replica), opts()).unwrap(); // a cache-cold reader for the recovery check
    let cold = r.view_at(Target::Txid(TxId(1)));
    assert!(
        matches!(cold, Err(sluice_engine::Error::ReadTimeout { .. })),
        "a stalled store times out: {:?}",
        cold.map(|v| v.txid)
    );
    faulty.set_latency(Duration::ZERO, 0.0, Duration::ZERO);
    assert_eq!(image(&r, &v), want, "reads work again once storage recovers");
    assert_eq!(image(&fresh, &fresh.latest()), want);
}
