//! Retry behaviour through FaultyStore.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use sluice_ltx::TxId;

use crate::{Fault, FaultConfig, FaultyStore, OpKind, ReplicaClient, RetryPolicy, StoreKind, seed_from_env};

fn fast() -> RetryPolicy {
    RetryPolicy { max_attempts: 6, base: Duration::from_millis(1), cap: Duration::from_millis(5) }
}

fn faulty(seed: u64) -> (FaultyStore<InMemory>, ReplicaClient) {
    let store = FaultyStore::new(InMemory::new(), seed);
    let client = ReplicaClient::new(Arc::new(store.clone()), StoreKind::S3, "db").with_retry_policy(fast());
    (store, client)
}

#[tokio::test]
async fn retries_ride_through_20_percent_transient_failures() {
    let (store, client) = faulty(seed_from_env(0x5eed));
    store.set_transient_failure_rate(0.2);
    for i in 1..=40u64 {
        let data = Bytes::from(format!("file {i}"));
        client.put(0, TxId(i), TxId(i), data.clone(), Utc::now()).await.expect("put");
        assert_eq!(client.get(0, TxId(i), TxId(i)).await.expect("get"), data);
    }
    let files = client.list_level_with_timestamps(0).await.expect("list");
    assert_eq!(files.len(), 40);
    client.delete(&files).await.expect("delete");
    let counts = store.counts();
    // 40 puts + 40 gets + 40 heads + 40 deletes + 1 list succeeded, plus the retries.
    assert!(counts.total() > 161, "expected retries, got {counts:?}");
    assert!(counts.put >= 40 && counts.get >= 40 && counts.head >= 40 && counts.delete >= 40);
    store.set_transient_failure_rate(0.0);
    assert!(client.list_level(0).await.expect("list").is_empty());
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let (store, client) = faulty(1);
    client.put(0, TxId(1), TxId(1), Bytes::from_static(b"x"), Utc::now()).await.expect("put");
    store.reset_counts();
    store.fail_nth(OpKind::Get, 1, Fault::PermissionDenied);
    let err = client.get(0, TxId(1), TxId(1)).await.expect_err("denied");
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("access denied"), "{err}");
    assert_eq!(store.counts().get, 1, "a 403 must not be retried");
    let missing = client.get(0, TxId(5), TxId(5)).await.expect_err("missing");
    assert!(missing.is_not_found());
    assert_eq!(store.counts().get, 2, "a 404 must not be retried");
    // Transient failures are retried until the policy gives up: exactly max_attempts requests.
    store.set_transient_failure_rate(1.0);
    let err = client.size(0, TxId(1), TxId(1)).await.expect_err("always failing");
    assert!(err.is_retryable());
    assert_eq!(store.counts().head, 6);
}

#[tokio::test]
async fn lost_put_response_is_reconciled() {
    let (store, client) = faulty(2);
    store.fail_nth(OpKind::Put, 1, Fault::LostResponse);
    let data = Bytes::from_static(b"landed");
    client.put(0, TxId(1), TxId(2), data.clone(), Utc::now()).await.expect("put succeeds on retry");
    assert_eq!(store.counts().put, 2);
    assert_eq!(client.get(0, TxId(1), TxId(2)).await.expect("get"), data);
}

#[tokio::test]
async fn corrupt_mode_changes_bytes() {
    let (store, client) = faulty(3);
    let data = Bytes::from(vec![7u8; 64]);
    client.put(0, TxId(1), TxId(1), data.clone(), Utc::now()).await.expect("put");
    store.set_corrupt_reads(true);
    let got = client.get(0, TxId(1), TxId(1)).await.expect("get");
    assert_eq!(got.len(), data.len());
    assert_eq!(got.iter().zip(data.iter()).filter(|(a, b)| a != b).count(), 1);
    let range = client.get_range(0, TxId(1), TxId(1), 0..8).await.expect("range");
    assert_ne!(range, data.slice(0..8));
}

#[tokio::test]
async fn stream_resumes_after_truncated_bodies() {
    let (store, client) = faulty(seed_from_env(4));
    let data = Bytes::from((0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    client.put(9, TxId(1), TxId(9), data.clone(), Utc::now()).await.expect("put");
    store.set_config(FaultConfig { truncate_reads_rate: 0.5, ..FaultConfig::default() });
    for _ in 0..10 {
        let chunks: Vec<Bytes> = client.get_stream(9, TxId(1), TxId(9)).try_collect().await.expect("stream");
        assert_eq!(chunks.concat(), data.to_vec());
    }
    assert!(store.counts().get_range > 0, "expected resumed range reads: {:?}", store.counts());
}

#[tokio::test]
async fn latency_knob_and_list_faults() {
    let (store, client) = faulty(5);
    store.set_latency(Duration::from_millis(2), 0.5, Duration::from_millis(5));
    store.fail_nth(OpKind::List, 1, Fault::Transient);
    assert!(client.list_level(0).await.expect("list retried").is_empty());
    assert_eq!(store.counts().list, 2);
}
