//! Replication (`sluice_replicate::replicate`) against a misbehaving or shared replica:
//!
//! - `idle_database_costs_no_requests`: once caught up, an idle database sends nothing.
//! - `storage_faults_lose_nothing`: transient failures and latency spikes while a writer commits;
//!   after the faults stop and a forced sync, a restore holds every committed row.
//! - `two_writers_on_one_replica_never_fork`: a second replicator on the same replica; at least
//!   one stops with `Error::Conflict` and level 0 stays one contiguous history.
//!
//! The replica is an `object_store::memory::InMemory` store, wrapped in `FaultyStore` for the
//! daemon and read directly (fault-free) for checks and restores. Every randomized test prints
//! `SEED=<n>`; rerun with `SEED=<n>`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_engine::Error;
use sluice_engine::restore::{self, RestoreOptions};
use sluice_ltx::TxId;
use sluice_storage::{FileInfo, RetryPolicy};

mod common;

use common::*;

/// Design bound for an idle database (the expectation is exactly zero):
///
/// - LIST: the daemon lists every level once at start (`ReplicaIndex::load`) and afterwards keeps
///   its in-memory index up to date from its own writes, so it never LISTs while running → 0/h.
/// - PUT (L0): an upload happens only when a sync captured new WAL frames; idle → no new local
///   L0 file → 0/h. Periodic checkpoints only copy already-captured frames into the database
///   file and produce no new L0.
/// - PUT/GET (compaction, levels 1 and 2): `compact_level` merges only source-level files newer
///   than the destination's last file, read from the index; none → skipped → 0/h.
/// - PUT (snapshot): skipped when the last snapshot already reaches the local position → 0/h.
/// - DELETE (retention): only runs after a compaction or snapshot produced a file → 0/h.
///
/// So the upper bound per hour is 0, and any request in the idle window is a defect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_database_costs_no_requests() {
    let seed = sluice_testkit::seed();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idle.db");
    create_db(&db);
    let store = memory_store();
    let (faulty, client) = faulty_client(&store, seed);
    let r = Running::start(&db, client);

    let w = open_writer(&db);
    let mut next = 1;
    for _ in 0..5 {
        next = insert_rows(&w, "idle", next, 20);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let txid = r.sync().await.expect("forced sync");
    eprintln!("forced sync reached TXID {txid}");

    // Settle: compaction (1 s, 2 s), snapshot (3 s) and checkpoints (1 s) all run on periods of
    // at most 3 s, so a quiet window longer than that means the work caused by the writes is
    // done. Give up after a few windows (the assertion below then shows what kept going).
    let settle = Instant::now();
    for _ in 0..5 {
        faulty.reset_counts();
        tokio::time::sleep(Duration::from_millis(3300)).await;
        let c = faulty.counts();
        eprintln!("settling ({:.1} s): {c:?}", settle.elapsed().as_secs_f64());
        if c.total() == 0 {
            break;
        }
    }
    eprintln!(
        "after settling: compactions={} snapshots={} checkpoints={} files_uploaded={}",
        r.metrics.compactions.load(Ordering::Relaxed),
        r.metrics.snapshots.load(Ordering::Relaxed),
        r.metrics.checkpoints.load(Ordering::Relaxed),
        r.metrics.files_uploaded.load(Ordering::Relaxed),
    );
    assert!(r.metrics.snapshots.load(Ordering::Relaxed) >= 1, "no snapshot was ever taken");
    assert!(r.metrics.compactions.load(Ordering::Relaxed) >= 2, "levels 1 and 2 were never compacted");

    faulty.reset_counts();
    let idle = Duration::from_secs(8);
    tokio::time::sleep(idle).await;
    let c = faulty.counts();
    let per_hour = c.total() as f64 * 3600.0 / idle.as_secs_f64();
    eprintln!("idle {idle:?}: {c:?} total={} (≈ {per_hour:.0} requests/hour; bound 0)", c.total());
    assert_eq!(c.total(), 0, "an idle database sent requests: {c:?}");
    assert_eq!(r.metrics.lag_seconds(now_ms()), 0.0, "idle database reports lag");

    r.stop().await.expect("clean stop");
    // The stop's final sync had nothing to upload either.
    assert_eq!(faulty.counts().put, 0, "shutdown of an idle database uploaded something: {:?}", faulty.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_faults_lose_nothing() {
    let seed = sluice_testkit::seed();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("faults.db");
    create_db(&db);
    let store = memory_store();
    let (faulty, client) = faulty_client(&store, seed);
    // No client-level retries: every injected failure reaches the replicator, whose own
    // backoff-and-retry must cope (and count it in `errors_upload`).
    let client = client.with_retry_policy(RetryPolicy::none());
    let r = Running::start(&db, client);
    // Let the first full image go up fault-free. (Waiting for the background uploader rather
    // than forcing a sync: a forced sync racing the uploader is its own bug, see
    // `forced_sync_never_conflicts_with_background_upload`.)
    assert!(
        wait_for(Duration::from_secs(10), || r.metrics.replica_txid.load(Ordering::Relaxed) > 0).await,
        "first upload did not happen"
    );

    faulty.set_transient_failure_rate(0.2);
    faulty.set_latency(Duration::ZERO, 0.2, Duration::from_millis(500));
    let writer = Writer::start(&db, "f", Duration::from_millis(5));
    let started = Instant::now();
    let mut max_lag = 0.0f64;
    // At least 3 s of writes; keep going (up to 20 s) until faults have provably hit uploads.
    while started.elapsed() < Duration::from_secs(3)
        || (r.metrics.errors_upload.load(Ordering::Relaxed) == 0 && started.elapsed() < Duration::from_secs(20))
    {
        max_lag = max_lag.max(r.metrics.lag_seconds(now_ms()));
        assert!(!r.task.is_finished(), "replicate stopped during the fault episode");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let committed = writer.finish();
    let during = faulty.counts();
    faulty.set_transient_failure_rate(0.0);
    faulty.set_latency(Duration::ZERO, 0.0, Duration::ZERO);
    eprintln!(
        "fault episode {:.1} s: committed={committed} max_lag={max_lag:.3}s errors_upload={} errors_compaction={} \
         errors_sync={} requests={during:?}",
        started.elapsed().as_secs_f64(),
        r.metrics.errors_upload.load(Ordering::Relaxed),
        r.metrics.errors_compaction.load(Ordering::Relaxed),
        r.metrics.errors_sync.load(Ordering::Relaxed),
    );

    // Catch-up happens on its own once the faults stop (the uploader's backoff is at most a
    // few sync intervals here); then the forced sync finds nothing left and cannot race it.
    let caught_up = Instant::now();
    assert!(
        wait_for(Duration::from_secs(30), || r.metrics.lag_seconds(now_ms()) == 0.0).await,
        "lag did not return to 0 within 30 s of the faults stopping"
    );
    eprintln!("caught up {:.2} s after the faults stopped", caught_up.elapsed().as_secs_f64());
    let txid = r.sync().await.expect("forced sync after the faults stopped");
    eprintln!("forced sync after faults reached TXID {txid}");
    let lag_after = r.metrics.lag_seconds(now_ms());
    let errors_upload = r.metrics.errors_upload.load(Ordering::Relaxed);
    // A checkpoint may capture a last file right after the forced sync; the uploader ships it
    // within a sync interval, after which the gauges agree.
    let gauges_agree = wait_for(Duration::from_secs(10), || {
        r.metrics.replica_txid.load(Ordering::Relaxed) == r.metrics.local_txid.load(Ordering::Relaxed)
    })
    .await;
    let replica_txid = r.metrics.replica_txid.load(Ordering::Relaxed);
    let local_txid = r.metrics.local_txid.load(Ordering::Relaxed);
    assert!(gauges_agree || local_txid == replica_txid);
    r.stop().await.expect("clean stop after catch-up");

    assert!(errors_upload > 0, "no upload error was counted: faults never hit");
    assert!(max_lag > 0.0, "lag was never observed above 0 during the fault episode");
    assert_eq!(lag_after, 0.0, "lag did not return to 0 after catch-up");

    let clean = clean_client(&store);
    assert_level0_contiguous(&clean).await;
    let out = restore_latest(&clean, dir.path(), "restored.db").await;
    assert_eq!(sluice_testkit::hash::integrity_check(&out), "ok");
    let got = rows(&out);
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    let want: Vec<u64> = (1..=committed).collect();
    assert_eq!(ids.len(), want.len(), "restored {} rows, committed {committed}", ids.len());
    assert_eq!(ids, want, "restored ids differ from the committed ones");
    assert_eq!(
        sluice_testkit::hash::logical_sha256(&out),
        sluice_testkit::hash::logical_sha256(&db),
        "restored content differs from the source database"
    );
    // After catch-up the gauges must agree: everything captured locally is in the replica.
    assert_eq!(
        local_txid, replica_txid,
        "after a forced sync sluice_local_txid ({local_txid}) != sluice_replica_txid ({replica_txid})"
    );
}

/// `Request::Sync` (what `sluice sync` sends) while the background uploader is busy: both must
/// not upload the same pending files. A daemon must never report a conflict with itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_sync_never_conflicts_with_background_upload() {
    let seed = sluice_testkit::seed();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("race.db");
    create_db(&db);
    let store = memory_store();
    // A little latency widens the window in which both upload paths are in flight.
    let (faulty, client) = faulty_client(&store, seed);
    faulty.set_latency(Duration::from_millis(20), 0.0, Duration::ZERO);
    let r = Running::start(&db, client);
    let writer = Writer::start(&db, "r", Duration::from_millis(2));
    let mut results = Vec::new();
    for _ in 0..30 {
        results.push(r.sync().await.map_err(|e| e.to_string()));
        if r.task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    let committed = writer.finish();
    let finished_early = r.task.is_finished();
    let end = r.stop().await;
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "{} forced syncs, {} failed; committed={committed}; stopped early: {finished_early}; end: {end:?}",
        results.len(),
        errors.len()
    );
    for e in errors.iter().take(3) {
        eprintln!("  sync error: {e}");
    }
    assert!(errors.is_empty(), "forced syncs failed while the daemon was the only writer: {errors:?}");
    assert!(!finished_early, "replicate stopped by itself: {end:?}");
    end.expect("clean stop");
    let clean = clean_client(&store);
    assert_level0_contiguous(&clean).await;
    let out = restore_latest(&clean, dir.path(), "restored.db").await;
    assert_eq!(rows(&out).len() as u64, committed);
}

fn is_conflict(r: &sluice_engine::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(Error::Conflict { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_replica_never_fork() {
    let dir = tempfile::tempdir().unwrap();
    let (db1, db2) = (dir.path().join("one.db"), dir.path().join("two.db"));
    create_db(&db1);
    create_db(&db2);
    let store = memory_store();
    let a = Running::start(&db1, clean_client(&store));
    let w1 = open_writer(&db1);
    let w2 = open_writer(&db2);
    let mut next1 = insert_rows(&w1, "a", 1, 10);
    let t = a.sync().await.expect("A's first sync");
    eprintln!("A replicated to TXID {t}");

    let b = Running::start(&db2, clean_client(&store));
    let mut next2 = insert_rows(&w2, "b", 1, 10);
    let mut outcomes: Vec<String> = Vec::new();
    let mut conflicts = 0;
    for round in 0..6 {
        next1 = insert_rows(&w1, "a", next1, 5);
        next2 = insert_rows(&w2, "b", next2, 5);
        let (ra, rb) = (a.sync().await, b.sync().await);
        conflicts += usize::from(is_conflict(&ra)) + usize::from(is_conflict(&rb));
        outcomes.push(format!("round {round}: A {ra:?} | B {rb:?}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (a_done, b_done) = (a.task.is_finished(), b.task.is_finished());
    let (ra, rb) = (a.stop().await, b.stop().await);
    for o in &outcomes {
        eprintln!("{o}");
    }
    eprintln!("A stopped on its own: {a_done}, result {ra:?}");
    eprintln!("B stopped on its own: {b_done}, result {rb:?}");
    conflicts += usize::from(is_conflict(&ra)) + usize::from(is_conflict(&rb));
    assert!(conflicts > 0, "neither replicator reported Error::Conflict");
    assert!(is_conflict(&ra) || is_conflict(&rb), "no replicator stopped with Error::Conflict (A: {ra:?}, B: {rb:?})");

    let clean = clean_client(&store);
    assert_level0_contiguous(&clean).await;
    let out = restore_latest(&clean, dir.path(), "restored.db").await;
    assert_eq!(sluice_testkit::hash::integrity_check(&out), "ok");
    let got = rows(&out);
    let tags: std::collections::BTreeSet<&str> = got.iter().map(|(_, v)| v.split('-').next().unwrap()).collect();
    eprintln!("restored {} rows from writer(s) {tags:?}", got.len());
    assert!(tags.len() <= 1, "restored database mixes rows of both sources: {tags:?}");
    // Whichever source it is, it must be a prefix of that source's committed rows.
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "restored ids are not a prefix 1..N");
}

/// Local captures hold stored (uncompressed) pages to save a compression per capture; the
/// uploader must compress them: no page of any uploaded file may be stored. Rows of repeated
/// text compress well, and checkpoints (one every 1000 frames) give captures of every kind:
/// regular syncs, the read-ahead of checkpoints, and merges of several of them per upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_pages_are_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_db(&db);
    let store = memory_store();
    let client = clean_client(&store);
    let r = Running::start(&db, client.clone());
    let writer = Writer::start(&db, "compressible", Duration::ZERO);
    let enough = wait_for(Duration::from_secs(30), || r.metrics.checkpoints.load(Ordering::Relaxed) >= 3).await;
    let last = writer.finish();
    assert!(enough, "fewer than 3 checkpoints in 30 s");
    r.sync().await.unwrap();
    r.stop().await.unwrap();

    let mut checked = 0;
    for level in [0u8, 1, 2, 9] {
        for f in client.list_level(level).await.unwrap() {
            let bytes = client.get(level, f.min_txid, f.max_txid).await.unwrap();
            let mut dec = sluice_ltx::Decoder::new(&bytes[..]).unwrap();
            let ps = dec.header().page_size as usize;
            let mut page = vec![0u8; ps];
            while let Some(pgno) = dec.next_page(&mut page).unwrap() {
                let block = dec.last_block().expect("Sluice writes LZ4 blocks").len();
                assert!(block < ps, "L{level} {}-{}: page {pgno} uploaded uncompressed", f.min_txid, f.max_txid);
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no pages were uploaded");
    let restored = restore_latest(&client, dir.path(), "restored.db").await;
    assert_eq!(rows(&restored).len() as u64, last, "restore lacks committed rows");
}

/// Periodic snapshots are merged from the replica's own files (the previous snapshot and the
/// chain after it): each one alone restores exactly the state that the older snapshot plus
/// the chain restore at the same TXID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_snapshots_equal_the_chain_they_replace() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_db(&db);
    let store = memory_store();
    let client = clean_client(&store);
    let r = Running::start(&db, client.clone());
    let writer = Writer::start(&db, "snap", Duration::from_millis(2));
    // The snapshot interval is 3 s: wait for two snapshots after the first image.
    let enough = wait_for(Duration::from_secs(30), || r.metrics.snapshots.load(Ordering::Relaxed) >= 3).await;
    writer.finish();
    assert!(enough, "fewer than 3 snapshots in 30 s");
    r.sync().await.unwrap();
    r.stop().await.unwrap();

    let mut snapshots = client.list_level(9).await.unwrap();
    snapshots.sort_by_key(|f| std::cmp::Reverse(f.max_txid));
    let merged: Vec<FileInfo> = snapshots.into_iter().filter(|f| f.max_txid > TxId(1)).collect();
    assert!(merged.len() >= 2, "expected periodic snapshots past the first image: {merged:?}");
    for (i, snap) in merged.iter().enumerate() {
        let opts = RestoreOptions { target: restore::Target::Txid(snap.max_txid), ..RestoreOptions::default() };
        let from_snap = dir.path().join(format!("snap-{i}.db"));
        let s = restore::restore(&client, &from_snap, &opts).await.unwrap();
        assert_eq!(
            (s.plan.len(), s.plan[0].level),
            (1, 9),
            "restore to {} should use its snapshot alone",
            snap.max_txid
        );
        // Without it, the same TXID comes from an older snapshot and the chain.
        client.delete(std::slice::from_ref(snap)).await.unwrap();
        let from_chain = dir.path().join(format!("chain-{i}.db"));
        let s = restore::restore(&client, &from_chain, &opts).await.unwrap();
        assert!(s.plan.len() > 1, "restore to {} without its snapshot used {:?}", snap.max_txid, s.plan);
        let got = rows(&from_snap);
        assert!(!got.is_empty());
        assert_eq!(got, rows(&from_chain), "snapshot {} differs from the chain it replaces", snap.max_txid);
        let c = rusqlite::Connection::open(&from_snap).unwrap();
        assert_eq!(c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
    }
}
