//! Uploads from and downloads to local files, with memory bounded independently of file size.
//!
//! Snapshots of multi-GB databases and large compaction inputs must not be held in memory:
//! [`ReplicaClient::put_file`] streams anything above [`MULTIPART_THRESHOLD`] through a
//! multipart upload holding at most [`MULTIPART_PARTS_IN_FLIGHT`] part buffers, and
//! [`ReplicaClient::get_to_file`] writes a download to disk chunk by chunk.

use std::io;
use std::path::Path as StdPath;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use object_store::path::Path;
use object_store::{Attributes, MultipartUpload, ObjectStoreExt, PutMultipartOptions, PutPayload, UploadPart};
use sluice_ltx::TxId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::ReplicaClient;
use crate::error::{Error, Result};
use crate::retry::with_retry;

const MIB: u64 = 1024 * 1024;

/// Files up to this size are read into memory and uploaded with one create-only PUT
/// ([`ReplicaClient::put`]); larger ones go through a multipart upload.
pub const MULTIPART_THRESHOLD: u64 = 16 * MIB;

/// Size of every multipart part but the last (S3's minimum is 5 MiB; R2 wants equal sizes).
/// Grows for files above `MULTIPART_PART_SIZE * 10_000` bytes (S3's part-count limit).
pub const MULTIPART_PART_SIZE: u64 = 8 * MIB;

/// Parts uploaded concurrently. The next part is read only once a slot is free, so an upload
/// holds at most this many part buffers (16 MiB with the defaults).
pub const MULTIPART_PARTS_IN_FLIGHT: usize = 2;

/// S3's largest object a single copy request may copy.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * MIB;

/// S3's (and GCS's XML API) limit on parts per multipart upload.
const MAX_PARTS: u64 = 10_000;

/// Buffer used to compare a stored object against a local file.
const COMPARE_BUF: usize = 64 * 1024;

/// Part size for a file of `size` bytes: [`MULTIPART_PART_SIZE`], or more (whole MiBs) when
/// that would exceed [`MAX_PARTS`].
fn part_size_for(size: u64) -> usize {
    let needed = size.div_ceil(MAX_PARTS).next_multiple_of(MIB);
    usize::try_from(needed.max(MULTIPART_PART_SIZE)).unwrap_or(usize::MAX)
}

/// Reads up to `part_size` bytes: a short result means end of file. Reads into a buffer of
/// exactly `part_size` (no `read_to_end` growth), so a part never costs more than its size.
async fn read_part(file: &mut tokio::fs::File, part_size: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; part_size];
    let mut filled = 0;
    while filled < part_size {
        match file.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

impl ReplicaClient {
    pub(crate) fn local_err(&self, op: &'static str, path: &StdPath, source: io::Error) -> Error {
        Error::LocalFile { op, path: path.display().to_string(), store: self.description.to_string(), source }
    }

    /// Uploads the local LTX file at `path` once, like [`Self::put`], and returns its size.
    ///
    /// Files up to [`MULTIPART_THRESHOLD`] go through [`Self::put`] (read into memory,
    /// create-only PUT). Larger files are streamed through a multipart upload in parts of
    /// [`MULTIPART_PART_SIZE`], at most [`MULTIPART_PARTS_IN_FLIGHT`] at once, so memory
    /// stays bounded whatever the file size. The object carries the same attributes as a
    /// [`Self::put`] (`litestream-timestamp` on S3), and on the file backend the file's mtime
    /// and mode are set afterwards.
    ///
    /// Multipart uploads have no create-only mode in object_store, so an existing object is
    /// detected with a HEAD before the upload starts and reported as [`Error::AlreadyExists`].
    /// RACE: an object created between that HEAD and the upload's completion is silently
    /// replaced (on S3/GCS/Azure the completion overwrites; on `LocalFileSystem` the staging
    /// file is renamed over it). Large files are snapshots and compaction outputs, which only
    /// the single lease-holding writer produces, so no second writer is expected in that window.
    ///
    /// A transient failure aborts the multipart upload and restarts it from scratch (HEAD
    /// included) under the client's [`crate::RetryPolicy`]. If an earlier attempt failed while
    /// completing, its upload may have landed anyway; the object found by the next HEAD is then
    /// accepted when its bytes equal the file's (compared by streaming both).
    ///
    /// An object that already exists with exactly the file's bytes counts as uploaded (an
    /// earlier call whose response was lost), so a retried upload is idempotent; an object
    /// with other bytes is [`Error::AlreadyExists`].
    pub async fn put_file(
        &self,
        level: u8,
        min: TxId,
        max: TxId,
        path: &StdPath,
        timestamp: DateTime<Utc>,
    ) -> Result<u64> {
        match self.put_file_once(level, min, max, path, timestamp).await {
            Err(e) if e.is_already_exists() => {
                let key = self.key(level, min, max);
                let remote = self.size(level, min, max).await?;
                if self.object_matches_file(&key, path, remote).await? {
                    tracing::debug!(key = %key, "identical object already uploaded");
                    Ok(remote)
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    /// Stores the replica's file `(from_level, min, max)` under `to_level` too, without
    /// sending it again: a server-side copy on object stores (user metadata such as the
    /// timestamp goes with it), a file copy in a local replica. `false` where there is no
    /// such copy (an object above S3's single-copy limit): the caller writes the file itself.
    pub async fn copy_file(
        &self,
        from_level: u8,
        to_level: u8,
        (min, max): (TxId, TxId),
        size: u64,
        timestamp: DateTime<Utc>,
    ) -> Result<bool> {
        if let (Some(root), true) = (&self.local_root, self.direct_local) {
            let src = self.local_path(root, from_level, min, max);
            self.put_local_file(root, to_level, min, max, &src, timestamp).await?;
            return Ok(true);
        }
        if size > MAX_SINGLE_COPY {
            return Ok(false);
        }
        let (from, to) = (self.key(from_level, min, max), self.key(to_level, min, max));
        let copied = with_retry(&self.retry, |_| async {
            match self.store.copy(&from, &to).await {
                Ok(()) => Ok(true),
                Err(object_store::Error::NotImplemented { .. }) => Ok(false),
                Err(e) => Err(self.err("COPY", &to, e)),
            }
        })
        .await?;
        if copied && let Some(root) = &self.local_root {
            self.set_local_file_times(self.local_path(root, to_level, min, max), timestamp).await?;
        }
        Ok(copied)
    }

    async fn put_file_once(
        &self,
        level: u8,
        min: TxId,
        max: TxId,
        path: &StdPath,
        timestamp: DateTime<Utc>,
    ) -> Result<u64> {
        if let (Some(root), true) = (&self.local_root, self.direct_local) {
            return self.put_local_file(root, level, min, max, path, timestamp).await;
        }
        let size = tokio::fs::metadata(path).await.map_err(|e| self.local_err("stat", path, e))?.len();
        if size <= MULTIPART_THRESHOLD {
            let data = tokio::fs::read(path).await.map_err(|e| self.local_err("read", path, e))?;
            let len = data.len() as u64;
            self.put(level, min, max, Bytes::from(data), timestamp).await?;
            return Ok(len);
        }
        let key = self.key(level, min, max);
        let attributes = self.put_attributes(timestamp);
        let part_size = part_size_for(size);
        if let Some(root) = &self.local_root {
            self.prepare_local_dir(&self.local_path(root, level, min, max)).await?;
        }
        // Set once any attempt has called `complete`: from then on the object may be ours.
        let completing = AtomicBool::new(false);
        let uploaded = with_retry(&self.retry, |attempt| {
            let (key, attributes, completing) = (&key, attributes.clone(), &completing);
            async move {
                if attempt > 1 {
                    tracing::debug!(key = %key, attempt, "restarting multipart upload");
                }
                self.multipart_once(key, path, attributes, part_size, completing).await
            }
        })
        .await?;
        if let Some(root) = &self.local_root {
            self.set_local_file_times(self.local_path(root, level, min, max), timestamp).await?;
        }
        Ok(uploaded)
    }

    /// One attempt: HEAD, then a fresh multipart upload, aborted if anything fails.
    async fn multipart_once(
        &self,
        key: &Path,
        path: &StdPath,
        attributes: Attributes,
        part_size: usize,
        completing: &AtomicBool,
    ) -> Result<u64> {
        // Create-only emulation; see the RACE note on `put_file`.
        if let Some(meta) = self.head_if_exists(key).await? {
            if completing.load(Ordering::Relaxed) && self.object_matches_file(key, path, meta.size).await? {
                tracing::debug!(key = %key, "multipart upload landed on an earlier attempt");
                return Ok(meta.size);
            }
            return Err(self.already_exists(key));
        }
        let mut file = tokio::fs::File::open(path).await.map_err(|e| self.local_err("open", path, e))?;
        let opts = PutMultipartOptions { attributes, ..PutMultipartOptions::default() };
        let mut upload =
            self.store.put_multipart_opts(key, opts).await.map_err(|e| self.err("PUT-multipart", key, e))?;
        let res = self.upload_parts(key, path, &mut file, upload.as_mut(), part_size, completing).await;
        if let Err(e) = &res {
            // Best effort: S3/GCS keep uploaded parts (and bill for them) until aborted.
            // After a failed `complete` this may find nothing to abort, which is fine.
            if let Err(abort) = upload.abort().await {
                tracing::warn!(key = %key, error = %abort, cause = %e, "aborting multipart upload failed");
            }
        }
        res
    }

    /// Reads the file part by part and uploads the parts, then completes the upload.
    /// In-flight part futures are dropped (cancelled) on error, before the caller aborts.
    async fn upload_parts(
        &self,
        key: &Path,
        path: &StdPath,
        file: &mut tokio::fs::File,
        upload: &mut dyn MultipartUpload,
        part_size: usize,
        completing: &AtomicBool,
    ) -> Result<u64> {
        let mut in_flight: FuturesUnordered<UploadPart> = FuturesUnordered::new();
        let mut total = 0u64;
        loop {
            // Wait for a free slot *before* reading the next part: this is what bounds memory.
            while in_flight.len() >= MULTIPART_PARTS_IN_FLIGHT {
                if let Some(done) = in_flight.next().await {
                    done.map_err(|e| self.err("PUT-part", key, e))?;
                }
            }
            let part = read_part(file, part_size).await.map_err(|e| self.local_err("read", path, e))?;
            let last = part.len() < part_size;
            if part.is_empty() {
                break;
            }
            total += part.len() as u64;
            in_flight.push(upload.put_part(PutPayload::from(Bytes::from(part))));
            if last {
                break;
            }
        }
        while let Some(done) = in_flight.next().await {
            done.map_err(|e| self.err("PUT-part", key, e))?;
        }
        completing.store(true, Ordering::Relaxed);
        upload.complete().await.map_err(|e| self.err("PUT-complete", key, e))?;
        Ok(total)
    }

    /// True when the object at `key` (of `size` bytes) holds exactly the file's bytes.
    async fn object_matches_file(&self, key: &Path, path: &StdPath, size: u64) -> Result<bool> {
        let local = tokio::fs::metadata(path).await.map_err(|e| self.local_err("stat", path, e))?.len();
        if local != size {
            return Ok(false);
        }
        let mut file = tokio::fs::File::open(path).await.map_err(|e| self.local_err("open", path, e))?;
        let mut body = self.store.get(key).await.map_err(|e| self.err("GET", key, e))?.into_stream();
        let mut buf = vec![0u8; COMPARE_BUF];
        let mut seen = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.err("GET", key, e))?;
            seen += chunk.len() as u64;
            if seen > size {
                return Ok(false);
            }
            for window in chunk.chunks(COMPARE_BUF) {
                let local = &mut buf[..window.len()];
                file.read_exact(local).await.map_err(|e| self.local_err("read", path, e))?;
                if local != window {
                    return Ok(false);
                }
            }
        }
        Ok(seen == size)
    }

    /// Downloads the file into `dest` chunk by chunk (never holding the whole object), fsyncs
    /// it and returns its size. Transient failures, including bodies cut off mid-stream, are
    /// retried as in [`Self::get_stream`].
    ///
    /// `dest` is created (or truncated) once the object has been opened, so a missing object
    /// leaves no file behind; if the download fails later, the partial `dest` is removed.
    /// The parent directory is not fsynced.
    pub async fn get_to_file(&self, level: u8, min: TxId, max: TxId, dest: &StdPath) -> Result<u64> {
        let mut body = self.get_stream(level, min, max);
        let first = body.next().await.transpose()?;
        // Private (0600) whatever the umask: a download holds database pages, and the caller
        // decides who else may read it.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dest)
            .await
            .map_err(|e| self.local_err("create", dest, e))?;
        let res = async {
            let mut written = 0u64;
            let mut next = first;
            while let Some(chunk) = next {
                file.write_all(&chunk).await.map_err(|e| self.local_err("write", dest, e))?;
                written += chunk.len() as u64;
                next = body.next().await.transpose()?;
            }
            file.flush().await.map_err(|e| self.local_err("write", dest, e))?;
            file.sync_all().await.map_err(|e| self.local_err("fsync", dest, e))?;
            Ok(written)
        }
        .await;
        if res.is_err() {
            drop(file);
            if let Err(e) = tokio::fs::remove_file(dest).await {
                tracing::warn!(path = %dest.display(), error = %e, "cannot remove partial download");
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes() {
        assert_eq!(part_size_for(20 * MIB) as u64, MULTIPART_PART_SIZE);
        assert_eq!(part_size_for(MULTIPART_PART_SIZE * MAX_PARTS) as u64, MULTIPART_PART_SIZE);
        let huge = 200 * 1024 * MIB;
        let p = part_size_for(huge) as u64;
        assert!(p > MULTIPART_PART_SIZE && p.is_multiple_of(MIB) && huge.div_ceil(p) <= MAX_PARTS, "{p}");
    }
}
