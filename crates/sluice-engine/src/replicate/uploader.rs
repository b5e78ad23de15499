//! Ships local L0 files to the replica. Everything captured since the last upload goes up as
//! one level-0 file, so a busy database costs at most one PUT per sync interval. Uploads
//! always pass through a merge: local captures hold stored (uncompressed) pages, and the
//! merge compresses each page's latest version once.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use sluice_ltx::{Decoder, TxId};
use sluice_storage::{FileInfo, ReplicaClient};

use crate::error::{Error, Result};
use crate::perms::Perms;
use crate::replicate::index::{SharedIndex, lock};
use crate::replicate::local::MetaDir;
use crate::replicate::metrics::DbMetrics;
use crate::restore::SNAPSHOT_LEVEL;

/// Most local files merged into one upload (Litestream's `max-sync-ltx-files`).
pub const MAX_FILES_PER_UPLOAD: usize = 256;

/// Uploads pending local L0 files. Returns the TXID the replica now reaches.
pub async fn upload_pending(
    client: &ReplicaClient,
    meta: &MetaDir,
    index: &SharedIndex,
    metrics: &DbMetrics,
) -> Result<TxId> {
    // Only what is pending now: files captured while uploading wait for the next interval,
    // or a busy database would upload back to back instead of once per interval.
    let mut remaining: Vec<(TxId, TxId)> = {
        let remote_max = lock(index).uploaded_max();
        meta.list_l0()?.into_iter().filter(|(min, _)| *min > remote_max).collect()
    };
    loop {
        let remote_max = lock(index).uploaded_max();
        remaining.retain(|(min, _)| *min > remote_max);
        let pending: Vec<(TxId, TxId)> = remaining.iter().copied().take(MAX_FILES_PER_UPLOAD).collect();
        let (Some(&(first, _)), Some(&(_, last))) = (pending.first(), pending.last()) else {
            // Files captured meanwhile keep the lag metric up.
            note_pending(meta, index, metrics);
            return Ok(remote_max);
        };
        let (path, ts) = merge_local(meta, &pending).await?;
        let mut result = client.put_file(0, first, last, &path, ts).await;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if result.is_ok() && (first, last) == (TxId(1), TxId(1)) && lock(index).files(SNAPSHOT_LEVEL).is_empty() {
            // A new replica's first file is a full image at TXID 1, byte for byte what its
            // first level-9 snapshot would be: upload it there too instead of encoding the
            // database a second time.
            result = client.put_file(SNAPSHOT_LEVEL, first, last, &path, ts).await.map(|_| {
                lock(index).add(FileInfo {
                    level: SNAPSHOT_LEVEL,
                    min_txid: first,
                    max_txid: last,
                    size,
                    created_at: ts,
                });
                metrics.snapshots.fetch_add(1, Ordering::Relaxed);
                metrics.files_uploaded.fetch_add(1, Ordering::Relaxed);
                metrics.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
                tracing::info!(txid = %last, bytes = size, "uploaded snapshot (the first image)");
                0
            });
        }
        let _ = std::fs::remove_file(&path);
        match result {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {
                return Err(Error::Conflict {
                    replica: client.description().to_string(),
                    reason: format!(
                        "level-0 file {first}-{last} already exists and differs from ours: another writer \
                         is replicating to this replica; stopping to keep its history from forking"
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        }
        lock(index).add(FileInfo { level: 0, min_txid: first, max_txid: last, size, created_at: ts });
        metrics.replica_txid.store(last.0, Ordering::Relaxed);
        metrics.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
        metrics.files_uploaded.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(min = %first, max = %last, bytes = size, "uploaded L0");
    }
}

/// The header timestamp of a local file.
pub fn header_time(path: &Path) -> Result<DateTime<Utc>> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let dec =
        Decoder::new(BufReader::new(f)).map_err(|source| Error::Ltx { file: path.display().to_string(), source })?;
    Ok(DateTime::from_timestamp_millis(dec.header().timestamp_ms).unwrap_or_else(Utc::now))
}

/// Merges consecutive local L0 files (one or more) into one temp file; returns it and its
/// timestamp.
async fn merge_local(meta: &MetaDir, files: &[(TxId, TxId)]) -> Result<(PathBuf, DateTime<Utc>)> {
    let paths: Vec<PathBuf> = files.iter().map(|(a, b)| meta.l0_path(*a, *b)).collect();
    let (first, last) = (files[0].0, files[files.len() - 1].1);
    let out = meta.root().join(format!("upload-{first}-{last}.ltx.tmp"));
    let out2 = out.clone();
    let perms = meta.perms();
    tokio::task::spawn_blocking(move || merge_files(&paths, &out2, perms))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    let ts = header_time(&out)?;
    Ok((out, ts))
}

/// Compacts LTX files on disk into `out` (streaming, one page per input in memory). No fsync:
/// `out` is a temp file that is uploaded, then deleted (a crash just leaves it to cleanup);
/// it holds the database's pages, so it gets `perms`.
pub fn merge_files(inputs: &[PathBuf], out: &Path, perms: Perms) -> Result<()> {
    let mut decs = Vec::with_capacity(inputs.len());
    for p in inputs {
        let f = File::open(p).map_err(|e| Error::io("open", p, e))?;
        decs.push(
            // Small buffers: an upload may merge hundreds of local files.
            Decoder::with_buffer(f, 16 << 10).map_err(|source| Error::Ltx { file: p.display().to_string(), source })?,
        );
    }
    let w = std::io::BufWriter::with_capacity(256 << 10, perms.create(out).map_err(|e| Error::io("create", out, e))?);
    let (w, _) =
        sluice_ltx::compact(decs, w).map_err(|source| Error::Ltx { file: out.display().to_string(), source })?;
    w.into_inner().map_err(|e| Error::io("write", out, e.into_error()))?;
    Ok(())
}

/// Keeps the lag metric: the oldest local file not yet uploaded.
pub fn note_pending(meta: &MetaDir, index: &SharedIndex, metrics: &DbMetrics) {
    let remote = lock(index).uploaded_max();
    let oldest = meta.list_l0().ok().and_then(|v| v.into_iter().find(|(min, _)| *min > remote));
    let ms = oldest.and_then(|(a, b)| header_time(&meta.l0_path(a, b)).ok()).map_or(0, |t| t.timestamp_millis() as u64);
    metrics.oldest_pending_ms.store(ms, Ordering::Relaxed);
}
