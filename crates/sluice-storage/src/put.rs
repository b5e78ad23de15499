//! Write-once uploads of LTX files.
//!
//! Every put is create-only (`PutMode::Create`: `If-None-Match: *` on S3, a hard link that
//! fails on an existing name for `LocalFileSystem`), so two writers can never silently replace
//! each other's file. Uploads are atomic in every backend: S3/GCS/Azure publish whole objects
//! and `LocalFileSystem` writes a staging file (`<name>#<n>`) before linking it into place.

use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sluice_ltx::TxId;

use crate::client::{ReplicaClient, TIMESTAMP_METADATA};
use crate::error::{Error, Result};
use crate::layout::level_dir;
use crate::retry::with_retry;

/// Formats like Go's `time.RFC3339Nano` in UTC: fraction with trailing zeros trimmed, none at
/// all for whole seconds (`2026-11-26T10:37:40.568Z`, `2026-11-26T10:37:40Z`).
pub fn format_rfc3339_nano(ts: DateTime<Utc>) -> String {
    let full = ts.to_rfc3339_opts(SecondsFormat::Nanos, true);
    // `full` ends in ".nnnnnnnnnZ"; trim zeros, then a dangling '.'.
    let body = full.trim_end_matches('Z').trim_end_matches('0').trim_end_matches('.');
    format!("{body}Z")
}

impl ReplicaClient {
    /// Uploads an LTX file once. A second put of the same name fails with
    /// [`Error::AlreadyExists`] (see [`Error::is_already_exists`]).
    ///
    /// `timestamp` is the LTX header timestamp: S3 stores it as `litestream-timestamp`
    /// metadata; the file backend (with a local root) sets the file's mtime to it and its mode
    /// to 0600. The mtime is set right after the object becomes visible, so a concurrent LIST
    /// can briefly see the write time instead.
    ///
    /// If an earlier attempt of this call failed transiently, the upload may have landed
    /// anyway; a following "already exists" is then accepted when the stored bytes equal `data`.
    pub async fn put(&self, level: u8, min: TxId, max: TxId, data: Bytes, timestamp: DateTime<Utc>) -> Result<()> {
        let key = self.key(level, min, max);
        let attributes = self.put_attributes(timestamp);
        if let Some(root) = &self.local_root {
            self.prepare_local_dir(&self.local_path(root, level, min, max)).await?;
        }
        with_retry(&self.retry, |attempt| {
            let (key, data, attributes) = (&key, data.clone(), attributes.clone());
            async move {
                match self.put_once(key, data.clone(), attributes).await {
                    Err(e) if e.is_already_exists() && attempt > 1 && self.holds(key, &data).await? => {
                        tracing::debug!(key = %key, "put landed on an earlier attempt");
                        Ok(())
                    }
                    other => other,
                }
            }
        })
        .await?;
        if let Some(root) = &self.local_root {
            self.set_local_file_times(self.local_path(root, level, min, max), timestamp).await?;
        }
        Ok(())
    }

    /// Object attributes every LTX upload carries: `litestream-timestamp` metadata on S3.
    pub(crate) fn put_attributes(&self, timestamp: DateTime<Utc>) -> Attributes {
        let mut attributes = Attributes::new();
        if self.kind == crate::StoreKind::S3 {
            attributes.insert(Attribute::Metadata(TIMESTAMP_METADATA.into()), format_rfc3339_nano(timestamp).into());
        }
        attributes
    }

    async fn put_once(&self, key: &Path, data: Bytes, attributes: Attributes) -> Result<()> {
        let opts = PutOptions { mode: PutMode::Create, attributes: attributes.clone(), ..PutOptions::default() };
        match self.store.put_opts(key, PutPayload::from_bytes(data.clone()), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotImplemented { operation, .. }) if operation.contains("Create") => {
                self.put_if_absent_racy(key, data, attributes).await
            }
            Err(e) => Err(self.err("PUT", key, e)),
        }
    }

    /// Fallback for stores without create-only puts (e.g. S3 with conditional put disabled).
    ///
    /// RACE: another writer can create the object between our HEAD and PUT, and the later PUT
    /// then wins. Litestream has the same window on such stores; one writer per replica is
    /// the operating assumption either way.
    /// The object's metadata, or `None` if it does not exist (create-only emulation).
    pub(crate) async fn head_if_exists(&self, key: &Path) -> Result<Option<object_store::ObjectMeta>> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("HEAD", key, e)),
        }
    }

    /// The error of a create-only write that found the name taken.
    pub(crate) fn already_exists(&self, key: &Path) -> Error {
        Error::AlreadyExists { op: "PUT", key: key.to_string(), store: self.description.to_string(), source: None }
    }

    async fn put_if_absent_racy(&self, key: &Path, data: Bytes, attributes: Attributes) -> Result<()> {
        if self.head_if_exists(key).await?.is_some() {
            return Err(self.already_exists(key));
        }
        let opts = PutOptions { mode: PutMode::Overwrite, attributes, ..PutOptions::default() };
        self.store
            .put_opts(key, PutPayload::from_bytes(data), opts)
            .await
            .map(|_| ())
            .map_err(|e| self.err("PUT", key, e))
    }

    /// True when the object at `key` holds exactly `data`.
    async fn holds(&self, key: &Path, data: &Bytes) -> Result<bool> {
        let res = self.store.get(key).await.map_err(|e| self.err("GET", key, e))?;
        if res.meta.size != data.len() as u64 {
            return Ok(false);
        }
        let stored = res.bytes().await.map_err(|e| self.err("GET", key, e))?;
        Ok(stored == *data)
    }

    pub(crate) fn local_path(&self, root: &std::path::Path, level: u8, min: TxId, max: TxId) -> PathBuf {
        let mut path = root.to_path_buf();
        for part in level_dir(self.kind, &Path::default(), level).parts() {
            path.push(part.as_ref());
        }
        path.push(sluice_ltx::format_filename(min, max));
        path
    }

    /// Litestream's file backend: mtime (and atime) = LTX timestamp, mode 0600.
    pub(crate) async fn set_local_file_times(&self, path: PathBuf, timestamp: DateTime<Utc>) -> Result<()> {
        let store = self.description.to_string();
        let shown = path.display().to_string();
        let run = move || -> Result<(), (&'static str, std::io::Error)> {
            let file = std::fs::File::options().write(true).open(&path).map_err(|e| ("open", e))?;
            let t = SystemTime::from(timestamp);
            let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
            file.set_times(times).map_err(|e| ("set mtime", e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| ("chmod 0600", e))?;
            }
            Ok(())
        };
        let joined = tokio::task::spawn_blocking(run).await.map_err(|e| Error::LocalFile {
            op: "set mtime",
            path: shown.clone(),
            store: store.clone(),
            source: std::io::Error::other(e),
        })?;
        joined.map_err(|(op, source)| Error::LocalFile { op, path: shown, store, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn rfc3339_nano_matches_go() {
        let base = Utc.with_ymd_and_hms(2026, 11, 26, 10, 37, 40).single().expect("valid date");
        let ms = base + chrono::Duration::milliseconds(568);
        assert_eq!(format_rfc3339_nano(ms), "2026-11-26T10:37:40.568Z");
        assert_eq!(format_rfc3339_nano(base), "2026-11-26T10:37:40Z");
        let ns = base + chrono::Duration::nanoseconds(120_000_001);
        assert_eq!(format_rfc3339_nano(ns), "2026-11-26T10:37:40.120000001Z");
        let ten = base + chrono::Duration::milliseconds(100);
        assert_eq!(format_rfc3339_nano(ten), "2026-11-26T10:37:40.1Z");
    }
}
