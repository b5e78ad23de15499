//! A quiet database waits for file events instead of polling (see `fsevents`): what must still
//! happen while it waits. Commits made after it went quiet are captured and uploaded without
//! any request, and the time-based checkpoint after the last writes still runs.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_after_a_quiet_spell_are_replicated_and_the_time_based_checkpoint_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_db(&db);
    let store = memory_store();
    let client = clean_client(&store);
    // A checkpoint only by time (3 s after the last one, once something was written).
    let opts = sluice_replicate::ReplicateOptions {
        checkpoint_pages: u64::MAX,
        hard_limit_pages: u64::MAX,
        checkpoint_interval: Duration::from_secs(3),
        ..options(&db)
    };
    let running = Running::start_with(opts, client.clone());
    let app = open_writer(&db);
    app.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    let mut next = 1;
    for round in 0..3 {
        // Quiet long enough to park (the poll pace reaches its ceiling within a second).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = running.metrics.replica_txid.load(Ordering::Relaxed);
        next = insert_rows(&app, &format!("round-{round}"), next, 3);
        let uploaded =
            wait_for(Duration::from_secs(30), || running.metrics.replica_txid.load(Ordering::Relaxed) > before).await;
        assert!(uploaded, "round {round}: a commit after a quiet spell was never uploaded");
    }
    // Right after a checkpoint, one more commit: captured before the next checkpoint is due,
    // so only the time-based checkpoint of a quiet database can checkpoint it.
    let count = |r: &Running| r.metrics.checkpoints.load(Ordering::Relaxed);
    let first = count(&running);
    assert!(wait_for(Duration::from_secs(30), || count(&running) > first).await, "no checkpoint after the writes");
    let after = count(&running);
    insert_rows(&app, "last", next, 1);
    let done = wait_for(Duration::from_secs(30), || count(&running) > after).await;
    assert!(done, "no time-based checkpoint while the database was quiet");
    running.stop().await.expect("stop");
    let restored = restore_latest(&client, dir.path(), "restored.db").await;
    assert_eq!(rows(&restored), rows(&db));
}
