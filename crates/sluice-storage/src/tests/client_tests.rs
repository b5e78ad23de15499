//! ReplicaClient over InMemory and LocalFileSystem.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt, PutPayload};
use sluice_ltx::TxId;

use crate::{ReplicaClient, ReplicaConfig, StoreKind, TIMESTAMP_METADATA};

fn ts(secs: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, nanos).single().expect("valid timestamp")
}

fn memory(kind: StoreKind) -> (Arc<InMemory>, ReplicaClient) {
    let store = Arc::new(InMemory::new());
    let client = ReplicaClient::new(store.clone(), kind, "db");
    (store, client)
}

#[tokio::test]
async fn layout_keys_for_file_and_s3() {
    let name = "0000000000000001-0000000000000002.ltx";
    for (kind, want) in [
        (StoreKind::File, format!("db/ltx/0/{name}")),
        (StoreKind::Gcs, format!("db/ltx/0/{name}")),
        (StoreKind::S3, format!("db/0000/{name}")),
    ] {
        let (store, client) = memory(kind);
        client.put(0, TxId(1), TxId(2), Bytes::from_static(b"x"), ts(0, 0)).await.expect("put");
        store.head(&Path::from(want.as_str())).await.unwrap_or_else(|e| panic!("{kind}: {want}: {e}"));
    }
}

#[tokio::test]
async fn listing_sorts_and_ignores_foreign_names() {
    let (store, client) = memory(StoreKind::S3);
    let names = [
        "db/0001/0000000000000005-0000000000000007.ltx",
        "db/0001/0000000000000001-0000000000000004.ltx",
        "db/0001/0000000000000001-0000000000000002.ltx",
        "db/0001/notes.txt",
        "db/0001/0000000000000008-0000000000000009.ltx.tmp",
        "db/0001/nested/0000000000000001-0000000000000002.ltx",
        "db/0002/0000000000000001-0000000000000002.ltx",
        "db/ltx/1/0000000000000001-0000000000000002.ltx",
    ];
    for n in names {
        store.put(&Path::from(n), PutPayload::from_static(b"abc")).await.expect("seed");
    }
    let got: Vec<(u64, u64)> =
        client.list_level(1).await.expect("list").iter().map(|f| (f.min_txid.0, f.max_txid.0)).collect();
    assert_eq!(got, vec![(1, 2), (1, 4), (5, 7)]);
    let from: Vec<u64> = client.list_level_from(1, TxId(2)).await.expect("seek").iter().map(|f| f.min_txid.0).collect();
    assert_eq!(from, vec![5]);
    assert!(client.list_level(3).await.expect("empty level").is_empty());
}

#[tokio::test]
async fn put_is_create_only() {
    let (_, client) = memory(StoreKind::S3);
    let data = Bytes::from_static(b"first");
    client.put(0, TxId(1), TxId(1), data.clone(), ts(1, 0)).await.expect("first put");
    let err = client.put(0, TxId(1), TxId(1), Bytes::from_static(b"second"), ts(2, 0)).await;
    let err = err.expect_err("second put must fail");
    assert!(err.is_already_exists() && err.is_precondition() && !err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("db/0000/0000000000000001-0000000000000001.ltx"), "{err}");
    assert_eq!(client.get(0, TxId(1), TxId(1)).await.expect("get"), data);
}

#[tokio::test]
async fn s3_metadata_timestamp_round_trip() {
    let (store, client) = memory(StoreKind::S3);
    let when = ts(1_795_000_000, 568_000_000);
    client.put(0, TxId(1), TxId(1), Bytes::from_static(b"a"), when).await.expect("put");
    let key = client.key(0, TxId(1), TxId(1));
    let head = store.get_opts(&key, GetOptions { head: true, ..GetOptions::default() }).await.expect("head");
    let meta = head.attributes.get(&Attribute::Metadata(TIMESTAMP_METADATA.into())).map(|v| v.to_string());
    assert_eq!(meta.as_deref(), Some(crate::format_rfc3339_nano(when).as_str()));
    // A file written without metadata (Litestream 0.5.0) falls back to LastModified.
    let legacy = client.key(0, TxId(2), TxId(2));
    store.put(&legacy, PutPayload::from_static(b"b")).await.expect("legacy put");
    let files = client.list_level_with_timestamps(0).await.expect("list");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].created_at, when);
    assert_ne!(files[1].created_at, when);
}

#[tokio::test]
async fn file_backend_sets_mtime_and_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("replica");
    let client = ReplicaClient::from_url(root.to_str().expect("utf-8 path")).expect("open");
    assert!(client.list_level(0).await.expect("list of missing dir").is_empty());
    let when = ts(1_600_000_000, 123_456_789);
    client.put(0, TxId(1), TxId(3), Bytes::from_static(b"ltx"), when).await.expect("put");
    let path = root.join("ltx/0/0000000000000001-0000000000000003.ltx");
    let meta = std::fs::metadata(&path).expect("file at Litestream path");
    assert_eq!(DateTime::<Utc>::from(meta.modified().expect("mtime")), when);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Directories the put created are private too (the store alone would apply the umask).
        for d in [root.clone(), root.join("ltx"), root.join("ltx/0")] {
            let mode = std::fs::metadata(&d).expect("dir").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        client
            .put_root_object("lease.json", Bytes::from_static(b"{}"), object_store::PutMode::Create)
            .await
            .expect("put");
        let lease = std::fs::metadata(root.join("lease.json")).expect("root object at the replica's root");
        assert_eq!(lease.permissions().mode() & 0o777, 0o600);
    }
    let files = client.list_level(0).await.expect("list");
    assert_eq!((files.len(), files[0].created_at, files[0].size), (1, when, 3));
    let again = client.put(0, TxId(1), TxId(3), Bytes::from_static(b"other"), when).await;
    assert!(again.expect_err("create-only").is_already_exists());
    client.delete(&files).await.expect("delete");
    client.delete(&files).await.expect("deleting again ignores not-found");
    assert!(client.list_level(0).await.expect("list").is_empty());
}

#[tokio::test]
async fn range_stream_and_size() {
    let (_, client) = memory(StoreKind::File);
    let data = Bytes::from((0u8..=199).collect::<Vec<u8>>());
    client.put(9, TxId(1), TxId(9), data.clone(), ts(5, 0)).await.expect("put");
    let r = client.get_range(9, TxId(1), TxId(9), 10..20).await.expect("range");
    assert_eq!(r, data.slice(10..20));
    assert!(client.get_range(9, TxId(1), TxId(9), 7..7).await.expect("empty").is_empty());
    #[allow(clippy::reversed_empty_ranges)]
    let inverted = client.get_range(9, TxId(1), TxId(9), 9..3).await;
    assert!(inverted.is_err());
    assert_eq!(client.size(9, TxId(1), TxId(9)).await.expect("size"), 200);
    let chunks: Vec<Bytes> = client.get_stream(9, TxId(1), TxId(9)).try_collect().await.expect("stream");
    assert_eq!(chunks.concat(), data.to_vec());
    let missing = client.get(9, TxId(2), TxId(3)).await.expect_err("missing");
    assert!(missing.is_not_found() && !missing.is_retryable(), "{missing:?}");
}

#[tokio::test]
async fn unreachable_s3_endpoint_is_retryable_and_named() {
    // Static credentials: without them object_store would ask the instance metadata service.
    let cfg = crate::ReplicaConfig {
        url: Some("s3://bkt/p?endpoint=http://127.0.0.1:1&forcePathStyle=true".into()),
        access_key_id: Some("AKIDTEST".into()),
        secret_access_key: Some("SECRETTEST".into()),
        ..crate::ReplicaConfig::default()
    };
    let env = |_: &str| None;
    let client =
        ReplicaClient::open_with_env(&cfg, &env).expect("builds").with_retry_policy(crate::RetryPolicy::none());
    let err = client.get(0, TxId(1), TxId(1)).await.expect_err("nothing listens on port 1");
    assert!(err.is_retryable(), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("p/0000/0000000000000001-0000000000000001.ltx") && shown.contains("s3://bkt/p"), "{shown}");
    assert!(!format!("{err:?}").contains("SECRETTEST"));
}

#[test]
fn replicas_in_one_bucket_share_one_store_and_keep_their_own_prefix() {
    let open = |url: &str| {
        let cfg =
            ReplicaConfig { url: Some(url.into()), endpoint: Some("http://127.0.0.1:9".into()), ..Default::default() };
        ReplicaClient::open_with_env(&cfg, &|_| None).expect("open")
    };
    let (a, b, other) = (open("s3://bkt/tenants/a.db"), open("s3://bkt/tenants/b.db"), open("s3://other/a.db"));
    assert!(Arc::ptr_eq(a.store(), b.store()), "one connection pool per bucket");
    assert!(!Arc::ptr_eq(a.store(), other.store()));
    assert_eq!((a.prefix().as_ref(), b.prefix().as_ref()), ("tenants/a.db", "tenants/b.db"));
}
