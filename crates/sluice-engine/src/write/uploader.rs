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
use crate::write::index::{SharedIndex, lock};
use crate::write::local::{MetaDir, first_gap, sync_dir};
use crate::write::metrics::DbMetrics;

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
        // Each file must continue the one before, the first the replica: a gap uploaded
        // would break every restore past it.
        // (A full image may also follow a snapshot that is ahead of the level-0 chain.)
        let snapshot_end = lock(index).max_txid();
        let end = if first.0 == snapshot_end.0 + 1 { snapshot_end } else { remote_max };
        if let Some((reached, next)) = first_gap(end, &pending) {
            return Err(local_state(
                meta,
                format!(
                    "the local files for TXIDs {}..{} are missing (TXID {reached} is followed by a file starting \
                     at {next})",
                    TxId(reached.0 + 1),
                    TxId(next.0 - 1)
                ),
            ));
        }
        let (path, ts) = merge_local(meta, &pending, false).await.map_err(|e| damaged_input(meta, e))?;
        let result = client.put_file(0, first, last, &path, ts).await;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
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
        metrics.last_upload_ms.store(crate::write::now_ms() as u64, Ordering::Relaxed);
        metrics.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
        metrics.files_uploaded.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(min = %first, max = %last, bytes = size, "uploaded L0");
    }
}

fn local_state(meta: &MetaDir, reason: String) -> Error {
    Error::LocalState { dir: meta.root().join("ltx").join("0"), reason }
}

/// A merge that failed on one of its inputs (missing, damaged, or not continuing the one
/// before) becomes [`Error::LocalState`]; a failure writing the output (a full disk) stays
/// what it is.
fn damaged_input(meta: &MetaDir, e: Error) -> Error {
    let in_l0 = |p: &Path| p.parent() == Some(meta.root().join("ltx").join("0").as_path());
    match e {
        // Damaged bytes come from an input even when the error names the merge's output.
        Error::Ltx { ref file, ref source } if in_l0(Path::new(file)) || source.is_corruption() => {
            local_state(meta, e.to_string())
        }
        Error::Io { ref path, ref source, .. } if in_l0(path) && source.kind() == std::io::ErrorKind::NotFound => {
            local_state(meta, e.to_string())
        }
        e => e,
    }
}

/// Pending local files at which an outage's captures are merged into one.
pub const CONSOLIDATE_AT: usize = 8;

/// Merges pending local L0 files into one local file (when there are at least
/// [`CONSOLIDATE_AT`]): during a long outage the meta directory then holds about one
/// compressed copy of the changed pages instead of one stored file per sync interval, and the
/// catch-up is one small upload. Crash-safe: the merged file is durable before its inputs go,
/// and a listing drops files a wider one covers ([`MetaDir::list_l0`]). True if it merged.
pub async fn consolidate_pending(meta: &MetaDir, index: &SharedIndex) -> Result<bool> {
    let remote_max = lock(index).uploaded_max();
    let pending: Vec<(TxId, TxId)> =
        meta.list_l0()?.into_iter().filter(|(min, _)| *min > remote_max).take(MAX_FILES_PER_UPLOAD).collect();
    if pending.len() < CONSOLIDATE_AT {
        return Ok(false);
    }
    let (first, last) = (pending[0].0, pending[pending.len() - 1].1);
    let (tmp, _) = merge_local(meta, &pending, true).await?;
    let path = meta.l0_path(first, last);
    let installed = std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", &tmp, e))
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e)))
        .and_then(|()| sync_dir(path.parent().unwrap_or(meta.root())));
    if let Err(e) = installed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    for (a, b) in pending {
        if (a, b) != (first, last) {
            let _ = std::fs::remove_file(meta.l0_path(a, b));
        }
    }
    tracing::debug!(min = %first, max = %last, "merged pending local files while storage is unavailable");
    Ok(true)
}

/// The header timestamp of a local file.
pub fn header_time(path: &Path) -> Result<DateTime<Utc>> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let dec =
        Decoder::new(BufReader::new(f)).map_err(|source| Error::Ltx { file: path.display().to_string(), source })?;
    Ok(DateTime::from_timestamp_millis(dec.header().timestamp_ms).unwrap_or_else(Utc::now))
}

/// Merges consecutive local L0 files (one or more) into one temp file; returns it and its
/// timestamp. `keep_position`: the merge carries its last input's WAL position (a local
/// file that replaces its inputs, where the next capture resumes).
async fn merge_local(meta: &MetaDir, files: &[(TxId, TxId)], keep_position: bool) -> Result<(PathBuf, DateTime<Utc>)> {
    let paths: Vec<PathBuf> = files.iter().map(|(a, b)| meta.l0_path(*a, *b)).collect();
    let (first, last) = (files[0].0, files[files.len() - 1].1);
    let out = meta.root().join(format!("upload-{first}-{last}.ltx.tmp"));
    let out2 = out.clone();
    let perms = meta.perms();
    let merged = tokio::task::spawn_blocking(move || merge_files_with(&paths, &out2, perms, keep_position))
        .await
        .map_err(|e| Error::Task(e.to_string()))
        .and_then(|r| r)
        .and_then(|()| header_time(&out));
    match merged {
        Ok(ts) => Ok((out, ts)),
        Err(e) => {
            // A full disk: free the partial file's space at once.
            let _ = std::fs::remove_file(&out);
            Err(e)
        }
    }
}

/// Compacts LTX files on disk into `out` (streaming, one page per input in memory). No fsync:
/// `out` is a temp file that is uploaded, then deleted (a crash just leaves it to cleanup);
/// it holds the database's pages, so it gets `perms`.
pub fn merge_files(inputs: &[PathBuf], out: &Path, perms: Perms) -> Result<()> {
    merge_files_with(inputs, out, perms, false)
}

fn merge_files_with(inputs: &[PathBuf], out: &Path, perms: Perms, keep_position: bool) -> Result<()> {
    let mut decs = Vec::with_capacity(inputs.len());
    for p in inputs {
        let f = File::open(p).map_err(|e| Error::io("open", p, e))?;
        decs.push(
            // Small buffers: an upload may merge hundreds of local files.
            Decoder::with_buffer(f, 16 << 10).map_err(|source| Error::Ltx { file: p.display().to_string(), source })?,
        );
    }
    let w = std::io::BufWriter::with_capacity(256 << 10, perms.create(out).map_err(|e| Error::io("create", out, e))?);
    let keep = |h: &mut sluice_ltx::Header, inputs: &[sluice_ltx::Header]| {
        if let (true, Some(last)) = (keep_position, inputs.last()) {
            (h.wal_offset, h.wal_size, h.wal_salt1, h.wal_salt2) =
                (last.wal_offset, last.wal_size, last.wal_salt1, last.wal_salt2);
        }
    };
    let (w, _) = sluice_ltx::compact_with(decs, w, keep)
        .map_err(|source| Error::Ltx { file: out.display().to_string(), source })?;
    w.into_inner().map_err(|e| Error::io("write", out, e.into_error()))?;
    Ok(())
}

/// Keeps the lag and pending-bytes metrics: local files not yet uploaded.
pub fn note_pending(meta: &MetaDir, index: &SharedIndex, metrics: &DbMetrics) {
    let remote = lock(index).uploaded_max();
    let pending: Vec<(TxId, TxId)> =
        meta.list_l0().map(|v| v.into_iter().filter(|(min, _)| *min > remote).collect()).unwrap_or_default();
    let bytes: u64 =
        pending.iter().filter_map(|(a, b)| std::fs::metadata(meta.l0_path(*a, *b)).ok()).map(|m| m.len()).sum();
    metrics.pending_bytes.store(bytes, Ordering::Relaxed);
    let oldest = pending.first().copied();
    let ms = oldest.and_then(|(a, b)| header_time(&meta.l0_path(a, b)).ok()).map_or(0, |t| t.timestamp_millis() as u64);
    metrics.oldest_pending_ms.store(ms, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_ltx::Header;

    fn write(meta: &MetaDir, txid: u64, pages: &[(u32, u8)], commit: u32) {
        let mut h = Header::new(512, commit, TxId(txid), TxId(txid), 1_000 + txid as i64);
        (h.wal_offset, h.wal_size, h.wal_salt1, h.wal_salt2) = (32 + 100 * txid as i64, 100, 7, txid as u32);
        meta.write_l0(h, true, |put| pages.iter().try_for_each(|&(pgno, fill)| put(pgno, &[fill; 512]))).unwrap();
    }

    #[tokio::test]
    async fn an_outage_merges_pending_files_into_one_that_keeps_the_wal_position() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::open(dir.path().join("meta"), Perms::PRIVATE).unwrap();
        let index: SharedIndex = Default::default();
        for t in 1..CONSOLIDATE_AT as u64 {
            write(&meta, t, &[(1, t as u8), (t as u32 + 1, t as u8)], t as u32 + 1);
        }
        assert!(!consolidate_pending(&meta, &index).await.unwrap(), "fewer than CONSOLIDATE_AT files stay");
        let n = CONSOLIDATE_AT as u64;
        write(&meta, n, &[(1, 99)], 3); // shrinks the database to 3 pages
        assert!(consolidate_pending(&meta, &index).await.unwrap());
        assert_eq!(meta.list_l0().unwrap(), vec![(TxId(1), TxId(n))]);

        let f = File::open(meta.l0_path(TxId(1), TxId(n))).unwrap();
        let mut dec = Decoder::new(BufReader::new(f)).unwrap();
        let h = *dec.header();
        assert_eq!((h.commit, h.wal_offset, h.wal_size, h.wal_salt2), (3, 32 + 100 * n as i64, 100, n as u32));
        let mut buf = vec![0; 512];
        let mut seen = Vec::new();
        while let Some(pgno) = dec.next_page(&mut buf).unwrap() {
            seen.push((pgno, buf[0]));
        }
        assert_eq!(seen, vec![(1, 99), (2, 1), (3, 2)], "latest versions, cut at the commit");
        assert_eq!(meta.latest().unwrap().map(|h| h.max_txid), Some(TxId(n)));
    }

    #[tokio::test]
    async fn inputs_a_crash_left_beside_their_merge_are_dropped_from_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::open(dir.path().join("meta"), Perms::PRIVATE).unwrap();
        for t in 1..=CONSOLIDATE_AT as u64 {
            write(&meta, t, &[(1, t as u8)], 1);
        }
        let kept = std::fs::read(meta.l0_path(TxId(2), TxId(2))).unwrap();
        assert!(consolidate_pending(&meta, &Default::default()).await.unwrap());
        std::fs::write(meta.l0_path(TxId(2), TxId(2)), kept).unwrap();
        write(&meta, CONSOLIDATE_AT as u64 + 1, &[(1, 0)], 1);
        let last = TxId(CONSOLIDATE_AT as u64);
        assert_eq!(
            meta.list_l0().unwrap(),
            vec![(TxId(1), last), (TxId(last.0 + 1), TxId(last.0 + 1))],
            "the covered file is not listed"
        );
        assert!(!meta.l0_path(TxId(2), TxId(2)).exists(), "and it is removed");
    }
}
