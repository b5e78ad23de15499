//! Hydration without FFI (`sluice_engine::read::Hydration`), on the real Litestream fixtures:
//!
//! * a cold fill reaches 100 %, then every page reads as Litestream's restore at that TXID
//!   with no request at all;
//! * new files after the cutover are applied with at most one GET each, and each new state
//!   reads as the restore at its TXID, while a view taken before keeps its own pages;
//! * 8 threads reading across the cutover always see one TXID's pages;
//! * a kept file is reused at the next open (only the newer files are fetched), rejected
//!   after the replica was replaced by another database, and locked against a second user.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{copy_file, faulty_client, image, restored_sha_at};
use sluice_engine::read::{Hydration, ReadOptions, Replica};
use sluice_ltx::TxId;
use sluice_storage::ReplicaClient;
use sluice_testkit::fixtures::{copy_replica_to, load_manifest};
use sluice_testkit::hash::sha256_hex;
use sluice_testkit::process::wait_until;

fn opts() -> ReadOptions {
    ReadOptions { poll_interval: Duration::from_millis(50), ..ReadOptions::default() }
}

fn l0(t: u64) -> String {
    format!("ltx/0/{t:016x}-{t:016x}.ltx")
}

/// `basic` up to TXID `upto`: its snapshot and level-0 files.
fn partial_basic(full: &Path, live: &Path, upto: u64) {
    copy_file(full, live, "ltx/9/0000000000000001-0000000000000001.ltx");
    for t in 1..=upto {
        copy_file(full, live, &l0(t));
    }
}

fn wait_hydrated(r: &Replica) {
    assert!(wait_until(Duration::from_secs(30), || r.hydration_progress() == Some(100)), "hydration never completed");
}

#[test]
fn a_hydrated_reader_reads_locally_and_applies_new_files_with_one_request_each() {
    let tmp = tempfile::tempdir().unwrap();
    let full = copy_replica_to("basic", tmp.path().join("full"));
    let live = tmp.path().join("live");
    partial_basic(&full, &live, 2);
    let (client, counted) = faulty_client(&live, 1, 3);
    let r = Replica::open_hydrated(client, opts(), &Hydration::Temp).unwrap();
    let before = r.latest();
    wait_hydrated(&r);
    counted.reset_counts();
    assert_eq!(sha256_hex(&image(&r, &r.latest())), restored_sha_at("basic", 2));
    let c = counted.counts();
    assert_eq!(c.get + c.get_range, 0, "every page is local after the cutover: {c:?}");

    for t in 3..=6 {
        counted.reset_counts();
        copy_file(&full, &live, &l0(t));
        assert!(wait_until(Duration::from_secs(10), || r.latest().txid == TxId(t)), "poll did not see TXID {t}");
        // Applied once the reads are local again: no request for any page.
        assert!(
            wait_until(Duration::from_secs(10), || {
                let v = r.latest();
                let before = counted.counts();
                let mut buf = vec![0u8; v.page_size as usize];
                (1..=v.commit).all(|p| r.read_page(&v, p, &mut buf).is_ok())
                    && counted.counts().get_range == before.get_range
                    && counted.counts().get == before.get
            }),
            "TXID {t} was never served locally"
        );
        let c = counted.counts();
        assert!(c.get + c.get_range <= 1, "one new file costs at most one GET: {c:?}");
        assert_eq!(sha256_hex(&image(&r, &r.latest())), restored_sha_at("basic", t), "TXID {t}");
    }
    // A view from before the cutover reads its own pages (from the replica).
    assert_eq!(sha256_hex(&image(&r, &before)), restored_sha_at("basic", 2));
}

#[test]
fn eight_readers_crossing_the_cutover_see_one_txid_each() {
    let tmp = tempfile::tempdir().unwrap();
    let full = copy_replica_to("basic", tmp.path().join("full"));
    let live = tmp.path().join("live");
    partial_basic(&full, &live, 3);
    let wants: Vec<String> = (0..=6).map(|t| if t < 3 { String::new() } else { restored_sha_at("basic", t) }).collect();
    let (client, _) = faulty_client(&live, 1, 3);
    let r = Replica::open_hydrated(client, opts(), &Hydration::Temp).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (r, stop, wants) = (r.clone(), stop.clone(), wants.clone());
            std::thread::spawn(move || {
                let mut checked = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v = r.latest();
                    assert_eq!(sha256_hex(&image(&r, &v)), wants[v.txid.0 as usize], "TXID {}", v.txid);
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    wait_hydrated(&r);
    for t in 4..=6 {
        copy_file(&full, &live, &l0(t));
        assert!(wait_until(Duration::from_secs(10), || r.latest().txid == TxId(t)));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: usize = readers.into_iter().map(|t| t.join().expect("reader")).sum();
    assert!(total >= 8, "{total} images checked");
}

#[test]
fn a_kept_file_is_reused_rejected_after_a_new_history_and_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let full = copy_replica_to("basic", tmp.path().join("full"));
    let live = tmp.path().join("live");
    partial_basic(&full, &live, 4);
    let kept = Hydration::Kept(tmp.path().join("hydrated.db"));
    {
        let (client, _) = faulty_client(&live, 1, 3);
        let r = Replica::open_hydrated(client, opts(), &kept).unwrap();
        wait_hydrated(&r);
        let (other, _) = faulty_client(&live, 1, 3);
        let second = Replica::open_hydrated(other, opts(), &kept);
        assert!(
            matches!(second, Err(sluice_engine::Error::HydrationInUse { holder, .. }) if holder.starts_with("this process")),
            "a second user of the kept file is refused, and told it is this process: {:?}",
            second.err()
        );
    }

    let path = tmp.path().join("hydrated.db");
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    let first_inode = inode();

    // Reopened with two newer files: only those (and the open's index reads) are fetched.
    for t in 5..=6 {
        copy_file(&full, &live, &l0(t));
    }
    let (client, counted) = faulty_client(&live, 1, 3);
    let r = Replica::open_hydrated(client, opts(), &kept).unwrap();
    wait_hydrated(&r);
    let fetched = counted.counts();
    let open_reads = 1 + 6; // the snapshot's and each level-0 file's indexes (small files: whole)
    assert!(fetched.get + fetched.get_range <= open_reads + 2, "a warm open fetches only the newer files: {fetched:?}");
    counted.reset_counts();
    assert_eq!(sha256_hex(&image(&r, &r.latest())), restored_sha_at("basic", 6));
    assert_eq!(counted.counts().get_range + counted.counts().get, 0, "and reads locally");
    assert_eq!(inode(), first_inode, "the kept file was reused, not restored again");
    drop(r);

    // The replica replaced by another database: the kept file is rebuilt, never served.
    std::fs::remove_dir_all(&live).unwrap();
    let other = copy_replica_to("compacted", tmp.path().join("other"));
    copy_dir(&other, &live);
    let (client, _) = faulty_client(&live, 1, 3);
    let r = Replica::open_hydrated(client, opts(), &kept).unwrap();
    wait_hydrated(&r);
    assert_ne!(inode(), first_inode, "the kept file was rebuilt");
    let v = r.latest();
    let want = load_manifest("compacted");
    let latest = want.restores.iter().find(|c| c.succeeded() && c.txid_arg() == Some(v.txid.0));
    if let Some(case) = latest {
        assert_eq!(sha256_hex(&image(&r, &v)), case.result.as_ref().unwrap().db_sha256);
    }
    let plain = Replica::open(ReplicaClient::from_url(&format!("file://{}", live.display())).unwrap(), opts()).unwrap();
    assert_eq!(image(&r, &v), image(&plain, &plain.latest()), "the rebuilt copy is the new database");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
