//! `put_file` (single PUT and multipart) and `get_to_file`.

use std::path::{Path as StdPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{Attribute, GetOptions, ObjectStore};
use sluice_ltx::TxId;

use crate::{
    FaultConfig, FaultyStore, MULTIPART_PART_SIZE, MULTIPART_THRESHOLD, OpKind, ReplicaClient, RetryPolicy, StoreKind,
    TIMESTAMP_METADATA, seed_from_env,
};

/// 20 MiB and a bit: three parts (8 + 8 + 4 MiB), the last one short and unaligned.
const LARGE: usize = 20 * 1024 * 1024 + 123;

fn ts() -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000, 250_000_000).single().expect("valid timestamp")
}

fn fast(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, base: Duration::from_millis(1), cap: Duration::from_millis(5) }
}

/// Deterministic non-repeating bytes, so a misplaced or duplicated part cannot go unnoticed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_file(dir: &StdPath, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write source file");
    path
}

fn faulty_memory(kind: StoreKind, seed: u64) -> (FaultyStore<InMemory>, ReplicaClient) {
    let store = FaultyStore::new(InMemory::new(), seed);
    let client = ReplicaClient::new(Arc::new(store.clone()), kind, "db").with_retry_policy(fast(6));
    (store, client)
}

/// `LocalFileSystem` rooted at `root`, as the file backend lays it out, behind a FaultyStore.
fn faulty_local(root: &StdPath, seed: u64) -> (FaultyStore<LocalFileSystem>, ReplicaClient) {
    std::fs::create_dir_all(root).expect("root dir");
    let fs = LocalFileSystem::new_with_prefix(root).expect("local fs").with_fsync(true);
    let store = FaultyStore::new(fs, seed);
    let client = ReplicaClient::new(Arc::new(store.clone()), StoreKind::File, "")
        .with_retry_policy(fast(6))
        .with_local_root(root.to_path_buf());
    (store, client)
}

/// Names in the directory of the level-9 file `1-9` (staging files would show up here).
fn level9_entries(root: &StdPath) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("ltx/9"))
        .expect("level dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const NAME: &str = "0000000000000001-0000000000000009.ltx";

async fn stored_timestamp(store: &dyn ObjectStore, client: &ReplicaClient) -> Option<String> {
    let key = client.key(9, TxId(1), TxId(9));
    let head = store.get_opts(&key, GetOptions { head: true, ..GetOptions::default() }).await.expect("head");
    head.attributes.get(&Attribute::Metadata(TIMESTAMP_METADATA.into())).map(|v| v.to_string())
}

#[tokio::test]
async fn small_file_goes_through_single_create_only_put() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(100_000, 1);
    let src = write_file(dir.path(), "small.ltx", &data);
    let (store, client) = faulty_memory(StoreKind::S3, 1);
    let n = client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("put_file");
    assert_eq!(n, data.len() as u64);
    let counts = store.counts();
    assert_eq!((counts.put, counts.head), (1, 0), "one create-only PUT, no HEAD: {counts:?}");
    assert_eq!(client.get(9, TxId(1), TxId(9)).await.expect("get"), data);
    assert_eq!(stored_timestamp(store.inner(), &client).await.as_deref(), Some("2023-11-14T22:13:20.25Z"));
    // The same bytes again count as uploaded (a retry after a lost response); other bytes
    // under the same name are refused.
    assert_eq!(client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("idempotent"), n);
    let other = dir.path().join("other.ltx");
    std::fs::write(&other, vec![7u8; 100]).expect("write");
    let again = client.put_file(9, TxId(1), TxId(9), &other, ts()).await.expect_err("create-only");
    assert!(again.is_already_exists(), "{again:?}");
}

#[tokio::test]
async fn threshold_is_inclusive_for_single_put() {
    let dir = tempfile::tempdir().expect("tempdir");
    let len = usize::try_from(MULTIPART_THRESHOLD).expect("fits");
    let src = write_file(dir.path(), "edge.ltx", &pattern(len, 2));
    let (store, client) = faulty_memory(StoreKind::File, 2);
    assert_eq!(client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("put_file"), MULTIPART_THRESHOLD);
    assert_eq!(store.counts().put, 1);
}

#[tokio::test]
async fn large_file_multipart_round_trip_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(LARGE, 3);
    let src = write_file(dir.path(), "big.ltx", &data);
    let (store, client) = faulty_memory(StoreKind::S3, 3);
    let n = client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("put_file");
    assert_eq!(n, LARGE as u64);
    let parts = (LARGE as u64).div_ceil(MULTIPART_PART_SIZE);
    assert_eq!(parts, 3);
    let counts = store.counts();
    // HEAD, then initiate + 3 parts + complete.
    assert_eq!((counts.head, counts.put), (1, 1 + parts + 1), "{counts:?}");
    assert_eq!(stored_timestamp(store.inner(), &client).await.as_deref(), Some("2023-11-14T22:13:20.25Z"));
    assert_eq!(client.size(9, TxId(1), TxId(9)).await.expect("size"), LARGE as u64);
    assert!(client.get(9, TxId(1), TxId(9)).await.expect("get") == data, "stored bytes differ");

    // Back down to disk.
    let dest = dir.path().join("restored.ltx");
    assert_eq!(client.get_to_file(9, TxId(1), TxId(9), &dest).await.expect("get_to_file"), LARGE as u64);
    assert!(std::fs::read(&dest).expect("read dest") == data, "downloaded bytes differ");

    // A second upload of the same name with other bytes is refused before any PUT request.
    let other = dir.path().join("other.ltx");
    let mut changed = data.clone();
    changed[LARGE / 2] ^= 1;
    std::fs::write(&other, &changed).expect("write");
    store.reset_counts();
    let err = client.put_file(9, TxId(1), TxId(9), &other, ts()).await.expect_err("create-only");
    assert!(err.is_already_exists() && !err.is_retryable(), "{err:?}");
    assert_eq!(store.counts().put, 0);
}

#[tokio::test]
async fn large_file_multipart_round_trip_on_file_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("replica");
    // The production file backend, as built from a path.
    let client = ReplicaClient::from_url(root.to_str().expect("utf-8 path")).expect("open");
    let data = pattern(LARGE, 4);
    let src = write_file(dir.path(), "big.ltx", &data);
    let n = client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("put_file");
    assert_eq!(n, LARGE as u64);
    let path = root.join("ltx/9").join(NAME);
    assert!(std::fs::read(&path).expect("replica file") == data, "stored bytes differ");
    assert_eq!(level9_entries(&root), vec![NAME.to_string()], "no staging files left");
    let meta = std::fs::metadata(&path).expect("meta");
    assert_eq!(DateTime::<Utc>::from(meta.modified().expect("mtime")), ts());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let files = client.list_level(9).await.expect("list");
    assert_eq!((files.len(), files[0].size, files[0].created_at), (1, LARGE as u64, ts()));

    let dest = dir.path().join("restored.ltx");
    assert_eq!(client.get_to_file(9, TxId(1), TxId(9), &dest).await.expect("get_to_file"), LARGE as u64);
    assert!(std::fs::read(&dest).expect("read dest") == data, "downloaded bytes differ");
}

#[tokio::test]
async fn multipart_refuses_to_overwrite_existing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("replica");
    let (store, client) = faulty_local(&root, 5);
    let existing = bytes::Bytes::from_static(b"already here");
    client.put(9, TxId(1), TxId(9), existing.clone(), ts()).await.expect("seed put");
    let src = write_file(dir.path(), "big.ltx", &pattern(LARGE, 5));
    store.reset_counts();
    let err = client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect_err("must not overwrite");
    assert!(err.is_already_exists(), "{err:?}");
    assert_eq!(store.counts().put, 0, "no upload started");
    assert_eq!(std::fs::read(root.join("ltx/9").join(NAME)).expect("file"), existing);
    assert_eq!(level9_entries(&root), vec![NAME.to_string()]);
}

#[tokio::test]
async fn failed_part_aborts_and_restarts_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("replica");
    let (store, client) = faulty_local(&root, 6);
    let data = pattern(LARGE, 6);
    let src = write_file(dir.path(), "big.ltx", &data);
    // PUT #1 initiates, #2 and #3 are the first two parts: fail the second part.
    store.fail_nth(OpKind::Put, 3, crate::Fault::Transient);
    let n = client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("put_file recovers");
    assert_eq!(n, LARGE as u64);
    let counts = store.counts();
    assert_eq!(counts.head, 2, "each attempt starts with a HEAD: {counts:?}");
    // Attempt 1: initiate, 2-3 parts, abort; attempt 2: initiate, 3 parts, complete.
    assert!((9..=10).contains(&counts.put), "{counts:?}");
    assert!(std::fs::read(root.join("ltx/9").join(NAME)).expect("file") == data, "stored bytes differ");
    assert_eq!(level9_entries(&root), vec![NAME.to_string()], "aborted staging file removed");
}

#[tokio::test]
async fn lost_complete_response_is_reconciled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(LARGE, 7);
    let src = write_file(dir.path(), "big.ltx", &data);
    let (store, client) = faulty_memory(StoreKind::S3, 7);
    // initiate, 3 parts, then the completion lands but its response is lost.
    store.fail_nth(OpKind::Put, 5, crate::Fault::LostResponse);
    let n = client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("put_file succeeds on retry");
    assert_eq!(n, LARGE as u64);
    let counts = store.counts();
    // Attempt 2 finds the object, checks its bytes (one GET) and stops without uploading.
    assert_eq!((counts.head, counts.get), (2, 1), "{counts:?}");
    assert_eq!(counts.put, 6, "5 requests of attempt 1 plus the no-op abort: {counts:?}");
    assert!(client.get(9, TxId(1), TxId(9)).await.expect("get") == data, "stored bytes differ");

    // A later call finding the same bytes adopts them (idempotent retry of a whole upload).
    assert_eq!(client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("idempotent"), data.len() as u64);
}

#[tokio::test]
async fn seeded_transient_faults_during_multipart_end_with_correct_object() {
    let seed = seed_from_env(0x5eed);
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, kind) in [StoreKind::S3, StoreKind::File].into_iter().enumerate() {
        let data = pattern(LARGE, seed.wrapping_add(i as u64));
        let src = write_file(dir.path(), &format!("big{i}.ltx"), &data);
        let (store, client) = faulty_memory(kind, seed.wrapping_add(i as u64));
        let client = client.with_retry_policy(fast(40));
        store.set_config(FaultConfig { transient_failure_rate: 0.15, ..FaultConfig::default() });
        let n = client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("put_file rides through faults");
        assert_eq!(n, LARGE as u64);
        store.set_config(FaultConfig::default());
        assert!(client.get(9, TxId(1), TxId(9)).await.expect("get") == data, "{kind}: stored bytes differ");
    }

    // Same on the file backend, which must also leave no staging files behind.
    let root = dir.path().join("replica");
    let (store, client) = faulty_local(&root, seed);
    let client = client.with_retry_policy(fast(40));
    let data = pattern(LARGE, seed ^ 0xff);
    let src = write_file(dir.path(), "big-local.ltx", &data);
    store.set_config(FaultConfig { transient_failure_rate: 0.15, ..FaultConfig::default() });
    client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect("put_file rides through faults");
    store.set_config(FaultConfig::default());
    assert!(std::fs::read(root.join("ltx/9").join(NAME)).expect("file") == data, "stored bytes differ");
    assert_eq!(level9_entries(&root), vec![NAME.to_string()], "no staging files left");
}

#[tokio::test]
async fn multipart_gives_up_after_retry_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = write_file(dir.path(), "big.ltx", &pattern(LARGE, 8));
    let (store, client) = faulty_memory(StoreKind::S3, 8);
    let client = client.with_retry_policy(fast(3));
    store.set_transient_failure_rate(1.0);
    let err = client.put_file(9, TxId(1), TxId(9), &src, ts()).await.expect_err("always failing");
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(store.counts().head, 3, "one HEAD per attempt");
}

#[tokio::test]
async fn get_to_file_streams_resumes_and_cleans_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, client) = faulty_memory(StoreKind::S3, seed_from_env(9));
    let client = client.with_retry_policy(fast(20));
    let data = pattern(3 * 1024 * 1024 + 7, 9);
    client.put(9, TxId(1), TxId(9), bytes::Bytes::from(data.clone()), ts()).await.expect("put");

    // Missing object: error, and no file is created.
    let missing = dir.path().join("missing.ltx");
    let err = client.get_to_file(9, TxId(1), TxId(2), &missing).await.expect_err("not found");
    assert!(err.is_not_found(), "{err:?}");
    assert!(!missing.exists());

    // Bodies cut off mid-stream are resumed; an existing longer dest is truncated.
    let dest = write_file(dir.path(), "dest.ltx", &vec![0xAA; data.len() * 2]);
    store.set_config(FaultConfig { truncate_reads_rate: 0.5, ..FaultConfig::default() });
    let n = client.get_to_file(9, TxId(1), TxId(9), &dest).await.expect("get_to_file");
    assert_eq!(n, data.len() as u64);
    assert!(std::fs::read(&dest).expect("read dest") == data, "downloaded bytes differ");

    // A download that fails midway removes the partial file.
    store.set_config(FaultConfig { truncate_reads_rate: 1.0, ..FaultConfig::default() });
    let partial = dir.path().join("partial.ltx");
    let err = client.clone().with_retry_policy(fast(2)).get_to_file(9, TxId(1), TxId(9), &partial).await;
    assert!(err.expect_err("always truncated").is_retryable());
    assert!(!partial.exists(), "partial download removed");

    // Empty objects give empty files.
    store.set_config(FaultConfig::default());
    client.put(9, TxId(10), TxId(10), bytes::Bytes::new(), ts()).await.expect("put empty");
    let empty = dir.path().join("empty.ltx");
    assert_eq!(client.get_to_file(9, TxId(10), TxId(10), &empty).await.expect("empty"), 0);
    assert_eq!(std::fs::metadata(&empty).expect("meta").len(), 0);
}
