//! Replication never idles silently: committed WAL frames it cannot capture are an error,
//! counted, retried, and after `stall_timeout` the replication of that database stops with
//! the reason (the daemon then reports it and exits non-zero).

mod common;

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use sluice_engine::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_capture_failure_stops_replication_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_db(&db);
    let store = memory_store();
    let opts = sluice_replicate::ReplicateOptions { stall_timeout: Duration::from_secs(2), ..options(&db) };
    let running = Running::start_with(opts, clean_client(&store));
    let app = open_writer(&db);
    app.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
    let next = insert_rows(&app, "before", 1, 5);
    running.sync().await.expect("first sync");

    // The WAL header's checksum overwritten: SQLite keeps committing through its WAL index,
    // the replicator can no longer read the WAL.
    let wal = std::fs::OpenOptions::new().write(true).open(dir.path().join("app.db-wal")).unwrap();
    wal.write_all_at(&[0xff; 8], 24).unwrap();
    insert_rows(&app, "after", next, 5);

    let metrics = running.metrics.clone();
    let result = tokio::time::timeout(Duration::from_secs(60), running.task)
        .await
        .expect("replication must stop by itself once the stall outlasts stall_timeout")
        .expect("replicate task panicked");
    match result {
        Err(Error::Uncaptured { db: failed, reason }) => {
            assert_eq!(failed, db);
            assert!(reason.contains("WAL header is not readable"), "reason: {reason}");
        }
        other => panic!("expected Error::Uncaptured, got {other:?}"),
    }
    assert!(metrics.errors_capture.load(Ordering::Relaxed) >= 1, "capture errors are counted");
}
