//! `ReplicaClient`: LTX files of one replica over any `ObjectStore`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt};
use sluice_ltx::TxId;

use crate::config::{EnvFn, ReplicaConfig, Target, describe, process_env, resolve};
use crate::error::{Error, Result};
use crate::layout::{file_key, level_dir, parse_key};
use crate::retry::{RetryPolicy, retry};
use crate::url::StoreKind;

/// S3 user metadata key holding the LTX header timestamp (RFC3339Nano), as Litestream writes it.
pub const TIMESTAMP_METADATA: &str = "litestream-timestamp";

/// HEAD requests in flight at once when reading timestamps (Litestream uses 50).
const HEAD_CONCURRENCY: usize = 32;
/// Deletes in flight at once.
const DELETE_CONCURRENCY: usize = 16;

/// One LTX file in a replica level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Compaction level (9 = snapshots).
    pub level: u8,
    /// First TXID covered.
    pub min_txid: TxId,
    /// Last TXID covered.
    pub max_txid: TxId,
    /// Object size in bytes.
    pub size: u64,
    /// When the file was created (see spec §2.3 for the per-backend source).
    pub created_at: DateTime<Utc>,
}

/// Reads and writes the LTX files of one replica. Cheap to clone.
#[derive(Clone)]
pub struct ReplicaClient {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) kind: StoreKind,
    pub(crate) prefix: Path,
    pub(crate) description: Arc<str>,
    pub(crate) retry: RetryPolicy,
    /// Directory on disk that `prefix` maps to, for Litestream's file-backend mtime/perms.
    pub(crate) local_root: Option<Arc<PathBuf>>,
    /// The store *is* that directory (opened from a `file://` URL, nothing wrapped around it):
    /// whole-file uploads may then be copied by the kernel instead of through the store.
    pub(crate) direct_local: bool,
}

// Hand-written: the store's own Debug may include configuration we do not want in logs.
impl fmt::Debug for ReplicaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaClient")
            .field("kind", &self.kind)
            .field("store", &self.description)
            .finish_non_exhaustive()
    }
}

impl ReplicaClient {
    /// Opens the replica described by `cfg`, reading credentials from the process environment.
    pub fn open(cfg: &ReplicaConfig) -> Result<Self> {
        Self::open_with_env(cfg, &process_env)
    }

    /// Opens a replica from a URL or bare absolute path (`file:///..`, `s3://..`, `gs://..`, `abs://..`).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::open(&ReplicaConfig { url: Some(url.to_string()), ..ReplicaConfig::default() })
    }

    pub(crate) fn open_with_env(cfg: &ReplicaConfig, env: EnvFn<'_>) -> Result<Self> {
        let target = resolve(cfg, env)?;
        let description = describe(&target);
        let (store, prefix) = shared_store(&target, &description, env)?;
        let local_root = match target.kind {
            StoreKind::File => target.file_root.map(Arc::new),
            _ => None,
        };
        let direct_local = local_root.is_some();
        Ok(Self {
            store,
            kind: target.kind,
            prefix,
            description: description.into(),
            retry: RetryPolicy::default(),
            local_root,
            direct_local,
        })
    }

    /// Wraps an existing store (tests wrap `InMemory`/`LocalFileSystem` in `FaultyStore`).
    ///
    /// `prefix` is split on '/'. File-backend mtimes and permissions are only applied after
    /// [`ReplicaClient::with_local_root`].
    /// With [`StoreKind::S3`] puts carry user metadata, which `InMemory` and S3 accept but
    /// `LocalFileSystem` rejects (`NotImplemented`).
    pub fn new(store: Arc<dyn ObjectStore>, kind: StoreKind, prefix: &str) -> Self {
        let prefix = Path::from(prefix);
        let description = format!("{kind}+{store}/{prefix}");
        Self {
            store,
            kind,
            prefix,
            description: description.into(),
            retry: RetryPolicy::default(),
            local_root: None,
            direct_local: false,
        }
    }

    /// Declares that `prefix` is the directory `root` on local disk, so `put` sets the file's
    /// mtime to the LTX timestamp and mode 0600, as Litestream's file backend does.
    pub fn with_local_root(mut self, root: PathBuf) -> Self {
        self.local_root = Some(Arc::new(root));
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Redacted URL of the replica; safe to log.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Backend kind, which also selects the key layout.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Key prefix of the replica inside the store.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The retry policy in use.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Key of the LTX file `min..=max` at `level`.
    pub fn key(&self, level: u8, min: TxId, max: TxId) -> Path {
        file_key(self.kind, &self.prefix, level, min, max)
    }

    pub(crate) fn err(&self, op: &'static str, key: &Path, e: object_store::Error) -> Error {
        Error::from_store(op, key.as_ref(), &self.description, e)
    }

    /// All LTX files of `level`, sorted by (min, max). Other names are ignored. `created_at` is
    /// LastModified (the file backend's mtime, i.e. the LTX timestamp Litestream stores there).
    pub async fn list_level(&self, level: u8) -> Result<Vec<FileInfo>> {
        self.list_level_from(level, TxId(0)).await
    }

    /// Every level's LTX files in one recursive listing (one request for a small replica
    /// instead of one per level), sorted by (level, min, max).
    pub async fn list_all_levels(&self) -> Result<Vec<FileInfo>> {
        let root = match self.kind {
            StoreKind::S3 => self.prefix.clone(),
            StoreKind::File | StoreKind::Gcs | StoreKind::Azure => self.prefix.clone().join("ltx"),
        };
        let metas = retry(&self.retry, || async {
            self.store.list(Some(&root)).try_collect::<Vec<_>>().await.map_err(|e| self.err("LIST", &root, e))
        })
        .await?;
        let dirs: Vec<(u8, Path)> =
            (0..=crate::layout::SNAPSHOT_LEVEL).map(|l| (l, level_dir(self.kind, &self.prefix, l))).collect();
        let mut files: Vec<FileInfo> = metas
            .into_iter()
            .filter_map(|m| {
                dirs.iter().find_map(|(level, dir)| {
                    let (min, max) = parse_key(dir, &m.location)?;
                    Some(FileInfo {
                        level: *level,
                        min_txid: min,
                        max_txid: max,
                        size: m.size,
                        created_at: m.last_modified,
                    })
                })
            })
            .collect();
        files.sort_by_key(|f| (f.level, f.min_txid, f.max_txid));
        Ok(files)
    }

    /// Like [`Self::list_level`] but only files with `min_txid >= seek`. Names are fixed-width
    /// hex, so key order is TXID order and S3/GCS can skip the rest server-side.
    pub async fn list_level_from(&self, level: u8, seek: TxId) -> Result<Vec<FileInfo>> {
        let dir = level_dir(self.kind, &self.prefix, level);
        let metas = retry(&self.retry, || async {
            let listing = if seek.0 == 0 {
                self.store.list(Some(&dir))
            } else {
                // Exclusive offset "<seek>-" sorts after every name with min < seek.
                self.store.list_with_offset(Some(&dir), &dir.clone().join(format!("{seek}-")))
            };
            listing.try_collect::<Vec<_>>().await.map_err(|e| self.err("LIST", &dir, e))
        })
        .await?;
        let mut files: Vec<FileInfo> = metas
            .into_iter()
            .filter_map(|m| {
                let (min, max) = parse_key(&dir, &m.location)?;
                (min >= seek).then_some(FileInfo {
                    level,
                    min_txid: min,
                    max_txid: max,
                    size: m.size,
                    created_at: m.last_modified,
                })
            })
            .collect();
        files.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(files)
    }

    /// Like [`Self::list_level`], but on S3 `created_at` comes from each object's
    /// `litestream-timestamp` metadata (one HEAD per file, 32 at once),
    /// falling back to LastModified for objects without it (Litestream 0.5.0 wrote none).
    /// Files deleted between the LIST and their HEAD are left out.
    pub async fn list_level_with_timestamps(&self, level: u8) -> Result<Vec<FileInfo>> {
        let files = self.list_level(level).await?;
        if self.kind != StoreKind::S3 {
            return Ok(files);
        }
        let with_ts: Vec<Option<FileInfo>> = stream::iter(files)
            .map(|f| self.with_metadata_timestamp(f))
            .buffered(HEAD_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(with_ts.into_iter().flatten().collect())
    }

    async fn with_metadata_timestamp(&self, mut file: FileInfo) -> Result<Option<FileInfo>> {
        let key = self.key(file.level, file.min_txid, file.max_txid);
        // `head()` returns only ObjectMeta; user metadata arrives in GetResult::attributes.
        let head = retry(&self.retry, || async {
            let opts = GetOptions { head: true, ..GetOptions::default() };
            self.store.get_opts(&key, opts).await.map_err(|e| self.err("HEAD", &key, e))
        })
        .await;
        let head = match head {
            Ok(h) => h,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let attr = Attribute::Metadata(TIMESTAMP_METADATA.into());
        if let Some(value) = head.attributes.get(&attr) {
            match DateTime::parse_from_rfc3339(value.as_ref()) {
                Ok(ts) => file.created_at = ts.with_timezone(&Utc),
                Err(e) => tracing::warn!(key = %key, error = %e, "bad litestream-timestamp; using LastModified"),
            }
        }
        Ok(Some(file))
    }

    /// The whole file.
    pub async fn get(&self, level: u8, min: TxId, max: TxId) -> Result<Bytes> {
        let key = self.key(level, min, max);
        retry(&self.retry, || async {
            let res = self.store.get(&key).await.map_err(|e| self.err("GET", &key, e))?;
            res.bytes().await.map_err(|e| self.err("GET", &key, e))
        })
        .await
    }

    /// Bytes `range` of the file (end exclusive).
    pub async fn get_range(&self, level: u8, min: TxId, max: TxId, range: Range<u64>) -> Result<Bytes> {
        let key = self.key(level, min, max);
        if range.start > range.end {
            return Err(Error::InvalidArgument {
                op: "GET-range",
                key: key.to_string(),
                store: self.description.to_string(),
                reason: format!("inverted range {}..{}", range.start, range.end),
            });
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        retry(&self.retry, || async {
            self.store.get_range(&key, range.clone()).await.map_err(|e| self.err("GET-range", &key, e))
        })
        .await
    }

    /// Size of the file in bytes (a HEAD request).
    pub async fn size(&self, level: u8, min: TxId, max: TxId) -> Result<u64> {
        let key = self.key(level, min, max);
        retry(&self.retry, || async {
            self.store.head(&key).await.map(|m| m.size).map_err(|e| self.err("HEAD", &key, e))
        })
        .await
    }

    /// Deletes the given files; files that are already gone count as deleted.
    pub async fn delete(&self, files: &[FileInfo]) -> Result<()> {
        let keys: Vec<Path> = files.iter().map(|f| self.key(f.level, f.min_txid, f.max_txid)).collect();
        stream::iter(keys)
            .map(|key| async move {
                let res = retry(&self.retry, || async {
                    self.store.delete(&key).await.map_err(|e| self.err("DELETE", &key, e))
                })
                .await;
                match res {
                    Err(e) if e.is_not_found() => Ok(()),
                    other => other,
                }
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect()
            .await
    }
}

/// The store for `t`, shared with every other replica in the same bucket with the same
/// settings: a daemon with a thousand databases in one bucket keeps one HTTP connection pool
/// and one TLS setup instead of a thousand. Local directories are not shared (nothing to save).
fn shared_store(t: &Target, description: &str, env: EnvFn<'_>) -> Result<(Arc<dyn ObjectStore>, Path)> {
    use std::sync::{LazyLock, Mutex, Weak};
    type Stores = Mutex<Vec<(Target, Weak<dyn ObjectStore>)>>;
    static STORES: LazyLock<Stores> = LazyLock::new(Stores::default);
    if t.kind == StoreKind::File {
        return crate::backend::build_store(t, description, env);
    }
    let mut key = t.clone();
    key.prefix.clear();
    let mut stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    stores.retain(|(_, w)| w.strong_count() > 0);
    if let Some(store) = stores.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
        return Ok((store, Path::from(t.prefix.as_str())));
    }
    let (store, prefix) = crate::backend::build_store(t, description, env)?;
    stores.push((key, Arc::downgrade(&store)));
    Ok((store, prefix))
}
