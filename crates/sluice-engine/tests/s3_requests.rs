//! What the writer asks of a real S3 server (moto), requests counted.
//!
//! The lease: taking a free lease and renewing it cost one request each; a lease left by a
//! crash is taken back by the same writer; a takeover by another writer is noticed at the
//! next renewal; a live lease refuses a second writer, naming it. The first snapshot: a
//! server-side copy of the first level-0 file, timestamp metadata included.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt;
use sluice_engine::Error;
use sluice_engine::write::SNAPSHOT_LEVEL;
use sluice_engine::write::lease::Lease;
use sluice_ltx::TxId;
use sluice_storage::{FaultyStore, ReplicaClient, StoreKind};
use sluice_testkit::s3;

const TTL: Duration = Duration::from_secs(600);

/// A client of `url` whose requests go through a counting `FaultyStore`.
macro_rules! counted {
    ($url:expr) => {{
        let plain = ReplicaClient::from_url($url).unwrap();
        let faulty = FaultyStore::new(plain.store().clone(), 1);
        let prefix: &str = plain.prefix().as_ref();
        (ReplicaClient::new(Arc::new(faulty.clone()), StoreKind::S3, prefix), faulty)
    }};
}

async fn acquire(client: &ReplicaClient, meta: &Path) -> sluice_engine::Result<Lease> {
    Lease::acquire(client, meta, &meta.join("app.db"), TTL).await
}

#[tokio::test]
async fn the_lease_costs_one_request_to_take_and_to_renew() {
    let url = s3::s3_url(&s3::new_bucket("lease"), "db");
    let tmp = tempfile::tempdir().unwrap();
    let (meta_a, meta_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (client, faulty) = counted!(&url);

    let mut lease = acquire(&client, &meta_a).await.unwrap();
    let c = faulty.counts();
    assert_eq!((c.put, c.get, c.head, c.list), (1, 0, 0, 0), "a free lease is one create-only PUT: {c:?}");
    faulty.reset_counts();
    lease.renew_now().await.unwrap();
    let c = faulty.counts();
    assert_eq!((c.put, c.get), (1, 0), "a renewal is one conditional PUT: {c:?}");

    // A second writer is refused while the lease is live, and told whose it is.
    match acquire(&client, &meta_b).await {
        Err(Error::Conflict { reason, .. }) => assert!(reason.contains("app.db"), "{reason}"),
        other => panic!("a second writer was not refused: {:?}", other.map(|_| ())),
    }

    // A crash leaves the lease behind: the same writer (same meta directory) takes it back.
    drop(lease);
    faulty.reset_counts();
    let mut again = acquire(&client, &meta_a).await.unwrap();
    let c = faulty.counts();
    assert_eq!((c.put, c.get), (2, 1), "a lease left behind: create refused, read, conditional PUT: {c:?}");
    again.renew_now().await.unwrap();

    // Another writer overwrites the lease (it took over an expired one): the next renewal
    // fails instead of overwriting it back.
    let key = object_store::path::Path::from(format!("{}/{}", client.prefix().as_ref(), "sluice-lease.json"));
    let other = br#"{"writer":"0123456789abcdef0123456789abcdef","host":"elsewhere","pid":1,"db":"/other.db","expires_ms":99999999999999}"#;
    client.store().put(&key, other.to_vec().into()).await.unwrap();
    match again.renew_now().await {
        Err(Error::Conflict { reason, .. }) => assert!(reason.contains("/other.db"), "{reason}"),
        other => panic!("a lease taken over was renewed: {:?}", other.map(|_| ())),
    }

    // A clean release deletes it: the next start takes it with one request again.
    client.store().delete(&key).await.unwrap();
    let third = acquire(&client, &meta_b).await.unwrap();
    third.release_ref().await;
    faulty.reset_counts();
    acquire(&client, &meta_a).await.unwrap();
    assert_eq!(faulty.counts().put, 1);
}

#[tokio::test]
async fn the_first_snapshot_is_a_server_side_copy_with_the_timestamp() {
    let url = s3::s3_url(&s3::new_bucket("copy"), "db");
    let tmp = tempfile::tempdir().unwrap();
    let (client, faulty) = counted!(&url);
    let path = tmp.path().join("first.ltx");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let ts = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
    client.put_file(0, TxId(1), TxId(1), &path, ts).await.unwrap();
    faulty.reset_counts();
    let copied = client.copy_file(0, SNAPSHOT_LEVEL, (TxId(1), TxId(1)), data.len() as u64, ts).await.unwrap();
    let c = faulty.counts();
    assert_eq!((copied, c.copy, c.put), (true, 1, 0), "one copy request, nothing sent: {c:?}");
    assert_eq!(client.get(SNAPSHOT_LEVEL, TxId(1), TxId(1)).await.unwrap(), data);
    let snaps = client.list_level_with_timestamps(SNAPSHOT_LEVEL).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].created_at, ts, "the copy keeps litestream-timestamp");
}
