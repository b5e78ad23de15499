//! Local files awaiting upload that go missing (deleted from the meta directory during an
//! outage). They no longer continue the replica, and uploading what is left would leave a gap
//! that breaks every restore past it. Without `auto-recover` replication stops with an error
//! that names the directory and the missing TXIDs, and the replica keeps one unbroken
//! history; a restart then starts a new snapshot. With it, the local state is reset and the
//! database's current content starts a new snapshot without a stop. Either way the replica
//! restores every committed row and level 0 stays contiguous.
//!
//! The replica is an in-memory store behind `FaultyStore`, whose transient failure rate is
//! the outage switch.

use std::path::Path;
use std::time::Duration;

use sluice_engine::Error;
use sluice_ltx::TxId;
use sluice_storage::{ReplicaClient, RetryPolicy};

mod common;

use common::*;

/// Local level-0 files after the replica's end, by min TXID.
fn pending_files(meta: &Path, after: u64) -> Vec<(u64, std::path::PathBuf)> {
    let mut out: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(meta.join("ltx").join("0"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let min = u64::from_str_radix(name.strip_suffix(".ltx")?.split('-').next()?, 16).ok()?;
                    (min > after).then(|| (min, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn run(auto_recover: bool) {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    create_db(&db);
    let store = memory_store();
    let (faulty, client) = faulty_client(&store, seed);
    let client = client.with_retry_policy(RetryPolicy::none());
    let opts = sluice_replicate::ReplicateOptions { auto_recover, ..options(&db) };
    let meta = opts.meta_dir.clone();
    let running = Running::start_with(opts, client);
    let app = open_writer(&db);
    let mut next = insert_rows(&app, "before", 1, 5);
    let synced = running.sync().await.unwrap();

    // Storage goes away; each transaction is captured into its own local file.
    faulty.set_transient_failure_rate(1.0);
    for _ in 0..4 {
        next = insert_rows(&app, "during", next, 1);
        let want = pending_files(&meta, synced.0).len() + 1;
        assert!(
            wait_for(Duration::from_secs(30), || pending_files(&meta, synced.0).len() >= want).await,
            "no local file captured the transaction"
        );
    }
    // The files go missing: the first pending one (a gap right after the replica's end)
    // without auto-recover, a middle one with it.
    let pending = pending_files(&meta, synced.0);
    let (gone_txid, gone) = pending[if auto_recover { 2 } else { 0 }].clone();
    std::fs::remove_file(&gone).unwrap();
    faulty.set_transient_failure_rate(0.0);

    let direct = clean_client(&store);
    if !auto_recover {
        let ended = tokio::time::timeout(Duration::from_secs(60), running.task).await.expect("replication stops");
        match ended.expect("no panic") {
            Err(Error::LocalState { dir, reason }) => {
                assert!(dir.starts_with(&meta), "{}", dir.display());
                assert!(reason.contains(&TxId(gone_txid).to_string()), "the missing TXID is named: {reason}");
            }
            other => panic!("expected a local-state error, got {other:?} (SEED={seed})"),
        }
        let files = assert_level0_contiguous(&direct).await;
        assert!(files.iter().all(|f| f.max_txid < TxId(gone_txid)), "nothing past the gap was uploaded");
        let out = restore_latest(&direct, tmp.path(), "stopped.db").await;
        assert!(synced_rows(&out) >= 5, "the rows synced before the outage restore");
        assert_eq!(rows(&out), rows_of(&db, synced_rows(&out)), "the replica restores a prefix");
        // A restart finds local files that do not continue the replica: a new snapshot.
        let opts = sluice_replicate::ReplicateOptions { auto_recover, ..options(&db) };
        let again = Running::start_with(opts, clean_client(&store));
        next = insert_rows(&app, "restarted", next, 2);
        let txid = again.sync().await.unwrap_or_else(|e| panic!("sync after the restart: {e} (SEED={seed})"));
        assert!(txid > synced);
        assert_restores_every_row(&direct, tmp.path(), &db, next - 1, seed).await;
        again.stop().await.unwrap();
        return;
    }

    // Auto-recover: replication goes on from a new snapshot and holds every row.
    next = insert_rows(&app, "after", next, 3);
    // A sync request may meet the failing session as it ends: ask again until one answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let txid = loop {
        match running.sync().await {
            Ok(t) if t > synced => break t,
            r => assert!(std::time::Instant::now() < deadline, "no sync after auto-recover: {r:?} (SEED={seed})"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(txid > synced);
    assert_restores_every_row(&direct, tmp.path(), &db, next - 1, seed).await;
    running.stop().await.unwrap();
}

/// Level 0 is one unbroken history and the latest restore holds the source's `n` rows.
async fn assert_restores_every_row(direct: &ReplicaClient, dir: &Path, db: &Path, n: u64, seed: u64) {
    assert_level0_contiguous(direct).await;
    let out = restore_latest(direct, dir, "restored.db").await;
    assert_eq!(rows(&out), rows(db), "every committed row restores (SEED={seed})");
    assert_eq!(rows(&out).len() as u64, n);
}

/// The source's rows with id ≤ `n`.
fn rows_of(db: &Path, n: u64) -> Vec<(u64, String)> {
    rows(db).into_iter().filter(|(id, _)| *id <= n).collect()
}

/// The highest id in a restored database.
fn synced_rows(out: &Path) -> u64 {
    rows(out).last().map_or(0, |(id, _)| *id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_local_files_stop_replication_with_a_clear_error() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_local_files_with_auto_recover_start_a_new_snapshot() {
    run(true).await;
}
