//! The level ladder: level n merges the files of level n-1 written since its last file;
//! level 9 holds full snapshots. Retention then deletes what no restore point inside the
//! retention window needs. Inputs come from local L0 copies when possible, so compacting
//! L1 costs no downloads.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use sluice_ltx::TxId;
use sluice_storage::{FileInfo, ReplicaClient};

use crate::error::{Error, Result};
use crate::replicate::actor::ShipperHandle;
use crate::replicate::index::{SharedIndex, lock};
use crate::replicate::local::MetaDir;
use crate::replicate::metrics::DbMetrics;
use crate::replicate::uploader::{header_time, merge_files};
use crate::restore::SNAPSHOT_LEVEL;

/// Retention settings.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Delete remote files at all (`retention.enabled`).
    pub enabled: bool,
    /// Keep snapshots this long (the newest is always kept).
    pub snapshot_retention: Duration,
    /// Keep L0 files this long after a level-1 file covers them; zero keeps them forever.
    pub l0_retention: Duration,
}

/// Merges level `level - 1` files newer than level `level`'s last file into one file.
/// Returns the new file, or `None` if there was nothing new.
pub async fn compact_level(
    client: &ReplicaClient,
    meta: &MetaDir,
    index: &SharedIndex,
    level: u8,
    metrics: &DbMetrics,
) -> Result<Option<FileInfo>> {
    let (inputs, dst_max) = {
        let idx = lock(index);
        let dst_max = idx.level_max(level);
        let mut src: Vec<FileInfo> = Vec::new();
        // Only a contiguous run: a gap (files lost or deleted) would make the merge fail on
        // every tick, and it cannot be compacted past anyway.
        for f in idx.files(level - 1).iter().filter(|f| f.min_txid > dst_max) {
            if src.last().is_some_and(|p: &FileInfo| f.min_txid.0 > p.max_txid.0 + 1) {
                tracing::warn!(level, after = %src[src.len() - 1].max_txid, next = %f.min_txid, "gap in level {}; compacting up to it", level - 1);
                break;
            }
            src.push(f.clone());
        }
        (src, dst_max)
    };
    let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else { return Ok(None) };
    let (min, max) = (first.min_txid, last.max_txid);
    let info = merge_and_put(client, meta, &inputs, level, min, max).await?;
    lock(index).add(info.clone());
    metrics.compactions.fetch_add(1, Ordering::Relaxed);
    metrics.files_uploaded.fetch_add(1, Ordering::Relaxed);
    metrics.bytes_uploaded.fetch_add(info.size, Ordering::Relaxed);
    tracing::info!(level, min = %min, max = %max, after = %dst_max, "compacted");
    Ok(Some(info))
}

/// Merges `inputs` (in order) into one file uploaded as `level`/`min`-`max`, in a work
/// directory of the meta directory that is removed afterwards (and at start after a crash).
async fn merge_and_put(
    client: &ReplicaClient,
    meta: &MetaDir,
    inputs: &[FileInfo],
    level: u8,
    min: TxId,
    max: TxId,
) -> Result<FileInfo> {
    let work = meta.root().join(format!("compact-{level}-{min}-{max}"));
    meta.create_dir(&work)?;
    let result = async {
        let paths = fetch_inputs(client, meta, inputs, &work).await?;
        let out = work.join("out.ltx");
        let (out2, perms) = (out.clone(), meta.perms());
        tokio::task::spawn_blocking(move || merge_files(&paths, &out2, perms))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        let ts = header_time(&out)?;
        let size = client.put_file(level, min, max, &out, ts).await?;
        Ok::<_, Error>(FileInfo { level, min_txid: min, max_txid: max, size, created_at: ts })
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Local paths of the inputs: local L0 copies when every TXID is present locally,
/// otherwise downloads into `work`.
async fn fetch_inputs(
    client: &ReplicaClient,
    meta: &MetaDir,
    inputs: &[FileInfo],
    work: &std::path::Path,
) -> Result<Vec<PathBuf>> {
    if inputs[0].level == 0 {
        let local = meta.list_l0()?;
        let wanted: Vec<(TxId, TxId)> = local
            .into_iter()
            .filter(|(a, b)| *a >= inputs[0].min_txid && *b <= inputs[inputs.len() - 1].max_txid)
            .collect();
        let contiguous = wanted.first().is_some_and(|w| w.0 == inputs[0].min_txid)
            && wanted.last().is_some_and(|w| w.1 == inputs[inputs.len() - 1].max_txid)
            && wanted.windows(2).all(|w| w[1].0.0 == w[0].1.0 + 1);
        if contiguous {
            return Ok(wanted.into_iter().map(|(a, b)| meta.l0_path(a, b)).collect());
        }
    }
    let mut out = Vec::new();
    for f in inputs {
        let p = work.join(sluice_ltx::format_filename(f.min_txid, f.max_txid));
        client.get_to_file(f.level, f.min_txid, f.max_txid, &p).await?;
        out.push(p);
    }
    Ok(out)
}

/// Uploads a level-9 snapshot if the replica has moved past the last one: merged from the
/// replica's own files when it has a snapshot to start from, else read from the database.
pub async fn snapshot(
    client: &ReplicaClient,
    meta: &MetaDir,
    shipper: &ShipperHandle,
    index: &SharedIndex,
    metrics: &DbMetrics,
) -> Result<Option<FileInfo>> {
    match from_replica(client, meta, index, metrics).await? {
        FromReplica::Done(info) => return Ok(Some(info)),
        FromReplica::UpToDate => return Ok(None),
        FromReplica::NoBase => {}
    }
    from_database(client, shipper, index, metrics).await
}

enum FromReplica {
    Done(FileInfo),
    /// The last snapshot already reaches the replica's end.
    UpToDate,
    /// No snapshot to start from, or no gap-free chain after it.
    NoBase,
}

/// A snapshot merged from the newest snapshot and the files that follow it (the restore
/// plan of the latest state), as Litestream 0.5 builds them: pages are copied as compressed
/// blocks, and neither the database nor a read transaction is involved, so checkpoints go
/// on meanwhile (a snapshot read from the database holds the WAL for its whole duration).
async fn from_replica(
    client: &ReplicaClient,
    meta: &MetaDir,
    index: &SharedIndex,
    metrics: &DbMetrics,
) -> Result<FromReplica> {
    let (files, last_snapshot, uploaded) = {
        let idx = lock(index);
        let files: Vec<FileInfo> = (0..=SNAPSHOT_LEVEL).flat_map(|l| idx.files(l).to_vec()).collect();
        (files, idx.level_max(SNAPSHOT_LEVEL), idx.uploaded_max())
    };
    if last_snapshot == TxId(0) {
        return Ok(FromReplica::NoBase);
    }
    if last_snapshot >= uploaded {
        return Ok(FromReplica::UpToDate);
    }
    let plan = match crate::restore::plan::plan(&files, crate::restore::Target::Latest, client.description()) {
        Ok(p) if p.first().is_some_and(|f| f.level == SNAPSHOT_LEVEL) && p.len() > 1 => p,
        Ok(_) => return Ok(FromReplica::NoBase),
        Err(e) => {
            tracing::info!(error = %e, "cannot merge a snapshot from the replica; reading the database instead");
            return Ok(FromReplica::NoBase);
        }
    };
    let max = plan[plan.len() - 1].max_txid;
    let info = merge_and_put(client, meta, &plan, SNAPSHOT_LEVEL, TxId(1), max).await?;
    lock(index).add(info.clone());
    metrics.snapshots.fetch_add(1, Ordering::Relaxed);
    metrics.files_uploaded.fetch_add(1, Ordering::Relaxed);
    metrics.bytes_uploaded.fetch_add(info.size, Ordering::Relaxed);
    tracing::info!(txid = %max, bytes = info.size, inputs = plan.len(), "uploaded snapshot (merged from the replica)");
    Ok(FromReplica::Done(info))
}

/// A snapshot of the current position read from the database (pinned by a read
/// transaction while it is encoded).
async fn from_database(
    client: &ReplicaClient,
    shipper: &ShipperHandle,
    index: &SharedIndex,
    metrics: &DbMetrics,
) -> Result<Option<FileInfo>> {
    let Some(pos) = shipper.position().await? else { return Ok(None) };
    if lock(index).level_max(SNAPSHOT_LEVEL) >= pos.txid {
        return Ok(None);
    }
    let path = shipper.meta_root().join("snapshot.ltx.tmp");
    let header = shipper.snapshot(path.clone()).await;
    let result = async {
        let Some(h) = header? else {
            return Err(Error::Task("the database stayed busy (write barrier not granted); snapshot postponed".into()));
        };
        let ts = chrono::DateTime::from_timestamp_millis(h.timestamp_ms).unwrap_or_else(Utc::now);
        let size = client.put_file(SNAPSHOT_LEVEL, TxId(1), h.max_txid, &path, ts).await?;
        Ok::<_, Error>(Some(FileInfo {
            level: SNAPSHOT_LEVEL,
            min_txid: TxId(1),
            max_txid: h.max_txid,
            size,
            created_at: ts,
        }))
    }
    .await;
    let _ = std::fs::remove_file(&path);
    let Some(info) = result? else { return Ok(None) };
    lock(index).add(info.clone());
    metrics.snapshots.fetch_add(1, Ordering::Relaxed);
    metrics.files_uploaded.fetch_add(1, Ordering::Relaxed);
    metrics.bytes_uploaded.fetch_add(info.size, Ordering::Relaxed);
    tracing::info!(txid = %info.max_txid, bytes = info.size, "uploaded snapshot");
    Ok(Some(info))
}

/// Snapshot retention. The newest snapshot taken before the window opened is the base every
/// restore point inside the window starts from: it stays, older snapshots go, and so do files
/// at other levels that end at or before it (each level keeps its last file).
pub async fn enforce_snapshot_retention(
    client: &ReplicaClient,
    index: &SharedIndex,
    ret: &Retention,
    metrics: &DbMetrics,
) -> Result<()> {
    if !ret.enabled {
        return Ok(());
    }
    let cutoff = Utc::now() - chrono::Duration::from_std(ret.snapshot_retention).unwrap_or_default();
    let doomed: Vec<FileInfo> = {
        let idx = lock(index);
        let snaps = idx.files(SNAPSHOT_LEVEL);
        let Some(base) = snaps.iter().filter(|f| f.created_at < cutoff).max_by_key(|f| f.max_txid) else {
            return Ok(());
        };
        let floor = base.max_txid;
        let mut doomed: Vec<FileInfo> = snaps.iter().filter(|f| f.max_txid < floor).cloned().collect();
        for level in 0..SNAPSHOT_LEVEL {
            if let Some((_, rest)) = idx.files(level).split_last() {
                doomed.extend(rest.iter().filter(|f| f.max_txid <= floor).cloned());
            }
        }
        doomed
    };
    delete(client, index, &doomed, metrics).await
}

/// L0 retention: level-0 files covered by level 1 and older than the window go (the newest
/// L0 file always stays). Local copies covered by level 1 go too, except the newest, which
/// holds the WAL position.
pub async fn enforce_l0_retention(
    client: &ReplicaClient,
    meta: &MetaDir,
    index: &SharedIndex,
    ret: &Retention,
    metrics: &DbMetrics,
) -> Result<()> {
    let l1_max = lock(index).level_max(1);
    if let Some((_, older)) = meta.list_l0()?.split_last() {
        for (a, b) in older.iter().filter(|(_, b)| *b <= l1_max) {
            let _ = std::fs::remove_file(meta.l0_path(*a, *b));
        }
    }
    if !ret.enabled || ret.l0_retention.is_zero() {
        return Ok(());
    }
    let cutoff = Utc::now() - chrono::Duration::from_std(ret.l0_retention).unwrap_or_default();
    let doomed: Vec<FileInfo> = {
        let idx = lock(index);
        let Some((_, older)) = idx.files(0).split_last() else { return Ok(()) };
        older.iter().take_while(|f| f.created_at < cutoff).filter(|f| f.max_txid <= l1_max).cloned().collect()
    };
    delete(client, index, &doomed, metrics).await
}

async fn delete(client: &ReplicaClient, index: &SharedIndex, files: &[FileInfo], metrics: &DbMetrics) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    client.delete(files).await?;
    lock(index).remove(files);
    metrics.files_deleted.fetch_add(files.len() as u64, Ordering::Relaxed);
    tracing::info!(files = files.len(), "retention deleted files");
    Ok(())
}
